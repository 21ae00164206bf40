/*
 * What the shard layer does around forward and backward in each step: zeroing gradients,
 * finishing the reductions the hooks started, the global gradient norm (each element counted
 * once, by the rank that owns it), AdamW on the own shard, and making params whole again
 * (zero1/zero2: all-gather; fsdp: nothing, params stay sharded).
 */
#include "shard/shard_internal.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

ct_status ct_shard_begin_step(ct_shard *s) {
    CT_CHECK(ct_shard_sync_params(s));
    for (int u = 0; u < s->gpt->n_units; u++) {
        ct_shard_unit *su = &s->units[u];
        if (su->grads && !su->grads_pooled) CT_CHECK(ct_shard_zero_grads(s, su->grads, su->padded));
        if (su->grad_shard) CT_CHECK(ct_shard_zero_grads(s, su->grad_shard, su->shard_len));
    }
    return CT_OK;
}

/* zero1/zero2: every rank's own block of the parameters to every rank. */
static ct_status all_gather_params(ct_shard *s) {
    ct_comm *group = ct_shard_live(s->group);
    if (!group) return CT_OK;
    int n = s->gpt->n_units;
    for (int u = 0; u < n; u++) {
        ct_shard_unit *su = &s->units[u];
        void *own = ct_shard_param_at(s, su->params, s->group_rank * su->shard_len);
        CT_CHECK(ct_comm_allgather(group, own, su->params, (size_t)su->shard_len, s->comm_dtype,
                                   &su->gather));
    }
    for (int u = 0; u < n; u++)
        CT_CHECK(ct_shard_wait(&s->units[u].gather));
    return CT_OK;
}

ct_status ct_shard_refresh_params(ct_shard *s) {
    int n = s->gpt->n_units;
    s->params_stale = false;
    if (ct_shard_is_fsdp(s)) {
        /* Gathered copies are stale now: the next forward gathers (and casts) again. */
        for (int u = 0; u < n; u++)
            ct_shard_release_params(s, u);
        return CT_OK;
    }
    if (!s->half) return CT_OK; /* ddp and zero hold the fp32 masters whole: they are the params */
    for (int u = 0; u < n; u++) {
        ct_shard_unit *su = &s->units[u];
        void *dest = ct_shard_param_at(s, su->params, su->master_lo);
        if (s->cfg.strategy != CT_SHARD_DDP)
            dest = ct_shard_param_at(s, su->params, s->group_rank * su->shard_len);
        CT_CHECK(ct_shard_cast_masters(s, dest, su->master, su->master_hi - su->master_lo));
    }
    return s->cfg.strategy == CT_SHARD_DDP ? CT_OK : all_gather_params(s);
}

ct_status ct_shard_sync_params(ct_shard *s) {
    return s->params_stale ? ct_shard_refresh_params(s) : CT_OK;
}

/* Waits for unit u's reduction and returns its pooled full gradient, if it has one. */
static ct_status release_grads(ct_shard *s, int u) {
    ct_shard_unit *su = &s->units[u];
    CT_CHECK(ct_shard_finish_reduce(s, u));
    if (su->grads_pooled) {
        ct_shard_pool_give(s, su->grads);
        su->grads = NULL;
        su->grads_pooled = false;
        ct_shard_bind(s, u);
    }
    return CT_OK;
}

ct_status ct_shard_begin_micro(ct_shard *s, bool first, bool last) {
    /* Reduced after the previous micro-batch: those full gradients are spent. */
    if (!first && s->cfg.reduce_every_microbatch)
        for (int u = 0; u < s->gpt->n_units; u++)
            CT_CHECK(release_grads(s, u));
    s->first_micro = first;
    s->last_micro = last;
    return CT_OK;
}

/* hsdp: unit u's gradient shard summed across the shard groups (in bf16 through a pooled
 * staging buffer when reduce = bf16, widened back by ct_shard_finish_reduce). */
static ct_status allreduce_replicas(ct_shard *s, int u, ct_comm *replica) {
    ct_shard_unit *su = &s->units[u];
    size_t n = (size_t)su->shard_len;
    if (!s->reduce_half)
        return ct_comm_allreduce(replica, su->grad_shard, n, CT_COMM_F32, &su->reduce);
    const ct_kernels *k = s->kernels;
    void *staging = ct_shard_pool_take(s, false);
    if (!staging) return CT_ERR_NOMEM;
    su->staging = staging;
    su->staging_result = staging;
    su->widen_to = su->grad_shard;
    su->widen_temp = NULL;
    su->widen_n = su->shard_len;
    CT_CHECK(k->cast(&k->ctx, staging, CT_BF16, su->grad_shard, CT_F32, n));
    return ct_comm_allreduce(replica, staging, n, CT_COMM_BF16, &su->reduce);
}

