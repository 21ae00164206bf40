/*
 * The MPI backend, for host buffers. MPI runs at MPI_THREAD_MULTIPLE: each group owns a
 * communication thread that takes its queued requests in FIFO order and makes the blocking MPI
 * calls, so collectives overlap the caller's compute; the watchdog (watchdog.c) talks on a
 * communicator of its own. One thread per group keeps the order of collectives on each
 * communicator identical on every rank (MPI's rule) while different groups proceed
 * independently, so HSDP's two groups cannot deadlock each other.
 *
 * The group machinery here (the thread, its FIFO queue, split, free) serves the NCCL backend too
 * (comm/nccl.c): there the thread waits for CUDA events instead of making MPI calls.
 *
 * Every communicator gets MPI_ERRORS_RETURN, so CT_MPI sees failures instead of MPI killing the
 * process. Open MPI 4.1 takes int counts: larger operations are split into pieces of at most
 * `max_count` elements (CTRAIN_COMM_MAX_COUNT lowers it so tests reach those paths).
 */
#include "comm/comm_internal.h"
#include "common/fault.h"

#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static MPI_Op bf16_sum_op = MPI_OP_NULL;
static size_t max_count = INT_MAX;

/* ---------------------------------------------------------------- bf16 sum */

static float bf16_to_f32(uint16_t h) {
    uint32_t bits = (uint32_t)h << 16;
    float f;
    memcpy(&f, &bits, sizeof(f));
    return f;
}

/* Round to nearest even; NaN stays a (quiet) NaN. */
static uint16_t f32_to_bf16(float f) {
    uint32_t bits;
    memcpy(&bits, &f, sizeof(bits));
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x40);
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

/* The user op for MPI_UINT16_T buffers holding bf16: each pair is summed in fp32 and rounded
 * once. MPI combines ranks pairwise, so with more than two ranks the partial sums are rounded
 * to bf16 between steps; the result is deterministic for a given world size and algorithm. */
static void bf16_sum(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = f32_to_bf16(bf16_to_f32(a[i]) + bf16_to_f32(b[i]));
}

static MPI_Datatype mpi_type(ct_comm_dtype dtype) {
    switch (dtype) {
    case CT_COMM_F32:
        return MPI_FLOAT;
    case CT_COMM_BF16:
        return MPI_UINT16_T;
    case CT_COMM_I32:
        return MPI_INT32_T;
    case CT_COMM_U8:
        return MPI_UINT8_T;
    case CT_COMM_F64:
        return MPI_DOUBLE;
    }
    return MPI_DATATYPE_NULL;
}

static MPI_Op mpi_sum(ct_comm_dtype dtype) {
    return dtype == CT_COMM_BF16 ? bf16_sum_op : MPI_SUM;
}

/* ---------------------------------------------------------------- operations */

static ct_status run_allreduce(ct_comm *comm, ct_comm_request *r) {
    size_t esize = ct_comm_dtype_bytes(r->dtype);
    char *buf = r->recv;
    for (size_t off = 0; off < r->count; off += max_count) {
        int n = (int)CT_MIN(max_count, r->count - off);
        CT_MPI(MPI_Allreduce(MPI_IN_PLACE, buf + off * esize, n, mpi_type(r->dtype),
                             mpi_sum(r->dtype), comm->mpi));
    }
    return CT_OK;
}

static ct_status run_broadcast(ct_comm *comm, ct_comm_request *r) {
    size_t esize = ct_comm_dtype_bytes(r->dtype);
    char *buf = r->recv;
    for (size_t off = 0; off < r->count; off += max_count) {
        int n = (int)CT_MIN(max_count, r->count - off);
        CT_MPI(MPI_Bcast(buf + off * esize, n, mpi_type(r->dtype), r->root, comm->mpi));
    }
    return CT_OK;
}

/*
 * Reduce-scatter, NCCL's rule: send holds size blocks of recv_count; rank r gets the sum of
 * block r in recv. In place means recv == send + r * recv_count. MPI's in-place form instead
 * reads the whole input from recvbuf and leaves block r's sum at the *start* of recvbuf, so we
 * pass the input's start (send) as MPI's recvbuf and move the result from block 0 to block r.
 * Afterwards only block r of the buffer is defined (MPI uses the rest as scratch; NCCL leaves
 * it untouched): callers rely on neither.
 *
 * Above max_count elements per block the strided blocks do not fit one int-counted call: each
 * block is then reduced to its owner with MPI_Reduce (the same bytes move).
 */
