/*
 * train: the trainer loop and the run. A trainer (trainer.c) builds the model, the shard layer,
 * the data and the tape for one rank and takes optimizer steps; the run (run.c) drives it from
 * the first step to the final save, evaluation, metrics (metrics.c) and signals, and resumes
 * from a checkpoint of the same run (resume.c). launcher/ starts it on every rank.
 */
#ifndef CT_TRAIN_H
#define CT_TRAIN_H

#include "comm/comm.h"
#include "common/common.h"
#include "job/job.h"

#include <stdbool.h>
#include <stdint.h>

/* Exit codes of ctrain-launch, `ctrain worker` and ct_train_run (docs/launching.md). A
 * supervisor (--max-restarts, a scheduler) restarts only CT_EXIT_FAILED and CT_EXIT_HANG. */
enum {
    CT_EXIT_OK = 0,
    CT_EXIT_FAILED = 1, /* a failure a restart may fix (a crash, a lost rank) */
    CT_EXIT_CONFIG = 2, /* usage, configuration, data or disk: the same on every attempt */
    CT_EXIT_HANG = 3,   /* the watchdog ended a job that stopped making progress */
    CT_EXIT_STOPPED = 4 /* stopped by SIGTERM, SIGINT or SIGUSR1 after saving a checkpoint */
};

/* One training run's state: model, optimizer, data, tape, buffers. Made once; every step
 * after the first reuses its memory (no allocation in a warm step). */
typedef struct ct_trainer ct_trainer;

/* What one optimizer step did. */
typedef struct {
    int step;    /* 0-based index of the step just taken */
    double loss; /* mean over the step's micro-batches */
    double lr;
    double grad_norm; /* global L2 norm before clipping */
    double ms;        /* wall time of the step */
    double tokens_per_s;
    double mfu;        /* model FLOPs / (ms * measured GEMM ceiling of the compute dtype) */
    double loss_scale; /* fp16: the dynamic loss scale the step used; 1 otherwise */
    bool skipped;      /* fp16: a gradient overflowed, the update was skipped, the scale halved */
    uint64_t batch_hash;
    uint64_t comm_bytes[CT_COLL_KINDS]; /* this rank's traffic in the step, per kind */
    bool stop; /* some rank was asked to stop (a signal): every rank stops after this step */
} ct_step_stats;

/* `world` may be NULL: one process, no MPI. */
ct_status ct_trainer_new(ct_trainer **trainer, const ct_job *job, ct_comm *world);
void ct_trainer_free(ct_trainer *trainer);
/* Takes the next optimizer step (grad_accum micro-batches, clipping, AdamW). */
ct_status ct_trainer_step(ct_trainer *trainer, ct_step_stats *stats);
/* Collective: the mean loss over train.eval_steps global batches of data.val, read in order
 * from its start, each rank its share. */
ct_status ct_trainer_eval(ct_trainer *trainer, double *val_loss);
/* Trains as this process's rank of the job (`world` NULL: a single process without MPI);
 * returns a process exit code. The caller owns the world and its watchdog (comm.timeout_s:
 * the worker sets it). */
int ct_train_run(const ct_job *job, ct_comm *world);
/* From now on SIGTERM, SIGINT and SIGUSR1 ask the run to stop at the next step boundary
 * (saving a checkpoint, CT_EXIT_STOPPED) rather than killing the process; a second SIGINT or
 * SIGTERM still does. The worker calls it before joining the world, so that a signal during
 * start-up is not lost; ct_train_run calls it when nobody has. */
void ct_train_catch_stop_signals(void);
/* ct_train_run without MPI. */
int ct_train_main(const ct_job *job);

#endif
