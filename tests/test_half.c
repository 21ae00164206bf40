/*
 * The kernels on bf16/f16 parameters (kernels/cpu/half.c) against their f32 twins, on both
 * paths, and the ops that dispatch to them.
 *
 * - portable (bf16 and f16): the weights are widened and the f32 kernel runs, so the result is
 *   bitwise the f32 twin's on the widened (exactly representable) weights.
 * - native (bf16 on oneDNN): every GEMM operand is rounded to bf16 and the products summed in
 *   f32. Against the f32 twin on the same rounded operands only the summation order differs:
 *   ||a - b|| <= 1e-5 ||b||. Against the f32 twin on the unrounded activations the error is
 *   bf16's: ||a - b|| <= 2e-2 ||b|| (unit roundoff 2^-9 = 2e-3 per operand, two operands, with
 *   room; an indexing bug is O(1)).
 * Gradients are pre-filled and must be added to. Shapes are odd and the LM head runs in several
 * chunks with a ragged last one and ignored targets. Where oneDNN has no bf16 matmul (an AVX2
 * CPU) the native cases say so and pass: the portable ones still run, so a CI machine of either
 * kind checks the path it would use.
 */
#include "common/floats.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "tests/test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PREFILL 0.25f
#define SAME_OPERANDS_TOL 1e-5
#define BF16_TOL 2e-2

static const int N = 37, C = 45, OC = 29, V = 301, CHUNK = 16;

static float *random_floats(size_t n, uint32_t seed) {
    float *x = malloc(n * sizeof(float));
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    for (size_t i = 0; i < n; i++) {
        seed = seed * 1664525u + 1013904223u;
        x[i] = (float)((seed >> 8) & 0xffff) / 32768.0f - 1.0f;
    }
    return x;
}

static float *filled(size_t n, float value) {
    float *x = malloc(n * sizeof(float));
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    for (size_t i = 0; i < n; i++)
        x[i] = value;
    return x;
}

/* x rounded to dtype (half) and widened back (exact): the values the kernels see. */
static uint16_t *to_half(const ct_kernels *k, const float *x, size_t n, ct_dtype dtype,
                         float *widened) {
    uint16_t *h = malloc(n * sizeof(uint16_t));
    CU_ASSERT_PTR_NOT_NULL_FATAL(h);
    CU_ASSERT_EQUAL_FATAL(k->cast(&k->ctx, h, dtype, x, CT_F32, n), CT_OK);
    if (widened) CU_ASSERT_EQUAL_FATAL(k->cast(&k->ctx, widened, CT_F32, h, dtype, n), CT_OK);
    return h;
}

static float *rounded_bf16(const ct_kernels *k, const float *x, size_t n) {
    float *r = malloc(n * sizeof(float));
    CU_ASSERT_PTR_NOT_NULL_FATAL(r);
    free(to_half(k, x, n, CT_BF16, r));
    return r;
}

static double relative_error(const float *a, const float *b, size_t n) {
    double diff = 0.0, norm = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff += ((double)a[i] - b[i]) * ((double)a[i] - b[i]);
        norm += (double)b[i] * b[i];
    }
    return norm > 0 ? sqrt(diff / norm) : sqrt(diff);
}

static void check_close(const char *what, const float *a, const float *b, size_t n, double tol) {
    double err = relative_error(a, b, n);
    if (!(err <= tol)) printf("\n  %s: relative error %.3g > %.3g\n", what, err, tol);
    CU_ASSERT(err <= tol);
}

static void check_bitwise(const char *what, const float *a, const float *b, size_t n) {
    bool same = memcmp(a, b, n * sizeof(float)) == 0;
    if (!same)
        printf("\n  %s: not bitwise equal (relative error %.3g)\n", what, relative_error(a, b, n));
    CU_ASSERT(same);
}

/* The table of a path; NULL (with a note) when this CPU has no native bf16. */
static const ct_kernels *table(ct_half_path path) {
    if (path == CT_HALF_NATIVE) {
        ct_half_path got;
        if (ct_kern_cpu_half_path_for("native", &got) != CT_OK) {
            printf("\n  native path skipped here: %s\n", ct_error_message());
            ct_error_clear();
            return NULL;
        }
    }
    return ct_kern_cpu(CT_BLAS_OPENBLAS, path);
}

/* ---------------------------------------------------------------- the chooser */

