/*
 * Gradient check of ct_op_embedding (model/ops/embedding.c, kernels/cpu/embedding.c):
 * out[b,t] = wte[tokens[b,t]] + wpe[t], forward against float64 and d(wte), d(wpe) against
 * central finite differences of L = sum(out * R). Small odd vocabularies make tokens repeat
 * (colliding rows in the d(wte) scatter) and wpe has more rows than T; rows no token or
 * position reaches must keep exactly their gradient fill. Tolerances: tests/test_op_util.h.
 */
#include "tests/test_op_util.h"

#include <string.h>

/* The float64 reference: tokens (B,T), wte (V,C), wpe (maxT,C) -> out (B,T,C). */
typedef struct {
    int B, T, C;
    const int32_t *tokens;
    double *wte, *wpe, *R, *out;
} emb_ref;

static void emb_ref_forward(const emb_ref *r) {
    for (int bt = 0; bt < r->B * r->T; bt++)
        for (int i = 0; i < r->C; i++)
            r->out[(size_t)bt * r->C + i] =
                r->wte[(size_t)r->tokens[bt] * r->C + i] + r->wpe[(size_t)(bt % r->T) * r->C + i];
}

static double emb_ref_objective(void *ctx) {
    emb_ref *r = ctx;
    emb_ref_forward(r);
    return op_dot(r->out, r->R, (size_t)r->B * r->T * r->C);
}

/* Rows of a (rows, C) gradient that must be untouched: every element still equals `fill`
 * (bitwise: nothing was added to them, not even a zero of the other sign). */
static bool rows_untouched(const float *grad, const bool *used, int rows, int C, float fill) {
    for (int v = 0; v < rows; v++)
        for (int i = 0; !used[v] && i < C; i++)
            if (memcmp(&grad[(size_t)v * C + i], &fill, sizeof(float)) != 0) return false;
    return true;
}

static void check_embedding(op_errors *e, int B, int T, int C, int V, int maxT, float prefill,
                            uint64_t seed) {
    op_rng rng = op_rng_init(seed);
    size_t nte = (size_t)V * C, npe = (size_t)maxT * C, no = (size_t)B * T * C;
    int32_t *tokens = malloc(sizeof(int32_t) * B * T);
    bool *used = calloc((size_t)(V > maxT ? V : maxT), sizeof(bool));
    CU_ASSERT_FATAL(tokens && used);
    /* Tokens from the lower part of the vocabulary only, so the top row is never used. */
    for (int i = 0; i < B * T; i++)
        tokens[i] = op_int(&rng, 0, V - 2);
    tokens[0] = tokens[B * T - 1] = 0; /* at least one repeated token */
    emb_ref r = {B,
                 T,
                 C,
                 tokens,
                 op_normal_array(&rng, nte, 0.0, 1.0),
                 op_normal_array(&rng, npe, 0.0, 1.0),
                 op_normal_array(&rng, no, 0.0, 1.0),
                 op_zeros(no)};
    char label[96];
    snprintf(label, sizeof(label), "embedding B=%d T=%d C=%d V=%d maxT=%d prefill=%g", B, T, C, V,
             maxT, (double)prefill);

    ct_tape tape;
    ct_tape_init(&tape, op_kernels());
    int64_t tshape[2] = {B, T}, teshape[2] = {V, C}, peshape[2] = {maxT, C};
    ct_tensor *tok = ct_tape_wrap(&tape, CT_I32, 2, tshape, tokens);
    ct_tensor *wte = op_tensor(&tape, 2, teshape, r.wte, prefill);
    ct_tensor *wpe = op_tensor(&tape, 2, peshape, r.wpe, prefill);
    ct_tensor *out = ct_op_embedding(&tape, tok, wte, wpe);
    CU_ASSERT_PTR_NOT_NULL_FATAL(out);
    CU_ASSERT(out->ndim == 3 && out->shape[0] == B && out->shape[1] == T && out->shape[2] == C);

    emb_ref_forward(&r);
    op_check_fwd(e, label, ct_tensor_f32(out), r.out, no);

    op_seed_grad(&tape, out, r.R);
    CU_ASSERT_EQUAL(ct_tape_backward(&tape), CT_OK);
    CU_ASSERT_PTR_NULL(tok->grad); /* token ids get no gradient */

    double *fd = op_zeros(nte > npe ? nte : npe);
    op_check_input_grad(e, label, "dwte", emb_ref_objective, &r, r.wte, nte, wte->grad, prefill,
                        fd);
    op_check_input_grad(e, label, "dwpe", emb_ref_objective, &r, r.wpe, npe, wpe->grad, prefill,
                        fd);

    for (int i = 0; i < B * T; i++)
        used[tokens[i]] = true;
    CU_ASSERT(rows_untouched(wte->grad, used, V, C, prefill));
    memset(used, 0, sizeof(bool) * (size_t)(V > maxT ? V : maxT));
    for (int t = 0; t < T; t++)
        used[t] = true;
    CU_ASSERT(rows_untouched(wpe->grad, used, maxT, C, prefill));

    free(fd);
    free(tokens), free(used);
    free(r.wte), free(r.wpe), free(r.R), free(r.out);
    ct_tape_free(&tape);
}

static void test_embedding_fwd_and_grad_match_float64_fd_odd_shapes(void) {
    op_errors e = {0};
    op_rng rng = op_rng_init(505);
    check_embedding(&e, 2, 5, 6, 7, 5, 0.0f, 1); /* V=7 < B*T: many collisions */
    check_embedding(&e, 1, 1, 9, 3, 4, 0.0f, 2); /* one token */
    for (int k = 0; k < 3; k++) {
        int T = op_int(&rng, 5, 13);
        check_embedding(&e, op_int(&rng, 2, 3), T, op_int(&rng, 6, 20), 37, T + 3, 0.0f, 10 + k);
    }
    op_report("embedding", &e);
}

static void test_embedding_grads_accumulate_into_prefilled_buffers(void) {
    op_errors e = {0};
    check_embedding(&e, 3, 13, 17, 37, 16, OP_PREFILL, 20);
    check_embedding(&e, 3, 11, 9, 5, 11, OP_PREFILL, 21);
    op_report("embedding accumulate", &e);
}

CT_TEST_MAIN("op_embedding", CT_TEST(test_embedding_fwd_and_grad_match_float64_fd_odd_shapes),
             CT_TEST(test_embedding_grads_accumulate_into_prefilled_buffers))
