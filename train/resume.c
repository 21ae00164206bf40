/*
 * Resuming the trainer: which checkpoint (checkpoint.resume: the newest in checkpoint.dir, a
 * given one, none, or replacing the saved run), whether it is this run's, then the reading
 * itself (checkpoint/load.c, at any world size and strategy: resharding). The trainer's step
 * becomes the manifest's step. The data sampler is a pure function of (step, global batch), so
 * the run must keep the saved global batch (world size x train.batch_size x train.grad_accum,
 * the saved values read from the manifest's job text); then the batch sequence continues
 * exactly.
 *
 * Before anything is read, the checkpoint must be this run's (check_identity): the job text in
 * its manifest is loaded and compared key by key with this job, beside the training data's
 * fingerprint; "replace" removes the saved run instead of resuming it.
 */
#include "checkpoint/sharded.h"
#include "train/train.h"
#include "train/train_internal.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define PATH_BYTES (2 * CT_JOB_STR + 64)

/* The checkpoint to resume from into path; *found false when there is none (auto only). */
static ct_status find_checkpoint(const ct_trainer *tr, bool *found, char *path, size_t bytes) {
    const char *resume = tr->job.checkpoint_resume;
    *found = false;
    if (strcmp(resume, "never") == 0 || strcmp(resume, "replace") == 0) return CT_OK;
    if (strcmp(resume, "auto") != 0) {
        snprintf(path, bytes, "%s", resume);
        *found = true;
        return CT_OK;
    }
    char dir[PATH_BYTES];
    ct_job_checkpoint_dir(&tr->job, dir, sizeof(dir));
    struct stat sb;
    if (stat(dir, &sb) != 0) return CT_OK; /* no checkpoint directory yet: a fresh run */
    int64_t step;
    return ct_ckpt_latest(dir, found, &step, path, bytes);
}

/* ---------------------------------------------------------------- whose checkpoint it is */

/* Keys that make a run what it is: a checkpoint saved with other values is another run's. The
 * global batch (world size x batch_size x grad_accum) is checked beside them, since world size
 * and batch split may change on a reshard. */
static bool identity_key(const char *key, bool explicit_path) {
    if (strncmp(key, "model.", 6) == 0) return !explicit_path || strcmp(key, "model.init_from");
    if (explicit_path) return false; /* a chosen checkpoint may continue on other data */
    static const char *const keys[] = {"data.train", "data.format", "data.shuffle", "train.seed"};
    for (size_t i = 0; i < CT_ARRAY_LEN(keys); i++)
        if (strcmp(key, keys[i]) == 0) return true;
    return false;
}

/* The differences between the saved job and this one, sorted into the two lists. */
typedef struct {
    bool explicit_path;
    char refused[2048], changed[2048];
    int n_refused, n_changed;
    bool structural; /* a [model] key or the global batch: no checkpoint.resume=PATH either */
} job_differences;

