/*
 * The state shared by the files of shard/: layout and buffers per unit, the buffer pool, and
 * the requests in flight. shard.c owns the lifecycle and the step protocol, hooks.c the hooks.
 *
 * Unit buffers live on the kernel table's device and are `void *`: parameters in the compute
 * dtype (s->dtype: [precision] compute), gradients always f32, fp32 master weights beside the
 * compute parameters when those are bf16/fp16 (else the parameters are the masters). They are
 * indexed with ct_shard_param_at / ct_shard_grad_at, zeroed, copied and cast only through the
 * table (ct_shard_zero_grads, ct_shard_copy_grads, ct_shard_cast), and communicated as
 * s->comm_dtype (parameters) and f32 (gradients).
 */
#ifndef CT_SHARD_INTERNAL_H
#define CT_SHARD_INTERNAL_H

#include "shard/shard.h"

/* Pooled buffers one unit may have in flight at most (gathered params, a full gradient, a bf16
 * staging copy: 3 in the worst case; more is a leak, reported as a bug). */
#define CT_SHARD_POOL_PER_UNIT 8

typedef struct {
    int64_t numel;     /* elements of the unit */
    int64_t shard_len; /* S: padded / group size */
    int64_t padded;    /* S * G */
    int64_t lo, hi;    /* the own range, clipped to numel (lo == hi: nothing owned) */
    void *params;      /* full params in the compute dtype: persistent (ddp, zero) or a pooled
                        * buffer (fsdp) */
    void *grads;       /* full f32 grads: persistent (ddp, zero1) or pooled (zero2, fsdp) */
    void *param_shard; /* fsdp/hsdp: S persistent fp32 master elements */
    void *grad_shard;  /* zero2/fsdp/hsdp: S persistent f32 elements */
    float *master;     /* the fp32 masters of [master_lo, master_hi): AdamW's and checkpoints' */
    int64_t master_lo, master_hi;
    bool master_apart;       /* master is its own allocation (zero with a half compute dtype) */
    ct_comm_request *gather; /* fsdp: a pending (prefetched) all-gather into params */
    ct_comm_request *reduce; /* a pending reduction of grads */
    /* reduce = bf16: the pending reduction runs on `staging` (a pooled buffer of bf16), and
     * when it completes its result is widened into widen_to (widen_n f32): assigned, or added
     * through the f32 scratch widen_temp when that is set. */
    void *staging;
    const void *staging_result;
    float *widen_to, *widen_temp;
    int64_t widen_n;
    bool params_pooled, grads_pooled;
} ct_shard_unit;

struct ct_shard {
    ct_shard_config cfg;
    ct_gpt *gpt;
    const ct_kernels *kernels; /* every touch of unit memory goes through it */
    ct_dtype dtype;            /* of the compute parameters ([precision] compute) */
    size_t elem;               /* bytes per element of dtype */
    ct_comm_dtype comm_dtype;  /* dtype as the process group names it */
    bool half;                 /* dtype is bf16/fp16: fp32 masters kept apart */
    bool params_stale;         /* masters changed (loaded): compute copies need a refresh */
    bool reduce_half;          /* [precision] reduce = bf16: gradients summed in bf16 */
    ct_comm *world;            /* may be NULL: a world of one */
    ct_comm *group;            /* the shard group (hsdp: a split; else world) */
    ct_comm *replica;          /* hsdp: ranks holding the same shard; else NULL */
    bool owns_groups;
    int world_size, group_size, group_rank;
    ct_shard_unit *units;
    void *flat_params, *flat_grads; /* ddp: one contiguous buffer each, for buckets */
    float *flat_masters;            /* ddp with a half compute dtype: the fp32 masters */
    int64_t *flat_offset;           /* ddp: each unit's offset in the flat buffers */
    int bucket_hi;                  /* ddp: highest unit of the bucket being filled; -1 none */
    ct_comm_request *buckets[64];   /* ddp: all-reduces in flight */
    int64_t bucket_lo[64], bucket_end[64]; /* ddp: their ranges of the flat gradient */
    void *flat_reduce; /* ddp with reduce = bf16: the buckets' bf16 copy (what is all-reduced) */
    int n_buckets;
    void **pool; /* free pooled buffers (the largest padded unit each): room for
                  * CT_SHARD_POOL_PER_UNIT per unit */
    int pool_free, pool_total;
    size_t pool_bytes;
    bool last_micro;
    bool first_micro; /* the step's first micro-batch: no earlier partial sums to carry */
    ct_adamw opt;
    void **opt_params, **opt_grads; /* per unit: where AdamW reads and writes */
    ct_unit_hooks hooks;
    ct_comm_stats step_start_traffic; /* at ct_shard_mark_step (run_comm.c) */
};

