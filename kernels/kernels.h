/*
 * kernels: the arithmetic of every op, per device, behind one table of function pointers.
 * Kernels take raw pointers and sizes, never a ct_tensor; model/ picks the table for a
 * tensor's device and calls through it. Backward kernels accumulate (+=) into their gradient
 * outputs, because a tensor used twice (a residual stream, the tied embedding) receives the
 * sum of its uses' gradients, and micro-batches accumulate into the same buffers.
 *
 * Shapes use B batch, T time, C channels, OC output channels, NH heads, V vocabulary.
 * Matrices are row-major; Linear weights are (OC, C) as in PyTorch and llm.c.
 *
 * Determinism: every kernel gives bitwise the same result for the same inputs and thread
 * count: static partitions, each output element owned by one thread, sums in a fixed order.
 */
#ifndef CT_KERNELS_H
#define CT_KERNELS_H

#include <stddef.h>
#include <stdint.h>

typedef struct ct_kernels {
    const char *name;

    /* out (N,OC) = inp (N,C) @ weight^T (OC,C) + bias (OC) [bias may be NULL] */
    void (*matmul_fwd)(float *out, const float *inp, const float *weight, const float *bias, int N,
                       int C, int OC);
    /* dinp (N,C) += dout @ weight; dweight (OC,C) += dout^T @ inp; dbias (OC) += sum_n dout.
     * Any of dinp, dweight, dbias may be NULL (not needed). */
    void (*matmul_bwd)(float *dinp, float *dweight, float *dbias, const float *dout,
                       const float *inp, const float *weight, int N, int C, int OC);

    /* out (N,C) = (inp - mean) * rstd * weight + bias per row; saves mean (N) and rstd (N). */
    void (*layernorm_fwd)(float *out, float *mean, float *rstd, const float *inp,
                          const float *weight, const float *bias, int N, int C, float eps);
    /* dinp (N,C), dweight and dbias (C) +=; any of them may be NULL (not needed). */
    void (*layernorm_bwd)(float *dinp, float *dweight, float *dbias, const float *dout,
                          const float *inp, const float *weight, const float *mean,
                          const float *rstd, int N, int C);

    /* GELU, tanh approximation, elementwise over n. */
    void (*gelu_fwd)(float *out, const float *inp, size_t n);
    void (*gelu_bwd)(float *dinp, const float *inp, const float *dout, size_t n);

    /* out (n) = a + b; backward is an identity on both inputs, done by add_inplace. */
    void (*add_fwd)(float *out, const float *a, const float *b, size_t n);
    /* y (n) += x */
    void (*add_inplace)(float *y, const float *x, size_t n);

    /* out (B,T,C) = wte[tokens] + wpe[t] */
    void (*embedding_fwd)(float *out, const int32_t *tokens, const float *wte, const float *wpe,
                          int B, int T, int C);
    /* dwte (V,C) += scatter of dout by token; dwpe (T,C) += sum over batch. Either may be NULL. */
    void (*embedding_bwd)(float *dwte, float *dwpe, const float *dout, const int32_t *tokens, int B,
                          int T, int C);

    /* Causal self-attention. qkv (B,T,3C) holds q, k, v per position (heads of hs = C/NH
     * channels each); out (B,T,C); att (B,NH,T,T) keeps the softmax probabilities for backward
     * (row t holds t+1 valid entries). scratch holds ct_kern_attention_scratch_floats floats. */
    void (*attention_fwd)(float *out, float *att, const float *qkv, float *scratch, int B, int T,
                          int C, int NH);
    /* dqkv (B,T,3C) += gradient of out given dout (B,T,C). */
    void (*attention_bwd)(float *dqkv, const float *dout, const float *qkv, const float *att,
                          float *scratch, int B, int T, int C, int NH);

    /* The tied LM head and mean cross-entropy, fused and processed in row chunks so the
     * (N,V) logits never exist whole. x (N,C), wte (V,C), targets (N). losses (N) receives each
     * row's loss. When dx/dwte are not NULL it also computes the gradients of
     * grad_scale * mean(losses): dx (N,C) += ..., dwte (V,C) += ... . scratch holds
     * chunk_rows * V floats. Targets < 0 are ignored (no loss, no gradient). */
    void (*lm_head_loss)(float *losses, float *dx, float *dwte, const float *x, const float *wte,
                         const int32_t *targets, int N, int C, int V, float grad_scale,
                         float *scratch, int chunk_rows);
    /* logits (N,V) = x (N,C) @ wte^T, for sampling and tests. */
    void (*lm_head_logits)(float *logits, const float *x, const float *wte, int N, int C, int V);

    /* AdamW on n elements: m, v moments; weight decay `decay` applied decoupled (p -= lr*decay*p);
     * the gradient is multiplied by grad_scale first (clipping). bias1/bias2 are 1 - beta^t. */
    void (*adamw)(float *param, const float *grad, float *m, float *v, size_t n, float lr,
                  float beta1, float beta2, float eps, float decay, float bias1, float bias2,
                  float grad_scale);
    /* sum of x[i]^2 in double, in a fixed order */
    double (*sum_squares)(const float *x, size_t n);
    /* x (n) *= scale */
    void (*scale)(float *x, size_t n, float scale);
} ct_kernels;

/* The CPU backend: OpenBLAS sgemm and OpenMP loops. */
const ct_kernels *ct_kern_cpu(void);

/* Threads the CPU kernels use (OpenMP loops and OpenBLAS); 0 = all cores. Call once before
 * training; changing it changes results in the last bits (summation order). */
void ct_kern_cpu_set_threads(int threads);
int ct_kern_cpu_threads(void);

/* GFLOP/s of an n x n x n sgemm on the CPU at the current thread count (best of reps). */
double ct_kern_cpu_sgemm_gflops(int n, int reps);

/* Rows per chunk of the fused LM head for vocabulary V: bounds the logits scratch. */
int ct_kern_lm_head_chunk_rows(int N, int V);

/* Scratch the attention kernels need: a transposed head and two rows per (batch, head). */
size_t ct_kern_attention_scratch_floats(int B, int T, int C, int NH);

/* What the CUDA runtime reports; *device_count = 0 and a reason in `info` where there is no
 * CUDA build or no device. Always available: the CPU build answers "built without CUDA". */
void ct_kern_cuda_describe(char *info, size_t info_bytes, int *device_count);

#endif
