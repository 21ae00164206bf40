/*
 * Gradient check of ct_op_lm_head_loss (model/ops/lm_head_loss.c, kernels/cpu/lm_head.c): the
 * tied LM head and mean cross-entropy, loss = mean over rows with target >= 0 of
 * logsumexp(x wte^T) - logit[target]. Forward against float64; d(x) and d(wte) against central
 * finite differences of L = grad_scale * loss in float64. The op computes its gradients during
 * forward and must be the tape's last op, so backward runs straight after it. The kernel is
 * also called directly with chunk_rows 1, 3, 5 and N: chunking must not change the result.
 * Tolerances: tests/test_op_util.h.
 */
#include "tests/test_op_util.h"

#include <string.h>

/* The float64 reference: x (N,C), wte (V,C), targets (N) -> mean loss; losses (N), 0 where
 * the target is ignored. */
typedef struct {
    int N, C, V;
    const int32_t *targets;
    double *x, *wte, *losses, *logits; /* logits: one row of V */
    double grad_scale;
} lm_ref;

static double lm_ref_loss(const lm_ref *r) {
    double sum = 0.0;
    int valid = 0;
    for (int n = 0; n < r->N; n++) {
        r->losses[n] = 0.0;
        if (r->targets[n] < 0) continue;
        double m = -INFINITY, z = 0.0;
        for (int v = 0; v < r->V; v++) {
            double s = 0.0;
            for (int i = 0; i < r->C; i++)
                s += r->x[(size_t)n * r->C + i] * r->wte[(size_t)v * r->C + i];
            r->logits[v] = s;
            m = fmax(m, s);
        }
        for (int v = 0; v < r->V; v++)
            z += exp(r->logits[v] - m);
        r->losses[n] = log(z) + m - r->logits[r->targets[n]];
        sum += r->losses[n];
        valid++;
    }
    return valid ? sum / valid : 0.0;
}

static double lm_ref_objective(void *ctx) {
    lm_ref *r = ctx;
    return r->grad_scale * lm_ref_loss(r);
}

/* A reference with random inputs; `ignored` rows (indices) get target -1. */
static lm_ref lm_ref_make(op_rng *rng, int N, int C, int V, float grad_scale, const int *ignored,
                          int n_ignored) {
    int32_t *targets = malloc(sizeof(int32_t) * N);
    CU_ASSERT_PTR_NOT_NULL_FATAL(targets);
    for (int n = 0; n < N; n++)
        targets[n] = op_int(rng, 0, V - 1);
    for (int k = 0; k < n_ignored; k++)
        targets[ignored[k]] = -1;
    /* wte ~ N(0, 0.3^2): logits of spread ~0.3 sqrt(C), a softmax neither flat nor one-hot */
    lm_ref r = {N,
                C,
                V,
                targets,
                op_normal_array(rng, (size_t)N * C, 0.0, 1.0),
                op_normal_array(rng, (size_t)V * C, 0.0, 0.3),
                op_zeros((size_t)N),
                op_zeros((size_t)V),
                (double)grad_scale};
    return r;
}

static void lm_ref_free(lm_ref *r) {
    free((void *)r->targets), free(r->x), free(r->wte), free(r->losses), free(r->logits);
}

static void check_lm_head_loss(op_errors *e, int B, int T, int C, int V, float grad_scale,
                               const int *ignored, int n_ignored, float prefill, uint64_t seed) {
    op_rng rng = op_rng_init(seed);
    int N = B * T;
    lm_ref r = lm_ref_make(&rng, N, C, V, grad_scale, ignored, n_ignored);
    size_t nx = (size_t)N * C, nw = (size_t)V * C;
    char label[112];
    snprintf(label, sizeof(label),
             "lm_head_loss B=%d T=%d C=%d V=%d scale=%g ignored=%d prefill=%g", B, T, C, V,
             (double)grad_scale, n_ignored, (double)prefill);

    ct_tape tape;
    ct_tape_init(&tape, op_kernels());
    int64_t xshape[3] = {B, T, C}, wshape[2] = {V, C}, tshape[2] = {B, T};
    ct_tensor *x = op_tensor(&tape, 3, xshape, r.x, prefill);
    ct_tensor *wte = op_tensor(&tape, 2, wshape, r.wte, prefill);
    ct_tensor *tg = ct_tape_wrap(&tape, CT_I32, 2, tshape, (void *)r.targets);
    ct_tensor *loss = ct_op_lm_head_loss(&tape, x, wte, tg, grad_scale);
    CU_ASSERT_PTR_NOT_NULL_FATAL(loss);
    CU_ASSERT_EQUAL(ct_tensor_numel(loss), 1);
    double ref_loss = lm_ref_loss(&r);
    op_check_fwd(e, label, ct_tensor_f32(loss), &ref_loss, 1); /* the unscaled mean */
    CU_ASSERT_EQUAL(ct_tape_backward(&tape), CT_OK);

    double *fd = op_zeros(nx > nw ? nx : nw);
    op_check_input_grad(e, label, "dx", lm_ref_objective, &r, r.x, nx, x->grad, prefill, fd);
    op_check_input_grad(e, label, "dwte", lm_ref_objective, &r, r.wte, nw, wte->grad, prefill, fd);
    /* An ignored row gets exactly nothing added to its d(x). */
    for (int k = 0; k < n_ignored; k++)
        for (int i = 0; i < C; i++)
            CU_ASSERT(ct_tensor_grad_f32(x)[(size_t)ignored[k] * C + i] == prefill);

    free(fd);
    lm_ref_free(&r);
    ct_tape_free(&tape);
}

