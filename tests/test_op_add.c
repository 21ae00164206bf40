/*
 * Gradient check of ct_op_add (model/ops/add.c, kernels/cpu/elementwise.c), the residual sum:
 * forward against float64 and both inputs' gradients against central finite differences of
 * L = sum(out * R); a tensor added to itself receives the sum of both uses' gradients (2R), the
 * accumulation the residual stream relies on. Tolerances: tests/test_op_util.h. Also the dtype
 * seam every op shares: a dtype the kernels do not take is an error, and gradients are sized
 * by their dtype.
 */
#include "tests/test_op_util.h"

#include <string.h>

/* The float64 reference: out = a + b over n elements (b may alias a). */
typedef struct {
    size_t n;
    double *a, *b, *R, *out;
} add_ref;

static void add_ref_forward(const add_ref *r) {
    for (size_t i = 0; i < r->n; i++)
        r->out[i] = r->a[i] + r->b[i];
}

static double add_ref_objective(void *ctx) {
    add_ref *r = ctx;
    add_ref_forward(r);
    return op_dot(r->out, r->R, r->n);
}

/* same: out = a + a (one tensor as both inputs). */
static void check_add(op_errors *e, int ndim, const int64_t *shape, bool same, float prefill,
                      uint64_t seed) {
    op_rng rng = op_rng_init(seed);
    size_t n = 1;
    for (int d = 0; d < ndim; d++)
        n *= (size_t)shape[d];
    add_ref r = {n, op_normal_array(&rng, n, 0.0, 1.0), NULL, op_normal_array(&rng, n, 0.0, 1.0),
                 op_zeros(n)};
    r.b = same ? r.a : op_normal_array(&rng, n, 0.0, 1.0);
    char label[96];
    snprintf(label, sizeof(label), "add n=%zu ndim=%d same=%d prefill=%g", n, ndim, same,
             (double)prefill);

    ct_tape tape;
    ct_tape_init(&tape, op_kernels());
    ct_tensor *a = op_tensor(&tape, ndim, shape, r.a, prefill);
    ct_tensor *b = same ? a : op_tensor(&tape, ndim, shape, r.b, prefill);
    ct_tensor *out = ct_op_add(&tape, a, b);
    op_check_shape(out, ndim, shape);

    add_ref_forward(&r);
    op_check_fwd(e, label, ct_tensor_f32(out), r.out, n);

    op_seed_grad(&tape, out, r.R);
    CU_ASSERT_EQUAL(ct_tape_backward(&tape), CT_OK);

    double *fd = op_zeros(n);
    op_check_input_grad(e, label, "da", add_ref_objective, &r, r.a, n, a->grad, prefill, fd);
    if (!same) {
        op_check_input_grad(e, label, "db", add_ref_objective, &r, r.b, n, b->grad, prefill, fd);
    }

    free(fd);
    if (!same) free(r.b);
    free(r.a), free(r.R), free(r.out);
    ct_tape_free(&tape);
}

static void test_add_fwd_and_grad_match_float64_fd_odd_shapes(void) {
    op_errors e = {0};
    op_rng rng = op_rng_init(404);
    const int64_t s1[1] = {37}, s2[2] = {7, 9};
    check_add(&e, 1, s1, false, 0.0f, 1);
    check_add(&e, 2, s2, false, 0.0f, 2);
    for (int k = 0; k < 3; k++) {
        int64_t s3[3] = {op_int(&rng, 2, 3), op_int(&rng, 5, 13), op_int(&rng, 6, 20)};
        check_add(&e, 3, s3, false, 0.0f, 10 + k);
    }
    op_report("add", &e);
}

static void test_add_of_a_tensor_to_itself_gives_twice_the_gradient(void) {
    op_errors e = {0};
    const int64_t s3[3] = {2, 7, 11};
    check_add(&e, 3, s3, true, 0.0f, 20);
    check_add(&e, 3, s3, true, OP_PREFILL, 21);
    op_report("add same tensor", &e);
}

static void test_add_grads_accumulate_into_prefilled_buffers(void) {
    op_errors e = {0};
    const int64_t s3[3] = {3, 13, 19};
    check_add(&e, 3, s3, false, OP_PREFILL, 30);
    op_report("add accumulate", &e);
}

static void test_add_of_bf16_tensors_is_an_error_not_a_reinterpretation(void) {
    ct_tape tape;
    ct_tape_init(&tape, op_kernels());
    const int64_t shape[1] = {64};
    ct_tensor *a = ct_tape_tensor(&tape, CT_BF16, 1, shape);
    ct_tensor *b = ct_tape_tensor(&tape, CT_F32, 1, shape);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    CU_ASSERT_PTR_NOT_NULL_FATAL(b);
    CU_ASSERT_PTR_NULL(ct_op_add(&tape, b, a));
    CU_ASSERT_EQUAL(ct_tape_status(&tape), CT_ERR_INVALID);
    CU_ASSERT(strstr(ct_error_message(), "add") && strstr(ct_error_message(), "bf16"));
    ct_tape_free(&tape);
}

static void test_a_gradient_is_sized_by_its_dtype(void) {
    ct_tape tape;
    ct_tape_init(&tape, op_kernels());
    const int64_t shape[1] = {256};
    ct_tensor *h = ct_tape_tensor(&tape, CT_BF16, 1, shape);
    ct_tensor *f = ct_tape_tensor(&tape, CT_F32, 1, shape);
    CU_ASSERT_FATAL(h && f && h->grad_dtype == CT_BF16 && f->grad_dtype == CT_F32);
    size_t before = tape.data.used_bytes;
    CU_ASSERT_PTR_NOT_NULL(ct_tape_grad(&tape, h));
    CU_ASSERT_EQUAL(tape.data.used_bytes - before, 256 * 2); /* 64-byte multiples already */
    before = tape.data.used_bytes;
    CU_ASSERT_PTR_NOT_NULL(ct_tape_grad(&tape, f));
    CU_ASSERT_EQUAL(tape.data.used_bytes - before, 256 * 4);
    /* A kernel taking f32 gradients refuses the bf16 one. */
    CU_ASSERT_PTR_NULL(ct_tape_grad_f32(&tape, h));
    CU_ASSERT_EQUAL(ct_tape_status(&tape), CT_ERR_INVALID);
    ct_tape_free(&tape);
}

CT_TEST_MAIN("op_add", CT_TEST(test_add_fwd_and_grad_match_float64_fd_odd_shapes),
             CT_TEST(test_add_of_a_tensor_to_itself_gives_twice_the_gradient),
             CT_TEST(test_add_grads_accumulate_into_prefilled_buffers),
             CT_TEST(test_add_of_bf16_tensors_is_an_error_not_a_reinterpretation),
             CT_TEST(test_a_gradient_is_sized_by_its_dtype))
