/*
 * The trainer's sharded checkpoints: what of the shard layer's state goes into which rank file,
 * when it is saved, and how a run resumes from it. The storage itself (rank files, manifest,
 * step directories) is checkpoint/'s; docs/checkpoints.md has the format.
 *
 * Files always use the world layout: for a unit of numel elements and W ranks, rank r's file
 * holds elements [r*S, (r+1)*S) (S = ceil(numel / W), clipped) of params, Adam m and Adam v.
 * zero1/zero2/fsdp own exactly that range; ddp holds everything and writes its slice, so no
 * byte is stored twice and the manifest's layout check holds for every strategy. hsdp with
 * shard groups smaller than the world owns another range: such a run trains without saving
 * (with a warning) and cannot resume, for now.
 *
 * Resume, at the saved world size and strategy or at others (resharding), opens every rank
 * file and reads, per unit, the range each state covers on this rank in its own layout: the own
 * shard of params (fsdp) or the full params (ddp, zero1, zero2: read from all files rather than
 * loaded as a shard and all-gathered, which costs a little more reading but no collective), and
 * the own range of m and v. ct_ckpt_read_range assembles a range from the saved layout's frames
 * (and checks that they tile each unit), so the saved world size does not matter. The
 * optimizer's step count and the trainer's step become the manifest's step. The data sampler is
 * a pure function of (step, global batch), so the run must keep the saved global batch (world
 * size x train.batch_size x train.grad_accum, the saved values read from the manifest's job
 * text); then the batch sequence continues exactly.
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

static const ct_shard_state states[CT_CKPT_KIND_COUNT] = {
    [CT_CKPT_PARAMS] = CT_SHARD_STATE_PARAMS,
    [CT_CKPT_ADAM_M] = CT_SHARD_STATE_ADAM_M,
    [CT_CKPT_ADAM_V] = CT_SHARD_STATE_ADAM_V,
};

/* checkpoint.dir, or <run dir>/ckpt. */
static void ckpt_dir(const ct_trainer *tr, char *out, size_t out_bytes) {
    char run_dir[CT_JOB_STR];
    if (tr->job.checkpoint_dir[0]) {
        snprintf(out, out_bytes, "%s", tr->job.checkpoint_dir);
        return;
    }
    ct_job_run_dir(&tr->job, run_dir, sizeof(run_dir));
    snprintf(out, out_bytes, "%s/ckpt", run_dir);
}

/* Rank r's elements of a unit in the world layout. */
static void world_range(int64_t numel, int world_size, int rank, int64_t *lo, int64_t *hi) {
    int64_t S = (numel + world_size - 1) / world_size;
    *lo = CT_MIN(rank * S, numel);
    *hi = CT_MIN(*lo + S, numel);
}

static ct_status check_layout(const ct_trainer *tr) {
    ct_shard_strategy strategy = ct_shard_get_strategy(tr->shard);
    if (strategy == CT_SHARD_HSDP && ct_shard_group_size(tr->shard) != tr->world_size)
        return ct_error(CT_ERR_INVALID,
                        "checkpoint: hsdp with shard groups of %d ranks in a world of %d is not "
                        "supported yet (use fsdp, or parallel.shard_group_size = %d)",
                        ct_shard_group_size(tr->shard), tr->world_size, tr->world_size);
    return CT_OK;
}

