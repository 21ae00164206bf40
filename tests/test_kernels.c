/*
 * The kernel table's memory entries on the CPU (kernels/cpu/memory.c) and its loss mean: memset
 * and copy in every direction, casts between f32, bf16 and f16 against references written
 * independently (decoding by ldexp, rounding in double with nearbyint, and, where the compiler
 * has _Float16, its own conversion), and the mean of the losses over the rows with a target.
 * Every comparison is exact: a cast has one right answer. Then the chooser, and the GEMMs on
 * oneDNN against OpenBLAS (kernels/cpu/gemm.c), directly and through the matmul and LM head
 * entries, to a stated tolerance: the two libraries round differently.
 */
#include "common/floats.h"
#include "kernels/cpu/cpu_internal.h" /* ct_cpu_gemm, the seam under test */
#include "kernels/kernels.h"
#include "test_util.h"

#include <math.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static const ct_kernels *kernels(void) {
    const ct_kernels *k = NULL;
    CU_ASSERT_EQUAL_FATAL(
        ct_kernels_for_device(&(ct_kernels_options){"cpu", 0, "auto", "auto"}, &k), CT_OK);
    return k;
}

/* A 16-bit format: bf16 (8 exponent bits, 7 mantissa bits) or f16 (5 and 10). */
typedef struct {
    ct_dtype dtype;
    int exp_bits, mant_bits;
} format16;

static const format16 bf16 = {CT_BF16, 8, 7}, f16 = {CT_F16, 5, 10};

static int bias(format16 f) {
    return (1 << (f.exp_bits - 1)) - 1;
}

static bool is_nan16(format16 f, uint16_t h) {
    int e = (h >> f.mant_bits) & ((1 << f.exp_bits) - 1);
    return e == (1 << f.exp_bits) - 1 && (h & ((1 << f.mant_bits) - 1)) != 0;
}

/* The value of pattern h by the definition of the format. */
static double decode16(format16 f, uint16_t h) {
    int e = (h >> f.mant_bits) & ((1 << f.exp_bits) - 1), m = h & ((1 << f.mant_bits) - 1);
    double sign = h & 0x8000 ? -1.0 : 1.0;
    if (e == (1 << f.exp_bits) - 1) return m ? NAN : sign * INFINITY;
    if (e == 0) return sign * ldexp(m, 1 - bias(f) - f.mant_bits);
    return sign * ldexp(m + (1 << f.mant_bits), e - bias(f) - f.mant_bits);
}

/* x rounded to the nearest value of format f, ties to even (nearbyint in the default rounding
 * mode), with subnormals, and infinity beyond the largest finite value. */
static double round16(format16 f, double x) {
    double a = fabs(x);
    if (a == 0.0 || isinf(a)) return x;
    int e;
    frexp(a, &e); /* a = frac * 2^e, frac in [0.5, 1): its leading bit is 2^(e-1) */
    int lead = CT_MAX(e - 1, 1 - bias(f));
    double ulp = ldexp(1.0, lead - f.mant_bits);
    double r = nearbyint(a / ulp) * ulp;
    double max = ldexp((double)((2 << f.mant_bits) - 1), bias(f) - f.mant_bits);
    return copysign(r > max ? INFINITY : r, x);
}

/* Every 16-bit pattern decodes to its value and encodes back to itself; NaNs stay NaN. */
static void check_every_pattern(format16 f) {
    const ct_kernels *k = kernels();
    enum { N = 65536 };
    uint16_t *h = malloc(N * sizeof(uint16_t)), *back = malloc(N * sizeof(uint16_t));
    float *x = malloc(N * sizeof(float));
    CU_ASSERT_FATAL(h && back && x);
    for (int i = 0; i < N; i++)
        h[i] = (uint16_t)i;
    CU_ASSERT_EQUAL(k->cast(&k->ctx, x, CT_F32, h, f.dtype, N), CT_OK);
    CU_ASSERT_EQUAL(k->cast(&k->ctx, back, f.dtype, x, CT_F32, N), CT_OK);
    int wrong = 0;
    for (int i = 0; i < N; i++) {
        bool ok = is_nan16(f, h[i]) ? isnan(x[i]) && is_nan16(f, back[i])
                                    : (double)x[i] == decode16(f, h[i]) &&
                                          !signbit(x[i]) == !(h[i] & 0x8000) && back[i] == h[i];
        if (!ok && wrong++ < 5)
            printf("\n  %s pattern 0x%04x: f32 %.9g, back 0x%04x", ct_dtype_name(f.dtype), i,
                   (double)x[i], back[i]);
    }
    CU_ASSERT_EQUAL(wrong, 0);
    free(h), free(back), free(x);
}

