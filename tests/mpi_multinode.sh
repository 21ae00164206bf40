#!/bin/bash
# Multi-node training on one machine: two "hosts" made as network namespaces.
#
# usage: mpi_multinode.sh BIN_DIR SRC_DIR
#
# Makes two network namespaces joined by a veth pair on a private /24 that exists only inside
# them, names the two ends in /etc/hosts, and runs mpirun inside the first namespace with a
# hostfile of 2 slots per host. Open MPI reaches the second "host" through its rsh agent,
# tests/mpi_multinode_rsh.sh, which runs the daemon under `ip netns exec` instead of ssh. Each
# host also gets its own host name (a UTS namespace): Open MPI's daemons find their node by
# gethostname(), and with one name for both they disagree on which ranks share a node. All
# MPI traffic (out-of-band and the TCP byte transfer layer) is restricted to the veth subnet,
# so ranks on different hosts talk through the veth as they would through a real network.
#
# Checks:
#   1. rank placement: ranks 0-1 run in the first namespace, ranks 2-3 in the second;
#   2. fsdp training of the tiny model of mpi_equivalence.py, 5 steps, across the 2 hosts;
#   3. the same job as 4 ranks on one node (plain mpirun --oversubscribe): per-step losses, grad
#      norms and final parameters equal within 1e-5 relative (compare() of mpi_equivalence.py;
#      only the TCP vs shared-memory transport differs, and the reductions are the same
#      operations in the same order, so the measured difference is 0 or rounding), equal batch
#      hashes and equal comm_bytes per step (exact: the strategy's volume does not depend on
#      where ranks run).
#
# Needs root (namespaces, /etc/hosts), `ip netns`, `unshare --uts` and mpirun; without them it
# exits 77 (skipped). Everything it makes (namespaces and the veth in them, the /etc/hosts
# lines, the scratch directory, processes left in the namespaces) is removed on exit, failure or
# signal; what a run killed outright (SIGKILL) left is removed by the next run, all names
# carrying the PID of the run that made them.
set -u

BIN_DIR=${1:?usage: mpi_multinode.sh BIN_DIR SRC_DIR}
SRC_DIR=${2:?usage: mpi_multinode.sh BIN_DIR SRC_DIR}
BIN_DIR=$(cd "$BIN_DIR" && pwd)
SRC_DIR=$(cd "$SRC_DIR" && pwd)
CTRAIN=$BIN_DIR/ctrain
AGENT=$SRC_DIR/tests/mpi_multinode_rsh.sh

NS1=ctn1-$$
NS2=ctn2-$$
HOST1=ctrainnode1-$$
HOST2=ctrainnode2-$$
VETH1=ctv1-$$
VETH2=ctv2-$$
NET=10.211.$(($$ % 250 + 1))
SUBNET=$NET.0/24
HOSTS_LINE1="$NET.1 $HOST1"
HOSTS_LINE2="$NET.2 $HOST2"

passed=0
failed=0
made_ns=()
added_hosts=0
WORK=

pass() { echo "PASS: $*"; passed=$((passed + 1)); }
fail() { echo "FAIL: $*"; failed=$((failed + 1)); }
skip() {
    echo "SKIP: $*"
    echo "0 passed, 0 failed"
    exit 77
}

# Removes /etc/hosts lines equal to the given ones; rewrites in place (the file may be a mount).
# Edits of /etc/hosts hold a flock on the file itself (fd 9, only locked, never read).
# shellcheck disable=SC2094
hosts_remove() {
    (
        flock 9
        tmp=$(mktemp)
        grep -vxF -e "$1" -e "$2" /etc/hosts >"$tmp" || true
        cat "$tmp" >/etc/hosts
        rm -f "$tmp"
    ) 9</etc/hosts
}

cleanup() {
    trap - EXIT INT TERM
    local ns pids
    for ns in "${made_ns[@]}"; do
        # Processes left in the namespace (an orted or a rank after a timeout) are ours.
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
        if [ "${#pids[@]}" -gt 0 ]; then
            kill -TERM "${pids[@]}" 2>/dev/null
            sleep 1
            mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
            [ "${#pids[@]}" -gt 0 ] && kill -KILL "${pids[@]}" 2>/dev/null
        fi
        ip netns del "$ns" 2>/dev/null || echo "warning: could not delete namespace $ns"
    done
    # The veth pair lives inside the namespaces and goes with them; this only matters if it
    # was left on the host by a failure between creation and the move.
    ip link del "$VETH1" 2>/dev/null
    if [ "$added_hosts" = 1 ]; then
        hosts_remove "$HOSTS_LINE1" "$HOSTS_LINE2"
    fi
    [ -n "$WORK" ] && rm -rf "$WORK"
}
trap cleanup EXIT
trap 'echo "interrupted"; echo "$passed passed, $((failed + 1)) failed"; exit 130' INT
trap 'echo "terminated"; echo "$passed passed, $((failed + 1)) failed"; exit 143' TERM

