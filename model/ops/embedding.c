/*
 * Token + position embedding: out[b,t] = wte[tokens[b,t]] + wpe[t]. The tables are f32 or
 * bf16/f16; out and the tables' gradients are f32 (backward does not read the tables).
 */
#include "model/ops/ops.h"

static void embedding_bwd(ct_tape *tape, ct_tape_node *node) {
    ct_tensor *tokens = node->in[0], *wte = node->in[1], *wpe = node->in[2], *out = node->out;
    if (!out->grad) return;
    float *dwte = wte->requires_grad ? ct_tape_grad_f32(tape, wte) : NULL;
    float *dwpe = wpe->requires_grad ? ct_tape_grad_f32(tape, wpe) : NULL;
    if (tape->status) return;
    const ct_kernels *k = tape->kernels;
    k->embedding_bwd(&k->ctx, dwte, dwpe, ct_tensor_grad_f32(out), ct_tensor_i32(tokens),
                     (int)tokens->shape[0], (int)tokens->shape[1], (int)wte->shape[1]);
}

// tokens is (B,T) int32, wte (V,C), wpe (maxT,C) -> out (B,T,C)
ct_tensor *ct_op_embedding(ct_tape *tape, ct_tensor *tokens, ct_tensor *wte, ct_tensor *wpe) {
    if (!tokens || !wte || !wpe || tape->status) return NULL;
    int B = (int)tokens->shape[0], T = (int)tokens->shape[1], C = (int)wte->shape[1];
    CT_ASSERT(T <= wpe->shape[0], "embedding: T=%d, maxT=%lld", T, (long long)wpe->shape[0]);
    if (!ct_tape_check_dtype(tape, "embedding", CT_I32, tokens, NULL, NULL) ||
        !ct_tape_check_params(tape, "embedding", wte, wpe))
        return NULL;
    int64_t shape[3] = {B, T, C};
    ct_tensor *out = ct_tape_tensor(tape, CT_F32, 3, shape);
    if (!out) return NULL;
    const ct_kernels *k = tape->kernels;
    if (wte->dtype != CT_F32) {
        ct_status status = k->embedding_fwd_half(&k->ctx, ct_tensor_f32(out), ct_tensor_i32(tokens),
                                                 wte->data, wpe->data, wte->dtype, B, T, C);
        if (status) {
            ct_tape_fail(tape, status);
            return NULL;
        }
    } else {
        k->embedding_fwd(&k->ctx, ct_tensor_f32(out), ct_tensor_i32(tokens), ct_tensor_f32(wte),
                         ct_tensor_f32(wpe), B, T, C);
    }
    ct_tape_record(tape, "embedding", embedding_bwd, out, tokens, wte, wpe, NULL);
    return out;
}