static ct_status run_reduce_scatter(ct_comm *comm, ct_comm_request *r) {
    size_t esize = ct_comm_dtype_bytes(r->dtype);
    size_t block_bytes = r->count * esize;
    const char *send = r->send;
    char *recv = r->recv;
    bool in_place = recv == send + (size_t)comm->rank * block_bytes;
    MPI_Datatype type = mpi_type(r->dtype);
    if (r->count <= max_count) {
        int n = (int)r->count;
        if (!in_place) {
            CT_MPI(MPI_Reduce_scatter_block(send, recv, n, type, mpi_sum(r->dtype), comm->mpi));
        } else {
            char *start = (char *)send;
            CT_MPI(MPI_Reduce_scatter_block(MPI_IN_PLACE, start, n, type, mpi_sum(r->dtype),
                                            comm->mpi));
            if (comm->rank != 0) memcpy(recv, start, block_bytes);
        }
        return CT_OK;
    }
    for (int owner = 0; owner < comm->size; owner++) {
        const char *block = send + (size_t)owner * block_bytes;
        for (size_t off = 0; off < r->count; off += max_count) {
            int n = (int)CT_MIN(max_count, r->count - off);
            size_t at = off * esize;
            const void *in = block + at;
            if (owner == comm->rank && in_place) in = MPI_IN_PLACE;
            void *out = owner == comm->rank ? recv + at : NULL;
            CT_MPI(MPI_Reduce(in, out, n, type, mpi_sum(r->dtype), owner, comm->mpi));
        }
    }
    return CT_OK;
}

/* All-gather: block r of recv from rank r; in place when send == recv + r * send_count. Above
 * max_count elements per block, each block is broadcast from its owner instead. */
static ct_status run_allgather(ct_comm *comm, ct_comm_request *r) {
    size_t esize = ct_comm_dtype_bytes(r->dtype);
    size_t block_bytes = r->count * esize;
    char *recv = r->recv;
    char *mine = recv + (size_t)comm->rank * block_bytes;
    bool in_place = (const char *)r->send == mine;
    MPI_Datatype type = mpi_type(r->dtype);
    if (r->count <= max_count) {
        int n = (int)r->count;
        if (in_place)
            CT_MPI(MPI_Allgather(MPI_IN_PLACE, 0, MPI_DATATYPE_NULL, recv, n, type, comm->mpi));
        else
            CT_MPI(MPI_Allgather(r->send, n, type, recv, n, type, comm->mpi));
        return CT_OK;
    }
    if (!in_place) memcpy(mine, r->send, block_bytes);
    for (int owner = 0; owner < comm->size; owner++) {
        char *block = recv + (size_t)owner * block_bytes;
        for (size_t off = 0; off < r->count; off += max_count) {
            int n = (int)CT_MIN(max_count, r->count - off);
            CT_MPI(MPI_Bcast(block + off * esize, n, type, owner, comm->mpi));
        }
    }
    return CT_OK;
}

static ct_status run(ct_comm *comm, ct_comm_request *r) {
    switch (r->kind) {
    case CT_COLL_ALLREDUCE:
        return run_allreduce(comm, r);
    case CT_COLL_REDUCE_SCATTER:
        return run_reduce_scatter(comm, r);
    case CT_COLL_ALLGATHER:
        return run_allgather(comm, r);
    case CT_COLL_BROADCAST:
        return run_broadcast(comm, r);
    case CT_COLL_BARRIER:
        CT_MPI(MPI_Barrier(comm->mpi));
        return CT_OK;
    case CT_COLL_KINDS:
        break;
    }
    return ct_error(CT_ERR_INVALID, "unknown collective kind %d", (int)r->kind);
}

/* ---------------------------------------------------------------- the communication thread */

/* Runs queued requests in order; on `stopping` it drains the queue, then returns. */
static void *comm_thread(void *arg) {
    ct_comm *comm = arg;
    for (;;) {
        pthread_mutex_lock(&comm->lock);
        while (!comm->queue_head && !comm->stopping)
            pthread_cond_wait(&comm->work, &comm->lock);
        ct_comm_request *r = comm->queue_head;
        if (!r) {
            pthread_mutex_unlock(&comm->lock);
            return NULL;
        }
        comm->queue_head = r->next;
        if (!comm->queue_head) comm->queue_tail = NULL;
        pthread_mutex_unlock(&comm->lock);

        ct_comm_mark_running(r);
        ct_error_clear();
        ct_status status = comm->run(comm, r);
        ct_comm_mark_done(r, status, ct_error_message());
    }
}

