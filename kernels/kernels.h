/*
 * kernels: the arithmetic of every op, per device, behind one table of function pointers.
 * Kernels take raw pointers and sizes, never a ct_tensor; model/ calls through the table its
 * tape was given. Backward kernels accumulate (+=) into their gradient outputs, because a
 * tensor used twice (a residual stream, the tied embedding) receives the sum of its uses'
 * gradients, and micro-batches accumulate into the same buffers.
 *
 * The table is chosen once, from device.type, by ct_kernels_for_device, and passed down to
 * everything that touches model memory (the tape, shard/, the trainer); nothing else names a
 * backend. Besides the arithmetic it holds what code above it needs in order never to touch
 * device memory from the host: memset, copy (host <-> device, device <-> device), cast between
 * floating-point types, the scratch sizes its kernels want, and the mean of the per-row losses.
 *
 * The context: every entry takes the table's ct_kern_ctx first. A CUDA table is made per device
 * with its stream, its cuBLASLt (and cuDNN) handles and a workspace filled in, and its entries
 * launch on that stream with those handles; the CPU tables' context names only the library of
 * their GEMMs (one table per library, so tests can hold both), which their GEMMs read. A context
 * per table, passed to every call, rather than globals, keeps two tables (two streams, two devices)
 * apart, and lets one table be a const static (CPU) or a per-device instance (CUDA) behind the same
 * call sites: `k->gelu_fwd(&k->ctx, out, inp, n)`.
 *
 * Shapes use B batch, T time, C channels, OC output channels, NH heads, V vocabulary.
 * Matrices are row-major; Linear weights are (OC, C) as in PyTorch and llm.c.
 *
 * Determinism: every kernel gives bitwise the same result for the same inputs and thread
 * count: static partitions, each output element owned by one thread, sums in a fixed order.
 */
#ifndef CT_KERNELS_H
#define CT_KERNELS_H

#include "common/common.h"

#include <stddef.h>
#include <stdint.h>

/* Where memory lives and kernels run. */
typedef enum { CT_DEVICE_CPU = 0, CT_DEVICE_CUDA } ct_device;

/* Element types of tensors (model/), of the cast entry and of what shard/ communicates. */
typedef enum { CT_F32 = 0, CT_BF16, CT_F16, CT_I32 } ct_dtype;

/* Bytes per element: 4 (f32, i32) or 2 (bf16, f16). */
size_t ct_dtype_size(ct_dtype dtype);
/* "f32", "bf16", "f16", "i32" (messages). */
const char *ct_dtype_name(ct_dtype dtype);

/* Which library runs the CPU backend's GEMMs (device.blas). */
typedef enum { CT_BLAS_OPENBLAS = 0, CT_BLAS_ONEDNN } ct_blas;

/* How the CPU backend runs ops on bf16/f16 parameters (device.half_kernels): GEMMs on
 * oneDNN's bf16 matmul (AMX where the CPU has it), or weights widened to f32 (any CPU). */
typedef enum { CT_HALF_PORTABLE = 0, CT_HALF_NATIVE } ct_half_path;

/* What a backend needs on every call; NULL (and 0) fields on the CPU but cpu_blas, cpu_half. */
typedef struct {
    ct_device device;
    ct_blas cpu_blas;       /* the CPU GEMMs' library; OPENBLAS (unused) on CUDA */
    ct_half_path cpu_half;  /* the CPU's path for half parameters; unused on CUDA */
    int device_index;       /* which GPU (CUDA); 0 on the CPU */
    void *stream;           /* cudaStream_t every entry is ordered on */
    void *blas;             /* cublasLtHandle_t */
    void *dnn;              /* cudnnHandle_t (when cuDNN is found) */
    void *workspace;        /* device scratch for library calls (cuBLASLt's workspace) */
    size_t workspace_bytes; /* size of `workspace` */
} ct_kern_ctx;

/* Directions of the copy entry. "Device" is the memory of the table's device: on the CPU all
 * three are the same memcpy. */
typedef enum {
    CT_COPY_HOST_TO_DEVICE = 0,
    CT_COPY_DEVICE_TO_HOST,
    CT_COPY_DEVICE_TO_DEVICE
} ct_copy_kind;

