/*
 * Gradient check of ct_op_attention (model/ops/attention.c, kernels/cpu/attention.c): causal
 * multi-head self-attention with qkv (B,T,3C) packed as [q | k | v] along the last dimension,
 * head h the channels [h*hs, (h+1)*hs) of each (hs = C/NH), scores scaled by 1/sqrt(hs) and
 * softmax over t2 <= t. Forward against a float64 reference and d(qkv) against central finite
 * differences of L = sum(out * R), including T = 1 (out = v: d(q) = d(k) = 0 exactly), one
 * head and three heads. Tolerances: tests/test_op_util.h.
 */
#include "tests/test_op_util.h"

#include <string.h>

/* The float64 reference: qkv (B,T,3C) -> out (B,T,C). */
typedef struct {
    int B, T, C, NH;
    double *qkv, *R, *out, *p; /* p: one row of T probabilities */
} att_ref;

static void att_ref_forward(const att_ref *r) {
    int T = r->T, C = r->C, hs = C / r->NH;
    double scale = 1.0 / sqrt((double)hs);
    for (int b = 0; b < r->B; b++)
        for (int h = 0; h < r->NH; h++)
            for (int t = 0; t < T; t++) {
                const double *q = r->qkv + ((size_t)b * T + t) * 3 * C + h * hs;
                double m = -INFINITY, sum = 0.0;
                for (int t2 = 0; t2 <= t; t2++) {
                    const double *k = r->qkv + ((size_t)b * T + t2) * 3 * C + C + h * hs;
                    double s = 0.0;
                    for (int i = 0; i < hs; i++)
                        s += q[i] * k[i];
                    r->p[t2] = s * scale;
                    m = fmax(m, r->p[t2]);
                }
                for (int t2 = 0; t2 <= t; t2++)
                    sum += r->p[t2] = exp(r->p[t2] - m);
                double *o = r->out + ((size_t)b * T + t) * C + h * hs;
                for (int i = 0; i < hs; i++) {
                    double acc = 0.0;
                    for (int t2 = 0; t2 <= t; t2++)
                        acc += r->p[t2] / sum *
                               r->qkv[((size_t)b * T + t2) * 3 * C + 2 * C + h * hs + i];
                    o[i] = acc;
                }
            }
}

static double att_ref_objective(void *ctx) {
    att_ref *r = ctx;
    att_ref_forward(r);
    return op_dot(r->out, r->R, (size_t)r->B * r->T * r->C);
}

static void check_attention(op_errors *e, int B, int T, int C, int NH, float prefill,
                            uint64_t seed) {
    CU_ASSERT_FATAL(C % NH == 0);
    op_rng rng = op_rng_init(seed);
    size_t nqkv = (size_t)B * T * 3 * C, no = (size_t)B * T * C;
    att_ref r = {B,
                 T,
                 C,
                 NH,
                 op_normal_array(&rng, nqkv, 0.0, 1.0),
                 op_normal_array(&rng, no, 0.0, 1.0),
                 op_zeros(no),
                 op_zeros((size_t)T)};
    char label[96];
    snprintf(label, sizeof(label), "attention B=%d T=%d C=%d NH=%d prefill=%g", B, T, C, NH,
             (double)prefill);

    ct_tape tape;
    ct_tape_init(&tape, op_kernels());
    int64_t shape[3] = {B, T, 3 * C};
    ct_tensor *qkv = op_tensor(&tape, 3, shape, r.qkv, prefill);
    ct_tensor *out = ct_op_attention(&tape, qkv, NH);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT(out->ndim == 3 && out->shape[0] == B && out->shape[1] == T && out->shape[2] == C);

    att_ref_forward(&r);
    op_check_fwd(e, label, ct_tensor_f32(out), r.out, no);

    op_seed_grad(&tape, out, r.R);
    CU_ASSERT_EQUAL(ct_tape_backward(&tape), CT_OK);

    double *fd = op_zeros(nqkv);
    char glabel[128];
    op_check_input_grad(e, label, "dqkv", att_ref_objective, &r, r.qkv, nqkv, qkv->grad, prefill,
                        fd);
    /* The q, k and v slices separately too, so a small slice cannot hide in the whole. T = 1
     * has no gradient for q and k (a softmax over one key is constant): exactly the fill. */
    const char *part[3] = {"dq", "dk", "dv"};
    float *a = malloc(sizeof(float) * no);
    double *f = op_zeros(no);
    CU_ASSERT_PTR_NOT_NULL_FATAL(a);
    for (int s = 0; s < 3; s++) {
        bool zero_ok = true;
        for (size_t bt = 0; bt < (size_t)B * T; bt++)
            for (int i = 0; i < C; i++) {
                size_t at = bt * 3 * C + (size_t)s * C + i;
                a[bt * C + i] = ct_tensor_grad_f32(qkv)[at];
                f[bt * C + i] = fd[at];
                zero_ok = zero_ok && ct_tensor_grad_f32(qkv)[at] == prefill;
            }
        snprintf(glabel, sizeof(glabel), "%s %s", label, part[s]);
        if (T == 1 && s < 2) {
            CU_ASSERT(zero_ok);
        } else {
            op_check_grad(e, glabel, a, prefill, f, no);
        }
    }

    free(a), free(f), free(fd);
    free(r.qkv), free(r.R), free(r.out), free(r.p);
    ct_tape_free(&tape);
}

static void test_attention_fwd_and_grad_match_float64_fd_odd_shapes(void) {
    op_errors e = {0};
    op_rng rng = op_rng_init(606);
    check_attention(&e, 2, 7, 9, 3, 0.0f, 1);   /* three heads of 3 */
    check_attention(&e, 3, 5, 7, 1, 0.0f, 2);   /* one head of 7 */
    check_attention(&e, 2, 13, 20, 4, 0.0f, 3); /* the longest T of the range */
    for (int k = 0; k < 3; k++) {
        int NH = op_int(&rng, 1, 3), hs = op_int(&rng, 2, 6);
        check_attention(&e, op_int(&rng, 2, 3), op_int(&rng, 5, 13), NH * hs, NH, 0.0f, 10 + k);
    }
    op_report("attention", &e);
}

static void test_attention_single_position_passes_v_and_gives_q_k_no_grad(void) {
    op_errors e = {0};
    check_attention(&e, 2, 1, 9, 3, 0.0f, 20);
    check_attention(&e, 3, 1, 6, 1, OP_PREFILL, 21);
    op_report("attention T=1", &e);
}

static void test_attention_grads_accumulate_into_prefilled_buffers(void) {
    op_errors e = {0};
    check_attention(&e, 3, 11, 15, 3, OP_PREFILL, 30);
    op_report("attention accumulate", &e);
}

/* A sequence far longer than the odd shapes above, with the gradients accumulating: the shapes
 * above fit in one block of query rows (128), this one takes a whole block and a partial one,
 * whose probabilities backward recomputes from the saved row statistics. */
static void test_attention_long_sequence(void) {
    op_errors e = {0};
    check_attention(&e, 1, 150, 6, 2, OP_PREFILL, 40);
    op_report("attention T=150", &e);
}

CT_TEST_MAIN("op_attention", CT_TEST(test_attention_fwd_and_grad_match_float64_fd_odd_shapes),
             CT_TEST(test_attention_single_position_passes_v_and_gives_q_k_no_grad),
             CT_TEST(test_attention_grads_accumulate_into_prefilled_buffers),
             CT_TEST(test_attention_long_sequence))
