/*
 * The collectives of comm/ on every world size CTest runs (mpirun -np 1..4, and a plain process)
 * against a serial reference that every rank computes from the deterministic inputs of all
 * ranks. Every op, every dtype it takes, odd lengths (1, 7, 1001 and ~3M), the in-place forms,
 * asynchronous requests, the byte counters, split groups and bad input; and the agreement on
 * success while a communicator is made (an NCCL group that fails on one rank fails on all).
 *
 * Tolerance: zero. Inputs are small integers (|x| <= 8) and sums over at most 4 ranks stay
 * below 2^8 in magnitude, which f32, f64 and bf16 (8 significant bits) hold exactly, so every
 * reduction order gives the same exact value. The one rounding test picks sums on bf16's
 * halfway points and states the expected rounding (to nearest even).
 */
#include "comm/comm_internal.h" /* CT_MPI, the group's communicator, the agreement */
#include "mpi_test_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define LARGE 3000017 /* elements of the large case (odd); blocks use LARGE / size, made odd */

static const size_t lengths[] = {1, 7, 1001, LARGE};
static const ct_comm_dtype sum_types[] = {CT_COMM_F32, CT_COMM_BF16, CT_COMM_I32, CT_COMM_F64};
static const ct_comm_dtype all_types[] = {CT_COMM_F32, CT_COMM_BF16, CT_COMM_I32, CT_COMM_U8,
                                          CT_COMM_F64};
static const char *const type_names[] = {"f32", "bf16", "i32", "u8", "f64"};

static int rank_, size_;

/* The input of `who` at element i: an integer in [-8, 8]. */
static int value(int who, size_t i) {
    return (int)(((size_t)who * 31 + i * 7) % 17) - 8;
}

static size_t esize(ct_comm_dtype t) {
    return t == CT_COMM_F64 ? 8 : t == CT_COMM_BF16 ? 2 : t == CT_COMM_U8 ? 1 : 4;
}

static void put(ct_comm_dtype t, void *buf, size_t i, int v) {
    float f = (float)v;
    uint32_t bits;
    switch (t) {
    case CT_COMM_F32:
        ((float *)buf)[i] = f;
        break;
    case CT_COMM_BF16: /* exact: small integers need 8 significant bits at most */
        memcpy(&bits, &f, 4);
        ((uint16_t *)buf)[i] = (uint16_t)(bits >> 16);
        break;
    case CT_COMM_I32:
        ((int32_t *)buf)[i] = v;
        break;
    case CT_COMM_U8:
        ((uint8_t *)buf)[i] = (uint8_t)v;
        break;
    case CT_COMM_F64:
        ((double *)buf)[i] = v;
        break;
    }
}

static double get(ct_comm_dtype t, const void *buf, size_t i) {
    uint32_t bits;
    float f;
    switch (t) {
    case CT_COMM_F32:
        return ((const float *)buf)[i];
    case CT_COMM_BF16:
        bits = (uint32_t)((const uint16_t *)buf)[i] << 16;
        memcpy(&f, &bits, 4);
        return f;
    case CT_COMM_I32:
        return ((const int32_t *)buf)[i];
    case CT_COMM_U8:
        return (int8_t)((const uint8_t *)buf)[i];
    case CT_COMM_F64:
        return ((const double *)buf)[i];
    }
    return 0;
}

static void fill(ct_comm_dtype t, void *buf, size_t n, int who, size_t first) {
    for (size_t i = 0; i < n; i++)
        put(t, buf, i, value(who, first + i));
}

/* Expected element i of `what`: 's' sum over ranks of value(r, first + i), 'g' all-gather of
 * blocks of n (value(i / n, i % n)), 'b' value(root, i). */
static double expected(char what, size_t i, size_t first, size_t n, int root) {
    if (what == 'g') return value((int)(i / n), i % n);
    if (what == 'b') return value(root, i);
    double s = 0;
    for (int r = 0; r < size_; r++)
        s += value(r, first + i);
    return s;
}