void ct_comm_enqueue(ct_comm *comm, ct_comm_request *req) {
    pthread_mutex_lock(&comm->lock);
    req->state = CT_REQ_QUEUED;
    req->next = NULL;
    if (comm->queue_tail)
        comm->queue_tail->next = req;
    else
        comm->queue_head = req;
    comm->queue_tail = req;
    pthread_cond_signal(&comm->work);
    pthread_mutex_unlock(&comm->lock);
}

/* ---------------------------------------------------------------- groups */

ct_status ct_comm_mpi_error(int code, const char *call, const char *file, int line) {
    char text[MPI_MAX_ERROR_STRING];
    int len = 0;
    if (MPI_Error_string(code, text, &len) != MPI_SUCCESS)
        snprintf(text, sizeof(text), "MPI error code %d", code);
    int name_len = (int)strcspn(call, "(");
    return ct_error_at(CT_ERR_EXTERNAL, file, line, "[rank %d] %.*s failed at %s:%d: %s",
                       ct_comm_world_rank(), name_len, call, file, line, text);
}

ct_status ct_comm_group_new(MPI_Comm mpi, bool is_world, ct_comm **out) {
    *out = NULL;
    ct_comm *comm = ct_alloc(CT_MEM_COMM, sizeof(ct_comm));
    if (!comm) {
        MPI_Comm_free(&mpi);
        return CT_ERR_NOMEM;
    }
    comm->mpi = mpi;
    comm->is_world = is_world;
    comm->backend_name = "mpi";
    comm->run = run;
    pthread_mutex_init(&comm->lock, NULL);
    pthread_cond_init(&comm->work, NULL);
    pthread_cond_init(&comm->done, NULL);
    ct_comm_pool_init(comm);
    *out = comm; /* from here ct_comm_free releases it */
    CT_MPI(MPI_Comm_set_errhandler(mpi, MPI_ERRORS_RETURN));
    CT_MPI(MPI_Comm_rank(mpi, &comm->rank));
    CT_MPI(MPI_Comm_size(mpi, &comm->size));
    MPI_Comm local;
    CT_MPI(MPI_Comm_split_type(mpi, MPI_COMM_TYPE_SHARED, comm->rank, MPI_INFO_NULL, &local));
    int rc = MPI_Comm_rank(local, &comm->local_rank);
    if (rc == MPI_SUCCESS) rc = MPI_Comm_size(local, &comm->local_size);
    MPI_Comm_free(&local);
    CT_MPI(rc);
    if (pthread_create(&comm->thread, NULL, comm_thread, comm) != 0)
        return ct_error(CT_ERR_EXTERNAL, "[rank %d] cannot start the communication thread",
                        ct_comm_world_rank());
    comm->thread_started = true;
    ct_comm_register(comm);
    return CT_OK;
}

void ct_comm_drain(ct_comm *comm) {
    pthread_mutex_lock(&comm->lock);
    for (;;) {
        bool busy = comm->queue_head != NULL;
        for (int i = 0; i < CT_COMM_POOL && !busy; i++)
            busy = comm->pool[i].state == CT_REQ_QUEUED || comm->pool[i].state == CT_REQ_RUNNING;
        if (!busy) break;
        pthread_cond_wait(&comm->done, &comm->lock);
    }
    pthread_mutex_unlock(&comm->lock);
}