typedef struct ct_kernels {
    const char *name;
    ct_kern_ctx ctx; /* passed as the first argument of every entry */

    /* ---- memory: what code above kernels/ uses instead of malloc, memset and memcpy on device
     * data. device_alloc returns zero-filled, 64-byte aligned memory of the table's device,
     * counted under `category` (ct_mem_stats), or NULL with an error recorded; device_free takes
     * the same category and size (NULL is ignored). Model state, gathered units, communication
     * buffers and the tape's data arena come from here; nothing else allocates device memory,
     * and a warm step allocates nothing. */
    void *(*device_alloc)(const ct_kern_ctx *ctx, ct_mem_category category, size_t bytes);
    void (*device_free)(const ct_kern_ctx *ctx, ct_mem_category category, void *ptr, size_t bytes);

    /* The rest of memory's entries.
     * Both are complete, for later entries on the same context, when they return; a copy to
     * the host is complete for the host too. */

    /* dst (bytes) = value, byte by byte */
    ct_status (*memset_bytes)(const ct_kern_ctx *ctx, void *dst, int value, size_t bytes);
    /* dst (bytes) = src (bytes); the buffers do not overlap */
    ct_status (*copy)(const ct_kern_ctx *ctx, void *dst, const void *src, size_t bytes,
                      ct_copy_kind kind);
    /* dst (n, dst_dtype) = src (n, src_dtype) for f32, bf16, f16 in any direction (the same
     * type copies): to bf16 and f16 rounding to nearest, ties to even; f16 keeps IEEE
     * subnormals, overflows to infinity; a NaN stays a (quiet) NaN. Other types fail. */
    ct_status (*cast)(const ct_kern_ctx *ctx, void *dst, ct_dtype dst_dtype, const void *src,
                      ct_dtype src_dtype, size_t n);

    /* ---- sizes the kernels want from their callers */

    /* Floats of the statistics attention_fwd saves for attention_bwd, per (B,T,C,NH): a few per
     * (batch, head, row), whatever the backend needs to recompute that row's softmax exactly
     * (never the T x T probabilities: backward recomputes them block by block, flash-style). */
    size_t (*attention_stats_floats)(const ct_kern_ctx *ctx, int B, int T, int C, int NH);
    /* Floats of scratch one attention_fwd or attention_bwd call needs for (B,T,C,NH); it grows
     * with T, not T^2 (blocks of query rows against the keys they see). */
    size_t (*attention_scratch_floats)(const ct_kern_ctx *ctx, int B, int T, int C, int NH);
    /* Rows per chunk of the fused LM head for N rows and vocabulary V (bounds its scratch). */
    int (*lm_head_chunk_rows)(const ct_kern_ctx *ctx, int N, int V);

    /* ---- arithmetic */

    /* out (N,OC) = inp (N,C) @ weight^T (OC,C) + bias (OC) [bias may be NULL] */
    void (*matmul_fwd)(const ct_kern_ctx *ctx, float *out, const float *inp, const float *weight,
                       const float *bias, int N, int C, int OC);
    /* dinp (N,C) += dout @ weight; dweight (OC,C) += dout^T @ inp; dbias (OC) += sum_n dout.
     * Any of dinp, dweight, dbias may be NULL (not needed). */
    void (*matmul_bwd)(const ct_kern_ctx *ctx, float *dinp, float *dweight, float *dbias,
                       const float *dout, const float *inp, const float *weight, int N, int C,
                       int OC);

    /* out (N,C) = (inp - mean) * rstd * weight + bias per row; saves mean (N) and rstd (N). */
    void (*layernorm_fwd)(const ct_kern_ctx *ctx, float *out, float *mean, float *rstd,
                          const float *inp, const float *weight, const float *bias, int N, int C,
                          float eps);
    /* dinp (N,C), dweight and dbias (C) +=; any of them may be NULL (not needed). */
    void (*layernorm_bwd)(const ct_kern_ctx *ctx, float *dinp, float *dweight, float *dbias,
                          const float *dout, const float *inp, const float *weight,
                          const float *mean, const float *rstd, int N, int C);

    /* GELU, tanh approximation, elementwise over n. */
    void (*gelu_fwd)(const ct_kern_ctx *ctx, float *out, const float *inp, size_t n);
    void (*gelu_bwd)(const ct_kern_ctx *ctx, float *dinp, const float *inp, const float *dout,
                     size_t n);

    /* out (n) = a + b; backward is an identity on both inputs, done by add_inplace. */
    void (*add_fwd)(const ct_kern_ctx *ctx, float *out, const float *a, const float *b, size_t n);
    /* y (n) += x */
    void (*add_inplace)(const ct_kern_ctx *ctx, float *y, const float *x, size_t n);

    /* out (B,T,C) = wte[tokens] + wpe[t] */
    void (*embedding_fwd)(const ct_kern_ctx *ctx, float *out, const int32_t *tokens,
                          const float *wte, const float *wpe, int B, int T, int C);
    /* dwte (V,C) += scatter of dout by token; dwpe (T,C) += sum over batch. Either may be NULL. */
    void (*embedding_bwd)(const ct_kern_ctx *ctx, float *dwte, float *dwpe, const float *dout,
                          const int32_t *tokens, int B, int T, int C);

    /* Causal self-attention. qkv (B,T,3C) holds q, k, v per position (heads of hs = C/NH
     * channels each); out (B,T,C) = softmax(q k^T / sqrt(hs), causal) v per head; stats receives
     * attention_stats_floats floats for backward. scratch holds attention_scratch_floats. */
    void (*attention_fwd)(const ct_kern_ctx *ctx, float *out, float *stats, const float *qkv,
                          float *scratch, int B, int T, int C, int NH);
    /* dqkv (B,T,3C) += gradient of out given dout (B,T,C); out and stats are attention_fwd's
     * (out for backends that take the softmax backward's row sums from dout . out). */
    void (*attention_bwd)(const ct_kern_ctx *ctx, float *dqkv, const float *dout, const float *qkv,
                          const float *out, const float *stats, float *scratch, int B, int T, int C,
                          int NH);

    /* The tied LM head and mean cross-entropy, fused and processed in row chunks so the
     * (N,V) logits never exist whole. x (N,C), wte (V,C), targets (N). losses (N) receives each
     * row's loss. When dx/dwte are not NULL it also computes the gradients of
     * grad_scale * mean(losses): dx (N,C) += ..., dwte (V,C) += ... . scratch holds
     * chunk_rows * V floats. Targets < 0 are ignored (no loss, no gradient). */
    void (*lm_head_loss)(const ct_kern_ctx *ctx, float *losses, float *dx, float *dwte,
                         const float *x, const float *wte, const int32_t *targets, int N, int C,
                         int V, float grad_scale, float *scratch, int chunk_rows);
    /* logits (N,V) = x (N,C) @ wte^T, for sampling and tests. */
    void (*lm_head_logits)(const ct_kern_ctx *ctx, float *logits, const float *x, const float *wte,
                           int N, int C, int V);
    /* loss (one float) = the mean of losses (N) over the rows whose target is >= 0, summed in
     * double in index order (0 when there is none): the loss never visits the host. */
    void (*loss_mean)(const ct_kern_ctx *ctx, float *loss, const float *losses,
                      const int32_t *targets, int N);

    /* ---- the ops that read parameters, for bf16/f16 parameters (precision.compute): `weight`,
     * `bias`, `wte`, `wpe` hold `dtype` (CT_BF16 or CT_F16) elements; activations, their
     * gradients and the parameters' gradients stay f32, with the f32 twin's shapes and
     * accumulation. They fail (CT_ERR_NOMEM) only when their workspace cannot grow, and
     * (CT_ERR_INVALID) for another dtype. LayerNorm's (C)-sized weights are widened by its op. */
    /* Bytes of the workspace the kernels below hold (outside the tape, counted as activations)
     * for a Linear (N,C)->(N,OC) when chunk_rows = 0, or the LM head (N rows, C, V = OC) with
     * chunk_rows; it grows to the largest call and stays. */
    size_t (*half_workspace_bytes)(const ct_kern_ctx *ctx, ct_dtype dtype, int N, int C, int OC,
                                   int chunk_rows);
    ct_status (*matmul_fwd_half)(const ct_kern_ctx *ctx, float *out, const float *inp,
                                 const void *weight, const void *bias, ct_dtype dtype, int N, int C,
                                 int OC);
    ct_status (*matmul_bwd_half)(const ct_kern_ctx *ctx, float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp, const void *weight,
                                 ct_dtype dtype, int N, int C, int OC);
    ct_status (*embedding_fwd_half)(const ct_kern_ctx *ctx, float *out, const int32_t *tokens,
                                    const void *wte, const void *wpe, ct_dtype dtype, int B, int T,
                                    int C);
    ct_status (*lm_head_loss_half)(const ct_kern_ctx *ctx, float *losses, float *dx, float *dwte,
                                   const float *x, const void *wte, ct_dtype dtype,
                                   const int32_t *targets, int N, int C, int V, float grad_scale,
                                   float *scratch, int chunk_rows);
    ct_status (*lm_head_logits_half)(const ct_kern_ctx *ctx, float *logits, const float *x,
                                     const void *wte, ct_dtype dtype, int N, int C, int V);

    /* AdamW on n elements: m, v moments; weight decay `decay` applied decoupled (p -= lr*decay*p);
     * the gradient is multiplied by grad_scale first (clipping). bias1/bias2 are 1 - beta^t. */
    void (*adamw)(const ct_kern_ctx *ctx, float *param, const float *grad, float *m, float *v,
                  size_t n, float lr, float beta1, float beta2, float eps, float decay, float bias1,
                  float bias2, float grad_scale);
    /* sum of x[i]^2 in double, in a fixed order */
    double (*sum_squares)(const ct_kern_ctx *ctx, const float *x, size_t n);
    /* x (n) *= scale */
    void (*scale)(const ct_kern_ctx *ctx, float *x, size_t n, float scale);
} ct_kernels;