/* Counts the elements that differ (exactly: see the header) and reports the first. */
static size_t check(const char *op, ct_comm_dtype t, const void *buf, size_t n, char what,
                    size_t first, size_t block, int root) {
    size_t bad = 0;
    for (size_t i = 0; i < n; i++) {
        double want = expected(what, i, first, block, root), got = get(t, buf, i);
        if (got != want && bad++ == 0)
            fprintf(stderr, "[rank %d] %s %s n=%zu: element %zu is %g, expected %g\n", rank_, op,
                    type_names[t], n, i, got, want);
    }
    return bad;
}

static void *xmalloc(size_t bytes) {
    void *p = malloc(bytes ? bytes : 1);
    if (!p) abort(); /* the test machine is out of memory: nothing sensible to report */
    return p;
}

/* Per-block length of reduce-scatter and all-gather: the large case is split over ranks. */
static size_t block_len(size_t n) {
    return n == LARGE ? (LARGE / (size_t)size_) | 1 : n;
}

/* ---------------------------------------------------------------- cases */

static void test_allreduce_every_dtype_odd_lengths_equals_serial_sum(void) {
    for (size_t d = 0; d < CT_ARRAY_LEN(sum_types); d++) {
        for (size_t k = 0; k < CT_ARRAY_LEN(lengths); k++) {
            ct_comm_dtype t = sum_types[d];
            size_t n = lengths[k];
            void *buf = xmalloc(n * esize(t));
            fill(t, buf, n, rank_, 0);
            CU_ASSERT_EQUAL(ct_comm_allreduce(ct_mpi_world, buf, n, t, NULL), CT_OK);
            CU_ASSERT_EQUAL(check("allreduce", t, buf, n, 's', 0, 0, 0), 0);
            free(buf);
        }
    }
}

static void test_reduce_scatter_gives_rank_r_the_sum_of_block_r(void) {
    for (size_t d = 0; d < CT_ARRAY_LEN(sum_types); d++) {
        for (size_t k = 0; k < CT_ARRAY_LEN(lengths); k++) {
            ct_comm_dtype t = sum_types[d];
            size_t n = block_len(lengths[k]);
            void *send = xmalloc((size_t)size_ * n * esize(t)), *recv = xmalloc(n * esize(t));
            fill(t, send, (size_t)size_ * n, rank_, 0);
            CU_ASSERT_EQUAL(ct_comm_reduce_scatter(ct_mpi_world, send, recv, n, t, NULL), CT_OK);
            CU_ASSERT_EQUAL(check("reduce_scatter", t, recv, n, 's', (size_t)rank_ * n, 0, 0), 0);
            free(send);
            free(recv);
        }
    }
}

/* NCCL's rule: recv == send + rank * recv_count; block r holds the result afterwards. */
static void test_reduce_scatter_in_place_leaves_the_sum_in_block_r(void) {
    for (size_t d = 0; d < CT_ARRAY_LEN(sum_types); d++) {
        for (size_t k = 0; k < CT_ARRAY_LEN(lengths); k++) {
            ct_comm_dtype t = sum_types[d];
            size_t n = block_len(lengths[k]), es = esize(t);
            char *buf = xmalloc((size_t)size_ * n * es);
            fill(t, buf, (size_t)size_ * n, rank_, 0);
            char *mine = buf + (size_t)rank_ * n * es;
            CU_ASSERT_EQUAL(ct_comm_reduce_scatter(ct_mpi_world, buf, mine, n, t, NULL), CT_OK);
            CU_ASSERT_EQUAL(
                check("reduce_scatter in place", t, mine, n, 's', (size_t)rank_ * n, 0, 0), 0);
            free(buf);
        }
    }
}

static void test_allgather_every_dtype_puts_block_r_from_rank_r(void) {
    for (int in_place = 0; in_place <= 1; in_place++) {
        for (size_t d = 0; d < CT_ARRAY_LEN(all_types); d++) {
            for (size_t k = 0; k < CT_ARRAY_LEN(lengths); k++) {
                ct_comm_dtype t = all_types[d];
                size_t n = block_len(lengths[k]), es = esize(t), total = (size_t)size_ * n;
                char *recv = xmalloc(total * es), *send = xmalloc(n * es);
                fill(t, recv, total, rank_ + 100, 0); /* garbage the gather must overwrite */
                char *src = in_place ? recv + (size_t)rank_ * n * es : send;
                fill(t, src, n, rank_, 0);
                CU_ASSERT_EQUAL(ct_comm_allgather(ct_mpi_world, src, recv, n, t, NULL), CT_OK);
                CU_ASSERT_EQUAL(check(in_place ? "allgather in place" : "allgather", t, recv, total,
                                      'g', 0, n, 0),
                                0);
                free(recv);
                free(send);
            }
        }
    }
}