static void test_bf16_every_pattern_decodes_exactly_and_encodes_back(void) {
    check_every_pattern(bf16);
}

static void test_f16_every_pattern_decodes_exactly_and_encodes_back(void) {
    check_every_pattern(f16);
}

/* f32 inputs to round: a stride through all 2^32 patterns, plus every tie and edge listed. */
static float *rounding_inputs(const uint32_t *extra, size_t n_extra, size_t *n) {
    const uint32_t stride = 4093; /* prime: every exponent and many low-bit patterns */
    size_t count = ((size_t)UINT32_MAX / stride + 1) + n_extra;
    float *x = malloc(count * sizeof(float));
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    size_t i = 0;
    for (uint64_t b = 0; b <= UINT32_MAX; b += stride)
        x[i++] = ct_bits_f32((uint32_t)b);
    for (size_t j = 0; j < n_extra; j++)
        x[i++] = ct_bits_f32(extra[j]);
    *n = i;
    return x;
}

/* f32 -> format f equals round16 for every input; returns the number of mismatches. */
static int check_rounding(format16 f, const float *x, size_t n) {
    const ct_kernels *k = kernels();
    uint16_t *h = malloc(n * sizeof(uint16_t));
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    CU_ASSERT_EQUAL(k->cast(&k->ctx, h, f.dtype, x, CT_F32, n), CT_OK);
    int wrong = 0;
    for (size_t i = 0; i < n; i++) {
        bool ok;
        if (isnan(x[i])) {
            ok = is_nan16(f, h[i]);
        } else {
            double want = round16(f, x[i]), got = decode16(f, h[i]);
            ok = got == want && !signbit(got) == !signbit(want);
        }
        if (!ok && wrong++ < 5)
            printf("\n  f32 %.9g (0x%08x) -> %s 0x%04x = %.9g, want %.9g", (double)x[i],
                   ct_f32_bits(x[i]), ct_dtype_name(f.dtype), h[i], decode16(f, h[i]),
                   round16(f, x[i]));
    }
    free(h);
    return wrong;
}

static void test_f32_to_bf16_rounds_to_nearest_even(void) {
    static const uint32_t extra[] = {
        0x3f808000, /* 1 + 2^-8: a tie, to the even 1.0 */
        0x3f818000, /* a tie between odd 0x3f81 and even 0x3f82: up */
        0x3f808001, /* just above a tie: up */
        0x3f807fff, /* just below: down */
        0x7f7fffff, /* the largest f32: beyond bf16's largest plus half an ulp: infinity */
        0x7f7f7fff, /* just below that half ulp: the largest bf16 */
        0x7f7f8000, /* exactly half an ulp above the largest, whose last bit is odd: infinity */
        0x00008000, /* an f32 subnormal tie at bf16's smallest subnormal: to even 0 */
        0x00018000, /* a subnormal tie to even 0x0002 */
        0x80000000, /* -0 */
        0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, /* infinities and NaNs */
    };
    size_t n;
    float *x = rounding_inputs(extra, CT_ARRAY_LEN(extra), &n);
    CU_ASSERT_EQUAL(check_rounding(bf16, x, n), 0);
    free(x);
}

