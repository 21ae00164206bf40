/*
 * The ops whose parameters are bf16 or f16 (precision.compute): Linear, the embedding and the
 * tied LM head. Activations and gradients stay f32 (docs/precision.md says why); only the
 * parameters are half, so these kernels differ from their f32 twins in how they read weights.
 * Two paths, chosen per table (the context's cpu_half, from device.half_kernels):
 *
 * - native (bf16 only): the f32 operands of each GEMM are rounded to bf16 and the product runs
 *   on oneDNN's bf16 matmul (AMX where the CPU has it), summed in f32. The rounding of
 *   activations is what PyTorch's bf16 autocast does to a Linear's input.
 * - portable (bf16 and f16, any CPU): the weights are widened to f32 and the f32 kernels run;
 *   bf16 storage and traffic, f32 arithmetic. It costs one f32 copy of the largest weight (the
 *   LM head's) in the workspace.
 *
 * The conversions need a workspace the size of a GEMM operand. It is one buffer owned here,
 * grown on first use of a larger shape and then reused by every call (a warm step allocates
 * nothing); kernels run one at a time, so one buffer serves them all.
 */
#include "common/floats.h"
#include "kernels/cpu/cpu_internal.h"

#include <cpuid.h>
#include <immintrin.h>
#include <pthread.h>
#include <stdio.h>

static struct {
    pthread_mutex_t lock;
    void *buffer;
    size_t bytes;
} workspace = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* The workspace, at least `bytes` long; NULL (with a message) when it cannot grow. */
static void *workspace_get(size_t bytes) {
    pthread_mutex_lock(&workspace.lock);
    if (bytes > workspace.bytes) {
        if (workspace.buffer) ct_free(CT_MEM_ACTIVATIONS, workspace.buffer, workspace.bytes);
        workspace.buffer = ct_alloc(CT_MEM_ACTIVATIONS, bytes);
        workspace.bytes = workspace.buffer ? bytes : 0;
        if (!workspace.buffer)
            ct_error(CT_ERR_NOMEM, "%zu bytes of workspace for the half-precision kernels", bytes);
    }
    void *buffer = workspace.buffer;
    pthread_mutex_unlock(&workspace.lock);
    return buffer;
}

/* ---------------------------------------------------------------- the path */

/* Whether the CPU has AMX-BF16 tiles (CPUID leaf 7, EDX bit 22), where oneDNN's bf16 matmul
 * is several times its f32 one. With AVX-512-BF16 alone it is slower than f32
 * (shared/NOTES.md), so "auto" takes the native path only with AMX. */
static bool cpu_has_amx_bf16(void) {
    unsigned a, b, c, d;
    if (!__get_cpuid_count(7, 0, &a, &b, &c, &d)) return false;
    return (d >> 22) & 1u;
}

/* Whether oneDNN makes a bf16 matmul here (AVX-512 at least): a tiny GEMM, once. */
static bool onednn_has_bf16(void) {
    static int answer = -1;
    if (answer < 0) {
        uint16_t a[4] = {0x3f80, 0x3f80, 0x3f80, 0x3f80}; /* ones */
        float c[4] = {0};
        ct_status status = ct_cpu_gemm_bf16(false, false, 2, 2, 2, a, 2, a, 2, 0.0f, c, 2);
        answer = status == CT_OK && c[0] == 2.0f;
        if (status != CT_OK) ct_error_clear();
    }
    return answer == 1;
}

ct_status ct_kern_cpu_half_path_for(const char *name, ct_half_path *path) {
    if (strcmp(name, "auto") == 0) {
        *path = cpu_has_amx_bf16() && onednn_has_bf16() ? CT_HALF_NATIVE : CT_HALF_PORTABLE;
    } else if (strcmp(name, "native") == 0) {
        if (!onednn_has_bf16())
            return ct_error(CT_ERR_INVALID,
                            "device.half_kernels = \"native\": oneDNN has no bf16 matmul on this "
                            "CPU (it needs AVX-512); use \"portable\" or \"auto\"");
        *path = CT_HALF_NATIVE;
    } else if (strcmp(name, "portable") == 0) {
        *path = CT_HALF_PORTABLE;
    } else {
        return ct_error(CT_ERR_INVALID,
                        "device.half_kernels = \"%s\": expected auto, native or portable", name);
    }
    return CT_OK;
}

