/*
 * Saving sharded checkpoints of the shard layer's state: what goes into which rank file, and
 * (async) doing the slow part in a background thread. The storage itself (rank files,
 * manifest, step directories) is ckpt_file.c, manifest.c and ckpt_dir.c; docs/checkpoints.md
 * has the format, load.c the reading back.
 *
 * Files use the layout of docs/parallel.md over L "layout ranks": for a unit of numel elements,
 * rank r < L writes elements [r*S, (r+1)*S) (S = ceil(numel / L), clipped) of params, Adam m
 * and Adam v, so no byte is stored twice. L is the world size, except for hsdp, whose shard
 * groups each hold a whole copy: there the first group writes (L = the group size) and the
 * other ranks write empty files. zero1/zero2/fsdp/hsdp own exactly their range; ddp holds
 * everything and writes its slice.
 *
 * A save: rank 0 makes step_N.tmp/, a barrier, every rank writes its file, an all-gather of
 * every file's (size, checksum, status), rank 0 writes manifest.json and renames the directory
 * (checkpoint/ckpt_dir.c). With checkpoint.async, the training thread only copies its pieces
 * into a host buffer (allocated at the first save, reused) and starts a thread that does the
 * rest, all-gathering on a communicator of its own so that its collective never meets the
 * training's; the next save and the end of the run wait for it. A failure anywhere leaves the
 * .tmp directory, which resume ignores and the next save of that step replaces.
 *
 * The state is read through the shard layer: in place where it is host memory (the CPU), and
 * otherwise (a device) copied to the host copy first, by the kernel table, for every save.
 */
#include "checkpoint/sharded.h"
#include "common/fault.h"

#include <errno.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define PATH_BYTES 1088 /* a checkpoint.dir (job.toml strings are < 512) and its step */

/* One frame of this rank's file: elements [lo, hi) of a unit's state of `kind`. */
typedef struct {
    int unit;
    ct_ckpt_kind kind;
    int64_t lo, hi;
    const float *src; /* the shard layer's storage of element lo, when it is host memory */
} save_piece;

/* What each rank tells the others after writing its file. */
typedef struct {
    uint64_t file_bytes, checksum;
    uint64_t failed; /* 0 = written */
} file_report;

struct ct_ckpt_saver {
    ct_shard *shard;
    const ct_gpt *gpt; /* the units' names and sizes */
    ct_comm *world;    /* NULL: one process */
    int rank, world_size, layout_ranks;
    save_piece *pieces;
    int n_pieces;
    float *copy; /* async or staged: the pieces' host copy, in piece order */
    size_t copy_floats;
    bool staged;   /* the state is not host memory: every save goes through the host copy */
    ct_comm *comm; /* async with more than one rank: the background thread's own */
    pthread_t thread;
    bool running;
    /* the save in flight */
    bool background; /* in the thread */
    bool from_copy;  /* written from the host copy */
    int64_t step;
    ct_ckpt_save_info info; /* its strings point into the copies below */
    char dir[PATH_BYTES], tmp_path[PATH_BYTES], strategy[64];
    char *config_text; /* malloc'd */
    double t0, blocking_s;
    ct_status status;
    char error[1024]; /* the thread's error message (messages are per thread) */
};

ct_shard_state ct_ckpt_kind_state(ct_ckpt_kind kind) {
    static const ct_shard_state states[CT_CKPT_KIND_COUNT] = {
        [CT_CKPT_PARAMS] = CT_SHARD_STATE_PARAMS,
        [CT_CKPT_ADAM_M] = CT_SHARD_STATE_ADAM_M,
        [CT_CKPT_ADAM_V] = CT_SHARD_STATE_ADAM_V,
    };
    CT_ASSERT(kind >= 0 && kind < CT_CKPT_KIND_COUNT, "checkpoint kind %d", (int)kind);
    return states[kind];
}

