/*
 * The strategies, as unit hooks (model/model.h): what happens when forward enters and leaves a
 * unit and when backward enters and leaves it. Reductions start as soon as backward has passed
 * a unit's last use, on the last micro-batch only, and run on the communication thread while
 * backward goes on; ct_shard_finish_grads waits for them.
 *
 * Unit order: forward enters embed (0), blocks 1..L, then embed again for the tied head;
 * backward leaves them in reverse. The fused head writes d(wte) during its forward, so a unit
 * used more than once gets its gradient buffer at its last forward use.
 */
#include "shard/shard_internal.h"

#include <string.h>

/* ---------------------------------------------------------------- buffers */

/* Gives back the pooled gradient buffer of units whose reduce-scatter is done or pending,
 * waiting for the oldest first, until the pool has a free buffer again. */
static ct_status reclaim_grads(ct_shard *s) {
    for (int u = s->gpt->n_units - 1; u >= 0 && s->pool_free == 0; u--) {
        ct_shard_unit *su = &s->units[u];
        if (!su->grads_pooled || !su->reduce) continue;
        CT_CHECK(ct_shard_finish_reduce(s, u));
        ct_shard_pool_give(s, su->grads);
        su->grads = NULL;
        su->grads_pooled = false;
        ct_shard_bind(s, u);
    }
    return CT_OK;
}

static void *take(ct_shard *s, bool zero) {
    /* Allocate a few buffers before waiting on reductions to free one (never in steady state). */
    if (s->pool_free == 0 && s->pool_total >= 6 && reclaim_grads(s) != CT_OK) return NULL;
    return ct_shard_pool_take(s, zero);
}

/* Reducing after every micro-batch (zero2/fsdp): whether this micro-batch reduces. */
static bool reduces_now(const ct_shard *s) {
    return s->last_micro || (s->cfg.reduce_every_microbatch && s->cfg.strategy != CT_SHARD_ZERO1);
}

/* zero2/fsdp: a zeroed full gradient buffer for unit u, unless it has one. When every
 * micro-batch reduces, the shard summed so far goes into the own block of the new buffer: the
 * next reduce-scatter then adds it to the new gradients of all ranks, and the shard holds the
 * running total without a buffer of its own. */
static ct_status acquire_grads(ct_shard *s, int u) {
    ct_shard_unit *su = &s->units[u];
    if (su->grads) return CT_OK;
    CT_CHECK(ct_shard_finish_reduce(s, u));
    su->grads = take(s, true);
    if (!su->grads) return CT_ERR_NOMEM;
    su->grads_pooled = true;
    /* (bf16 reductions add into the shard instead: the running sum stays fp32) */
    if (s->cfg.reduce_every_microbatch && !s->first_micro && !ct_shard_stages(s, s->group))
        CT_CHECK(ct_shard_copy_grads(s, ct_shard_grad_at(su->grads, s->group_rank * su->shard_len),
                                     su->grad_shard, su->shard_len, CT_COPY_DEVICE_TO_DEVICE));
    ct_shard_bind(s, u);
    return CT_OK;
}

ct_status ct_shard_gather_params(ct_shard *s, int u, bool wait) {
    ct_shard_unit *su = &s->units[u];
    if (!su->params) {
        su->params = take(s, false);
        if (!su->params) return CT_ERR_NOMEM;
        su->params_pooled = true;
        void *own = ct_shard_param_at(s, su->params, s->group_rank * su->shard_len);
        CT_CHECK(ct_shard_cast_masters(s, own, su->param_shard, su->shard_len));
        ct_comm *group = ct_shard_live(s->group);
        if (group)
            CT_CHECK(ct_comm_allgather(group, own, su->params, (size_t)su->shard_len, s->comm_dtype,
                                       &su->gather));
        ct_shard_bind(s, u);
    }
    return wait ? ct_shard_wait(&su->gather) : CT_OK;
}

