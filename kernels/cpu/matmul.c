/*
 * Linear layers on the backend's GEMM (ct_cpu_gemm: OpenBLAS or oneDNN). The bias gradient is a
 * column sum, computed with rows in order and columns split across threads, so it is deterministic.
 */
#include "kernels/cpu/cpu_internal.h"

void ct_cpu_matmul_fwd(const ct_kern_ctx *ctx, float *out, const float *inp, const float *weight,
                       const float *bias, int N, int C, int OC) {
    // inp is (N,C), weight (OC,C), out (N,OC)
    if (bias) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++)
            memcpy(out + (size_t)n * OC, bias, sizeof(float) * OC);
    }
    ct_cpu_gemm(ctx, false, true, N, OC, C, inp, C, weight, C, bias ? 1.0f : 0.0f, out, OC);
}

void ct_cpu_matmul_bwd(const ct_kern_ctx *ctx, float *dinp, float *dweight, float *dbias,
                       const float *dout, const float *inp, const float *weight, int N, int C,
                       int OC) {
    // dout is (N,OC): dinp (N,C) += dout @ weight; dweight (OC,C) += dout^T @ inp
    if (dinp) ct_cpu_gemm(ctx, false, false, N, C, OC, dout, OC, weight, C, 1.0f, dinp, C);
    if (dweight) ct_cpu_gemm(ctx, true, false, OC, C, N, dout, OC, inp, C, 1.0f, dweight, C);
    if (dbias) ct_cpu_bias_grad(dbias, dout, N, OC);
}

void ct_cpu_bias_grad(float *dbias, const float *dout, int N, int OC) {
    /* Each thread owns a block of 64 columns and sums every row into it in order. */
    int blocks = (OC + 63) / 64;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < blocks; blk++) {
        int lo = blk * 64, hi = lo + 64 < OC ? lo + 64 : OC;
        float acc[64];
        for (int o = lo; o < hi; o++)
            acc[o - lo] = dbias[o];
        for (int n = 0; n < N; n++) {
            const float *row = dout + (size_t)n * OC;
            for (int o = lo; o < hi; o++)
                acc[o - lo] += row[o];
        }
        for (int o = lo; o < hi; o++)
            dbias[o] = acc[o - lo];
    }
}
