/*
 * AdamW state and update over ranges of the units' flat buffers. A single process owns every
 * element; a sharding strategy owns [lo, hi) of each unit and keeps moments for that alone.
 * Weight decay follows each parameter's flag (2-D weights only), so a range that cuts through
 * several parameters is updated parameter piece by parameter piece.
 */
#include "model/optim.h"

#include <math.h>
#include <string.h>

ct_status ct_adamw_init(ct_adamw *opt, const ct_gpt *gpt, const int64_t *lo, const int64_t *hi,
                        const ct_kernels *kernels) {
    memset(opt, 0, sizeof(*opt));
    opt->kernels = kernels;
    int n = gpt->n_units;
    opt->n_units = n;
    opt->m = ct_alloc(CT_MEM_OTHER, sizeof(float *) * (size_t)n);
    opt->v = ct_alloc(CT_MEM_OTHER, sizeof(float *) * (size_t)n);
    opt->lo = ct_alloc(CT_MEM_OTHER, sizeof(int64_t) * (size_t)n);
    opt->hi = ct_alloc(CT_MEM_OTHER, sizeof(int64_t) * (size_t)n);
    if (!opt->m || !opt->v || !opt->lo || !opt->hi) return CT_ERR_NOMEM;
    for (int u = 0; u < n; u++) {
        opt->lo[u] = lo ? lo[u] : 0;
        opt->hi[u] = hi ? hi[u] : gpt->units[u].numel;
        size_t bytes = sizeof(float) * (size_t)(opt->hi[u] - opt->lo[u]);
        opt->m[u] = kernels->device_alloc(&kernels->ctx, CT_MEM_OPTIMIZER, bytes);
        opt->v[u] = kernels->device_alloc(&kernels->ctx, CT_MEM_OPTIMIZER, bytes);
        if (!opt->m[u] || !opt->v[u]) return CT_ERR_NOMEM;
    }
    return CT_OK;
}

void ct_adamw_free(ct_adamw *opt) {
    for (int u = 0; u < opt->n_units && opt->m; u++) {
        size_t bytes = sizeof(float) * (size_t)(opt->hi[u] - opt->lo[u]);
        opt->kernels->device_free(&opt->kernels->ctx, CT_MEM_OPTIMIZER, opt->m[u], bytes);
        opt->kernels->device_free(&opt->kernels->ctx, CT_MEM_OPTIMIZER, opt->v[u], bytes);
    }
    size_t n = (size_t)opt->n_units;
    ct_free(CT_MEM_OTHER, opt->m, sizeof(float *) * n);
    ct_free(CT_MEM_OTHER, opt->v, sizeof(float *) * n);
    ct_free(CT_MEM_OTHER, opt->lo, sizeof(int64_t) * n);
    ct_free(CT_MEM_OTHER, opt->hi, sizeof(int64_t) * n);
    memset(opt, 0, sizeof(*opt));
}

ct_status ct_adamw_step(ct_adamw *opt, const ct_gpt *gpt, void *const *params,
                        const void *const *grads, const ct_adamw_hparams *hp, float grad_scale,
                        const ct_kernels *kernels) {
    /* params are the fp32 masters the strategy passes (the unit's own buffer in fp32, the
     * masters beside bf16/fp16 compute parameters); gradients are always the unit's f32 ones. */
    for (int u = 0; u < opt->n_units; u++) {
        const ct_unit *unit = &gpt->units[u];
        if (unit->grad_dtype != CT_F32)
            return ct_error(CT_ERR_INVALID,
                            "AdamW on unit %s: %s gradients, but the %s kernel takes f32",
                            unit->name, ct_dtype_name(unit->grad_dtype), kernels->name);
    }
    opt->t++;
    float bias1 = (float)(1.0 - pow(hp->beta1, (double)opt->t));
    float bias2 = (float)(1.0 - pow(hp->beta2, (double)opt->t));
    for (int u = 0; u < opt->n_units; u++) {
        const ct_unit *unit = &gpt->units[u];
        int64_t lo = opt->lo[u], hi = opt->hi[u];
        for (int p = 0; p < unit->n_params; p++) {
            const ct_param_desc *desc = &unit->params[p];
            int64_t start = CT_MAX(lo, desc->offset);
            int64_t end = CT_MIN(hi, desc->offset + desc->numel);
            if (start >= end) continue;
            int64_t at = start - lo;
            float *param = params[u];
            const float *grad = grads[u];
            kernels->adamw(&kernels->ctx, param + at, grad + at, opt->m[u] + at, opt->v[u] + at,
                           (size_t)(end - start), hp->lr, hp->beta1, hp->beta2, hp->eps,
                           desc->decay ? hp->weight_decay : 0.0f, bias1, bias2, grad_scale);
        }
    }
    return CT_OK;
}
