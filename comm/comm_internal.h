/*
 * comm's private view, shared by its files and nobody else: the group and request structures,
 * the checked entry's bookkeeping (comm.c), the MPI backend's thread (mpi.c) and the watchdog
 * (watchdog.c).
 *
 * Locking: one process-wide lock (comm.c's `accounting`) guards the sequence numbers, the ring
 * of the last 32 collectives and the registry of live groups; each group's own lock guards its
 * request pool, its queue and its stats. When both are held, the process-wide lock is taken
 * first.
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
    CT_REQ_RUNNING, /* inside the MPI call */
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
    char message[480]; /* the backend thread's error text, raised again by ct_comm_wait */
    ct_comm_request *next;
};

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
    /* The backend. launch (may be NULL) starts an operation on the caller's thread, in call
     * order; run, on the group's thread in FIFO order, returns when it is done; release frees
     * the backend's state after the thread has stopped; abort_backend (may be NULL) tears the
     * backend down before MPI_Abort. MPI: run makes the blocking MPI call. NCCL: launch
     * enqueues on the stream, run waits for the request's event. */
    const char *backend_name;
    ct_status (*launch)(ct_comm *comm, ct_comm_request *req);
    ct_status (*run)(ct_comm *comm, ct_comm_request *req);
    void (*release)(ct_comm *comm);
    void (*abort_backend)(ct_comm *comm);
    void *backend;
    ct_comm *next_registered;     /* under the accounting lock */
    struct ct_watchdog *watchdog; /* the world only */
};

/* CT_MPI(call): an MPI failure becomes CT_ERR_EXTERNAL with MPI's own text and file:line. */
ct_status ct_comm_mpi_error(int code, const char *call, const char *file, int line);
#define CT_MPI(call)                                                                               \
    do {                                                                                           \
        int ct_mpi_rc_ = (call);                                                                   \
        if (ct_mpi_rc_ != MPI_SUCCESS)                                                             \
            return ct_comm_mpi_error(ct_mpi_rc_, #call, __FILE__, __LINE__);                       \
    } while (0)

/* comm.c: the registry, the request pool and the completion bookkeeping. */
void ct_comm_register(ct_comm *comm);
void ct_comm_unregister(ct_comm *comm);
int ct_comm_live_groups(void);
void ct_comm_pool_init(ct_comm *comm);
/* Called by the backend thread around each operation (takes the locks itself). */
void ct_comm_mark_running(ct_comm_request *req);
void ct_comm_mark_done(ct_comm_request *req, ct_status status, const char *message);
size_t ct_comm_dtype_bytes(ct_comm_dtype dtype);
/* The world's rank for messages (-1 before init). */
int ct_comm_world_rank(void);
void ct_comm_set_world_rank(int rank);

/* What the watchdog reads: this process's collectives, under the accounting lock. */
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

/* mpi.c: groups, their threads and the MPI backend. */
/* Wraps `mpi` (owned from here on) in an MPI-backend group with its thread; on failure *out
 * may still hold the half-made group for ct_comm_free. */
ct_status ct_comm_group_new(MPI_Comm mpi, bool is_world, ct_comm **out);
/* Hands a launched request to the group's thread. */
void ct_comm_enqueue(ct_comm *comm, ct_comm_request *req);
/* Waits until nothing is queued or running on the group (before a call on the caller's thread
 * that must not race the group's collectives). */
void ct_comm_drain(ct_comm *comm);

/* watchdog.c */
ct_status ct_comm_watchdog_start(ct_comm *world);
void ct_comm_watchdog_stop(ct_comm *world);
/* Stalls this rank forever when CTRAIN_FAULT (common/fault.h) has a stall fault for its world
 * rank and the current step. */
void ct_comm_fault_check(void);

#endif