static void test_broadcast_from_every_root_every_dtype(void) {
    for (int root = 0; root < size_; root++) {
        for (size_t d = 0; d < CT_ARRAY_LEN(all_types); d++) {
            for (size_t k = 0; k < CT_ARRAY_LEN(lengths); k++) {
                ct_comm_dtype t = all_types[d];
                size_t n = lengths[k];
                void *buf = xmalloc(n * esize(t));
                fill(t, buf, n, rank_ == root ? root : rank_ + 100, 0);
                CU_ASSERT_EQUAL(ct_comm_broadcast(ct_mpi_world, buf, n, t, root, NULL), CT_OK);
                CU_ASSERT_EQUAL(check("broadcast", t, buf, n, 'b', 0, 0, root), 0);
                free(buf);
            }
        }
    }
}

/* bf16 sums round once to nearest even: 1 + 2^-8 -> 1 (even), (1 + 2^-7) + 2^-8 -> 1 + 2^-6.
 * Rank 0 holds a, rank 1 holds b, the others zeros (adding zero is exact in any order). */
static void test_bf16_allreduce_rounds_to_nearest_even(void) {
    if (size_ < 2) return;
    const uint16_t a[2] = {0x3f80, 0x3f81}, b[2] = {0x3b80, 0x3b80}; /* 1, 1+2^-7; 2^-8 */
    const uint16_t want[2] = {0x3f80, 0x3f82};
    uint16_t buf[2] = {0, 0};
    if (rank_ == 0) memcpy(buf, a, sizeof(buf));
    if (rank_ == 1) memcpy(buf, b, sizeof(buf));
    CU_ASSERT_EQUAL(ct_comm_allreduce(ct_mpi_world, buf, 2, CT_COMM_BF16, NULL), CT_OK);
    CU_ASSERT_EQUAL(memcmp(buf, want, sizeof(buf)), 0);
}

/* Several requests in flight, waited on in order; the queueing call returns at once even while
 * rank 0 is 0.5 s late (the communication thread does the waiting). */
static void test_async_requests_overlap_and_complete_in_order(void) {
    size_t n = 1001, big = LARGE;
    float *ar = xmalloc(big * 4), *rs_send = xmalloc((size_t)size_ * n * 4), *rs = xmalloc(n * 4);
    int32_t *ag_send = xmalloc(n * 4), *ag = xmalloc((size_t)size_ * n * 4);
    uint16_t *bc = xmalloc(n * 2);
    fill(CT_COMM_F32, ar, big, rank_, 0);
    fill(CT_COMM_F32, rs_send, (size_t)size_ * n, rank_, 0);
    fill(CT_COMM_I32, ag_send, n, rank_, 0);
    fill(CT_COMM_BF16, bc, n, rank_ == 0 ? 0 : rank_ + 100, 0);
    CU_ASSERT_EQUAL(ct_comm_barrier(ct_mpi_world), CT_OK);
    if (rank_ == 0) usleep(500000);
    ct_comm_request *req[4] = {NULL, NULL, NULL, NULL};
    double t0 = ct_time_s();
    CU_ASSERT_EQUAL(ct_comm_allreduce(ct_mpi_world, ar, big, CT_COMM_F32, &req[0]), CT_OK);
    double queued_s = ct_time_s() - t0;
    CU_ASSERT_EQUAL(ct_comm_reduce_scatter(ct_mpi_world, rs_send, rs, n, CT_COMM_F32, &req[1]),
                    CT_OK);
    CU_ASSERT_EQUAL(ct_comm_allgather(ct_mpi_world, ag_send, ag, n, CT_COMM_I32, &req[2]), CT_OK);
    CU_ASSERT_EQUAL(ct_comm_broadcast(ct_mpi_world, bc, n, CT_COMM_BF16, 0, &req[3]), CT_OK);
    for (int i = 0; i < 4; i++)
        if (req[i]) CU_ASSERT_EQUAL(ct_comm_wait(req[i]), CT_OK);
    double total_s = ct_time_s() - t0;
    CU_ASSERT_EQUAL(check("async allreduce", CT_COMM_F32, ar, big, 's', 0, 0, 0), 0);
    CU_ASSERT_EQUAL(check("async reduce_scatter", CT_COMM_F32, rs, n, 's', (size_t)rank_ * n, 0, 0),
                    0);
    CU_ASSERT_EQUAL(check("async allgather", CT_COMM_I32, ag, (size_t)size_ * n, 'g', 0, n, 0), 0);
    CU_ASSERT_EQUAL(check("async broadcast", CT_COMM_BF16, bc, n, 'b', 0, 0, 0), 0);
    /* Timing bounds are loose (ranks may share cores): queueing is a lock and a signal, well
     * under 0.25 s; the collective cannot end before rank 0 arrives 0.5 s after the barrier. */
    if (rank_ != 0) {
        CU_ASSERT(queued_s < 0.25);
        CU_ASSERT(total_s > 0.25);
    }
    free(ar);
    free(rs_send);
    free(rs);
    free(ag_send);
    free(ag);
    free(bc);
}

