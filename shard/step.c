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
    for (int u = 0; u < s->gpt->n_units; u++) {
        ct_shard_unit *su = &s->units[u];
        if (su->grads && !su->grads_pooled) CT_CHECK(ct_shard_zero(s, su->grads, su->padded));
        if (su->grad_shard) CT_CHECK(ct_shard_zero(s, su->grad_shard, su->shard_len));
    }
    return CT_OK;
}

/* Waits for unit u's reduction and returns its pooled full gradient, if it has one. */
static ct_status release_grads(ct_shard *s, int u) {
    ct_shard_unit *su = &s->units[u];
    CT_CHECK(ct_shard_wait(&su->reduce));
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

ct_status ct_shard_finish_grads(ct_shard *s) {
    for (int b = 0; b < s->n_buckets; b++)
        CT_CHECK(ct_shard_wait(&s->buckets[b]));
    s->n_buckets = 0;
    ct_comm *replica = ct_shard_live(s->replica);
    for (int u = 0; u < s->gpt->n_units; u++) {
        ct_shard_unit *su = &s->units[u];
        CT_CHECK(release_grads(s, u));
        /* hsdp: the shard group reduced its ranks; now sum across the groups. */
        if (replica)
            CT_CHECK(ct_comm_allreduce(replica, su->grad_shard, (size_t)su->shard_len,
                                       s->comm_dtype, &su->reduce));
    }
    for (int u = 0; replica && u < s->gpt->n_units; u++)
        CT_CHECK(ct_shard_wait(&s->units[u].reduce));
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
    int n = s->gpt->n_units;
    if (ct_shard_is_fsdp(s)) {
        /* Gathered copies are stale now: the next forward gathers again. */
        for (int u = 0; u < n; u++)
            ct_shard_release_params(s, u);
        return CT_OK;
    }
    ct_comm *group = ct_shard_live(s->group);
    if (s->cfg.strategy == CT_SHARD_DDP || !group) return CT_OK;
    for (int u = 0; u < n; u++) {
        ct_shard_unit *su = &s->units[u];
        CT_CHECK(ct_comm_allgather(group, ct_shard_at(s, su->params, s->group_rank * su->shard_len),
                                   su->params, (size_t)su->shard_len, s->comm_dtype, &su->gather));
    }
    for (int u = 0; u < n; u++)
        CT_CHECK(ct_shard_wait(&s->units[u].gather));
    return CT_OK;
}

ct_status ct_shard_gather_unit(ct_shard *s, int u, float *dest) {
    ct_shard_unit *su = &s->units[u];
    bool held = su->params != NULL;
    if (ct_shard_is_fsdp(s)) CT_CHECK(ct_shard_gather_params(s, u, true));
    ct_status status = ct_shard_copy(s, dest, su->params, su->numel, CT_COPY_DEVICE_TO_HOST);
    if (ct_shard_is_fsdp(s) && !held) ct_shard_release_params(s, u);
    return status;
}

void ct_shard_get_memory(const ct_shard *s, ct_shard_memory *memory) {
    (void)s;
    ct_mem_stats stats;
    ct_mem_get_stats(&stats);
    memory->model_state_bytes = stats.current_bytes[CT_MEM_PARAMS] +
                                stats.current_bytes[CT_MEM_GRADS] +
                                stats.current_bytes[CT_MEM_OPTIMIZER];
    memory->gathered_bytes = stats.current_bytes[CT_MEM_GATHERED];
    memory->comm_buffer_bytes = stats.current_bytes[CT_MEM_COMM];
}

/* The ZeRO paper's per-rank model state for fp32 training (4 bytes each of params, grads,
 * Adam m and v: 16 psi in all) over shard groups of n ranks. */
static double state_bytes(ct_shard_strategy strategy, double psi, double n, const char **formula) {
    switch (strategy) {
    case CT_SHARD_DDP:
        *formula = "16 psi";
        return 16 * psi;
    case CT_SHARD_ZERO1:
        *formula = "8 psi + 8 psi/N";
        return 8 * psi + 8 * psi / n;
    case CT_SHARD_ZERO2:
        *formula = "4 psi + 12 psi/N";
        return 4 * psi + 12 * psi / n;
    case CT_SHARD_FSDP:
    case CT_SHARD_HSDP:
        break;
    }
    *formula = "16 psi/N";
    return 16 * psi / n;
}

size_t ct_shard_plan_bytes(const ct_gpt *gpt, ct_shard_strategy strategy, int group_size) {
    const char *formula;
    int64_t largest = 0;
    for (int u = 0; u < gpt->n_units; u++)
        largest = CT_MAX(largest, ct_shard_layout(gpt->units[u].numel, group_size, 0).shard_len);
    /* Pooled unit buffers in flight, as measured: fsdp/hsdp 4 (the unit computing, the one
     * prefetched, embed held for the head, a gradient), zero2 2; one more of margin. */
    int pooled = strategy == CT_SHARD_FSDP || strategy == CT_SHARD_HSDP ? 5
                 : strategy == CT_SHARD_ZERO2                           ? 3
                                                                        : 0;
    double bytes = state_bytes(strategy, (double)gpt->num_params, group_size, &formula);
    return (size_t)bytes + (size_t)pooled * sizeof(float) * (size_t)(largest * group_size);
}

void ct_shard_describe_plan(const ct_shard *s, char *text, size_t text_bytes) {
    const char *formula;
    double bytes =
        state_bytes(s->cfg.strategy, (double)s->gpt->num_params, s->group_size, &formula);
    snprintf(text, text_bytes, "%s: %s = %.1f MiB per rank (N = %d), plus activations%s",
             ct_shard_strategy_name(s->cfg.strategy), formula, bytes / (1 << 20), s->group_size,
             ct_shard_is_fsdp(s) || s->cfg.strategy == CT_SHARD_ZERO2
                 ? " and gathered units in flight"
                 : "");
}
