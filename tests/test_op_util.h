/*
 * Shared by the op gradient checks (tests/test_op_<op>.c). Each op file writes a naive float64
 * reference forward and checks the fp32 op (on a ct_tape with the CPU kernels) against it: the
 * forward values, and every input's gradient against central finite differences of the
 * objective L = sum(out * R) (R fixed and random) computed on the float64 reference.
 *
 * Inputs come from the project's counter-based generator and are rounded to float, so the
 * float64 reference is evaluated at exactly the fp32 op's inputs.
 *
 * Tolerances, used by every op file:
 *  - forward: |fp32 - f64| <= 1e-5 * max(|f64|, 1) per element. Inputs are O(1) and every
 *    output is a sum of at most a few dozen O(1) terms; fp32's unit roundoff is 6e-8, so the
 *    accumulated rounding stays near 1e-6. An indexing bug gives O(1) errors.
 *  - gradients: ||a - f||_2 / ||f||_2 < 1e-4 for each input's whole gradient, and sampled
 *    elements within 1e-4 * max(|f_i|, rms(f)) (rms as the floor: an element that cancels to
 *    near zero is judged on the gradient's scale, not its own). The FD gradient is accurate to
 *    about 1e-9 (h = 1e-6 in double: truncation ~h^2, cancellation ~1e-16 |L| / h), so what is
 *    measured is the fp32 rounding of forward and backward (~1e-6 relative); 1e-4 is 100x that.
 *  - accumulation: gradient buffers are pre-filled with OP_PREFILL and the kernels must add to
 *    it (+=): the checks subtract the fill first, so a kernel that overwrites fails by O(1).
 *    Storing fill + g in fp32 costs half an ulp of 0.375, 1.5e-8 absolute: ~2e-6 relative for
 *    the smallest gradients here (the LM head's, ~1e-2), well inside 1e-4.
 */
#ifndef CT_TEST_OP_UTIL_H
#define CT_TEST_OP_UTIL_H

#include "common/common.h"
#include "kernels/kernels.h"
#include "model/model.h"
#include "tests/test_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define OP_FWD_TOL 1e-5
#define OP_GRAD_L2_TOL 1e-4
#define OP_GRAD_ELEM_TOL 1e-4
#define OP_FD_H 1e-6
/* A non-zero gradient fill, exactly representable, for the accumulation checks. */
#define OP_PREFILL 0.375f

/* ---------------------------------------------------------------- random inputs */

typedef struct {
    uint64_t key;  /* normals */
    uint64_t ikey; /* integers */
    uint64_t next;
} op_rng;

static inline op_rng op_rng_init(uint64_t seed) {
    op_rng r = {ct_rng_key(seed, 1, 0, 0), ct_rng_key(seed, 2, 0, 0), 0};
    return r;
}

static inline double op_normal(op_rng *r) {
    return ct_rng_normal(r->key, r->next++);
}

/* Uniform integer in [lo, hi]. */
static inline int op_int(op_rng *r, int lo, int hi) {
    return lo + (int)(ct_rng_uniform(r->ikey, r->next++) * (hi - lo + 1));
}

/* n doubles = offset + scale * N(0,1), each rounded to float; free() it. */
static inline double *op_normal_array(op_rng *r, size_t n, double offset, double scale) {
    double *x = malloc(n * sizeof(double));
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    for (size_t i = 0; i < n; i++)
        x[i] = (double)(float)(offset + scale * op_normal(r));
    return x;
}

static inline double *op_zeros(size_t n) {
    double *x = calloc(n ? n : 1, sizeof(double));
    CU_ASSERT_PTR_NOT_NULL_FATAL(x);
    return x;
}

/* The largest errors a test measured, printed at its end. */
typedef struct {
    double fwd;       /* max |a - r| / max(|r|, 1) */
    double grad_l2;   /* max over gradients of ||a - f|| / ||f|| */
    double grad_elem; /* max over sampled elements of |a - f| / max(|f|, rms f) */
} op_errors;

/* One op check at an input shape: the op at (ndim, shape), gradients prefilled with `prefill`,
 * inputs drawn from `seed`. */
typedef void (*op_shape_check)(op_errors *e, int ndim, const int64_t *shape, float prefill,
                               uint64_t seed);

/* `count` checks at 3-D (B,T,C) shapes drawn with odd ranges (B 2..3, T 5..13, C 6..20), the
 * k-th with seed first_seed + k. */
static inline void op_check_random_btc(op_errors *e, op_rng *rng, int count, op_shape_check check,
                                       uint64_t first_seed) {
    for (int k = 0; k < count; k++) {
        int64_t s3[3] = {op_int(rng, 2, 3), op_int(rng, 5, 13), op_int(rng, 6, 20)};
        check(e, 3, s3, 0.0f, first_seed + (uint64_t)k);
    }
}

/* ---------------------------------------------------------------- tensors on the tape */

/* The CPU kernel table, through the one chooser, at its default thread count. */
static inline const ct_kernels *op_kernels(void) {
    const ct_kernels *k = NULL;
    CU_ASSERT_EQUAL_FATAL(
        ct_kernels_for_device(&(ct_kernels_options){"cpu", 0, "auto", "auto"}, &k), CT_OK);
    return k;
}

/* An f32 tensor from the tape's arena holding `vals`, with requires_grad set and its gradient
 * buffer (from the arena) filled with grad_fill. */
static inline ct_tensor *op_tensor(ct_tape *tape, int ndim, const int64_t *shape,
                                   const double *vals, float grad_fill) {
    ct_tensor *t = ct_tape_tensor(tape, CT_F32, ndim, shape);
    CU_ASSERT_PTR_NOT_NULL_FATAL(t);
    size_t n = (size_t)ct_tensor_numel(t);
    for (size_t i = 0; i < n; i++)
        ct_tensor_f32(t)[i] = (float)vals[i];
    t->requires_grad = true;
    float *g = ct_tape_grad(tape, t);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    for (size_t i = 0; i < n; i++)
        g[i] = grad_fill;
    return t;
}

