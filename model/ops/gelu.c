/*
 * GELU, tanh approximation (GPT-2).
 */
#include "model/model.h"

static void gelu_bwd(ct_tape *tape, ct_tape_node *node) {
    ct_tensor *x = node->in[0], *out = node->out;
    if (!out->grad) return;
    float *dx = ct_tape_grad(tape, x);
    if (dx)
        tape->kernels->gelu_bwd(&tape->kernels->ctx, dx, x->data, out->grad,
                                (size_t)ct_tensor_numel(x));
}

// x is any shape -> out the same shape
ct_tensor *ct_op_gelu(ct_tape *tape, ct_tensor *x) {
    if (!x || tape->status) return NULL;
    ct_tensor *out = ct_tape_tensor(tape, CT_F32, x->ndim, x->shape);
    if (!out) return NULL;
    tape->kernels->gelu_fwd(&tape->kernels->ctx, out->data, x->data, (size_t)ct_tensor_numel(x));
    ct_tape_record(tape, "gelu", gelu_bwd, out, x, NULL, NULL, NULL);
    return out;
}
