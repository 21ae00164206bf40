/*
 * Linear layer: out = x @ weight^T + bias, weight (OC, C) as in PyTorch and llm.c.
 */
#include "model/model.h"

static void linear_bwd(ct_tape *tape, ct_tape_node *node) {
    ct_tensor *x = node->in[0], *w = node->in[1], *b = node->in[2], *out = node->out;
    if (!out->grad) return;
    int C = (int)w->shape[1], OC = (int)w->shape[0];
    int N = (int)(ct_tensor_numel(x) / C);
    float *dx = x->requires_grad ? ct_tape_grad(tape, x) : NULL;
    float *dw = w->requires_grad ? ct_tape_grad(tape, w) : NULL;
    float *db = b && b->requires_grad ? ct_tape_grad(tape, b) : NULL;
    if (tape->status) return;
    tape->kernels->matmul_bwd(&tape->kernels->ctx, dx, dw, db, out->grad, x->data, w->data, N, C,
                              OC);
}

// x is (...,C), weight (OC,C), bias (OC) or NULL -> out (...,OC)
ct_tensor *ct_op_linear(ct_tape *tape, ct_tensor *x, ct_tensor *weight, ct_tensor *bias) {
    if (!x || !weight || tape->status) return NULL;
    int C = (int)weight->shape[1], OC = (int)weight->shape[0];
    CT_ASSERT(x->shape[x->ndim - 1] == C, "linear: x has %lld channels, weight wants %d",
              (long long)x->shape[x->ndim - 1], C);
    int N = (int)(ct_tensor_numel(x) / C);
    int64_t shape[CT_MAX_DIMS];
    for (int d = 0; d < x->ndim; d++)
        shape[d] = x->shape[d];
    shape[x->ndim - 1] = OC;
    ct_tensor *out = ct_tape_tensor(tape, CT_F32, x->ndim, shape);
    if (!out) return NULL;
    tape->kernels->matmul_fwd(&tape->kernels->ctx, out->data, x->data, weight->data,
                              bias ? bias->data : NULL, N, C, OC);
    ct_tape_record(tape, "linear", linear_bwd, out, x, weight, bias, NULL);
    return out;
}