/* The device keys of a job, as ct_kernels_for_device reads them. */
typedef struct {
    const char *type; /* device.type: "auto", "cpu" or "cuda" */
    int cpu_threads;  /* device.threads_per_rank: the CPU kernels' threads; 0 = all cores */
    const char *blas; /* device.blas: "auto", "onednn" or "openblas" */
    const char *half; /* device.half_kernels: "auto", "native" or "portable"; NULL = "auto" */
} ct_kernels_options;

/* The one place a backend is chosen: the table for device.type. It sets the CPU kernels'
 * threads (ct_kern_cpu_set_threads) and the library of the CPU GEMMs (ct_kern_cpu_blas_for).
 * "auto" is the CPU until a CUDA backend exists; "cuda" fails with a message saying so. */
ct_status ct_kernels_for_device(const ct_kernels_options *options, const ct_kernels **kernels);

/* The CPU backend's table (GEMMs on `blas`, half parameters on `half`, the rest OpenMP loops);
 * only ct_kernels_for_device, kernels/ and the kernel tests name it. */
const ct_kernels *ct_kern_cpu(ct_blas blas, ct_half_path half);

/* ---- CPU tuning: host threads, not part of any table. The CPU kernels use them, and so does
 * host-side work that is no kernel (checkpoint compression threads, the MFU ceiling). */