/* This rank's file: its world-layout slice of every unit's params, m and v. */
static ct_status write_rank_file(ct_trainer *tr, const char *path, uint64_t *file_bytes,
                                 uint64_t *checksum) {
    ct_ckpt_writer *w;
    CT_CHECK(ct_ckpt_writer_open(&w, path, tr->rank, tr->world_size, tr->job.checkpoint_zstd_level,
                                 CT_CKPT_SHUFFLE_AUTO));
    for (int u = 0; u < tr->gpt.n_units; u++) {
        int64_t a, b;
        world_range(tr->gpt.units[u].numel, tr->world_size, tr->rank, &a, &b);
        for (int k = 0; k < CT_CKPT_KIND_COUNT; k++) {
            int64_t lo, hi;
            float *data = ct_shard_unit_state(tr->shard, u, states[k], &lo, &hi);
            CT_ASSERT(a == b || (lo <= a && b <= hi), "unit %d: [%lld, %lld) outside [%lld, %lld)",
                      u, (long long)a, (long long)b, (long long)lo, (long long)hi);
            ct_status status = ct_ckpt_writer_add(w, u, (ct_ckpt_kind)k, a, b, data + (a - lo));
            if (status != CT_OK) {
                ct_ckpt_writer_abort(w);
                return status;
            }
        }
    }
    return ct_ckpt_writer_close(w, file_bytes, checksum);
}

/* The job as job.toml text, in a malloc'd string. */
static ct_status job_text(const ct_job *job, char **text) {
    size_t bytes;
    FILE *f = open_memstream(text, &bytes);
    if (!f) return ct_error(CT_ERR_NOMEM, "open_memstream: %s", strerror(errno));
    ct_job_print(job, f);
    fclose(f);
    return CT_OK;
}

/* Rank 0: manifest.json from every rank's (file bytes, checksum), then the rename. */
static ct_status finish_save(ct_trainer *tr, const char *dir, const char *tmp_path,
                             const uint64_t *sums) {
    int n = tr->gpt.n_units, W = tr->world_size;
    ct_ckpt_manifest m = {.format_version = CT_CKPT_FORMAT_VERSION,
                          .step = tr->step,
                          .world_size = W,
                          .n_units = n,
                          .data_step = tr->step,
                          .rng_seed = (uint64_t)tr->job.train_seed};
    snprintf(m.strategy, sizeof(m.strategy), "%.*s", (int)sizeof(m.strategy) - 1,
             tr->job.parallel_strategy);
    ct_ckpt_unit_layout units[n];
    ct_ckpt_rank_file ranks[W];
    for (int u = 0; u < n; u++) {
        int64_t numel = tr->gpt.units[u].numel, S = (numel + W - 1) / W;
        units[u] = (ct_ckpt_unit_layout){.numel = numel, .shard_len = S, .padded = S * W};
        snprintf(units[u].name, sizeof(units[u].name), "%s", tr->gpt.units[u].name);
    }
    for (int r = 0; r < W; r++) {
        ranks[r] = (ct_ckpt_rank_file){.file_bytes = sums[2 * r], .checksum = sums[2 * r + 1]};
        snprintf(ranks[r].file, sizeof(ranks[r].file), "rank_%05d.ctk", r);
    }
    m.units = units;
    m.ranks = ranks;
    CT_CHECK(job_text(&tr->job, &m.config_text));
    char path[PATH_BYTES + 32];
    snprintf(path, sizeof(path), "%s/manifest.json", tmp_path);
    ct_status status = ct_ckpt_manifest_write(path, &m);
    free(m.config_text);
    CT_CHECK(status);
    /* Checkpoints at or after this step are another timeline's (a fresh run, or one resumed
     * from an older checkpoint): this run replaces them. A run that resumed from the newest
     * never meets one. */
    CT_CHECK(ct_ckpt_remove_from(dir, tr->step));
    CT_CHECK(ct_ckpt_commit(dir, tr->step));
    return ct_ckpt_prune(dir, tr->job.checkpoint_keep);
}

