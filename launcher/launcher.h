/*
 * launcher: the user-facing layer. job.toml parsing (one key table drives the parser, its
 * error messages and docs/config.md), the trainer loop that ranks run, and the entry points
 * of the `ctrain-launch` and `ctrain` commands.
 */
#ifndef CT_LAUNCHER_H
#define CT_LAUNCHER_H

#include "comm/comm.h"
#include "common/common.h"

#include <stdbool.h>
#include <stdio.h>

#define CT_JOB_STR 512

/* Exit codes of ctrain-launch, `ctrain worker` and ct_train_run (docs/launching.md). A
 * supervisor (--max-restarts, a scheduler) restarts only CT_EXIT_FAILED and CT_EXIT_HANG. */
enum {
    CT_EXIT_OK = 0,
    CT_EXIT_FAILED = 1, /* a failure a restart may fix (a crash, a lost rank) */
    CT_EXIT_CONFIG = 2, /* usage, configuration, data or disk: the same on every attempt */
    CT_EXIT_HANG = 3,   /* the watchdog ended a job that stopped making progress */
    CT_EXIT_STOPPED = 4 /* stopped by SIGTERM, SIGINT or SIGUSR1 after saving a checkpoint */
};

/* Every job.toml key, parsed and checked. Defaults come from the key table in job.c. */
typedef struct {
    /* [model] */
    char model_arch[CT_JOB_STR]; /* "gpt2" */
    int model_n_layer;
    int model_n_head;
    int model_n_embd;
    int model_vocab_size;
    int model_seq_len;
    char model_init_from[CT_JOB_STR]; /* llm.c model file; "" = random init */

    /* [data] */
    char data_train[CT_JOB_STR];  /* glob */
    char data_val[CT_JOB_STR];    /* glob; "" = no evaluation */
    char data_format[CT_JOB_STR]; /* "llmc" | "nanogpt" */
    bool data_shuffle;

    /* [train] */
    int train_batch_size; /* sequences per rank per micro-batch */
    int train_grad_accum;
    int train_steps;
    double train_lr;
    double train_min_lr;
    int train_warmup_steps;
    char train_schedule[CT_JOB_STR]; /* "cosine" | "linear" | "constant" */
    double train_weight_decay;
    double train_beta1;
    double train_beta2;
    double train_eps;
    double train_grad_clip; /* 0 = off */
    long long train_seed;
    int train_eval_every; /* 0 = only at the end (when data.val is set) */
    int train_eval_steps;

    /* [parallel] */
    char parallel_strategy[CT_JOB_STR]; /* "ddp" | "zero1" | "zero2" | "fsdp" | "hsdp" */
    double parallel_bucket_mb;
    bool parallel_prefetch;
    bool parallel_reshard_after_forward;
    int parallel_shard_group_size; /* hsdp; 0 = the ranks of one node */
    bool parallel_reduce_every_microbatch;

    /* [comm] */
    double comm_timeout_s; /* watchdog: a collective pending longer ends the job; 0 = off */

    /* [log] */
    char log_dir[CT_JOB_STR]; /* run directory; "" = <job file's dir>/runs/<job name> */
    int log_every;
    char log_metrics[CT_JOB_STR]; /* JSONL path; "" = <log.dir>/metrics.jsonl */

    /* [checkpoint] */
    char checkpoint_dir[CT_JOB_STR]; /* "" = <log.dir>/ckpt */
    int checkpoint_every;            /* 0 = only after the last step */
    int checkpoint_keep;
    int checkpoint_zstd_level;
    int checkpoint_async;               /* bool: compress and write in a background thread */
    int checkpoint_overwrite;           /* bool: may replace another run's later checkpoints */
    char checkpoint_resume[CT_JOB_STR]; /* "auto" | "never" | "replace" | a checkpoint dir */

    /* [device] */
    char device_type[CT_JOB_STR]; /* "auto" | "cpu" | "cuda" */
    int device_threads_per_rank;  /* 0 = all cores / local ranks */

    /* Not keys: where the job came from, for messages and the run directory. */
    char source_path[CT_JOB_STR];
} ct_job;

/* Fills every field with its default. */
void ct_job_defaults(ct_job *job);

/* Reads `path` (the TOML subset: [tables], key = string | integer | float | bool | array,
 * # comments), then applies `overrides` ("section.key=value", TOML value syntax, bare words
 * taken as strings), then checks every value and the relations between them. Errors name the
 * file, line, key and value, and suggest the nearest valid key for unknown ones. */
ct_status ct_job_load(ct_job *job, const char *path, int n_overrides, char *const *overrides);

/* The same for job.toml text held in memory (a checkpoint's saved job); `source` names it in
 * messages. */
ct_status ct_job_load_text(ct_job *job, const char *text, const char *source);

/* Checks values and relations between keys (n_embd divisible by n_head, min_lr <= lr, ...). */
ct_status ct_job_validate(const ct_job *job);

/* Prints every key = value, one table after another, in job.toml syntax. */
void ct_job_print(const ct_job *job, FILE *out);

/* Writes docs/config.md: every key with its type, default, allowed values and meaning. */
void ct_job_write_docs(FILE *out);

/* Calls visit(ctx, "section.key", value in a, value in b) for every key whose value differs
 * (values as TOML text), in table order. */
typedef void (*ct_job_diff_fn)(void *ctx, const char *key, const char *a_value,
                               const char *b_value);
void ct_job_diff(const ct_job *a, const ct_job *b, ct_job_diff_fn visit, void *ctx);

/* The run directory (log.dir, or runs/<job name> beside the job file) into `out`. */
void ct_job_run_dir(const ct_job *job, char *out, size_t out_bytes);
/* The metrics file (log.metrics, or <run dir>/metrics.jsonl) into `out`. */
void ct_job_metrics_path(const ct_job *job, char *out, size_t out_bytes);
/* The checkpoint directory (checkpoint.dir, or <run dir>/ckpt) into `out`. */
void ct_job_checkpoint_dir(const ct_job *job, char *out, size_t out_bytes);

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
    double mfu; /* model FLOPs / (ms * measured sgemm ceiling) */
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
 * returns a process exit code. */
int ct_train_run(const ct_job *job, ct_comm *world);
/* From now on SIGTERM, SIGINT and SIGUSR1 ask the run to stop at the next step boundary
 * (saving a checkpoint, CT_EXIT_STOPPED) rather than killing the process; a second SIGINT or
 * SIGTERM still does. The worker calls it before joining the world, so that a signal during
 * start-up is not lost; ct_train_run calls it when nobody has. */
void ct_train_catch_stop_signals(void);
/* ct_train_run without MPI. */
int ct_train_main(const ct_job *job);

/* Command-line entry points (argv as given to main). */
int ct_launch_main(int argc, char **argv);
int ct_cli_main(int argc, char **argv);

#endif
