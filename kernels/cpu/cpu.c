/*
 * The CPU backend's kernel tables and its thread count (the CPU tuning of kernels.h). Four tables,
 * alike but for the library their f32 GEMMs run on (the context's cpu_blas, read by gemm.c:
 * OpenBLAS or oneDNN) and the path of the ops on half parameters (cpu_half, read by half.c). Both
 * libraries and our loops use the OpenMP threads, set once to the same count, and never run at the
 * same time (no GEMM is made inside an OpenMP region), so they do not oversubscribe.
 */
#include "common/common.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/kernels.h"

#include <cblas.h> /* openblas_set_num_threads */
#include <omp.h>
#include <string.h>
#include <unistd.h>

static int cpu_threads = 0;

/* The entries of both tables; the context is CT_DEVICE_CPU with no stream, handles or workspace,
 * and the GEMM library. */
#define CPU_TABLE(table_name, blas, half)                                                          \
    .name = table_name, .ctx = {.cpu_blas = blas, .cpu_half = half},                               \
    .device_alloc = ct_cpu_device_alloc, .device_free = ct_cpu_device_free,                        \
    .memset_bytes = ct_cpu_memset_bytes, .copy = ct_cpu_copy, .cast = ct_cpu_cast,                 \
    .attention_stats_floats = ct_cpu_attention_stats_floats,                                       \
    .attention_scratch_floats = ct_cpu_attention_scratch_floats,                                   \
    .lm_head_chunk_rows = ct_cpu_lm_head_chunk_rows, .matmul_fwd = ct_cpu_matmul_fwd,              \
    .matmul_bwd = ct_cpu_matmul_bwd, .layernorm_fwd = ct_cpu_layernorm_fwd,                        \
    .layernorm_bwd = ct_cpu_layernorm_bwd, .gelu_fwd = ct_cpu_gelu_fwd,                            \
    .gelu_bwd = ct_cpu_gelu_bwd, .add_fwd = ct_cpu_add_fwd, .add_inplace = ct_cpu_add_inplace,     \
    .embedding_fwd = ct_cpu_embedding_fwd, .embedding_bwd = ct_cpu_embedding_bwd,                  \
    .attention_fwd = ct_cpu_attention_fwd, .attention_bwd = ct_cpu_attention_bwd,                  \
    .lm_head_loss = ct_cpu_lm_head_loss, .lm_head_logits = ct_cpu_lm_head_logits,                  \
    .loss_mean = ct_cpu_loss_mean, .adamw = ct_cpu_adamw, .sum_squares = ct_cpu_sum_squares,       \
    .scale = ct_cpu_scale, .half_workspace_bytes = ct_cpu_half_workspace_bytes,                    \
    .matmul_fwd_half = ct_cpu_matmul_fwd_half, .matmul_bwd_half = ct_cpu_matmul_bwd_half,          \
    .embedding_fwd_half = ct_cpu_embedding_fwd_half,                                               \
    .lm_head_loss_half = ct_cpu_lm_head_loss_half,                                                 \
    .lm_head_logits_half = ct_cpu_lm_head_logits_half,

/* Indexed [blas][half path]. */
static const ct_kernels cpu_kernels[2][2] = {
    [CT_BLAS_OPENBLAS] = {[CT_HALF_PORTABLE] = {CPU_TABLE("cpu (openblas)", CT_BLAS_OPENBLAS,
                                                          CT_HALF_PORTABLE)},
                          [CT_HALF_NATIVE] = {CPU_TABLE("cpu (openblas, native bf16)",
                                                        CT_BLAS_OPENBLAS, CT_HALF_NATIVE)}},
    [CT_BLAS_ONEDNN] = {
        [CT_HALF_PORTABLE] = {CPU_TABLE("cpu (onednn)", CT_BLAS_ONEDNN, CT_HALF_PORTABLE)},
        [CT_HALF_NATIVE] = {
            CPU_TABLE("cpu (onednn, native bf16)", CT_BLAS_ONEDNN, CT_HALF_NATIVE)}}};

const ct_kernels *ct_kern_cpu(ct_blas blas, ct_half_path half) {
    if (cpu_threads == 0) ct_kern_cpu_set_threads(0);
    return &cpu_kernels[blas == CT_BLAS_ONEDNN][half == CT_HALF_NATIVE];
}

