/*
 * Sharded checkpoints of a training run, over the shard layer (shard/) and the process group
 * (comm/): what of each rank's shard state goes into which rank file (save.c, also in a
 * background thread), reading it back at any world size and strategy (load.c), and whole-model
 * files made from or read into the shard layer (whole_model.c). The storage underneath (rank
 * files, manifest, step directories) is checkpoint.h's; docs/checkpoints.md has the format.
 * Which checkpoint a run resumes, and whether it is that run's, is train/'s to decide.
 */
#ifndef CT_CHECKPOINT_SHARDED_H
#define CT_CHECKPOINT_SHARDED_H

#include "checkpoint/checkpoint.h"
#include "comm/comm.h"
#include "model/model.h"
#include "shard/shard.h"

#include <stdbool.h>
#include <stdint.h>

/* The shard layer's state that a checkpoint kind stores. */
ct_shard_state ct_ckpt_kind_state(ct_ckpt_kind kind);

/* What a save records beside the state, and where it goes. */
typedef struct {
    const char *dir;         /* checkpoint.dir: step_N/ directories go in it */
    int zstd_level;          /* checkpoint.zstd_level */
    bool async;              /* compress and write in a background thread */
    int keep;                /* the newest `keep` checkpoints stay */
    const char *strategy;    /* parallel.strategy, for the manifest */
    const char *config_text; /* the job as job.toml text */
    uint64_t rng_seed, data_fingerprint, data_tokens;
    bool has_loss_scale; /* fp16: the loss scaler's state goes into the manifest */
    double loss_scale;
    int64_t loss_scale_good_steps;
    int64_t skipped_steps; /* optimizer steps = step - skipped_steps */
} ct_ckpt_save_info;

/* One rank's saver: the pieces it writes (found once), the host copy and the thread of an
 * asynchronous save. `world` may be NULL (one process). The shard layer and the model's layout
 * must outlive it. */
typedef struct ct_ckpt_saver ct_ckpt_saver;
ct_status ct_ckpt_saver_new(ct_ckpt_saver **saver, ct_shard *shard, const ct_gpt *gpt,
                            ct_comm *world);
/* Collective: saves the state at `step` as step_N/ in info->dir, then keeps the newest
 * info->keep. Returns once committed on every rank, or (info->async) once the state is
 * copied, with a thread writing and committing it. Waits for an earlier save first. The
 * strings in `info` are copied. */
ct_status ct_ckpt_save(ct_ckpt_saver *saver, int64_t step, const ct_ckpt_save_info *info);
/* Collective: waits for a background save; its error (on every rank), if it failed. */
ct_status ct_ckpt_saver_wait(ct_ckpt_saver *saver);
/* Waits for a background save (ignoring its outcome) and frees the saver; NULL is fine. */
void ct_ckpt_saver_free(ct_ckpt_saver *saver);

/* Checks that the checkpoint's units are the model's (count, names, sizes), naming `path`. */
ct_status ct_ckpt_check_units(const ct_ckpt_step *ck, const char *path, const ct_gpt *gpt);
/* Reads what this rank holds of every unit (its own layout: the saved one does not matter)
 * from the checkpoint's rank files into the shard layer, and sets the optimizer's step count
 * to the saved step. Not collective. */
ct_status ct_ckpt_load_shard(const ct_ckpt_step *ck, ct_shard *shard, const ct_gpt *gpt);

/* A whole-model file (an llm.c model file or safetensors, told apart by the first bytes) read
 * whole on every rank; each rank keeps its part of every unit. */
ct_status ct_ckpt_model_into_shard(const char *path, const ct_gpt_config *config, ct_shard *shard);
/* Collective: gathers every unit's full parameters and, on rank 0, writes them as an llm.c
 * model file at `path`, unless rank 0's `ready` is an error (its directory failed), which it
 * then returns. The other ranks return CT_OK; the caller agrees on the outcome. */
ct_status ct_ckpt_model_from_shard(const char *path, const ct_gpt_config *config, ct_shard *shard,
                                   int rank, ct_status ready);

#endif