static void append_line(char *list, size_t bytes, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void append_line(char *list, size_t bytes, const char *fmt, ...) {
    size_t n = strlen(list);
    if (n + 1 >= bytes) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(list + n, bytes - n, fmt, ap);
    va_end(ap);
}

static void note_difference(void *ctx, const char *key, const char *saved, const char *now) {
    job_differences *d = ctx;
    if (strcmp(key, "checkpoint.resume") == 0) return; /* how this run starts, not what it is */
    if (identity_key(key, d->explicit_path)) {
        append_line(d->refused, sizeof(d->refused), "\n  %s: saved %s, now %s", key, saved, now);
        d->n_refused++;
        d->structural |= strncmp(key, "model.", 6) == 0;
    } else {
        append_line(d->changed, sizeof(d->changed), "\n  %s: %s -> %s", key, saved, now);
        d->n_changed++;
    }
}

/* Refuses a checkpoint of another run before anything is loaded, listing what differs and the
 * ways out; prints (rank 0) what legitimately changed since it was saved. */
static ct_status check_identity(const ct_trainer *tr, const char *path, const ct_ckpt_manifest *m,
                                bool explicit_path) {
    const ct_job *job = &tr->job;
    ct_job saved;
    if (!m->config_text || ct_job_load_text(&saved, m->config_text, path) != CT_OK)
        return ct_error(CT_ERR_INVALID,
                        "%s: the job that saved this checkpoint cannot be read (%s), so whether "
                        "it is this run's is unknown; start fresh (checkpoint.resume=replace) or "
                        "give this run another log.dir",
                        path, ct_error_message());
    job_differences d = {.explicit_path = explicit_path};
    ct_job_diff(&saved, job, note_difference, &d);
    long long saved_batch =
        (long long)m->world_size * saved.train_batch_size * saved.train_grad_accum;
    long long batch = (long long)tr->world_size * job->train_batch_size * job->train_grad_accum;
    if (saved_batch != batch) {
        append_line(d.refused, sizeof(d.refused),
                    "\n  global batch: saved %lld sequences (world size %d x batch_size %d x "
                    "grad_accum %d), now %lld (world size %d x batch_size %d x grad_accum %d); "
                    "world size x train.batch_size x train.grad_accum = %lld continues it",
                    saved_batch, m->world_size, saved.train_batch_size, saved.train_grad_accum,
                    batch, tr->world_size, job->train_batch_size, job->train_grad_accum,
                    saved_batch);
        d.n_refused++;
        d.structural = true;
    }
    if (!explicit_path && m->has_data_identity &&
        (m->data_fingerprint != tr->train_fingerprint || m->data_tokens != tr->train_tokens)) {
        append_line(d.refused, sizeof(d.refused),
                    "\n  the contents of data.train: saved %llu tokens (fingerprint %016llx), "
                    "now %llu tokens (fingerprint %016llx)",
                    (unsigned long long)m->data_tokens, (unsigned long long)m->data_fingerprint,
                    (unsigned long long)tr->train_tokens,
                    (unsigned long long)tr->train_fingerprint);
        d.n_refused++;
    }
    if (d.n_refused > 0) {
        char data_way[PATH_BYTES + 160] = "";
        if (!explicit_path && !d.structural)
            snprintf(data_way, sizeof(data_way),
                     ", or continue that checkpoint on this job's data and seed on purpose "
                     "(checkpoint.resume=%s)",
                     path);
        return ct_error(CT_ERR_INVALID,
                        "%s is not this run's checkpoint: %s%s\nNothing was changed. Ways out: "
                        "give this run its own directory (log.dir=DIR, or checkpoint.dir=DIR), "
                        "or start fresh, replacing the saved run (checkpoint.resume=replace)%s",
                        path,
                        explicit_path ? "this job differs from the one that saved it in"
                                      : "it was saved by a job that differs in",
                        d.refused, data_way);
    }
    if (tr->rank == 0 && d.n_changed > 0) {
        printf("changed since the checkpoint:%s\n", d.changed);
        fflush(stdout);
    }
    if (tr->rank == 0 && !m->has_data_identity && !explicit_path)
        ct_log(CT_LOG_WARN, "checkpoint",
               "%s records no identity of its training data (saved by an older ctrain): the "
               "contents of data.train were not compared",
               path);
    return CT_OK;
}

static ct_status check_manifest(const ct_trainer *tr, const char *path, const ct_ckpt_step *ck) {
    const ct_ckpt_manifest *m = &ck->manifest;
    CT_CHECK(check_identity(tr, path, m, strcmp(tr->job.checkpoint_resume, "auto") != 0));
    CT_CHECK(ct_ckpt_check_units(ck, path, &tr->gpt));
    if (m->step < 0 || m->step > tr->job.train_steps)
        return ct_error(CT_ERR_INVALID, "%s: step %lld is beyond train.steps = %d", path,
                        (long long)m->step, tr->job.train_steps);
    return CT_OK;
}

/* Later checkpoints in checkpoint.dir than the step this run starts from belong to another
 * timeline (another run, or the rest of this one before it was rewound): saving would replace
 * them, so that needs checkpoint.overwrite. */
static ct_status check_later_checkpoints(const ct_trainer *tr, int64_t start_step) {
    char dir[PATH_BYTES];
    ct_job_checkpoint_dir(&tr->job, dir, sizeof(dir));
    struct stat sb;
    if (stat(dir, &sb) != 0) return CT_OK;
    bool found;
    int64_t first;
    /* A fresh run's first save can be step 0's only in a run of 0 steps: any is later. */
    CT_CHECK(ct_ckpt_first_from(dir, start_step == 0 ? 0 : start_step + 1, &found, &first));
    if (!found) return CT_OK;
    char path[PATH_BYTES];
    ct_ckpt_step_path(dir, first, false, path, sizeof(path));
    if (tr->job.checkpoint_overwrite) {
        ct_log(CT_LOG_WARN, "checkpoint",
               "%s and any later checkpoints will be replaced as this run saves "
               "(checkpoint.overwrite = true)",
               path);
        return CT_OK;
    }
    return ct_error(CT_ERR_INVALID,
                    "checkpoint.dir %s holds %s, after step %lld where this run starts: it is "
                    "another run's. Resume it (checkpoint.resume = \"auto\"), use another "
                    "checkpoint.dir, or set checkpoint.overwrite = true to replace it",
                    dir, path, (long long)start_step);
}

/* checkpoint.resume = "replace": the run directory's checkpoints and final weights go before
 * the first step, so that nothing of the replaced run can be resumed or mistaken for this
 * run's. Rank 0 only. */
static ct_status replace_saved_run(const ct_trainer *tr) {
    char dir[PATH_BYTES], run_dir[CT_JOB_STR], final_path[CT_JOB_STR + 16];
    ct_job_checkpoint_dir(&tr->job, dir, sizeof(dir));
    struct stat sb;
    if (stat(dir, &sb) == 0) CT_CHECK(ct_ckpt_remove_from(dir, 0));
    ct_job_run_dir(&tr->job, run_dir, sizeof(run_dir));
    snprintf(final_path, sizeof(final_path), "%s/final.bin", run_dir);
    if (unlink(final_path) != 0 && errno != ENOENT)
        return ct_error(CT_ERR_IO, "checkpoint.resume = \"replace\": cannot remove %s: %s",
                        final_path, strerror(errno));
    printf("checkpoint.resume = \"replace\": starting fresh; removed the checkpoints in %s and "
           "%s\n",
           dir, final_path);
    fflush(stdout);
    return CT_OK;
}

ct_status ct_trainer_resume(ct_trainer *tr) {
    char path[PATH_BYTES];
    bool found;
    tr->resumed = false;
    if (strcmp(tr->job.checkpoint_resume, "replace") == 0)
        return tr->rank == 0 ? replace_saved_run(tr) : CT_OK;
    CT_CHECK(find_checkpoint(tr, &found, path, sizeof(path)));
    if (!found) return tr->rank == 0 ? check_later_checkpoints(tr, 0) : CT_OK;
    double t0 = ct_time_s();
    ct_ckpt_step ck; /* the manifest and every rank file, checked against it */
    ct_status status = ct_ckpt_step_open(&ck, path);
    const ct_ckpt_manifest *m = &ck.manifest;
    if (status == CT_OK) status = check_manifest(tr, path, &ck);
    if (status == CT_OK) status = ct_ckpt_load_shard(&ck, tr->shard, &tr->gpt);
    if (status == CT_OK) {
        tr->step = (int)m->step;
        tr->resumed = true;
        /* fp16's scale continues where it was (an fp32/bf16 checkpoint: fp16 starts afresh). */
        if (tr->scaler.enabled && m->has_loss_scale) {
            tr->scaler.scale = m->loss_scale;
            tr->scaler.good_steps = m->loss_scale_good_steps;
            tr->scaler.skipped_steps = m->skipped_steps;
        }
        snprintf(tr->resumed_from, sizeof(tr->resumed_from), "%s", path);
        if (tr->rank == 0) {
            printf("resumed from %s at step %d (saved at world size %d with %s) | loaded in "
                   "%.3f s\n",
                   path, tr->step, m->world_size, m->strategy, ct_time_s() - t0);
            fflush(stdout);
        }
    }
    ct_ckpt_step_close(&ck);
    if (status == CT_OK && tr->rank == 0) status = check_later_checkpoints(tr, tr->step);
    return status;
}