static void test_f32_to_f16_rounds_to_nearest_even_with_subnormals_and_overflow(void) {
    static const uint32_t extra[] = {
        0x3f801000, /* 1 + 2^-11: a tie, to the even 1.0 */
        0x3f803000, /* 1 + 3 * 2^-11: a tie, up to the even 1 + 2^-9 */
        0x477fe000, /* 65504, the largest f16 */
        0x477fefff, /* just below 65520: 65504 */
        0x477ff000, /* 65520: a tie between 65504 (odd) and 65536: infinity */
        0x33000000, /* 2^-25: a tie between 0 and the smallest subnormal: 0 */
        0x33000001, /* just above: the smallest subnormal */
        0x33c00000, /* 3 * 2^-25: a tie between subnormals 1 and 2: to 2 */
        0x387fe000, /* 2^-14 - 2^-25: a tie between the largest subnormal and 2^-14: up */
        0x38800000, /* 2^-14, the smallest normal */
        0x00000001, /* the smallest f32 subnormal: 0 */
        0x80000000, 0xb3000001,                         /* -0; a negative smallest subnormal */
        0x7f800000, 0xff800000, 0x7fc00000, 0x7f800001, /* infinities and NaNs */
    };
    size_t n;
    float *x = rounding_inputs(extra, CT_ARRAY_LEN(extra), &n);
    CU_ASSERT_EQUAL(check_rounding(f16, x, n), 0);
#ifdef __FLT16_MAX__
    /* The compiler's own conversion (libgcc or F16C) agrees, NaNs aside. */
    const ct_kernels *k = kernels();
    uint16_t *h = malloc(n * sizeof(uint16_t));
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    CU_ASSERT_EQUAL(k->cast(&k->ctx, h, CT_F16, x, CT_F32, n), CT_OK);
    int wrong = 0;
    for (size_t i = 0; i < n; i++) {
        if (isnan(x[i])) continue;
        _Float16 ref = (_Float16)x[i];
        uint16_t bits;
        memcpy(&bits, &ref, sizeof(bits));
        wrong += bits != h[i];
    }
    CU_ASSERT_EQUAL(wrong, 0);
    free(h);
#endif
    free(x);
}

/* bf16 <-> f16 round once (through an exact f32): the same as rounding the exact value. */
static void test_bf16_and_f16_cast_into_each_other_rounding_once(void) {
    const ct_kernels *k = kernels();
    enum { N = 65536 };
    uint16_t *src = malloc(N * sizeof(uint16_t)), *dst = malloc(N * sizeof(uint16_t));
    CU_ASSERT_FATAL(src && dst);
    for (int i = 0; i < N; i++)
        src[i] = (uint16_t)i;
    const format16 pairs[2][2] = {{bf16, f16}, {f16, bf16}};
    for (int p = 0; p < 2; p++) {
        format16 from = pairs[p][0], to = pairs[p][1];
        CU_ASSERT_EQUAL(k->cast(&k->ctx, dst, to.dtype, src, from.dtype, N), CT_OK);
        int wrong = 0;
        for (int i = 0; i < N; i++) {
            if (is_nan16(from, src[i])) {
                wrong += !is_nan16(to, dst[i]);
                continue;
            }
            double want = round16(to, decode16(from, src[i])), got = decode16(to, dst[i]);
            wrong += got != want || !signbit(got) != !signbit(want);
        }
        CU_ASSERT_EQUAL(wrong, 0);
    }
    free(src), free(dst);
}

static void test_cast_to_the_same_type_copies_and_i32_is_refused(void) {
    const ct_kernels *k = kernels();
    float a[5] = {1.5f, -0.0f, NAN, 3e38f, 1e-40f}, b[5];
    CU_ASSERT_EQUAL(k->cast(&k->ctx, b, CT_F32, a, CT_F32, 5), CT_OK);
    CU_ASSERT(memcmp(a, b, sizeof(a)) == 0);
    int32_t i[5] = {0};
    CU_ASSERT_EQUAL(k->cast(&k->ctx, i, CT_I32, a, CT_F32, 5), CT_ERR_INVALID);
    CU_ASSERT(strstr(ct_error_message(), "i32") != NULL);
    CU_ASSERT_EQUAL(k->cast(&k->ctx, a, CT_F32, i, CT_I32, 5), CT_ERR_INVALID);
}