ct_status ct_comm_init_world(ct_comm **world, int *argc, char ***argv) {
    *world = NULL;
    const char *max_env = getenv("CTRAIN_COMM_MAX_COUNT");
    if (max_env) {
        char *end;
        long long v = strtoll(max_env, &end, 10);
        if (*end != '\0' || v < 1 || v > INT_MAX)
            return ct_error(CT_ERR_INVALID, "CTRAIN_COMM_MAX_COUNT=%s: expected 1..%d", max_env,
                            INT_MAX);
        max_count = (size_t)v;
    }
    CT_CHECK(ct_fault_init()); /* a malformed CTRAIN_FAULT fails before MPI starts */
    int initialized = 0, provided = 0;
    MPI_Initialized(&initialized);
    if (!initialized) {
        int rc = MPI_Init_thread(argc, argv, MPI_THREAD_MULTIPLE, &provided);
        if (rc != MPI_SUCCESS) return ct_error(CT_ERR_EXTERNAL, "MPI_Init_thread failed (%d)", rc);
    } else {
        CT_MPI(MPI_Query_thread(&provided));
    }
    CT_MPI(MPI_Comm_set_errhandler(MPI_COMM_WORLD, MPI_ERRORS_RETURN));
    CT_MPI(MPI_Comm_set_errhandler(MPI_COMM_SELF, MPI_ERRORS_RETURN));
    int rank;
    CT_MPI(MPI_Comm_rank(MPI_COMM_WORLD, &rank));
    ct_comm_set_world_rank(rank);
    ct_log_set_rank(rank);
    if (provided < MPI_THREAD_MULTIPLE)
        return ct_error(CT_ERR_EXTERNAL,
                        "[rank %d] MPI granted thread level %d, ctrain needs "
                        "MPI_THREAD_MULTIPLE (%d): use an MPI built with thread support",
                        rank, provided, MPI_THREAD_MULTIPLE);
    if (bf16_sum_op == MPI_OP_NULL) CT_MPI(MPI_Op_create(bf16_sum, 1, &bf16_sum_op));
    MPI_Comm dup;
    CT_MPI(MPI_Comm_dup(MPI_COMM_WORLD, &dup));
    ct_comm *comm;
    ct_status status = ct_comm_group_new(dup, true, &comm);
    if (status == CT_OK) status = ct_comm_watchdog_start(comm);
    if (status != CT_OK) {
        ct_comm_free(comm);
        return status;
    }
    *world = comm;
    return CT_OK;
}

ct_status ct_comm_split(ct_comm *parent, int color, int key, ct_comm **group) {
    *group = NULL;
    if (!parent) return ct_error(CT_ERR_INVALID, "ct_comm_split of a NULL group");
    if (color < 0) return ct_error(CT_ERR_INVALID, "ct_comm_split: color %d < 0", color);
    ct_comm_drain(parent);
    MPI_Comm mpi;
    CT_MPI(MPI_Comm_split(parent->mpi, color, key, &mpi));
    ct_comm *comm;
    ct_status status = ct_comm_group_new(mpi, false, &comm);
    if (status != CT_OK) {
        ct_comm_free(comm);
        return status;
    }
    *group = comm;
    return CT_OK;
}

void ct_comm_free(ct_comm *comm) {
    if (!comm) return;
    if (comm->watchdog) ct_comm_watchdog_stop(comm);
    if (comm->thread_started) {
        pthread_mutex_lock(&comm->lock);
        comm->stopping = true;
        pthread_cond_signal(&comm->work);
        pthread_mutex_unlock(&comm->lock);
        pthread_join(comm->thread, NULL);
        ct_comm_unregister(comm);
    }
    if (comm->release) comm->release(comm);
    if (comm->mpi != MPI_COMM_NULL) MPI_Comm_free(&comm->mpi);
    pthread_cond_destroy(&comm->done);
    pthread_cond_destroy(&comm->work);
    pthread_mutex_destroy(&comm->lock);
    ct_free(CT_MEM_COMM, comm, sizeof(ct_comm));
}

void ct_comm_finalize(void) {
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (!initialized || finalized) return;
    int alive = ct_comm_live_groups();
    if (alive > 0)
        ct_log(CT_LOG_WARN, "comm", "ct_comm_finalize with %d group(s) not freed", alive);
    if (bf16_sum_op != MPI_OP_NULL) MPI_Op_free(&bf16_sum_op);
    MPI_Finalize();
}

_Noreturn void ct_comm_abort(ct_comm *comm, int code) {
    fflush(stdout);
    fflush(stderr);
    int initialized = 0, finalized = 0;
    MPI_Initialized(&initialized);
    MPI_Finalized(&finalized);
    if (comm && comm->abort_backend) comm->abort_backend(comm);
    /* Open MPI ends the whole job whichever communicator is named. */
    if (initialized && !finalized) MPI_Abort(MPI_COMM_WORLD, code);
    exit(code); /* MPI_Abort returned, or there is no MPI to end */
}

int ct_comm_rank(const ct_comm *comm) {
    return comm ? comm->rank : 0;
}

int ct_comm_size(const ct_comm *comm) {
    return comm ? comm->size : 1;
}

int ct_comm_local_rank(const ct_comm *comm) {
    return comm ? comm->local_rank : 0;
}

int ct_comm_local_size(const ct_comm *comm) {
    return comm ? comm->local_size : 1;
}

const char *ct_comm_backend(const ct_comm *comm) {
    return comm ? comm->backend_name : "mpi";
}
