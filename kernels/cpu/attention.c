/*
 * Causal multi-head self-attention, one (batch, head) pair per task, pairs split statically
 * across threads. Every inner loop runs along a contiguous axis with no reduction, so it
 * vectorises without reassociating sums: keys (and, in backward, values) are first transposed
 * to (hs, T), which turns the q.k dot products into axpy rows. The few reductions that remain
 * (softmax max and sum) use eight fixed lanes, so results do not depend on the thread count.
 */
#include "kernels/cpu/cpu_internal.h"

#include <math.h>

size_t ct_cpu_attention_scratch_floats(const ct_kern_ctx *ctx, int B, int T, int C, int NH) {
    (void)ctx;
    int hs = C / NH;
    return (size_t)B * NH * ((size_t)hs * T + 2 * (size_t)T);
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

/* dst (hs,T) = the hs channels at `src` of each of T rows spaced `stride` apart, transposed. */
static void transpose_head(float *dst, const float *src, int T, int hs, int stride) {
    for (int t = 0; t < T; t++)
        for (int i = 0; i < hs; i++)
            dst[(size_t)i * T + t] = src[(size_t)t * stride + i];
}

/* row[0..n) = sum_i a[i] * cols[i*T + 0..n): a dot product with every one of n columns. */
static void dot_rows(float *row, const float *a, const float *cols, int hs, int T, int n) {
    for (int t2 = 0; t2 < n; t2++)
        row[t2] = 0.0f;
    for (int i = 0; i < hs; i++) {
        float ai = a[i];
        const float *col = cols + (size_t)i * T;
        for (int t2 = 0; t2 < n; t2++)
            row[t2] += ai * col[t2];
    }
}

void ct_cpu_attention_fwd(const ct_kern_ctx *ctx, float *out, float *att, const float *qkv,
                          float *scratch, int B, int T, int C, int NH) {
    (void)ctx;
    // qkv is (B,T,3C), out (B,T,C), att (B,NH,T,T)
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    size_t per_pair = (size_t)hs * T + 2 * (size_t)T;
#pragma omp parallel for schedule(static)
    for (int pair = 0; pair < B * NH; pair++) {
        int b = pair / NH, h = pair % NH;
        float *kt = scratch + (size_t)pair * per_pair;
        const float *q = qkv + (size_t)b * T * C3 + h * hs;
        transpose_head(kt, q + C, T, hs, C3);
        for (int t = 0; t < T; t++) {
            float *p = att + ((size_t)pair * T + t) * T;
            dot_rows(p, q + (size_t)t * C3, kt, hs, T, t + 1);
            for (int t2 = 0; t2 <= t; t2++)
                p[t2] *= scale;
            float m = ct_cpu_max_lanes(p, t + 1);
            for (int t2 = 0; t2 <= t; t2++)
                p[t2] = ct_cpu_exp_neg(p[t2] - m);
            float inv = 1.0f / sum_lanes(p, t + 1);
            for (int t2 = 0; t2 <= t; t2++)
                p[t2] *= inv;
            for (int t2 = t + 1; t2 < T; t2++)
                p[t2] = 0.0f;
            float *o = out + ((size_t)b * T + t) * C + h * hs;
            for (int i = 0; i < hs; i++)
                o[i] = 0.0f;
            for (int t2 = 0; t2 <= t; t2++) {
                const float *v = qkv + ((size_t)b * T + t2) * C3 + 2 * C + h * hs;
                float pt = p[t2];
                for (int i = 0; i < hs; i++)
                    o[i] += pt * v[i];
            }
        }
    }
}

void ct_cpu_attention_bwd(const ct_kern_ctx *ctx, float *dqkv, const float *dout, const float *qkv,
                          const float *att, float *scratch, int B, int T, int C, int NH) {
    (void)ctx;
    // dout is (B,T,C); dqkv (B,T,3C) += ...
    int hs = C / NH, C3 = 3 * C;
    float scale = 1.0f / sqrtf((float)hs);
    size_t per_pair = (size_t)hs * T + 2 * (size_t)T;
#pragma omp parallel for schedule(static)
    for (int pair = 0; pair < B * NH; pair++) {
        int b = pair / NH, h = pair % NH;
        float *vt = scratch + (size_t)pair * per_pair;
        float *dp = vt + (size_t)hs * T;
        const float *base = qkv + (size_t)b * T * C3 + h * hs;
        float *dbase = dqkv + (size_t)b * T * C3 + h * hs;
        transpose_head(vt, base + 2 * C, T, hs, C3);
        for (int t = 0; t < T; t++) {
            const float *p = att + ((size_t)pair * T + t) * T;
            const float *dy = dout + ((size_t)b * T + t) * C + h * hs;
            /* d(values) and d(probabilities) */
            for (int t2 = 0; t2 <= t; t2++) {
                float *dv = dbase + (size_t)t2 * C3 + 2 * C;
                float pt = p[t2];
                for (int i = 0; i < hs; i++)
                    dv[i] += pt * dy[i];
            }
            dot_rows(dp, dy, vt, hs, T, t + 1);
            /* softmax backward: ds = p * (dp - sum(p * dp)), then the 1/sqrt(hs) scale */
            float *ds = dp + T;
            for (int t2 = 0; t2 <= t; t2++)
                ds[t2] = p[t2] * dp[t2];
            float pdp = sum_lanes(ds, t + 1);
            for (int t2 = 0; t2 <= t; t2++)
                ds[t2] = (ds[t2] - p[t2] * pdp) * scale;
            /* d(query) of row t and d(keys) of rows 0..t */
            const float *q = base + (size_t)t * C3;
            float *dq = dbase + (size_t)t * C3;
            for (int t2 = 0; t2 <= t; t2++) {
                const float *k = base + (size_t)t2 * C3 + C;
                float *dk = dbase + (size_t)t2 * C3 + C;
                float d = ds[t2];
                for (int i = 0; i < hs; i++) {
                    dq[i] += d * k[i];
                    dk[i] += d * q[i];
                }
            }
        }
    }
}
