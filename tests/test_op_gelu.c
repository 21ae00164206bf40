/*
 * Gradient check of ct_op_gelu (model/ops/gelu.c, kernels/cpu/elementwise.c): the tanh
 * approximation 0.5 x (1 + tanh(sqrt(2/pi) (x + 0.044715 x^3))) in float64 against the fp32 op,
 * forward and d(x) by central finite differences of L = sum(out * R), over a wide input range
 * (the tanh saturates beyond |x| ~ 3) plus hand-picked points. Tolerances: tests/test_op_util.h.
 */
#include "tests/test_op_util.h"

#include <string.h>

/* The float64 reference, elementwise over n. */
typedef struct {
    size_t n;
    double *x, *R, *out;
} gelu_ref;

static void gelu_ref_forward(const gelu_ref *r) {
    const double k = sqrt(2.0 / acos(-1.0)); /* sqrt(2/pi) */
    for (size_t i = 0; i < r->n; i++) {
        double x = r->x[i];
        r->out[i] = 0.5 * x * (1.0 + tanh(k * (x + 0.044715 * x * x * x)));
    }
}

static double gelu_ref_objective(void *ctx) {
    gelu_ref *r = ctx;
    gelu_ref_forward(r);
    return op_dot(r->out, r->R, r->n);
}

/* Points where the tanh is linear, curved and saturated, zero and both signs. */
static const double special_x[] = {0.0,  1e-3, -1e-3, 0.5, -0.5, 1.0,  -1.0, 2.5,
                                   -2.5, 4.0,  -4.0,  6.0, -6.0, 10.0, -10.0};

static void check_gelu(op_errors *e, int ndim, const int64_t *shape, float prefill, uint64_t seed) {
    op_rng rng = op_rng_init(seed);
    size_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= (size_t)shape[d];
    gelu_ref r = {n, op_normal_array(&rng, n, 0.0, 2.0), op_normal_array(&rng, n, 0.0, 1.0),
                  op_zeros(n)};
    size_t n_special = sizeof(special_x) / sizeof(special_x[0]);
    for (size_t i = 0; i < n_special && i < n; i++)
        r.x[i * 3 % n] = special_x[i];
    char label[96];
    snprintf(label, sizeof(label), "gelu n=%zu ndim=%d prefill=%g", n, ndim, (double)prefill);

    ct_tape tape;
    ct_tape_init(&tape, op_kernels());
    ct_tensor *x = op_tensor(&tape, ndim, shape, r.x, prefill);
    ct_tensor *out = ct_op_gelu(&tape, x);
    op_check_shape(out, ndim, shape);

    gelu_ref_forward(&r);
    op_check_fwd(e, label, ct_tensor_f32(out), r.out, n);

    op_seed_grad(&tape, out, r.R);
    CU_ASSERT_EQUAL(ct_tape_backward(&tape), CT_OK);

    double *fd = op_zeros(n);
    op_check_input_grad(e, label, "dx", gelu_ref_objective, &r, r.x, n, x->grad, prefill, fd);
    /* Elementwise, so every element is held to a bound, not just a sample: |a - f| <= 1e-4 *
     * max(|f|, 1). The floor is 1 (GELU' lies in [-0.17, 1.13]) because where the tanh
     * saturates, GELU' is a difference of O(1) fp32 terms (0.5 (1 + t) and 1 - t^2), so its
     * error is absolute: up to ~1e-6 (times |R|) at |x| ~ 4..5, and below x ~ -5.2 fp32 rounds
     * t to -1 and gives exactly 0 where float64 says ~1e-7. */
    double worst = 0.0;
    for (size_t i = 0; i < n; i++) {
        double err =
            fabs(((double)ct_tensor_grad_f32(x)[i] - prefill) - fd[i]) / fmax(fabs(fd[i]), 1.0);
        if (err > worst) worst = err;
    }
    CU_ASSERT(worst < OP_GRAD_ELEM_TOL);
    if (worst > e->grad_elem) e->grad_elem = worst;

    free(fd);
    free(r.x), free(r.R), free(r.out);
    ct_tape_free(&tape);
}

static void test_gelu_fwd_and_grad_match_float64_fd_odd_shapes(void) {
    op_errors e = {0};
    op_rng rng = op_rng_init(303);
    const int64_t s1[1] = {37}, s2[2] = {9, 13};
    check_gelu(&e, 1, s1, 0.0f, 1);
    check_gelu(&e, 2, s2, 0.0f, 2);
    op_check_random_btc(&e, &rng, 3, check_gelu, 10);
    op_report("gelu", &e);
}

static void test_gelu_grads_accumulate_into_prefilled_buffers(void) {
    op_check_prefilled("gelu accumulate", check_gelu, 3, 11, 15);
}

CT_TEST_MAIN("op_gelu", CT_TEST(test_gelu_fwd_and_grad_match_float64_fd_odd_shapes),
             CT_TEST(test_gelu_grads_accumulate_into_prefilled_buffers))
