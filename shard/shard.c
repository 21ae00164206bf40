/*
 * The shard layer's lifecycle and step protocol: the per-unit layout (padded to the shard
 * group, own range), storage by strategy, the pool of unit-sized buffers for gathered params
 * and transient gradients, and what happens around forward/backward: finishing reductions,
 * the global gradient norm, AdamW on the own shard and making params whole again.
 * The hooks that run inside forward and backward are in hooks.c.
 */
#include "shard/shard_internal.h"

#include <math.h>
#include <string.h>

static const char *strategy_names[] = {"ddp", "zero1", "zero2", "fsdp", "hsdp"};

ct_status ct_shard_parse_strategy(const char *name, ct_shard_strategy *strategy) {
    for (int s = 0; s < (int)CT_ARRAY_LEN(strategy_names); s++)
        if (strcmp(name, strategy_names[s]) == 0) {
            *strategy = (ct_shard_strategy)s;
            return CT_OK;
        }
    return ct_error(CT_ERR_INVALID, "unknown strategy '%s' (ddp, zero1, zero2, fsdp, hsdp)", name);
}

const char *ct_shard_strategy_name(ct_shard_strategy strategy) {
    return strategy_names[strategy];
}

bool ct_shard_is_fsdp(const ct_shard *shard) {
    return shard->cfg.strategy == CT_SHARD_FSDP || shard->cfg.strategy == CT_SHARD_HSDP;
}

/* ---------------------------------------------------------------- buffers */

/* Model state, gathered units and communication buffers live on the table's device. */
static void *device_alloc(const ct_shard *s, ct_mem_category category, size_t bytes) {
    const ct_kernels *k = s->kernels;
    return k->device_alloc(&k->ctx, category, bytes);
}

static void device_free(const ct_shard *s, ct_mem_category category, void *ptr, size_t bytes) {
    const ct_kernels *k = s->kernels;
    k->device_free(&k->ctx, category, ptr, bytes);
}

ct_status ct_shard_zero_grads(ct_shard *shard, void *buffer, int64_t n) {
    const ct_kernels *k = shard->kernels;
    return k->memset_bytes(&k->ctx, buffer, 0, (size_t)n * sizeof(float));
}

ct_status ct_shard_copy_grads(ct_shard *shard, void *dst, const void *src, int64_t n,
                              ct_copy_kind kind) {
    const ct_kernels *k = shard->kernels;
    return k->copy(&k->ctx, dst, src, (size_t)n * sizeof(float), kind);
}

ct_status ct_shard_cast_masters(ct_shard *shard, void *params, const float *masters, int64_t n) {
    const ct_kernels *k = shard->kernels;
    if (n == 0 || params == (const void *)masters) return CT_OK;
    return k->cast(&k->ctx, params, shard->dtype, masters, CT_F32, (size_t)n);
}

void *ct_shard_pool_take(ct_shard *shard, bool zero) {
    void *buffer;
    if (shard->pool_free > 0) {
        const ct_kernels *k = shard->kernels;
        buffer = shard->pool[shard->pool_free - 1];
        if (zero && k->memset_bytes(&k->ctx, buffer, 0, shard->pool_bytes) != CT_OK) return NULL;
        shard->pool_free--;
        return buffer;
    }
    /* Warm-up: a new buffer. The pool never shrinks, so a warm step allocates nothing. */
    if (shard->pool_total >= CT_SHARD_POOL_PER_UNIT * shard->gpt->n_units) {
        ct_error(CT_ERR_NOMEM, "shard: more than %d unit buffers in flight (a bug)",
                 shard->pool_total);
        return NULL;
    }
    buffer = device_alloc(shard, CT_MEM_GATHERED, shard->pool_bytes);
    if (buffer) shard->pool_total++;
    return buffer;
}

void ct_shard_pool_give(ct_shard *shard, void *buffer) {
    if (!buffer) return;
    CT_ASSERT(shard->pool_free < shard->pool_total, "shard: a pool buffer given back twice");
    shard->pool[shard->pool_free++] = buffer;
}

ct_status ct_shard_finish_reduce(ct_shard *s, int u) {
    ct_shard_unit *su = &s->units[u];
    CT_CHECK(ct_shard_wait(&su->reduce));
    if (!su->staging) return CT_OK;
    const ct_kernels *k = s->kernels;
    size_t n = (size_t)su->widen_n;
    float *into = su->widen_temp ? su->widen_temp : su->widen_to;
    ct_status status = k->cast(&k->ctx, into, CT_F32, su->staging_result, CT_BF16, n);
    if (status == CT_OK && su->widen_temp) k->add_inplace(&k->ctx, su->widen_to, su->widen_temp, n);
    ct_shard_pool_give(s, su->staging);
    su->staging = NULL;
    return status;
}

