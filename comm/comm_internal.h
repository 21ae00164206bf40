/*
 * comm's private view, shared by its files and nobody else: the group and request structures,
 * the backend table, and what each file offers the others. It is comm/'s only internal header;
 * no file of comm/ includes another's.
 *
 *   comm.c      the checked entry every collective goes through: validation, sequence numbers,
 *               bytes and time per kind, the ring of the last 32, the registry of live groups
 *               (what the watchdog reads), the training step; hands requests to a group
 *   group.c     groups, whatever their backend: MPI's start and end, the world, making,
 *               splitting and freeing groups, each group's communication thread and FIFO queue,
 *               the agreement on success while a communicator is made, the end of the job
 *   mpi.c       the MPI backend (host buffers): the blocking MPI calls, the bf16 sum, int counts
 *   nccl.c      the NCCL backend (device buffers; nccl_none.c in builds without CUDA)
 *   watchdog.c  the hang watchdog
 *   bind.c      binding a rank to its cores (hwloc); needs only comm/comm.h
 *
 * comm.c and group.c know no backend: they reach MPI or NCCL through the group's table
 * (ct_comm_ops). Every group has an MPI communicator of its own (the group's ranks, for its local
 * rank and for agreeing while a communicator is made), whatever its backend.
 *
 * Locking: one process-wide lock (comm.c's) guards the sequence numbers, the ring and the
 * registry of live groups (and with it a group's backend table, so that an abort from the
 * watchdog's thread sees a whole backend); each group's own lock guards its request pool, its
 * queue and its stats; a backend may have a lock of its own (NCCL: its communicator against an
 * abort). Locks are taken in that order: process-wide, group, backend.
 */
#ifndef CT_COMM_INTERNAL_H
#define CT_COMM_INTERNAL_H

#include "comm/comm.h"

#include <mpi.h>
#include <pthread.h>
#include <stdio.h>

/* Requests per group. shard/ keeps up to 64 bucket all-reduces in flight besides its gathers:
 * a pool twice that leaves room. A request is ~600 bytes, so a group's pool is ~150 KB. */
#define CT_COMM_POOL 256
/* Collectives kept for the watchdog's report. */
#define CT_COMM_RING 32

typedef enum {
    CT_REQ_FREE = 0,
    CT_REQ_QUEUED,  /* handed to the backend, not started */
    CT_REQ_RUNNING, /* on the group's thread, inside the backend's run */
    CT_REQ_DONE,    /* finished (status says how); waits for ct_comm_wait */
    CT_REQ_FAILED   /* ring only: finished with an error */
} ct_comm_req_state;

struct ct_comm_request {
    ct_comm *comm;
    ct_coll_kind kind;
    ct_comm_dtype dtype;
    const void *send; /* reduce-scatter, all-gather: the input */
    void *recv;       /* the output; all-reduce and broadcast: the buffer */
    size_t count;     /* elements: buffer (all-reduce, broadcast), recv_count, send_count */
    int root;
    uint64_t seq;
    uint64_t bytes; /* nccl-tests convention, see comm.h */
    double queued_s;
    ct_comm_req_state state;
    ct_status status;
    char message[480]; /* the group thread's error text, raised again by ct_comm_wait */
    ct_comm_request *next;
};

/*
 * A backend. Every entry but name and run may be NULL (nothing to do). The MPI backend fills in
 * only run: an MPI group needs nothing but the communicator every group has.
 */
typedef struct {
    const char *name; /* "mpi", "nccl" (ct_comm_backend) */
    /* On the caller's thread, in call order, before the request is queued. NCCL: enqueues the
     * operation on the group's stream and records the request's event. */
    ct_status (*launch)(ct_comm *comm, ct_comm_request *req);
    /* On the group's thread, in FIFO order; returns when the operation is done. MPI: makes the
     * blocking call. NCCL: polls the request's event and the communicator's errors. */
    ct_status (*run)(ct_comm *comm, ct_comm_request *req);
    /* ct_comm_split: makes `child` (group.c's new group of parent's ranks of one color, on the
     * MPI backend) a group of this backend too. Collective over parent: every rank calls it,
     * `made` saying how group.c's part went there (child may be NULL when it failed). */
    ct_status (*split)(ct_comm *parent, int color, int key, ct_comm *child, ct_status made);
    /* ct_comm_order_after. */
    ct_status (*order_after)(ct_comm *comm, void *event);
    /* ct_comm_stream. */
    void *(*stream)(const ct_comm *comm);
    /* Tears the backend's communicator down before MPI_Abort; any thread, never blocks for
     * long. Called under the process-wide lock. */
    void (*abort)(ct_comm *comm);
    /* Frees the backend's state after the group's thread has stopped. */
    void (*release)(ct_comm *comm);
} ct_comm_ops;

/* mpi.c */
extern const ct_comm_ops ct_comm_mpi_ops;

