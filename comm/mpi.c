/*
 * The MPI backend, for host buffers: the blocking MPI call of each collective, made by the
 * group's communication thread (group.c), so collectives overlap the caller's compute. A group
 * needs nothing of this backend but the MPI communicator every group has, so its table has
 * only `run`: making, splitting and freeing groups is group.c's.
 *
 * Open MPI 4.1 takes int counts: larger operations are split into pieces of at most
 * `max_count` elements (CTRAIN_COMM_MAX_COUNT lowers it so tests reach those paths). bf16
 * sums use a user-defined op that accumulates in fp32. MPI's in-place reduce-scatter differs
 * from comm.h's (NCCL's) rule: run_reduce_scatter adapts it.
 */
#include "comm/comm_internal.h"
#include "common/floats.h"

#include <limits.h>
#include <stdlib.h>
#include <string.h>

static MPI_Op bf16_sum_op = MPI_OP_NULL;
static size_t max_count = INT_MAX;

/* ---------------------------------------------------------------- bf16 sum */

/* The user op for MPI_UINT16_T buffers holding bf16: each pair is summed in fp32 and rounded
 * once. MPI combines ranks pairwise, so with more than two ranks the partial sums are rounded
 * to bf16 between steps; the result is deterministic for a given world size and algorithm. */
static void bf16_sum(void *in, void *inout, int *len, MPI_Datatype *type) {
    (void)type;
    const uint16_t *a = in;
    uint16_t *b = inout;
    for (int i = 0; i < *len; i++)
        b[i] = ct_f32_to_bf16(ct_bf16_to_f32(a[i]) + ct_bf16_to_f32(b[i]));
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

/* ---------------------------------------------------------------- the backend */

const ct_comm_ops ct_comm_mpi_ops = {.name = "mpi", .run = run};

ct_status ct_comm_mpi_backend_read_env(void) {
    const char *max_env = getenv("CTRAIN_COMM_MAX_COUNT");
    if (!max_env) return CT_OK;
    char *end;
    long long v = strtoll(max_env, &end, 10);
    if (*end != '\0' || v < 1 || v > INT_MAX)
        return ct_error(CT_ERR_INVALID, "CTRAIN_COMM_MAX_COUNT=%s: expected 1..%d", max_env,
                        INT_MAX);
    max_count = (size_t)v;
    return CT_OK;
}

ct_status ct_comm_mpi_backend_init(void) {
    if (bf16_sum_op == MPI_OP_NULL) CT_MPI(MPI_Op_create(bf16_sum, 1, &bf16_sum_op));
    return CT_OK;
}

void ct_comm_mpi_backend_finalize(void) {
    if (bf16_sum_op != MPI_OP_NULL) MPI_Op_free(&bf16_sum_op);
}