void ct_shard_bind(ct_shard *shard, int u) {
    ct_unit_bind(&shard->gpt->units[u], shard->units[u].params, shard->dtype, shard->units[u].grads,
                 CT_F32);
}

/* ---------------------------------------------------------------- lifecycle */

/* How the process group names the unit buffers' element type. */
static ct_status comm_dtype_of(ct_dtype dtype, ct_comm_dtype *comm_dtype) {
    switch (dtype) {
    case CT_F32:
        *comm_dtype = CT_COMM_F32;
        return CT_OK;
    case CT_BF16:
        *comm_dtype = CT_COMM_BF16;
        return CT_OK;
    case CT_F16:
        /* Parameters are only gathered, never summed: any 2-byte type carries them. */
        *comm_dtype = CT_COMM_BF16;
        return CT_OK;
    case CT_I32:
        break;
    }
    return ct_error(CT_ERR_INVALID, "shard: %s unit buffers cannot be communicated",
                    ct_dtype_name(dtype));
}

static ct_status make_groups(ct_shard *s) {
    s->world_size = s->world ? ct_comm_size(s->world) : 1;
    s->group = s->world;
    int world_rank = s->world ? ct_comm_rank(s->world) : 0;
    if (s->cfg.strategy == CT_SHARD_HSDP) {
        int g = s->cfg.shard_group_size;
        if (g < 1 || s->world_size % g != 0)
            return ct_error(CT_ERR_INVALID,
                            "parallel.shard_group_size = %d must divide the world size %d", g,
                            s->world_size);
        if (s->world_size > 1) {
            CT_CHECK(ct_comm_split(s->world, world_rank / g, world_rank, &s->group));
            CT_CHECK(ct_comm_split(s->world, world_rank % g, world_rank, &s->replica));
            s->owns_groups = true;
        }
    }
    s->group_size = s->group ? ct_comm_size(s->group) : 1;
    s->group_rank = s->group ? ct_comm_rank(s->group) : 0;
    if (s->cfg.strategy == CT_SHARD_DDP) {
        s->group_size = 1; /* ddp owns everything; the layout is unpadded */
        s->group_rank = 0;
    }
    return CT_OK;
}

static void lay_out(ct_shard *s) {
    int64_t max_padded = 0;
    for (int u = 0; u < s->gpt->n_units; u++) {
        ct_shard_unit *su = &s->units[u];
        su->numel = s->gpt->units[u].numel;
        ct_shard_range r = ct_shard_layout(su->numel, s->group_size, s->group_rank);
        su->shard_len = r.shard_len;
        su->padded = r.padded;
        su->lo = r.lo;
        su->hi = r.hi;
        max_padded = CT_MAX(max_padded, su->padded);
    }
    /* A pooled buffer holds a gathered unit (compute dtype) or a full gradient (f32). */
    s->pool_bytes = (size_t)max_padded * sizeof(float);
}

/* Persistent storage by strategy. The fp32 masters are the parameters themselves when the
 * compute dtype is f32; with bf16/fp16 they are kept apart: ddp all of them, zero1/zero2 the own
 * shard (ZeRO shards the masters with the optimizer state), fsdp the parameter shard as always. */