ct_status ct_shard_finish_grads(ct_shard *s) {
    const ct_kernels *k = s->kernels;
    for (int b = 0; b < s->n_buckets; b++) {
        CT_CHECK(ct_shard_wait(&s->buckets[b]));
        int64_t lo = s->bucket_lo[b], n = s->bucket_end[b] - lo;
        if (s->flat_reduce)
            CT_CHECK(k->cast(&k->ctx, ct_shard_grad_at(s->flat_grads, lo), CT_F32,
                             (uint16_t *)s->flat_reduce + lo, CT_BF16, (size_t)n));
    }
    s->n_buckets = 0;
    ct_comm *replica = ct_shard_live(s->replica);
    for (int u = 0; u < s->gpt->n_units; u++) {
        CT_CHECK(release_grads(s, u));
        /* hsdp: the shard group reduced its ranks; now sum across the groups. */
        if (replica) CT_CHECK(allreduce_replicas(s, u, replica));
    }
    for (int u = 0; replica && u < s->gpt->n_units; u++)
        CT_CHECK(ct_shard_finish_reduce(s, u));
    return CT_OK;
}

ct_status ct_shard_grad_norm(ct_shard *s, double *norm) {
    const ct_kernels *k = s->kernels;
    double sum = 0.0;
    for (int u = 0; u < s->gpt->n_units; u++) {
        ct_shard_unit *su = &s->units[u];
        sum += k->sum_squares(&k->ctx, s->opt_grads[u], (size_t)(su->hi - su->lo));
    }
    /* ddp holds the whole reduced gradient on every rank: nothing to add up. */
    ct_comm *group = s->cfg.strategy == CT_SHARD_DDP ? NULL : ct_shard_live(s->group);
    if (group) CT_CHECK(ct_comm_allreduce(group, &sum, 1, CT_COMM_F64, NULL));
    *norm = sqrt(sum);
    return CT_OK;
}

ct_status ct_shard_optimizer_step(ct_shard *s, const ct_adamw_hparams *hp, float grad_scale) {
    CT_CHECK(ct_adamw_step(&s->opt, s->gpt, s->opt_params, (const void *const *)s->opt_grads, hp,
                           grad_scale, s->kernels));
    /* fp32 zero updated its own block of the full params in place: share it. */
    bool zero = s->cfg.strategy == CT_SHARD_ZERO1 || s->cfg.strategy == CT_SHARD_ZERO2;
    if (zero && !s->half) CT_CHECK(all_gather_params(s));
    return ct_shard_refresh_params(s);
}

ct_status ct_shard_gather_unit(ct_shard *s, int u, float *dest) {
    ct_shard_unit *su = &s->units[u];
    if (su->master_lo == 0 && su->master_hi == su->numel)
        return ct_shard_copy_grads(s, dest, su->master, su->numel, CT_COPY_DEVICE_TO_HOST);
    /* Sharded masters (fsdp, zero in bf16/fp16): an fp32 all-gather into a pooled buffer. */
    void *full = ct_shard_pool_take(s, false);
    if (!full) return CT_ERR_NOMEM;
    void *own = ct_shard_grad_at(full, s->group_rank * su->shard_len);
    ct_status status = ct_shard_copy_grads(s, own, su->master, su->master_hi - su->master_lo,
                                           CT_COPY_DEVICE_TO_DEVICE);
    ct_comm *group = ct_shard_live(s->group);
    if (status == CT_OK && group)
        status = ct_comm_allgather(group, own, full, (size_t)su->shard_len, CT_COMM_F32, NULL);
    if (status == CT_OK)
        status = ct_shard_copy_grads(s, dest, full, su->numel, CT_COPY_DEVICE_TO_HOST);
    ct_shard_pool_give(s, full);
    return status;
}

