/*
 * The autograd tape. Ops compute eagerly and, while recording, append a node holding their
 * backward function, inputs, output and saved state; backward walks the nodes newest first.
 * Unit markers (begin/end) on the tape fire the hooks through which sharding and activation
 * checkpointing plug in, in forward order going forward and in reverse order going back.
 * Everything a pass creates lives in the tape's two arenas and is recycled by ct_tape_reset:
 * its records (nodes, tensor headers, ops' saved state) in the host arena, tensor data and
 * gradients in the data arena, which is the kernels' device memory and is therefore written
 * only by kernels: zeroed through the table's memset, filled from the host by its copy.
 */
#include "model/tape.h"

#include <string.h>

int64_t ct_tensor_numel(const ct_tensor *t) {
    int64_t n = 1;
    for (int d = 0; d < t->ndim; d++)
        n *= t->shape[d];
    return n;
}

/* The profile slot of op `name` (slots are found by name; there are a handful of op kinds). */
static int profile_slot(ct_tape_profile *profile, const char *name) {
    for (int i = 0; i < profile->n_ops; i++)
        if (profile->names[i] == name || strcmp(profile->names[i], name) == 0) return i;
    CT_ASSERT(profile->n_ops < CT_PROFILE_MAX_OPS, "too many op kinds to profile");
    profile->names[profile->n_ops] = name;
    return profile->n_ops++;
}

/* Starts timing the next op's forward. */
static void profile_mark(ct_tape *tape) {
    if (tape->profile) tape->profile->last_mark_s = ct_time_s();
}

void ct_tape_init(ct_tape *tape, const ct_kernels *kernels) {
    memset(tape, 0, sizeof(*tape));
    ct_arena_init(&tape->host, CT_MEM_ACTIVATIONS);
    ct_arena_set_capacity(&tape->host, CT_TAPE_HOST_RESERVE_BYTES);
    ct_arena_init(&tape->data, CT_MEM_ACTIVATIONS);
    tape->kernels = kernels;
    tape->recording = true;
}

void ct_tape_set_capacity(ct_tape *tape, size_t data_bytes) {
    ct_arena_set_capacity(&tape->data, data_bytes);
}

void ct_tape_free(ct_tape *tape) {
    ct_arena_free(&tape->host);
    ct_arena_free(&tape->data);
    memset(tape, 0, sizeof(*tape));
}

ct_status ct_tape_reset(ct_tape *tape) {
    tape->last = NULL;
    tape->status = CT_OK;
    profile_mark(tape);
    CT_CHECK(ct_arena_reset(&tape->host));
    return ct_arena_reset(&tape->data);
}

ct_status ct_tape_status(const ct_tape *tape) {
    return tape->status;
}

ct_status ct_tape_fail(ct_tape *tape, ct_status status) {
    if (tape->status == CT_OK) tape->status = status;
    return tape->status;
}

void *ct_tape_scratch(ct_tape *tape, size_t bytes) {
    void *ptr = ct_arena_alloc_uninit(&tape->data, bytes);
    if (!ptr) ct_tape_fail(tape, CT_ERR_NOMEM);
    return ptr;
}

void *ct_tape_zeros(ct_tape *tape, size_t bytes) {
    void *ptr = ct_tape_scratch(tape, bytes);
    const ct_kernels *k = tape->kernels;
    ct_status status = ptr ? k->memset_bytes(&k->ctx, ptr, 0, bytes) : CT_OK;
    if (status) ct_tape_fail(tape, status);
    return status ? NULL : ptr;
}

void *ct_tape_host(ct_tape *tape, size_t bytes) {
    void *ptr = ct_arena_alloc(&tape->host, bytes);
    if (!ptr) ct_tape_fail(tape, CT_ERR_NOMEM);
    return ptr;
}

