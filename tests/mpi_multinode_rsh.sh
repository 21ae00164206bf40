#!/bin/sh
# Open MPI's rsh agent for tests/mpi_multinode.sh: "logs in" to a host by entering the network
# namespace that plays it. mpirun calls it as `agent [options] host command...`, as it would
# call ssh; the options (ssh's -x and the like) mean nothing here and are skipped.
# CTRAIN_MN_HOSTS maps host names to namespaces: "host1=ns1 host2=ns2".
while [ $# -gt 0 ]; do
    case "$1" in
        -*) shift ;;
        *) break ;;
    esac
done
if [ $# -lt 2 ]; then
    echo "mpi_multinode_rsh.sh: usage: [options] host command..." >&2
    exit 2
fi
host=$1
shift
namespace=
for pair in $CTRAIN_MN_HOSTS; do
    if [ "${pair%%=*}" = "$host" ]; then
        namespace=${pair#*=}
    fi
done
if [ -z "$namespace" ]; then
    echo "mpi_multinode_rsh.sh: no namespace for host '$host'" \
        "(CTRAIN_MN_HOSTS='$CTRAIN_MN_HOSTS')" >&2
    exit 255
fi
# ssh joins its arguments with spaces and hands them to the remote shell; so does this. A host
# of its own also has its own name: the daemon gets one through a UTS namespace, because Open
# MPI's daemons find their node by gethostname(), and with the machine's one name every daemon
# takes itself for mpirun's node (MPI_Comm_split_type(MPI_COMM_TYPE_SHARED) then differs between
# the hosts: one side hangs, the other crashes).
# shellcheck disable=SC2016 # expanded by the inner shell
exec ip netns exec "$namespace" unshare --uts /bin/sh -c 'hostname "$0" && exec /bin/sh -c "$1"' \
    "$host" "$*"