void ct_kern_cpu_set_threads(int threads) {
    if (threads <= 0) {
        long cores = sysconf(_SC_NPROCESSORS_ONLN);
        threads = cores > 0 ? (int)cores : 1;
    }
    cpu_threads = threads;
    openblas_set_num_threads(threads);
    omp_set_num_threads(threads);
}

int ct_kern_cpu_threads(void) {
    return cpu_threads;
}

ct_status ct_kern_cpu_blas_for(const char *name, ct_blas *blas) {
    if (strcmp(name, "auto") == 0) {
        /* OpenBLAS for fp32 on every CPU so far (docs/performance.md, "GEMMs through oneDNN"):
         * on this project's AVX-512 Xeon oneDNN's fp32 matmul measured even with OpenBLAS on a
         * 1024^3 GEMM and 4% ahead in training (an earlier 363 against 191 GFLOP/s was not
         * reproduced), and oneDNN 2.6 makes small libc allocations in every execute, which a
         * warm step must not. oneDNN is the way to AMX's bf16, where it will pay. */
        *blas = CT_BLAS_OPENBLAS;
    } else if (strcmp(name, "onednn") == 0) {
        *blas = CT_BLAS_ONEDNN;
    } else if (strcmp(name, "openblas") == 0) {
        *blas = CT_BLAS_OPENBLAS;
    } else {
        return ct_error(CT_ERR_INVALID, "device.blas = \"%s\": expected auto, onednn or openblas",
                        name);
    }
    return CT_OK;
}

const char *ct_kern_cpu_blas_name(ct_blas blas) {
    return blas == CT_BLAS_ONEDNN ? "onednn" : "openblas";
}

double ct_kern_cpu_sgemm_gflops(int n, int reps, ct_blas blas) {
    double gflops = 0.0;
    return ct_kern_cpu_gemm_gflops(n, reps, blas, CT_F32, &gflops) == CT_OK ? gflops : 0.0;
}

ct_status ct_kern_cpu_gemm_gflops(int n, int reps, ct_blas blas, ct_dtype dtype, double *gflops) {
    /* The ceiling MFU is measured against (BENCH.md): an n^3 GEMM at the current thread
     * count, best of `reps` after one warm-up run (which also makes oneDNN's primitive). bf16
     * inputs (f32 sums) always run on oneDNN, the one library here with bf16 matmuls. */
    *gflops = 0.0;
    if (dtype != CT_F32 && dtype != CT_BF16)
        return ct_error(CT_ERR_INVALID, "a GEMM rate of %s: fp32 or bf16", ct_dtype_name(dtype));
    size_t elems = (size_t)n * n;
    size_t bytes = 3 * elems * sizeof(float) + 2 * elems * sizeof(uint16_t);
    float *a = ct_alloc(CT_MEM_OTHER, bytes);
    if (!a) return ct_error(CT_ERR_NOMEM, "%zu bytes for a GEMM of %d^3", bytes, n);
    float *b = a + elems, *c = b + elems;
    uint16_t *a16 = (uint16_t *)(c + elems), *b16 = a16 + elems;
    for (size_t i = 0; i < elems; i++) {
        a[i] = (float)(i % 17) * 0.01f;
        b[i] = (float)(i % 13) * 0.01f;
    }
    const ct_kern_ctx *ctx = &ct_kern_cpu(blas, CT_HALF_PORTABLE)->ctx;
    ct_status status = CT_OK;
    if (dtype == CT_BF16) {
        status = ct_cpu_cast(ctx, a16, CT_BF16, a, CT_F32, elems);
        if (status == CT_OK) status = ct_cpu_cast(ctx, b16, CT_BF16, b, CT_F32, elems);
    }
    double best = 1e30;
    for (int r = 0; status == CT_OK && r <= reps; r++) {
        double t0 = ct_time_s();
        if (dtype == CT_BF16)
            status = ct_cpu_gemm_bf16(false, false, n, n, n, a16, n, b16, n, 0.0f, c, n);
        else
            ct_cpu_gemm(ctx, false, false, n, n, n, a, n, b, n, 0.0f, c, n);
        double dt = ct_time_s() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    ct_free(CT_MEM_OTHER, a, bytes);
    if (status == CT_OK) *gflops = 2.0 * n * (double)n * n / best / 1e9;
    return status;
}
