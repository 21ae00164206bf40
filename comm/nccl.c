/*
 * The NCCL backend, for device buffers (built only with CUDA). An NCCL group is a group of
 * group.c (its own MPI communicator, its thread, the checked entry's numbering, bytes, ring and
 * watchdog) whose table launches and waits for NCCL operations.
 *
 * launch, on the caller's thread and in call order (NCCL's rule, like MPI's), enqueues the
 * operation on the group's stream and records the request's event; the group's thread then
 * polls the events in FIFO order (cudaEventQuery, and ncclCommGetAsyncError between queries, so
 * that an error on another rank, which NCCL reports here as an asynchronous error, ends the
 * wait instead of leaving it blocked forever) and marks each request done. A communicator with
 * an asynchronous error is aborted at once (NCCL's rule), so every later operation on it fails
 * instead of hanging. A collective that neither ends nor fails is the watchdog's: it reports it
 * at comm.timeout_s and ends the job, aborting every NCCL communicator before MPI_Abort.
 *
 * Communicators are nonblocking (ncclConfig_t.blocking = 0): no NCCL call holds its thread, so
 * the watchdog's abort can always reach a communicator, and making one is bounded by the
 * watchdog's timeout (when set). Any call may answer ncclInProgress; `settle` polls until the
 * communicator is ready. A lock per communicator keeps an abort from another thread (the
 * watchdog's, under the process-wide lock) from freeing it under a call in flight.
 *
 * Making a communicator (ct_comm_init_nccl, ct_comm_split) is collective: the ranks agree on
 * success before it (device, stream, events, rank 0's unique id) and after it (the
 * communicator itself), over MPI (ct_comm_agree), so a rank that fails makes every rank return
 * an error rather than leaving them waiting for it. The unique id travels over MPI likewise;
 * a split group's communicator comes from ncclCommSplit of its parent's. A rank whose
 * ncclCommInitRankConfig fails sends every other rank a notice on the new group's own MPI
 * communicator, which their polling looks for: the others would otherwise wait for it inside
 * NCCL's bootstrap until comm.timeout_s (forever with the watchdog off). That communicator is
 * fresh and is freed when the group is given up, so no notice outlives the attempt.
 *
 * Events are made once per pool slot: a warm step allocates nothing. NCCL counts are size_t
 * and its in-place rules are comm.h's, so nothing is split or adapted here; bf16 sums are
 * NCCL's own.
 */
#include "comm/comm_internal.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <sched.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    int device;
    pthread_mutex_t lock; /* guards `nccl` against an abort from another thread */
    ncclComm_t nccl;      /* NULL before init and once aborted */
    cudaStream_t stream;
    bool have_stream;
    int n_events;
    cudaEvent_t events[CT_COMM_POOL]; /* one per request slot */
    int32_t *scratch;                 /* device int: the barrier's all-reduce */
} nccl_state;

static const ct_comm_ops nccl_ops;

static ct_status cuda_fail(cudaError_t code, const char *call, const char *file, int line) {
    int name_len = (int)strcspn(call, "(");
    return ct_error_at(CT_ERR_EXTERNAL, file, line, "[rank %d] %.*s failed at %s:%d: %s",
                       ct_comm_world_rank(), name_len, call, file, line, cudaGetErrorString(code));
}

static ct_status nccl_fail(ncclResult_t code, const char *call, const char *file, int line) {
    int name_len = (int)strcspn(call, "(");
    return ct_error_at(CT_ERR_EXTERNAL, file, line, "[rank %d] %.*s failed at %s:%d: %s (%s)",
                       ct_comm_world_rank(), name_len, call, file, line, ncclGetErrorString(code),
                       ncclGetLastError(NULL));
}