static void test_memset_and_copy_in_every_direction(void) {
    const ct_kernels *k = kernels();
    CU_ASSERT_EQUAL(k->ctx.device, CT_DEVICE_CPU);
    CU_ASSERT_PTR_NULL(k->ctx.stream);
    unsigned char src[100], dst[100];
    for (int i = 0; i < 100; i++)
        src[i] = (unsigned char)(7 * i + 1);
    CU_ASSERT_EQUAL(k->memset_bytes(&k->ctx, dst, 0xab, sizeof(dst)), CT_OK);
    for (int i = 0; i < 100; i++)
        CU_ASSERT_EQUAL(dst[i], 0xab);
    const ct_copy_kind kinds[] = {CT_COPY_HOST_TO_DEVICE, CT_COPY_DEVICE_TO_HOST,
                                  CT_COPY_DEVICE_TO_DEVICE};
    for (size_t c = 0; c < CT_ARRAY_LEN(kinds); c++) {
        CU_ASSERT_EQUAL(k->memset_bytes(&k->ctx, dst, 0, sizeof(dst)), CT_OK);
        CU_ASSERT_EQUAL(k->copy(&k->ctx, dst + 10, src + 3, 50, kinds[c]), CT_OK);
        CU_ASSERT(memcmp(dst + 10, src + 3, 50) == 0);
        CU_ASSERT(dst[9] == 0 && dst[60] == 0); /* nothing outside the range */
    }
    CU_ASSERT_EQUAL(k->copy(&k->ctx, NULL, NULL, 0, CT_COPY_DEVICE_TO_HOST), CT_OK);
}

static void test_loss_mean_averages_the_rows_with_a_target(void) {
    const ct_kernels *k = kernels();
    const float losses[6] = {1.0f, 2.0f, 100.0f, 4.0f, 0.5f, 100.0f};
    const int32_t targets[6] = {3, 0, -1, 7, 1, -1};
    float loss = -1.0f;
    k->loss_mean(&k->ctx, &loss, losses, targets, 6);
    CU_ASSERT_EQUAL(loss, 7.5f / 4.0f); /* exact: the sum and the quotient are representable */
    const int32_t none[2] = {-1, -1};
    k->loss_mean(&k->ctx, &loss, losses, none, 2);
    CU_ASSERT_EQUAL(loss, 0.0f);
}

static ct_status choose(const char *type, const char *blas, const ct_kernels **k) {
    return ct_kernels_for_device(&(ct_kernels_options){type, 0, blas, "auto"}, k);
}

static void test_the_chooser_gives_the_cpu_for_auto_and_refuses_cuda(void) {
    const ct_kernels *k = NULL;
    CU_ASSERT_EQUAL(choose("auto", "auto", &k), CT_OK);
    CU_ASSERT(k && k->ctx.device == CT_DEVICE_CPU && strncmp(k->name, "cpu", 3) == 0);
    CU_ASSERT_EQUAL(choose("cuda", "auto", &k), CT_ERR_INVALID);
    CU_ASSERT_PTR_NULL(k);
    CU_ASSERT(strstr(ct_error_message(), "not built yet") != NULL);
    CU_ASSERT_EQUAL(choose("tpu", "auto", &k), CT_ERR_INVALID);
    CU_ASSERT_EQUAL(ct_dtype_size(CT_F32), 4);
    CU_ASSERT_EQUAL(ct_dtype_size(CT_BF16), 2);
    CU_ASSERT_EQUAL(ct_dtype_size(CT_F16), 2);
    CU_ASSERT_EQUAL(ct_dtype_size(CT_I32), 4);
}

static void test_the_chooser_takes_each_blas_and_auto_is_openblas(void) {
    const ct_kernels *k = NULL;
    CU_ASSERT_EQUAL(choose("cpu", "onednn", &k), CT_OK);
    CU_ASSERT(k && k->ctx.cpu_blas == CT_BLAS_ONEDNN);
    CU_ASSERT_EQUAL(choose("cpu", "openblas", &k), CT_OK);
    CU_ASSERT(k && k->ctx.cpu_blas == CT_BLAS_OPENBLAS);
    CU_ASSERT_EQUAL(choose("cpu", "auto", &k), CT_OK);
    CU_ASSERT(k && k->ctx.cpu_blas == CT_BLAS_OPENBLAS);
    CU_ASSERT_EQUAL(choose("cpu", "mkl", &k), CT_ERR_INVALID);
    CU_ASSERT_PTR_NULL(k);
    CU_ASSERT(strstr(ct_error_message(), "device.blas") != NULL);
}