ct_status ct_trainer_save_checkpoint(ct_trainer *tr) {
    if (check_layout(tr) != CT_OK) {
        /* Training goes on without checkpoints rather than failing at its first save. */
        if (tr->rank == 0 && !tr->checkpoint_warned)
            ct_log(CT_LOG_WARN, "checkpoint", "not saving checkpoints: %s", ct_error_message());
        tr->checkpoint_warned = true;
        ct_error_clear();
        return CT_OK;
    }
    double t0 = ct_time_s();
    char dir[PATH_BYTES], tmp_path[PATH_BYTES], path[PATH_BYTES + 32];
    ckpt_dir(tr, dir, sizeof(dir));
    ct_comm *world = tr->world && tr->world_size > 1 ? tr->world : NULL;
    /* A failing rank returns its error; the worker then aborts the job, so no rank hangs. */
    if (tr->rank == 0)
        CT_CHECK(ct_ckpt_begin(dir, tr->step, tmp_path, sizeof(tmp_path)));
    else
        ct_ckpt_step_path(dir, tr->step, true, tmp_path, sizeof(tmp_path));
    if (world) CT_CHECK(ct_comm_barrier(world));
    ct_ckpt_rank_path(tmp_path, tr->rank, path, sizeof(path));
    uint64_t mine[2], sums[2 * tr->world_size];
    CT_CHECK(write_rank_file(tr, path, &mine[0], &mine[1]));
    if (world)
        CT_CHECK(ct_comm_allgather(world, mine, sums, sizeof(mine), CT_COMM_U8, NULL));
    else
        memcpy(sums, mine, sizeof(mine));
    if (tr->rank == 0) CT_CHECK(finish_save(tr, dir, tmp_path, sums));
    if (world) CT_CHECK(ct_comm_barrier(world));
    if (tr->rank == 0) {
        char final[PATH_BYTES];
        ct_ckpt_step_path(dir, tr->step, false, final, sizeof(final));
        printf("checkpoint: %s (step %d) | blocking %.3f s\n", final, tr->step, ct_time_s() - t0);
        fflush(stdout);
    }
    return CT_OK;
}

/* ---------------------------------------------------------------- resume */

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
    ckpt_dir(tr, dir, sizeof(dir));
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
            float *data = ct_shard_unit_state(tr->shard, u, states[k], &lo, &hi);
            if (lo < hi)
                CT_CHECK(ct_ckpt_read_range(readers, n_readers, u, tr->gpt.units[u].name,
                                            (ct_ckpt_kind)k, lo, hi, data));
        }
    return CT_OK;
}

static ct_status load_checkpoint(ct_trainer *tr, const char *path, ct_ckpt_manifest *m) {
    char file[PATH_BYTES + 32];
    snprintf(file, sizeof(file), "%s/manifest.json", path);
    CT_CHECK(ct_ckpt_manifest_read(file, m));
    CT_CHECK(check_manifest(tr, path, m));
    int W = m->world_size;
    ct_ckpt_reader *readers[W];
    memset(readers, 0, sizeof(readers));
    ct_status status = CT_OK;
    for (int r = 0; status == CT_OK && r < W; r++) {
        ct_ckpt_rank_path(path, r, file, sizeof(file));
        status = ct_ckpt_reader_open(&readers[r], file);
        if (status == CT_OK) status = ct_ckpt_check_rank_file(m, r, readers[r]);
    }
    if (status == CT_OK) status = read_state(tr, readers, W);
    for (int r = 0; r < W; r++)
        if (readers[r]) ct_ckpt_reader_close(readers[r]);
    return status;
}

ct_status ct_trainer_resume(ct_trainer *tr) {
    char path[PATH_BYTES];
    bool found;
    CT_CHECK(find_checkpoint(tr, &found, path, sizeof(path)));
    if (!found) return CT_OK;
    CT_CHECK(check_layout(tr));
    ct_ckpt_manifest m;
    memset(&m, 0, sizeof(m));
    ct_status status = load_checkpoint(tr, path, &m);
    if (status == CT_OK) {
        ct_shard_set_step_count(tr->shard, m.step);
        tr->step = (int)m.step;
        if (tr->rank == 0) {
            printf("resumed from %s at step %d\n", path, tr->step);
            fflush(stdout);
        }
    }
    ct_ckpt_manifest_free(&m);
    return status;
}
