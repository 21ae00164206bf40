/*
 * Binding a rank to its cores with hwloc. The ranks of a node split the CPUs this process may
 * run on (its current binding: the whole machine under `mpirun --bind-to none`, which is what
 * ctrain-launch runs, or what taskset, a container's cpuset or Slurm left it) into contiguous,
 * balanced blocks of whole cores, in hwloc's logical order (so a block stays inside one socket
 * and cache domain where it can): local rank i gets cores [i*n/L, (i+1)*n/L) of n cores and L
 * local ranks. The rank's threads (OpenMP and OpenBLAS, made later) inherit the binding.
 *
 * With more local ranks than cores nothing changes: the node is oversubscribed and the scheduler
 * places threads best, or the launcher already gave each rank a narrower set (mpirun's default
 * --bind-to core, srun's --cpu-bind) and that choice stands. hwloc is an optimisation, never a
 * reason to fail: its errors are warnings and the rank runs as it was.
 */
#include "comm/comm.h"

#include <errno.h>
#include <hwloc.h>
#include <stdio.h>
#include <string.h>

/* Warns about a failed hwloc call and says "not bound" in the description. */
static ct_status bind_warn(char *description, size_t description_bytes, const char *what) {
    ct_log(CT_LOG_WARN, "comm", "hwloc: %s failed (%s); this rank runs unbound", what,
           strerror(errno));
    snprintf(description, description_bytes, "not bound (hwloc: %s failed)", what);
    return CT_OK;
}

ct_status ct_comm_bind_cores(int local_rank, int local_size, int threads, char *description,
                             size_t description_bytes) {
    CT_ASSERT(local_size >= 1 && local_rank >= 0 && local_rank < local_size, "local rank %d of %d",
              local_rank, local_size);
    hwloc_topology_t topo;
    if (hwloc_topology_init(&topo) != 0)
        return bind_warn(description, description_bytes, "hwloc_topology_init");
    if (hwloc_topology_load(topo) != 0) {
        hwloc_topology_destroy(topo);
        return bind_warn(description, description_bytes, "hwloc_topology_load");
    }
    hwloc_bitmap_t allowed = hwloc_bitmap_alloc(), block = hwloc_bitmap_alloc();
    ct_status status = CT_OK;
    if (!allowed || !block) {
        status = bind_warn(description, description_bytes, "hwloc_bitmap_alloc");
        goto done;
    }
    if (hwloc_get_cpubind(topo, allowed, HWLOC_CPUBIND_PROCESS) != 0) {
        status = bind_warn(description, description_bytes, "hwloc_get_cpubind");
        goto done;
    }
    /* Whole cores; a set that holds no whole core (odd hyperthreads) is split by PU. */
    hwloc_obj_type_t type = HWLOC_OBJ_CORE;
    int n = hwloc_get_nbobjs_inside_cpuset_by_type(topo, allowed, type);
    if (n <= 0) {
        type = HWLOC_OBJ_PU;
        n = hwloc_get_nbobjs_inside_cpuset_by_type(topo, allowed, type);
    }
    const char *unit = type == HWLOC_OBJ_CORE ? "cores" : "cpus";
    if (n < local_size) {
        /* Narrower than the machine: the launcher placed this rank (mpirun's default binding,
         * srun's --cpu-bind); keep its choice. Otherwise the node is oversubscribed. */
        char cpus[128];
        hwloc_bitmap_list_snprintf(cpus, sizeof(cpus), allowed);
        if (!hwloc_bitmap_isequal(allowed, hwloc_topology_get_allowed_cpuset(topo)))
            snprintf(description, description_bytes, "kept the launcher's binding (cpus %s)", cpus);
        else
            snprintf(description, description_bytes,
                     "not bound: %d local ranks share %d %s (oversubscribed)", local_size, n, unit);
        goto done;
    }
    int first = (int)((long)local_rank * n / local_size);
    int last = (int)((long)(local_rank + 1) * n / local_size); /* exclusive */
    for (int i = first; i < last; i++) {
        hwloc_obj_t obj = hwloc_get_obj_inside_cpuset_by_type(topo, allowed, type, (unsigned)i);
        if (obj) hwloc_bitmap_or(block, block, obj->cpuset);
    }
    hwloc_bitmap_and(block, block, allowed);
    if (hwloc_set_cpubind(topo, block, HWLOC_CPUBIND_PROCESS) != 0) {
        status = bind_warn(description, description_bytes, "hwloc_set_cpubind");
        goto done;
    }
    char cpus[128];
    hwloc_bitmap_list_snprintf(cpus, sizeof(cpus), block);
    int written = snprintf(description, description_bytes, "bound to %d of %d %s (cpus %s)",
                           last - first, n, unit, cpus);
    if (threads > last - first && written > 0 && (size_t)written < description_bytes)
        snprintf(description + written, description_bytes - (size_t)written,
                 "; %d threads on %d %s oversubscribe them", threads, last - first, unit);
done:
    hwloc_bitmap_free(block);
    hwloc_bitmap_free(allowed);
    hwloc_topology_destroy(topo);
    return status;
}