# A run killed outright (SIGKILL, as CTest does on timeout) cannot clean up: the next run removes
# what such runs left, recognised by their names, whose PID no longer exists.
sweep_stale() {
    local ns pid pids line
    for ns in $(ip netns list 2>/dev/null | awk '{print $1}' | grep -E '^ctn[12]-[0-9]+$'); do
        pid=${ns#*-}
        kill -0 "$pid" 2>/dev/null && continue
        echo "removing namespace $ns left by an earlier run"
        mapfile -t pids < <(ip netns pids "$ns" 2>/dev/null)
        [ "${#pids[@]}" -gt 0 ] && kill -KILL "${pids[@]}" 2>/dev/null
        ip netns del "$ns" 2>/dev/null
    done
    local stale
    stale=$(grep -E '^10\.211\.[0-9]+\.[12] ctrainnode[12]-[0-9]+$' /etc/hosts 2>/dev/null)
    while IFS= read -r line; do
        [ -n "$line" ] || continue
        pid=${line##*-}
        kill -0 "$pid" 2>/dev/null && continue
        echo "removing '$line' left in /etc/hosts by an earlier run"
        hosts_remove "$line" "$line"
    done <<<"$stale"
    local dir
    for dir in /tmp/ctrain_multinode.*.*; do
        [ -d "$dir" ] || continue
        pid=${dir#/tmp/ctrain_multinode.}
        pid=${pid%%.*}
        case "$pid" in '' | *[!0-9]*) continue ;; esac
        kill -0 "$pid" 2>/dev/null || rm -rf "$dir"
    done
}

# --- preconditions: anything missing is a skip, not a failure --------------------------------
[ "$EUID" = 0 ] || skip "not root: network namespaces and /etc/hosts need root"
command -v mpirun >/dev/null || skip "mpirun not found"
command -v ip >/dev/null || skip "ip (iproute2) not found"
unshare --uts true 2>/dev/null || skip "cannot create UTS namespaces (unshare --uts failed)"
[ -x "$CTRAIN" ] || { echo "FAIL: $CTRAIN not built"; echo "0 passed, 1 failed"; exit 1; }
sweep_stale
if ! ip netns add "$NS1" 2>/dev/null; then
    skip "cannot create network namespaces (ip netns add failed)"
fi
made_ns+=("$NS1")
ip netns add "$NS2" || skip "cannot create a second network namespace"
made_ns+=("$NS2")

# --- the two hosts ----------------------------------------------------------------------------
setup_net() {
    ip -n "$NS1" link set lo up &&
        ip -n "$NS2" link set lo up &&
        ip link add "$VETH1" type veth peer name "$VETH2" &&
        ip link set "$VETH1" netns "$NS1" &&
        ip link set "$VETH2" netns "$NS2" &&
        ip -n "$NS1" addr add "$NET.1/24" dev "$VETH1" &&
        ip -n "$NS2" addr add "$NET.2/24" dev "$VETH2" &&
        ip -n "$NS1" link set "$VETH1" up &&
        ip -n "$NS2" link set "$VETH2" up
}
setup_net || skip "cannot build the veth link between the namespaces"
for ns in "$NS1" "$NS2"; do
    ip -n "$ns" -br link show lo | grep -q UP || skip "loopback not up in $ns"
done

(
    flock 9
    printf '%s\n%s\n' "$HOSTS_LINE1" "$HOSTS_LINE2" >>/etc/hosts
) 9</etc/hosts
added_hosts=1

WORK=$(mktemp -d "/tmp/ctrain_multinode.$$.XXXXXX")
chmod 755 "$WORK"
printf '%s slots=2\n%s slots=2\n' "$HOST1" "$HOST2" >"$WORK/hostfile"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
export OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1
export CTRAIN_MN_HOSTS="$HOST1=$NS1 $HOST2=$NS2"
MN_ARGS=(--hostfile "$WORK/hostfile" -np 4
    --mca plm_rsh_agent "$AGENT"
    --mca oob_tcp_if_include "$SUBNET"
    --mca btl "tcp,self"
    --mca btl_tcp_if_include "$SUBNET"
    -x OMPI_ALLOW_RUN_AS_ROOT -x OMPI_ALLOW_RUN_AS_ROOT_CONFIRM
    -x OMP_NUM_THREADS -x OPENBLAS_NUM_THREADS)
echo "hosts: $HOST1 ($NS1, $NET.1) and $HOST2 ($NS2, $NET.2), 2 slots each"

# Runs mpirun inside the first namespace, under the first host's name (a UTS namespace, as the
# rsh agent does for the second; Open MPI finds its nodes by host name): mn_run TIMEOUT_S LOG cmd...
mn_run() {
    local limit=$1 log=$2
    shift 2
    # shellcheck disable=SC2016 # expanded by the inner shell
    ip netns exec "$NS1" unshare --uts /bin/sh -c 'hostname "$0" && exec "$@"' \
        "$HOST1" timeout -k 5 "$limit" mpirun "${MN_ARGS[@]}" "$@" >"$log" 2>&1
}

# --- 1. rank placement ------------------------------------------------------------------------
# shellcheck disable=SC2016 # expanded by each rank's shell
probe='echo "rank $OMPI_COMM_WORLD_RANK $(ip netns identify $$) $(hostname)"'
if mn_run 30 "$WORK/placement.log" sh -c "$probe"; then
    sort "$WORK/placement.log"
    expect=$(printf 'rank %s %s %s\n' 0 "$NS1" "$HOST1" 1 "$NS1" "$HOST1" 2 "$NS2" "$HOST2" \
        3 "$NS2" "$HOST2")
    got=$(grep '^rank ' "$WORK/placement.log" | sort)
    if [ "$got" = "$expect" ]; then
        pass "ranks 0-1 run in $NS1 ($HOST1), ranks 2-3 in $NS2 ($HOST2)"
    else
        fail "rank placement: expected
$expect"
    fi
else
    cat "$WORK/placement.log"
    fail "mpirun across the two namespaces (placement probe) exited non-zero"
fi

# --- 2. training across the two hosts, 3. equal to one node -----------------------------------
if ! "$CTRAIN" data synth --out "$WORK/data" --tokens 20000 --vocab 64 --seed 3 \
    >"$WORK/data.log" 2>&1; then
    cat "$WORK/data.log"
    fail "ctrain data synth"
fi
# The tiny model of mpi_equivalence.py under fsdp, 5 steps, batch 2 x grad_accum 2 per rank.
write_job() {
    PYTHONPATH="$SRC_DIR/tests" python3 - "$WORK/data" "$1" "$2" <<'EOF'
import sys
from mpi_equivalence import job_text
data, run_dir, path = sys.argv[1:4]
text = job_text(data, run_dir, 2, 2, "fsdp", 2)
assert "steps = 10\n" in text
with open(path, "w") as f:
    f.write(text.replace("steps = 10\n", "steps = 5\n"))
EOF
}
if ! write_job "$WORK/multinode" "$WORK/multinode.toml" ||
    ! write_job "$WORK/onenode" "$WORK/onenode.toml"; then
    fail "writing the job files"
fi

trained=1
if mn_run 100 "$WORK/multinode.log" "$CTRAIN" worker "$WORK/multinode.toml"; then
    pass "fsdp training, 4 ranks over 2 hosts (TCP over the veth)"
else
    tail -40 "$WORK/multinode.log"
    fail "fsdp training across the two hosts exited non-zero"
    trained=0
fi
if ! timeout -k 5 100 mpirun --oversubscribe -np 4 "$CTRAIN" worker "$WORK/onenode.toml" \
    >"$WORK/onenode.log" 2>&1; then
    tail -40 "$WORK/onenode.log"
    fail "fsdp training, 4 ranks on one node (the reference) exited non-zero"
    trained=0
fi
if [ "$trained" = 1 ]; then
    if PYTHONPATH="$SRC_DIR/tests" python3 - "$WORK/onenode" "$WORK/multinode" <<'EOF'; then
import sys
from mpi_equivalence import compare, read_metrics
ref_dir, dist_dir = sys.argv[1:3]
failures = compare("fsdp 2 hosts", ref_dir, dist_dir)
ref, dist = read_metrics(ref_dir), read_metrics(dist_dir)
if len(ref) != 5:
    failures.append(f"{len(ref)} logged steps, expected 5")
for r, d in zip(ref, dist):
    if r["comm_bytes"] != d["comm_bytes"]:
        failures.append(f"step {d['step']} comm_bytes {d['comm_bytes']} != one node's "
                        f"{r['comm_bytes']}")
for f in failures:
    print(" ", f)
sys.exit(1 if failures else 0)
EOF
        pass "2 hosts equal 1 node: losses, grad norms, final params within 1e-5, same comm_bytes"
    else
        fail "2 hosts differ from 1 node"
    fi
fi

echo "$passed passed, $failed failed"
[ "$failed" = 0 ]
