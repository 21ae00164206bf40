/*
 * `ctrain bench ckpt`: checkpoint save and load throughput of one rank file. It builds a
 * training state (params, Adam m, Adam v), then for each zstd level and shuffle mode writes it
 * as one rank file through the writer the trainer uses (ct_ckpt_writer_*, fsync at close) and
 * reads it back through ct_ckpt_read_range (what resume does), checking the bytes (memcmp).
 * Throughput is raw fp32 bytes / wall time; the ratio is file bytes / raw bytes; each figure
 * is the median (min-max) of R runs.
 *
 * The state: with --model gpt2-124m (the default) BENCH.md's gpt2-124m built with the
 * project's initialisation and trained for a few real AdamW steps (batch 1, seq 256, random
 * tokens), so m and v are those of a real early run; the time of those steps is printed too
 * (a save is worth so many training steps). With --params N a synthetic trained-like state
 * (the formula of tests/test_ckpt.c) in units of one gpt2-124m block. Before every load the
 * file's pages are evicted (posix_fadvise DONTNEED after the writer's fsync, and
 * /proc/sys/vm/drop_caches when writable): the header says which worked.
 */
#define _GNU_SOURCE /* posix_fadvise */
#include "checkpoint/checkpoint.h"
#include "kernels/kernels.h"
#include "launcher/launcher_internal.h"

#include <fcntl.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define MAX_CONFIGS 16
#define MAX_RUNS 64
#define SYNTH_UNIT_NUMEL 7087872 /* one gpt2-124m block */

static const char *bench_ckpt_usage =
    "usage: ctrain bench ckpt [--model gpt2-124m | --params N] [--levels 1,3,9]\n"
    "                         [--shuffle off,on,auto] [--dir D] [--runs R] [--steps K]\n"
    "                         [--threads T]\n"
    "Writes the state (params, Adam m, Adam v) as one rank file per zstd level and shuffle\n"
    "mode and reads it back; prints save and load GB/s (raw fp32 bytes / wall time) and the\n"
    "compression ratio, medians of R runs (default 3). --model gpt2-124m (the default) trains\n"
    "K real AdamW steps (default 3) from the GPT-2 init first; --params N uses a synthetic\n"
    "trained-like state of N params. D (default runs/bench/ckpt) gets one file, removed after.\n"
    "T: the rank's threads (default: the cores); the codec uses 2 when T >= 2.\n";

typedef struct {
    bool model; /* gpt2-124m; else synthetic */
    long long params;
    int levels[MAX_CONFIGS], n_levels;
    ct_ckpt_shuffle shuffles[3];
    int n_shuffles;
    char dir[512];
    int runs, steps, threads;
} bench_options;

typedef struct {
    int n_units;
    int64_t *numel;
    char (*names)[CT_NAME_LEN];
    float *(*data)[CT_CKPT_KIND_COUNT]; /* [unit][kind], numel floats each */
    float *(*back)[CT_CKPT_KIND_COUNT];
    size_t raw_bytes; /* all units and kinds */
    double step_s;    /* median training step (model source), else 0 */
    ct_gpt gpt;
    ct_adamw opt;
} bench_state;

static const char *shuffle_name(ct_ckpt_shuffle s) {
    return s == CT_CKPT_SHUFFLE_ON ? "on" : s == CT_CKPT_SHUFFLE_OFF ? "off" : "auto";
}

static bool parse_levels(const char *text, bench_options *o) {
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", text);
    o->n_levels = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok; tok = strtok_r(NULL, ",", &save))
        if (o->n_levels == MAX_CONFIGS || !ct_cli_parse_int(tok, 1, 19, &o->levels[o->n_levels++]))
            return false;
    return o->n_levels > 0;
}

static bool parse_shuffles(const char *text, bench_options *o) {
    char buf[256];
    snprintf(buf, sizeof(buf), "%s", text);
    o->n_shuffles = 0;
    for (char *save = NULL, *tok = strtok_r(buf, ",", &save); tok;
         tok = strtok_r(NULL, ",", &save)) {
        if (o->n_shuffles == 3) return false;
        ct_ckpt_shuffle *s = &o->shuffles[o->n_shuffles++];
        if (strcmp(tok, "off") == 0)
            *s = CT_CKPT_SHUFFLE_OFF;
        else if (strcmp(tok, "on") == 0)
            *s = CT_CKPT_SHUFFLE_ON;
        else if (strcmp(tok, "auto") == 0)
            *s = CT_CKPT_SHUFFLE_AUTO;
        else
            return false;
    }
    return o->n_shuffles > 0;
}