static void test_the_half_chooser_takes_each_name_and_refuses_others(void) {
    ct_half_path path;
    CU_ASSERT_EQUAL(ct_kern_cpu_half_path_for("portable", &path), CT_OK);
    CU_ASSERT_EQUAL(path, CT_HALF_PORTABLE);
    CU_ASSERT_EQUAL(ct_kern_cpu_half_path_for("auto", &path), CT_OK);
    ct_half_path forced;
    if (ct_kern_cpu_half_path_for("native", &forced) == CT_OK) {
        CU_ASSERT_EQUAL(forced, CT_HALF_NATIVE);
    } else {
        CU_ASSERT(strstr(ct_error_message(), "half_kernels") != NULL);
        CU_ASSERT_EQUAL(path, CT_HALF_PORTABLE); /* auto never picks what cannot run */
    }
    CU_ASSERT_EQUAL(ct_kern_cpu_half_path_for("fast", &path), CT_ERR_INVALID);
    CU_ASSERT(strstr(ct_error_message(), "\"fast\"") != NULL);
    const ct_kernels *k = ct_kern_cpu(CT_BLAS_ONEDNN, CT_HALF_NATIVE);
    CU_ASSERT(k->ctx.cpu_blas == CT_BLAS_ONEDNN && k->ctx.cpu_half == CT_HALF_NATIVE);
    k = ct_kern_cpu(CT_BLAS_OPENBLAS, CT_HALF_PORTABLE);
    CU_ASSERT(k->ctx.cpu_blas == CT_BLAS_OPENBLAS && k->ctx.cpu_half == CT_HALF_PORTABLE);
    const ct_kernels *f32 = ct_kern_cpu(CT_BLAS_OPENBLAS, CT_HALF_PORTABLE);
    CU_ASSERT_EQUAL(f32->matmul_fwd_half(&f32->ctx, NULL, NULL, NULL, NULL, CT_F32, 1, 1, 1),
                    CT_ERR_INVALID);
}

/* ---------------------------------------------------------------- Linear */

/* Forward and backward of one Linear on `path` with weights in `dtype`. */
static void check_matmul(ct_half_path path, ct_dtype dtype) {
    const ct_kernels *k = table(path);
    if (!k) return;
    const ct_kernels *f = ct_kern_cpu(CT_BLAS_OPENBLAS, CT_HALF_PORTABLE);
    bool native = path == CT_HALF_NATIVE;
    size_t nx = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    float *x = random_floats(nx, 1), *w = random_floats(nw, 2), *b = random_floats(OC, 3);
    float *dout = random_floats(no, 4);
    float *w32 = malloc(nw * sizeof(float)), *b32 = malloc(OC * sizeof(float));
    uint16_t *wh = to_half(k, w, nw, dtype, w32), *bh = to_half(k, b, OC, dtype, b32);
    /* the operands the f32 twin is given: the native path's rounded activations */
    float *xr = native ? rounded_bf16(k, x, nx) : x,
          *doutr = native ? rounded_bf16(k, dout, no) : dout;

    float *out = malloc(no * sizeof(float)), *ref = malloc(no * sizeof(float));
    CU_ASSERT_EQUAL(k->matmul_fwd_half(&k->ctx, out, x, wh, bh, dtype, N, C, OC), CT_OK);
    f->matmul_fwd(&f->ctx, ref, xr, w32, b32, N, C, OC);
    float *dx = filled(nx, PREFILL), *dw = filled(nw, PREFILL), *db = filled(OC, PREFILL);
    float *rdx = filled(nx, PREFILL), *rdw = filled(nw, PREFILL), *rdb = filled(OC, PREFILL);
    CU_ASSERT_EQUAL(k->matmul_bwd_half(&k->ctx, dx, dw, db, dout, x, wh, dtype, N, C, OC), CT_OK);
    f->matmul_bwd(&f->ctx, rdx, NULL, NULL, doutr, xr, w32, N, C, OC);
    f->matmul_bwd(&f->ctx, NULL, rdw, NULL, doutr, xr, w32, N, C, OC);
    f->matmul_bwd(&f->ctx, NULL, NULL, rdb, dout, x, w32, N, C, OC); /* dbias: f32 dout */
    if (native) {
        check_close("matmul out", out, ref, no, SAME_OPERANDS_TOL);
        check_close("matmul dinp", dx, rdx, nx, SAME_OPERANDS_TOL);
        check_close("matmul dweight", dw, rdw, nw, SAME_OPERANDS_TOL);
    } else {
        check_bitwise("matmul out", out, ref, no);
        check_bitwise("matmul dinp", dx, rdx, nx);
        check_bitwise("matmul dweight", dw, rdw, nw);
    }
    check_bitwise("matmul dbias", db, rdb, OC);
    /* and the f32 twin on the unrounded values, to bf16's accuracy */
    f->matmul_fwd(&f->ctx, ref, x, w, b, N, C, OC);
    check_close("matmul out vs f32", out, ref, no, BF16_TOL);
    free(x), free(w), free(b), free(dout), free(w32), free(b32), free(wh), free(bh);
    if (native) free(xr), free(doutr);
    free(out), free(ref), free(dx), free(dw), free(db), free(rdx), free(rdw), free(rdb);
}