struct ct_comm {
    MPI_Comm mpi; /* duplicated or split; MPI_ERRORS_RETURN set */
    int rank, size, local_rank, local_size;
    bool is_world;
    pthread_mutex_t lock;
    pthread_cond_t work; /* the queue is not empty, or stopping */
    pthread_cond_t done; /* some request finished */
    pthread_t thread;
    bool thread_started, stopping;
    ct_comm_request pool[CT_COMM_POOL];
    ct_comm_request *free_list;
    ct_comm_request *queue_head, *queue_tail;
    ct_comm_stats stats;
    const ct_comm_ops *ops;       /* set with ct_comm_set_backend */
    void *backend;                /* the backend's state (NULL on MPI) */
    ct_comm *next_registered;     /* under the process-wide lock */
    struct ct_watchdog *watchdog; /* the world only */
};

static inline size_t ct_comm_dtype_bytes(ct_comm_dtype dtype) {
    switch (dtype) {
    case CT_COMM_F32:
    case CT_COMM_I32:
        return 4;
    case CT_COMM_BF16:
        return 2;
    case CT_COMM_U8:
        return 1;
    case CT_COMM_F64:
        return 8;
    }
    return 0;
}

/* CT_MPI(call): an MPI failure becomes CT_ERR_EXTERNAL with MPI's own text and file:line. */
ct_status ct_comm_mpi_error(int code, const char *call, const char *file, int line);
#define CT_MPI(call)                                                                               \
    do {                                                                                           \
        int ct_mpi_rc_ = (call);                                                                   \
        if (ct_mpi_rc_ != MPI_SUCCESS)                                                             \
            return ct_comm_mpi_error(ct_mpi_rc_, #call, __FILE__, __LINE__);                       \
    } while (0)

/* mpi.c: the backend's process-wide state. read_env (before MPI_Init, so a malformed value
 * fails first) takes CTRAIN_COMM_MAX_COUNT; init (after it) makes the bf16 sum op, finalize
 * (before MPI_Finalize) frees it. */
ct_status ct_comm_mpi_backend_read_env(void);
ct_status ct_comm_mpi_backend_init(void);
void ct_comm_mpi_backend_finalize(void);

/* ---------------------------------------------------------------- comm.c */

/* The registry of live groups (the watchdog's view and the job's end walk it). */
void ct_comm_register(ct_comm *comm);
void ct_comm_unregister(ct_comm *comm);
int ct_comm_live_groups(void);
/* Gives `comm` its backend (its table and state), under the process-wide lock. */
void ct_comm_set_backend(ct_comm *comm, const ct_comm_ops *ops, void *state);
/* Tears down every live group's backend communicator (NCCL: ncclCommAbort) before the job
 * ends with MPI_Abort; safe from any thread. */
void ct_comm_abort_backends(void);
void ct_comm_pool_init(ct_comm *comm);
/* Called on the group's thread around each operation (takes the locks itself). */
void ct_comm_mark_running(ct_comm_request *req);
void ct_comm_mark_done(ct_comm_request *req, ct_status status, const char *message);
/* The world's rank for messages (-1 before init). */
int ct_comm_world_rank(void);
void ct_comm_set_world_rank(int rank);
/* The step set by ct_comm_set_step (for the watchdog's heartbeat). */
int64_t ct_comm_current_step(void);

/* What the watchdog reads: this process's collectives, under the process-wide lock. */
typedef struct {
    uint64_t started;   /* the last sequence number handed out (0: none yet) */
    uint64_t completed; /* the highest sequence number finished */
    bool pending;       /* is some collective queued or running? */
    double oldest_age_s;
    uint64_t oldest_seq, oldest_bytes;
    ct_coll_kind oldest_kind;
} ct_comm_progress;
void ct_comm_get_progress(ct_comm_progress *progress);
/* Prints the ring (oldest first), each line prefixed "[rank r] ". */
void ct_comm_print_ring(FILE *out);

/* ---------------------------------------------------------------- group.c */

/* Wraps `mpi` (owned from here on) in an MPI-backend group with its thread; on failure *out
 * may still hold the half-made group for ct_comm_free. */
ct_status ct_comm_group_new(MPI_Comm mpi, bool is_world, ct_comm **out);
/* Hands a launched request to the group's thread. */
void ct_comm_enqueue(ct_comm *comm, ct_comm_request *req);
/* Waits until nothing is queued or running on the group (before a call on the caller's thread
 * that must not race the group's collectives). */
void ct_comm_drain(ct_comm *comm);
/*
 * While a communicator is made: every rank of `group` (drained) passes how its part went
 * (`mine`); all get CT_OK only when every rank had it. Otherwise a failed rank gets its own
 * status and message back, and the others an error naming the lowest failed world rank and
 * `what`. An MPI_Allreduce of one int on group's own communicator, on the caller's thread:
 * like MPI_Comm_split it is part of making a group, not a numbered collective.
 */
ct_status ct_comm_agree(ct_comm *group, ct_status mine, const char *what);
/* Rank 0's `bytes` bytes at `buf` to every rank of `group` (drained), the same way (NCCL's
 * unique id). */
ct_status ct_comm_setup_broadcast(ct_comm *group, void *buf, size_t bytes);

/* ---------------------------------------------------------------- watchdog.c */

ct_status ct_comm_watchdog_start(ct_comm *world);
void ct_comm_watchdog_stop(ct_comm *world);
/* The watchdog's timeout in seconds (0: off): also the bound on making an NCCL communicator. */
double ct_comm_timeout_s(void);

#endif
