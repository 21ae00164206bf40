/*
 * The trainer's state, shared by the files of train/ (trainer.c takes steps, run.c drives
 * them and reports) and by tests that look inside a run. Not part of the public API.
 */
#ifndef CT_TRAIN_INTERNAL_H
#define CT_TRAIN_INTERNAL_H

#include "checkpoint/sharded.h"
#include "comm/comm.h"
#include "data/data.h"
#include "model/model.h"
#include "shard/shard.h"
#include "train/train.h"

#include <stdio.h>

/* loss_scale.c: fp16's dynamic loss scaling (precision.compute = fp16). The loss is multiplied
 * by `scale` before backward; a step whose gradient holds an inf or NaN is skipped and the scale
 * halved (at least 1); after CT_LOSS_SCALE_WINDOW good steps in a row it doubles. */
#define CT_LOSS_SCALE_INITIAL 65536.0
#define CT_LOSS_SCALE_WINDOW 1000
typedef struct {
    bool enabled;
    double scale;
    int64_t good_steps;    /* finite steps since the scale last changed */
    int64_t skipped_steps; /* steps skipped so far (AdamW counts only the others) */
} ct_loss_scaler;
void ct_loss_scaler_init(ct_loss_scaler *scaler, bool enabled);
/* After a step's gradient norm (of the scaled gradient): true when the step may be taken; updates
 * the scale either way. */
bool ct_loss_scaler_update(ct_loss_scaler *scaler, double scaled_norm);

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
    bool resumed;              /* the step came from a checkpoint: resumed_from */
    char resumed_from[2 * CT_JOB_STR + 64];
    uint64_t train_fingerprint, train_tokens; /* data.train's identity (ct_data_fingerprint) */
    ct_ckpt_saver *saver;                     /* NULL until the first save (run.c) */
    bool stop_requested;          /* this rank was asked to stop (a signal, seen by run.c) */
    ct_dtype compute;             /* precision.compute */
    ct_loss_scaler scaler;        /* fp16's dynamic loss scale (a scale of 1 otherwise) */
    size_t activation_plan_bytes; /* the tape's reserve: ct_gpt_activation_bytes' bound */
    double flops_per_token;
    double ceiling_gflops; /* measured sgemm rate for MFU; 0 = not measured */
    /* CTRAIN_PROFILE=1: time per op kind (the tape's), plus the rest of the step */
    ct_tape_profile profile;
    double data_s, optimizer_s; /* reading batches; zero_grad + norm + AdamW */
};

/* metrics.c: metrics.jsonl, rank 0's (docs/metrics.md). */
#define CT_METRICS_PATH_BYTES (2 * CT_JOB_STR + 64)
typedef struct {
    FILE *file;
    char path[CT_METRICS_PATH_BYTES];
    bool failed; /* a write failed (reported); no more rows are written */
} ct_train_metrics;
/* Starts the file for a run beginning after step keep_step: 0 = fresh (empty file), else the
 * rows of steps 1..keep_step are kept and later ones dropped. */
ct_status ct_train_metrics_open(ct_train_metrics *metrics, const char *path, int keep_step);
/* Appends the row of one step (val_loss NaN: not evaluated); a failure is reported once. */
void ct_train_metrics_write(ct_train_metrics *metrics, const ct_trainer *tr,
                            const ct_step_stats *stats, double val_loss);
/* Closes; an error when any write failed. */
ct_status ct_train_metrics_close(ct_train_metrics *metrics);
/* Peak resident memory of this process (getrusage). */
size_t ct_train_peak_rss_bytes(void);

/* trainer.c. Collective: `status` when this rank failed, else an error when another rank did
 * (naming `what`), else CT_OK: every rank learns whether all of them succeeded. */
ct_status ct_trainer_agree(ct_trainer *tr, ct_status status, const char *what);

/* resume.c. After the model is built: per checkpoint.resume, loads the newest (or the given)
 * checkpoint into the shard layer and sets the step; nothing when there is none to resume
 * from. Refuses to start when checkpoint.dir holds later checkpoints of another timeline,
 * unless checkpoint.overwrite. */
ct_status ct_trainer_resume(ct_trainer *tr);

#endif