static int parse(int argc, char **argv, bench_options *o) {
    *o = (bench_options){.model = true, .runs = 3, .steps = 3};
    parse_levels("1,3,9", o);
    parse_shuffles("off,on,auto", o);
    snprintf(o->dir, sizeof(o->dir), "runs/bench/ckpt");
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        unsigned long long n = 0;
        if (ct_cli_is_help(a)) {
            return ct_cli_help(bench_ckpt_usage);
        } else if (strcmp(a, "--model") == 0 && ok) {
            ok = strcmp(v, "gpt2-124m") == 0;
            o->model = true;
        } else if (strcmp(a, "--params") == 0 && ok) {
            ok = ct_cli_parse_u64(v, &n) && n >= 1 && n <= (1ULL << 32);
            o->model = false, o->params = (long long)n;
        } else if (strcmp(a, "--levels") == 0 && ok)
            ok = parse_levels(v, o);
        else if (strcmp(a, "--shuffle") == 0 && ok)
            ok = parse_shuffles(v, o);
        else if (strcmp(a, "--dir") == 0 && ok)
            ok = strlen(v) < sizeof(o->dir) - 32 && snprintf(o->dir, sizeof(o->dir), "%s", v) > 0;
        else if (strcmp(a, "--runs") == 0 && ok)
            ok = ct_cli_parse_int(v, 1, MAX_RUNS, &o->runs);
        else if (strcmp(a, "--steps") == 0 && ok)
            ok = ct_cli_parse_int(v, 0, 1000, &o->steps);
        else if (strcmp(a, "--threads") == 0 && ok)
            ok = ct_cli_parse_int(v, 1, 1024, &o->threads);
        else
            return ct_cli_bad_flag("bench ckpt", a, bench_ckpt_usage);
        if (!ok) return ct_cli_usage_error("bench ckpt", bench_ckpt_usage, "bad value for %s", a);
        i++;
    }
    return -1;
}

/* mkdir -p: every missing directory of `dir`; true when it exists and is writable. */
static bool make_dirs(const char *dir) {
    char path[512];
    snprintf(path, sizeof(path), "%s", dir);
    for (char *p = path + 1; *p; p++) {
        if (*p != '/') continue;
        *p = '\0';
        mkdir(path, 0755);
        *p = '/';
    }
    mkdir(path, 0755);
    return access(path, W_OK) == 0;
}