static void test_stats_count_bytes_by_the_nccl_tests_convention(void) {
    ct_comm_reset_stats(ct_mpi_world);
    float f[1001] = {0};
    uint16_t h_send[64] = {0}, h[7];
    int32_t i_send[7] = {0}, i_recv[7 * 4];
    double d[3] = {0};
    uint64_t s = (uint64_t)size_;
    CU_ASSERT_EQUAL(ct_comm_allreduce(ct_mpi_world, f, 1001, CT_COMM_F32, NULL), CT_OK);
    CU_ASSERT_EQUAL(ct_comm_reduce_scatter(ct_mpi_world, h_send, h, 7, CT_COMM_BF16, NULL), CT_OK);
    ct_comm_request *req = NULL;
    CU_ASSERT_EQUAL(ct_comm_allgather(ct_mpi_world, i_send, i_recv, 7, CT_COMM_I32, &req), CT_OK);
    if (req) CU_ASSERT_EQUAL(ct_comm_wait(req), CT_OK);
    CU_ASSERT_EQUAL(ct_comm_broadcast(ct_mpi_world, d, 3, CT_COMM_F64, 0, NULL), CT_OK);
    CU_ASSERT_EQUAL(ct_comm_barrier(ct_mpi_world), CT_OK);
    ct_comm_stats st;
    ct_comm_get_stats(ct_mpi_world, &st);
    const uint64_t want_bytes[CT_COLL_KINDS] = {1001 * 4, s * 7 * 2, s * 7 * 4, 3 * 8, 0};
    for (int k = 0; k < CT_COLL_KINDS; k++) {
        CU_ASSERT_EQUAL(st.calls[k], 1);
        CU_ASSERT_EQUAL(st.bytes[k], want_bytes[k]);
        CU_ASSERT(st.seconds[k] >= 0 && st.seconds[k] < 60);
    }
    ct_comm_reset_stats(ct_mpi_world);
    ct_comm_get_stats(ct_mpi_world, &st);
    CU_ASSERT_EQUAL(st.calls[CT_COLL_ALLREDUCE] + st.bytes[CT_COLL_ALLREDUCE], 0);
    CU_ASSERT_STRING_EQUAL(ct_comm_kind_name(CT_COLL_REDUCE_SCATTER), "reduce_scatter");
}

/* Even and odd world ranks form two groups; sums and gathers stay within a group, and the
 * group's traffic is counted on the group, not on the world. */