static void test_matmul_portable_bf16(void) {
    check_matmul(CT_HALF_PORTABLE, CT_BF16);
}
static void test_matmul_portable_f16(void) {
    check_matmul(CT_HALF_PORTABLE, CT_F16);
}
static void test_matmul_native_bf16(void) {
    check_matmul(CT_HALF_NATIVE, CT_BF16);
}
static void test_matmul_native_f16_takes_the_portable_path(void) {
    const ct_kernels *k = table(CT_HALF_NATIVE);
    if (!k) return;
    /* f16 on the native table: widened (oneDNN bf16 only), so bitwise the f32 twin's */
    const ct_kernels *f = ct_kern_cpu(CT_BLAS_OPENBLAS, CT_HALF_PORTABLE);
    size_t nx = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    float *x = random_floats(nx, 5), *w = random_floats(nw, 6), *w32 = malloc(nw * sizeof(float));
    uint16_t *wh = to_half(k, w, nw, CT_F16, w32);
    float *out = malloc(no * sizeof(float)), *ref = malloc(no * sizeof(float));
    CU_ASSERT_EQUAL(k->matmul_fwd_half(&k->ctx, out, x, wh, NULL, CT_F16, N, C, OC), CT_OK);
    f->matmul_fwd(&f->ctx, ref, x, w32, NULL, N, C, OC);
    check_bitwise("f16 matmul on the native table", out, ref, no);
    free(x), free(w), free(w32), free(wh), free(out), free(ref);
}

/* ---------------------------------------------------------------- embedding */

static void check_embedding(ct_half_path path, ct_dtype dtype) {
    const ct_kernels *k = table(path);
    if (!k) return;
    const ct_kernels *f = ct_kern_cpu(CT_BLAS_OPENBLAS, CT_HALF_PORTABLE);
    int B = 3, T = 5, vocab = 11;
    int32_t tokens[15];
    for (int i = 0; i < B * T; i++)
        tokens[i] = (i * 7 + 3) % vocab;
    float *wte = random_floats((size_t)vocab * C, 7), *wpe = random_floats((size_t)T * C, 8);
    float *wte32 = malloc((size_t)vocab * C * sizeof(float));
    float *wpe32 = malloc((size_t)T * C * sizeof(float));
    uint16_t *wteh = to_half(k, wte, (size_t)vocab * C, dtype, wte32);
    uint16_t *wpeh = to_half(k, wpe, (size_t)T * C, dtype, wpe32);
    size_t no = (size_t)B * T * C;
    float *out = malloc(no * sizeof(float)), *ref = malloc(no * sizeof(float));
    CU_ASSERT_EQUAL(k->embedding_fwd_half(&k->ctx, out, tokens, wteh, wpeh, dtype, B, T, C), CT_OK);
    f->embedding_fwd(&f->ctx, ref, tokens, wte32, wpe32, B, T, C);
    check_bitwise("embedding", out, ref, no);
    free(wte), free(wpe), free(wte32), free(wpe32), free(wteh), free(wpeh), free(out), free(ref);
}

static void test_embedding_every_path_and_dtype(void) {
    check_embedding(CT_HALF_PORTABLE, CT_BF16);
    check_embedding(CT_HALF_PORTABLE, CT_F16);
    check_embedding(CT_HALF_NATIVE, CT_BF16);
}

/* ---------------------------------------------------------------- the LM head */

