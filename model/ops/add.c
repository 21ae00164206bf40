/*
 * Elementwise sum (residual connections): the gradient passes unchanged to both inputs.
 */
#include "model/ops/ops.h"

static void add_bwd(ct_tape *tape, ct_tape_node *node) {
    ct_tensor *out = node->out;
    if (!out->grad) return;
    const ct_kernels *k = tape->kernels;
    size_t n = (size_t)ct_tensor_numel(out);
    for (int i = 0; i < 2; i++) {
        ct_tensor *in = node->in[i];
        if (!in->requires_grad) continue;
        float *d = ct_tape_grad_f32(tape, in);
        if (d) k->add_inplace(&k->ctx, d, ct_tensor_grad_f32(out), n);
    }
}

// a and b have the same shape -> out the same shape
ct_tensor *ct_op_add(ct_tape *tape, ct_tensor *a, ct_tensor *b) {
    if (!a || !b || tape->status) return NULL;
    CT_ASSERT(ct_tensor_numel(a) == ct_tensor_numel(b), "add: %lld vs %lld elements",
              (long long)ct_tensor_numel(a), (long long)ct_tensor_numel(b));
    if (!ct_tape_check_dtype(tape, "add", CT_F32, a, b, NULL)) return NULL;
    ct_tensor *out = ct_tape_tensor(tape, CT_F32, a->ndim, a->shape);
    if (!out) return NULL;
    const ct_kernels *k = tape->kernels;
    k->add_fwd(&k->ctx, ct_tensor_f32(out), ct_tensor_f32(a), ct_tensor_f32(b),
               (size_t)ct_tensor_numel(a));
    ct_tape_record(tape, "add", add_bwd, out, a, b, NULL, NULL);
    return out;
}
