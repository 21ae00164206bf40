/*
 * The ops (one file each in model/ops/): forward on the kernel table, recording a backward
 * node on the tape when an input requires a gradient.
 */
#ifndef CT_MODEL_OPS_H
#define CT_MODEL_OPS_H

#include "model/tape.h"

/* x (B,T,C) -> layernorm over C with weight, bias (C) */
ct_tensor *ct_op_layernorm(ct_tape *tape, ct_tensor *x, ct_tensor *weight, ct_tensor *bias);
/* x (..., C) @ weight^T (OC, C) + bias (OC) -> (..., OC); bias may be NULL */
ct_tensor *ct_op_linear(ct_tape *tape, ct_tensor *x, ct_tensor *weight, ct_tensor *bias);
/* elementwise GELU (tanh approximation) */
ct_tensor *ct_op_gelu(ct_tape *tape, ct_tensor *x);
/* a + b, same shape */
ct_tensor *ct_op_add(ct_tape *tape, ct_tensor *a, ct_tensor *b);
/* tokens (B,T) i32, wte (V,C), wpe (maxT,C) -> (B,T,C) */
ct_tensor *ct_op_embedding(ct_tape *tape, ct_tensor *tokens, ct_tensor *wte, ct_tensor *wpe);
/* qkv (B,T,3C) -> causal multi-head attention output (B,T,C) with n_head heads */
ct_tensor *ct_op_attention(ct_tape *tape, ct_tensor *qkv, int n_head);
/* x (B,T,C), wte (V,C), targets (B,T) i32 -> scalar mean cross-entropy of logits x @ wte^T.
 * The logits never exist whole: when recording, the gradients of grad_scale * loss are computed
 * chunk by chunk during this forward (d wte accumulated into wte's gradient at once, dx saved);
 * backward then only passes dx on. So this op must be the tape's last, with d(loss) = 1, and
 * the loss it returns is unscaled. */
ct_tensor *ct_op_lm_head_loss(ct_tape *tape, ct_tensor *x, ct_tensor *wte, ct_tensor *targets,
                              float grad_scale);

#endif