/* Threads the CPU kernels use (OpenMP loops and OpenBLAS); 0 = all cores. Call once before
 * training; changing it changes results in the last bits (summation order). */
void ct_kern_cpu_set_threads(int threads);
int ct_kern_cpu_threads(void);

/* The GEMM library for device.blas "onednn", "openblas" or "auto" (OpenBLAS for fp32: see
 * cpu.c); CT_ERR_INVALID for another name. */
ct_status ct_kern_cpu_blas_for(const char *name, ct_blas *blas);
/* "onednn" or "openblas" (banners). */
const char *ct_kern_cpu_blas_name(ct_blas blas);

/* The half path for device.half_kernels "native", "portable" or "auto" (native where the CPU
 * has AMX-BF16 and oneDNN a bf16 matmul: with AVX-512-BF16 alone bf16 GEMMs are slower than
 * f32 ones); "native" fails with a message where oneDNN has no bf16 matmul. */
ct_status ct_kern_cpu_half_path_for(const char *name, ct_half_path *path);
/* "native" or "portable" (banners). */
const char *ct_kern_cpu_half_path_name(ct_half_path path);
/* One line for the banner: which path the ops take on parameters of `dtype` with table k. */
void ct_kern_describe_half(const ct_kernels *k, ct_dtype dtype, char *out, size_t out_bytes);

/* GFLOP/s of an n x n x n fp32 GEMM on `blas` at the current thread count (best of reps). */
double ct_kern_cpu_sgemm_gflops(int n, int reps, ct_blas blas);
/* The same for inputs of `dtype`: CT_F32 on `blas`, or CT_BF16 (f32 sums) on oneDNN, which
 * fails with a message on a CPU oneDNN has no bf16 matmul for. */
ct_status ct_kern_cpu_gemm_gflops(int n, int reps, ct_blas blas, ct_dtype dtype, double *gflops);

/* What the CUDA runtime reports; *device_count = 0 and a reason in `info` where there is no
 * CUDA build or no device. Always available: the CPU build answers "built without CUDA". */
void ct_kern_cuda_describe(char *info, size_t info_bytes, int *device_count);

#endif
