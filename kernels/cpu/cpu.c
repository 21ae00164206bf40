/*
 * The CPU backend's kernel table and its thread count (the CPU tuning of kernels.h). OpenBLAS runs
 * the GEMMs with its own threads and OpenMP runs our loops; both get the same count, set once, and
 * never run at the same time (no BLAS call is made inside an OpenMP region), so they do not
 * oversubscribe.
 */
#include "common/common.h"
#include "kernels/cpu/cpu_internal.h"
#include "kernels/kernels.h"

#include <cblas.h>
#include <omp.h>
#include <unistd.h>

static int cpu_threads = 0;

/* The context stays all zero: CT_DEVICE_CPU, no stream, handles or workspace. */
static const ct_kernels cpu_kernels = {
    .name = "cpu",
    .memset_bytes = ct_cpu_memset_bytes,
    .copy = ct_cpu_copy,
    .cast = ct_cpu_cast,
    .attention_scratch_floats = ct_cpu_attention_scratch_floats,
    .lm_head_chunk_rows = ct_cpu_lm_head_chunk_rows,
    .matmul_fwd = ct_cpu_matmul_fwd,
    .matmul_bwd = ct_cpu_matmul_bwd,
    .layernorm_fwd = ct_cpu_layernorm_fwd,
    .layernorm_bwd = ct_cpu_layernorm_bwd,
    .gelu_fwd = ct_cpu_gelu_fwd,
    .gelu_bwd = ct_cpu_gelu_bwd,
    .add_fwd = ct_cpu_add_fwd,
    .add_inplace = ct_cpu_add_inplace,
    .embedding_fwd = ct_cpu_embedding_fwd,
    .embedding_bwd = ct_cpu_embedding_bwd,
    .attention_fwd = ct_cpu_attention_fwd,
    .attention_bwd = ct_cpu_attention_bwd,
    .lm_head_loss = ct_cpu_lm_head_loss,
    .lm_head_logits = ct_cpu_lm_head_logits,
    .loss_mean = ct_cpu_loss_mean,
    .adamw = ct_cpu_adamw,
    .sum_squares = ct_cpu_sum_squares,
    .scale = ct_cpu_scale,
};

const ct_kernels *ct_kern_cpu(void) {
    if (cpu_threads == 0) ct_kern_cpu_set_threads(0);
    return &cpu_kernels;
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

double ct_kern_cpu_sgemm_gflops(int n, int reps) {
    /* The ceiling MFU is measured against (BENCH.md): an n^3 sgemm at the current thread
     * count, best of `reps` after one warm-up run. */
    size_t elems = (size_t)n * n;
    float *a = ct_alloc(CT_MEM_OTHER, 3 * elems * sizeof(float));
    if (!a) return 0.0;
    float *b = a + elems, *c = b + elems;
    for (size_t i = 0; i < elems; i++) {
        a[i] = (float)(i % 17) * 0.01f;
        b[i] = (float)(i % 13) * 0.01f;
    }
    double best = 1e30;
    for (int r = 0; r <= reps; r++) {
        double t0 = ct_time_s();
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasNoTrans, n, n, n, 1.0f, a, n, b, n, 0.0f, c,
                    n);
        double dt = ct_time_s() - t0;
        if (r > 0 && dt < best) best = dt;
    }
    ct_free(CT_MEM_OTHER, a, 3 * elems * sizeof(float));
    return 2.0 * n * (double)n * n / best / 1e9;
}