const char *ct_kern_cpu_half_path_name(ct_half_path path) {
    return path == CT_HALF_NATIVE ? "native" : "portable";
}

void ct_kern_describe_half(const ct_kernels *k, ct_dtype dtype, char *out, size_t out_bytes) {
    if (dtype == CT_F32) {
        snprintf(out, out_bytes, "f32 kernels, GEMMs on %s",
                 ct_kern_cpu_blas_name(k->ctx.cpu_blas));
    } else if (dtype == CT_BF16 && k->ctx.cpu_half == CT_HALF_NATIVE) {
        snprintf(out, out_bytes,
                 "native bf16: Linear and LM head GEMMs on oneDNN bf16 (%s), f32 sums; "
                 "embedding reads bf16; LayerNorm, GELU, attention, softmax and AdamW in f32",
                 cpu_has_amx_bf16() ? "AMX" : "AVX-512, no AMX");
    } else {
        snprintf(out, out_bytes,
                 "portable %s: parameters stored and gathered in %s, widened to f32 for every op "
                 "(GEMMs on %s)",
                 ct_dtype_name(dtype), ct_dtype_name(dtype),
                 ct_kern_cpu_blas_name(k->ctx.cpu_blas));
    }
}

/* ---------------------------------------------------------------- conversions */

/* dst (n, bf16) = src (n, f32), rounding to nearest even. With AVX-512-BF16 sixteen at a time
 * (the instruction treats f32 subnormals as zero, which GEMM inputs may lose). */
__attribute__((target("avx512f,avx512bf16"))) static void
round_bf16_avx512(uint16_t *dst, const float *src, size_t n) {
    size_t blocks = n / 16;
#pragma omp parallel for schedule(static)
    for (size_t b = 0; b < blocks; b++) {
        __m256bh h = _mm512_cvtneps_pbh(_mm512_loadu_ps(src + 16 * b));
        _mm256_storeu_si256((__m256i *)(dst + 16 * b), (__m256i)h);
    }
    for (size_t i = blocks * 16; i < n; i++)
        dst[i] = ct_f32_to_bf16(src[i]);
}

static void round_bf16(uint16_t *dst, const float *src, size_t n) {
    static int has_avx512_bf16 = -1;
    if (has_avx512_bf16 < 0) {
        __builtin_cpu_init();
        has_avx512_bf16 = __builtin_cpu_supports("avx512bf16") ? 1 : 0;
    }
    if (has_avx512_bf16) {
        round_bf16_avx512(dst, src, n);
        return;
    }
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        dst[i] = ct_f32_to_bf16(src[i]);
}

/* Element i of a bf16 or f16 array as an f32 (exact). */
static inline float half_load(const void *src, ct_dtype dtype, size_t i) {
    uint16_t h = ((const uint16_t *)src)[i];
    return dtype == CT_BF16 ? ct_bf16_to_f32(h) : ct_f16_to_f32(h);
}

/* dst (n, f32) = src (n, dtype) */
static void widen(float *dst, const void *src, ct_dtype dtype, size_t n) {
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++)
        dst[i] = half_load(src, dtype, i);
}

/* The native path's precondition: bf16 weights (f16 always takes the portable path). */
static bool native(const ct_kern_ctx *ctx, ct_dtype dtype) {
    return ctx->cpu_half == CT_HALF_NATIVE && dtype == CT_BF16;
}

static ct_status check_dtype(ct_dtype dtype) {
    if (dtype == CT_BF16 || dtype == CT_F16) return CT_OK;
    return ct_error(CT_ERR_INVALID, "a half-precision kernel given %s weights",
                    ct_dtype_name(dtype));
}

