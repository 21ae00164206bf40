/*
 * Reading a sharded checkpoint back into the shard layer, at the saved world size and strategy
 * or at others (resharding). Every rank reads, per unit, the range each state covers on this
 * rank in its own layout: the own shard of params (fsdp, hsdp) or the full params (ddp, zero1,
 * zero2: read from all files rather than loaded as a shard and all-gathered, which costs a
 * little more reading but no collective), and the own range of m and v. ct_ckpt_read_range
 * assembles a range from the saved layout's frames (and checks that they tile each unit), so
 * the saved world size and layout do not matter. The optimizer's step count becomes the
 * manifest's step.
 */
#include "checkpoint/sharded.h"

#include <string.h>

ct_status ct_ckpt_check_units(const ct_ckpt_step *ck, const char *path, const ct_gpt *gpt) {
    const ct_ckpt_manifest *m = &ck->manifest;
    if (m->n_units != gpt->n_units)
        return ct_error(CT_ERR_INVALID, "%s: %d units, this model has %d", path, m->n_units,
                        gpt->n_units);
    for (int u = 0; u < m->n_units; u++)
        if (m->units[u].numel != gpt->units[u].numel ||
            strcmp(m->units[u].name, gpt->units[u].name) != 0)
            return ct_error(CT_ERR_INVALID,
                            "%s: unit %d is %s of %lld elements, this model's is %s of %lld", path,
                            u, m->units[u].name, (long long)m->units[u].numel, gpt->units[u].name,
                            (long long)gpt->units[u].numel);
    return CT_OK;
}

/* Elements [lo, hi) of unit u's `kind` from the rank files into the shard layer: decoded in
 * place where its storage is host memory, else through a host buffer and the kernel table. */
static ct_status load_piece(const ct_ckpt_step *ck, ct_shard *shard, const ct_gpt *gpt, int u,
                            ct_ckpt_kind kind) {
    ct_shard_state state = ct_ckpt_kind_state(kind);
    int64_t lo, hi;
    ct_shard_state_range(shard, u, state, &lo, &hi);
    if (lo == hi) return CT_OK;
    const char *name = gpt->units[u].name;
    float *host = ct_shard_state_host(shard, u, state);
    if (host) {
        if (state == CT_SHARD_STATE_PARAMS) ct_shard_params_written(shard);
        return ct_ckpt_read_range(ck->readers, ck->manifest.world_size, u, name, kind, lo, hi,
                                  host);
    }
    size_t bytes = sizeof(float) * (size_t)(hi - lo);
    float *staging = ct_alloc(CT_MEM_CHECKPOINT, bytes);
    if (!staging) return ct_error(CT_ERR_NOMEM, "checkpoint: %zu bytes to load %s", bytes, name);
    ct_status status =
        ct_ckpt_read_range(ck->readers, ck->manifest.world_size, u, name, kind, lo, hi, staging);
    if (status == CT_OK) status = ct_shard_state_from_host(shard, u, state, lo, hi, staging);
    ct_free(CT_MEM_CHECKPOINT, staging, bytes);
    return status;
}

ct_status ct_ckpt_load_shard(const ct_ckpt_step *ck, ct_shard *shard, const ct_gpt *gpt) {
    for (int u = 0; u < gpt->n_units; u++)
        for (int k = 0; k < CT_CKPT_KIND_COUNT; k++)
            CT_CHECK(load_piece(ck, shard, gpt, u, (ct_ckpt_kind)k));
    /* AdamW counts the updates taken: fp16 skipped some of the steps. */
    ct_shard_set_step_count(
        shard, ck->manifest.step - (ck->manifest.has_loss_scale ? ck->manifest.skipped_steps : 0));
    return CT_OK;
}
