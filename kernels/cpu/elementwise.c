/*
 * Elementwise kernels: GELU (tanh approximation, as GPT-2), residual adds, scaling and the sum
 * of squares for the gradient norm. Memory-bound loops: one pass each, split statically.
 */
#include "kernels/cpu/cpu_internal.h"

#define GELU_SCALE 0.7978845608028654f /* sqrt(2/pi) */

/* tanh(u) = 1 - 2 / (exp(2u) + 1), through the vectorisable exp on a non-positive argument. */
static inline float tanh_vec(float u) {
    float a = u < 0 ? -u : u;
    float e = ct_cpu_exp_neg(-2.0f * a); /* in (0, 1] */
    float t = (1.0f - e) / (1.0f + e);
    return u < 0 ? -t : t;
}

void ct_cpu_gelu_fwd(const ct_kern_ctx *ctx, float *out, const float *inp, size_t n) {
    (void)ctx;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        out[i] = 0.5f * x * (1.0f + tanh_vec(u));
    }
}

void ct_cpu_gelu_bwd(const ct_kern_ctx *ctx, float *dinp, const float *inp, const float *dout,
                     size_t n) {
    (void)ctx;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = inp[i];
        float u = GELU_SCALE * (x + 0.044715f * x * x * x);
        float t = tanh_vec(u);
        float sech2 = 1.0f - t * t;
        float local =
            0.5f * (1.0f + t) + 0.5f * x * sech2 * GELU_SCALE * (1.0f + 3.0f * 0.044715f * x * x);
        dinp[i] += local * dout[i];
    }
}

void ct_cpu_add_fwd(const ct_kern_ctx *ctx, float *out, const float *a, const float *b, size_t n) {
    (void)ctx;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        out[i] = a[i] + b[i];
}

void ct_cpu_add_inplace(const ct_kern_ctx *ctx, float *y, const float *x, size_t n) {
    (void)ctx;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        y[i] += x[i];
}

void ct_cpu_scale(const ct_kern_ctx *ctx, float *x, size_t n, float scale) {
    (void)ctx;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        x[i] *= scale;
}

double ct_cpu_sum_squares(const ct_kern_ctx *ctx, const float *x, size_t n) {
    (void)ctx;
    /* Fixed blocks summed in index order, then the block sums in order: the result does not
     * depend on the thread count. */
    enum { BLOCK = 4096 };
    size_t blocks = (n + BLOCK - 1) / BLOCK;
    double total = 0.0;
    double partial[64];
    for (size_t base = 0; base < blocks; base += 64) {
        size_t count = blocks - base < 64 ? blocks - base : 64;
#pragma omp parallel for schedule(static)
        for (size_t b = 0; b < count; b++) {
            size_t lo = (base + b) * BLOCK, hi = lo + BLOCK < n ? lo + BLOCK : n;
            double acc = 0.0;
            for (size_t i = lo; i < hi; i++)
                acc += (double)x[i] * x[i];
            partial[b] = acc;
        }
        for (size_t b = 0; b < count; b++)
            total += partial[b];
    }
    return total;
}
