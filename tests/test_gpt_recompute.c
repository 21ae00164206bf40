/*
 * Activation recomputation (model/gpt.h's ct_recompute, model/tape.h's checkpoints and
 * transient tensors) on small GPTs of odd sizes, without the trainer: block and selective give
 * the loss and every unit's gradient bitwise equal to none over several micro-steps; the unit
 * hooks fire in the same order in every mode, and a block is recomputed only after its unit's
 * pre_backward (the hooks here poison a unit's parameters outside its hooks, as FSDP frees
 * them); block's peak of the data arena is a fraction of none's; the plan bound of each mode
 * holds the measured peak.
 */
#include "model/model.h"
#include "test_util.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

#define MAX_EVENTS 4096

/* Hooks like a sharding strategy's: a unit's parameters are its real ones only between
 * pre_forward and post_forward, and between pre_backward and post_backward; NaN otherwise. */
typedef struct {
    ct_gpt *gpt;
    float **real;   /* per unit: its parameters */
    float **poison; /* per unit: NaN */
    int n_events;
    int events[MAX_EVENTS]; /* unit * 8 + kind (0 pre_fwd, 1 post_fwd, 2 pre_bwd, 3/4 post_bwd) */
    int last_uses[64];      /* post_backward(last_use = true) per unit */
} poison_hooks;

static void log_event(poison_hooks *h, const ct_unit *unit, int kind) {
    if (h->n_events < MAX_EVENTS) h->events[h->n_events++] = unit->index * 8 + kind;
}

static void bind(poison_hooks *h, ct_unit *unit, bool real) {
    ct_unit_bind(unit, real ? h->real[unit->index] : h->poison[unit->index], CT_F32, unit->grad,
                 CT_F32);
}

static ct_status pre_forward(void *ctx, ct_unit *unit) {
    log_event(ctx, unit, 0);
    bind(ctx, unit, true);
    return CT_OK;
}

static ct_status post_forward(void *ctx, ct_unit *unit) {
    log_event(ctx, unit, 1);
    bind(ctx, unit, false);
    return CT_OK;
}

static ct_status pre_backward(void *ctx, ct_unit *unit) {
    log_event(ctx, unit, 2);
    bind(ctx, unit, true);
    return CT_OK;
}

static ct_status post_backward(void *ctx, ct_unit *unit, bool last_use) {
    poison_hooks *h = ctx;
    log_event(h, unit, last_use ? 4 : 3);
    if (last_use) h->last_uses[unit->index]++;
    bind(h, unit, false);
    return CT_OK;
}

/* What a few micro-steps of one mode give. */
typedef struct {
    float loss[4];
    float *grad; /* every unit's gradient, concatenated (the model's flat_grad) */
    size_t grad_bytes;
    size_t data_peak_bytes, host_peak_bytes;
    poison_hooks hooks;
} run_result;

#define MICRO_STEPS 3

/* MICRO_STEPS forward and backward passes (the tape reset between them) of the GPT `c` on
 * (B,T) batches of tokens fixed by the micro-step, gradients accumulated, in mode `mode`; with
 * the poisoning hooks when `hooked`. */