static ct_status allocate(ct_shard *s) {
    int n = s->gpt->n_units;
    if (s->cfg.strategy == CT_SHARD_DDP) {
        /* One contiguous buffer each: a bucket is a range of consecutive units. */
        int64_t total = 0;
        s->flat_offset = ct_alloc(CT_MEM_OTHER, sizeof(int64_t) * (size_t)n);
        if (!s->flat_offset) return CT_ERR_NOMEM;
        for (int u = 0; u < n; u++) {
            s->flat_offset[u] = total;
            total += s->units[u].numel;
        }
        s->flat_params = device_alloc(s, CT_MEM_PARAMS, s->elem * (size_t)total);
        s->flat_grads = device_alloc(s, CT_MEM_GRADS, sizeof(float) * (size_t)total);
        s->flat_masters = s->half ? device_alloc(s, CT_MEM_MASTERS, sizeof(float) * (size_t)total)
                                  : s->flat_params;
        if (!s->flat_params || !s->flat_grads || !s->flat_masters) return CT_ERR_NOMEM;
        if (ct_shard_stages(s, s->world)) {
            s->flat_reduce = device_alloc(s, CT_MEM_COMM, sizeof(uint16_t) * (size_t)total);
            if (!s->flat_reduce) return CT_ERR_NOMEM;
        }
    }
    for (int u = 0; u < n; u++) {
        ct_shard_unit *su = &s->units[u];
        size_t padded = s->elem * (size_t)su->padded;
        size_t grad_padded = sizeof(float) * (size_t)su->padded;
        size_t shard_floats = sizeof(float) * (size_t)su->shard_len;
        su->master_lo = 0;
        su->master_hi = su->numel;
        switch (s->cfg.strategy) {
        case CT_SHARD_DDP:
            su->params = ct_shard_param_at(s, s->flat_params, s->flat_offset[u]);
            su->grads = ct_shard_grad_at(s->flat_grads, s->flat_offset[u]);
            su->master = s->flat_masters + s->flat_offset[u];
            break;
        case CT_SHARD_ZERO1:
        case CT_SHARD_ZERO2:
            su->params = device_alloc(s, CT_MEM_PARAMS, padded);
            if (s->cfg.strategy == CT_SHARD_ZERO1)
                su->grads = device_alloc(s, CT_MEM_GRADS, grad_padded);
            else
                su->grad_shard = device_alloc(s, CT_MEM_GRADS, shard_floats);
            if (!su->params || !(su->grads || su->grad_shard)) return CT_ERR_NOMEM;
            su->master = su->params;
            if (s->half) {
                su->master = device_alloc(s, CT_MEM_MASTERS, shard_floats);
                su->master_apart = true;
                su->master_lo = su->lo;
                su->master_hi = su->hi;
                if (!su->master) return CT_ERR_NOMEM;
            }
            break;
        case CT_SHARD_FSDP:
        case CT_SHARD_HSDP:
            su->param_shard =
                device_alloc(s, s->half ? CT_MEM_MASTERS : CT_MEM_PARAMS, shard_floats);
            su->grad_shard = device_alloc(s, CT_MEM_GRADS, shard_floats);
            if (!su->param_shard || !su->grad_shard) return CT_ERR_NOMEM;
            su->master = su->param_shard;
            su->master_lo = su->lo;
            su->master_hi = su->hi;
            break;
        }
        ct_shard_bind(s, u);
    }
    return CT_OK;
}

/* Initial weights into the masters, exactly as a single process would make them: made on the
 * host (counter-based random numbers), in place on the CPU, else in a host buffer as large as
 * the largest unit's masters and copied to the device unit by unit. */
static ct_status init_masters(ct_shard *s, uint64_t seed) {
    const ct_kernels *k = s->kernels;
    bool on_host = k->ctx.device == CT_DEVICE_CPU;
    int64_t most = 0;
    for (int u = 0; u < s->gpt->n_units; u++)
        most = CT_MAX(most, s->units[u].master_hi - s->units[u].master_lo);
    size_t host_bytes = on_host ? 0 : sizeof(float) * (size_t)most;
    float *host = on_host ? NULL : ct_alloc(CT_MEM_OTHER, host_bytes);
    if (!on_host && !host) return CT_ERR_NOMEM;
    ct_status status = CT_OK;
    for (int u = 0; u < s->gpt->n_units && status == CT_OK; u++) {
        ct_shard_unit *su = &s->units[u];
        int64_t n = su->master_hi - su->master_lo;
        ct_gpt_init_range(s->gpt, u, seed, su->master_lo, su->master_hi,
                          on_host ? su->master : host);
        if (!on_host)
            status = k->copy(&k->ctx, su->master, host, sizeof(float) * (size_t)n,
                             CT_COPY_HOST_TO_DEVICE);
    }
    ct_free(CT_MEM_OTHER, host, host_bytes);
    s->params_stale = true;
    return status;
}

/* Where AdamW reads and writes, per unit: the own range [lo, hi). */
static ct_status make_optimizer(ct_shard *s) {
    int n = s->gpt->n_units;
    int64_t lo[n], hi[n];
    s->opt_params = ct_alloc(CT_MEM_OTHER, sizeof(void *) * (size_t)n);
    s->opt_grads = ct_alloc(CT_MEM_OTHER, sizeof(void *) * (size_t)n);
    if (!s->opt_params || !s->opt_grads) return CT_ERR_NOMEM;
    for (int u = 0; u < n; u++) {
        ct_shard_unit *su = &s->units[u];
        lo[u] = su->lo;
        hi[u] = su->hi;
        bool sharded_grads = s->cfg.strategy != CT_SHARD_DDP && s->cfg.strategy != CT_SHARD_ZERO1;
        s->opt_params[u] = su->master + (su->lo - su->master_lo);
        s->opt_grads[u] = sharded_grads ? su->grad_shard : ct_shard_grad_at(su->grads, su->lo);
    }
    return ct_adamw_init(&s->opt, s->gpt, lo, hi, s->kernels);
}