void ct_shard_get_memory(const ct_shard *s, ct_shard_memory *memory) {
    ct_mem_stats stats;
    ct_mem_get_stats(&stats);
    memory->params_bytes = stats.current_bytes[CT_MEM_PARAMS];
    memory->masters_bytes = stats.current_bytes[CT_MEM_MASTERS];
    memory->grads_bytes = stats.current_bytes[CT_MEM_GRADS];
    memory->optimizer_bytes = stats.current_bytes[CT_MEM_OPTIMIZER];
    memory->model_state_bytes = memory->params_bytes + memory->masters_bytes + memory->grads_bytes +
                                memory->optimizer_bytes;
    memory->gathered_bytes = stats.current_bytes[CT_MEM_GATHERED];
    memory->gathered_peak_bytes = stats.peak_bytes[CT_MEM_GATHERED];
    memory->activations_peak_bytes = stats.peak_bytes[CT_MEM_ACTIVATIONS];
    memory->comm_buffer_bytes = stats.current_bytes[CT_MEM_COMM];
    memory->compute = s->dtype;
}

/* The ZeRO paper's per-rank model state over shard groups of n ranks, for parameters of
 * `k` bytes in forward/backward (4: fp32, where they are the masters; 2: bf16/fp16, with fp32
 * masters apart), fp32 gradients and Adam m and v (8 bytes). The formula goes into `formula`. */
static double state_bytes(ct_shard_strategy strategy, double psi, double n, int k, char *formula,
                          size_t formula_bytes) {
    bool half = k != 4;
    switch (strategy) {
    case CT_SHARD_DDP: /* everything whole */
        snprintf(formula, formula_bytes, half ? "18 psi" : "16 psi");
        return (half ? 18 : 16) * psi;
    case CT_SHARD_ZERO1: /* params and grads whole; masters (when apart) and Adam sharded */
        snprintf(formula, formula_bytes, half ? "6 psi + 12 psi/N" : "8 psi + 8 psi/N");
        return half ? 6 * psi + 12 * psi / n : 8 * psi + 8 * psi / n;
    case CT_SHARD_ZERO2: /* params whole; grads, masters (when apart) and Adam sharded */
        snprintf(formula, formula_bytes, half ? "2 psi + 16 psi/N" : "4 psi + 12 psi/N");
        return half ? 2 * psi + 16 * psi / n : 4 * psi + 12 * psi / n;
    case CT_SHARD_FSDP:
    case CT_SHARD_HSDP:
        break;
    }
    /* fp32 masters, grads and Adam sharded; the compute copy exists only gathered */
    snprintf(formula, formula_bytes, "16 psi/N");
    return 16 * psi / n;
}

size_t ct_shard_plan_bytes(const ct_gpt *gpt, ct_shard_strategy strategy, int group_size,
                           ct_dtype compute) {
    char formula[64];
    int64_t largest = 0;
    for (int u = 0; u < gpt->n_units; u++)
        largest = CT_MAX(largest, ct_shard_layout(gpt->units[u].numel, group_size, 0).shard_len);
    /* Pooled unit buffers in flight, as measured: fsdp/hsdp 4 (the unit computing, the one
     * prefetched, embed held for the head, a gradient), zero2 2; one more of margin. */
    int pooled = strategy == CT_SHARD_FSDP || strategy == CT_SHARD_HSDP ? 5
                 : strategy == CT_SHARD_ZERO2                           ? 3
                                                                        : 0;
    double bytes = state_bytes(strategy, (double)gpt->num_params, group_size,
                               (int)ct_dtype_size(compute), formula, sizeof(formula));
    return (size_t)bytes + (size_t)pooled * sizeof(float) * (size_t)(largest * group_size);
}

double ct_shard_state_formula_bytes(const ct_shard *s, char *formula, size_t formula_bytes) {
    return state_bytes(s->cfg.strategy, (double)s->gpt->num_params, s->group_size, (int)s->elem,
                       formula, formula_bytes);
}

void ct_shard_describe_plan(const ct_shard *s, char *text, size_t text_bytes) {
    char formula[64];
    double bytes = ct_shard_state_formula_bytes(s, formula, sizeof(formula));
    snprintf(text, text_bytes, "%s: %s = %.1f MiB per rank (N = %d), plus activations%s",
             ct_shard_strategy_name(s->cfg.strategy), formula, bytes / (1 << 20), s->group_size,
             ct_shard_is_fsdp(s) || s->cfg.strategy == CT_SHARD_ZERO2
                 ? " and gathered units in flight"
                 : "");
}
