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
    bool checkpoint_warned;    /* said once that this layout cannot be checkpointed */
    double flops_per_token;
    double ceiling_gflops; /* measured sgemm rate for MFU; 0 = not measured */
    /* CTRAIN_PROFILE=1: time per op kind (the tape's), plus the rest of the step */
    ct_tape_profile profile;
    double data_s, optimizer_s; /* reading batches; zero_grad + norm + AdamW */
};

/* ckpt_io.c. Collective: saves the model and optimizer state at tr->step as a sharded
 * checkpoint in checkpoint.dir, then keeps the newest checkpoint.keep. */
ct_status ct_trainer_save_checkpoint(ct_trainer *tr);
/* After the model is built: per checkpoint.resume, loads the newest (or the given) checkpoint
 * into the shard layer and sets the step; nothing when there is none to resume from. */
ct_status ct_trainer_resume(ct_trainer *tr);

#endif
