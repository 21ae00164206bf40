/*
 * shard: data parallelism and ZeRO sharding around the model, implemented only through the
 * unit hooks of the tape (model/model.h). One layout serves every strategy: each unit's flat
 * buffer is padded to a multiple of the shard group size G and split into G equal contiguous
 * shards; rank g of the group owns elements [g*S, (g+1)*S) (clipped to the unit's length).
 *
 *   ddp    full params, full grads all-reduced in buckets as backward finishes units, full Adam
 *   zero1  full params and grads; grads reduce-scattered, Adam on the own shard, params
 *          all-gathered after the update
 *   zero2  as zero1, but a unit's full gradient exists only while backward is in it (a pooled
 *          buffer, released after its reduce-scatter); the rank keeps its gradient shard
 *   fsdp   only the own shard of params, grads and Adam; a unit is all-gathered into a pooled
 *          buffer before forward and again before backward, freed after each
 *          (reshard_after_forward), with the next unit's gather prefetched
 *   hsdp   fsdp inside groups of shard_group_size ranks, gradient shards all-reduced across
 *          the groups
 *
 * Gradients are sums over ranks of per-rank losses scaled by 1/(world * grad_accum), so the
 * reduced gradient is the mean over the global batch, as a single process computes it.
 */
#ifndef CT_SHARD_H
#define CT_SHARD_H

#include "comm/comm.h"
#include "common/common.h"
#include "model/model.h"

#include <stdbool.h>

typedef enum {
    CT_SHARD_DDP = 0,
    CT_SHARD_ZERO1,
    CT_SHARD_ZERO2,
    CT_SHARD_FSDP,
    CT_SHARD_HSDP
} ct_shard_strategy;

typedef struct {
    ct_shard_strategy strategy;
    double bucket_mb;             /* ddp: all-reduce bucket size */
    bool prefetch;                /* fsdp/hsdp: gather the next unit while this one computes */
    bool reshard_after_forward;   /* fsdp/hsdp: free a unit's params after its forward */
    int shard_group_size;         /* hsdp: ranks per shard group (a divisor of the world size) */
    bool reduce_every_microbatch; /* zero2/fsdp/hsdp: reduce-scatter after every micro-batch
                                   * so full gradients never outlive one (more traffic) */
    ct_dtype compute; /* parameters in forward/backward: CT_F32 (0, the default), CT_BF16 or
                       * CT_F16; masters, gradients and Adam state are f32 whatever it is */
    ct_dtype reduce;  /* gradients summed over ranks in: CT_F32 (the default) or CT_BF16, whose
                       * sums are widened and added into the f32 gradients */
} ct_shard_config;

typedef struct ct_shard ct_shard;

/* The one layout (layout.c), also the checkpoints': a unit of numel elements over `ranks`
 * ranks has shards of shard_len = ceil(numel / ranks) elements (padded = shard_len * ranks);
 * rank r holds [lo, hi) = [r * shard_len, (r+1) * shard_len) clipped to numel, an empty range
 * at numel for r >= ranks. */
typedef struct {
    int64_t shard_len, padded, lo, hi;
} ct_shard_range;
ct_shard_range ct_shard_layout(int64_t numel, int ranks, int rank);

/* Parses "ddp" | "zero1" | "zero2" | "fsdp" | "hsdp". */
ct_status ct_shard_parse_strategy(const char *name, ct_shard_strategy *strategy);
const char *ct_shard_strategy_name(ct_shard_strategy strategy);

/* Lays out and allocates this rank's storage for `gpt` (laid out by ct_gpt_init, with no
 * memory of its own) and initialises its parameters from `seed` exactly as a single process
 * would. `world` may be NULL (a world of one). Parameter, gradient and optimizer memory is
 * touched only through `kernels` (the table of the device it lives on). */
ct_status ct_shard_new(ct_shard **shard, ct_gpt *gpt, ct_comm *world, const ct_shard_config *cfg,
                       const ct_kernels *kernels, uint64_t seed);
void ct_shard_free(ct_shard *shard);

/* The hooks to install on the tape. */
const ct_unit_hooks *ct_shard_hooks(ct_shard *shard);

/* The persistent per-unit state a checkpoint holds. */
typedef enum {
    CT_SHARD_STATE_PARAMS = 0,
    CT_SHARD_STATE_ADAM_M,
    CT_SHARD_STATE_ADAM_V
} ct_shard_state;

/* The range [*lo, *hi) of unit u's flat buffer this rank keeps of `state` (fp32): params (the
 * fp32 masters) fsdp/hsdp the own shard, ddp the full unit ([0, numel)), zero1/zero2 the full
 * unit in fp32 and the own shard with a bf16/fp16 compute dtype; Adam m and v the own range
 * (ddp: all). Not while a step is in flight (fsdp's gathered copies would go stale). */
void ct_shard_state_range(ct_shard *shard, int u, ct_shard_state state, int64_t *lo, int64_t *hi);
/* That storage as host memory (pointer[0] is element *lo) when the kernel table's device is
 * the host, so a checkpoint can read and write it in place; NULL on any other device. A
 * caller that wrote parameters through it calls ct_shard_params_written after. */
float *ct_shard_state_host(ct_shard *shard, int u, ct_shard_state state);
/* Parameters (the masters) were written in place: the bf16/fp16 compute copies (and fsdp's
 * gathered units) are refreshed by the next ct_shard_sync_params or ct_shard_begin_step. */