/* The pieces this rank writes, once: where the shard layer keeps them does not move. */
ct_status ct_ckpt_saver_new(ct_ckpt_saver **saver, ct_shard *shard, const ct_gpt *gpt,
                            ct_comm *world) {
    ct_ckpt_saver *s = ct_alloc(CT_MEM_OTHER, sizeof(*s));
    *saver = s;
    if (!s) return ct_error(CT_ERR_NOMEM, "checkpoint saver");
    memset(s, 0, sizeof(*s));
    s->shard = shard;
    s->gpt = gpt;
    s->world = world;
    s->rank = world ? ct_comm_rank(world) : 0;
    s->world_size = world ? ct_comm_size(world) : 1;
    bool hsdp = ct_shard_get_strategy(shard) == CT_SHARD_HSDP;
    s->layout_ranks = hsdp ? ct_shard_group_size(shard) : s->world_size;
    s->n_pieces = gpt->n_units * CT_CKPT_KIND_COUNT;
    s->pieces = ct_alloc(CT_MEM_OTHER, sizeof(save_piece) * (size_t)s->n_pieces);
    if (!s->pieces) return ct_error(CT_ERR_NOMEM, "checkpoint pieces");
    for (int u = 0; u < gpt->n_units; u++) {
        ct_shard_range mine = ct_shard_layout(gpt->units[u].numel, s->layout_ranks, s->rank);
        int64_t a = mine.lo, b = mine.hi;
        for (int k = 0; k < CT_CKPT_KIND_COUNT; k++) {
            ct_shard_state state = ct_ckpt_kind_state((ct_ckpt_kind)k);
            int64_t lo, hi;
            ct_shard_state_range(shard, u, state, &lo, &hi);
            CT_ASSERT(a == b || (lo <= a && b <= hi), "unit %d: [%lld, %lld) outside [%lld, %lld)",
                      u, (long long)a, (long long)b, (long long)lo, (long long)hi);
            const float *host = ct_shard_state_host(shard, u, state);
            if (!host && a < b) s->staged = true;
            s->pieces[u * CT_CKPT_KIND_COUNT + k] =
                (save_piece){.unit = u,
                             .kind = (ct_ckpt_kind)k,
                             .lo = a,
                             .hi = b,
                             .src = host ? host + (a - lo) : NULL};
            s->copy_floats += (size_t)(b - a);
        }
    }
    return CT_OK;
}

/* At the first save that needs it: the host copy, and for async the thread's communicator (a
 * collective: every rank makes its first save at the same step). */
static ct_status prepare_copy(ct_ckpt_saver *s, bool async) {
    if (!s->copy && s->copy_floats > 0) {
        s->copy = ct_alloc(CT_MEM_CHECKPOINT, sizeof(float) * s->copy_floats);
        if (!s->copy)
            return ct_error(CT_ERR_NOMEM, "checkpoint: a host copy of %zu floats", s->copy_floats);
    }
    if (async && !s->comm && s->world && s->world_size > 1)
        CT_CHECK(ct_comm_split(s->world, 0, s->rank, &s->comm));
    return CT_OK;
}

/* The pieces into the host copy, in piece order, through the shard layer's kernel table. */
static ct_status copy_pieces(ct_ckpt_saver *s) {
    float *copy = s->copy;
    for (int i = 0; i < s->n_pieces; i++) {
        const save_piece *p = &s->pieces[i];
        if (p->hi == p->lo) continue; /* a rank past the layout's (hsdp) has no copy at all */
        CT_CHECK(ct_shard_state_to_host(s->shard, p->unit, ct_ckpt_kind_state(p->kind), p->lo,
                                        p->hi, copy));
        copy += p->hi - p->lo;
    }
    return CT_OK;
}

/* This rank's file, from the host copy (async) or the shard layer's storage. */
static ct_status write_rank_file(ct_ckpt_saver *s, uint64_t *file_bytes, uint64_t *checksum) {
    char path[PATH_BYTES + 32];
    ct_ckpt_rank_path(s->tmp_path, s->rank, path, sizeof(path));
    ct_ckpt_writer *w;
    CT_CHECK(ct_ckpt_writer_open(&w, path, s->rank, s->world_size, s->info.zstd_level,
                                 CT_CKPT_SHUFFLE_AUTO));
    size_t at = 0; /* of the piece in the host copy */
    for (int i = 0; i < s->n_pieces; i++) {
        const save_piece *p = &s->pieces[i];
        const float *data = !s->from_copy ? p->src : p->hi > p->lo ? s->copy + at : NULL;
        at += (size_t)(p->hi - p->lo);
        ct_status status = ct_ckpt_writer_add(w, p->unit, p->kind, p->lo, p->hi, data);
        if (status != CT_OK) {
            ct_ckpt_writer_abort(w);
            return status;
        }
    }
    return ct_ckpt_writer_close(w, file_bytes, checksum);
}