static int cmp_double(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

static double median(double *x, int n) {
    qsort(x, (size_t)n, sizeof(double), cmp_double);
    return n % 2 ? x[n / 2] : 0.5 * (x[n / 2 - 1] + x[n / 2]);
}

/* Trains gpt2-124m for `steps` AdamW steps (batch 1, seq 256, random tokens, constant lr
 * 6e-4, BENCH.md's betas and weight decay) and points the state at its params, m and v. */
static ct_status model_state(bench_state *s, int steps) {
    enum { B = 1, T = 256 };
    const ct_gpt_config config = {
        .n_layer = 12, .n_head = 12, .n_embd = 768, .vocab_size = 50257, .seq_len = 1024};
    CT_CHECK(ct_gpt_init(&s->gpt, &config));
    CT_CHECK(ct_gpt_alloc_full(&s->gpt));
    ct_gpt_init_weights(&s->gpt, 1337);
    const ct_kernels *kern;
    CT_CHECK(ct_kernels_for_device(
        &(ct_kernels_options){"cpu", ct_kern_cpu_threads(), "auto", "auto"}, &kern));
    CT_CHECK(ct_adamw_init(&s->opt, &s->gpt, NULL, NULL, kern));
    ct_tape tape;
    ct_tape_init(&tape, kern);
    int32_t tokens[B * T + 1];
    void **params = malloc(sizeof(void *) * (size_t)s->gpt.n_units);
    const void **grads = malloc(sizeof(void *) * (size_t)s->gpt.n_units);
    double times[1000];
    ct_status st = params && grads ? CT_OK : ct_error(CT_ERR_NOMEM, "unit pointers");
    for (int u = 0; !st && u < s->gpt.n_units; u++)
        params[u] = s->gpt.units[u].data, grads[u] = s->gpt.units[u].grad;
    const ct_adamw_hparams hp = {
        .lr = 6e-4f, .beta1 = 0.9f, .beta2 = 0.95f, .eps = 1e-8f, .weight_decay = 0.1f};
    for (int step = 0; !st && step < steps; step++) {
        double t0 = ct_time_s();
        for (int i = 0; i < B * T + 1; i++)
            tokens[i] =
                (int32_t)(ct_rng_u64(ct_rng_key(1337, 0xbe7c, (uint64_t)step, 0), (uint64_t)i) %
                          (uint64_t)config.vocab_size);
        ct_gpt_zero_grad(&s->gpt, kern);
        st = ct_tape_reset(&tape);
        tape.recording = true;
        ct_tensor *loss =
            st ? NULL : ct_gpt_forward_loss(&s->gpt, &tape, tokens, tokens + 1, B, T, 1.0f);
        if (!st) st = loss ? ct_tape_backward(&tape) : ct_tape_status(&tape);
        if (!st) st = ct_adamw_step(&s->opt, &s->gpt, params, grads, &hp, 1.0f, kern);
        times[step] = ct_time_s() - t0;
        float loss_value = 0.0f;
        if (!st) st = ct_tape_read_scalar(&tape, loss, &loss_value);
        if (!st)
            fprintf(stderr, "ctrain bench ckpt: step %d loss %.4f %.2f s\n", step, loss_value,
                    times[step]);
    }
    if (!st && steps > 0) s->step_s = median(times, steps);
    ct_tape_free(&tape);
    free(params), free(grads);
    CT_CHECK(st);
    s->n_units = s->gpt.n_units;
    s->numel = calloc((size_t)s->n_units, sizeof(*s->numel));
    s->names = calloc((size_t)s->n_units, sizeof(*s->names));
    s->data = calloc((size_t)s->n_units, sizeof(*s->data));
    if (!s->numel || !s->names || !s->data) return ct_error(CT_ERR_NOMEM, "bench state");
    for (int u = 0; u < s->n_units; u++) {
        s->numel[u] = s->gpt.units[u].numel;
        snprintf(s->names[u], CT_NAME_LEN, "%s", s->gpt.units[u].name);
        s->data[u][CT_CKPT_PARAMS] = s->gpt.units[u].data;
        s->data[u][CT_CKPT_ADAM_M] = s->opt.m[u];
        s->data[u][CT_CKPT_ADAM_V] = s->opt.v[u];
    }
    return CT_OK;
}

/* Trained-like synthetic values, as in tests/test_ckpt.c: weights 0.02 x (N(0,1) + a smooth
 * component), m = 1e-3 x weights, v = 1e-6 x weights^2. */
static ct_status synthetic_state(bench_state *s, long long params) {
    s->n_units = (int)((params + SYNTH_UNIT_NUMEL - 1) / SYNTH_UNIT_NUMEL);
    s->numel = calloc((size_t)s->n_units, sizeof(*s->numel));
    s->names = calloc((size_t)s->n_units, sizeof(*s->names));
    s->data = calloc((size_t)s->n_units, sizeof(*s->data));
    if (!s->numel || !s->names || !s->data) return ct_error(CT_ERR_NOMEM, "bench state");
    for (int u = 0; u < s->n_units; u++) {
        s->numel[u] = CT_MIN(params - (long long)u * SYNTH_UNIT_NUMEL, SYNTH_UNIT_NUMEL);
        snprintf(s->names[u], CT_NAME_LEN, "synthetic.%d", u);
        for (int k = 0; k < CT_CKPT_KIND_COUNT; k++) {
            float *x = malloc(sizeof(float) * (size_t)s->numel[u]);
            if (!x) return ct_error(CT_ERR_NOMEM, "bench state unit %d", u);
            s->data[u][k] = x;
            uint64_t key = ct_rng_key(1234, 7, (uint64_t)u, (uint64_t)k);
            for (int64_t i = 0; i < s->numel[u]; i++) {
                double smooth = 0.5 * sin((double)i * 0.003) + 0.3 * cos((double)i * 0.0007);
                double w = 0.02 * (ct_rng_normal(key, (uint64_t)i) + smooth);
                x[i] = (float)(k == CT_CKPT_PARAMS   ? w
                               : k == CT_CKPT_ADAM_M ? 1e-3 * w
                                                     : 1e-6 * w * w);
            }
        }
    }
    return CT_OK;
}

static void free_state(bench_state *s) {
    for (int u = 0; u < s->n_units; u++)
        for (int k = 0; k < CT_CKPT_KIND_COUNT; k++) {
            if (s->back) free(s->back[u][k]);
            if (!s->gpt.units && s->data) free(s->data[u][k]);
        }
    if (s->gpt.units) {
        ct_adamw_free(&s->opt);
        ct_gpt_free(&s->gpt);
    }
    free(s->numel), free(s->names), free(s->data), free(s->back);
}

/* Drops the file's pages from the page cache (clean after the writer's fsync) and, when this
 * process may, every clean page; returns a bit mask: 1 fadvise worked, 2 drop_caches did. */
static int evict(const char *path) {
    int how = 0;
    int fd = open(path, O_RDONLY);
    if (fd >= 0) {
        how |= posix_fadvise(fd, 0, 0, POSIX_FADV_DONTNEED) == 0 ? 1 : 0;
        close(fd);
    }
    sync();
    FILE *f = fopen("/proc/sys/vm/drop_caches", "w");
    if (f) {
        how |= fputs("3\n", f) >= 0 && fclose(f) == 0 ? 2 : 0;
        if (!(how & 2)) fclose(f);
    }
    return how;
}

typedef struct {
    double save_s, load_s;
    uint64_t file_bytes;
    int shuffled_frames, frames, evicted;
} run_result;

static ct_status one_run(bench_state *s, const char *path, int level, ct_ckpt_shuffle shuffle,
                         run_result *res) {
    double t0 = ct_time_s();
    ct_ckpt_writer *w;
    CT_CHECK(ct_ckpt_writer_open(&w, path, 0, 1, level, shuffle));
    for (int u = 0; u < s->n_units; u++)
        for (int k = 0; k < CT_CKPT_KIND_COUNT; k++) {
            ct_status st = ct_ckpt_writer_add(w, u, (ct_ckpt_kind)k, 0, s->numel[u], s->data[u][k]);
            if (st) {
                ct_ckpt_writer_abort(w);
                return st;
            }
        }
    CT_CHECK(ct_ckpt_writer_close(w, &res->file_bytes, NULL));
    res->save_s = ct_time_s() - t0;
    res->evicted = evict(path);
    t0 = ct_time_s();
    ct_ckpt_reader *r;
    CT_CHECK(ct_ckpt_reader_open(&r, path));
    ct_status st = CT_OK;
    for (int u = 0; !st && u < s->n_units; u++)
        for (int k = 0; !st && k < CT_CKPT_KIND_COUNT; k++)
            st = ct_ckpt_read_range(&r, 1, u, s->names[u], (ct_ckpt_kind)k, 0, s->numel[u],
                                    s->back[u][k]);
    res->load_s = ct_time_s() - t0;
    res->frames = ct_ckpt_reader_entry_count(r);
    res->shuffled_frames = 0;
    for (int i = 0; i < res->frames; i++)
        res->shuffled_frames +=
            (ct_ckpt_reader_entry(r, i)->flags & CT_CKPT_FRAME_FLAG_SHUFFLE) != 0;
    ct_ckpt_reader_close(r);
    CT_CHECK(st);
    for (int u = 0; u < s->n_units; u++)
        for (int k = 0; k < CT_CKPT_KIND_COUNT; k++)
            if (memcmp(s->back[u][k], s->data[u][k], sizeof(float) * (size_t)s->numel[u]) != 0)
                return ct_error(CT_ERR_FORMAT, "%s: unit %s %s read back differs", path,
                                s->names[u], ct_ckpt_kind_name((ct_ckpt_kind)k));
    return CT_OK;
}

static int run(const bench_options *o) {
    bench_state s = {0};
    ct_status st = o->model ? model_state(&s, o->steps) : synthetic_state(&s, o->params);
    if (!st) {
        s.back = calloc((size_t)s.n_units, sizeof(*s.back));
        st = s.back ? CT_OK : ct_error(CT_ERR_NOMEM, "read-back buffers");
    }
    long long params = 0;
    for (int u = 0; !st && u < s.n_units; u++) {
        params += s.numel[u];
        for (int k = 0; k < CT_CKPT_KIND_COUNT; k++)
            if (!(s.back[u][k] = malloc(sizeof(float) * (size_t)s.numel[u] + 1)))
                st = ct_error(CT_ERR_NOMEM, "read-back buffers");
    }
    s.raw_bytes = (size_t)params * CT_CKPT_KIND_COUNT * sizeof(float);
    char path[600];
    snprintf(path, sizeof(path), "%s/rank_00000.ctk", o->dir);
    if (!st && !make_dirs(o->dir)) st = ct_error(CT_ERR_IO, "%s: cannot create or write", o->dir);
    if (st) {
        fprintf(stderr, "ctrain bench ckpt: %s\n", ct_error_message());
        free_state(&s);
        return 1;
    }
    printf("# ctrain bench ckpt: %s, %lld params x 3 kinds = %.3f GB raw fp32, %d units, "
           "%d runs, %d threads, file %s\n",
           o->model ? "gpt2-124m (GPT-2 init + AdamW steps)" : "synthetic trained-like", params,
           s.raw_bytes / 1e9, s.n_units, o->runs, ct_kern_cpu_threads(), path);
    if (o->model)
        printf("# state: %d AdamW steps (batch 1, seq 256, random tokens); one step %.2f s "
               "(median, %d threads)\n",
               o->steps, s.step_s, ct_kern_cpu_threads());
    printf("# %5s %7s %6s %8s %9s %-22s %9s %-22s\n", "level", "shuffle", "ratio", "shuffled",
           "save_s", "save_GB/s (min-max)", "load_s", "load_GB/s (min-max)");
    fflush(stdout);
    int evicted_all = 3;
    for (int l = 0; l < o->n_levels; l++)
        for (int h = 0; h < o->n_shuffles; h++) {
            double save[MAX_RUNS], load[MAX_RUNS], save_gbs[MAX_RUNS], load_gbs[MAX_RUNS];
            run_result res = {0};
            for (int r = 0; r < o->runs; r++) {
                if ((st = one_run(&s, path, o->levels[l], o->shuffles[h], &res)) != CT_OK) break;
                save[r] = res.save_s, load[r] = res.load_s;
                save_gbs[r] = s.raw_bytes / res.save_s / 1e9;
                load_gbs[r] = s.raw_bytes / res.load_s / 1e9;
                evicted_all &= res.evicted;
            }
            remove(path);
            if (st) {
                fprintf(stderr, "ctrain bench ckpt: %s\n", ct_error_message());
                free_state(&s);
                return 1;
            }
            int n = o->runs;
            char save_txt[64], load_txt[64];
            double smed = median(save_gbs, n), lmed = median(load_gbs, n);
            snprintf(save_txt, sizeof(save_txt), "%.3f (%.3f-%.3f)", smed, save_gbs[0],
                     save_gbs[n - 1]);
            snprintf(load_txt, sizeof(load_txt), "%.3f (%.3f-%.3f)", lmed, load_gbs[0],
                     load_gbs[n - 1]);
            printf("  %5d %7s %6.4f %4d/%-3d %9.2f %-22s %9.2f %-22s\n", o->levels[l],
                   shuffle_name(o->shuffles[h]), (double)res.file_bytes / s.raw_bytes,
                   res.shuffled_frames, res.frames, median(save, n), save_txt, median(load, n),
                   load_txt);
            fflush(stdout);
        }
    printf("# page cache before each load: %s\n",
           evicted_all & 2   ? "dropped (drop_caches) and the file evicted (fadvise)"
           : evicted_all & 1 ? "the file evicted (fadvise DONTNEED); drop_caches not writable"
                             : "NOT evicted: load figures include page-cache hits");
    free_state(&s);
    return 0;
}

int ct_cli_bench_ckpt(int argc, char **argv) {
    bench_options o;
    int parsed = parse(argc, argv, &o);
    if (parsed >= 0) return parsed;
    ct_kern_cpu_set_threads(o.threads);
    return run(&o);
}
