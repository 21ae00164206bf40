/*
 * model: tensors, the autograd tape, parameter units with their hooks, the ops, GPT-2, AdamW
 * and learning-rate schedules. It knows nothing of communication or sharding: those plug in
 * through the unit hooks (ct_unit_hooks), which fire on the tape's unit markers.
 *
 * Memory: tensors never own memory. Parameters and their gradients are views into each unit's
 * flat buffers. The tape keeps two arenas, both reset after every micro-step so that a warm
 * step allocates nothing: a host one for its own records (nodes, tensor headers, ops' saved
 * state) and a data one, in the memory of the kernels' device, for tensor data, gradients and
 * scratch. Device data is zeroed and filled only through the kernel table; no op reads it on
 * the host.
 *
 * Errors inside a forward pass are sticky: an op that fails records the status on the tape
 * and returns NULL, later ops given NULL return NULL, and the caller checks ct_tape_status once.
 */
#ifndef CT_MODEL_H
#define CT_MODEL_H

#include "common/common.h"
#include "kernels/kernels.h"

#include <stdbool.h>
#include <stdint.h>

/* ---------------------------------------------------------------- tensors */

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

/* ---------------------------------------------------------------- units and hooks */

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
    bool recompute;      /* activation checkpointing (arrives with the Precision & memory issue) */
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

/* ---------------------------------------------------------------- the tape */

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

/* ---------------------------------------------------------------- ops (model/ops/<op>.c) */

/* x (B,T,C) -> layernorm over C with weight, bias (C) */
ct_tensor *ct_op_layernorm(ct_tape *tape, ct_tensor *x, ct_tensor *weight, ct_tensor *bias);
/* x (..., C) @ weight^T (OC, C) + bias (OC) -> (..., OC); bias may be NULL */
ct_tensor *ct_op_linear(ct_tape *tape, ct_tensor *x, ct_tensor *weight, ct_tensor *bias);
/* elementwise GELU (tanh approximation) */
ct_tensor *ct_op_gelu(ct_tape *tape, ct_tensor *x);
/* a + b, same shape */
ct_tensor *ct_op_add(ct_tape *tape, ct_tensor *a, ct_tensor *b);
/* tokens (B,T) i32, wte (V,C), wpe (maxT,C) -> (B,T,C) */
ct_tensor *ct_op_embedding(ct_tape *tape, ct_tensor *tokens, ct_tensor *wte, ct_tensor *wpe);
/* qkv (B,T,3C) -> causal multi-head attention output (B,T,C) with n_head heads */
ct_tensor *ct_op_attention(ct_tape *tape, ct_tensor *qkv, int n_head);
/* x (B,T,C), wte (V,C), targets (B,T) i32 -> scalar mean cross-entropy of logits x @ wte^T.
 * The logits never exist whole: when recording, the gradients of grad_scale * loss are computed
 * chunk by chunk during this forward (d wte accumulated into wte's gradient at once, dx saved);
 * backward then only passes dx on. So this op must be the tape's last, with d(loss) = 1, and
 * the loss it returns is unscaled. */
ct_tensor *ct_op_lm_head_loss(ct_tape *tape, ct_tensor *x, ct_tensor *wte, ct_tensor *targets,
                              float grad_scale);

/* ---------------------------------------------------------------- GPT-2 */

typedef struct {
    int n_layer;
    int n_head;
    int n_embd;
    int vocab_size;
    int seq_len; /* maximum T: rows of the positional embedding */
} ct_gpt_config;

/* GPT-2 exactly (BENCH.md): pre-LayerNorm blocks, learned positions, tied embedding / LM head,
 * GELU (tanh), biases everywhere, LayerNorm eps 1e-5, causal attention, no dropout.
 * Unit 0 is "embed" (wte, wpe, lnf.weight, lnf.bias); unit 1+l is "block.l". */
typedef struct {
    ct_gpt_config config;
    int n_units;
    ct_unit *units;
    void *flat_data; /* single-process storage of every unit (NULL when a shard layer owns it) */
    void *flat_grad;
    int64_t num_params;
} ct_gpt;

/* Lays out the units (no parameter memory yet; parameters and gradients f32, the only dtype
 * the kernels take today). Fails on an impossible config. */
ct_status ct_gpt_init(ct_gpt *gpt, const ct_gpt_config *config);
void ct_gpt_free(ct_gpt *gpt);
/* Allocates full parameter and gradient buffers for every unit (in its dtypes) and binds them.
 * Host memory: for single-process tools (sampling, export, parity), not for training. */
ct_status ct_gpt_alloc_full(ct_gpt *gpt);
/* GPT-2 initialisation of elements [lo, hi) of unit `u` into `dest` (hi - lo floats), a pure
 * function of (seed, unit, parameter, element): a shard initialises exactly its range. */
void ct_gpt_init_range(const ct_gpt *gpt, int u, uint64_t seed, int64_t lo, int64_t hi,
                       float *dest);
/* Initialises all bound parameters (single process, host memory, f32). */
void ct_gpt_init_weights(ct_gpt *gpt, uint64_t seed);
/* Finds a parameter by its full name ("block.3.attn.qkv.weight", "embed.wte"). */
ct_tensor *ct_gpt_param(ct_gpt *gpt, const char *full_name);
/* Training FLOPs per token (BENCH.md): 6 x matmul weights incl. the tied head + 12 L T C. */
double ct_gpt_flops_per_token(const ct_gpt_config *config, int T);
/* An upper bound of the tape's bytes (both arenas) for one recorded forward and backward pass
 * of a (B,T) micro-batch: the token ids, every activation, its gradient, the attention
 * probabilities and scratch, the LM head's chunk of logits, and the tape's own records.
 * tests/test_gpt.c holds it against the measured peak. */
size_t ct_gpt_activation_bytes(const ct_kernels *kernels, const ct_gpt_config *config, int B,
                               int T);

/* One forward pass on inputs/targets (B,T) int32 in host memory (copied to the device through
 * the table). Returns the mean loss tensor (scalar, device memory: ct_tape_read_scalar reads
 * it); when the tape records, backward gives gradients of grad_scale * loss. */
ct_tensor *ct_gpt_forward_loss(ct_gpt *gpt, ct_tape *tape, const int32_t *inputs,
                               const int32_t *targets, int B, int T, float grad_scale);
/* Forward to the logits of every position (B,T,V) into `logits` (memory of the kernels'
 * device: host memory on the CPU); inputs as ct_gpt_forward_loss's. Nothing is recorded. */
ct_status ct_gpt_forward_logits(ct_gpt *gpt, ct_tape *tape, const int32_t *inputs, int B, int T,
                                float *logits);
/* Sets every unit's gradient to zero. */
void ct_gpt_zero_grad(ct_gpt *gpt, const ct_kernels *kernels);

/* ---------------------------------------------------------------- optimizer and schedule */

typedef struct {
    float lr, beta1, beta2, eps, weight_decay;
} ct_adamw_hparams;

/* AdamW moments for elements [lo, hi) of each unit's flat buffer (single process: all). */
typedef struct {
    int n_units;
    float **m; /* per unit, hi - lo floats */
    float **v;
    int64_t *lo, *hi;
    int64_t t; /* steps taken */
} ct_adamw;

ct_status ct_adamw_init(ct_adamw *opt, const ct_gpt *gpt, const int64_t *lo, const int64_t *hi);
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
