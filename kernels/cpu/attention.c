/*
 * Causal multi-head self-attention, one (batch, head) pair at a time, its matrix products on the
 * table's GEMM (OpenBLAS or oneDNN, both threads) and its row-wise softmax split across threads.
 * Per pair: S = Q K^T for all T x T (the upper triangle is computed and discarded: twice the
 * FLOPs of the causal part, but at GEMM speed, which the former axpy loops were far from), the
 * causal softmax per row into the probabilities P (zeros above the diagonal), then out = P V.
 * Backward mirrors it with four GEMMs. Q, K, V and their gradients are read in place from the
 * (B,T,3C) layout through the GEMM's leading dimensions. The softmax reductions use eight fixed
 * lanes, and every GEMM is deterministic for a shape and thread count, so results do not
 * depend on anything else. No GEMM runs inside an OpenMP region (cpu.c).
 */
#include "kernels/cpu/cpu_internal.h"

#include <math.h>

size_t ct_cpu_attention_stats_floats(const ct_kern_ctx *ctx, int B, int T, int C, int NH) {
    (void)ctx, (void)C;
    return (size_t)B * NH * T * T;
}

size_t ct_cpu_attention_scratch_floats(const ct_kern_ctx *ctx, int B, int T, int C, int NH) {
    (void)ctx, (void)B, (void)C, (void)NH;
    return (size_t)T * T; /* backward's d(probabilities) of one pair */
}

static float sum_lanes(const float *x, int n) {
    float lane[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            lane[j] += x[i + j];
    for (; i < n; i++)
        lane[0] += x[i];
    return ct_cpu_reduce_lanes(lane);
}

void ct_cpu_attention_fwd(const ct_kern_ctx *ctx, float *out, float *att, const float *qkv,
                          float *scratch, int B, int T, int C, int NH) {
    (void)scratch;
    // qkv is (B,T,3C), out (B,T,C), att (B,NH,T,T)
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    for (int pair = 0; pair < B * NH; pair++) {
        int b = pair / NH, h = pair % NH;
        const float *q = qkv + (size_t)b * T * C3 + h * hs;
        float *p = att + (size_t)pair * T * T;
        ct_cpu_gemm(ctx, false, true, T, T, hs, q, C3, q + C, C3, 0.0f, p, T);
#pragma omp parallel for schedule(static)
        for (int t = 0; t < T; t++) {
            float *row = p + (size_t)t * T;
            for (int t2 = 0; t2 <= t; t2++)
                row[t2] *= scale;
            float m = ct_cpu_max_lanes(row, t + 1);
            for (int t2 = 0; t2 <= t; t2++)
                row[t2] = ct_cpu_exp_neg(row[t2] - m);
            float inv = 1.0f / sum_lanes(row, t + 1);
            for (int t2 = 0; t2 <= t; t2++)
                row[t2] *= inv;
            for (int t2 = t + 1; t2 < T; t2++)
                row[t2] = 0.0f;
        }
        ct_cpu_gemm(ctx, false, false, T, hs, T, p, T, q + 2 * C, C3, 0.0f,
                    out + (size_t)b * T * C + h * hs, C);
    }
}

void ct_cpu_attention_bwd(const ct_kern_ctx *ctx, float *dqkv, const float *dout, const float *qkv,
                          const float *out, const float *att, float *scratch, int B, int T, int C,
                          int NH) {
    (void)out;
    // dout is (B,T,C); dqkv (B,T,3C) += ...; scratch holds T*T floats
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    float *ds = scratch;
    for (int pair = 0; pair < B * NH; pair++) {
        int b = pair / NH, h = pair % NH;
        const float *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
        float *dq = dqkv + (size_t)b * T * C3 + h * hs, *dk = dq + C, *dv = dq + 2 * C;
        const float *p = att + (size_t)pair * T * T;
        const float *dy = dout + (size_t)b * T * C + h * hs;
        ct_cpu_gemm(ctx, true, false, T, hs, T, p, T, dy, C, 1.0f, dv, C3); /* dV += P^T dY */
        ct_cpu_gemm(ctx, false, true, T, T, hs, dy, C, v, C3, 0.0f, ds, T); /* dP = dY V^T */
        /* softmax backward: dS = P * (dP - sum(P * dP)), then the 1/sqrt(hs) scale; zero above
         * the diagonal, where P is */
#pragma omp parallel for schedule(static)
        for (int t = 0; t < T; t++) {
            const float *prow = p + (size_t)t * T;
            float *row = ds + (size_t)t * T;
            for (int t2 = 0; t2 <= t; t2++)
                row[t2] *= prow[t2];
            float pdp = sum_lanes(row, t + 1);
            for (int t2 = 0; t2 <= t; t2++)
                row[t2] = (row[t2] - prow[t2] * pdp) * scale;
            for (int t2 = t + 1; t2 < T; t2++)
                row[t2] = 0.0f;
        }
        ct_cpu_gemm(ctx, false, false, T, hs, T, ds, T, k, C3, 1.0f, dq, C3); /* dQ += dS K */
        ct_cpu_gemm(ctx, true, false, T, hs, T, ds, T, q, C3, 1.0f, dk, C3);  /* dK += dS^T Q */
    }
}
