/*
 * GPT-2 (BENCH.md): the unit layout of its parameters, their initialisation, and the forward
 * pass as a sequence of units. Unit 0, "embed", holds wte, wpe and the final LayerNorm and is
 * entered twice per pass (the LM head is tied to wte); unit 1+l is transformer block l.
 * Recomputation (ct_recompute) wraps a block in a checkpoint, or its LayerNorms and GELU in
 * transient tensors (model/tape.h); the ops do not know.
 */
#include "model/gpt.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

enum { RNG_PURPOSE_INIT = 1 };

static void add_param(ct_unit *unit, const char *name, int ndim, int64_t d0, int64_t d1,
                      ct_init_kind init, float std) {
    CT_ASSERT(unit->n_params < CT_UNIT_MAX_PARAMS, "unit %s: too many parameters", unit->name);
    ct_param_desc *p = &unit->params[unit->n_params++];
    snprintf(p->name, sizeof(p->name), "%s", name);
    p->ndim = ndim;
    p->shape[0] = d0;
    p->shape[1] = d1;
    p->numel = ndim == 2 ? d0 * d1 : d0;
    p->offset = unit->numel;
    p->decay = ndim == 2;
    p->init = init;
    p->init_std = std;
    unit->numel += p->numel;
}

static void layout_embed(ct_unit *unit, const ct_gpt_config *c) {
    snprintf(unit->name, sizeof(unit->name), "embed");
    unit->uses_per_pass = 2;
    add_param(unit, "wte", 2, c->vocab_size, c->n_embd, CT_INIT_NORMAL, 0.02f);
    add_param(unit, "wpe", 2, c->seq_len, c->n_embd, CT_INIT_NORMAL, 0.02f);
    add_param(unit, "lnf.weight", 1, c->n_embd, 0, CT_INIT_ONES, 0);
    add_param(unit, "lnf.bias", 1, c->n_embd, 0, CT_INIT_ZEROS, 0);
}

static void layout_block(ct_unit *unit, const ct_gpt_config *c, int layer) {
    int64_t C = c->n_embd;
    /* GPT-2 scales the init of the projections into the residual stream by 1/sqrt(2 L). */
    float residual_std = 0.02f / sqrtf(2.0f * (float)c->n_layer);
    snprintf(unit->name, sizeof(unit->name), "block.%d", layer);
    unit->uses_per_pass = 1;
    add_param(unit, "ln1.weight", 1, C, 0, CT_INIT_ONES, 0);
    add_param(unit, "ln1.bias", 1, C, 0, CT_INIT_ZEROS, 0);
    add_param(unit, "attn.qkv.weight", 2, 3 * C, C, CT_INIT_NORMAL, 0.02f);
    add_param(unit, "attn.qkv.bias", 1, 3 * C, 0, CT_INIT_ZEROS, 0);
    add_param(unit, "attn.proj.weight", 2, C, C, CT_INIT_NORMAL, residual_std);
    add_param(unit, "attn.proj.bias", 1, C, 0, CT_INIT_ZEROS, 0);
    add_param(unit, "ln2.weight", 1, C, 0, CT_INIT_ONES, 0);
    add_param(unit, "ln2.bias", 1, C, 0, CT_INIT_ZEROS, 0);
    add_param(unit, "mlp.fc.weight", 2, 4 * C, C, CT_INIT_NORMAL, 0.02f);
    add_param(unit, "mlp.fc.bias", 1, 4 * C, 0, CT_INIT_ZEROS, 0);
    add_param(unit, "mlp.proj.weight", 2, C, 4 * C, CT_INIT_NORMAL, residual_std);
    add_param(unit, "mlp.proj.bias", 1, C, 0, CT_INIT_ZEROS, 0);
}