ct_status ct_shard_new(ct_shard **out, ct_gpt *gpt, ct_comm *world, const ct_shard_config *cfg,
                       const ct_kernels *kernels, uint64_t seed) {
    ct_shard *s = ct_alloc(CT_MEM_OTHER, sizeof(ct_shard));
    *out = s;
    if (!s) return CT_ERR_NOMEM;
    s->cfg = *cfg;
    s->gpt = gpt;
    s->kernels = kernels;
    s->dtype = cfg->compute;
    s->elem = ct_dtype_size(s->dtype);
    s->half = s->dtype != CT_F32;
    if (cfg->reduce != CT_F32 && cfg->reduce != CT_BF16)
        return ct_error(CT_ERR_INVALID, "shard: gradients reduced in %s (f32 or bf16)",
                        ct_dtype_name(cfg->reduce));
    s->reduce_half = cfg->reduce == CT_BF16;
    if (s->dtype != CT_F32 && s->dtype != CT_BF16 && s->dtype != CT_F16)
        return ct_error(CT_ERR_INVALID, "shard: %s parameters (f32, bf16 or f16)",
                        ct_dtype_name(s->dtype));
    CT_CHECK(comm_dtype_of(s->dtype, &s->comm_dtype));
    s->world = world;
    s->bucket_hi = -1;
    CT_CHECK(make_groups(s));
    s->units = ct_alloc(CT_MEM_OTHER, sizeof(ct_shard_unit) * (size_t)gpt->n_units);
    s->pool = ct_alloc(CT_MEM_OTHER, sizeof(void *) * CT_SHARD_POOL_PER_UNIT * gpt->n_units);
    if (!s->units || !s->pool) return CT_ERR_NOMEM;
    lay_out(s);
    for (int u = 0; u < gpt->n_units; u++)
        gpt->units[u].dtype = s->dtype;
    CT_CHECK(allocate(s));
    CT_CHECK(init_masters(s, seed));
    CT_CHECK(make_optimizer(s));
    ct_shard_init_hooks(s);
    return ct_shard_refresh_params(s);
}

void ct_shard_free(ct_shard *s) {
    if (!s) return;
    int n = s->gpt->n_units;
    if (s->opt.m) ct_adamw_free(&s->opt);
    for (int u = 0; s->units && u < n; u++) {
        ct_shard_unit *su = &s->units[u];
        size_t padded = s->elem * (size_t)su->padded;
        size_t shard_floats = sizeof(float) * (size_t)su->shard_len;
        ct_shard_wait(&su->gather);
        ct_shard_wait(&su->reduce);
        ct_shard_pool_give(s, su->staging);
        if (su->params_pooled) ct_shard_pool_give(s, su->params);
        if (su->grads_pooled) ct_shard_pool_give(s, su->grads);
        if (s->cfg.strategy != CT_SHARD_DDP && !su->params_pooled && !ct_shard_is_fsdp(s))
            device_free(s, CT_MEM_PARAMS, su->params, padded);
        if (s->cfg.strategy == CT_SHARD_ZERO1)
            device_free(s, CT_MEM_GRADS, su->grads, sizeof(float) * (size_t)su->padded);
        if (su->master_apart) device_free(s, CT_MEM_MASTERS, su->master, shard_floats);
        device_free(s, s->half ? CT_MEM_MASTERS : CT_MEM_PARAMS, su->param_shard, shard_floats);
        device_free(s, CT_MEM_GRADS, su->grad_shard, shard_floats);
        ct_unit_bind(&s->gpt->units[u], NULL, s->dtype, NULL, CT_F32);
    }
    for (int i = 0; i < s->pool_free; i++)
        device_free(s, CT_MEM_GATHERED, s->pool[i], s->pool_bytes);
    ct_free(CT_MEM_OTHER, s->pool, sizeof(void *) * CT_SHARD_POOL_PER_UNIT * n);
    if (s->flat_offset) {
        int64_t total = s->flat_offset[n - 1] + s->units[n - 1].numel;
        device_free(s, CT_MEM_PARAMS, s->flat_params, s->elem * (size_t)total);
        device_free(s, CT_MEM_GRADS, s->flat_grads, sizeof(float) * (size_t)total);
        if (s->half) device_free(s, CT_MEM_MASTERS, s->flat_masters, sizeof(float) * (size_t)total);
        device_free(s, CT_MEM_COMM, s->flat_reduce, sizeof(uint16_t) * (size_t)total);
        ct_free(CT_MEM_OTHER, s->flat_offset, sizeof(int64_t) * (size_t)n);
    }
    ct_free(CT_MEM_OTHER, s->opt_params, sizeof(void *) * (size_t)n);
    ct_free(CT_MEM_OTHER, s->opt_grads, sizeof(void *) * (size_t)n);
    ct_free(CT_MEM_OTHER, s->units, sizeof(ct_shard_unit) * (size_t)n);
    if (s->owns_groups) {
        ct_comm_free(s->group);
        ct_comm_free(s->replica);
    }
    ct_free(CT_MEM_OTHER, s, sizeof(ct_shard));
}