static void test_split_even_odd_groups_reduce_within_the_group(void) {
    ct_comm *group = NULL;
    CU_ASSERT_EQUAL(ct_comm_split(ct_mpi_world, rank_ % 2, rank_, &group), CT_OK);
    if (!group) return;
    int gsize = (size_ + 1 - rank_ % 2) / 2;
    CU_ASSERT_EQUAL(ct_comm_size(group), gsize);
    CU_ASSERT_EQUAL(ct_comm_rank(group), rank_ / 2);
    ct_comm_reset_stats(ct_mpi_world);
    int32_t sum = rank_ + 1, want = 0, gathered[4] = {-1, -1, -1, -1};
    for (int r = rank_ % 2; r < size_; r += 2)
        want += r + 1;
    CU_ASSERT_EQUAL(ct_comm_allreduce(group, &sum, 1, CT_COMM_I32, NULL), CT_OK);
    CU_ASSERT_EQUAL(sum, want);
    int32_t me = rank_;
    CU_ASSERT_EQUAL(ct_comm_allgather(group, &me, gathered, 1, CT_COMM_I32, NULL), CT_OK);
    for (int g = 0; g < gsize; g++)
        CU_ASSERT_EQUAL(gathered[g], 2 * g + rank_ % 2);
    ct_comm_stats st;
    ct_comm_get_stats(group, &st);
    CU_ASSERT_EQUAL(st.bytes[CT_COLL_ALLGATHER], (uint64_t)gsize * 4);
    ct_comm_get_stats(ct_mpi_world, &st);
    CU_ASSERT_EQUAL(st.calls[CT_COLL_ALLREDUCE] + st.calls[CT_COLL_ALLGATHER], 0);
    ct_comm_free(group);
}

static void test_ranks_local_ranks_and_backend(void) {
    CU_ASSERT(rank_ >= 0 && rank_ < size_);
    /* CTest starts every rank on this host, so the node-local group is the world. */
    CU_ASSERT_EQUAL(ct_comm_local_size(ct_mpi_world), size_);
    CU_ASSERT_EQUAL(ct_comm_local_rank(ct_mpi_world), rank_);
    CU_ASSERT_STRING_EQUAL(ct_comm_backend(ct_mpi_world), "mpi");
}

/* Bad input is an error on the calling rank, before any communication (so nothing hangs), and
 * a full request pool is an error too; the group keeps working afterwards. */
static void test_bad_input_and_a_full_pool_are_errors_not_hangs(void) {
    float f[4] = {0};
    uint8_t u[4] = {0};
    CU_ASSERT_EQUAL(ct_comm_broadcast(ct_mpi_world, f, 4, CT_COMM_F32, size_, NULL),
                    CT_ERR_INVALID);
    CU_ASSERT_EQUAL(ct_comm_allreduce(ct_mpi_world, f, 4, (ct_comm_dtype)99, NULL), CT_ERR_INVALID);
    CU_ASSERT_EQUAL(ct_comm_allreduce(ct_mpi_world, u, 4, CT_COMM_U8, NULL), CT_ERR_INVALID);
    CU_ASSERT_EQUAL(ct_comm_allreduce(ct_mpi_world, NULL, 4, CT_COMM_F32, NULL), CT_ERR_INVALID);
    CU_ASSERT_EQUAL(ct_comm_wait(NULL), CT_ERR_INVALID);
    CU_ASSERT(strstr(ct_error_message(), "NULL") != NULL);

    enum { MANY = 300 };
    static int32_t vals[MANY];
    static ct_comm_request *reqs[MANY];
    int queued = 0, refused = 0;
    for (int i = 0; i < MANY; i++) {
        vals[i] = 1;
        if (ct_comm_allreduce(ct_mpi_world, &vals[i], 1, CT_COMM_I32, &reqs[queued]) == CT_OK)
            queued++;
        else
            refused++;
    }
    CU_ASSERT(queued >= 64 && refused > 0);
    for (int i = 0; i < queued; i++) {
        CU_ASSERT_EQUAL(ct_comm_wait(reqs[i]), CT_OK);
        CU_ASSERT_EQUAL(vals[i], size_);
    }
    int32_t one = 1;
    CU_ASSERT_EQUAL(ct_comm_allreduce(ct_mpi_world, &one, 1, CT_COMM_I32, NULL), CT_OK);
    CU_ASSERT_EQUAL(one, size_);
}

static int setup(void) {
    rank_ = ct_comm_rank(ct_mpi_world);
    size_ = ct_comm_size(ct_mpi_world);
    return 0;
}

