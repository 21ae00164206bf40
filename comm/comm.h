/*
 * comm: process groups and collectives. One interface, two backends behind one table: MPI for
 * host buffers (every build) and NCCL for device buffers (builds with CUDA; the unique id
 * travels over MPI). A group keeps its backend: a split of an NCCL group is an NCCL group.
 *
 * Every collective goes through one checked entry (comm.c) that numbers it, counts its bytes
 * and time per kind, and keeps the last 32 in a ring for the watchdog. Each group has a
 * communication thread: a call queues the operation and returns a request, ct_comm_wait
 * blocks until it is done. On MPI the thread makes the MPI calls, so they overlap the caller's
 * compute; on NCCL the call enqueues on the group's stream and the thread watches for its
 * completion and for NCCL's asynchronous errors. Requests come from a fixed pool: a warm
 * training step allocates nothing. docs/architecture.md (comm/) has the file map.
 *
 * Conventions (NCCL's, which the MPI backend follows):
 * - all-reduce sums in place: buf (count elements) on every rank.
 * - reduce-scatter: send holds size * recv_count elements; rank r receives the sum of block r.
 *   In place when recv == send + rank * recv_count (NCCL's rule; MPI's in-place form differs,
 *   the MPI backend adapts).
 * - all-gather: send holds send_count elements; recv receives size * send_count, block r from
 *   rank r. In place when send == recv + rank * send_count.
 * - Counts are size_t; the MPI backend splits operations that exceed MPI's int counts.
 * - Bytes counted (nccl-tests convention): all-reduce = buffer size, reduce-scatter = input
 *   size (size * recv_count elements), all-gather = output size, broadcast = buffer size.
 * - bf16 sums accumulate in fp32 (a user-defined MPI op).
 */
#ifndef CT_COMM_H
#define CT_COMM_H

#include "common/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef enum { CT_COMM_F32 = 0, CT_COMM_BF16, CT_COMM_I32, CT_COMM_U8, CT_COMM_F64 } ct_comm_dtype;

typedef enum {
    CT_COLL_ALLREDUCE = 0,
    CT_COLL_REDUCE_SCATTER,
    CT_COLL_ALLGATHER,
    CT_COLL_BROADCAST,
    CT_COLL_BARRIER,
    CT_COLL_KINDS
} ct_coll_kind;

typedef struct ct_comm ct_comm;
typedef struct ct_comm_request ct_comm_request;

/* MPI_Init_thread (MPI_THREAD_MULTIPLE), the world group with MPI_ERRORS_RETURN, its
 * communication thread, and the node-local rank (MPI_COMM_TYPE_SHARED). Without an MPI launcher
 * around it (a plain process), this is a world of one. */
ct_status ct_comm_init_world(ct_comm **world, int *argc, char ***argv);
/* The NCCL backend, for device buffers: a group of the same ranks as the MPI group `group`
 * whose collectives take buffers on CUDA device `device`, run on a stream of the group's own
 * and are numbered, counted and watched like the MPI ones. Collective over `group`: the ranks
 * agree on success (over MPI) before the unique id is broadcast and after the communicator is
 * made, so when one rank fails (no such device, ncclGetUniqueId, the init) every rank returns
 * an error and none waits for it; a rank whose init fails tells the others at once, so they
 * stop waiting inside theirs. Making the communicator takes at most the watchdog's timeout
 * (ct_comm_set_timeout; none when it is off). A build without CUDA returns CT_ERR_INVALID with
 * a message. */
ct_status ct_comm_init_nccl(ct_comm *group, int device, ct_comm **nccl);
/* The NCCL group's cudaStream_t (NULL on MPI). A collective's input must be complete when it is
 * queued, or produced by work ordered before it on this stream (ct_comm_order_after). */
void *ct_comm_stream(const ct_comm *comm);
/* Orders the group's later collectives after `event`, a cudaEvent_t the caller recorded on its
 * compute stream (cudaEventRecord before this call): on NCCL, cudaStreamWaitEvent on the
 * group's stream, so the collective reads what the compute wrote without the host waiting; on
 * MPI a no-op (host buffers are complete when the call is made; `event` may be NULL there). */
