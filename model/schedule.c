/*
 * Learning-rate schedules and the gradient-clipping factor: pure functions of the step, so a
 * resumed run computes exactly what the uninterrupted run computed.
 */
#include "model/optim.h"

#include <math.h>

double ct_lr_at(ct_schedule_kind kind, double lr, double min_lr, int warmup, int total, int step) {
    if (step < warmup) return lr * (double)(step + 1) / (double)warmup;
    if (kind == CT_SCHEDULE_CONSTANT) return lr;
    int decay_steps = total - warmup;
    if (decay_steps <= 0) return lr;
    /* progress 0 at the first step after warmup, reaching 1 one step after the last (as
     * nanoGPT and llm.c do) */
    double progress = (double)(step - warmup) / (double)decay_steps;
    if (progress > 1.0) progress = 1.0;
    if (kind == CT_SCHEDULE_LINEAR) return lr + (min_lr - lr) * progress;
    return min_lr + 0.5 * (lr - min_lr) * (1.0 + cos(M_PI * progress));
}

float ct_clip_scale(double norm, double clip) {
    if (clip <= 0.0 || !(norm > clip)) return 1.0f;
    return (float)(clip / norm);
}
