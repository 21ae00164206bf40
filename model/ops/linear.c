/*
 * Linear layer: out = x @ weight^T + bias, weight (OC, C) as in PyTorch and llm.c. x and the
 * gradients are f32; weight and bias are f32, or bf16/f16 (the *_half kernels).
 */
#include "model/ops/ops.h"

static void linear_bwd(ct_tape *tape, ct_tape_node *node) {
    ct_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2], *out = node->out;
    if (!out->grad) return;
    int C = (int)w->shape[1], OC = (int)w->shape[0];
    int N = (int)(ct_tensor_numel(x) / C);
    float *dx = x->requires_grad ? ct_tape_grad_f32(tape, x) : NULL;
    float *dw = w->requires_grad ? ct_tape_grad_f32(tape, w) : NULL;
    float *db = b && b->requires_grad ? ct_tape_grad_f32(tape, b) : NULL;
    if (tape->status) return;
    const ct_kernels *k = tape->kernels;
    if (w->dtype != CT_F32) {
        ct_status status = k->matmul_bwd_half(&k->ctx, dx, dw, db, ct_tensor_grad_f32(out),
                                              ct_tensor_f32(x), w->data, w->dtype, N, C, OC);
        if (status) ct_tape_fail(tape, status);
        return;
    }
    k->matmul_bwd(&k->ctx, dx, dw, db, ct_tensor_grad_f32(out), ct_tensor_f32(x), ct_tensor_f32(w),
                  N, C, OC);
}

// x is (...,C), weight (OC,C), bias (OC) or NULL -> out (...,OC)
ct_tensor *ct_op_linear(ct_tape *tape, ct_tensor *x, ct_tensor *weight, ct_tensor *bias) {
    if (!x || !weight || tape->status) return NULL;
    int C = (int)weight->shape[1], OC = (int)weight->shape[0];
    CT_ASSERT(x->shape[x->ndim - 1] == C, "linear: x has %lld channels, weight wants %d",
              (long long)x->shape[x->ndim - 1], C);
    if (!ct_tape_check_dtype(tape, "linear", CT_F32, x, NULL, NULL) ||
        !ct_tape_check_params(tape, "linear", weight, bias))
        return NULL;
    int N = (int)(ct_tensor_numel(x) / C);
    int64_t shape[CT_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        shape[d] = x->shape[d];
    shape[x->ndim - 1] = OC;
    ct_tensor *out = ct_tape_tensor(tape, CT_F32, x->ndim, shape);
    if (!out) return NULL;
    const ct_kernels *k = tape->kernels;
    if (weight->dtype != CT_F32) {
        ct_status status =
            k->matmul_fwd_half(&k->ctx, ct_tensor_f32(out), ct_tensor_f32(x), weight->data,
                               bias ? bias->data : NULL, weight->dtype, N, C, OC);
        if (status) {
            ct_tape_fail(tape, status);
            return NULL;
        }
    } else {
        k->matmul_fwd(&k->ctx, ct_tensor_f32(out), ct_tensor_f32(x), ct_tensor_f32(weight),
                      bias ? ct_tensor_f32(bias) : NULL, N, C, OC);
    }
    ct_tape_record(tape, "linear", linear_bwd, out, x, weight, bias, NULL);
    return out;
}
