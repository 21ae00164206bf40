/*
 * Units: a unit's parameters are views at fixed offsets into one flat buffer, and their
 * gradients views into a flat gradient buffer of the same layout. Rebinding the views is all a
 * sharding strategy does to make a gathered buffer the unit's parameters.
 */
#include "model/unit.h"

void ct_unit_bind(ct_unit *unit, void *data, ct_dtype dtype, void *grad, ct_dtype grad_dtype) {
    unit->data = data;
    unit->dtype = dtype;
    unit->grad = grad;
    unit->grad_dtype = grad_dtype;
    for (int p = 0; p < unit->n_params; p++) {
        const ct_param_desc *desc = &unit->params[p];
        ct_tensor *t = &unit->tensors[p];
        t->ndim = desc->ndim;
        for (int d = 0; d < desc->ndim; d++)
            t->shape[d] = desc->shape[d];
        t->dtype = dtype;
        t->grad_dtype = grad_dtype;
        t->device = CT_DEVICE_CPU;
        t->data = data ? (char *)data + desc->offset * (int64_t)ct_dtype_size(dtype) : NULL;
        t->grad = grad ? (char *)grad + desc->offset * (int64_t)ct_dtype_size(grad_dtype) : NULL;
        t->requires_grad = true;
        t->name = desc->name;
    }
}
