/*
 * Shared by the CPU kernels only: the kernel entry points the table in cpu.c collects (each
 * takes the table's context first and ignores it: the CPU needs none), and a
 * vectorisable exp. glibc's expf is a scalar call that gcc will not vectorise without
 * -ffast-math (which we never use), and the LM head takes 50M exponentials per step at
 * vocabulary 50257, so exp is written here as plain arithmetic the compiler turns into AVX2.
 */
#ifndef CT_KERNELS_CPU_INTERNAL_H
#define CT_KERNELS_CPU_INTERNAL_H

#include "kernels/kernels.h"

#include <math.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/* exp(x) for x <= 0 within 2 ulp (inputs of softmax after subtracting the max): 2^n * p(r),
 * with r = x - n ln2 in [-ln2/2, ln2/2] and a degree-6 polynomial for e^r. Below -87 the
 * result is 0. Pure arithmetic and bit moves, so loops over it vectorise. */
static inline float ct_cpu_exp_neg(float x) {
    x = x < -87.0f ? -87.0f : x;
    /* Round to nearest by adding and subtracting 1.5 * 2^23: plain adds, which vectorise. */
    float n = (x * 1.44269504088896341f + 12582912.0f) - 12582912.0f;
    float r = x - n * 0.693145751953125f; /* ln2 split in two for an exact product */
    r = r - n * 1.42860682030941723212e-6f;
    float p = 1.0f / 720.0f;
    p = p * r + 1.0f / 120.0f;
    p = p * r + 1.0f / 24.0f;
    p = p * r + 1.0f / 6.0f;
    p = p * r + 0.5f;
    p = p * r + 1.0f;
    p = p * r + 1.0f;
    int32_t bits = ((int32_t)n + 127) << 23;
    float scale;
    memcpy(&scale, &bits, sizeof(scale));
    return p * scale;
}

/* Max of x[0..n) in eight fixed lanes: vectorises, and the order does not depend on threads. */
static inline float ct_cpu_max_lanes(const float *x, int n) {
    float lane[8];
    for (int j = 0; j < 8; j++)
        lane[j] = -INFINITY;
    int i = 0;
    for (; i + 8 <= n; i += 8)
        for (int j = 0; j < 8; j++)
            lane[j] = x[i + j] > lane[j] ? x[i + j] : lane[j];
    for (; i < n; i++)
        lane[0] = x[i] > lane[0] ? x[i] : lane[0];
    float m = lane[0];
    for (int j = 1; j < 8; j++)
        m = lane[j] > m ? lane[j] : m;
    return m;
}

/* The eight lanes of a sum, added pairwise in a fixed order. */
static inline float ct_cpu_reduce_lanes(const float lane[8]) {
    return ((lane[0] + lane[1]) + (lane[2] + lane[3])) +
           ((lane[4] + lane[5]) + (lane[6] + lane[7]));
}

/* C (M,N) = op(A) (M,K) @ op(B) (K,N) + beta * C, row-major, on the library of ctx->cpu_blas
 * (gemm.c). A is (M,K) with leading dimension lda, or (K,M) when trans_a; B is (K,N) with ldb,
 * or (N,K) when trans_b; C has leading dimension ldc. beta is 0 or 1 (alpha is always 1). */
void ct_cpu_gemm(const ct_kern_ctx *ctx, bool trans_a, bool trans_b, int M, int N, int K,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc);
/* The same with bf16 A and B (C f32, products summed in f32), on oneDNN (AMX where the CPU
 * has it); CT_ERR_INVALID where oneDNN has no bf16 matmul for this CPU. */
ct_status ct_cpu_gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, const uint16_t *A,
                           int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc);

/* dbias (OC) += the column sums of dout (N,OC), rows in order (deterministic). */
void ct_cpu_bias_grad(float *dbias, const float *dout, int N, int OC);
/* The LM head's d(loss)/d(logit) factor: grad_scale over the rows with a target. */
float ct_cpu_lm_head_coef(const int32_t *targets, int N, float grad_scale);
/* Per row of logits (rows,V): the loss into losses, and with want_grad the row replaced by
 * coef * (softmax - onehot(target)); rows whose target is < 0 get loss 0 and zeros. */
void ct_cpu_lm_head_rows(float *logits, float *losses, const int32_t *targets, int rows, int V,
                         float coef, bool want_grad);

void *ct_cpu_device_alloc(const ct_kern_ctx *ctx, ct_mem_category category, size_t bytes);
void ct_cpu_device_free(const ct_kern_ctx *ctx, ct_mem_category category, void *ptr, size_t bytes);
ct_status ct_cpu_memset_bytes(const ct_kern_ctx *ctx, void *dst, int value, size_t bytes);
ct_status ct_cpu_copy(const ct_kern_ctx *ctx, void *dst, const void *src, size_t bytes,
                      ct_copy_kind kind);
