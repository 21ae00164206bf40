/*
 * The trainer's state, shared by the files of launcher/ (trainer.c takes steps, run.c drives
 * them and reports) and by tests that look inside a run. Not part of the public API.
 */
#ifndef CT_LAUNCHER_TRAINER_INTERNAL_H
#define CT_LAUNCHER_TRAINER_INTERNAL_H

#include "comm/comm.h"
#include "data/data.h"
#include "launcher/launcher.h"
#include "model/model.h"
#include "shard/shard.h"

typedef struct ct_ckpt_saver ct_ckpt_saver;

struct ct_trainer {
    ct_job job;
    const ct_kernels *kernels;
    ct_comm *world; /* NULL: one process without MPI */
    int rank, world_size;
    ct_gpt gpt; /* layout; its storage belongs to the shard layer */
    ct_shard *shard;
    ct_tape tape;
    ct_data_dataset *train, *val;
    ct_data_sampler sampler, val_sampler;
    int32_t *inputs, *targets; /* one micro-batch, (B,T) each */
    int step;                  /* steps taken */
    ct_ckpt_saver *saver;      /* ckpt_save.c's state; NULL until the first save */
    double flops_per_token;
    double ceiling_gflops; /* measured sgemm rate for MFU; 0 = not measured */
    /* CTRAIN_PROFILE=1: time per op kind (the tape's), plus the rest of the step */
    ct_tape_profile profile;
    double data_s, optimizer_s; /* reading batches; zero_grad + norm + AdamW */
};

/* ckpt_save.c. Collective: saves the model and optimizer state at tr->step as a sharded
 * checkpoint in checkpoint.dir, then keeps the newest checkpoint.keep. With checkpoint.async
 * it returns once the state is copied, and a thread writes and commits it. */
ct_status ct_trainer_save_checkpoint(ct_trainer *tr);
/* Waits for a background save; its error, if it failed. */
ct_status ct_trainer_wait_checkpoint(ct_trainer *tr);
/* Waits for a background save (ignoring its outcome) and frees the saver. */
void ct_trainer_free_saver(ct_trainer *tr);
/* The shard layer's state that checkpoint kind `kind` (ct_ckpt_kind) stores. */
ct_shard_state ct_trainer_ckpt_state(int kind);
/* ckpt_io.c. After the model is built: per checkpoint.resume, loads the newest (or the given)
 * checkpoint into the shard layer and sets the step; nothing when there is none to resume
 * from. Refuses to start when checkpoint.dir holds later checkpoints of another timeline,
 * unless checkpoint.overwrite. */
ct_status ct_trainer_resume(ct_trainer *tr);

#endif