/* Rank 0: manifest.json from every rank's report, the rename, then keep the newest. */
static ct_status commit(ct_ckpt_saver *s, const file_report *reports) {
    int n = s->gpt->n_units, W = s->world_size, L = s->layout_ranks;
    ct_ckpt_manifest m = {.format_version = CT_CKPT_FORMAT_VERSION,
                          .step = s->step,
                          .world_size = W,
                          .layout_ranks = L,
                          .n_units = n,
                          .data_step = s->step,
                          .has_data_identity = true,
                          .data_fingerprint = s->info.data_fingerprint,
                          .data_tokens = s->info.data_tokens,
                          .rng_seed = s->info.rng_seed,
                          .has_loss_scale = s->info.has_loss_scale,
                          .loss_scale = s->info.loss_scale,
                          .loss_scale_good_steps = s->info.loss_scale_good_steps,
                          .skipped_steps = s->info.skipped_steps,
                          .config_text = s->config_text};
    snprintf(m.strategy, sizeof(m.strategy), "%.*s", (int)sizeof(m.strategy) - 1, s->strategy);
    ct_ckpt_unit_layout units[n];
    ct_ckpt_rank_file ranks[W];
    for (int u = 0; u < n; u++) {
        ct_shard_range r = ct_shard_layout(s->gpt->units[u].numel, L, 0);
        units[u] = (ct_ckpt_unit_layout){
            .numel = s->gpt->units[u].numel, .shard_len = r.shard_len, .padded = r.padded};
        snprintf(units[u].name, sizeof(units[u].name), "%s", s->gpt->units[u].name);
    }
    for (int r = 0; r < W; r++) {
        ranks[r] = (ct_ckpt_rank_file){.file_bytes = reports[r].file_bytes,
                                       .checksum = reports[r].checksum};
        snprintf(ranks[r].file, sizeof(ranks[r].file), "rank_%05d.ctk", r);
    }
    m.units = units;
    m.ranks = ranks;
    char path[PATH_BYTES + 32];
    snprintf(path, sizeof(path), "%s/manifest.json", s->tmp_path);
    CT_CHECK(ct_ckpt_manifest_write(path, &m));
    /* Checkpoints at or after this step are another timeline's, which this run was allowed
     * to replace (checkpoint.overwrite; the trainer's resume refused to start otherwise). */
    CT_CHECK(ct_ckpt_remove_from(s->dir, s->step));
    CT_CHECK(ct_ckpt_commit(s->dir, s->step));
    return ct_ckpt_prune(s->dir, s->info.keep);
}

/* Everything after the pieces are safe from training: write, report, commit. */
static ct_status write_and_commit(ct_ckpt_saver *s, ct_comm *comm) {
    file_report mine = {0}, reports[s->world_size];
    ct_status status = write_rank_file(s, &mine.file_bytes, &mine.checksum);
    mine.failed = status != CT_OK;
    char own_error[1024];
    snprintf(own_error, sizeof(own_error), "%s", status != CT_OK ? ct_error_message() : "");
    ct_fault_kill_point("kill_in_save", s->rank, s->step);
    /* Every rank reports, failed or not, so that nobody waits for a rank that gave up. */
    if (comm)
        CT_CHECK(ct_comm_allgather(comm, &mine, reports, sizeof(mine), CT_COMM_U8, NULL));
    else
        reports[0] = mine;
    if (status != CT_OK) return ct_error(status, "%s", own_error);
    for (int r = 0; r < s->world_size; r++)
        if (reports[r].failed)
            return ct_error(CT_ERR_IO,
                            "checkpoint of step %lld not saved: rank %d failed to "
                            "write its file (its log has the reason)",
                            (long long)s->step, r);
    return s->rank == 0 ? commit(s, reports) : CT_OK;
}

/* Rank 0's line for a committed checkpoint. */
static void report_saved(const ct_ckpt_saver *s) {
    if (s->rank != 0) return;
    char final[PATH_BYTES];
    ct_ckpt_step_path(s->dir, s->step, false, final, sizeof(final));
    printf("checkpoint: %s (step %lld) | blocking %.3f s | saved in %.3f s%s\n", final,
           (long long)s->step, s->blocking_s, ct_time_s() - s->t0,
           s->background ? " (background)" : "");
    fflush(stdout);
}