static run_result run(const ct_gpt_config *c, int B, int T, ct_recompute mode, bool hooked) {
    run_result r;
    memset(&r, 0, sizeof(r));
    const ct_kernels *k = NULL;
    CU_ASSERT_FATAL(
        ct_kernels_for_device(&(ct_kernels_options){"cpu", 2, "openblas", "auto"}, &k) == CT_OK);
    ct_gpt gpt;
    CU_ASSERT_FATAL(ct_gpt_init(&gpt, c) == CT_OK);
    CU_ASSERT_FATAL(ct_gpt_alloc_full(&gpt) == CT_OK);
    ct_gpt_init_weights(&gpt, 1234);
    ct_gpt_set_recompute(&gpt, mode);
    ct_gpt_zero_grad(&gpt, k);
    ct_tape tape;
    ct_tape_init(&tape, k);
    r.hooks.gpt = &gpt;
    r.hooks.real = calloc((size_t)gpt.n_units, sizeof(float *));
    r.hooks.poison = calloc((size_t)gpt.n_units, sizeof(float *));
    for (int u = 0; u < gpt.n_units; u++) {
        r.hooks.real[u] = gpt.units[u].data;
        r.hooks.poison[u] = malloc(sizeof(float) * (size_t)gpt.units[u].numel);
        for (int64_t i = 0; i < gpt.units[u].numel; i++)
            r.hooks.poison[u][i] = NAN;
    }
    ct_unit_hooks hooks = {&r.hooks, pre_forward, post_forward, pre_backward, post_backward};
    if (hooked) {
        tape.hooks = &hooks;
        for (int u = 0; u < gpt.n_units; u++)
            bind(&r.hooks, &gpt.units[u], false);
    }
    int32_t *tokens = malloc(sizeof(int32_t) * 2 * (size_t)B * T); /* inputs, targets */
    for (int m = 0; m < MICRO_STEPS; m++) {
        for (int i = 0; i < 2 * B * T; i++)
            tokens[i] = (int32_t)(ct_rng_u64(ct_rng_key(7, 1, (uint64_t)m, 0), (uint64_t)i) %
                                  (uint64_t)c->vocab_size);
        CU_ASSERT_FATAL(ct_tape_reset(&tape) == CT_OK);
        ct_tensor *loss =
            ct_gpt_forward_loss(&gpt, &tape, tokens, tokens + B * T, B, T, 1.0f / MICRO_STEPS);
        if (!loss) fprintf(stderr, "forward: %s\n", ct_error_message());
        CU_ASSERT_FATAL(loss != NULL);
        CU_ASSERT_FATAL(ct_tape_read_scalar(&tape, loss, &r.loss[m]) == CT_OK);
        CU_ASSERT_FATAL(ct_tape_backward(&tape) == CT_OK);
    }
    r.data_peak_bytes = tape.data.peak_bytes;
    r.host_peak_bytes = tape.host.peak_bytes;
    for (int u = 0; u < gpt.n_units; u++) {
        bind(&r.hooks, &gpt.units[u], true);
        r.grad_bytes += sizeof(float) * (size_t)gpt.units[u].numel;
    }
    r.grad = malloc(r.grad_bytes);
    memcpy(r.grad, gpt.flat_grad, r.grad_bytes);
    for (int u = 0; u < gpt.n_units; u++)
        free(r.hooks.poison[u]);
    free(r.hooks.poison);
    free(r.hooks.real);
    r.hooks.poison = r.hooks.real = NULL;
    free(tokens);
    ct_tape_free(&tape);
    ct_gpt_free(&gpt);
    return r;
}

/* Odd sizes everywhere: 3 heads of 12, vocabulary 67, T 13 of seq_len 15, batch 3. */
static const ct_gpt_config odd = {
    .n_layer = 3, .n_head = 3, .n_embd = 36, .vocab_size = 67, .seq_len = 15};

static void expect_bitwise_equal(const run_result *a, const run_result *b) {
    CU_ASSERT_EQUAL(a->grad_bytes, b->grad_bytes);
    CU_ASSERT(memcmp(a->loss, b->loss, sizeof(a->loss)) == 0);
    CU_ASSERT(memcmp(a->grad, b->grad, a->grad_bytes) == 0);
}

static void test_block_and_selective_gradients_bitwise_equal_none(void) {
    run_result none = run(&odd, 3, 13, CT_RECOMPUTE_NONE, false);
    bool finite = true;
    for (size_t i = 0; i < none.grad_bytes / sizeof(float); i++)
        finite = finite && isfinite(none.grad[i]);
    CU_ASSERT(finite);
    for (ct_recompute mode = CT_RECOMPUTE_BLOCK; mode <= CT_RECOMPUTE_SELECTIVE; mode++) {
        run_result r = run(&odd, 3, 13, mode, false);
        printf("\n    %s: data peak %zu bytes (none %zu)", ct_recompute_name(mode),
               r.data_peak_bytes, none.data_peak_bytes);
        expect_bitwise_equal(&r, &none);
        free(r.grad);
    }
    free(none.grad);
}

/* With parameters that are NaN outside the hooks, a recomputation before its unit's
 * pre_backward (or a regeneration after its post_backward) would make the gradients NaN: the
 * gradients still equal the unhooked run's bit for bit, and the hooks fire in the same order
 * and as often in every mode, last_use once per unit and pass. */
