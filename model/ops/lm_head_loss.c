/*
 * The tied LM head and mean cross-entropy, fused. Its gradients are computed during forward,
 * chunk by chunk, because that is the only time the logits exist: d(wte) goes straight into
 * wte's gradient and d(x) is saved for backward to pass on. The contract that follows: this op
 * is the last of the tape and backward starts from it with d(loss) = 1; the scale of the
 * gradient (1/grad_accum, say) is given up front as grad_scale.
 */
#include "model/ops/ops.h"

typedef struct {
    float *dx; /* (N,C), already scaled */
} lm_head_saved;

static void lm_head_loss_bwd(ct_tape *tape, ct_tape_node *node) {
    ct_tensor *x = node->in[0];
    lm_head_saved *saved = node->saved;
    if (!x->requires_grad) return;
    const ct_kernels *k = tape->kernels;
    float *dx = ct_tape_grad_f32(tape, x);
    if (dx) k->add_inplace(&k->ctx, dx, saved->dx, (size_t)ct_tensor_numel(x));
}

// x is (B,T,C), wte (V,C), targets (B,T) int32 -> scalar mean loss
ct_tensor *ct_op_lm_head_loss(ct_tape *tape, ct_tensor *x, ct_tensor *wte, ct_tensor *targets,
                              float grad_scale) {
    if (!x || !wte || !targets || tape->status) return NULL;
    int C = (int)x->shape[x->ndim - 1], V = (int)wte->shape[0];
    int N = (int)(ct_tensor_numel(x) / C);
    CT_ASSERT(wte->shape[1] == C && ct_tensor_numel(targets) == N,
              "lm_head_loss: C=%d, wte (%lld,%lld), %lld targets", C, (long long)wte->shape[0],
              (long long)wte->shape[1], (long long)ct_tensor_numel(targets));
    if (!ct_tape_check_dtype(tape, "lm_head_loss", CT_F32, x, NULL, NULL) ||
        !ct_tape_check_params(tape, "lm_head_loss", wte, NULL) ||
        !ct_tape_check_dtype(tape, "lm_head_loss", CT_I32, targets, NULL, NULL))
        return NULL;
    const ct_kernels *k = tape->kernels;
    ct_tensor *loss = ct_tape_tensor(tape, CT_F32, 0, NULL);
    float *losses = ct_tape_scratch(tape, sizeof(float) * (size_t)N);
    int chunk_rows = k->lm_head_chunk_rows(&k->ctx, N, V);
    float *scratch = ct_tape_scratch(tape, sizeof(float) * (size_t)chunk_rows * V);
    if (!loss || !losses || !scratch) return NULL;

    /* Whether gradients are wanted is known before computing them; the node is recorded after
     * the computation, as every op's is. */
    bool wants_grad = ct_tape_will_record(tape, x, wte);
    lm_head_saved *saved = NULL;
    float *dx = NULL, *dwte = NULL;
    if (wants_grad) {
        saved = ct_tape_host(tape, sizeof(lm_head_saved));
        if (!saved) return NULL;
        if (x->requires_grad) {
            saved->dx = ct_tape_zeros(tape, sizeof(float) * (size_t)N * C);
            if (!saved->dx) return NULL;
            dx = saved->dx;
        }
        if (wte->requires_grad) dwte = ct_tape_grad_f32(tape, wte);
        if (tape->status) return NULL;
    }
    if (wte->dtype != CT_F32) {
        ct_status status =
            k->lm_head_loss_half(&k->ctx, losses, dx, dwte, ct_tensor_f32(x), wte->data, wte->dtype,
                                 ct_tensor_i32(targets), N, C, V, grad_scale, scratch, chunk_rows);
        if (status) {
            ct_tape_fail(tape, status);
            return NULL;
        }
    } else {
        k->lm_head_loss(&k->ctx, losses, dx, dwte, ct_tensor_f32(x), ct_tensor_f32(wte),
                        ct_tensor_i32(targets), N, C, V, grad_scale, scratch, chunk_rows);
    }
    ct_tape_node *node =
        ct_tape_record(tape, "lm_head_loss", lm_head_loss_bwd, loss, x, wte, targets, NULL);
    if (node) node->saved = saved;
    /* The mean over the rows with a target, on the device: nothing here reads device data. */
    k->loss_mean(&k->ctx, ct_tensor_f32(loss), losses, ct_tensor_i32(targets), N);
    return loss;
}
