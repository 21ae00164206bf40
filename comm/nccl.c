/*
 * The NCCL backend, for device buffers (built only with CUDA). An NCCL group mirrors an MPI
 * group: the same ranks, its own duplicated MPI communicator (for the local rank and for
 * MPI-side bookkeeping), and the same checked entry (numbering, bytes, ring, watchdog).
 * launch, on the caller's thread and in call order (NCCL's rule, like MPI's), enqueues the
 * operation on the group's stream and records the request's event; the group's thread then
 * waits for the events in FIFO order and marks each request done, so ct_comm_wait, the stats'
 * time and the watchdog's view of pending work behave as on MPI. Events are made once per pool
 * slot: a warm step allocates nothing. NCCL counts are size_t and its in-place rules are
 * comm.h's, so nothing is split or adapted here; bf16 sums are NCCL's own.
 */
#include "comm/comm_internal.h"

#include <cuda_runtime.h>
#include <nccl.h>
#include <string.h>

typedef struct {
    int device;
    ncclComm_t nccl;
    cudaStream_t stream;
    bool have_stream;
    int n_events;
    cudaEvent_t events[CT_COMM_POOL]; /* one per request slot */
    int32_t *scratch;                 /* device int: the barrier's all-reduce */
} nccl_state;

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

/* ---------------------------------------------------------------- backend hooks */

static ct_status nccl_launch(ct_comm *comm, ct_comm_request *r) {
    nccl_state *ns = comm->backend;
    ncclDataType_t type = nccl_type(r->dtype);
    CT_CUDA(cudaSetDevice(ns->device));
    switch (r->kind) {
    case CT_COLL_ALLREDUCE:
        CT_NCCL(ncclAllReduce(r->recv, r->recv, r->count, type, ncclSum, ns->nccl, ns->stream));
        break;
    case CT_COLL_REDUCE_SCATTER:
        CT_NCCL(ncclReduceScatter(r->send, r->recv, r->count, type, ncclSum, ns->nccl, ns->stream));
        break;
    case CT_COLL_ALLGATHER:
        CT_NCCL(ncclAllGather(r->send, r->recv, r->count, type, ns->nccl, ns->stream));
        break;
    case CT_COLL_BROADCAST:
        CT_NCCL(ncclBroadcast(r->recv, r->recv, r->count, type, r->root, ns->nccl, ns->stream));
        break;
    case CT_COLL_BARRIER: /* NCCL has none: a one-int all-reduce ends only when all arrived */
        CT_NCCL(
            ncclAllReduce(ns->scratch, ns->scratch, 1, ncclInt32, ncclSum, ns->nccl, ns->stream));
        break;
    case CT_COLL_KINDS:
        return ct_error(CT_ERR_INVALID, "unknown collective kind %d", (int)r->kind);
    }
    CT_CUDA(cudaEventRecord(ns->events[r - comm->pool], ns->stream));
    return CT_OK;
}

static ct_status nccl_run(ct_comm *comm, ct_comm_request *r) {
    nccl_state *ns = comm->backend;
    CT_CUDA(cudaSetDevice(ns->device));
    CT_CUDA(cudaEventSynchronize(ns->events[r - comm->pool]));
    ncclResult_t async = ncclSuccess;
    CT_NCCL(ncclCommGetAsyncError(ns->nccl, &async));
    CT_NCCL(async);
    return CT_OK;
}

static void nccl_abort(ct_comm *comm) {
    nccl_state *ns = comm->backend;
    if (ns && ns->nccl) ncclCommAbort(ns->nccl);
    if (ns) ns->nccl = NULL;
}

/* Frees whatever part of the state was made (setup may have failed half-way). */
static void nccl_release(ct_comm *comm) {
    nccl_state *ns = comm->backend;
    if (!ns) return;
    cudaSetDevice(ns->device);
    if (ns->nccl) ncclCommDestroy(ns->nccl);
    for (int i = 0; i < ns->n_events; i++)
        cudaEventDestroy(ns->events[i]);
    if (ns->have_stream) cudaStreamDestroy(ns->stream);
    if (ns->scratch) cudaFree(ns->scratch);
    ct_free(CT_MEM_COMM, ns, sizeof(*ns));
    comm->backend = NULL;
}

static ct_status nccl_setup(ct_comm *comm, ct_comm *group, int device) {
    nccl_state *ns = ct_alloc(CT_MEM_COMM, sizeof(*ns));
    if (!ns) return CT_ERR_NOMEM;
    comm->backend = ns;
    comm->release = nccl_release;
    ns->device = device;
    CT_CUDA(cudaSetDevice(device));
    ncclUniqueId id;
    memset(&id, 0, sizeof(id));
    if (comm->rank == 0) CT_NCCL(ncclGetUniqueId(&id));
    CT_CHECK(ct_comm_broadcast(group, &id, sizeof(id), CT_COMM_U8, 0, NULL));
    CT_CUDA(cudaStreamCreateWithFlags(&ns->stream, cudaStreamNonBlocking));
    ns->have_stream = true;
    for (; ns->n_events < CT_COMM_POOL; ns->n_events++)
        CT_CUDA(cudaEventCreateWithFlags(&ns->events[ns->n_events],
                                         cudaEventDisableTiming | cudaEventBlockingSync));
    CT_CUDA(cudaMalloc((void **)&ns->scratch, sizeof(int32_t)));
    CT_NCCL(ncclCommInitRank(&ns->nccl, comm->size, id, comm->rank));
    comm->backend_name = "nccl";
    comm->launch = nccl_launch;
    comm->run = nccl_run;
    comm->abort_backend = nccl_abort;
    return CT_OK;
}

/* ---------------------------------------------------------------- public */

ct_status ct_comm_init_nccl(ct_comm *group, int device, ct_comm **nccl) {
    *nccl = NULL;
    if (!group || strcmp(group->backend_name, "mpi") != 0)
        return ct_error(CT_ERR_INVALID, "ct_comm_init_nccl needs an MPI group to mirror");
    ct_comm_drain(group); /* MPI_Comm_dup must not race the group's thread */
    MPI_Comm mpi;
    CT_MPI(MPI_Comm_dup(group->mpi, &mpi));
    ct_comm *comm;
    ct_status status = ct_comm_group_new(mpi, false, &comm);
    if (status == CT_OK) status = nccl_setup(comm, group, device);
    if (status != CT_OK) {
        ct_comm_free(comm);
        return status;
    }
    *nccl = comm;
    return CT_OK;
}

void *ct_comm_stream(const ct_comm *comm) {
    if (!comm || !comm->backend || strcmp(comm->backend_name, "nccl") != 0) return NULL;
    return ((const nccl_state *)comm->backend)->stream;
}