static void test_hooks_fire_in_order_and_recompute_sees_gathered_params(void) {
    run_result plain = run(&odd, 3, 13, CT_RECOMPUTE_NONE, false);
    run_result none = run(&odd, 3, 13, CT_RECOMPUTE_NONE, true);
    expect_bitwise_equal(&none, &plain);
    /* Per pass: embed twice and each block once, four hooks per use. */
    CU_ASSERT_EQUAL(none.hooks.n_events, MICRO_STEPS * 4 * (2 + odd.n_layer));
    for (int u = 0; u <= odd.n_layer; u++)
        CU_ASSERT_EQUAL(none.hooks.last_uses[u], MICRO_STEPS);
    for (ct_recompute mode = CT_RECOMPUTE_BLOCK; mode <= CT_RECOMPUTE_SELECTIVE; mode++) {
        run_result r = run(&odd, 3, 13, mode, true);
        expect_bitwise_equal(&r, &plain);
        CU_ASSERT_EQUAL(r.hooks.n_events, none.hooks.n_events);
        CU_ASSERT(memcmp(r.hooks.events, none.hooks.events, sizeof(int) * MAX_EVENTS) == 0);
        CU_ASSERT(memcmp(r.hooks.last_uses, none.hooks.last_uses, sizeof(none.hooks.last_uses)) ==
                  0);
        free(r.grad);
    }
    free(plain.grad);
    free(none.grad);
}

/* Eight layers, a small head (vocabulary 67): block keeps each block's input and output
 * instead of its 18 activations (and their gradients), so its data-arena peak, head included
 * in both, is at most none's / (n_layer / 2); selective's is below none's. Each mode's plan
 * bound holds its peak (both arenas) and is not above it by more than a third plus the
 * records' allowance (32 KiB a unit), as tests/test_gpt.c holds none's. */
static void test_block_peak_is_a_fraction_of_none_and_bounds_hold(void) {
    const ct_gpt_config c = {
        .n_layer = 8, .n_head = 3, .n_embd = 48, .vocab_size = 67, .seq_len = 33};
    int B = 3, T = 33;
    const ct_kernels *k = NULL;
    CU_ASSERT_FATAL(
        ct_kernels_for_device(&(ct_kernels_options){"cpu", 2, "openblas", "auto"}, &k) == CT_OK);
    size_t peak[3];
    for (ct_recompute mode = CT_RECOMPUTE_NONE; mode <= CT_RECOMPUTE_SELECTIVE; mode++) {
        run_result r = run(&c, B, T, mode, false);
        peak[mode] = r.data_peak_bytes;
        size_t total = r.data_peak_bytes + r.host_peak_bytes;
        size_t bound = ct_gpt_activation_bytes(k, &c, B, T, mode, CT_F32);
        printf("\n    %s: data peak %zu, host peak %zu, bound %zu (%.2fx)", ct_recompute_name(mode),
               r.data_peak_bytes, r.host_peak_bytes, bound, (double)bound / (double)total);
        CU_ASSERT(total <= bound);
        CU_ASSERT(bound <= total + total / 3 + (size_t)(c.n_layer + 2) * 32 * 1024);
        free(r.grad);
    }
    printf("\n    block/none %.3f, selective/none %.3f",
           (double)peak[CT_RECOMPUTE_BLOCK] / (double)peak[CT_RECOMPUTE_NONE],
           (double)peak[CT_RECOMPUTE_SELECTIVE] / (double)peak[CT_RECOMPUTE_NONE]);
    CU_ASSERT(peak[CT_RECOMPUTE_BLOCK] <= peak[CT_RECOMPUTE_NONE] / (size_t)(c.n_layer / 2));
    CU_ASSERT(peak[CT_RECOMPUTE_SELECTIVE] < peak[CT_RECOMPUTE_NONE]);
}

static void test_recompute_names_parse_and_unknown_lists_them(void) {
    for (ct_recompute mode = CT_RECOMPUTE_NONE; mode <= CT_RECOMPUTE_SELECTIVE; mode++) {
        ct_recompute parsed = CT_RECOMPUTE_NONE;
        CU_ASSERT(ct_recompute_parse(ct_recompute_name(mode), &parsed) == CT_OK);
        CU_ASSERT_EQUAL(parsed, mode);
    }
    ct_recompute parsed;
    CU_ASSERT(ct_recompute_parse("blocks", &parsed) == CT_ERR_INVALID);
    CU_ASSERT(strstr(ct_error_message(), "\"none\", \"block\", \"selective\"") != NULL);
}

CT_TEST_MAIN("gpt_recompute", CT_TEST(test_block_and_selective_gradients_bitwise_equal_none),
             CT_TEST(test_hooks_fire_in_order_and_recompute_sees_gathered_params),
             CT_TEST(test_block_peak_is_a_fraction_of_none_and_bounds_hold),
             CT_TEST(test_recompute_names_parse_and_unknown_lists_them))
