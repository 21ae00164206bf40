/*
 * The NCCL backend on device buffers (builds with CUDA): each rank takes GPU local_rank, and the
 * whole suite exits 77 (skip) unless every rank has a GPU of its own. The same serial reference
 * as tests/mpi_collectives.c: small-integer inputs, so every sum is exact in f32 and bf16 and
 * the comparisons are exact (tolerance zero). Also: NCCL's in-place rules, the request path,
 * the byte counters (the same convention as MPI), the backend's name, a split that stays on
 * NCCL and a collective ordered after another stream's event.
 */
#include "mpi_test_util.h"

#include <cuda_runtime.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int rank_, size_;
static ct_comm *nccl_;
static const size_t lengths[] = {1, 7, 1001, 3000017};

static int value(int who, size_t i) {
    return (int)(((size_t)who * 31 + i * 7) % 17) - 8;
}

static uint16_t bf16_of(int v) { /* exact for small integers */
    float f = (float)v;
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return (uint16_t)(bits >> 16);
}

static int sum_at(size_t i) {
    int s = 0;
    for (int r = 0; r < size_; r++)
        s += value(r, i);
    return s;
}

/* Copies n host floats to a new device buffer (of `alloc_n` floats). */
static float *to_device(const float *host, size_t n, size_t alloc_n) {
    float *dev = NULL;
    if (cudaMalloc((void **)&dev, alloc_n * 4) != cudaSuccess) abort();
    if (n && cudaMemcpy(dev, host, n * 4, cudaMemcpyHostToDevice) != cudaSuccess) abort();
    return dev;
}

static void test_nccl_group_is_named_and_has_a_stream(void) {
    CU_ASSERT_STRING_EQUAL(ct_comm_backend(nccl_), "nccl");
    CU_ASSERT_PTR_NOT_NULL(ct_comm_stream(nccl_));
    CU_ASSERT_PTR_NULL(ct_comm_stream(ct_mpi_world));
    CU_ASSERT_EQUAL(ct_comm_size(nccl_), size_);
    CU_ASSERT_EQUAL(ct_comm_rank(nccl_), rank_);
}

