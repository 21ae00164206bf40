/*
 * The autograd tape. Ops compute eagerly and, while recording, append a node holding their
 * backward function, inputs, output and saved state; backward walks the nodes newest first.
 * Unit markers (begin/end) on the tape fire the hooks through which sharding and activation
 * checkpointing plug in, in forward order going forward and in reverse order going back.
 * Everything a pass creates lives in the tape's two arenas and is recycled by ct_tape_reset:
 * its records (nodes, tensor headers, ops' saved state) in the host arena, tensor data and
 * gradients in the data arena, which is the kernels' device memory and is therefore written
 * only by kernels: zeroed through the table's memset, filled from the host by its copy.
 *
 * Recomputation rewinds the arenas: a checkpoint gives back its region's memory in forward
 * (after moving the output down to where the region began) and again after the region's
 * backward; a transient tensor's data lives in one buffer that the regions of all transient
 * tensors share, regenerated on demand. Nothing here is specific to an op or a model.
 */
#include "model/tape.h"

#include <string.h>

/* A checkpoint node's record: the region to run again. */
typedef struct {
    ct_region_fn fn;
    void *ctx;
} region;

/* A transient tensor and the region that regenerates it (a list in the host arena). */
struct ct_transient {
    const ct_tensor *tensor;
    region make;
    ct_tensor *in;
    ct_transient *next;
};

/* Both arenas' positions, to rewind to. */
typedef struct {
    size_t host, data;
} marks;

static marks mark(const ct_tape *tape) {
    return (marks){ct_arena_mark(&tape->host), ct_arena_mark(&tape->data)};
}

static void rewind_to(ct_tape *tape, marks m) {
    ct_arena_rewind(&tape->host, m.host);
    ct_arena_rewind(&tape->data, m.data);
}

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
    /* Off the CPU the arena has no memory until ct_tape_set_capacity gives it its block. */
    if (kernels && kernels->ctx.device != CT_DEVICE_CPU)
        (void)ct_arena_init_over(&tape->data, CT_MEM_ACTIVATIONS, NULL, 0);
    tape->kernels = kernels;
    tape->recording = true;
}

ct_status ct_tape_set_capacity(ct_tape *tape, size_t data_bytes) {
    const ct_kernels *k = tape->kernels;
    if (k->ctx.device == CT_DEVICE_CPU) {
        ct_arena_set_capacity(&tape->data, data_bytes);
        return CT_OK;
    }
    CT_ASSERT(!tape->data_block, "the tape's device block is allocated once");
    tape->data_block = k->device_alloc(&k->ctx, CT_MEM_ACTIVATIONS, data_bytes);
    if (!tape->data_block) return CT_ERR_NOMEM;
    tape->data_block_bytes = data_bytes;
    ct_arena_free(&tape->data);
    return ct_arena_init_over(&tape->data, CT_MEM_ACTIVATIONS, tape->data_block, data_bytes);
}

void ct_tape_free(ct_tape *tape) {
    const ct_kernels *k = tape->kernels;
    ct_arena_free(&tape->host);
    ct_arena_free(&tape->data);
    if (tape->data_block)
        k->device_free(&k->ctx, CT_MEM_ACTIVATIONS, tape->data_block, tape->data_block_bytes);
    memset(tape, 0, sizeof(*tape));
}

