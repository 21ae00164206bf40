#!/usr/bin/env bash
# Checks every #include "dir/..." in the C and CUDA sources against the module DAG of
# DESIGN.md / STYLE.md rule 1: a module may include only itself and the modules below it.
set -u
root=${1:-.}
cd "$root" || exit 2
declare -A allowed=(
  [common]="common"
  [kernels]="kernels common"
  [model]="model kernels common"
  [comm]="comm kernels common"
  [data]="data common"
  [shard]="shard model comm kernels common"
  [checkpoint]="checkpoint shard model comm kernels data common"
  [job]="job common"
  [train]="train job checkpoint shard model comm kernels data common"
  [launcher]="launcher train job checkpoint shard model comm kernels data common"
)
failures=0
checked=0
for module in "${!allowed[@]}"; do
  [ -d "$module" ] || continue
  while IFS= read -r line; do
    file=${line%%:*}
    target=$(sed -E 's/.*#include "([a-z_]+)\/.*/\1/' <<<"$line")
    checked=$((checked + 1))
    if ! grep -qw "$target" <<<"${allowed[$module]}"; then
      echo "layering violation: $file includes $target/ (module $module may use: ${allowed[$module]})"
      failures=$((failures + 1))
    fi
  done < <(grep -rn --include='*.c' --include='*.h' --include='*.cu' -E '#include "[a-z_]+/' "$module")
done
echo "checked $checked includes: $failures violations"

# The trainer communicates only through shard/ (shard/run_comm.c and the step protocol): no
# collective, split or statistics call of comm/ in train/. Queries of rank and size are fine.
comm_calls=$(grep -rn --include='*.c' --include='*.h' -E \
  'ct_comm_(allreduce|reduce_scatter|allgather|broadcast|barrier|split|set_step|get_stats|set_timeout|wait)\b' train/ || true)
if [ -n "$comm_calls" ]; then
  echo "train/ calls comm/ directly (go through shard/):"
  echo "$comm_calls"
  failures=$((failures + 1))
fi
# One shard layout: the formula S = ceil(numel / L) is written only in shard/layout.c (a
# ceil-division by a rank count; other ceil-divisions, such as zstd chunk counts, are fine).
layout_copies=$(grep -rn --include='*.c' -E '\+ *[A-Za-z_>.-]+ *- *1\) */ *[A-Za-z_>.-]*([Ll]ayout_ranks|world[A-Za-z_]*|n_ranks|ranks|\bL)\b' shard/ checkpoint/ train/ |
  grep -v '^shard/layout.c:' || true)
if [ -n "$layout_copies" ]; then
  echo "a ceil-division outside shard/layout.c (use ct_shard_layout):"
  echo "$layout_copies"
  failures=$((failures + 1))
fi
# One chooser of the kernel table: the CPU table is named only in kernels/ (kernels.c's
# ct_kernels_for_device and the CPU backend itself) and the kernel tests, which hold several
# tables side by side. Everything else is handed a table.
cpu_table=$(grep -rn --include='*.c' --include='*.h' --include='*.cu' -E '\bct_kern_cpu\(' . |
  grep -v -E '^\./(kernels|build[^/]*)/' | grep -v -E '^\./tests/test_(kernels|half)\.c:' || true)
if [ -n "$cpu_table" ]; then
  echo "the CPU kernel table named outside kernels/ (use ct_kernels_for_device):"
  echo "$cpu_table"
  failures=$((failures + 1))
fi

# shard/ and checkpoint/ touch unit buffers (params, grads, pooled and flat buffers, Adam
# state) only through the kernel table: no memcpy or memset naming one of them.
unit_buffer='(params|grads|param_shard|grad_shard|flat_params|flat_grads|pool|opt\.m|opt\.v|src|copy|buffer|recv|own|dest|full)\b'
raw_copies=$(grep -rn --include='*.c' -E "\b(memcpy|memset|memmove)\([^;]*$unit_buffer" shard/ checkpoint/save.c checkpoint/load.c checkpoint/whole_model.c || true)
if [ -n "$raw_copies" ]; then
  echo "memcpy/memset on a unit buffer in shard/ or checkpoint/ (use the kernel table):"
  echo "$raw_copies"
  failures=$((failures + 1))
fi

# Tensors and units carry their dtype: no float * data or grad field in their structs.
float_fields=$(awk '/^(typedef )?struct (ct_tensor|ct_unit) /, /^\}/ {print FILENAME ":" FNR ": " $0}' \
  model/*.h | grep -E 'float \*(data|grad)' || true)
if [ -n "$float_fields" ]; then
  echo "a float * data or grad field in ct_tensor or ct_unit (use void * and a dtype):"
  echo "$float_fields"
  failures=$((failures + 1))
fi

# comm/'s own layering (simple greps): one internal header and no include circle (comm/ files
# include only comm/comm.h and comm/comm_internal.h of comm/, no .c file, and comm_internal.h
# stays in comm/); NCCL and CUDA only in comm/nccl.c (NCCL in no other folder); the checked
# entry (comm.c) names no MPI; MPI collectives only in mpi.c and group.c (the agreement).
comm_rules=$( (
  grep -rnE '#include "comm/' comm | grep -vE '#include "comm/(comm|comm_internal)\.h"'
  grep -rnE '#include "[^"]*\.c"' comm
  for m in "${!allowed[@]}"; do [ "$m" != comm ] && [ -d "$m" ] && echo "$m"; done |
    xargs grep -rlE --include='*.c' --include='*.h' --include='*.cu' 'comm_internal\.h|<nccl\.h>'
  grep -rlE '#include <(nccl|cuda[a-z_]*)\.h>' comm | grep -vx comm/nccl.c
  grep -nE '\b(nccl|cuda)[A-Z][A-Za-z]*\(' comm/comm.c comm/group.c comm/mpi.c comm/watchdog.c
  grep -n 'MPI_' comm/comm.c
  grep -nE 'MPI_(Allreduce|Reduce_scatter_block|Reduce_scatter|Allgather|Bcast|Reduce|Barrier)\(' \
    comm/comm.c comm/watchdog.c comm/nccl.c comm/nccl_none.c comm/bind.c
) 2>/dev/null)
if [ -n "$comm_rules" ]; then
  echo "comm/ layering violations:"
  echo "$comm_rules"
  failures=$((failures + 1))
fi
[ "$checked" -gt 0 ] && [ "$failures" -eq 0 ]