/* ---- the GEMMs on oneDNN against OpenBLAS. Two libraries sum in different orders, so they
 * agree to rounding only: ||a - b|| <= 1e-5 ||b|| (fp32 epsilon 1.2e-7 times a few hundred
 * products, with room to spare). */

static const ct_kernels *table_on(const char *blas) {
    const ct_kernels *k = NULL;
    CU_ASSERT_EQUAL_FATAL(choose("cpu", blas, &k), CT_OK);
    return k;
}

static float *random_floats(size_t n, uint32_t seed) {
    float *x = malloc(n * sizeof(float));
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    return x;
}

static bool close_in_norm(const float *a, const float *b, size_t n) {
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        norm += (double)b[i] * b[i];
    }
    if (!(sqrt(diff) <= 1e-5 * sqrt(norm)))
        printf("\n  relative error %.3g over %zu elements\n", sqrt(diff / norm), n);
    return sqrt(diff) <= 1e-5 * sqrt(norm);
}

static const int odd_sizes[] = {1, 7, 33, 129};

static void test_onednn_gemm_matches_openblas_on_odd_shapes(void) {
    const ct_kernels *dnn = table_on("onednn"), *ob = table_on("openblas");
    /* op(A) (M,K), op(B) (K,N), C (M,N), each padded by 3 columns (a leading dimension beyond
     * the width); every transpose pair, beta 0 and 1. */
    int cases = 0;
    for (int mi = 0; mi < 4; mi++)
        for (int ni = 0; ni < 4; ni++)
            for (int ki = 0; ki < 4; ki++)
                for (int t = 0; t < 8; t++) {
                    int M = odd_sizes[mi], N = odd_sizes[ni], K = odd_sizes[ki];
                    bool ta = t & 1, tb = t & 2;
                    float beta = (t & 4) ? 1.0f : 0.0f;
                    int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 3, ldc = N + 3;
                    float *A = random_floats((size_t)(ta ? K : M) * lda, 1 + t);
                    float *B = random_floats((size_t)(tb ? N : K) * ldb, 2 + mi);
                    float *C1 = random_floats((size_t)M * ldc, 3 + ni);
                    float *C2 = malloc((size_t)M * ldc * sizeof(float));
                    memcpy(C2, C1, (size_t)M * ldc * sizeof(float));
                    ct_cpu_gemm(&dnn->ctx, ta, tb, M, N, K, A, lda, B, ldb, beta, C1, ldc);
                    ct_cpu_gemm(&ob->ctx, ta, tb, M, N, K, A, lda, B, ldb, beta, C2, ldc);
                    bool ok = close_in_norm(C1, C2, (size_t)M * ldc);
                    if (!ok)
                        printf("  M %d N %d K %d trans %d %d beta %g\n", M, N, K, ta, tb, beta);
                    CU_ASSERT(ok);
                    cases += ok;
                    free(A), free(B), free(C1), free(C2);
                }
    CU_ASSERT_EQUAL(cases, 4 * 4 * 4 * 8);
}