ct_status ct_gpt_init(ct_gpt *gpt, const ct_gpt_config *config) {
    memset(gpt, 0, sizeof(*gpt));
    const ct_gpt_config *c = config;
    if (c->n_layer < 1 || c->n_head < 1 || c->n_embd < 1 || c->vocab_size < 1 || c->seq_len < 1)
        return ct_error(CT_ERR_INVALID,
                        "model sizes must be positive (n_layer %d, n_head %d, "
                        "n_embd %d, vocab_size %d, seq_len %d)",
                        c->n_layer, c->n_head, c->n_embd, c->vocab_size, c->seq_len);
    if (c->n_embd % c->n_head != 0)
        return ct_error(CT_ERR_INVALID, "n_embd %d is not divisible by n_head %d", c->n_embd,
                        c->n_head);
    gpt->config = *c;
    gpt->n_units = 1 + c->n_layer;
    gpt->units = ct_alloc(CT_MEM_OTHER, sizeof(ct_unit) * (size_t)gpt->n_units);
    if (!gpt->units) return CT_ERR_NOMEM;
    layout_embed(&gpt->units[0], c);
    for (int l = 0; l < c->n_layer; l++)
        layout_block(&gpt->units[1 + l], c, l);
    for (int u = 0; u < gpt->n_units; u++) {
        gpt->units[u].index = u;
        gpt->num_params += gpt->units[u].numel;
        ct_unit_bind(&gpt->units[u], NULL, CT_F32, NULL, CT_F32);
    }
    return CT_OK;
}

/* Bytes of every unit's parameters (grads: gradients) in their dtypes. */
static size_t flat_bytes(const ct_gpt *gpt, bool grads) {
    size_t bytes = 0;
    for (int u = 0; u < gpt->n_units; u++) {
        const ct_unit *unit = &gpt->units[u];
        bytes += (size_t)unit->numel * ct_dtype_size(grads ? unit->grad_dtype : unit->dtype);
    }
    return bytes;
}

void ct_gpt_free(ct_gpt *gpt) {
    ct_free(CT_MEM_PARAMS, gpt->flat_data, flat_bytes(gpt, false));
    ct_free(CT_MEM_GRADS, gpt->flat_grad, flat_bytes(gpt, true));
    ct_free(CT_MEM_OTHER, gpt->units, sizeof(ct_unit) * (size_t)gpt->n_units);
    memset(gpt, 0, sizeof(*gpt));
}

ct_status ct_gpt_alloc_full(ct_gpt *gpt) {
    gpt->flat_data = ct_alloc(CT_MEM_PARAMS, flat_bytes(gpt, false));
    gpt->flat_grad = ct_alloc(CT_MEM_GRADS, flat_bytes(gpt, true));
    if (!gpt->flat_data || !gpt->flat_grad) return CT_ERR_NOMEM;
    char *data = gpt->flat_data, *grad = gpt->flat_grad;
    for (int u = 0; u < gpt->n_units; u++) {
        ct_unit *unit = &gpt->units[u];
        ct_unit_bind(unit, data, unit->dtype, grad, unit->grad_dtype);
        data += (size_t)unit->numel * ct_dtype_size(unit->dtype);
        grad += (size_t)unit->numel * ct_dtype_size(unit->grad_dtype);
    }
    return CT_OK;
}

void ct_gpt_init_range(const ct_gpt *gpt, int u, uint64_t seed, int64_t lo, int64_t hi,
                       float *dest) {
    const ct_unit *unit = &gpt->units[u];
    for (int p = 0; p < unit->n_params; p++) {
        const ct_param_desc *desc = &unit->params[p];
        int64_t start = CT_MAX(lo, desc->offset), end = CT_MIN(hi, desc->offset + desc->numel);
        uint64_t key = ct_rng_key(seed, RNG_PURPOSE_INIT, (uint64_t)u, (uint64_t)p);
#pragma omp parallel for schedule(static)
        for (int64_t i = start; i < end; i++) {
            float value = 0.0f;
            if (desc->init == CT_INIT_ONES) value = 1.0f;
            if (desc->init == CT_INIT_NORMAL)
                value = desc->init_std * (float)ct_rng_normal(key, (uint64_t)(i - desc->offset));
            dest[i - lo] = value;
        }
    }
}

void ct_gpt_init_weights(ct_gpt *gpt, uint64_t seed) {
    for (int u = 0; u < gpt->n_units; u++) {
        ct_unit *unit = &gpt->units[u];
        CT_ASSERT(unit->dtype == CT_F32, "unit %s: %s parameters initialised as f32", unit->name,
                  ct_dtype_name(unit->dtype));
        ct_gpt_init_range(gpt, u, seed, 0, unit->numel, unit->data);
    }
}

