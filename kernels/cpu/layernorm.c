/*
 * LayerNorm over the last dimension. Forward saves the mean and 1/std of each row. Backward's
 * weight and bias gradients are column sums over rows: threads own column blocks and walk
 * rows in order (deterministic); the input gradient is per row and parallel over rows.
 */
#include "kernels/cpu/cpu_internal.h"

void ct_cpu_layernorm_fwd(const ct_kern_ctx *ctx, float *out, float *mean, float *rstd,
                          const float *inp, const float *weight, const float *bias, int N, int C,
                          float eps) {
    (void)ctx;
    // inp, out are (N,C); mean, rstd are (N)
#pragma omp parallel for schedule(static)
    for (int n = 0; n < N; n++) {
        const float *x = inp + (size_t)n * C;
        double sum = 0.0, sumsq = 0.0;
        for (int i = 0; i < C; i++)
            sum += x[i];
        float m = (float)(sum / C);
        for (int i = 0; i < C; i++) {
            double d = x[i] - m;
            sumsq += d * d;
        }
        float s = (float)(1.0 / sqrt(sumsq / C + eps));
        float *y = out + (size_t)n * C;
        for (int i = 0; i < C; i++)
            y[i] = (x[i] - m) * s * weight[i] + bias[i];
        mean[n] = m;
        rstd[n] = s;
    }
}

void ct_cpu_layernorm_bwd(const ct_kern_ctx *ctx, float *dinp, float *dweight, float *dbias,
                          const float *dout, const float *inp, const float *weight,
                          const float *mean, const float *rstd, int N, int C) {
    (void)ctx;
    // dinp (N,C) += ...; dweight, dbias (C) += column sums; any of the three may be NULL
    if (dinp) {
#pragma omp parallel for schedule(static)
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
            float m = mean[n], s = rstd[n];
            /* dx = s * (g - mean(g) - xhat * mean(g * xhat)) with g = dy * weight */
            float g_mean = 0.0f, gx_mean = 0.0f;
            for (int i = 0; i < C; i++) {
                float g = dy[i] * weight[i];
                g_mean += g;
                gx_mean += g * (x[i] - m) * s;
            }
            g_mean /= C;
            gx_mean /= C;
            float *dx = dinp + (size_t)n * C;
            for (int i = 0; i < C; i++) {
                float xhat = (x[i] - m) * s;
                dx[i] += s * (dy[i] * weight[i] - g_mean - xhat * gx_mean);
            }
        }
    }
    if (!dweight && !dbias) return;
    int blocks = (C + 63) / 64;
#pragma omp parallel for schedule(static)
    for (int blk = 0; blk < blocks; blk++) {
        int lo = blk * 64, hi = lo + 64 < C ? lo + 64 : C;
        float dw[64], db[64];
        for (int i = lo; i < hi; i++)
            dw[i - lo] = db[i - lo] = 0.0f;
        for (int n = 0; n < N; n++) {
            const float *x = inp + (size_t)n * C, *dy = dout + (size_t)n * C;
            float m = mean[n], s = rstd[n];
            for (int i = lo; i < hi; i++) {
                dw[i - lo] += dy[i] * (x[i] - m) * s;
                db[i - lo] += dy[i];
            }
        }
        for (int i = lo; i < hi; i++) {
            if (dweight) dweight[i] += dw[i - lo];
            if (dbias) dbias[i] += db[i - lo];
        }
    }
}
