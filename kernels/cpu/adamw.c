/*
 * AdamW over a contiguous range of a flat buffer: one memory-bound pass reading the parameter,
 * gradient and both moments once and writing three of them back. Decoupled weight decay, as
 * PyTorch's AdamW and llm.c: p -= lr * (m_hat / (sqrt(v_hat) + eps) + decay * p).
 */
#include "kernels/cpu/cpu_internal.h"

void ct_cpu_adamw(const ct_kern_ctx *ctx, float *param, const float *grad, float *m, float *v,
                  size_t n, float lr, float beta1, float beta2, float eps, float decay, float bias1,
                  float bias2, float grad_scale) {
    (void)ctx;
    float inv_bias1 = 1.0f / bias1, inv_bias2 = 1.0f / bias2;
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float g = grad[i] * grad_scale;
        float mi = beta1 * m[i] + (1.0f - beta1) * g;
        float vi = beta2 * v[i] + (1.0f - beta2) * g * g;
        m[i] = mi;
        v[i] = vi;
        float update = (mi * inv_bias1) / (sqrtf(vi * inv_bias2) + eps);
        param[i] -= lr * (update + decay * param[i]);
    }
}
