/*
 * Units: the groups of parameters that share one flat buffer (the embedding, each block), the
 * granularity at which a sharding strategy gathers, reduces and frees; and the hooks that let
 * it act when forward and backward enter and leave a unit (unit.c).
 */
#ifndef CT_MODEL_UNIT_H
#define CT_MODEL_UNIT_H

#include "model/tensor.h"

#include <stdbool.h>
#include <stdint.h>

#define CT_UNIT_MAX_PARAMS 16
#define CT_NAME_LEN 48

typedef enum { CT_INIT_NORMAL = 0, CT_INIT_ZEROS, CT_INIT_ONES } ct_init_kind;

/* One parameter inside a unit's flat buffer. */
typedef struct {
    char name[CT_NAME_LEN]; /* within the unit, e.g. "attn.qkv.weight" */
    int ndim;
    int64_t shape[CT_MAX_DIMS];
    int64_t offset; /* elements from the start of the unit's flat buffer */
    int64_t numel;
    bool decay; /* AdamW weight decay applies (2-D weights only) */
    ct_init_kind init;
    float init_std;
} ct_param_desc;

/* A group of parameters that is gathered, reduced, checkpointed and recomputed as one: the
 * embedding unit (wte, wpe, final LayerNorm; used twice per pass because the LM head is tied
 * to wte) and one unit per transformer block. */
typedef struct ct_unit {
    char name[CT_NAME_LEN];
    int index;
    int n_params;
    ct_param_desc params[CT_UNIT_MAX_PARAMS];
    ct_tensor tensors[CT_UNIT_MAX_PARAMS]; /* views into data / grad */
    int64_t numel;                         /* sum of the parameters' sizes */
    void *data;          /* numel of dtype: the full parameters while this rank holds them */
    ct_dtype dtype;      /* of data (the model's choice; kept by every rebinding) */
    void *grad;          /* numel of grad_dtype: the full gradient while this rank holds it */
    ct_dtype grad_dtype; /* of grad */
    int uses_per_pass;   /* forward uses per pass: 2 for the tied embedding unit */
    bool recompute;      /* its activations are recomputed in backward (ct_gpt_set_recompute) */
    int uses_this_pass;  /* counted by the tape's markers */
} ct_unit;

/* Points the unit's parameter and gradient views at `data` (numel elements of `dtype`) and
 * `grad` (numel of `grad_dtype`); either may be NULL. A sharding strategy calls it when it
 * gathers a unit into a new buffer. */
void ct_unit_bind(ct_unit *unit, void *data, ct_dtype dtype, void *grad, ct_dtype grad_dtype);

/* Hooks fire on the unit markers of the tape, in execution order. A NULL function is skipped.
 * post_backward's `last_use` is true when backward has passed the unit's final use in this
 * pass (its first use in forward): only then is its gradient complete. */
typedef struct {
    void *ctx;
    ct_status (*pre_forward)(void *ctx, ct_unit *unit);
    ct_status (*post_forward)(void *ctx, ct_unit *unit);
    ct_status (*pre_backward)(void *ctx, ct_unit *unit);
    ct_status (*post_backward)(void *ctx, ct_unit *unit, bool last_use);
} ct_unit_hooks;

#endif