#define CT_CUDA(call)                                                                              \
    do {                                                                                           \
        cudaError_t ct_cuda_rc_ = (call);                                                          \
        if (ct_cuda_rc_ != cudaSuccess) return cuda_fail(ct_cuda_rc_, #call, __FILE__, __LINE__);  \
    } while (0)
#define CT_NCCL(call)                                                                              \
    do {                                                                                           \
        ncclResult_t ct_nccl_rc_ = (call);                                                         \
        if (ct_nccl_rc_ != ncclSuccess) return nccl_fail(ct_nccl_rc_, #call, __FILE__, __LINE__);  \
    } while (0)

static ncclDataType_t nccl_type(ct_comm_dtype dtype) {
    switch (dtype) {
    case CT_COMM_F32:
        return ncclFloat32;
    case CT_COMM_BF16:
        return ncclBfloat16;
    case CT_COMM_I32:
        return ncclInt32;
    case CT_COMM_U8:
        return ncclUint8;
    case CT_COMM_F64:
        return ncclFloat64;
    }
    return ncclFloat32;
}

/* ---------------------------------------------------------------- polling and aborting */

/* Between polls: yields at first (most operations end within microseconds), then sleeps 50 us
 * at a time, so a long wait does not hold a core. */
static void pause_poll(int round) {
    if (round < 1000)
        sched_yield();
    else
        usleep(50);
}

static ct_status aborted_error(const char *call) {
    return ct_error(CT_ERR_EXTERNAL, "[rank %d] %s: the NCCL communicator was aborted",
                    ct_comm_world_rank(), call);
}

/* Under ns->lock. After this every call on the communicator fails with aborted_error. */
static void abort_locked(nccl_state *ns) {
    if (ns->nccl) ncclCommAbort(ns->nccl);
    ns->nccl = NULL;
}

/* The communicator's state (ncclCommGetAsyncError) into *state; an error once aborted. */
static ct_status comm_state(nccl_state *ns, const char *call, ncclResult_t *state) {
    pthread_mutex_lock(&ns->lock);
    if (!ns->nccl) {
        pthread_mutex_unlock(&ns->lock);
        return aborted_error(call);
    }
    ncclResult_t rc = ncclCommGetAsyncError(ns->nccl, state);
    pthread_mutex_unlock(&ns->lock);
    if (rc != ncclSuccess) return nccl_fail(rc, "ncclCommGetAsyncError", __FILE__, __LINE__);
    return CT_OK;
}

/* The tag of the notice "my ncclCommInitRankConfig failed" on a new group's MPI communicator. */
#define INIT_FAILED_TAG 7301

/* Tells every other rank of `comm` (a group being made) that this rank's init failed. */
static void notify_init_failed(const ct_comm *comm) {
    static const char notice = 1; /* outlives the sends, which are never waited for */
    for (int r = 0; r < comm->size; r++) {
        MPI_Request request;
        if (r != comm->rank &&
            MPI_Isend(&notice, 1, MPI_CHAR, r, INIT_FAILED_TAG, comm->mpi, &request) == MPI_SUCCESS)
            MPI_Request_free(&request);
    }
}

/* Whether another rank of `comm` has sent that notice: the rank it came from, or -1. */
static int init_failed_elsewhere(const ct_comm *comm) {
    int arrived = 0;
    MPI_Status probe;
    if (MPI_Iprobe(MPI_ANY_SOURCE, INIT_FAILED_TAG, comm->mpi, &arrived, &probe) != MPI_SUCCESS)
        return -1;
    return arrived ? probe.MPI_SOURCE : -1;
}

/* Takes `rc`, the answer of `call` on the nonblocking communicator: while it is ncclInProgress,
 * polls the communicator until it is ready or fails, at most `timeout_s` (0: no bound). With
 * `making` (a group whose init is in progress), also stops when another of its ranks says that
 * its init failed. */
static ct_status settle(nccl_state *ns, ncclResult_t rc, const char *call, double timeout_s,
                        const ct_comm *making) {
    double start = ct_time_s();
    for (int round = 0; rc == ncclInProgress; round++) {
        if (timeout_s > 0 && ct_time_s() - start > timeout_s)
            return ct_error(CT_ERR_EXTERNAL,
                            "[rank %d] %s: not finished after %.1f s (comm.timeout_s)",
                            ct_comm_world_rank(), call, timeout_s);
        int failed = making ? init_failed_elsewhere(making) : -1;
        if (failed >= 0)
            return ct_error(CT_ERR_EXTERNAL, "[rank %d] %s: rank %d of the group failed its own",
                            ct_comm_world_rank(), call, failed);
        pause_poll(round);
        CT_CHECK(comm_state(ns, call, &rc));
    }
    if (rc != ncclSuccess) return nccl_fail(rc, call, __FILE__, __LINE__);
    return CT_OK;
}

/* The table's abort: called under the process-wide lock from any thread. The lock is only
 * ever held around calls that return at once, but the job's end must not wait on it: after a
 * second without it the communicator is left to MPI_Abort. */
static void nccl_abort(ct_comm *comm) {
    nccl_state *ns = comm->backend;
    if (!ns) return;
    for (int i = 0; pthread_mutex_trylock(&ns->lock) != 0; i++) {
        if (i >= 1000) return;
        usleep(1000);
    }
    abort_locked(ns);
    pthread_mutex_unlock(&ns->lock);
}

/* ---------------------------------------------------------------- operations */

static ncclResult_t enqueue(nccl_state *ns, const ct_comm_request *r) {
    ncclDataType_t type = nccl_type(r->dtype);
    switch (r->kind) {
    case CT_COLL_ALLREDUCE:
        return ncclAllReduce(r->recv, r->recv, r->count, type, ncclSum, ns->nccl, ns->stream);
    case CT_COLL_REDUCE_SCATTER:
        return ncclReduceScatter(r->send, r->recv, r->count, type, ncclSum, ns->nccl, ns->stream);
    case CT_COLL_ALLGATHER:
        return ncclAllGather(r->send, r->recv, r->count, type, ns->nccl, ns->stream);
    case CT_COLL_BROADCAST:
        return ncclBroadcast(r->recv, r->recv, r->count, type, r->root, ns->nccl, ns->stream);
    case CT_COLL_BARRIER: /* NCCL has none: a one-int all-reduce ends only when all arrived */
        return ncclAllReduce(ns->scratch, ns->scratch, 1, ncclInt32, ncclSum, ns->nccl, ns->stream);
    case CT_COLL_KINDS:
        break;
    }
    return ncclInvalidArgument;
}

static ct_status nccl_launch(ct_comm *comm, ct_comm_request *r) {
    nccl_state *ns = comm->backend;
    const char *call = ct_comm_kind_name(r->kind);
    CT_CUDA(cudaSetDevice(ns->device));
    pthread_mutex_lock(&ns->lock);
    if (!ns->nccl) {
        pthread_mutex_unlock(&ns->lock);
        return aborted_error(call);
    }
    ncclResult_t rc = enqueue(ns, r);
    pthread_mutex_unlock(&ns->lock);
    /* The watchdog sees the request queued meanwhile: it is the bound on this wait. */
    CT_CHECK(settle(ns, rc, call, 0, NULL));
    CT_CUDA(cudaEventRecord(ns->events[r - comm->pool], ns->stream));
    return CT_OK;
}

static ct_status nccl_run(ct_comm *comm, ct_comm_request *r) {
    nccl_state *ns = comm->backend;
    cudaEvent_t event = ns->events[r - comm->pool];
    const char *call = ct_comm_kind_name(r->kind);
    CT_CUDA(cudaSetDevice(ns->device));
    for (int round = 0;; round++) {
        cudaError_t ready = cudaEventQuery(event);
        if (ready != cudaSuccess && ready != cudaErrorNotReady)
            return cuda_fail(ready, "cudaEventQuery", __FILE__, __LINE__);
        ncclResult_t state = ncclSuccess;
        CT_CHECK(comm_state(ns, call, &state));
        if (state != ncclSuccess && state != ncclInProgress) {
            pthread_mutex_lock(&ns->lock);
            abort_locked(ns);
            pthread_mutex_unlock(&ns->lock);
            return nccl_fail(state, call, __FILE__, __LINE__);
        }
        if (ready == cudaSuccess) return CT_OK;
        pause_poll(round);
    }
}

static ct_status nccl_order_after(ct_comm *comm, void *event) {
    nccl_state *ns = comm->backend;
    if (!event) return ct_error(CT_ERR_INVALID, "ct_comm_order_after on NCCL needs an event");
    CT_CUDA(cudaSetDevice(ns->device));
    CT_CUDA(cudaStreamWaitEvent(ns->stream, (cudaEvent_t)event, 0));
    return CT_OK;
}

static void *nccl_stream(const ct_comm *comm) {
    return ((const nccl_state *)comm->backend)->stream;
}

/* ---------------------------------------------------------------- making and freeing */

/* Frees whatever part of the state was made (making it may have failed half-way). A
 * communicator still there is finalized (its operations flushed) and destroyed; one that
 * cannot be finalized within the watchdog's timeout is aborted. */
static void nccl_release(ct_comm *comm) {
    nccl_state *ns = comm->backend;
    if (!ns) return;
    cudaSetDevice(ns->device);
    if (ns->nccl) {
        ct_status status =
            settle(ns, ncclCommFinalize(ns->nccl), "ncclCommFinalize", ct_comm_timeout_s(), NULL);
        if (status == CT_OK) {
            ncclCommDestroy(ns->nccl);
        } else {
            ct_log(CT_LOG_WARN, "comm", "%s: aborting the communicator", ct_error_message());
            if (ns->nccl) ncclCommAbort(ns->nccl);
        }
        ns->nccl = NULL;
    }
    for (int i = 0; i < ns->n_events; i++)
        cudaEventDestroy(ns->events[i]);
    if (ns->have_stream) cudaStreamDestroy(ns->stream);
    if (ns->scratch) cudaFree(ns->scratch);
    pthread_mutex_destroy(&ns->lock);
    ct_free(CT_MEM_COMM, ns, sizeof(*ns));
    comm->backend = NULL;
}

/* This rank's part before the communicator: the state (from here ct_comm_free releases it),
 * the device, the stream, the events, the barrier's scratch int, and (id not NULL, rank 0)
 * the unique id. */
static ct_status prepare(ct_comm *comm, int device, ncclUniqueId *id) {
    nccl_state *ns = ct_alloc(CT_MEM_COMM, sizeof(*ns));
    if (!ns) return CT_ERR_NOMEM;
    ns->device = device;
    pthread_mutex_init(&ns->lock, NULL);
    ct_comm_set_backend(comm, &nccl_ops, ns);
    CT_CUDA(cudaSetDevice(device));
    CT_CUDA(cudaStreamCreateWithFlags(&ns->stream, cudaStreamNonBlocking));
    ns->have_stream = true;
    for (; ns->n_events < CT_COMM_POOL; ns->n_events++)
        CT_CUDA(cudaEventCreateWithFlags(&ns->events[ns->n_events], cudaEventDisableTiming));
    CT_CUDA(cudaMalloc((void **)&ns->scratch, sizeof(int32_t)));
    if (id && comm->rank == 0) CT_NCCL(ncclGetUniqueId(id));
    return CT_OK;
}

/* Ends a group that was being made: its communicator (if any) aborted, never finalized, since
 * a peer may never join it. */
static ct_status give_up(ct_comm *comm, ct_status status) {
    if (comm && comm->backend) nccl_abort(comm);
    ct_comm_free(comm);
    return status;
}

static ct_status init_rank(ct_comm *comm, ncclUniqueId id) {
    nccl_state *ns = comm->backend;
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ct_status status = CT_OK;
    if (cudaSetDevice(ns->device) != cudaSuccess)
        status = ct_error(CT_ERR_EXTERNAL, "[rank %d] cudaSetDevice(%d) failed",
                          ct_comm_world_rank(), ns->device);
    if (status == CT_OK) {
        pthread_mutex_lock(&ns->lock);
        ncclResult_t rc = ncclCommInitRankConfig(&ns->nccl, comm->size, id, comm->rank, &config);
        pthread_mutex_unlock(&ns->lock);
        status = settle(ns, rc, "ncclCommInitRankConfig", ct_comm_timeout_s(), comm);
    }
    if (status != CT_OK) notify_init_failed(comm);
    return status;
}

/* The table's split: `child` gets ncclCommSplit of parent's communicator. */
static ct_status nccl_split(ct_comm *parent, int color, int key, ct_comm *child, ct_status made) {
    nccl_state *pns = parent->backend;
    if (made == CT_OK) made = prepare(child, pns->device, NULL);
    ct_status status = ct_comm_agree(parent, made, "preparing an NCCL split");
    if (status != CT_OK) return status;
    nccl_state *ns = child->backend;
    ncclConfig_t config = NCCL_CONFIG_INITIALIZER;
    config.blocking = 0;
    ncclComm_t split = NULL;
    pthread_mutex_lock(&pns->lock);
    ncclResult_t rc =
        pns->nccl ? ncclCommSplit(pns->nccl, color, key, &split, &config) : ncclInvalidUsage;
    pthread_mutex_unlock(&pns->lock);
    pthread_mutex_lock(&ns->lock);
    ns->nccl = split;
    pthread_mutex_unlock(&ns->lock);
    if (rc == ncclSuccess && !split) rc = ncclInternalError;
    status = settle(ns, rc, "ncclCommSplit", ct_comm_timeout_s(), NULL);
    /* The parent may be busy with the split too: ready before its next operation. */
    if (status == CT_OK)
        status = settle(pns, ncclInProgress, "ncclCommSplit", ct_comm_timeout_s(), NULL);
    status = ct_comm_agree(parent, status, "ncclCommSplit");
    if (status != CT_OK) nccl_abort(child);
    return status;
}

static const ct_comm_ops nccl_ops = {
    .name = "nccl",
    .launch = nccl_launch,
    .run = nccl_run,
    .split = nccl_split,
    .order_after = nccl_order_after,
    .stream = nccl_stream,
    .abort = nccl_abort,
    .release = nccl_release,
};

/* ---------------------------------------------------------------- public */

ct_status ct_comm_init_nccl(ct_comm *group, int device, ct_comm **nccl) {
    *nccl = NULL;
    if (!group || group->ops != &ct_comm_mpi_ops)
        return ct_error(CT_ERR_INVALID, "ct_comm_init_nccl needs an MPI group to mirror");
    ct_comm_drain(group); /* MPI_Comm_dup and the agreements must not race the group's thread */
    MPI_Comm mpi;
    CT_MPI(MPI_Comm_dup(group->mpi, &mpi));
    ct_comm *comm = NULL;
    ncclUniqueId id;
    memset(&id, 0, sizeof(id));
    ct_status status = ct_comm_group_new(mpi, false, &comm);
    if (status == CT_OK) status = prepare(comm, device, &id);
    status = ct_comm_agree(group, status, "preparing the NCCL communicator");
    if (status == CT_OK) status = ct_comm_setup_broadcast(group, &id, sizeof(id));
    if (status != CT_OK) return give_up(comm, status);
    status = init_rank(comm, id);
    status = ct_comm_agree(group, status, "ncclCommInitRankConfig");
    if (status != CT_OK) return give_up(comm, status);
    *nccl = comm;
    return CT_OK;
}

void ct_comm_describe_nccl(char *info, size_t info_bytes) {
    int version = 0;
    if (ncclGetVersion(&version) != ncclSuccess) {
        snprintf(info, info_bytes, "NCCL (version unknown)");
        return;
    }
    /* NCCL_VERSION(X,Y,Z) is X*10000 + Y*100 + Z from 2.9 on. */
    snprintf(info, info_bytes, "NCCL %d.%d.%d", version / 10000, version / 100 % 100,
             version % 100);
}
