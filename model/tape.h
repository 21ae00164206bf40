/*
 * The autograd tape (tape.c): ops record nodes as forward runs, backward walks them in
 * reverse. Two arenas, both reset after every micro-step so that a warm step allocates
 * nothing: a host one for the tape's own records (nodes, tensor headers, ops' saved state) and
 * a data one, in the memory of the kernels' device, for tensor data, gradients and scratch.
 * Device data is zeroed and filled only through the kernel table; no op reads it on the host.
 * Unit markers on the tape fire the unit hooks (unit.h).
 *
 * Errors inside a forward pass are sticky: an op that fails records the status on the tape
 * and returns NULL, later ops given NULL return NULL, and the caller checks ct_tape_status once.
 */
#ifndef CT_MODEL_TAPE_H
#define CT_MODEL_TAPE_H

#include "model/unit.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

typedef struct ct_tape_node ct_tape_node;
typedef struct ct_tape ct_tape;
typedef void (*ct_backward_fn)(ct_tape *tape, ct_tape_node *node);

typedef enum { CT_NODE_OP = 0, CT_NODE_UNIT_BEGIN, CT_NODE_UNIT_END } ct_node_kind;

struct ct_tape_node {
    ct_node_kind kind;
    ct_backward_fn backward; /* ops only */
    ct_tensor *out;
    ct_tensor *in[4];
    void *saved;   /* op-specific record from the host arena (it may point at device data) */
    ct_unit *unit; /* unit markers only */
    ct_tape_node *prev;
    int profile_slot; /* index into the tape's profile */
};

/* Time per op kind, kept when a tape is given one (CTRAIN_PROFILE=1 in the trainer): forward
 * time is the time since the previous op or unit marker, backward the op's backward call. */
#define CT_PROFILE_MAX_OPS 32
typedef struct {
    int n_ops;
    const char *names[CT_PROFILE_MAX_OPS];
    double fwd_s[CT_PROFILE_MAX_OPS], bwd_s[CT_PROFILE_MAX_OPS];
    long calls[CT_PROFILE_MAX_OPS];
    double last_mark_s;
} ct_tape_profile;

/* Address space the host arena reserves: a pass's records take some 30 KiB per unit. */
#define CT_TAPE_HOST_RESERVE_BYTES ((size_t)64 << 20)

struct ct_tape {
    ct_arena host;             /* nodes, tensor headers, ops' saved records (host memory) */
    ct_arena data;             /* tensor data, gradients, saved buffers, scratch (device memory) */
    const ct_kernels *kernels; /* the backend of this tape's tensors */
    bool recording;            /* false: forward only (evaluation, sampling) */
    ct_tape_node *last;        /* newest node */
    const ct_unit_hooks *hooks;
    ct_status status;         /* sticky: the first failure of this pass */
    ct_tape_profile *profile; /* NULL: no timing */
};

void ct_tape_init(ct_tape *tape, const ct_kernels *kernels);
/* Before the first pass: the data arena reserves `data_bytes` (a plan's figure, as from
 * ct_gpt_activation_bytes) instead of the machine's memory; the host arena always reserves
 * CT_TAPE_HOST_RESERVE_BYTES. */
void ct_tape_set_capacity(ct_tape *tape, size_t data_bytes);
void ct_tape_free(ct_tape *tape);
/* Forgets the nodes and recycles both arenas for the next micro-step. */
ct_status ct_tape_reset(ct_tape *tape);
ct_status ct_tape_status(const ct_tape *tape);
/* Records a failure (the first one wins) and returns it. */
ct_status ct_tape_fail(ct_tape *tape, ct_status status);

/* A new tensor with uninitialised data from the data arena (every op writes its whole output);
 * NULL on failure (recorded). */
ct_tensor *ct_tape_tensor(ct_tape *tape, ct_dtype dtype, int ndim, const int64_t *shape);
/* A tensor holding a copy of `host` (host memory, numel of dtype: token ids), copied to the
 * data arena through the kernel table. */
ct_tensor *ct_tape_upload(ct_tape *tape, ct_dtype dtype, int ndim, const int64_t *shape,
                          const void *host);
/* A view onto caller memory that is already the device's. */
ct_tensor *ct_tape_wrap(ct_tape *tape, ct_dtype dtype, int ndim, const int64_t *shape, void *data);
/* Uninitialised device memory from the data arena: an op's saved buffers and scratch. */
void *ct_tape_scratch(ct_tape *tape, size_t bytes);
/* The same, zeroed through the kernel table's memset. */
void *ct_tape_zeros(ct_tape *tape, size_t bytes);
/* Zeroed host memory from the host arena: an op's saved record (pointers, sizes). */
void *ct_tape_host(ct_tape *tape, size_t bytes);
/* Copies a scalar f32 tensor (the loss) to *value on the host, through the kernel table. */
ct_status ct_tape_read_scalar(ct_tape *tape, const ct_tensor *t, float *value);
/* The tensor's gradient buffer (numel of its grad_dtype), allocated from the data arena and
 * zeroed on first use. */
void *ct_tape_grad(ct_tape *tape, ct_tensor *t);
/* The same, for a kernel that takes f32 gradients: NULL, with the tape failed, when the
 * tensor's grad_dtype is another. */
float *ct_tape_grad_f32(ct_tape *tape, ct_tensor *t);
/* True when each of a, b, c (NULLs skipped) has `dtype`; otherwise the tape fails with an
 * error naming `op` and the dtype it was given. Ops call it before touching data. */
bool ct_tape_check_dtype(ct_tape *tape, const char *op, ct_dtype dtype, const ct_tensor *a,
                         const ct_tensor *b, const ct_tensor *c);
/* True when an op with these inputs will be recorded (the tape records and one needs a grad). */
bool ct_tape_will_record(const ct_tape *tape, const ct_tensor *in0, const ct_tensor *in1);
/* Appends an op node named `op` when recording and any input needs a gradient; marks
 * out->requires_grad. Call it after the op's forward computation (profiling times the forward
 * up to here). Returns the node (to fill `saved`) or NULL when nothing was recorded. */
ct_tape_node *ct_tape_record(ct_tape *tape, const char *op, ct_backward_fn backward, ct_tensor *out,
                             ct_tensor *in0, ct_tensor *in1, ct_tensor *in2, ct_tensor *in3);

/* Unit markers: fire pre_/post_forward hooks and record the markers for backward. */
ct_status ct_tape_unit_begin(ct_tape *tape, ct_unit *unit);
ct_status ct_tape_unit_end(ct_tape *tape, ct_unit *unit);

/* Walks the tape from the newest node back, calling each op's backward and firing the
 * pre_/post_backward hooks at the unit markers. The loss op must be the newest node; its
 * gradient (the upstream d(loss)) is taken as 1. */
ct_status ct_tape_backward(ct_tape *tape);

#endif
