/*
 * Whole-model files to and from the shard layer: starting weights read whole on every rank
 * (each keeps its part), and final weights gathered unit by unit and written by rank 0. Both
 * go through one temporary full model of the same configuration, made and freed here.
 */
#include "checkpoint/sharded.h"

/* A fully allocated model of `config` in *full; ct_gpt_free it also after a failure. */
static ct_status full_model_new(ct_gpt *full, const ct_gpt_config *config) {
    full->units = NULL;
    CT_CHECK(ct_gpt_init(full, config));
    return ct_gpt_alloc_full(full);
}

static void full_model_free(ct_gpt *full) {
    if (full->units) ct_gpt_free(full);
}

ct_status ct_ckpt_model_into_shard(const char *path, const ct_gpt_config *config, ct_shard *shard) {
    ct_gpt full;
    ct_status status = full_model_new(&full, config);
    if (status == CT_OK) status = ct_ckpt_model_read(path, &full);
    for (int u = 0; status == CT_OK && u < full.n_units; u++)
        status = ct_shard_load_unit(shard, u, full.units[u].data);
    full_model_free(&full);
    return status;
}

ct_status ct_ckpt_model_from_shard(const char *path, const ct_gpt_config *config, ct_shard *shard,
                                   int rank, ct_status ready) {
    ct_gpt full;
    ct_status status = full_model_new(&full, config);
    for (int u = 0; status == CT_OK && u < full.n_units; u++)
        status = ct_shard_gather_unit(shard, u, full.units[u].data);
    if (status == CT_OK && rank == 0)
        status = ready != CT_OK ? ready : ct_ckpt_llmc_write(path, &full);
    full_model_free(&full);
    return status;
}
