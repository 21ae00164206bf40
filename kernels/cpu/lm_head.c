/*
 * The tied LM head fused with softmax cross-entropy. At vocabulary 50257 the logits of a
 * 1024-token batch are 206 MB; they never exist whole. Rows are processed in chunks: one GEMM
 * for the chunk's logits, then per row the max, exponentials, loss and d(logits) in place,
 * then the chunk's contributions to d(x) and d(wte) as two more GEMMs. The whole head costs
 * three GEMMs and two passes over each chunk of logits. The mean of the rows' losses is
 * a kernel too (loss_mean), so the loss is computed where the losses are.
 */
#include "kernels/cpu/cpu_internal.h"

#include <math.h>

/* x[i] = exp(x[i] - m) in place; returns the sum (eight lanes, then pairwise). */
static float exp_and_sum(float *x, int n, float m) {
    float lane[8] = {0};
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++) {
            x[i + j] = ct_cpu_exp_neg(x[i + j] - m);
            lane[j] += x[i + j];
        }
    for (; i < n; i++) {
        x[i] = ct_cpu_exp_neg(x[i] - m);
        lane[0] += x[i];
    }
    return ct_cpu_reduce_lanes(lane);
}

int ct_cpu_lm_head_chunk_rows(const ct_kern_ctx *ctx, int N, int V) {
    (void)ctx;
    /* About 32 MB of logits per chunk: large enough for efficient GEMMs (the d(wte) product's
     * inner dimension is the chunk's row count), small enough to stay out of the way. */
    long rows = (32L << 20) / (4L * (V > 0 ? V : 1));
    rows = rows < 16 ? 16 : rows;
    rows = (rows + 15) / 16 * 16;
    return (int)(rows < N ? rows : N);
}

void ct_cpu_lm_head_logits(const ct_kern_ctx *ctx, float *logits, const float *x, const float *wte,
                           int N, int C, int V) {
    // x (N,C), wte (V,C), logits (N,V)
    ct_cpu_gemm(ctx, false, true, N, V, C, x, C, wte, C, 0.0f, logits, V);
}

float ct_cpu_lm_head_coef(const int32_t *targets, int N, float grad_scale) {
    int valid = 0;
    for (int n = 0; n < N; n++)
        valid += targets[n] >= 0;
    return valid > 0 ? grad_scale / (float)valid : 0.0f;
}

void ct_cpu_lm_head_rows(float *logits, float *losses, const int32_t *targets, int rows, int V,
                         float coef, bool want_grad) {
#pragma omp parallel for schedule(static)
    for (int r = 0; r < rows; r++) {
        float *row = logits + (size_t)r * V;
        int target = targets[r];
        if (target < 0) {
            losses[r] = 0.0f;
            if (want_grad)
                for (int j = 0; j < V; j++)
                    row[j] = 0.0f;
            continue;
        }
        float target_logit = row[target];
        float m = ct_cpu_max_lanes(row, V);
        float sum = exp_and_sum(row, V, m);
        losses[r] = (float)(log((double)sum) + m - target_logit);
        if (want_grad) {
            /* d(loss)/d(logit_j) = coef * (softmax_j - [j == target]) */
            float s = coef / sum;
            for (int j = 0; j < V; j++)
                row[j] *= s;
            row[target] -= coef;
        }
    }
}

void ct_cpu_lm_head_loss(const ct_kern_ctx *ctx, float *losses, float *dx, float *dwte,
                         const float *x, const float *wte, const int32_t *targets, int N, int C,
                         int V, float grad_scale, float *scratch, int chunk_rows) {
    float coef = ct_cpu_lm_head_coef(targets, N, grad_scale);
    bool want_grad = dx != NULL || dwte != NULL;
    for (int r0 = 0; r0 < N; r0 += chunk_rows) {
        int rows = N - r0 < chunk_rows ? N - r0 : chunk_rows;
        const float *xc = x + (size_t)r0 * C;
        ct_cpu_lm_head_logits(ctx, scratch, xc, wte, rows, C, V);
        ct_cpu_lm_head_rows(scratch, losses + r0, targets + r0, rows, V, coef, want_grad);
        if (dx)
            ct_cpu_gemm(ctx, false, false, rows, C, V, scratch, V, wte, C, 1.0f,
                        dx + (size_t)r0 * C, C);
        if (dwte) ct_cpu_gemm(ctx, true, false, V, C, rows, scratch, V, xc, C, 1.0f, dwte, C);
    }
}

void ct_cpu_loss_mean(const ct_kern_ctx *ctx, float *loss, const float *losses,
                      const int32_t *targets, int N) {
    (void)ctx;
    /* The mean in double, in index order: deterministic and independent of threads. */
    double sum = 0.0;
    int valid = 0;
    for (int n = 0; n < N; n++) {
        if (targets[n] < 0) continue;
        sum += losses[n];
        valid++;
    }
    *loss = valid ? (float)(sum / valid) : 0.0f;
}