static void test_lm_head_loss_fwd_and_grad_match_float64_fd_odd_shapes(void) {
    op_errors e = {0};
    const int ign1[1] = {3}, ign3[3] = {0, 7, 25};
    check_lm_head_loss(&e, 2, 5, 6, 37, 1.0f, NULL, 0, 0.0f, 1);
    check_lm_head_loss(&e, 3, 7, 10, 37, 0.25f, ign1, 1, 0.0f, 2);
    check_lm_head_loss(&e, 2, 13, 20, 41, 3.0f, ign3, 3, 0.0f, 3);
    check_lm_head_loss(&e, 3, 9, 15, 11, 0.5f, ign1, 1, 0.0f, 4);
    op_report("lm_head_loss", &e);
}

static void test_lm_head_loss_grads_accumulate_into_prefilled_buffers(void) {
    op_errors e = {0};
    const int ign[2] = {1, 12};
    check_lm_head_loss(&e, 3, 11, 17, 37, 0.5f, ign, 2, OP_PREFILL, 10);
    op_report("lm_head_loss accumulate", &e);
}

/* max |a - b| / max |b - fill|: agreement of two fp32 results of different summation orders,
 * on the scale of what was added to the buffers' common fill. */
static double max_rel_diff(const float *a, const float *b, float fill, size_t n) {
    double diff = 0.0, scale = 0.0;
    for (size_t i = 0; i < n; i++) {
        diff = fmax(diff, fabs((double)a[i] - b[i]));
        scale = fmax(scale, fabs((double)b[i] - fill));
    }
    return scale > 0.0 ? diff / scale : diff;
}

/* The kernel with chunk_rows 1, 3, 5 and N (26 rows: 3 and 5 leave a partial last chunk)
 * against chunk_rows = N within 1e-6 of the largest value (chunking only regroups the fp32
 * sums of d(wte) over rows: a few ulp), and each against the float64 loss and FD gradients.
 * The buffers start at zero here so that only the chunking differs (accumulation into a fill
 * is checked above; adding N small rows one by one into a fill of 0.375 rounds each at that
 * fill's ulp, which would be measured instead). */
