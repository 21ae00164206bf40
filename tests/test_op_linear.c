/*
 * Gradient check of ct_op_linear (model/ops/linear.c, kernels/cpu/matmul.c): out = x W^T + b
 * with W (OC,C), against a float64 reference and central finite differences of
 * L = sum(out * R) in float64, for 2-D and 3-D x, with and without bias, and with an x that
 * needs no gradient. Tolerances and their reasons: tests/test_op_util.h.
 */
#include "tests/test_op_util.h"

#include <string.h>

/* The float64 reference: x (N,C), w (OC,C), b (OC) or NULL -> out (N,OC). */
typedef struct {
    int N, C, OC;
    double *x, *w, *b, *R, *out;
} lin_ref;

static void lin_ref_forward(const lin_ref *r) {
    for (int n = 0; n < r->N; n++)
        for (int o = 0; o < r->OC; o++) {
            double s = r->b ? r->b[o] : 0.0;
            for (int i = 0; i < r->C; i++)
                s += r->x[(size_t)n * r->C + i] * r->w[(size_t)o * r->C + i];
            r->out[(size_t)n * r->OC + o] = s;
        }
}

static double lin_ref_objective(void *ctx) {
    lin_ref *r = ctx;
    lin_ref_forward(r);
    return op_dot(r->out, r->R, (size_t)r->N * r->OC);
}

/* One case: x of shape `xshape` (last dim C), OC outputs. x_grad false wraps x without a
 * gradient (the kernel is then passed dinp = NULL and x must get none). */
static void check_linear(op_errors *e, int ndim, const int64_t *xshape, int OC, bool with_bias,
                         bool x_grad, float prefill, uint64_t seed) {
    op_rng rng = op_rng_init(seed);
    int C = (int)xshape[ndim - 1], N = 1;
    for (int d = 0; d < ndim - 1; d++)
        N *= (int)xshape[d];
    size_t nx = (size_t)N * C, nw = (size_t)OC * C, no = (size_t)N * OC;
    lin_ref r = {N,
                 C,
                 OC,
                 op_normal_array(&rng, nx, 0.0, 1.0),
                 op_normal_array(&rng, nw, 0.0, 0.5),
                 with_bias ? op_normal_array(&rng, OC, 0.0, 0.5) : NULL,
                 op_normal_array(&rng, no, 0.0, 1.0),
                 op_zeros(no)};
    char label[96];
    snprintf(label, sizeof(label), "linear N=%d C=%d OC=%d ndim=%d bias=%d xgrad=%d prefill=%g", N,
             C, OC, ndim, with_bias, x_grad, (double)prefill);

    ct_tape tape;
    ct_tape_init(&tape, op_kernels());
    int64_t wshape[2] = {OC, C}, bshape[1] = {OC};
    ct_tensor *x = op_tensor(&tape, ndim, xshape, r.x, prefill);
    if (!x_grad) {
        x->requires_grad = false;
        x->grad = NULL;
    }
    ct_tensor *w = op_tensor(&tape, 2, wshape, r.w, prefill);
    ct_tensor *b = with_bias ? op_tensor(&tape, 1, bshape, r.b, prefill) : NULL;
    ct_tensor *out = ct_op_linear(&tape, x, w, b);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT_EQUAL(out->ndim, ndim);
    CU_ASSERT_EQUAL(memcmp(out->shape, xshape, sizeof(int64_t) * (ndim - 1)), 0);
    CU_ASSERT_EQUAL(out->shape[ndim - 1], OC);

    lin_ref_forward(&r);
    op_check_fwd(e, label, ct_tensor_f32(out), r.out, no);

    op_seed_grad(&tape, out, r.R);
    CU_ASSERT_EQUAL(ct_tape_backward(&tape), CT_OK);

    double *fd = op_zeros(nx > nw ? nx : nw);
    if (x_grad) {
        op_check_input_grad(e, label, "dx", lin_ref_objective, &r, r.x, nx, x->grad, prefill, fd);
    } else {
        CU_ASSERT_PTR_NULL(x->grad); /* no gradient was made for an input that needs none */
    }
    op_check_input_grad(e, label, "dweight", lin_ref_objective, &r, r.w, nw, w->grad, prefill, fd);
    if (with_bias) {
        op_check_input_grad(e, label, "dbias", lin_ref_objective, &r, r.b, OC, b->grad, prefill,
                            fd);
    }

    free(fd);
    free(r.x), free(r.w), free(r.b), free(r.R), free(r.out);
    ct_tape_free(&tape);
}

static void test_linear_fwd_and_grad_match_float64_fd_odd_shapes(void) {
    op_errors e = {0};
    op_rng rng = op_rng_init(202);
    const int64_t s2[2] = {11, 7};
    check_linear(&e, 2, s2, 13, true, true, 0.0f, 1);
    /* 3-D x (B,T,C) with B 2..3, T 5..13, C 6..20 and odd OC in 5..21 */
    for (int k = 0; k < 4; k++) {
        int64_t s3[3] = {op_int(&rng, 2, 3), op_int(&rng, 5, 13), op_int(&rng, 6, 20)};
        check_linear(&e, 3, s3, 2 * op_int(&rng, 2, 10) + 1, true, true, 0.0f, 10 + k);
    }
    op_report("linear", &e);
}

static void test_linear_without_bias_matches_float64_fd(void) {
    op_errors e = {0};
    const int64_t s3[3] = {3, 5, 9}, s2[2] = {13, 15};
    check_linear(&e, 3, s3, 11, false, true, 0.0f, 20);
    check_linear(&e, 2, s2, 7, false, true, 0.0f, 21);
    op_report("linear no bias", &e);
}

static void test_linear_x_without_grad_gets_none_and_weight_grads_match(void) {
    op_errors e = {0};
    const int64_t s3[3] = {2, 7, 10};
    check_linear(&e, 3, s3, 9, true, false, 0.0f, 30);
    op_report("linear x without grad", &e);
}

static void test_linear_grads_accumulate_into_prefilled_buffers(void) {
    op_errors e = {0};
    const int64_t s3[3] = {3, 13, 19};
    check_linear(&e, 3, s3, 17, true, true, OP_PREFILL, 40);
    op_report("linear accumulate", &e);
}

CT_TEST_MAIN("op_linear", CT_TEST(test_linear_fwd_and_grad_match_float64_fd_odd_shapes),
             CT_TEST(test_linear_without_bias_matches_float64_fd),
             CT_TEST(test_linear_x_without_grad_gets_none_and_weight_grads_match),
             CT_TEST(test_linear_grads_accumulate_into_prefilled_buffers))