static ct_tensor *new_header(ct_tape *tape, ct_dtype dtype, int ndim, const int64_t *shape) {
    CT_ASSERT(ndim >= 0 && ndim <= CT_MAX_DIMS, "ndim %d", ndim);
    ct_tensor *t = ct_tape_host(tape, sizeof(ct_tensor));
    if (!t) return NULL;
    t->ndim = ndim;
    for (int d = 0; d < ndim; d++)
        t->shape[d] = shape[d];
    t->dtype = dtype;
    t->grad_dtype = dtype;
    t->device = tape->kernels->ctx.device;
    return t;
}

ct_tensor *ct_tape_tensor(ct_tape *tape, ct_dtype dtype, int ndim, const int64_t *shape) {
    ct_tensor *t = new_header(tape, dtype, ndim, shape);
    if (!t) return NULL;
    /* Uninitialised: every op writes its whole output. */
    t->data = ct_tape_scratch(tape, (size_t)ct_tensor_numel(t) * ct_dtype_size(dtype));
    return t->data ? t : NULL;
}

ct_tensor *ct_tape_upload(ct_tape *tape, ct_dtype dtype, int ndim, const int64_t *shape,
                          const void *host) {
    ct_tensor *t = ct_tape_tensor(tape, dtype, ndim, shape);
    if (!t) return NULL;
    const ct_kernels *k = tape->kernels;
    size_t bytes = (size_t)ct_tensor_numel(t) * ct_dtype_size(dtype);
    ct_status status = k->copy(&k->ctx, t->data, host, bytes, CT_COPY_HOST_TO_DEVICE);
    if (status) ct_tape_fail(tape, status);
    return status ? NULL : t;
}

ct_tensor *ct_tape_wrap(ct_tape *tape, ct_dtype dtype, int ndim, const int64_t *shape, void *data) {
    ct_tensor *t = new_header(tape, dtype, ndim, shape);
    if (t) t->data = data;
    return t;
}

ct_status ct_tape_read_scalar(ct_tape *tape, const ct_tensor *t, float *value) {
    CT_ASSERT(t->dtype == CT_F32 && ct_tensor_numel(t) == 1, "a scalar f32 tensor: %s, %lld",
              ct_dtype_name(t->dtype), (long long)ct_tensor_numel(t));
    const ct_kernels *k = tape->kernels;
    return k->copy(&k->ctx, value, t->data, sizeof(float), CT_COPY_DEVICE_TO_HOST);
}

void *ct_tape_grad(ct_tape *tape, ct_tensor *t) {
    if (!t->grad) {
        t->grad = ct_tape_zeros(tape, (size_t)ct_tensor_numel(t) * ct_dtype_size(t->grad_dtype));
    }
    return t->grad;
}

float *ct_tape_grad_f32(ct_tape *tape, ct_tensor *t) {
    if (t->grad_dtype != CT_F32) {
        ct_tape_fail(tape, ct_error(CT_ERR_INVALID, "%s: a %s gradient, but the kernels take f32",
                                    t->name ? t->name : "a tensor", ct_dtype_name(t->grad_dtype)));
        return NULL;
    }
    return ct_tape_grad(tape, t);
}

bool ct_tape_check_dtype(ct_tape *tape, const char *op, ct_dtype dtype, const ct_tensor *a,
                         const ct_tensor *b, const ct_tensor *c) {
    const ct_tensor *in[3] = {a, b, c};
    for (int i = 0; i < 3; i++) {
        if (!in[i] || in[i]->dtype == dtype) continue;
        ct_tape_fail(tape,
                     ct_error(CT_ERR_INVALID, "%s: %s is %s; the %s kernels take %s", op,
                              in[i]->name ? in[i]->name : "an input", ct_dtype_name(in[i]->dtype),
                              tape->kernels->name, ct_dtype_name(dtype)));
        return false;
    }
    return true;
}

static ct_tape_node *append(ct_tape *tape, ct_node_kind kind) {
    ct_tape_node *node = ct_tape_host(tape, sizeof(ct_tape_node));
    if (!node) return NULL;
    node->kind = kind;
    node->prev = tape->last;
    tape->last = node;
    return node;
}