static void test_lm_head_loss_kernel_chunk_rows_1_3_5_n_agree(void) {
    op_errors e = {0};
    const ct_kernels *k = op_kernels();
    const int N = 26, C = 13, V = 37, ignored[2] = {4, 17};
    const float grad_scale = 0.75f;
    op_rng rng = op_rng_init(707);
    lm_ref r = lm_ref_make(&rng, N, C, V, grad_scale, ignored, 2);
    size_t nx = (size_t)N * C, nw = (size_t)V * C;
    float *x = malloc(sizeof(float) * nx), *wte = malloc(sizeof(float) * nw);
    float *losses[5], *dx[5], *dwte[5], *scratch = malloc(sizeof(float) * (size_t)N * V);
    CU_ASSERT_FATAL(x && wte && scratch);
    for (size_t i = 0; i < nx; i++)
        x[i] = (float)r.x[i];
    for (size_t i = 0; i < nw; i++)
        wte[i] = (float)r.wte[i];
    lm_ref_loss(&r);
    double *fdx = op_zeros(nx), *fdw = op_zeros(nw);
    op_fd_grad(lm_ref_objective, &r, r.x, nx, fdx);
    op_fd_grad(lm_ref_objective, &r, r.wte, nw, fdw);
    lm_ref_loss(&r); /* r.losses at the unperturbed point again */

    const int chunks[5] = {N, 1, 3, 5, k->lm_head_chunk_rows(&k->ctx, N, V)};
    CU_ASSERT(chunks[4] >= 1 && chunks[4] <= N);
    for (int c = 0; c < 5; c++) {
        losses[c] = malloc(sizeof(float) * N);
        dx[c] = malloc(sizeof(float) * nx);
        dwte[c] = malloc(sizeof(float) * nw);
        CU_ASSERT_FATAL(losses[c] && dx[c] && dwte[c]);
        for (size_t i = 0; i < nx; i++)
            dx[c][i] = 0.0f;
        for (size_t i = 0; i < nw; i++)
            dwte[c][i] = 0.0f;
        k->lm_head_loss(&k->ctx, losses[c], dx[c], dwte[c], x, wte, r.targets, N, C, V, grad_scale,
                        scratch, chunks[c]);
        op_check_fwd(&e, "lm_head kernel losses", losses[c], r.losses, (size_t)N);
        op_check_grad(&e, "lm_head kernel dx", dx[c], 0.0f, fdx, nx);
        op_check_grad(&e, "lm_head kernel dwte", dwte[c], 0.0f, fdw, nw);
        double worst = fmax(
            max_rel_diff(losses[c], losses[0], 0.0f, (size_t)N),
            fmax(max_rel_diff(dx[c], dx[0], 0.0f, nx), max_rel_diff(dwte[c], dwte[0], 0.0f, nw)));
        CU_ASSERT(worst <= 1e-6);
        printf("\n  chunk_rows %d vs %d: max relative difference %.2e", chunks[c], N, worst);
        for (int j = 0; j < 2; j++) {
            CU_ASSERT(losses[c][ignored[j]] == 0.0f);
            for (int i = 0; i < C; i++)
                CU_ASSERT(dx[c][(size_t)ignored[j] * C + i] == 0.0f);
        }
    }
    /* Without gradient outputs the losses are the same computation: bitwise equal. */
    float *plain = malloc(sizeof(float) * N);
    CU_ASSERT_FATAL(plain != NULL);
    k->lm_head_loss(&k->ctx, plain, NULL, NULL, x, wte, r.targets, N, C, V, grad_scale, scratch, N);
    CU_ASSERT_EQUAL(memcmp(plain, losses[0], sizeof(float) * N), 0);
    op_report("lm_head kernel chunks", &e);

    for (int c = 0; c < 5; c++)
        free(losses[c]), free(dx[c]), free(dwte[c]);
    free(plain), free(x), free(wte), free(scratch), free(fdx), free(fdw);
    lm_ref_free(&r);
}

/* Every target ignored: the loss is 0 and no gradient is added anywhere. */
static void test_lm_head_loss_all_targets_ignored_gives_zero_loss_and_no_grad(void) {
    const int B = 2, T = 3, C = 6, V = 37, ignored[6] = {0, 1, 2, 3, 4, 5};
    op_rng rng = op_rng_init(808);
    lm_ref r = lm_ref_make(&rng, B * T, C, V, 1.0f, ignored, 6);
    ct_tape tape;
    ct_tape_init(&tape, op_kernels());
    int64_t xshape[3] = {B, T, C}, wshape[2] = {V, C}, tshape[2] = {B, T};
    ct_tensor *x = op_tensor(&tape, 3, xshape, r.x, OP_PREFILL);
    ct_tensor *wte = op_tensor(&tape, 2, wshape, r.wte, OP_PREFILL);
    ct_tensor *tg = ct_tape_wrap(&tape, CT_I32, 2, tshape, (void *)r.targets);
    ct_tensor *loss = ct_op_lm_head_loss(&tape, x, wte, tg, 1.0f);
    CU_ASSERT_PTR_NOT_NULL_FATAL(loss);
    CU_ASSERT(*ct_tensor_f32(loss) == 0.0f);
    CU_ASSERT_EQUAL(ct_tape_backward(&tape), CT_OK);
    for (int i = 0; i < B * T * C; i++)
        CU_ASSERT(ct_tensor_grad_f32(x)[i] == OP_PREFILL);
    for (int i = 0; i < V * C; i++)
        CU_ASSERT(ct_tensor_grad_f32(wte)[i] == OP_PREFILL);
    lm_ref_free(&r);
    ct_tape_free(&tape);
}

CT_TEST_MAIN("op_lm_head_loss", CT_TEST(test_lm_head_loss_fwd_and_grad_match_float64_fd_odd_shapes),
             CT_TEST(test_lm_head_loss_grads_accumulate_into_prefilled_buffers),
             CT_TEST(test_lm_head_loss_kernel_chunk_rows_1_3_5_n_agree),
             CT_TEST(test_lm_head_loss_all_targets_ignored_gives_zero_loss_and_no_grad))
