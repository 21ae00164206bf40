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
 *
 * Activation recomputation, two ways, both built on regions (ct_region_fn: ops that rebuild
 * a tensor from one input) and neither known to the ops:
 * - a checkpoint (ct_tape_checkpoint) keeps only a region's input and output; backward runs the
 *   region again, recording, backpropagates through it and gives its memory back;
 * - a transient tensor (ct_tape_transient) is a region's output written into the tape's one
 *   transient buffer instead of the arena; backward regenerates it there when a node that
 *   reads it is reached, and its gradient, dead once its producer's backward has run, lives
 *   in a second buffer of the same size.
 * Both rely on one rule of the ops: a backward reads its inputs' data and its saved record,
 * never its output's data.
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

typedef enum {
    CT_NODE_OP = 0,
    CT_NODE_UNIT_BEGIN,
    CT_NODE_UNIT_END,
    CT_NODE_CHECKPOINT
} ct_node_kind;

/* A region: ops computing a tensor from `in` and from parameters read at call time (a unit's
 * views, which a sharding strategy may have rebound since), allocating only from the tape and
 * keeping nothing beyond the call but what the tape holds. It must compute the same bits
 * every time it is called with the same input and parameters (no random numbers). */
typedef ct_tensor *(*ct_region_fn)(ct_tape *tape, void *ctx, ct_tensor *in);
typedef struct ct_transient ct_transient;

struct ct_tape_node {
    ct_node_kind kind;
    ct_backward_fn backward; /* ops only */
    ct_tensor *out;
    ct_tensor *in[4];
    void *saved;   /* op-specific record from the host arena (it may point at device data);
                      a checkpoint's region */
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
    ct_arena host;    /* nodes, tensor headers, ops' saved records (host memory) */
    ct_arena data;    /* tensor data, gradients, saved buffers, scratch (device memory) */
    void *data_block; /* the data arena's memory off the CPU (the table's), else NULL */
    size_t data_block_bytes;
    const ct_kernels *kernels; /* the backend of this tape's tensors */
    bool recording;            /* false: forward only (evaluation, sampling) */
    ct_tape_node *last;        /* newest node */
    const ct_unit_hooks *hooks;
    ct_status status;         /* sticky: the first failure of this pass */
    ct_tape_profile *profile; /* NULL: no timing */
    struct {                  /* the transient buffer of this pass (ct_tape_transient) */
        void *data;           /* in the data arena; NULL until reserved */
        size_t bytes;
        const ct_tensor *holder;      /* the tensor whose data it holds now */
        void *grad;                   /* as large: the gradient of one transient tensor */
        const ct_tensor *grad_holder; /* whose gradient it holds, until its producer's bwd */
        bool claim;                   /* the next ct_tape_tensor's data is the buffer */
        ct_transient *list;           /* every transient tensor of this pass, with its region */
    } transient;
    int regions; /* checkpoint regions being run now: no unit marker may come inside one */
};

void ct_tape_init(ct_tape *tape, const ct_kernels *kernels);
/* Before the first pass: the data arena reserves `data_bytes` (a plan's figure, as from
 * ct_gpt_activation_bytes) instead of the machine's memory; the host arena always reserves
 * CT_TAPE_HOST_RESERVE_BYTES. On a device other than the CPU this is required, and allocates
 * the data arena's whole block at once from the table (device memory is not reserved and
 * committed page by page); until then every data allocation fails. */
ct_status ct_tape_set_capacity(ct_tape *tape, size_t data_bytes);
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
 * zeroed on first use; a transient tensor's is the transient gradient buffer when that is
 * free (it is again once the tensor's producer has run its backward). */
void *ct_tape_grad(ct_tape *tape, ct_tensor *t);
/* The same, for a kernel that takes f32 gradients: NULL, with the tape failed, when the
 * tensor's grad_dtype is another. */
float *ct_tape_grad_f32(ct_tape *tape, ct_tensor *t);
/* True when each of a, b, c (NULLs skipped) has `dtype`; otherwise the tape fails with an
 * error naming `op` and the dtype it was given. Ops call it before touching data. */
bool ct_tape_check_dtype(ct_tape *tape, const char *op, ct_dtype dtype, const ct_tensor *a,
                         const ct_tensor *b, const ct_tensor *c);
/* True when the parameters a and b (NULLs skipped) share one floating-point dtype (f32, or the
 * bf16/f16 of precision.compute, which the *_half kernels take); otherwise the tape fails with
 * an error naming `op`. */
bool ct_tape_check_params(ct_tape *tape, const char *op, const ct_tensor *a, const ct_tensor *b);
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

/* Runs region `fn` on `in` and keeps only its output: everything else the region allocated
 * is given back, and its output is moved to where the region began (through the kernel
 * table's copy). While recording, a checkpoint node records the region: backward runs it again
 * (recording) when it is reached, backpropagates through those nodes into in's gradient and
 * the parameters', then gives that memory back too. In's gradient is allocated before the
 * region's, so it outlives them. Any nested unit markers are a caller's bug: put the region
 * inside the unit's markers, so that going back pre_backward fires before the recomputation
 * and post_backward after it. The output is taken to need a gradient. */
ct_tensor *ct_tape_checkpoint(ct_tape *tape, ct_region_fn fn, void *ctx, ct_tensor *in);

/* The bytes of this pass's transient buffers (data and gradient), from the data arena: at
 * least the largest transient tensor's. Call it once per pass (ct_tape_reset forgets it), before
 * the first ct_tape_transient. */
ct_status ct_tape_reserve_transient(ct_tape *tape, size_t bytes);
/* Runs region `fn` on `in` (recording as usual), with its output's data (the first tensor the
 * region makes) in the transient buffer rather than the arena: it is valid until the next
 * transient tensor is made, so use it at once. Backward regenerates it (running `fn` on `in`
 * again, not recording) when a node that reads it is reached and the buffer holds another:
 * `in` must stay valid, so it is not transient itself. For outputs that are cheap to compute
 * and large (LayerNorm, GELU). */
ct_tensor *ct_tape_transient(ct_tape *tape, ct_region_fn fn, void *ctx, ct_tensor *in);

/* Walks the tape from the newest node back, calling each op's backward (regenerating the
 * transient tensors it reads first), running each checkpoint's region again and walking it,
 * and firing the pre_/post_backward hooks at the unit markers. The loss op must be the newest node;
 * its gradient (the upstream d(loss)) is taken as 1. */
ct_status ct_tape_backward(ct_tape *tape);

#endif