void ct_shard_params_written(ct_shard *shard);
/* Copies elements [a, b) of unit u's state, inside the range this rank keeps, to or from the
 * host floats `host`, through the kernel table; complete when they return. */
ct_status ct_shard_state_to_host(ct_shard *shard, int u, ct_shard_state state, int64_t a, int64_t b,
                                 float *host);
ct_status ct_shard_state_from_host(ct_shard *shard, int u, ct_shard_state state, int64_t a,
                                   int64_t b, const float *host);
/* Optimizer steps taken (AdamW's bias correction counts them); set when resuming. */
int64_t ct_shard_step_count(const ct_shard *shard);
void ct_shard_set_step_count(ct_shard *shard, int64_t t);
ct_shard_strategy ct_shard_get_strategy(const ct_shard *shard);
/* Ranks in this rank's shard group (ddp: 1, everything is replicated). */
int ct_shard_group_size(const ct_shard *shard);

/* Replaces unit u's parameters by `full` (the unit's numel floats on the host, the same on
 * every rank). */
ct_status ct_shard_load_unit(ct_shard *shard, int u, const float *full);
/* After loading parameters (ct_shard_state_from_host, ct_shard_load_unit): makes the compute
 * parameters equal to the masters again (a cast, and zero's all-gather). Collective; a no-op
 * when nothing was loaded. ct_shard_begin_step calls it too. */
ct_status ct_shard_sync_params(ct_shard *shard);

/* Step protocol, on every rank:
 *   ct_shard_begin_step; for each micro-batch: ct_shard_begin_micro(first?, last?), forward,
 *   backward;
 *   ct_shard_finish_grads; ct_shard_grad_norm; ct_shard_optimizer_step. */
ct_status ct_shard_begin_step(ct_shard *shard);
ct_status ct_shard_begin_micro(ct_shard *shard, bool first, bool last);
/* Waits for every gradient reduction of the step. */
ct_status ct_shard_finish_grads(ct_shard *shard);
/* The global L2 norm of the reduced gradient, each element counted once. */
ct_status ct_shard_grad_norm(ct_shard *shard, double *norm);
/* AdamW on this rank's shard (ddp: everything), then whatever makes params whole again. */
ct_status ct_shard_optimizer_step(ct_shard *shard, const ct_adamw_hparams *hp, float grad_scale);
/* Collective: unit u's full fp32 master parameters into dest (numel floats on the host) on
 * every rank. */
ct_status ct_shard_gather_unit(ct_shard *shard, int u, float *dest);

/* The run's own collectives (run_comm.c), over the world; no-ops in a world of one. The
 * trainer communicates only through these and the step protocol above. */
/* Before a step: tells the world the step (the watchdog names it) and notes the traffic. */
void ct_shard_mark_step(ct_shard *shard, int64_t step);
/* Bytes per collective kind since ct_shard_mark_step: the world's and hsdp's groups'. */
void ct_shard_step_comm_bytes(const ct_shard *shard, uint64_t bytes[CT_COLL_KINDS]);
/* Traffic so far (calls, bytes, seconds per kind) of the world and the shard layer's groups. */
void ct_shard_get_comm_stats(const ct_shard *shard, ct_comm_stats *total);
/* values[0..n) := their sums over the ranks (float64, in the group's fixed order). */
ct_status ct_shard_sum_over_ranks(ct_shard *shard, double *values, int n);
/* Every rank learns whether all succeeded: `status` when this rank failed, else an error
 * naming `what` when another did, else CT_OK. */
ct_status ct_shard_agree(ct_shard *shard, ct_status status, const char *what);
/* values[0..n) := rank 0's. */
ct_status ct_shard_broadcast_from_rank0(ct_shard *shard, int32_t *values, int n);

/* Memory held by this rank (bytes, from the allocator's categories; docs/memory.md). */
typedef struct {
    size_t model_state_bytes; /* persistent params + masters + grads + optimizer state */
    size_t params_bytes;      /* parameters in the compute dtype (fp32: they are the masters) */
    size_t masters_bytes;     /* fp32 masters kept apart (bf16/fp16 compute) */
    size_t grads_bytes;       /* persistent fp32 gradients (full or the shard) */
    size_t optimizer_bytes;   /* Adam m and v */
    size_t gathered_bytes;    /* pooled buffers for gathered units and transient gradients */
    size_t gathered_peak_bytes;
    size_t activations_peak_bytes; /* the tape's arenas at their fullest so far */
    size_t comm_buffer_bytes;      /* the process groups' own buffers */
    ct_dtype compute;              /* the dtype of params_bytes */
} ct_shard_memory;
void ct_shard_get_memory(const ct_shard *shard, ct_shard_memory *memory);
/* Before anything is allocated: about the bytes one rank of shard groups of group_size ranks
 * will hold for `strategy` with parameters in `compute` (model state by the ZeRO formula, plus
 * pooled unit buffers). */
size_t ct_shard_plan_bytes(const ct_gpt *gpt, ct_shard_strategy strategy, int group_size,
                           ct_dtype compute);
/* The ZeRO paper's per-rank model state for this shard's strategy and compute dtype (bytes),
 * its formula in psi (parameters) and N (shard group size) into `formula` (docs/memory.md). */
double ct_shard_state_formula_bytes(const ct_shard *shard, char *formula, size_t formula_bytes);
/* That figure and formula, for the banner. */
void ct_shard_describe_plan(const ct_shard *shard, char *text, size_t text_bytes);

#endif
