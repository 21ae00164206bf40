/*
 * metrics.jsonl (docs/metrics.md): one JSON object per logged step, written by rank 0.
 *
 * The file always reads as one run with each step once. A fresh run starts it empty. A resumed
 * run keeps the rows of the steps up to the checkpoint it resumed from and drops the later ones
 * (a crashed or stopped run logged them, and they are trained again), then appends. The kept
 * rows go through a temporary file renamed over the old one, so a crash meanwhile leaves either
 * file whole. A failed write (a full disk) is reported once with the file and the error; the
 * run goes on without metrics, and its exit status says that they were lost.
 */
#include "train/train_internal.h"

#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

size_t ct_train_peak_rss_bytes(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (size_t)usage.ru_maxrss * 1024;
}

/* The step of a row written by ct_train_metrics_write ({"step": N, ...}), or -1. */
static long row_step(const char *line) {
    const char *prefix = "{\"step\": ";
    if (strncmp(line, prefix, strlen(prefix)) != 0) return -1;
    char *end;
    long step = strtol(line + strlen(prefix), &end, 10);
    return end != line + strlen(prefix) && *end == ',' ? step : -1;
}

/* Rewrites `path` with only its rows of steps <= keep_step; a missing file is an empty one. */
static ct_status keep_rows_through(const char *path, int keep_step) {
    FILE *in = fopen(path, "r");
    if (!in)
        return errno == ENOENT ? CT_OK
                               : ct_error(CT_ERR_IO, "log.metrics %s: %s", path, strerror(errno));
    char tmp[CT_METRICS_PATH_BYTES + 8];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *out = fopen(tmp, "w");
    if (!out) {
        fclose(in);
        return ct_error(CT_ERR_IO, "log.metrics: cannot create %s: %s", tmp, strerror(errno));
    }
    char *line = NULL;
    size_t cap = 0;
    bool ok = true;
    while (getline(&line, &cap, in) > 0) {
        long step = row_step(line);
        if (step >= 1 && step <= keep_step) ok = ok && fputs(line, out) >= 0;
    }
    free(line);
    fclose(in);
    ok = fflush(out) == 0 && ok;
    int err = errno;
    ok = fclose(out) == 0 && ok;
    if (ok && rename(tmp, path) == 0) return CT_OK;
    err = ok ? errno : err;
    unlink(tmp);
    return ct_error(CT_ERR_IO, "log.metrics %s: cannot rewrite it: %s", path, strerror(err));
}

ct_status ct_train_metrics_open(ct_train_metrics *m, const char *path, int keep_step) {
    memset(m, 0, sizeof(*m));
    if (strlen(path) >= sizeof(m->path))
        return ct_error(CT_ERR_INVALID, "log.metrics path longer than %zu bytes: %s",
                        sizeof(m->path) - 1, path);
    snprintf(m->path, sizeof(m->path), "%s", path);
    if (keep_step > 0) CT_CHECK(keep_rows_through(path, keep_step));
    m->file = fopen(path, keep_step > 0 ? "a" : "w");
    if (!m->file)
        return ct_error(CT_ERR_IO, "log.metrics: cannot write %s: %s", path, strerror(errno));
    return CT_OK;
}

/* Records the first failed write; later rows are not attempted. */
static void write_failed(ct_train_metrics *m, int err) {
    ct_log(CT_LOG_ERROR, "train",
           "log.metrics: writing %s failed: %s; training goes on without metrics (the run "
           "will exit with status %d)",
           m->path, strerror(err), CT_EXIT_CONFIG);
    m->failed = true;
}

/* x as JSON: %.9g, or null when it is not finite (JSON has no NaN or infinity: an fp16 step
 * skipped for overflow has an infinite or NaN gradient norm). */
static const char *json_number(char buf[32], double x) {
    if (!isfinite(x)) return "null";
    snprintf(buf, 32, "%.9g", x);
    return buf;
}

void ct_train_metrics_write(ct_train_metrics *m, const ct_trainer *tr, const ct_step_stats *s,
                            double val_loss) {
    FILE *f = m->file;
    if (!f || m->failed) return;
    ct_shard_memory memory;
    ct_shard_get_memory(tr->shard, &memory);
    ct_mem_stats mem;
    ct_mem_get_stats(&mem);
    char loss[32], norm[32];
    fprintf(f,
            "{\"step\": %d, \"loss\": %s, \"lr\": %.9g, \"grad_norm\": %s, \"ms\": %.4f, "
            "\"tokens_per_s\": %.3f, \"mfu\": %.6f, \"mem_peak_bytes\": %zu, "
            "\"batch_hash\": \"%016llx\"",
            s->step + 1, json_number(loss, s->loss), s->lr, json_number(norm, s->grad_norm), s->ms,
            s->tokens_per_s, s->mfu, ct_train_peak_rss_bytes(), (unsigned long long)s->batch_hash);
    fprintf(f,
            ", \"comm_bytes\": {\"allreduce\": %llu, \"reduce_scatter\": %llu, "
            "\"allgather\": %llu, \"broadcast\": %llu}, \"model_state_bytes\": %zu, "
            "\"gathered_bytes\": %zu, \"comm_buffer_bytes\": %zu",
            (unsigned long long)s->comm_bytes[CT_COLL_ALLREDUCE],
            (unsigned long long)s->comm_bytes[CT_COLL_REDUCE_SCATTER],
            (unsigned long long)s->comm_bytes[CT_COLL_ALLGATHER],
            (unsigned long long)s->comm_bytes[CT_COLL_BROADCAST], memory.model_state_bytes,
            memory.gathered_bytes, memory.comm_buffer_bytes);
    fprintf(f, ", \"checkpoint_buffer_bytes\": %zu", mem.current_bytes[CT_MEM_CHECKPOINT]);
    char formula[64];
    double formula_bytes = ct_shard_state_formula_bytes(tr->shard, formula, sizeof(formula));
    fprintf(f,
            ", \"memory\": {\"params_bytes\": %zu, \"params_dtype\": \"%s\", "
            "\"masters_bytes\": %zu, \"grads_bytes\": %zu, \"optimizer_bytes\": %zu, "
            "\"activations_peak_bytes\": %zu, \"gathered_peak_bytes\": %zu, "
            "\"model_state_formula\": \"%s\", \"model_state_formula_bytes\": %.0f}",
            memory.params_bytes, ct_dtype_name(memory.compute), memory.masters_bytes,
            memory.grads_bytes, memory.optimizer_bytes, memory.activations_peak_bytes,
            memory.gathered_peak_bytes, formula, formula_bytes);
    if (tr->scaler.enabled)
        fprintf(f, ", \"loss_scale\": %.9g, \"skipped\": %s", s->loss_scale,
                s->skipped ? "true" : "false");
    if (!isnan(val_loss)) fprintf(f, ", \"val_loss\": %.9g", val_loss);
    errno = 0;
    /* stdio keeps the first error of the stream: one check after the row catches any of it. */
    if (fputs("}\n", f) < 0 || fflush(f) != 0 || ferror(f)) write_failed(m, errno ? errno : EIO);
}

ct_status ct_train_metrics_close(ct_train_metrics *m) {
    if (!m->file) return CT_OK;
    int rc = fclose(m->file);
    m->file = NULL;
    if (rc != 0 && !m->failed) write_failed(m, errno);
    return m->failed
               ? ct_error(CT_ERR_IO, "log.metrics: %s is incomplete (a write failed)", m->path)
               : CT_OK;
}
