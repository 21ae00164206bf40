/*
 * Tensors: a shape, a dtype and a device over memory the tensor does not own (a view into a
 * unit's flat buffer or into the tape's data arena), and the typed views kernels take. The
 * element types and devices are kernels/' (kernels.h), shared with the kernel table.
 */
#ifndef CT_MODEL_TENSOR_H
#define CT_MODEL_TENSOR_H

#include "common/common.h"
#include "kernels/kernels.h"

#include <stdbool.h>
#include <stdint.h>

/* ct_dtype and ct_device are kernels/' (kernels.h): kernels and tensors share them. */

#define CT_MAX_DIMS 4

typedef struct ct_tensor {
    int ndim;
    int64_t shape[CT_MAX_DIMS];
    ct_dtype dtype;
    ct_device device;
    void *data;          /* a view: owned by an arena or a unit's flat buffer */
    void *grad;          /* same shape, grad_dtype; NULL until backward needs it (activations) */
    ct_dtype grad_dtype; /* an activation's is its dtype; a parameter's is its unit's grad_dtype */
    bool requires_grad;  /* parameters and everything computed from them */
    const char *name;
} ct_tensor;

int64_t ct_tensor_numel(const ct_tensor *t);
/* Typed views of data and grad for the kernels, which take typed pointers. An op checks the
 * dtypes it is given first (ct_tape_check_dtype: an unsupported one is an error); a mismatch
 * here is a bug. */
static inline float *ct_tensor_f32(const ct_tensor *t) {
    CT_ASSERT(t->dtype == CT_F32, "%s: %s data read as f32", t->name ? t->name : "a tensor",
              ct_dtype_name(t->dtype));
    return (float *)t->data;
}
static inline float *ct_tensor_grad_f32(const ct_tensor *t) {
    CT_ASSERT(t->grad_dtype == CT_F32, "%s: %s gradient read as f32",
              t->name ? t->name : "a tensor", ct_dtype_name(t->grad_dtype));
    return (float *)t->grad;
}
static inline const int32_t *ct_tensor_i32(const ct_tensor *t) {
    CT_ASSERT(t->dtype == CT_I32, "%s: %s data read as i32", t->name ? t->name : "a tensor",
              ct_dtype_name(t->dtype));
    return (const int32_t *)t->data;
}

#endif