static const char *recompute_names[] = {"none", "block", "selective"};

ct_status ct_recompute_parse(const char *name, ct_recompute *mode) {
    for (size_t i = 0; i < CT_ARRAY_LEN(recompute_names); i++)
        if (strcmp(name, recompute_names[i]) == 0) {
            *mode = (ct_recompute)i;
            return CT_OK;
        }
    return ct_error(CT_ERR_INVALID,
                    "unknown activation checkpointing \"%s\": one of \"none\", \"block\", "
                    "\"selective\"",
                    name);
}

const char *ct_recompute_name(ct_recompute mode) {
    CT_ASSERT((size_t)mode < CT_ARRAY_LEN(recompute_names), "recompute mode %d", (int)mode);
    return recompute_names[mode];
}

void ct_gpt_set_recompute(ct_gpt *gpt, ct_recompute mode) {
    gpt->recompute = mode;
    for (int u = 1; u < gpt->n_units; u++) /* unit 0, the tied embedding, is kept whole */
        gpt->units[u].recompute = mode != CT_RECOMPUTE_NONE;
}

ct_tensor *ct_gpt_param(ct_gpt *gpt, const char *full_name) {
    for (int u = 0; u < gpt->n_units; u++) {
        ct_unit *unit = &gpt->units[u];
        size_t len = strlen(unit->name);
        if (strncmp(full_name, unit->name, len) != 0 || full_name[len] != '.') continue;
        for (int p = 0; p < unit->n_params; p++)
            if (strcmp(full_name + len + 1, unit->params[p].name) == 0) return &unit->tensors[p];
    }
    return NULL;
}

double ct_gpt_flops_per_token(const ct_gpt_config *c, int T) {
    double C = c->n_embd, L = c->n_layer;
    double matmul_weights = (double)c->vocab_size * C + L * 12.0 * C * C;
    return 6.0 * matmul_weights + 12.0 * L * T * C;
}

/* The half kernels' workspace for this model's largest Linear and its LM head. */
static size_t half_workspace_bytes(const ct_kernels *k, const ct_gpt_config *c, ct_dtype dtype,
                                   int N) {
    int C = c->n_embd, V = c->vocab_size;
    int chunk_rows = k->lm_head_chunk_rows(&k->ctx, N, V);
    size_t fc = k->half_workspace_bytes(&k->ctx, dtype, N, C, 4 * C, 0);
    size_t proj = k->half_workspace_bytes(&k->ctx, dtype, N, 4 * C, C, 0);
    size_t head = k->half_workspace_bytes(&k->ctx, dtype, N, C, V, chunk_rows);
    return CT_MAX(CT_MAX(fc, proj), head);
}

size_t ct_gpt_activation_bytes(const ct_kernels *k, const ct_gpt_config *c, int B, int T,
                               ct_recompute mode, ct_dtype compute) {
    size_t BT = (size_t)B * T, C = (size_t)c->n_embd, NH = (size_t)c->n_head;
    size_t L = (size_t)c->n_layer, V = (size_t)c->vocab_size;
    /* A block's outputs, widths in C: ln1 1, qkv 3, attention 1, proj 1, add 1, ln2 1, fc 4,
     * gelu 4, mlp 1, add 1 = 18; each gets a gradient as large in backward. */
    size_t scratch = 4 * BT /* LayerNorm mean, rstd */ +
                     k->attention_stats_floats(&k->ctx, B, T, (int)C, (int)NH) +
                     2 * k->attention_scratch_floats(&k->ctx, B, T, (int)C, (int)NH) /* fwd+bwd */;
    size_t block = 2 * 18 * BT * C + scratch;
    /* The token ids and targets (int32, as large as floats), the embedding's output and the
     * final LayerNorm with their gradients, the head's saved d(x), per-row losses and one
     * chunk of logits. */
    size_t head = 2 * BT + 4 * BT * C + 2 * BT + BT * C + BT +
                  (size_t)k->lm_head_chunk_rows(&k->ctx, (int)BT, (int)V) * V;
    size_t blocks = L * block;
    /* block: every block's output and its gradient, and one block whole at a time (its
     * forward, then in backward its recomputation and the gradients inside it). */
    if (mode == CT_RECOMPUTE_BLOCK) blocks = L * 2 * BT * C + block;
    /* selective: the LayerNorm and GELU outputs (1 + 1 + 4) and their gradients are not kept;
     * two transient buffers as large as the largest (4) stand in for them. */
    if (mode == CT_RECOMPUTE_SELECTIVE) blocks = L * (block - 2 * 6 * BT * C) + 2 * 4 * BT * C;
    /* bf16/f16 parameters: LayerNorm's weights widened to f32 (2C per LayerNorm). */
    if (compute != CT_F32) head += (2 * L + 1) * 2 * C;
    size_t floats = blocks + head;
    /* Tensor headers, nodes and saved records (a few hundred bytes per op, 64-byte aligned
     * allocations), generously. */
    size_t records = (L + 2) * 32 * 1024;
    size_t workspace = compute != CT_F32 ? half_workspace_bytes(k, c, compute, (int)BT) : 0;
    return floats * sizeof(float) + records + workspace;
}

