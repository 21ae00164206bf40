/*
 * Causal multi-head self-attention over a fused q,k,v projection. Saves the kernels' per-row
 * softmax statistics for backward, which recomputes the probabilities.
 */
#include "model/ops/ops.h"

typedef struct {
    float *stats; /* the kernels' attention_stats_floats */
    int n_head;
} attention_saved;

static void attention_bwd(ct_tape *tape, ct_tape_node *node) {
    ct_tensor *qkv = node->in[0], *out = node->out;
    if (!out->grad) return;
    attention_saved *saved = node->saved;
    const ct_kernels *k = tape->kernels;
    int B = (int)qkv->shape[0], T = (int)qkv->shape[1], C = (int)qkv->shape[2] / 3;
    int NH = saved->n_head;
    float *dqkv = ct_tape_grad_f32(tape, qkv);
    float *scratch =
        ct_tape_scratch(tape, sizeof(float) * k->attention_scratch_floats(&k->ctx, B, T, C, NH));
    if (!dqkv || !scratch) return;
    k->attention_bwd(&k->ctx, dqkv, ct_tensor_grad_f32(out), ct_tensor_f32(qkv), ct_tensor_f32(out),
                     saved->stats, scratch, B, T, C, NH);
}

// qkv is (B,T,3C) -> out (B,T,C)
ct_tensor *ct_op_attention(ct_tape *tape, ct_tensor *qkv, int n_head) {
    if (!qkv || tape->status) return NULL;
    int B = (int)qkv->shape[0], T = (int)qkv->shape[1], C = (int)qkv->shape[2] / 3;
    CT_ASSERT(qkv->ndim == 3 && qkv->shape[2] == 3 * C && C % n_head == 0,
              "attention: qkv channels %lld, heads %d", (long long)qkv->shape[2], n_head);
    if (!ct_tape_check_dtype(tape, "attention", CT_F32, qkv, NULL, NULL)) return NULL;
    const ct_kernels *k = tape->kernels;
    int64_t shape[3] = {B, T, C};
    ct_tensor *out = ct_tape_tensor(tape, CT_F32, 3, shape);
    attention_saved *saved = ct_tape_host(tape, sizeof(attention_saved));
    float *stats =
        ct_tape_scratch(tape, sizeof(float) * k->attention_stats_floats(&k->ctx, B, T, C, n_head));
    float *scratch = ct_tape_scratch(
        tape, sizeof(float) * k->attention_scratch_floats(&k->ctx, B, T, C, n_head));
    if (!out || !saved || !stats || !scratch) return NULL;
    saved->stats = stats;
    saved->n_head = n_head;
    k->attention_fwd(&k->ctx, ct_tensor_f32(out), stats, ct_tensor_f32(qkv), scratch, B, T, C,
                     n_head);
    ct_tape_node *node =
        ct_tape_record(tape, "attention", attention_bwd, out, qkv, NULL, NULL, NULL);
    if (node) node->saved = saved;
    return out;
}