/* The checked entry, the queue and the wait take requests from the group's fixed pool: once
 * MPI is warm, collectives make no ct_alloc call (STYLE rule 5: no allocation inside a step). */
static void test_warm_collectives_allocate_nothing(void) {
    float f[64] = {0}, g[64 * 4];
    ct_comm_request *req = NULL;
    ct_mem_stats before, after;
    ct_mem_get_stats(&before);
    for (int i = 0; i < 20; i++) {
        CU_ASSERT_EQUAL(ct_comm_allreduce(ct_mpi_world, f, 64, CT_COMM_F32, &req), CT_OK);
        if (req) CU_ASSERT_EQUAL(ct_comm_wait(req), CT_OK);
        CU_ASSERT_EQUAL(ct_comm_reduce_scatter(ct_mpi_world, g, f, 16, CT_COMM_BF16, NULL), CT_OK);
        CU_ASSERT_EQUAL(ct_comm_allgather(ct_mpi_world, f, g, 64, CT_COMM_F32, NULL), CT_OK);
        CU_ASSERT_EQUAL(ct_comm_broadcast(ct_mpi_world, f, 64, CT_COMM_F32, 0, NULL), CT_OK);
    }
    ct_mem_get_stats(&after);
    CU_ASSERT_EQUAL(after.allocations, before.allocations);
}

/* A real MPI failure (a negative count) on a group's communicator comes back as a status with
 * MPI's own text and file:line: MPI_ERRORS_RETURN is set, or the process would have died. */
static ct_status allreduce_negative_count(ct_comm *comm) {
    float f = 0;
    CT_MPI(MPI_Allreduce(MPI_IN_PLACE, &f, -1, MPI_FLOAT, MPI_SUM, comm->mpi));
    return CT_OK;
}

static void test_mpi_errors_return_a_status_with_mpi_text(void) {
    ct_comm *group = NULL;
    CU_ASSERT_EQUAL(ct_comm_split(ct_mpi_world, 0, rank_, &group), CT_OK);
    ct_comm *comms[2] = {ct_mpi_world, group};
    for (int i = 0; i < 2 && comms[i]; i++) {
        CU_ASSERT_EQUAL(allreduce_negative_count(comms[i]), CT_ERR_EXTERNAL);
        const char *msg = ct_error_message();
        CU_ASSERT(strstr(msg, "MPI_Allreduce failed at") != NULL);
        CU_ASSERT(strstr(msg, "mpi_collectives.c:") != NULL);
        CU_ASSERT(strstr(msg, "count") != NULL); /* MPI's text: "MPI_ERR_COUNT: invalid count" */
    }
    ct_comm_free(group);
}

/* A split of an MPI group is an MPI group; ordering after a compute event is a no-op on MPI
 * (host buffers are complete when the call is made), with or without an event. */
static void test_split_keeps_the_mpi_backend_and_order_after_is_a_no_op(void) {
    ct_comm *group = NULL;
    CU_ASSERT_EQUAL(ct_comm_split(ct_mpi_world, 0, rank_, &group), CT_OK);
    if (!group) return;
    CU_ASSERT_STRING_EQUAL(ct_comm_backend(group), "mpi");
    CU_ASSERT_PTR_NULL(ct_comm_stream(group));
    int dummy_event = 0;
    CU_ASSERT_EQUAL(ct_comm_order_after(group, NULL), CT_OK);
    CU_ASSERT_EQUAL(ct_comm_order_after(ct_mpi_world, &dummy_event), CT_OK);
    CU_ASSERT_EQUAL(ct_comm_order_after(NULL, NULL), CT_ERR_INVALID);
    ct_comm_free(group);
}

/* While a communicator is made the ranks agree on success: all succeed only together; a failed
 * rank keeps its own status and message, the others get an error naming the lowest failed
 * rank. */
