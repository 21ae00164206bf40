/*
 * job: job.toml, read into one struct (ct_job) and checked. One key table (job.c) drives the
 * parser, its error messages, the printer and docs/config.md. The trainer, its resume check
 * (which parses a checkpoint's saved job back) and the command-line tools all use it, so it sits
 * below train/ (docs/architecture.md, decision 21).
 */
#ifndef CT_JOB_H
#define CT_JOB_H

#include "common/common.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>

#define CT_JOB_STR 512

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

    /* [precision] */
    char precision_compute[CT_JOB_STR]; /* "fp32" | "bf16" | "fp16" */
    char precision_reduce[CT_JOB_STR];  /* "fp32" | "bf16" */

    /* [memory] */
    char memory_activation_checkpointing[CT_JOB_STR]; /* "none" | "block" | "selective" */

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
    char device_type[CT_JOB_STR];         /* "auto" | "cpu" | "cuda" */
    int device_threads_per_rank;          /* 0 = all cores / local ranks */
    char device_blas[CT_JOB_STR];         /* "auto" | "onednn" | "openblas" */
    char device_half_kernels[CT_JOB_STR]; /* "auto" | "native" | "portable" */

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

#endif