static void test_onednn_matmul_and_lm_head_match_openblas(void) {
    const ct_kernels *tables[2] = {table_on("onednn"), table_on("openblas")};
    int N = 33, C = 7, OC = 129, V = 129;
    float *inp = random_floats((size_t)N * C, 11), *weight = random_floats((size_t)OC * C, 12);
    float *bias = random_floats(OC, 13), *dout = random_floats((size_t)N * OC, 14);
    int32_t targets[33];
    for (int n = 0; n < N; n++)
        targets[n] = n % 5 == 4 ? -1 : (n * 37) % V;
    float *out[2], *dinp[2], *dweight[2], *losses[2], *dx[2], *dwte[2];
    int chunk = 16; /* three chunks, the last one short */
    float *scratch = malloc((size_t)chunk * V * sizeof(float));
    for (int i = 0; i < 2; i++) {
        const ct_kernels *k = tables[i];
        out[i] = malloc((size_t)N * OC * sizeof(float));
        dinp[i] = random_floats((size_t)N * C, 15); /* backward accumulates: prefilled */
        dweight[i] = random_floats((size_t)OC * C, 16);
        losses[i] = malloc(N * sizeof(float));
        dx[i] = random_floats((size_t)N * C, 17);
        dwte[i] = random_floats((size_t)V * C, 18);
        k->matmul_fwd(&k->ctx, out[i], inp, weight, bias, N, C, OC);
        k->matmul_bwd(&k->ctx, dinp[i], dweight[i], NULL, dout, inp, weight, N, C, OC);
        k->lm_head_loss(&k->ctx, losses[i], dx[i], dwte[i], inp, weight, targets, N, C, V, 1.0f,
                        scratch, chunk);
    }
    CU_ASSERT(close_in_norm(out[0], out[1], (size_t)N * OC));
    CU_ASSERT(close_in_norm(dinp[0], dinp[1], (size_t)N * C));
    CU_ASSERT(close_in_norm(dweight[0], dweight[1], (size_t)OC * C));
    CU_ASSERT(close_in_norm(losses[0], losses[1], N));
    CU_ASSERT(close_in_norm(dx[0], dx[1], (size_t)N * C));
    CU_ASSERT(close_in_norm(dwte[0], dwte[1], (size_t)V * C));
    for (int i = 0; i < 2; i++)
        free(out[i]), free(dinp[i]), free(dweight[i]), free(losses[i]), free(dx[i]), free(dwte[i]);
    free(inp), free(weight), free(bias), free(dout), free(scratch);
}

/* bf16 inputs rounded from random floats, and the same values as f32 (exact: bf16 is the top
 * half of an f32). */
static void random_bf16(size_t n, uint32_t seed, uint16_t **as_bf16, float **as_f32) {
    const ct_kernels *k = table_on("openblas");
    float *x = random_floats(n, seed);
    *as_bf16 = malloc(n * sizeof(uint16_t));
    CU_ASSERT_PTR_NOT_NULL_FATAL(*as_bf16);
    CU_ASSERT_EQUAL(k->cast(&k->ctx, *as_bf16, CT_BF16, x, CT_F32, n), CT_OK);
    CU_ASSERT_EQUAL(k->cast(&k->ctx, x, CT_F32, *as_bf16, CT_BF16, n), CT_OK);
    *as_f32 = x;
}

/* The bf16 GEMM (oneDNN; AMX here) against OpenBLAS's fp32 GEMM of the same bf16 values: a
 * product of two bf16 numbers is exact in f32, so the two differ only in the order of their f32
 * sums and agree to 1e-5 of the norm, as the fp32 GEMMs do. On a CPU where oneDNN has no bf16
 * matmul, the call must fail with a message instead. */
static void test_bf16_gemm_matches_fp32_gemm_of_the_same_values(void) {
    const ct_kernels *ob = table_on("openblas");
    uint16_t *a16, *b16;
    float *a, *b, c = 0.0f;
    random_bf16(1, 1, &a16, &a);
    random_bf16(1, 2, &b16, &b);
    ct_status probe = ct_cpu_gemm_bf16(false, false, 1, 1, 1, a16, 1, b16, 1, 0.0f, &c, 1);
    free(a16), free(a), free(b16), free(b);
    if (probe != CT_OK) {
        CU_ASSERT_EQUAL(probe, CT_ERR_INVALID);
        CU_ASSERT(strstr(ct_error_message(), "bf16") != NULL);
        printf("\n  skipped: %s ", ct_error_message());
        return;
    }
    int cases = 0;
    for (int mi = 0; mi < 4; mi++)
        for (int ki = 0; ki < 4; ki++)
            for (int t = 0; t < 8; t++) {
                int M = odd_sizes[mi], N = odd_sizes[3 - mi], K = odd_sizes[ki];
                bool ta = t & 1, tb = t & 2;
                float beta = (t & 4) ? 1.0f : 0.0f;
                int lda = (ta ? M : K) + 3, ldb = (tb ? K : N) + 3, ldc = N + 3;
                random_bf16((size_t)(ta ? K : M) * lda, 31 + t, &a16, &a);
                random_bf16((size_t)(tb ? N : K) * ldb, 32 + ki, &b16, &b);
                float *C1 = random_floats((size_t)M * ldc, 33 + mi);
                float *C2 = malloc((size_t)M * ldc * sizeof(float));
                memcpy(C2, C1, (size_t)M * ldc * sizeof(float));
                CU_ASSERT_EQUAL(
                    ct_cpu_gemm_bf16(ta, tb, M, N, K, a16, lda, b16, ldb, beta, C1, ldc), CT_OK);
                ct_cpu_gemm(&ob->ctx, ta, tb, M, N, K, a, lda, b, ldb, beta, C2, ldc);
                bool ok = close_in_norm(C1, C2, (size_t)M * ldc);
                if (!ok) printf("  M %d N %d K %d trans %d %d beta %g\n", M, N, K, ta, tb, beta);
                CU_ASSERT(ok);
                cases += ok;
                free(a16), free(a), free(b16), free(b), free(C1), free(C2);
            }
    CU_ASSERT_EQUAL(cases, 4 * 4 * 8);
}