static void test_nccl_allreduce_f32_and_bf16_equal_serial_sum(void) {
    for (size_t k = 0; k < CT_ARRAY_LEN(lengths); k++) {
        size_t n = lengths[k], bad = 0;
        float *h = malloc(n * 4);
        uint16_t *hb = malloc(n * 2);
        for (size_t i = 0; i < n; i++) {
            h[i] = (float)value(rank_, i);
            hb[i] = bf16_of(value(rank_, i));
        }
        float *d = to_device(h, n, n);
        uint16_t *db = (uint16_t *)to_device(NULL, 0, (n + 1) / 2);
        CU_ASSERT_EQUAL(cudaMemcpy(db, hb, n * 2, cudaMemcpyHostToDevice), cudaSuccess);
        ct_comm_request *req = NULL;
        CU_ASSERT_EQUAL(ct_comm_allreduce(nccl_, d, n, CT_COMM_F32, &req), CT_OK);
        CU_ASSERT_EQUAL(ct_comm_allreduce(nccl_, db, n, CT_COMM_BF16, NULL), CT_OK);
        if (req) CU_ASSERT_EQUAL(ct_comm_wait(req), CT_OK);
        CU_ASSERT_EQUAL(cudaMemcpy(h, d, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
        CU_ASSERT_EQUAL(cudaMemcpy(hb, db, n * 2, cudaMemcpyDeviceToHost), cudaSuccess);
        for (size_t i = 0; i < n; i++)
            bad += h[i] != (float)sum_at(i) || hb[i] != bf16_of(sum_at(i));
        CU_ASSERT_EQUAL(bad, 0);
        cudaFree(d);
        cudaFree(db);
        free(h);
        free(hb);
    }
}

/* Out of place and in place (recv == send + rank * recv_count), then the all-gather of the
 * result back in place (send == recv + rank * send_count) gives every rank the full sum. */
static void test_nccl_reduce_scatter_then_allgather_in_place(void) {
    for (int in_place = 0; in_place <= 1; in_place++) {
        for (size_t k = 0; k < CT_ARRAY_LEN(lengths); k++) {
            size_t n = lengths[k] == 3000017 ? (3000017 / (size_t)size_) | 1 : lengths[k];
            size_t total = (size_t)size_ * n, bad = 0;
            float *h = malloc(total * 4);
            for (size_t i = 0; i < total; i++)
                h[i] = (float)value(rank_, i);
            float *send = to_device(h, total, total);
            float *recv = in_place ? send + (size_t)rank_ * n : to_device(NULL, 0, n);
            CU_ASSERT_EQUAL(ct_comm_reduce_scatter(nccl_, send, recv, n, CT_COMM_F32, NULL), CT_OK);
            float *full = in_place ? send : to_device(NULL, 0, total);
            if (!in_place)
                CU_ASSERT_EQUAL(
                    cudaMemcpy(full + (size_t)rank_ * n, recv, n * 4, cudaMemcpyDeviceToDevice),
                    cudaSuccess);
            CU_ASSERT_EQUAL(
                ct_comm_allgather(nccl_, full + (size_t)rank_ * n, full, n, CT_COMM_F32, NULL),
                CT_OK);
            CU_ASSERT_EQUAL(cudaMemcpy(h, full, total * 4, cudaMemcpyDeviceToHost), cudaSuccess);
            for (size_t i = 0; i < total; i++)
                bad += h[i] != (float)sum_at(i);
            CU_ASSERT_EQUAL(bad, 0);
            cudaFree(send);
            if (!in_place) {
                cudaFree(recv);
                cudaFree(full);
            }
            free(h);
        }
    }
}

static void test_nccl_broadcast_barrier_and_byte_counts(void) {
    ct_comm_reset_stats(nccl_);
    size_t n = 1001, bad = 0;
    float *h = malloc(n * 4);
    for (size_t i = 0; i < n; i++)
        h[i] = (float)value(rank_ == size_ - 1 ? rank_ : rank_ + 100, i);
    float *d = to_device(h, n, n);
    CU_ASSERT_EQUAL(ct_comm_broadcast(nccl_, d, n, CT_COMM_F32, size_ - 1, NULL), CT_OK);
    CU_ASSERT_EQUAL(ct_comm_barrier(nccl_), CT_OK);
    CU_ASSERT_EQUAL(cudaMemcpy(h, d, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    for (size_t i = 0; i < n; i++)
        bad += h[i] != (float)value(size_ - 1, i);
    CU_ASSERT_EQUAL(bad, 0);
    ct_comm_stats st;
    ct_comm_get_stats(nccl_, &st);
    CU_ASSERT_EQUAL(st.calls[CT_COLL_BROADCAST], 1);
    CU_ASSERT_EQUAL(st.bytes[CT_COLL_BROADCAST], n * 4);
    CU_ASSERT_EQUAL(st.calls[CT_COLL_BARRIER], 1);
    CU_ASSERT_EQUAL(st.bytes[CT_COLL_BARRIER], 0);
    cudaFree(d);
    free(h);
}

/* A split of an NCCL group is an NCCL group (ncclCommSplit), with a stream of its own: its
 * all-reduce of a device buffer sums over the sub-group only. */
static void test_nccl_split_keeps_the_backend(void) {
    ct_comm *half = NULL;
    CU_ASSERT_EQUAL(ct_comm_split(nccl_, rank_ % 2, rank_, &half), CT_OK);
    if (!half) return;
    CU_ASSERT_STRING_EQUAL(ct_comm_backend(half), "nccl");
    CU_ASSERT_PTR_NOT_NULL(ct_comm_stream(half));
    CU_ASSERT(ct_comm_stream(half) != ct_comm_stream(nccl_));
    int gsize = (size_ + 1 - rank_ % 2) / 2;
    CU_ASSERT_EQUAL(ct_comm_size(half), gsize);
    float one = 1, got = 0;
    float *d = to_device(&one, 1, 1);
    CU_ASSERT_EQUAL(ct_comm_allreduce(half, d, 1, CT_COMM_F32, NULL), CT_OK);
    CU_ASSERT_EQUAL(cudaMemcpy(&got, d, 4, cudaMemcpyDeviceToHost), cudaSuccess);
    CU_ASSERT_EQUAL(got, (float)gsize);
    cudaFree(d);
    ct_comm_free(half);
}

static void CUDART_CB sleep_100ms(void *arg) {
    (void)arg;
    usleep(100000);
}

/* A collective ordered after an event of another stream (ct_comm_order_after) reads what that
 * stream wrote. The stream zeroes the buffer, sleeps 100 ms (a host function), then copies the
 * input in: an all-reduce not ordered after it would sum zeros. */
static void test_nccl_collective_waits_for_the_compute_event(void) {
    size_t n = 1001, bad = 0;
    float *h = NULL, *d = NULL;
    cudaStream_t compute;
    cudaEvent_t written;
    CU_ASSERT_EQUAL(cudaMallocHost((void **)&h, n * 4), cudaSuccess);
    CU_ASSERT_EQUAL(cudaMalloc((void **)&d, n * 4), cudaSuccess);
    CU_ASSERT_EQUAL(cudaStreamCreateWithFlags(&compute, cudaStreamNonBlocking), cudaSuccess);
    CU_ASSERT_EQUAL(cudaEventCreateWithFlags(&written, cudaEventDisableTiming), cudaSuccess);
    for (size_t i = 0; i < n; i++)
        h[i] = (float)value(rank_, i);
    CU_ASSERT_EQUAL(cudaMemsetAsync(d, 0, n * 4, compute), cudaSuccess);
    CU_ASSERT_EQUAL(cudaLaunchHostFunc(compute, sleep_100ms, NULL), cudaSuccess);
    CU_ASSERT_EQUAL(cudaMemcpyAsync(d, h, n * 4, cudaMemcpyHostToDevice, compute), cudaSuccess);
    CU_ASSERT_EQUAL(cudaEventRecord(written, compute), cudaSuccess);
    CU_ASSERT_EQUAL(ct_comm_order_after(nccl_, written), CT_OK);
    CU_ASSERT_EQUAL(ct_comm_allreduce(nccl_, d, n, CT_COMM_F32, NULL), CT_OK);
    CU_ASSERT_EQUAL(cudaMemcpy(h, d, n * 4, cudaMemcpyDeviceToHost), cudaSuccess);
    for (size_t i = 0; i < n; i++)
        bad += h[i] != (float)sum_at(i);
    CU_ASSERT_EQUAL(bad, 0);
    CU_ASSERT_EQUAL(ct_comm_order_after(nccl_, NULL), CT_ERR_INVALID);
    cudaEventDestroy(written);
    cudaStreamDestroy(compute);
    cudaFree(d);
    cudaFreeHost(h);
}

/* Skips unless every local rank has a GPU of its own; otherwise makes the NCCL group. */
static int setup(void) {
    rank_ = ct_comm_rank(ct_mpi_world);
    size_ = ct_comm_size(ct_mpi_world);
    int devices = 0;
    int32_t missing =
        cudaGetDeviceCount(&devices) != cudaSuccess || devices < ct_comm_local_size(ct_mpi_world);
    /* Agree first: a rank that skips must not leave the others in ct_comm_init_nccl. */
    if (ct_comm_allreduce(ct_mpi_world, &missing, 1, CT_COMM_I32, NULL) != CT_OK || missing)
        return 1;
    if (ct_comm_init_nccl(ct_mpi_world, ct_comm_local_rank(ct_mpi_world), &nccl_) != CT_OK) {
        fprintf(stderr, "[rank %d] %s\n", rank_, ct_error_message());
        ct_comm_abort(ct_mpi_world, 1);
    }
    ct_mpi_groups[0] = nccl_;
    return 0;
}

int main(int argc, char **argv) {
    static const ct_test_case cases[] = {
        {"nccl_group_is_named_and_has_a_stream", test_nccl_group_is_named_and_has_a_stream},
        {"nccl_allreduce_f32_and_bf16_equal_serial_sum",
         test_nccl_allreduce_f32_and_bf16_equal_serial_sum},
        {"nccl_reduce_scatter_then_allgather_in_place",
         test_nccl_reduce_scatter_then_allgather_in_place},
        {"nccl_broadcast_barrier_and_byte_counts", test_nccl_broadcast_barrier_and_byte_counts},
        {"nccl_split_keeps_the_backend", test_nccl_split_keeps_the_backend},
        {"nccl_collective_waits_for_the_compute_event",
         test_nccl_collective_waits_for_the_compute_event},
    };
    return ct_mpi_test_main(&argc, &argv, "mpi_nccl", setup, cases, (int)CT_ARRAY_LEN(cases));
}