size_t ct_cpu_half_workspace_bytes(const ct_kern_ctx *ctx, ct_dtype dtype, int N, int C, int OC,
                                   int chunk_rows) {
    size_t n = (size_t)N, c = (size_t)C, oc = (size_t)OC;
    if (!native(ctx, dtype)) return sizeof(float) * (oc * c + oc); /* the widened weights */
    if (chunk_rows > 0) return sizeof(uint16_t) * (n * c + (size_t)chunk_rows * oc);
    return sizeof(uint16_t) * n * (oc + c); /* backward's d(out) and input, rounded */
}

/* ---------------------------------------------------------------- Linear */

ct_status ct_cpu_matmul_fwd_half(const ct_kern_ctx *ctx, float *out, const float *inp,
                                 const void *weight, const void *bias, ct_dtype dtype, int N, int C,
                                 int OC) {
    CT_CHECK(check_dtype(dtype));
    if (!native(ctx, dtype)) {
        float *w = workspace_get(sizeof(float) * ((size_t)OC * C + OC));
        if (!w) return CT_ERR_NOMEM;
        widen(w, weight, dtype, (size_t)OC * C);
        if (bias) widen(w + (size_t)OC * C, bias, dtype, (size_t)OC);
        ct_cpu_matmul_fwd(ctx, out, inp, w, bias ? w + (size_t)OC * C : NULL, N, C, OC);
        return CT_OK;
    }
    uint16_t *inp16 = workspace_get(sizeof(uint16_t) * (size_t)N * C);
    if (!inp16) return CT_ERR_NOMEM;
    round_bf16(inp16, inp, (size_t)N * C);
    if (bias && N > 0) { /* widened once into row 0, then copied to the other rows */
        widen(out, bias, dtype, (size_t)OC);
#pragma omp parallel for schedule(static)
        for (int n = 1; n < N; n++)
            memcpy(out + (size_t)n * OC, out, sizeof(float) * OC);
    }
    return ct_cpu_gemm_bf16(false, true, N, OC, C, inp16, C, weight, C, bias ? 1.0f : 0.0f, out,
                            OC);
}

ct_status ct_cpu_matmul_bwd_half(const ct_kern_ctx *ctx, float *dinp, float *dweight, float *dbias,
                                 const float *dout, const float *inp, const void *weight,
                                 ct_dtype dtype, int N, int C, int OC) {
    CT_CHECK(check_dtype(dtype));
    if (!native(ctx, dtype)) {
        float *w = NULL;
        if (dinp) { /* only d(inp) reads the weights */
            w = workspace_get(sizeof(float) * (size_t)OC * C);
            if (!w) return CT_ERR_NOMEM;
            widen(w, weight, dtype, (size_t)OC * C);
        }
        ct_cpu_matmul_bwd(ctx, dinp, dweight, dbias, dout, inp, w, N, C, OC);
        return CT_OK;
    }
    uint16_t *dout16 = workspace_get(sizeof(uint16_t) * (size_t)N * (OC + C));
    if (!dout16) return CT_ERR_NOMEM;
    uint16_t *inp16 = dout16 + (size_t)N * OC;
    if (dinp || dweight) round_bf16(dout16, dout, (size_t)N * OC);
    if (dinp)
        CT_CHECK(ct_cpu_gemm_bf16(false, false, N, C, OC, dout16, OC, weight, C, 1.0f, dinp, C));
    if (dweight) {
        round_bf16(inp16, inp, (size_t)N * C);
        CT_CHECK(ct_cpu_gemm_bf16(true, false, OC, C, N, dout16, OC, inp16, C, 1.0f, dweight, C));
    }
    if (dbias) ct_cpu_bias_grad(dbias, dout, N, OC);
    return CT_OK;
}

/* ---------------------------------------------------------------- embedding */