void ct_shard_release_params(ct_shard *s, int u) {
    ct_shard_unit *su = &s->units[u];
    if (!su->params_pooled) return;
    ct_shard_wait(&su->gather);
    ct_shard_pool_give(s, su->params);
    su->params = NULL;
    su->params_pooled = false;
    ct_shard_bind(s, u);
}

/* reduce = bf16: unit u's full gradient cast into a pooled buffer, reduce-scattered in bf16
 * there (the own block's sum lands after the padded gradient), then widened into `into`:
 * assigned (zero1: into is the own block of the full gradient) or added (zero2, fsdp: into is
 * the gradient shard, through the own block of the full gradient, which is spent by then). */
static ct_status reduce_scatter_bf16(ct_shard *s, int u, ct_comm *group, float *into, bool add) {
    ct_shard_unit *su = &s->units[u];
    const ct_kernels *k = s->kernels;
    void *send = take(s, false);
    if (!send) return CT_ERR_NOMEM;
    su->staging = send;
    su->staging_result = (uint16_t *)send + su->padded;
    su->widen_to = into;
    su->widen_temp = add ? ct_shard_grad_at(su->grads, s->group_rank * su->shard_len) : NULL;
    su->widen_n = su->shard_len;
    CT_CHECK(k->cast(&k->ctx, send, CT_BF16, su->grads, CT_F32, (size_t)su->padded));
    return ct_comm_reduce_scatter(group, send, (void *)su->staging_result, (size_t)su->shard_len,
                                  CT_COMM_BF16, &su->reduce);
}

/* Reduce-scatter of unit u's full gradient into the own shard (zero2, fsdp) or in place
 * (zero1, where the own shard lands at grads + rank * S). */
static ct_status reduce_scatter(ct_shard *s, int u) {
    ct_shard_unit *su = &s->units[u];
    ct_comm *group = ct_shard_live(s->group);
    bool in_place = s->cfg.strategy == CT_SHARD_ZERO1;
    void *recv =
        in_place ? ct_shard_grad_at(su->grads, s->group_rank * su->shard_len) : su->grad_shard;
    if (ct_shard_stages(s, group)) return reduce_scatter_bf16(s, u, group, recv, !in_place);
    if (group)
        return ct_comm_reduce_scatter(group, su->grads, recv, (size_t)su->shard_len, CT_COMM_F32,
                                      &su->reduce);
    if (in_place) return CT_OK;
    return ct_shard_copy_grads(s, recv, su->grads, su->shard_len, CT_COPY_DEVICE_TO_DEVICE);
}

/* ---------------------------------------------------------------- ddp */

/* Buckets are ranges of consecutive units of the flat gradient buffer: backward finishes
 * units from the last to the first, so a bucket grows downwards and goes out when it holds
 * bucket_mb or reaches unit 0. */
static ct_status ddp_post_backward(void *ctx, ct_unit *unit, bool last_use) {
    ct_shard *s = ctx;
    if (!last_use || !s->last_micro) return CT_OK;
    int u = unit->index;
    if (s->bucket_hi < 0) s->bucket_hi = u;
    int64_t lo = s->flat_offset[u];
    int64_t end = s->flat_offset[s->bucket_hi] + s->units[s->bucket_hi].numel;
    double mb = (double)(end - lo) * sizeof(float) / (1 << 20);
    if (mb < s->cfg.bucket_mb && u > 0) return CT_OK;
    s->bucket_hi = -1;
    ct_comm *world = ct_shard_live(s->world);
    if (!world) return CT_OK;
    CT_ASSERT(s->n_buckets < (int)CT_ARRAY_LEN(s->buckets), "too many buckets");
    int b = s->n_buckets++;
    s->bucket_lo[b] = lo;
    s->bucket_end[b] = end;
    if (!s->flat_reduce)
        return ct_comm_allreduce(world, ct_shard_grad_at(s->flat_grads, lo), (size_t)(end - lo),
                                 CT_COMM_F32, &s->buckets[b]);
    /* reduce = bf16: the bucket's bf16 copy is summed, and widened back in finish_grads. */
    const ct_kernels *k = s->kernels;
    uint16_t *staged = (uint16_t *)s->flat_reduce + lo;
    CT_CHECK(k->cast(&k->ctx, staged, CT_BF16, ct_shard_grad_at(s->flat_grads, lo), CT_F32,
                     (size_t)(end - lo)));
    return ct_comm_allreduce(world, staged, (size_t)(end - lo), CT_COMM_BF16, &s->buckets[b]);
}