/* Seeds backward: out->grad = R (the gradient of L = sum(out * R) with respect to out). */
static inline void op_seed_grad(ct_tape *tape, ct_tensor *out, const double *R) {
    float *g = ct_tape_grad(tape, out);
    CU_ASSERT_PTR_NOT_NULL_FATAL(g);
    size_t n = (size_t)ct_tensor_numel(out);
    for (size_t i = 0; i < n; i++)
        g[i] = (float)R[i];
}

/* An op's output: not NULL, with `ndim` dimensions of `shape`. */
static inline void op_check_shape(const ct_tensor *out, int ndim, const int64_t *shape) {
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(out->ndim, ndim);
    CU_ASSERT_EQUAL(memcmp(out->shape, shape, sizeof(int64_t) * (size_t)ndim), 0);
}

/* ---------------------------------------------------------------- float64 helpers */

static inline double op_dot(const double *a, const double *b, size_t n) {
    double s = 0.0;
    for (size_t i = 0; i < n; i++)
        s += a[i] * b[i];
    return s;
}

/* The float64 objective of one op: reads its inputs through ctx. */
typedef double (*op_objective)(void *ctx);

/* grad[i] = (L(x + h e_i) - L(x - h e_i)) / 2h for the n elements of x (one of the arrays ctx
 * reads), restoring x exactly afterwards. */
static inline void op_fd_grad(op_objective objective, void *ctx, double *x, size_t n,
                              double *grad) {
    for (size_t i = 0; i < n; i++) {
        double saved = x[i];
        x[i] = saved + OP_FD_H;
        double plus = objective(ctx);
        x[i] = saved - OP_FD_H;
        double minus = objective(ctx);
        x[i] = saved;
        grad[i] = (plus - minus) / (2.0 * OP_FD_H);
    }
}

/* ---------------------------------------------------------------- comparisons */

static inline void op_check_fwd(op_errors *e, const char *label, const float *a, const double *r,
                                size_t n) {
    double worst = 0.0;
    size_t at = 0;
    for (size_t i = 0; i < n; i++) {
        double err = fabs((double)a[i] - r[i]) / fmax(fabs(r[i]), 1.0);
        if (err > worst) worst = err, at = i;
    }
    if (worst > e->fwd) e->fwd = worst;
    CU_ASSERT(worst <= OP_FWD_TOL);
    if (worst > OP_FWD_TOL)
        printf("\n  %s forward: element %zu is %.9g, float64 says %.9g (error %.3g)\n", label, at,
               (double)a[at], r[at], worst);
}

/* Compares an fp32 gradient a (which started at `prefill`) with the FD gradient f. */
static inline void op_check_grad(op_errors *e, const char *label, const float *a, float prefill,
                                 const double *f, size_t n) {
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    double diff2 = 0.0, norm2 = 0.0;
    for (size_t i = 0; i < n; i++) {
        double d = ((double)a[i] - prefill) - f[i];
        diff2 += d * d;
        norm2 += f[i] * f[i];
    }
    CU_ASSERT_FATAL(norm2 > 0.0); /* every checked gradient is non-trivial */
    double rel = sqrt(diff2 / norm2), rms = sqrt(norm2 / (double)n);
    if (rel > e->grad_l2) e->grad_l2 = rel;
    CU_ASSERT(rel < OP_GRAD_L2_TOL);
    if (rel >= OP_GRAD_L2_TOL) printf("\n  %s: relative L2 error %.3g\n", label, rel);
    /* A few individual elements: both ends, the middle and two in between. */
    size_t picks[5] = {0, n / 4, n / 2, (3 * n) / 4, n - 1};
    for (int k = 0; k < 5; k++) {
        size_t i = picks[k];
        double err = fabs(((double)a[i] - prefill) - f[i]) / fmax(fabs(f[i]), rms);
        if (err > e->grad_elem) e->grad_elem = err;
        CU_ASSERT(err < OP_GRAD_ELEM_TOL);
        if (err >= OP_GRAD_ELEM_TOL)
            printf("\n  %s: element %zu is %.9g, FD says %.9g\n", label, i, (double)a[i] - prefill,
                   f[i]);
    }
}

/* The gradient of one input against finite differences: fd (n doubles, the caller's) receives
 * the FD gradient of `objective` with respect to x (the reference's copy of the input), and
 * `grad` (the op's, which started at prefill) is checked against it; `input` names it. */
static inline void op_check_input_grad(op_errors *e, const char *label, const char *input,
                                       op_objective objective, void *ctx, double *x, size_t n,
                                       const void *grad, float prefill, double *fd) {
    char glabel[160];
    op_fd_grad(objective, ctx, x, n, fd);
    snprintf(glabel, sizeof(glabel), "%s %s", label, input);
    op_check_grad(e, glabel, grad, prefill, fd, n);
}

static inline void op_report(const char *what, const op_errors *e) {
    printf("\n  %s: max forward error %.2e, max gradient rel L2 %.2e, max element error %.2e ",
           what, e->fwd, e->grad_l2, e->grad_elem);
}

/* The accumulation check of an op: its gradients, prefilled with OP_PREFILL, at a 3-D shape. */
static inline void op_check_prefilled(const char *what, op_shape_check check, int64_t B, int64_t T,
                                      int64_t C) {
    op_errors e = {0};
    const int64_t s3[3] = {B, T, C};
    check(&e, 3, s3, OP_PREFILL, 20);
    op_report(what, &e);
}

#endif
