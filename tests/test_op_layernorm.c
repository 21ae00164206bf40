/*
 * Gradient check of ct_op_layernorm (model/ops/layernorm.c, kernels/cpu/layernorm.c): the fp32
 * forward against a float64 reference (GPT-2: eps 1e-5, biased variance) and the gradients of
 * x, weight and bias against central finite differences of L = sum(out * R) in float64, on 2-D,
 * 3-D and 4-D inputs with odd sizes. Tolerances and their reasons: tests/test_op_util.h.
 */
#include "tests/test_op_util.h"

#include <string.h>

/* The float64 reference: x (N,C), w, b (C) -> out (N,C); L = sum(out * R). */
typedef struct {
    int N, C;
    double *x, *w, *b, *R, *out;
} ln_ref;

static void ln_ref_forward(const ln_ref *r) {
    for (int n = 0; n < r->N; n++) {
        const double *x = r->x + (size_t)n * r->C;
        double mean = 0.0, var = 0.0;
        for (int i = 0; i < r->C; i++)
            mean += x[i];
        mean /= r->C;
        for (int i = 0; i < r->C; i++)
            var += (x[i] - mean) * (x[i] - mean);
        var /= r->C; /* biased, as GPT-2 and PyTorch's LayerNorm */
        double rstd = 1.0 / sqrt(var + 1e-5);
        for (int i = 0; i < r->C; i++)
            r->out[(size_t)n * r->C + i] = (x[i] - mean) * rstd * r->w[i] + r->b[i];
    }
}

static double ln_ref_objective(void *ctx) {
    ln_ref *r = ctx;
    ln_ref_forward(r);
    return op_dot(r->out, r->R, (size_t)r->N * r->C);
}

/* One shape: forward and all three gradients, with every gradient buffer pre-filled with
 * `prefill` (0 or OP_PREFILL) and checked net of it. */
static void check_layernorm(op_errors *e, int ndim, const int64_t *shape, float prefill,
                            uint64_t seed) {
    op_rng rng = op_rng_init(seed);
    int C = (int)shape[ndim - 1], N = 1;
    for (int d = 0; d < ndim - 1; d++)
        N *= (int)shape[d];
    size_t nx = (size_t)N * C;
    /* A non-zero mean and spread, so the mean and variance terms both matter. */
    ln_ref r = {N,
                C,
                op_normal_array(&rng, nx, 0.5, 1.5),
                op_normal_array(&rng, C, 1.0, 0.3),
                op_normal_array(&rng, C, 0.0, 0.2),
                op_normal_array(&rng, nx, 0.0, 1.0),
                op_zeros(nx)};
    char label[96];
    snprintf(label, sizeof(label), "layernorm N=%d C=%d ndim=%d prefill=%g", N, C, ndim,
             (double)prefill);

    ct_tape tape;
    ct_tape_init(&tape, op_kernels());
    int64_t cshape[1] = {C};
    ct_tensor *x = op_tensor(&tape, ndim, shape, r.x, prefill);
    ct_tensor *w = op_tensor(&tape, 1, cshape, r.w, prefill);
    ct_tensor *b = op_tensor(&tape, 1, cshape, r.b, prefill);
    ct_tensor *out = ct_op_layernorm(&tape, x, w, b);
    op_check_shape(out, ndim, shape);

    ln_ref_forward(&r);
    op_check_fwd(e, label, ct_tensor_f32(out), r.out, nx);

    op_seed_grad(&tape, out, r.R);
    CU_ASSERT_EQUAL(ct_tape_backward(&tape), CT_OK);

    double *fd = op_zeros(nx);
    op_check_input_grad(e, label, "dx", ln_ref_objective, &r, r.x, nx, x->grad, prefill, fd);
    op_check_input_grad(e, label, "dweight", ln_ref_objective, &r, r.w, C, w->grad, prefill, fd);
    op_check_input_grad(e, label, "dbias", ln_ref_objective, &r, r.b, C, b->grad, prefill, fd);

    free(fd);
    free(r.x), free(r.w), free(r.b), free(r.R), free(r.out);
    ct_tape_free(&tape);
}

static void test_layernorm_fwd_and_grad_match_float64_fd_odd_shapes(void) {
    op_errors e = {0};
    op_rng rng = op_rng_init(101);
    /* 2-D and 4-D fixed; 3-D (B,T,C) drawn with odd ranges: B 2..3, T 5..13, C 6..20. */
    const int64_t s2[2] = {7, 9}, s4[4] = {2, 3, 5, 11};
    check_layernorm(&e, 2, s2, 0.0f, 1);
    check_layernorm(&e, 4, s4, 0.0f, 2);
    op_check_random_btc(&e, &rng, 4, check_layernorm, 10);
    op_report("layernorm", &e);
}

static void test_layernorm_grads_accumulate_into_prefilled_buffers(void) {
    op_check_prefilled("layernorm accumulate", check_layernorm, 3, 13, 17);
}

CT_TEST_MAIN("op_layernorm", CT_TEST(test_layernorm_fwd_and_grad_match_float64_fd_odd_shapes),
             CT_TEST(test_layernorm_grads_accumulate_into_prefilled_buffers))