ct_status ct_cpu_cast(const ct_kern_ctx *ctx, void *dst, ct_dtype dst_dtype, const void *src,
                      ct_dtype src_dtype, size_t n);
size_t ct_cpu_attention_stats_floats(const ct_kern_ctx *ctx, int B, int T, int C, int NH);
size_t ct_cpu_attention_scratch_floats(const ct_kern_ctx *ctx, int B, int T, int C, int NH);
int ct_cpu_lm_head_chunk_rows(const ct_kern_ctx *ctx, int N, int V);
void ct_cpu_matmul_fwd(const ct_kern_ctx *ctx, float *out, const float *inp, const float *weight,
                       const float *bias, int N, int C, int OC);
void ct_cpu_matmul_bwd(const ct_kern_ctx *ctx, float *dinp, float *dweight, float *dbias,
                       const float *dout, const float *inp, const float *weight, int N, int C,
                       int OC);
void ct_cpu_layernorm_fwd(const ct_kern_ctx *ctx, float *out, float *mean, float *rstd,
                          const float *inp, const float *weight, const float *bias, int N, int C,
                          float eps);
void ct_cpu_layernorm_bwd(const ct_kern_ctx *ctx, float *dinp, float *dweight, float *dbias,
                          const float *dout, const float *inp, const float *weight,
                          const float *mean, const float *rstd, int N, int C);
void ct_cpu_gelu_fwd(const ct_kern_ctx *ctx, float *out, const float *inp, size_t n);
void ct_cpu_gelu_bwd(const ct_kern_ctx *ctx, float *dinp, const float *inp, const float *dout,
                     size_t n);
void ct_cpu_add_fwd(const ct_kern_ctx *ctx, float *out, const float *a, const float *b, size_t n);
void ct_cpu_add_inplace(const ct_kern_ctx *ctx, float *y, const float *x, size_t n);
void ct_cpu_embedding_fwd(const ct_kern_ctx *ctx, float *out, const int32_t *tokens,
                          const float *wte, const float *wpe, int B, int T, int C);
void ct_cpu_embedding_bwd(const ct_kern_ctx *ctx, float *dwte, float *dwpe, const float *dout,
                          const int32_t *tokens, int B, int T, int C);
void ct_cpu_attention_fwd(const ct_kern_ctx *ctx, float *out, float *att, const float *qkv,
                          float *scratch, int B, int T, int C, int NH);
void ct_cpu_attention_bwd(const ct_kern_ctx *ctx, float *dqkv, const float *dout, const float *qkv,
                          const float *out, const float *att, float *scratch, int B, int T, int C,
                          int NH);
void ct_cpu_lm_head_loss(const ct_kern_ctx *ctx, float *losses, float *dx, float *dwte,
                         const float *x, const float *wte, const int32_t *targets, int N, int C,
                         int V, float grad_scale, float *scratch, int chunk_rows);
void ct_cpu_lm_head_logits(const ct_kern_ctx *ctx, float *logits, const float *x, const float *wte,
                           int N, int C, int V);
void ct_cpu_loss_mean(const ct_kern_ctx *ctx, float *loss, const float *losses,
                      const int32_t *targets, int N);
size_t ct_cpu_half_workspace_bytes(const ct_kern_ctx *ctx, ct_dtype dtype, int N, int C, int OC,
                                   int chunk_rows);
ct_status ct_cpu_matmul_fwd_half(const ct_kern_ctx *ctx, float *out, const float *inp,
                                 const void *weight, const void *bias, ct_dtype dtype, int N, int C,
                                 int OC);
ct_status ct_cpu_matmul_bwd_half(const ct_kern_ctx *ctx, float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp, const void *weight,
                                 ct_dtype dtype, int N, int C, int OC);
ct_status ct_cpu_embedding_fwd_half(const ct_kern_ctx *ctx, float *out, const int32_t *tokens,
                                    const void *wte, const void *wpe, ct_dtype dtype, int B, int T,
                                    int C);
ct_status ct_cpu_lm_head_loss_half(const ct_kern_ctx *ctx, float *losses, float *dx, float *dwte,
                                   const float *x, const void *wte, ct_dtype dtype,
                                   const int32_t *targets, int N, int C, int V, float grad_scale,
                                   float *scratch, int chunk_rows);
ct_status ct_cpu_lm_head_logits_half(const ct_kern_ctx *ctx, float *logits, const float *x,
                                     const void *wte, ct_dtype dtype, int N, int C, int V);
void ct_cpu_adamw(const ct_kern_ctx *ctx, float *param, const float *grad, float *m, float *v,
                  size_t n, float lr, float beta1, float beta2, float eps, float decay, float bias1,
                  float bias2, float grad_scale);
double ct_cpu_sum_squares(const ct_kern_ctx *ctx, const float *x, size_t n);
void ct_cpu_scale(const ct_kern_ctx *ctx, float *x, size_t n, float scale);

#endif