/* Waits for *request when there is one and clears it. */
static inline ct_status ct_shard_wait(ct_comm_request **request) {
    ct_comm_request *r = *request;
    *request = NULL;
    return r ? ct_comm_wait(r) : CT_OK;
}

/* A communicator worth calling: NULL for a group of one (the collective is the identity). */
static inline ct_comm *ct_shard_live(ct_comm *comm) {
    return comm && ct_comm_size(comm) > 1 ? comm : NULL;
}

/* Whether gradients summed over `comm` go through a bf16 staging buffer. */
static inline bool ct_shard_stages(const ct_shard *shard, ct_comm *comm) {
    return shard->reduce_half && ct_shard_live(comm);
}

/* Element `index` of a parameter buffer (compute dtype). */
static inline void *ct_shard_param_at(const ct_shard *shard, void *buffer, int64_t index) {
    return (char *)buffer + (size_t)index * shard->elem;
}
/* Element `index` of a gradient buffer (f32). */
static inline void *ct_shard_grad_at(void *buffer, int64_t index) {
    return (float *)buffer + index;
}

/* n gradient elements := 0, through the kernel table. */
ct_status ct_shard_zero_grads(ct_shard *shard, void *buffer, int64_t n);
/* n gradient elements from src to dst, through the kernel table; `kind` says which side is
 * the host. */
ct_status ct_shard_copy_grads(ct_shard *shard, void *dst, const void *src, int64_t n,
                              ct_copy_kind kind);
/* n fp32 masters into compute parameters (a copy when the compute dtype is f32). */
ct_status ct_shard_cast_masters(ct_shard *shard, void *params, const float *masters, int64_t n);

/* Waits for unit u's pending gradient reduction and, for a bf16 one, widens its result into
 * the f32 gradient and returns the staging buffer. */
ct_status ct_shard_finish_reduce(ct_shard *shard, int u);

/* A pooled buffer of pool_bytes (room for a padded unit of f32; zeroed when `zero`); NULL on
 * failure. */
void *ct_shard_pool_take(ct_shard *shard, bool zero);
void ct_shard_pool_give(ct_shard *shard, void *buffer);
/* Points unit u's views at its current params and grads. */
void ct_shard_bind(ct_shard *shard, int u);
bool ct_shard_is_fsdp(const ct_shard *shard);
/* Installs the strategy's hooks into shard->hooks. */
void ct_shard_init_hooks(ct_shard *shard);
/* fsdp: starts (or, with wait, completes) the all-gather of unit u's params into a pooled
 * buffer; nothing when they are already there. */
ct_status ct_shard_gather_params(ct_shard *shard, int u, bool wait);
/* fsdp: returns unit u's gathered params to the pool. */
void ct_shard_release_params(ct_shard *shard, int u);
/* Makes every unit's compute parameters equal to its masters again (ddp/zero: cast, and zero's
 * all-gather; fsdp: nothing, a gather casts). Collective. */
ct_status ct_shard_refresh_params(ct_shard *shard);

#endif