static void test_agreement_names_the_lowest_failed_rank(void) {
    CU_ASSERT_EQUAL(ct_comm_agree(ct_mpi_world, CT_OK, "making a test group"), CT_OK);
    int first = size_ > 1 ? 1 : 0; /* ranks first.. fail */
    ct_status mine = CT_OK;
    if (rank_ >= first) mine = ct_error(CT_ERR_INVALID, "rank %d's own reason", rank_);
    ct_status got = ct_comm_agree(ct_mpi_world, mine, "making a test group");
    char want[96];
    if (rank_ >= first) {
        CU_ASSERT_EQUAL(got, CT_ERR_INVALID);
        snprintf(want, sizeof(want), "rank %d's own reason", rank_);
    } else {
        CU_ASSERT_EQUAL(got, CT_ERR_EXTERNAL);
        snprintf(want, sizeof(want), "making a test group failed on rank %d", first);
    }
    CU_ASSERT(strstr(ct_error_message(), want) != NULL);
}

/* One rank asks for a device that does not exist: every rank returns an error from
 * ct_comm_init_nccl (no rank waits for the one that failed), no group is left behind, and the
 * world still works. The same holds in builds without CUDA or without a GPU, where every rank
 * fails by itself. */
static void test_nccl_init_failing_on_one_rank_fails_on_every_rank(void) {
    int groups = ct_comm_live_groups();
    ct_comm *nccl = NULL;
    int device = rank_ == size_ - 1 ? 1 << 20 : ct_comm_local_rank(ct_mpi_world);
    CU_ASSERT_NOT_EQUAL(ct_comm_init_nccl(ct_mpi_world, device, &nccl), CT_OK);
    CU_ASSERT_PTR_NULL(nccl);
    CU_ASSERT(strlen(ct_error_message()) > 0);
    CU_ASSERT_EQUAL(ct_comm_live_groups(), groups);
    int32_t one = 1;
    CU_ASSERT_EQUAL(ct_comm_allreduce(ct_mpi_world, &one, 1, CT_COMM_I32, NULL), CT_OK);
    CU_ASSERT_EQUAL(one, size_);
}

int main(int argc, char **argv) {
    static const ct_test_case cases[] = {
        {"ranks_local_ranks_and_backend", test_ranks_local_ranks_and_backend},
        {"allreduce_every_dtype_odd_lengths_equals_serial_sum",
         test_allreduce_every_dtype_odd_lengths_equals_serial_sum},
        {"reduce_scatter_gives_rank_r_the_sum_of_block_r",
         test_reduce_scatter_gives_rank_r_the_sum_of_block_r},
        {"reduce_scatter_in_place_leaves_the_sum_in_block_r",
         test_reduce_scatter_in_place_leaves_the_sum_in_block_r},
        {"allgather_every_dtype_puts_block_r_from_rank_r",
         test_allgather_every_dtype_puts_block_r_from_rank_r},
        {"broadcast_from_every_root_every_dtype", test_broadcast_from_every_root_every_dtype},
        {"bf16_allreduce_rounds_to_nearest_even", test_bf16_allreduce_rounds_to_nearest_even},
        {"async_requests_overlap_and_complete_in_order",
         test_async_requests_overlap_and_complete_in_order},
        {"stats_count_bytes_by_the_nccl_tests_convention",
         test_stats_count_bytes_by_the_nccl_tests_convention},
        {"split_even_odd_groups_reduce_within_the_group",
         test_split_even_odd_groups_reduce_within_the_group},
        {"bad_input_and_a_full_pool_are_errors_not_hangs",
         test_bad_input_and_a_full_pool_are_errors_not_hangs},
        {"warm_collectives_allocate_nothing", test_warm_collectives_allocate_nothing},
        {"mpi_errors_return_a_status_with_mpi_text", test_mpi_errors_return_a_status_with_mpi_text},
        {"split_keeps_the_mpi_backend_and_order_after_is_a_no_op",
         test_split_keeps_the_mpi_backend_and_order_after_is_a_no_op},
        {"agreement_names_the_lowest_failed_rank", test_agreement_names_the_lowest_failed_rank},
        {"nccl_init_failing_on_one_rank_fails_on_every_rank",
         test_nccl_init_failing_on_one_rank_fails_on_every_rank},
    };
    return ct_mpi_test_main(&argc, &argv, "mpi_collectives", setup, cases,
                            (int)CT_ARRAY_LEN(cases));
}