void ct_gpt_zero_grad(ct_gpt *gpt, const ct_kernels *kernels) {
    for (int u = 0; u < gpt->n_units; u++) {
        ct_unit *unit = &gpt->units[u];
        if (!unit->grad) continue;
        CT_ASSERT(unit->grad_dtype == CT_F32, "unit %s: a %s gradient", unit->name,
                  ct_dtype_name(unit->grad_dtype));
        kernels->scale(&kernels->ctx, unit->grad, (size_t)unit->numel, 0);
    }
}

/* ---------------------------------------------------------------- forward */

/* The regions recomputation runs again (model/tape.h): a block, a LayerNorm, a GELU. */
typedef struct {
    ct_unit *unit;
    int n_head;
    bool selective; /* its LayerNorm and GELU outputs are transient */
} block_region;

// x is (B,T,C); ctx points at a unit's LayerNorm weight and bias, consecutive -> out (B,T,C)
static ct_tensor *layernorm_fwd(ct_tape *tape, void *ctx, ct_tensor *x) {
    ct_tensor *weight_bias = ctx;
    return ct_op_layernorm(tape, x, &weight_bias[0], &weight_bias[1]);
}

static ct_tensor *gelu_fwd(ct_tape *tape, void *ctx, ct_tensor *x) {
    (void)ctx;
    return ct_op_gelu(tape, x);
}

/* A LayerNorm or GELU, transient with selective recomputation. */
static ct_tensor *cheap_fwd(ct_tape *tape, const block_region *b, ct_region_fn fn, void *ctx,
                            ct_tensor *x) {
    return b->selective ? ct_tape_transient(tape, fn, ctx, x) : fn(tape, ctx, x);
}

// x is (B,T,C) -> the block's output (B,T,C); ctx is a block_region
static ct_tensor *block_body_fwd(ct_tape *tape, void *ctx, ct_tensor *x) {
    const block_region *b = ctx;
    ct_tensor *w = b->unit->tensors; /* in layout_block's order, read at each call */
    ct_tensor *h = cheap_fwd(tape, b, layernorm_fwd, &w[0], x);
    ct_tensor *qkv = ct_op_linear(tape, h, &w[2], &w[3]);
    ct_tensor *att = ct_op_attention(tape, qkv, b->n_head);
    ct_tensor *proj = ct_op_linear(tape, att, &w[4], &w[5]);
    ct_tensor *x1 = ct_op_add(tape, x, proj);
    ct_tensor *h2 = cheap_fwd(tape, b, layernorm_fwd, &w[6], x1);
    ct_tensor *fc = ct_op_linear(tape, h2, &w[8], &w[9]);
    ct_tensor *act = cheap_fwd(tape, b, gelu_fwd, NULL, fc);
    ct_tensor *mlp = ct_op_linear(tape, act, &w[10], &w[11]);
    return ct_op_add(tape, x1, mlp);
}

/* A block inside its unit's markers: with block recomputation a checkpoint, so that going
 * back the unit's pre_backward hook (which gathers its parameters) comes before the block
 * runs again. */