static void *save_thread(void *arg) {
    ct_ckpt_saver *s = arg;
    s->status = write_and_commit(s, s->comm);
    if (s->status != CT_OK)
        snprintf(s->error, sizeof(s->error), "%s", ct_error_message());
    else
        report_saved(s);
    return NULL;
}

ct_status ct_ckpt_saver_wait(ct_ckpt_saver *s) {
    if (!s || !s->running) return CT_OK;
    pthread_join(s->thread, NULL);
    s->running = false;
    ct_status status = s->status != CT_OK ? ct_error(s->status, "%s", s->error) : CT_OK;
    /* Rank 0 alone knows whether its commit worked: every rank learns it here. */
    return ct_shard_agree(s->shard, status, "saving the checkpoint");
}

/* Copies `info` into the saver: a background save outlives the caller's strings. */
static ct_status keep_info(ct_ckpt_saver *s, const ct_ckpt_save_info *info) {
    s->info = *info;
    snprintf(s->dir, sizeof(s->dir), "%s", info->dir);
    snprintf(s->strategy, sizeof(s->strategy), "%s", info->strategy ? info->strategy : "");
    free(s->config_text);
    s->config_text = info->config_text ? strdup(info->config_text) : NULL;
    if (info->config_text && !s->config_text) return ct_error(CT_ERR_NOMEM, "checkpoint job text");
    s->info.dir = s->dir;
    s->info.strategy = s->strategy;
    s->info.config_text = s->config_text;
    return CT_OK;
}

ct_status ct_ckpt_save(ct_ckpt_saver *s, int64_t step, const ct_ckpt_save_info *info) {
    CT_CHECK(ct_ckpt_saver_wait(s));
    CT_CHECK(keep_info(s, info));
    bool async = info->async;
    s->background = async;
    s->from_copy = async || s->staged;
    if (s->from_copy) CT_CHECK(prepare_copy(s, async));
    s->t0 = ct_time_s();
    s->step = step;
    ct_comm *world = s->world && s->world_size > 1 ? s->world : NULL;
    /* Every rank learns whether rank 0 could make the directory (this is also the barrier
     * before anyone writes into it), so that all of them fail alike and can save elsewhere. */
    ct_status begun = CT_OK;
    if (s->rank == 0)
        begun = ct_ckpt_begin(s->dir, s->step, s->tmp_path, sizeof(s->tmp_path));
    else
        ct_ckpt_step_path(s->dir, s->step, true, s->tmp_path, sizeof(s->tmp_path));
    CT_CHECK(ct_shard_agree(s->shard, begun, "creating the checkpoint directory"));
    if (s->from_copy)
        CT_CHECK(ct_shard_agree(s->shard, copy_pieces(s), "copying the state to the host"));
    if (!async) {
        /* Returning CT_OK means committed, on every rank (rank 0's commit included). */
        ct_status status =
            ct_shard_agree(s->shard, write_and_commit(s, world), "saving the checkpoint");
        s->blocking_s = ct_time_s() - s->t0;
        if (status == CT_OK) report_saved(s);
        return status;
    }
    s->blocking_s = ct_time_s() - s->t0;
    s->running = true;
    int rc = pthread_create(&s->thread, NULL, save_thread, s);
    if (rc != 0) {
        s->running = false;
        return ct_error(CT_ERR_IO, "checkpoint.async: cannot start a thread: %s", strerror(rc));
    }
    return CT_OK;
}

void ct_ckpt_saver_free(ct_ckpt_saver *s) {
    if (!s) return;
    if (s->running) {
        pthread_join(s->thread, NULL);
        s->running = false;
    }
    if (s->comm) ct_comm_free(s->comm);
    if (s->copy) ct_free(CT_MEM_CHECKPOINT, s->copy, sizeof(float) * s->copy_floats);
    if (s->pieces) ct_free(CT_MEM_OTHER, s->pieces, sizeof(save_piece) * (size_t)s->n_pieces);
    free(s->config_text);
    ct_free(CT_MEM_OTHER, s, sizeof(*s));
}