/* ---------------------------------------------------------------- zero1, zero2 */

static ct_status zero1_post_backward(void *ctx, ct_unit *unit, bool last_use) {
    ct_shard *s = ctx;
    return last_use && reduces_now(s) ? reduce_scatter(s, unit->index) : CT_OK;
}

static ct_status zero2_pre_forward(void *ctx, ct_unit *unit) {
    ct_shard *s = ctx;
    bool last_forward_use = unit->uses_per_pass > 1 && unit->uses_this_pass == unit->uses_per_pass;
    return last_forward_use ? acquire_grads(s, unit->index) : CT_OK;
}

static ct_status zero2_pre_backward(void *ctx, ct_unit *unit) {
    return acquire_grads(ctx, unit->index);
}

/* ---------------------------------------------------------------- fsdp, hsdp */

static ct_status fsdp_pre_forward(void *ctx, ct_unit *unit) {
    ct_shard *s = ctx;
    int u = unit->index, n = s->gpt->n_units;
    CT_CHECK(ct_shard_gather_params(s, u, true));
    if (s->cfg.prefetch && u + 1 < n) CT_CHECK(ct_shard_gather_params(s, u + 1, false));
    return zero2_pre_forward(ctx, unit);
}

static ct_status fsdp_post_forward(void *ctx, ct_unit *unit) {
    ct_shard *s = ctx;
    /* A unit with forward uses to come (the tied embedding) stays gathered. */
    if (s->cfg.reshard_after_forward && unit->uses_this_pass >= unit->uses_per_pass)
        ct_shard_release_params(s, unit->index);
    return CT_OK;
}

static ct_status fsdp_pre_backward(void *ctx, ct_unit *unit) {
    ct_shard *s = ctx;
    int u = unit->index, n = s->gpt->n_units;
    CT_CHECK(ct_shard_gather_params(s, u, true));
    /* Backward order: the head (unit 0, still at its full use count), the last block, ...,
     * block 1, then the embedding (unit 0 again, gathered already). */
    int previous = u > 0 ? u - 1 : (unit->uses_this_pass == unit->uses_per_pass ? n - 1 : -1);
    if (s->cfg.prefetch && previous > 0) CT_CHECK(ct_shard_gather_params(s, previous, false));
    return acquire_grads(s, u);
}

static ct_status fsdp_post_backward(void *ctx, ct_unit *unit, bool last_use) {
    ct_shard *s = ctx;
    if (!last_use) return CT_OK; /* the tied unit stays gathered for its other use */
    if (reduces_now(s)) CT_CHECK(reduce_scatter(s, unit->index));
    ct_shard_release_params(s, unit->index);
    return CT_OK;
}

void ct_shard_init_hooks(ct_shard *s) {
    ct_unit_hooks *h = &s->hooks;
    memset(h, 0, sizeof(*h));
    h->ctx = s;
    switch (s->cfg.strategy) {
    case CT_SHARD_DDP:
        h->post_backward = ddp_post_backward;
        break;
    case CT_SHARD_ZERO1:
        h->post_backward = zero1_post_backward;
        break;
    case CT_SHARD_ZERO2:
        h->pre_forward = zero2_pre_forward;
        h->pre_backward = zero2_pre_backward;
        h->post_backward = zero1_post_backward;
        break;
    case CT_SHARD_FSDP:
    case CT_SHARD_HSDP:
        h->pre_forward = fsdp_pre_forward;
        h->post_forward = fsdp_post_forward;
        h->pre_backward = fsdp_pre_backward;
        h->post_backward = fsdp_post_backward;
        break;
    }
}
