/*
 * GELU, tanh approximation (GPT-2).
 */
#include "model/ops/ops.h"

static void gelu_bwd(ct_tape *tape, ct_tape_node *node) {
    ct_tensor *x = node->in[0], *out = node->out;
    if (!out->grad) return;
    const ct_kernels *k = tape->kernels;
    float *dx = ct_tape_grad_f32(tape, x);
    if (dx)
        k->gelu_bwd(&k->ctx, dx, ct_tensor_f32(x), ct_tensor_grad_f32(out),
                    (size_t)ct_tensor_numel(x));
}

// x is any shape -> out the same shape
ct_tensor *ct_op_gelu(ct_tape *tape, ct_tensor *x) {
    if (!x || tape->status || !ct_tape_check_dtype(tape, "gelu", CT_F32, x, NULL, NULL))
        return NULL;
    ct_tensor *out = ct_tape_tensor(tape, CT_F32, x->ndim, x->shape);
    if (!out) return NULL;
    const ct_kernels *k = tape->kernels;
    k->gelu_fwd(&k->ctx, ct_tensor_f32(out), ct_tensor_f32(x), (size_t)ct_tensor_numel(x));
    ct_tape_record(tape, "gelu", gelu_bwd, out, x, NULL, NULL, NULL);
    return out;
}
