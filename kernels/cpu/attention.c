/*
 * Causal multi-head self-attention, flash-style: one (batch, head) pair at a time, and within it
 * blocks of ATTENTION_BLOCK_ROWS query rows against the keys they see (0 .. the block's last
 * row), so no T x T matrix exists: the scratch is one block's scores and their gradient, and
 * forward saves per row only the maximum of its scaled scores and the reciprocal of its
 * softmax sum. Backward recomputes a block's probabilities from those with the same
 * instructions (same GEMM shape, same row loop), so they equal forward's bitwise, then takes
 * the softmax backward's row sum from P . dP (equal to dout . out) in the same pass.
 *
 * Per block of rows [t0, t1): S = Q K^T (t1 - t0, t1), the causal softmax per row into P (zeros
 * right of the diagonal), out = P V; backward: dP = dY V^T, dS = P (dP - sum(P dP)) / sqrt(hs),
 * dV += P^T dY, dQ += dS K, dK += dS^T Q. Blocking along the diagonal also skips the scores
 * above it that whole blocks never see. The products run on the table's GEMM (OpenBLAS or
 * oneDNN, every thread) reading Q, K, V and their gradients in place from the (B,T,3C) layout
 * through leading dimensions; the row loops are split across threads. The reductions use eight
 * fixed lanes and every GEMM is deterministic for a shape and thread count. No GEMM runs
 * inside an OpenMP region (cpu.c).
 */
#include "kernels/cpu/cpu_internal.h"

#include <math.h>

/* Query rows per block: large enough that the GEMMs run near their rate (K = hs is small),
 * small enough that the scratch stays a few hundred KiB at T = 1024. */
#define ATTENTION_BLOCK_ROWS 128

size_t ct_cpu_attention_stats_floats(const ct_kern_ctx *ctx, int B, int T, int C, int NH) {
    (void)ctx, (void)C;
    return (size_t)2 * B * NH * T; /* per row: the score maximum, 1 / the softmax sum */
}

size_t ct_cpu_attention_scratch_floats(const ct_kern_ctx *ctx, int B, int T, int C, int NH) {
    (void)ctx, (void)B, (void)C, (void)NH;
    return (size_t)2 * CT_MIN(T, ATTENTION_BLOCK_ROWS) * T; /* a block's P and dP */
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

/* P (rows [t0, t1), keys [0, t1)) of one pair: scores on the GEMM, then per row the causal
 * softmax. Backward passes `known`, the rows' maximum and reciprocal sum that forward found;
 * forward passes NULL, and they are computed and stored into `found`. */
static void block_probabilities(const ct_kern_ctx *ctx, float *p, const float *known, float *found,
                                const float *q, const float *k, int C3, int hs, int t0, int t1) {
    int rows = t1 - t0, n = t1;
    float scale = 1.0f / sqrtf((float)hs);
    ct_cpu_gemm(ctx, false, true, rows, n, hs, q + (size_t)t0 * C3, C3, k, C3, 0.0f, p, n);
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        int t = t0 + r;
        float *row = p + (size_t)r * n;
        for (int t2 = 0; t2 <= t; t2++)
            row[t2] *= scale;
        float m = known ? known[2 * t] : ct_cpu_max_lanes(row, t + 1);
        for (int t2 = 0; t2 <= t; t2++)
            row[t2] = ct_cpu_exp_neg(row[t2] - m);
        float inv = known ? known[2 * t + 1] : 1.0f / sum_lanes(row, t + 1);
        for (int t2 = 0; t2 <= t; t2++)
            row[t2] *= inv;
        for (int t2 = t + 1; t2 < n; t2++)
            row[t2] = 0.0f;
        if (!known) found[2 * t] = m, found[2 * t + 1] = inv;
    }
}

void ct_cpu_attention_fwd(const ct_kern_ctx *ctx, float *out, float *stats, const float *qkv,
                          float *scratch, int B, int T, int C, int NH) {
    // qkv is (B,T,3C), out (B,T,C), stats (B,NH,T,2)
    int hs = C / NH, C3 = 3 * C;
    float *p = scratch;
    for (int pair = 0; pair < B * NH; pair++) {
        int b = pair / NH, h = pair % NH;
        const float *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
        float *o = out + (size_t)b * T * C + h * hs, *saved = stats + (size_t)pair * 2 * T;
        for (int t0 = 0; t0 < T; t0 += ATTENTION_BLOCK_ROWS) {
            int t1 = CT_MIN(T, t0 + ATTENTION_BLOCK_ROWS);
            block_probabilities(ctx, p, NULL, saved, q, k, C3, hs, t0, t1);
            ct_cpu_gemm(ctx, false, false, t1 - t0, hs, t1, p, t1, v, C3, 0.0f, o + (size_t)t0 * C,
                        C);
        }
    }
}

void ct_cpu_attention_bwd(const ct_kern_ctx *ctx, float *dqkv, const float *dout, const float *qkv,
                          const float *out, const float *stats, float *scratch, int B, int T, int C,
                          int NH) {
    // dout is (B,T,C); dqkv (B,T,3C) += ...; out is not needed (the row sums come from P . dP)
    (void)out;
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    float *p = scratch, *ds = scratch + (size_t)CT_MIN(T, ATTENTION_BLOCK_ROWS) * T;
    for (int pair = 0; pair < B * NH; pair++) {
        int b = pair / NH, h = pair % NH;
        const float *q = qkv + (size_t)b * T * C3 + h * hs, *k = q + C, *v = q + 2 * C;
        float *dq = dqkv + (size_t)b * T * C3 + h * hs, *dk = dq + C, *dv = dq + 2 * C;
        const float *dy = dout + (size_t)b * T * C + h * hs;
        const float *saved = stats + (size_t)pair * 2 * T;
        for (int t0 = 0; t0 < T; t0 += ATTENTION_BLOCK_ROWS) {
            int t1 = CT_MIN(T, t0 + ATTENTION_BLOCK_ROWS), rows = t1 - t0, n = t1;
            const float *dy_block = dy + (size_t)t0 * C;
            block_probabilities(ctx, p, saved, NULL, q, k, C3, hs, t0, t1);
            ct_cpu_gemm(ctx, false, true, rows, n, hs, dy_block, C, v, C3, 0.0f, ds, n); /* dP */
            /* softmax backward, then the 1/sqrt(hs) scale; zero right of the diagonal, as P */
#pragma omp parallel for schedule(static)
            for (int r = 0; r < rows; r++) {
                int t = t0 + r;
                const float *prow = p + (size_t)r * n;
                float *row = ds + (size_t)r * n;
                for (int t2 = 0; t2 <= t; t2++)
                    row[t2] *= prow[t2];
                float pdp = sum_lanes(row, t + 1);
                for (int t2 = 0; t2 <= t; t2++)
                    row[t2] = (row[t2] - prow[t2] * pdp) * scale;
                for (int t2 = t + 1; t2 < n; t2++)
                    row[t2] = 0.0f;
            }
            ct_cpu_gemm(ctx, true, false, n, hs, rows, p, n, dy_block, C, 1.0f, dv, C3); /* dV */
            ct_cpu_gemm(ctx, false, false, rows, hs, n, ds, n, k, C3, 1.0f, dq + (size_t)t0 * C3,
                        C3); /* dQ */
            ct_cpu_gemm(ctx, true, false, n, hs, rows, ds, n, q + (size_t)t0 * C3, C3, 1.0f, dk,
                        C3); /* dK */
        }
    }
}