ct_status ct_tape_reset(ct_tape *tape) {
    tape->last = NULL;
    tape->status = CT_OK;
    tape->regions = 0;
    memset(&tape->transient, 0, sizeof(tape->transient));
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
    size_t bytes = (size_t)ct_tensor_numel(t) * ct_dtype_size(dtype);
    if (tape->transient.claim) { /* a transient tensor's region makes its output */
        tape->transient.claim = false;
        if (bytes > tape->transient.bytes) {
            ct_tape_fail(tape, ct_error(CT_ERR_INVALID,
                                        "a transient tensor of %zu bytes, but the transient "
                                        "buffer has %zu",
                                        bytes, tape->transient.bytes));
            return NULL;
        }
        t->data = tape->transient.data;
        return t;
    }
    /* Uninitialised: every op writes its whole output. */
    t->data = ct_tape_scratch(tape, bytes);
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
    if (t->grad) return t->grad;
    size_t bytes = (size_t)ct_tensor_numel(t) * ct_dtype_size(t->grad_dtype);
    if (tape->transient.data && t->data == tape->transient.data && !tape->transient.grad_holder &&
        bytes <= tape->transient.bytes) {
        const ct_kernels *k = tape->kernels;
        ct_status status = k->memset_bytes(&k->ctx, tape->transient.grad, 0, bytes);
        if (status) {
            ct_tape_fail(tape, status);
            return NULL;
        }
        tape->transient.grad_holder = t;
        t->grad = tape->transient.grad;
        return t->grad;
    }
    t->grad = ct_tape_zeros(tape, bytes);
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

bool ct_tape_check_params(ct_tape *tape, const char *op, const ct_tensor *a, const ct_tensor *b) {
    const ct_tensor *first = a ? a : b;
    if (!first) return true;
    ct_dtype dtype = first->dtype;
    if (dtype != CT_F32 && dtype != CT_BF16 && dtype != CT_F16) {
        ct_tape_fail(tape,
                     ct_error(CT_ERR_INVALID, "%s: %s is %s; parameters are f32, bf16 or f16", op,
                              first->name ? first->name : "a parameter", ct_dtype_name(dtype)));
        return false;
    }
    return ct_tape_check_dtype(tape, op, dtype, a, b, NULL);
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
    for (int i = 0; i < 4; i++) {
        needs = needs || (in[i] && in[i]->requires_grad);
        CT_ASSERT(!in[i] || !tape->transient.data || in[i]->data != tape->transient.data ||
                      in[i] == tape->transient.holder,
                  "op %s read a transient tensor after another one replaced it", op);
    }
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
    CT_ASSERT(tape->regions == 0, "unit %s's marker inside a checkpoint region", unit->name);
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
    CT_ASSERT(tape->regions == 0, "unit %s's marker inside a checkpoint region", unit->name);
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

/* Copies `bytes` from src down to dst (dst <= src, in the data arena) through the table, in
 * pieces that do not overlap: a region's output may start closer to the region's start than
 * its own size. */
static ct_status move_down(ct_tape *tape, void *dst, const void *src, size_t bytes) {
    const ct_kernels *k = tape->kernels;
    size_t gap = (size_t)((const char *)src - (char *)dst);
    if (gap == 0 || bytes == 0) return CT_OK;
    for (size_t off = 0; off < bytes; off += gap)
        CT_CHECK(k->copy(&k->ctx, (char *)dst + off, (const char *)src + off,
                         CT_MIN(gap, bytes - off), CT_COPY_DEVICE_TO_DEVICE));
    return CT_OK;
}

ct_tensor *ct_tape_checkpoint(ct_tape *tape, ct_region_fn fn, void *ctx, ct_tensor *in) {
    if (!in || tape->status) return NULL;
    marks start = mark(tape);
    bool recording = tape->recording;
    tape->recording = false; /* the region's nodes would be given back with its memory */
    tape->regions++;
    ct_tensor *y = fn(tape, ctx, in);
    tape->regions--;
    tape->recording = recording;
    if (!y) return NULL;
    ct_tensor kept = *y; /* its header is given back too */
    rewind_to(tape, start);
    ct_tensor *out = ct_tape_tensor(tape, kept.dtype, kept.ndim, kept.shape);
    if (!out) return NULL;
    CT_ASSERT((char *)out->data <= (char *)kept.data, "a region's output below its start");
    ct_status status = move_down(tape, out->data, kept.data,
                                 (size_t)ct_tensor_numel(out) * ct_dtype_size(out->dtype));
    if (status) {
        ct_tape_fail(tape, status);
        return NULL;
    }
    out->name = kept.name;
    if (!recording) return out;
    region *r = ct_tape_host(tape, sizeof(region));
    ct_tape_node *node = r ? append(tape, CT_NODE_CHECKPOINT) : NULL;
    if (!node) return NULL;
    *r = (region){fn, ctx};
    node->saved = r;
    node->in[0] = in;
    node->out = out;
    out->requires_grad = true;
    return out;
}

ct_status ct_tape_reserve_transient(ct_tape *tape, size_t bytes) {
    if (tape->status) return tape->status;
    if (tape->transient.data && tape->transient.bytes >= bytes) return CT_OK;
    CT_ASSERT(!tape->transient.list, "the transient buffer is reserved before its first use");
    tape->transient.data = ct_tape_scratch(tape, bytes);
    tape->transient.grad = ct_tape_scratch(tape, bytes);
    tape->transient.bytes = tape->transient.grad ? bytes : 0;
    return tape->status;
}

/* Runs the region of a transient tensor with its output claiming the transient buffer. */
static ct_tensor *run_transient(ct_tape *tape, const region *make, ct_tensor *in) {
    CT_ASSERT(tape->transient.data, "ct_tape_reserve_transient comes before a transient tensor");
    CT_ASSERT(in->data != tape->transient.data, "a transient tensor made from a transient one");
    tape->transient.claim = true;
    ct_tensor *y = make->fn(tape, make->ctx, in);
    bool claimed = !tape->transient.claim;
    tape->transient.claim = false;
    if (!y) return NULL;
    CT_ASSERT(claimed && y->data == tape->transient.data,
              "a transient tensor's region returns the first tensor it makes");
    return y;
}

ct_tensor *ct_tape_transient(ct_tape *tape, ct_region_fn fn, void *ctx, ct_tensor *in) {
    if (!in || tape->status) return NULL;
    region make = {fn, ctx};
    ct_tensor *y = run_transient(tape, &make, in);
    ct_transient *entry = y ? ct_tape_host(tape, sizeof(ct_transient)) : NULL;
    if (!entry) return NULL;
    *entry = (ct_transient){y, make, in, tape->transient.list};
    tape->transient.list = entry;
    tape->transient.holder = y;
    return y;
}

/* Before a node's backward: every transient input it reads is put back in the buffer. */
static ct_status regenerate_inputs(ct_tape *tape, const ct_tape_node *node) {
    for (int i = 0; i < 4; i++) {
        const ct_tensor *t = node->in[i];
        if (!t || !tape->transient.data || t->data != tape->transient.data ||
            t == tape->transient.holder)
            continue;
        const ct_transient *e = tape->transient.list;
        while (e && e->tensor != t)
            e = e->next;
        CT_ASSERT(e, "a tensor in the transient buffer that no transient region made");
        marks start = mark(tape);
        bool recording = tape->recording;
        tape->recording = false;
        ct_tensor *y = run_transient(tape, &e->make, e->in);
        tape->recording = recording;
        rewind_to(tape, start); /* its header and the region's scratch */
        if (!y) return tape->status;
        tape->transient.holder = t;
    }
    return CT_OK;
}

static ct_status walk(ct_tape *tape, ct_tape_node *newest);

/* A checkpoint's backward: its region again, recording onto a tape of its own, then backward
 * through it from the output's gradient; then everything the region made is given back. */
static ct_status checkpoint_bwd(ct_tape *tape, ct_tape_node *node) {
    ct_tensor *in = node->in[0], *out = node->out;
    const region *r = node->saved;
    if (!out->grad) return CT_OK;
    if (in->requires_grad && !ct_tape_grad(tape, in)) return tape->status; /* below the mark */
    marks start = mark(tape);
    ct_tape_node *outer = tape->last;
    bool recording = tape->recording;
    tape->last = NULL;
    tape->recording = true;
    profile_mark(tape);
    tape->regions++;
    ct_tensor *y = r->fn(tape, r->ctx, in);
    tape->regions--;
    ct_status status = tape->status;
    if (!status && y) {
        CT_ASSERT(ct_tensor_numel(y) == ct_tensor_numel(out) && y->grad_dtype == out->grad_dtype,
                  "a region recomputed to another shape");
        y->grad = out->grad;
        if (tape->last) status = walk(tape, tape->last);
    }
    tape->last = outer;
    tape->recording = recording;
    rewind_to(tape, start);
    return status;
}

/* Backward through the nodes from `newest` to the oldest. */
static ct_status walk(ct_tape *tape, ct_tape_node *newest) {
    const ct_unit_hooks *hooks = tape->hooks;
    for (ct_tape_node *node = newest; node; node = node->prev) {
        ct_status status = CT_OK;
        switch (node->kind) {
        case CT_NODE_OP:
            status = regenerate_inputs(tape, node);
            if (status) break;
            if (tape->profile) {
                double start = ct_time_s();
                node->backward(tape, node);
                tape->profile->bwd_s[node->profile_slot] += ct_time_s() - start;
            } else {
                node->backward(tape, node);
            }
            /* Its output's gradient has no reader left. */
            if (node->out == tape->transient.grad_holder) tape->transient.grad_holder = NULL;
            break;
        case CT_NODE_CHECKPOINT:
            status = checkpoint_bwd(tape, node);
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

ct_status ct_tape_backward(ct_tape *tape) {
    if (tape->status) return tape->status;
    CT_ASSERT(tape->last, "backward needs a recorded pass");
    return walk(tape, tape->last);
}
