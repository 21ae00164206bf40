/*
 * LayerNorm over the last dimension (GPT-2's eps 1e-5). Saves each row's mean and 1/std. With
 * bf16/f16 weight and bias (precision.compute) the op widens them to f32 once, into memory saved
 * for backward too: (C) floats, where the f32 kernels then do the rest.
 */
#include "model/ops/ops.h"

#define LAYERNORM_EPS 1e-5f

typedef struct {
    float *mean, *rstd; /* (N) */
    const float *w32;   /* weight and bias widened to f32 (2C); NULL when they are f32, read at
                         * backward from the current binding (fsdp may have regathered them) */
} layernorm_saved;

static void layernorm_bwd(ct_tape *tape, ct_tape_node *node) {
    ct_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2], *out = node->out;
    if (!out->grad) return;
    layernorm_saved *saved = node->saved;
    int C = (int)x->shape[x->ndim - 1];
    int N = (int)(ct_tensor_numel(x) / C);
    float *dx = x->requires_grad ? ct_tape_grad_f32(tape, x) : NULL;
    float *dw = w->requires_grad ? ct_tape_grad_f32(tape, w) : NULL;
    float *db = b->requires_grad ? ct_tape_grad_f32(tape, b) : NULL;
    if (tape->status) return;
    const ct_kernels *k = tape->kernels;
    const float *w32 = saved->w32 ? saved->w32 : ct_tensor_f32(w);
    k->layernorm_bwd(&k->ctx, dx, dw, db, ct_tensor_grad_f32(out), ct_tensor_f32(x), w32,
                     saved->mean, saved->rstd, N, C);
}

// x is (...,C), weight and bias (C) -> out (...,C)
ct_tensor *ct_op_layernorm(ct_tape *tape, ct_tensor *x, ct_tensor *weight, ct_tensor *bias) {
    if (!x || !weight || !bias || tape->status) return NULL;
    int C = (int)x->shape[x->ndim - 1];
    CT_ASSERT(ct_tensor_numel(weight) == C && ct_tensor_numel(bias) == C, "layernorm C=%d", C);
    if (!ct_tape_check_dtype(tape, "layernorm", CT_F32, x, NULL, NULL) ||
        !ct_tape_check_params(tape, "layernorm", weight, bias))
        return NULL;
    int N = (int)(ct_tensor_numel(x) / C);
    ct_tensor *out = ct_tape_tensor(tape, CT_F32, x->ndim, x->shape);
    layernorm_saved *saved = ct_tape_host(tape, sizeof(layernorm_saved));
    bool half = weight->dtype != CT_F32;
    float *stats = ct_tape_scratch(tape, sizeof(float) * (2 * (size_t)N + (half ? 2 * C : 0)));
    if (!out || !saved || !stats) return NULL;
    saved->mean = stats;
    saved->rstd = stats + N;
    const ct_kernels *k = tape->kernels;
    const float *w32 = half ? NULL : ct_tensor_f32(weight);
    const float *b32 = half ? NULL : ct_tensor_f32(bias);
    if (half) {
        float *widened = stats + 2 * (size_t)N;
        ct_status status =
            k->cast(&k->ctx, widened, CT_F32, weight->data, weight->dtype, (size_t)C);
        if (status == CT_OK)
            status = k->cast(&k->ctx, widened + C, CT_F32, bias->data, bias->dtype, (size_t)C);
        if (status) {
            ct_tape_fail(tape, status);
            return NULL;
        }
        saved->w32 = w32 = widened;
        b32 = widened + C;
    }
    k->layernorm_fwd(&k->ctx, ct_tensor_f32(out), saved->mean, saved->rstd, ct_tensor_f32(x), w32,
                     b32, N, C, LAYERNORM_EPS);
    ct_tape_node *node =
        ct_tape_record(tape, "layernorm", layernorm_bwd, out, x, weight, bias, NULL);
    if (node) node->saved = saved;
    return out;
}
