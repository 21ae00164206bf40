/*
 * Resuming the trainer from a sharded checkpoint (launcher/ckpt_save.c writes them;
 * docs/checkpoints.md has the format), at the saved world size and strategy or at others
 * (resharding).
 *
 * Every rank opens every rank file and reads, per unit, the range each state covers on this
 * rank in its own layout: the own shard of params (fsdp, hsdp) or the full params (ddp, zero1,
 * zero2: read from all files rather than loaded as a shard and all-gathered, which costs a
 * little more reading but no collective), and the own range of m and v. ct_ckpt_read_range
 * assembles a range from the saved layout's frames (and checks that they tile each unit), so
 * the saved world size and layout do not matter. The optimizer's step count and the trainer's
 * step become the manifest's step. The data sampler is a pure function of (step, global
 * batch), so the run must keep the saved global batch (world size x train.batch_size x
 * train.grad_accum, the saved values read from the manifest's job text); then the batch
 * sequence continues exactly.
 */
#include "checkpoint/checkpoint.h"
#include "launcher/launcher.h"
#include "launcher/trainer_internal.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define PATH_BYTES (2 * CT_JOB_STR + 64)

/* The checkpoint to resume from into path; *found false when there is none (auto only). */
static ct_status find_checkpoint(const ct_trainer *tr, bool *found, char *path, size_t bytes) {
    const char *resume = tr->job.checkpoint_resume;
    *found = false;
    if (strcmp(resume, "never") == 0) return CT_OK;
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

/* An integer key of the saved job text (ct_job_print's form: "[section]" lines, then
 * "key = value" lines); false when it is missing or not an integer. */
static bool saved_int(const char *text, const char *section, const char *key, long *value) {
    size_t key_len = strlen(key), section_len = strlen(section);
    bool in_section = false;
    for (const char *line = text, *next; line && *line; line = next) {
        next = strchr(line, '\n');
        if (next) next++;
        if (line[0] == '[') {
            in_section =
                strncmp(line + 1, section, section_len) == 0 && line[1 + section_len] == ']';
            continue;
        }
        if (!in_section || strncmp(line, key, key_len) != 0) continue;
        const char *p = line + key_len;
        while (*p == ' ' || *p == '\t')
            p++;
        if (*p++ != '=') continue;
        char *end;
        errno = 0;
        long v = strtol(p, &end, 10);
        if (errno != 0 || end == p || (*end != '\n' && *end != '\0' && *end != ' ' && *end != '\r'))
            return false;
        *value = v;
        return true;
    }
    return false;
}

/* Resharding keeps the data position only if a step is the same number of sequences: the
 * sampler maps (step, global batch) to sequences, whatever the world size and strategy. */
static ct_status check_global_batch(const ct_trainer *tr, const char *path,
                                    const ct_ckpt_manifest *m) {
    long batch, accum;
    if (!m->config_text || !saved_int(m->config_text, "train", "batch_size", &batch) ||
        !saved_int(m->config_text, "train", "grad_accum", &accum) || batch < 1 || accum < 1) {
        /* The global batch is unknown: only the saved layout itself is allowed (as before). */
        if (m->world_size == tr->world_size && strcmp(m->strategy, tr->job.parallel_strategy) == 0)
            return CT_OK;
        return ct_error(CT_ERR_INVALID,
                        "%s: the saved job has no train.batch_size or train.grad_accum, so its "
                        "global batch is unknown: resume at its world size (%d) and strategy (%s)",
                        path, m->world_size, m->strategy);
    }
    long long saved = (long long)m->world_size * batch * accum;
    long long now = (long long)tr->world_size * tr->job.train_batch_size * tr->job.train_grad_accum;
    if (saved != now)
        return ct_error(CT_ERR_INVALID,
                        "%s: saved with a global batch of %lld sequences (world size %d x "
                        "batch_size %ld x grad_accum %ld); this run's is %lld (world size %d x "
                        "batch_size %d x grad_accum %d): set train.batch_size and train.grad_accum "
                        "so that world size x batch_size x grad_accum = %lld",
                        path, saved, m->world_size, batch, accum, now, tr->world_size,
                        tr->job.train_batch_size, tr->job.train_grad_accum, saved);
    return CT_OK;
}

static ct_status check_manifest(const ct_trainer *tr, const char *path, const ct_ckpt_manifest *m) {
    CT_CHECK(check_global_batch(tr, path, m));
    if (m->n_units != tr->gpt.n_units)
        return ct_error(CT_ERR_INVALID, "%s: %d units, this model has %d", path, m->n_units,
                        tr->gpt.n_units);
    for (int u = 0; u < m->n_units; u++)
        if (m->units[u].numel != tr->gpt.units[u].numel ||
            strcmp(m->units[u].name, tr->gpt.units[u].name) != 0)
            return ct_error(CT_ERR_INVALID,
                            "%s: unit %d is %s of %lld elements, this model's is %s of %lld", path,
                            u, m->units[u].name, (long long)m->units[u].numel,
                            tr->gpt.units[u].name, (long long)tr->gpt.units[u].numel);
    if (m->step < 0 || m->step > tr->job.train_steps)
        return ct_error(CT_ERR_INVALID, "%s: step %lld is beyond train.steps = %d", path,
                        (long long)m->step, tr->job.train_steps);
    return CT_OK;
}

/* Reads what this rank holds of every unit from the checkpoint's rank files. */
static ct_status read_state(ct_trainer *tr, ct_ckpt_reader *const *readers, int n_readers) {
    for (int u = 0; u < tr->gpt.n_units; u++)
        for (int k = 0; k < CT_CKPT_KIND_COUNT; k++) {
            int64_t lo, hi;
            float *data = ct_shard_unit_state(tr->shard, u, ct_trainer_ckpt_state(k), &lo, &hi);
            if (lo < hi)
                CT_CHECK(ct_ckpt_read_range(readers, n_readers, u, tr->gpt.units[u].name,
                                            (ct_ckpt_kind)k, lo, hi, data));
        }
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

ct_status ct_trainer_resume(ct_trainer *tr) {
    char path[PATH_BYTES];
    bool found;
    CT_CHECK(find_checkpoint(tr, &found, path, sizeof(path)));
    if (!found) return tr->rank == 0 ? check_later_checkpoints(tr, 0) : CT_OK;
    double t0 = ct_time_s();
    ct_ckpt_step ck; /* the manifest and every rank file, checked against it */
    ct_status status = ct_ckpt_step_open(&ck, path);
    const ct_ckpt_manifest *m = &ck.manifest;
    if (status == CT_OK) status = check_manifest(tr, path, m);
    if (status == CT_OK) status = read_state(tr, ck.readers, m->world_size);
    if (status == CT_OK) {
        ct_shard_set_step_count(tr->shard, m->step);
        tr->step = (int)m->step;
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