static void test_onednn_gemm_is_bitwise_repeatable(void) {
    const ct_kernels *dnn = table_on("onednn");
    int M = 129, N = 33, K = 257;
    float *A = random_floats((size_t)M * K, 21), *B = random_floats((size_t)N * K, 22);
    float *C1 = random_floats((size_t)M * N, 23), *C2 = malloc((size_t)M * N * sizeof(float));
    memcpy(C2, C1, (size_t)M * N * sizeof(float));
    ct_cpu_gemm(&dnn->ctx, false, true, M, N, K, A, K, B, K, 1.0f, C1, N);
    ct_cpu_gemm(&dnn->ctx, false, true, M, N, K, A, K, B, K, 1.0f, C2, N);
    CU_ASSERT(memcmp(C1, C2, (size_t)M * N * sizeof(float)) == 0);
    free(A), free(B), free(C1), free(C2);
}

int main(void) {
    const ct_test_case cases[] = {
        {"test_bf16_every_pattern_decodes_exactly_and_encodes_back",
         test_bf16_every_pattern_decodes_exactly_and_encodes_back},
        {"test_f16_every_pattern_decodes_exactly_and_encodes_back",
         test_f16_every_pattern_decodes_exactly_and_encodes_back},
        {"test_f32_to_bf16_rounds_to_nearest_even", test_f32_to_bf16_rounds_to_nearest_even},
        {"test_f32_to_f16_rounds_to_nearest_even_with_subnormals_and_overflow",
         test_f32_to_f16_rounds_to_nearest_even_with_subnormals_and_overflow},
        {"test_bf16_and_f16_cast_into_each_other_rounding_once",
         test_bf16_and_f16_cast_into_each_other_rounding_once},
        {"test_cast_to_the_same_type_copies_and_i32_is_refused",
         test_cast_to_the_same_type_copies_and_i32_is_refused},
        {"test_memset_and_copy_in_every_direction", test_memset_and_copy_in_every_direction},
        {"test_loss_mean_averages_the_rows_with_a_target",
         test_loss_mean_averages_the_rows_with_a_target},
        {"test_the_chooser_takes_each_blas_and_auto_is_openblas",
         test_the_chooser_takes_each_blas_and_auto_is_openblas},
        {"test_onednn_gemm_matches_openblas_on_odd_shapes",
         test_onednn_gemm_matches_openblas_on_odd_shapes},
        {"test_onednn_matmul_and_lm_head_match_openblas",
         test_onednn_matmul_and_lm_head_match_openblas},
        {"test_onednn_gemm_is_bitwise_repeatable", test_onednn_gemm_is_bitwise_repeatable},
        {"test_bf16_gemm_matches_fp32_gemm_of_the_same_values",
         test_bf16_gemm_matches_fp32_gemm_of_the_same_values},
        {"test_the_chooser_gives_the_cpu_for_auto_and_refuses_cuda",
         test_the_chooser_gives_the_cpu_for_auto_and_refuses_cuda},
    };
    return ct_test_run("kernels", cases, (int)CT_ARRAY_LEN(cases));
}