static ct_tensor *block_fwd(ct_gpt *gpt, ct_tape *tape, ct_unit *unit, ct_tensor *x) {
    if (ct_tape_unit_begin(tape, unit)) return NULL;
    block_region *b = ct_tape_host(tape, sizeof(block_region)); /* lives until backward */
    if (!b) return NULL;
    *b = (block_region){unit, gpt->config.n_head,
                        unit->recompute && gpt->recompute == CT_RECOMPUTE_SELECTIVE};
    ct_tensor *out = unit->recompute && gpt->recompute == CT_RECOMPUTE_BLOCK
                         ? ct_tape_checkpoint(tape, block_body_fwd, b, x)
                         : block_body_fwd(tape, b, x);
    if (ct_tape_unit_end(tape, unit)) return NULL;
    return out;
}

/* Everything up to the final LayerNorm's output (B,T,C); leaves the embed unit entered for
 * the second time so the caller applies the head inside it. */
static ct_tensor *trunk_fwd(ct_gpt *gpt, ct_tape *tape, const int32_t *inputs, int B, int T) {
    for (int u = 0; u < gpt->n_units; u++)
        gpt->units[u].uses_this_pass = 0;
    if (T > gpt->config.seq_len) {
        ct_error(CT_ERR_INVALID, "sequence length %d exceeds model.seq_len %d", T,
                 gpt->config.seq_len);
        ct_tape_fail(tape, CT_ERR_INVALID);
        return NULL;
    }
    ct_unit *embed = &gpt->units[0];
    int64_t shape[2] = {B, T};
    ct_tensor *tokens = ct_tape_upload(tape, CT_I32, 2, shape, inputs);
    /* The largest transient tensor is GELU's output, (B,T,4C). */
    if (gpt->recompute == CT_RECOMPUTE_SELECTIVE &&
        ct_tape_reserve_transient(tape, sizeof(float) * (size_t)B * T * 4 * gpt->config.n_embd))
        return NULL;
    if (ct_tape_unit_begin(tape, embed)) return NULL;
    ct_tensor *x = ct_op_embedding(tape, tokens, &embed->tensors[0], &embed->tensors[1]);
    if (ct_tape_unit_end(tape, embed)) return NULL;
    for (int l = 0; l < gpt->config.n_layer; l++)
        x = block_fwd(gpt, tape, &gpt->units[1 + l], x);
    if (ct_tape_unit_begin(tape, embed)) return NULL;
    return ct_op_layernorm(tape, x, &embed->tensors[2], &embed->tensors[3]);
}

ct_tensor *ct_gpt_forward_loss(ct_gpt *gpt, ct_tape *tape, const int32_t *inputs,
                               const int32_t *targets, int B, int T, float grad_scale) {
    ct_unit *embed = &gpt->units[0];
    ct_tensor *y = trunk_fwd(gpt, tape, inputs, B, T);
    int64_t shape[2] = {B, T};
    ct_tensor *tgt = ct_tape_upload(tape, CT_I32, 2, shape, targets);
    ct_tensor *loss = ct_op_lm_head_loss(tape, y, &embed->tensors[0], tgt, grad_scale);
    if (!loss || ct_tape_unit_end(tape, embed)) return NULL;
    return loss;
}

ct_status ct_gpt_forward_logits(ct_gpt *gpt, ct_tape *tape, const int32_t *inputs, int B, int T,
                                float *logits) {
    bool recording = tape->recording;
    tape->recording = false;
    ct_unit *embed = &gpt->units[0];
    ct_tensor *y = trunk_fwd(gpt, tape, inputs, B, T);
    const ct_kernels *k = tape->kernels;
    const ct_tensor *wte = &embed->tensors[0];
    int N = B * T, C = gpt->config.n_embd, V = gpt->config.vocab_size;
    if (y && wte->dtype != CT_F32) {
        ct_status status = k->lm_head_logits_half(&k->ctx, logits, ct_tensor_f32(y), wte->data,
                                                  wte->dtype, N, C, V);
        if (status) ct_tape_fail(tape, status);
    } else if (y) {
        k->lm_head_logits(&k->ctx, logits, ct_tensor_f32(y), ct_tensor_f32(wte), N, C, V);
    }
    if (y) ct_tape_unit_end(tape, embed);
    tape->recording = recording;
    return ct_tape_status(tape);
}
