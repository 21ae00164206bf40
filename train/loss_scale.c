/*
 * fp16's dynamic loss scaling (train_internal.h), as PyTorch's GradScaler and DeepSpeed's
 * loss scaler do it: fp16 has 5 exponent bits, so small gradients underflow to zero unless the
 * loss is scaled up; too large a scale overflows to infinity, which the global gradient norm
 * (computed for clipping anyway) reveals on every rank at once, so every rank skips together.
 */
#include "train/train_internal.h"

#include <math.h>

void ct_loss_scaler_init(ct_loss_scaler *scaler, bool enabled) {
    scaler->enabled = enabled;
    scaler->scale = enabled ? CT_LOSS_SCALE_INITIAL : 1.0;
    scaler->good_steps = 0;
    scaler->skipped_steps = 0;
}

bool ct_loss_scaler_update(ct_loss_scaler *scaler, double scaled_norm) {
    if (!scaler->enabled) return true;
    if (!isfinite(scaled_norm)) {
        scaler->scale = fmax(1.0, scaler->scale / 2);
        scaler->good_steps = 0;
        scaler->skipped_steps++;
        return false;
    }
    if (++scaler->good_steps >= CT_LOSS_SCALE_WINDOW) {
        scaler->scale *= 2;
        scaler->good_steps = 0;
    }
    return true;
}
