/*
 * AdamW over the units' flat buffers, or any range of them (adamw.c), and the learning-rate
 * schedules and gradient clipping (schedule.c).
 */
#ifndef CT_MODEL_OPTIM_H
#define CT_MODEL_OPTIM_H

#include "model/gpt.h"

#include <stdint.h>

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} ct_adamw_hparams;

/* AdamW moments for elements [lo, hi) of each unit's flat buffer (single process: all), in the
 * memory of `kernels`' device (zero at first). */
typedef struct {
    const ct_kernels *kernels; /* whose device_alloc holds m and v */
    int n_units;
    float **m; /* per unit, hi - lo floats */
    float **v;
    int64_t *lo, *hi;
    int64_t t; /* steps taken */
} ct_adamw;

ct_status ct_adamw_init(ct_adamw *opt, const ct_gpt *gpt, const int64_t *lo, const int64_t *hi,
                        const ct_kernels *kernels);
void ct_adamw_free(ct_adamw *opt);
/* One update of every unit's [lo, hi) range: params, grads point at element lo of the unit's
 * parameters and gradient (in its dtype and grad_dtype; the kernel takes f32 and anything else
 * is an error). grad_scale multiplies the gradient (clipping). */
ct_status ct_adamw_step(ct_adamw *opt, const ct_gpt *gpt, void *const *params,
                        const void *const *grads, const ct_adamw_hparams *hp, float grad_scale,
                        const ct_kernels *kernels);

typedef enum { CT_SCHEDULE_CONSTANT = 0, CT_SCHEDULE_COSINE, CT_SCHEDULE_LINEAR } ct_schedule_kind;

/* Learning rate at `step` (0-based) of `total`: linear warmup from lr/warmup to lr over
 * `warmup` steps (lr * (step+1) / warmup), then constant, or cosine or linear decay with
 * progress (step - warmup) / (total - warmup), which reaches min_lr one step after the last. */
double ct_lr_at(ct_schedule_kind kind, double lr, double min_lr, int warmup, int total, int step);

/* The clipping factor for a global gradient norm: min(1, clip / norm); 1 when clip <= 0. */
float ct_clip_scale(double norm, double clip);

#endif