const ct_unit_hooks *ct_shard_hooks(ct_shard *shard) {
    return &shard->hooks;
}

/* ---------------------------------------------------------------- persistent state */

/* Where this rank keeps unit u's `state`: elements [*lo, *hi) of the unit, at the pointer
 * returned. Params are the fp32 masters and Adam state fp32, whatever the compute dtype. */
static float *state_storage(ct_shard *s, int u, ct_shard_state state, int64_t *lo, int64_t *hi) {
    ct_shard_unit *su = &s->units[u];
    if (state == CT_SHARD_STATE_PARAMS) {
        *lo = su->master_lo;
        *hi = su->master_hi;
        return su->master;
    }
    *lo = s->opt.lo[u];
    *hi = s->opt.hi[u];
    return state == CT_SHARD_STATE_ADAM_M ? s->opt.m[u] : s->opt.v[u];
}

void ct_shard_state_range(ct_shard *s, int u, ct_shard_state state, int64_t *lo, int64_t *hi) {
    state_storage(s, u, state, lo, hi);
}

float *ct_shard_state_host(ct_shard *s, int u, ct_shard_state state) {
    int64_t lo, hi;
    float *storage = state_storage(s, u, state, &lo, &hi);
    return s->kernels->ctx.device == CT_DEVICE_CPU ? storage : NULL;
}

/* The storage of elements [a, b) of unit u's state, checked against what this rank holds. */
static float *state_at(ct_shard *s, int u, ct_shard_state state, int64_t a, int64_t b) {
    int64_t lo, hi;
    float *storage = state_storage(s, u, state, &lo, &hi);
    CT_ASSERT(a == b || (lo <= a && a <= b && b <= hi),
              "unit %d: [%lld, %lld) outside the held [%lld, %lld)", u, (long long)a, (long long)b,
              (long long)lo, (long long)hi);
    return storage + (a - lo);
}

ct_status ct_shard_state_to_host(ct_shard *s, int u, ct_shard_state state, int64_t a, int64_t b,
                                 float *host) {
    if (a == b) return CT_OK;
    const ct_kernels *k = s->kernels;
    return k->copy(&k->ctx, host, state_at(s, u, state, a, b), sizeof(float) * (size_t)(b - a),
                   CT_COPY_DEVICE_TO_HOST);
}

ct_status ct_shard_state_from_host(ct_shard *s, int u, ct_shard_state state, int64_t a, int64_t b,
                                   const float *host) {
    if (a == b) return CT_OK;
    const ct_kernels *k = s->kernels;
    if (state == CT_SHARD_STATE_PARAMS) s->params_stale = true;
    return k->copy(&k->ctx, state_at(s, u, state, a, b), host, sizeof(float) * (size_t)(b - a),
                   CT_COPY_HOST_TO_DEVICE);
}

void ct_shard_params_written(ct_shard *s) {
    s->params_stale = true;
}

ct_status ct_shard_load_unit(ct_shard *s, int u, const float *full) {
    int64_t lo, hi;
    ct_shard_state_range(s, u, CT_SHARD_STATE_PARAMS, &lo, &hi);
    return ct_shard_state_from_host(s, u, CT_SHARD_STATE_PARAMS, lo, hi, full + lo);
}

int64_t ct_shard_step_count(const ct_shard *s) {
    return s->opt.t;
}

void ct_shard_set_step_count(ct_shard *s, int64_t t) {
    s->opt.t = t;
}

ct_shard_strategy ct_shard_get_strategy(const ct_shard *s) {
    return s->cfg.strategy;
}

int ct_shard_group_size(const ct_shard *s) {
    return s->group_size;
}
