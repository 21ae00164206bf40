/*
 * Token + position embedding. The backward scatter into d(wte) has colliding rows (repeated
 * tokens), so threads split the channels, not the tokens: each owns a block of columns and
 * visits every token in order, which keeps the sums deterministic without atomics.
 */
#include "kernels/cpu/cpu_internal.h"

void ct_cpu_embedding_fwd(const ct_kern_ctx *ctx, float *out, const int32_t *tokens,
                          const float *wte, const float *wpe, int B, int T, int C) {
    (void)ctx;
    // tokens (B,T), wte (V,C), wpe (maxT,C), out (B,T,C)
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        const float *te = wte + (size_t)tokens[bt] * C;
        const float *pe = wpe + (size_t)(bt % T) * C;
        float *o = out + (size_t)bt * C;
        for (int i = 0; i < C; i++)
            o[i] = te[i] + pe[i];
    }
}

void ct_cpu_embedding_bwd(const ct_kern_ctx *ctx, float *dwte, float *dwpe, const float *dout,
                          const int32_t *tokens, int B, int T, int C) {
    (void)ctx;
    int blocks = (C + 31) / 32;
    if (dwte) {
#pragma omp parallel for schedule(static)
        for (int blk = 0; blk < blocks; blk++) {
            int lo = blk * 32, hi = lo + 32 < C ? lo + 32 : C;
            for (int bt = 0; bt < B * T; bt++) {
                float *dst = dwte + (size_t)tokens[bt] * C;
                const float *src = dout + (size_t)bt * C;
                for (int i = lo; i < hi; i++)
                    dst[i] += src[i];
            }
        }
    }
    if (dwpe) {
#pragma omp parallel for schedule(static)
        for (int t = 0; t < T; t++) {
            float *dst = dwpe + (size_t)t * C;
            for (int b = 0; b < B; b++) {
                const float *src = dout + ((size_t)b * T + t) * C;
                for (int i = 0; i < C; i++)
                    dst[i] += src[i];
            }
        }
    }
}