ct_status ct_comm_order_after(ct_comm *comm, void *event);
/* Sub-groups: ranks with equal `color` (>= 0) form one group, ordered by `key`. Collective over
 * `parent`; the group has parent's backend: MPI_Comm_split on MPI, and on NCCL ncclCommSplit
 * as well (with the same agreements and bound as ct_comm_init_nccl; a rank whose ncclCommSplit
 * fails is waited for until that bound). */
ct_status ct_comm_split(ct_comm *parent, int color, int key, ct_comm **group);
void ct_comm_free(ct_comm *comm);
/* Ends MPI after every group is freed. */
void ct_comm_finalize(void);
/* Ends the whole job now with `code` (after printing the error): every NCCL communicator of
 * this process is aborted (ncclCommAbort), then MPI_Abort. `comm` may be NULL. */
_Noreturn void ct_comm_abort(ct_comm *comm, int code);
/* "NCCL 2.28.9", or why there is none ("built without CUDA ..."), for `ctrain info`. */
void ct_comm_describe_nccl(char *info, size_t info_bytes);

int ct_comm_rank(const ct_comm *comm);
int ct_comm_size(const ct_comm *comm);
int ct_comm_local_rank(const ct_comm *comm); /* rank among the ranks on this node */
int ct_comm_local_size(const ct_comm *comm);
/* "mpi" or "nccl" */
const char *ct_comm_backend(const ct_comm *comm);

/* Collectives. `request` NULL: blocking. Otherwise *request receives a handle to wait on; the
 * buffers must stay untouched until the wait returns. */
ct_status ct_comm_allreduce(ct_comm *comm, void *buf, size_t count, ct_comm_dtype dtype,
                            ct_comm_request **request);
ct_status ct_comm_reduce_scatter(ct_comm *comm, const void *send, void *recv, size_t recv_count,
                                 ct_comm_dtype dtype, ct_comm_request **request);
ct_status ct_comm_allgather(ct_comm *comm, const void *send, void *recv, size_t send_count,
                            ct_comm_dtype dtype, ct_comm_request **request);
ct_status ct_comm_broadcast(ct_comm *comm, void *buf, size_t count, ct_comm_dtype dtype, int root,
                            ct_comm_request **request);
ct_status ct_comm_barrier(ct_comm *comm);
/* Blocks until the operation is done and releases the request. */
ct_status ct_comm_wait(ct_comm_request *request);

/* Traffic and time per collective kind since the last reset (this rank's view). */
typedef struct {
    uint64_t calls[CT_COLL_KINDS];
    uint64_t bytes[CT_COLL_KINDS];
    double seconds[CT_COLL_KINDS]; /* from queueing to completion */
} ct_comm_stats;
void ct_comm_get_stats(const ct_comm *comm, ct_comm_stats *stats);
void ct_comm_reset_stats(ct_comm *comm);
const char *ct_comm_kind_name(ct_coll_kind kind);

/* The watchdog: a collective not finished within `timeout_s`, or a rank that has sent no
 * heartbeat for that long (frozen, stopped or dead), makes every rank print its last 32
 * collectives (kind, sequence number, bytes, state) and which rank is behind or silent, then
 * the job ends with exit code 3 (NCCL communicators aborted first). 0 turns it off. The same
 * timeout bounds making an NCCL communicator. Process-wide: `comm` is not used. */
void ct_comm_set_timeout(ct_comm *comm, double timeout_s);
/* The training step, for messages and for test-only fault injection
 * (CTRAIN_FAULT=stall:rank=R:step=S stalls rank R before its first collective of step S). */
void ct_comm_set_step(ct_comm *comm, int64_t step);

/* Binds this process (all its threads, and those it makes later) to local rank `local_rank`'s
 * contiguous block of whole cores among the CPUs it may run on, split evenly between
 * `local_size` ranks (comm/bind.c, hwloc). With more local ranks than those CPUs' cores nothing
 * changes (oversubscribed, or already placed by mpirun/srun). `threads` (the rank's compute
 * threads; 0 = not decided yet) only adds a note when it exceeds the block. `description` receives
 * what was done ("bound to 4 of 16 cores (cpus 4-7)"). hwloc failures are warnings (ct_log WARN)
 * and still return CT_OK: binding is an optimisation. */
ct_status ct_comm_bind_cores(int local_rank, int local_size, int threads, char *description,
                             size_t description_bytes);

#endif