bool ct_tape_will_record(const ct_tape *tape, const ct_tensor *in0, const ct_tensor *in1) {
    return tape->recording && ((in0 && in0->requires_grad) || (in1 && in1->requires_grad));
}

ct_tape_node *ct_tape_record(ct_tape *tape, const char *op, ct_backward_fn backward, ct_tensor *out,
                             ct_tensor *in0, ct_tensor *in1, ct_tensor *in2, ct_tensor *in3) {
    ct_tensor *in[4] = {in0, in1, in2, in3};
    bool needs = false;
    for (int i = 0; i < 4; i++)
        needs = needs || (in[i] && in[i]->requires_grad);
    int slot = 0;
    if (tape->profile) {
        slot = profile_slot(tape->profile, op);
        double now = ct_time_s();
        tape->profile->fwd_s[slot] += now - tape->profile->last_mark_s;
        tape->profile->calls[slot]++;
        tape->profile->last_mark_s = now;
    }
    if (!tape->recording || !needs) return NULL;
    ct_tape_node *node = append(tape, CT_NODE_OP);
    if (!node) return NULL;
    node->profile_slot = slot;
    node->backward = backward;
    node->out = out;
    memcpy(node->in, in, sizeof(in));
    out->requires_grad = true;
    return node;
}

ct_status ct_tape_unit_begin(ct_tape *tape, ct_unit *unit) {
    if (tape->status) return tape->status;
    /* Counted in every pass (hooks read it); backward counts the uses down again, to know when
     * it has passed the last one. The model resets the counts at the start of a pass. */
    unit->uses_this_pass++;
    if (tape->hooks && tape->hooks->pre_forward) {
        ct_status status = tape->hooks->pre_forward(tape->hooks->ctx, unit);
        if (status) return ct_tape_fail(tape, status);
    }
    if (tape->recording) {
        ct_tape_node *node = append(tape, CT_NODE_UNIT_BEGIN);
        if (node) node->unit = unit;
    }
    profile_mark(tape);
    return tape->status;
}

ct_status ct_tape_unit_end(ct_tape *tape, ct_unit *unit) {
    if (tape->status) return tape->status;
    if (tape->recording) {
        ct_tape_node *node = append(tape, CT_NODE_UNIT_END);
        if (node) node->unit = unit;
    }
    if (tape->hooks && tape->hooks->post_forward) {
        ct_status status = tape->hooks->post_forward(tape->hooks->ctx, unit);
        if (status) return ct_tape_fail(tape, status);
    }
    profile_mark(tape);
    return tape->status;
}

ct_status ct_tape_backward(ct_tape *tape) {
    if (tape->status) return tape->status;
    CT_ASSERT(tape->last, "backward needs a recorded pass");
    const ct_unit_hooks *hooks = tape->hooks;
    for (ct_tape_node *node = tape->last; node; node = node->prev) {
        ct_status status = CT_OK;
        switch (node->kind) {
        case CT_NODE_OP:
            if (tape->profile) {
                double start = ct_time_s();
                node->backward(tape, node);
                tape->profile->bwd_s[node->profile_slot] += ct_time_s() - start;
            } else {
                node->backward(tape, node);
            }
            break;
        case CT_NODE_UNIT_END: /* going backward, a unit's end is where its backward begins */
            if (hooks && hooks->pre_backward) status = hooks->pre_backward(hooks->ctx, node->unit);
            break;
        case CT_NODE_UNIT_BEGIN: {
            ct_unit *unit = node->unit;
            CT_ASSERT(unit->uses_this_pass > 0, "unit %s passed more often than used", unit->name);
            bool last_use = --unit->uses_this_pass == 0;
            if (hooks && hooks->post_backward)
                status = hooks->post_backward(hooks->ctx, unit, last_use);
            break;
        }
        }
        if (status) return ct_tape_fail(tape, status);
        if (tape->status) return tape->status;
    }
    return CT_OK;
}