ct_status ct_cpu_embedding_fwd_half(const ct_kern_ctx *ctx, float *out, const int32_t *tokens,
                                    const void *wte, const void *wpe, ct_dtype dtype, int B, int T,
                                    int C) {
    (void)ctx;
    CT_CHECK(check_dtype(dtype));
    /* Both paths: each row is read once, so widening as it is read costs nothing more. */
#pragma omp parallel for schedule(static)
    for (int bt = 0; bt < B * T; bt++) {
        size_t te = (size_t)tokens[bt] * C, pe = (size_t)(bt % T) * C;
        float *o = out + (size_t)bt * C;
        for (int i = 0; i < C; i++)
            o[i] = half_load(wte, dtype, te + i) + half_load(wpe, dtype, pe + i);
    }
    return CT_OK;
}

/* ---------------------------------------------------------------- the LM head */

ct_status ct_cpu_lm_head_logits_half(const ct_kern_ctx *ctx, float *logits, const float *x,
                                     const void *wte, ct_dtype dtype, int N, int C, int V) {
    CT_CHECK(check_dtype(dtype));
    if (!native(ctx, dtype)) {
        float *w = workspace_get(sizeof(float) * (size_t)V * C);
        if (!w) return CT_ERR_NOMEM;
        widen(w, wte, dtype, (size_t)V * C);
        ct_cpu_lm_head_logits(ctx, logits, x, w, N, C, V);
        return CT_OK;
    }
    uint16_t *x16 = workspace_get(sizeof(uint16_t) * (size_t)N * C);
    if (!x16) return CT_ERR_NOMEM;
    round_bf16(x16, x, (size_t)N * C);
    return ct_cpu_gemm_bf16(false, true, N, V, C, x16, C, wte, C, 0.0f, logits, V);
}

ct_status ct_cpu_lm_head_loss_half(const ct_kern_ctx *ctx, float *losses, float *dx, float *dwte,
                                   const float *x, const void *wte, ct_dtype dtype,
                                   const int32_t *targets, int N, int C, int V, float grad_scale,
                                   float *scratch, int chunk_rows) {
    CT_CHECK(check_dtype(dtype));
    if (!native(ctx, dtype)) {
        float *w = workspace_get(sizeof(float) * (size_t)V * C);
        if (!w) return CT_ERR_NOMEM;
        widen(w, wte, dtype, (size_t)V * C);
        ct_cpu_lm_head_loss(ctx, losses, dx, dwte, x, w, targets, N, C, V, grad_scale, scratch,
                            chunk_rows);
        return CT_OK;
    }
    /* x in bf16 once; per chunk its logits, softmax and d(logits) in f32 (the f32 twin's row
     * code), then d(logits) rounded to bf16 for the two gradient GEMMs. */
    uint16_t *x16 = workspace_get(sizeof(uint16_t) * ((size_t)N * C + (size_t)chunk_rows * V));
    if (!x16) return CT_ERR_NOMEM;
    uint16_t *d16 = x16 + (size_t)N * C;
    round_bf16(x16, x, (size_t)N * C);
    float coef = ct_cpu_lm_head_coef(targets, N, grad_scale);
    bool want_grad = dx != NULL || dwte != NULL;
    for (int r0 = 0; r0 < N; r0 += chunk_rows) {
        int rows = N - r0 < chunk_rows ? N - r0 : chunk_rows;
        const uint16_t *xc = x16 + (size_t)r0 * C;
        CT_CHECK(ct_cpu_gemm_bf16(false, true, rows, V, C, xc, C, wte, C, 0.0f, scratch, V));
        ct_cpu_lm_head_rows(scratch, losses + r0, targets + r0, rows, V, coef, want_grad);
        if (!want_grad) continue;
        round_bf16(d16, scratch, (size_t)rows * V);
        if (dx)
            CT_CHECK(ct_cpu_gemm_bf16(false, false, rows, C, V, d16, V, wte, C, 1.0f,
                                      dx + (size_t)r0 * C, C));
        if (dwte) CT_CHECK(ct_cpu_gemm_bf16(true, false, V, C, rows, d16, V, xc, C, 1.0f, dwte, C));
    }
    return CT_OK;
}