static void check_lm_head(ct_half_path path, ct_dtype dtype) {
    const ct_kernels *k = table(path);
    if (!k) return;
    const ct_kernels *f = ct_kern_cpu(CT_BLAS_OPENBLAS, CT_HALF_PORTABLE);
    bool native = path == CT_HALF_NATIVE;
    size_t nx = (size_t)N * C, nw = (size_t)V * C;
    float *x = random_floats(nx, 9), *w = random_floats(nw, 10), *w32 = malloc(nw * sizeof(float));
    uint16_t *wh = to_half(k, w, nw, dtype, w32);
    float *xr = native ? rounded_bf16(k, x, nx) : x;
    int32_t targets[37];
    for (int n = 0; n < N; n++)
        targets[n] = n % 9 == 4 ? -1 : (n * 31 + 5) % V;
    float *losses = malloc(N * sizeof(float)), *rlosses = malloc(N * sizeof(float));
    float *scratch = malloc((size_t)CHUNK * V * sizeof(float));
    float *dx = filled(nx, PREFILL), *dw = filled(nw, PREFILL);
    float *rdx = filled(nx, PREFILL), *rdw = filled(nw, PREFILL);
    CU_ASSERT_EQUAL(k->lm_head_loss_half(&k->ctx, losses, dx, dw, x, wh, dtype, targets, N, C, V,
                                         0.5f, scratch, CHUNK),
                    CT_OK);
    f->lm_head_loss(&f->ctx, rlosses, rdx, rdw, xr, w32, targets, N, C, V, 0.5f, scratch, CHUNK);
    for (int n = 0; n < N; n++)
        if (targets[n] < 0) CU_ASSERT_EQUAL(losses[n], 0.0f);
    float *logits = malloc((size_t)N * V * sizeof(float));
    float *rlogits = malloc((size_t)N * V * sizeof(float));
    CU_ASSERT_EQUAL(k->lm_head_logits_half(&k->ctx, logits, x, wh, dtype, N, C, V), CT_OK);
    f->lm_head_logits(&f->ctx, rlogits, xr, w32, N, C, V);
    if (native) {
        check_close("lm_head losses", losses, rlosses, N, SAME_OPERANDS_TOL);
        check_close("lm_head logits", logits, rlogits, (size_t)N * V, SAME_OPERANDS_TOL);
        /* d(logits) is rounded to bf16 for the two gradient GEMMs: bf16's accuracy */
        check_close("lm_head dx", dx, rdx, nx, BF16_TOL);
        check_close("lm_head dwte", dw, rdw, nw, BF16_TOL);
    } else {
        check_bitwise("lm_head losses", losses, rlosses, N);
        check_bitwise("lm_head logits", logits, rlogits, (size_t)N * V);
        check_bitwise("lm_head dx", dx, rdx, nx);
        check_bitwise("lm_head dwte", dw, rdw, nw);
    }
    f->lm_head_loss(&f->ctx, rlosses, NULL, NULL, x, w, targets, N, C, V, 0.5f, scratch, CHUNK);
    check_close("lm_head losses vs f32", losses, rlosses, N, BF16_TOL);
    free(x), free(w), free(w32), free(wh), free(losses), free(rlosses), free(scratch);
    if (native) free(xr);
    free(dx), free(dw), free(rdx), free(rdw), free(logits), free(rlogits);
}

static void test_lm_head_portable_bf16_and_f16(void) {
    check_lm_head(CT_HALF_PORTABLE, CT_BF16);
    check_lm_head(CT_HALF_PORTABLE, CT_F16);
}
static void test_lm_head_native_bf16(void) {
    check_lm_head(CT_HALF_NATIVE, CT_BF16);
}

/* ---------------------------------------------------------------- the ops */

/* A parameter tensor on the tape: `dtype` data from vals, an f32 gradient filled with PREFILL. */
static ct_tensor *param(ct_tape *tape, ct_dtype dtype, int ndim, const int64_t *shape,
                        const float *vals) {
    ct_tensor *t = ct_tape_tensor(tape, dtype, ndim, shape);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    size_t n = (size_t)ct_tensor_numel(t);
    CU_ASSERT_EQUAL_FATAL(tape->kernels->cast(&tape->kernels->ctx, t->data, dtype, vals, CT_F32, n),
                          CT_OK);
    t->requires_grad = true;
    t->grad_dtype = CT_F32;
    float *g = ct_tape_grad(tape, t);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    for (size_t i = 0; i < n; i++)
        g[i] = PREFILL;
    return t;
}

typedef struct {
    float loss;
    float *grads[7]; /* copies: x's, then the six parameters' */
    size_t sizes[7];
} op_run;

/* embedding -> layernorm -> linear -> lm_head_loss with parameters in `dtype` (of the values
 * `vals`, already representable in it), backward, on the portable table; grads copied out. */
static void run_ops(ct_dtype dtype, float *const vals[6], op_run *run) {
    const ct_kernels *k = ct_kern_cpu(CT_BLAS_OPENBLAS, CT_HALF_PORTABLE);
    ct_tape tape;
    ct_tape_init(&tape, k);
    ct_tape_set_capacity(&tape, 64u << 20);
    int B = 3, T = 5, vocab = 23, c = 12;
    int32_t tok[15], tgt[15];
    for (int i = 0; i < B * T; i++)
        tok[i] = (i * 5 + 1) % vocab, tgt[i] = (i * 3 + 2) % vocab;
    int64_t bt[2] = {B, T}, wte_shape[2] = {vocab, c}, wpe_shape[2] = {T, c}, cs[1] = {c};
    int64_t lin_shape[2] = {c, c};
    ct_tensor *tokens = ct_tape_upload(&tape, CT_I32, 2, bt, tok);
    ct_tensor *targets = ct_tape_upload(&tape, CT_I32, 2, bt, tgt);
    ct_tensor *p[6] = {
        param(&tape, dtype, 2, wte_shape, vals[0]), param(&tape, dtype, 2, wpe_shape, vals[1]),
        param(&tape, dtype, 1, cs, vals[2]),        param(&tape, dtype, 1, cs, vals[3]),
        param(&tape, dtype, 2, lin_shape, vals[4]), param(&tape, dtype, 1, cs, vals[5])};
    ct_tensor *x = ct_op_embedding(&tape, tokens, p[0], p[1]);
    ct_tensor *h = ct_op_layernorm(&tape, x, p[2], p[3]);
    ct_tensor *y = ct_op_linear(&tape, h, p[4], p[5]);
    ct_tensor *loss = ct_op_lm_head_loss(&tape, y, p[0], targets, 1.0f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(loss);
    CU_ASSERT_EQUAL_FATAL(ct_tape_backward(&tape), CT_OK);
    CU_ASSERT_EQUAL(ct_tape_read_scalar(&tape, loss, &run->loss), CT_OK);
    ct_tensor *with_grads[7] = {x, p[0], p[1], p[2], p[3], p[4], p[5]};
    for (int i = 0; i < 7; i++) {
        run->sizes[i] = (size_t)ct_tensor_numel(with_grads[i]);
        run->grads[i] = malloc(run->sizes[i] * sizeof(float));
        memcpy(run->grads[i], with_grads[i]->grad, run->sizes[i] * sizeof(float));
    }
    ct_tape_free(&tape);
}

static void test_ops_on_half_parameters_equal_the_f32_ops_on_their_values(void) {
    const ct_kernels *k = ct_kern_cpu(CT_BLAS_OPENBLAS, CT_HALF_PORTABLE);
    size_t sizes[6] = {23 * 12, 5 * 12, 12, 12, 12 * 12, 12};
    for (int d = 0; d < 2; d++) {
        ct_dtype dtype = d == 0 ? CT_BF16 : CT_F16;
        float *vals[6];
        for (int i = 0; i < 6; i++) {
            float *v = random_floats(sizes[i], 40 + (uint32_t)i);
            vals[i] = malloc(sizes[i] * sizeof(float));
            free(to_half(k, v, sizes[i], dtype, vals[i])); /* representable in dtype */
            free(v);
        }
        op_run half = {0}, f32 = {0};
        run_ops(dtype, vals, &half);
        run_ops(CT_F32, vals, &f32);
        CU_ASSERT(isfinite(half.loss) && half.loss == f32.loss);
        for (int i = 0; i < 7; i++) {
            check_bitwise(i == 0 ? "d(embedding out)" : "a parameter's gradient", half.grads[i],
                          f32.grads[i], half.sizes[i]);
            free(half.grads[i]), free(f32.grads[i]);
        }
        for (int i = 0; i < 6; i++)
            free(vals[i]);
    }
}

int main(void) {
    const ct_test_case cases[] = {
        {"test_the_half_chooser_takes_each_name_and_refuses_others",
         test_the_half_chooser_takes_each_name_and_refuses_others},
        {"test_matmul_portable_bf16", test_matmul_portable_bf16},
        {"test_matmul_portable_f16", test_matmul_portable_f16},
        {"test_matmul_native_bf16", test_matmul_native_bf16},
        {"test_matmul_native_f16_takes_the_portable_path",
         test_matmul_native_f16_takes_the_portable_path},
        {"test_embedding_every_path_and_dtype", test_embedding_every_path_and_dtype},
        {"test_lm_head_portable_bf16_and_f16", test_lm_head_portable_bf16_and_f16},
        {"test_lm_head_native_bf16", test_lm_head_native_bf16},
        {"test_ops_on_half_parameters_equal_the_f32_ops_on_their_values",
         test_ops_on_half_parameters_equal_the_f32_ops_on_their_values},
    };
    return ct_test_run("half", cases, (int)CT_ARRAY_LEN(cases));
}
