/*
 * `ctrain ckpt`: looking at and converting sharded checkpoints. `info` prints what a checkpoint
 * holds (from its manifest and the rank files' indexes, nothing decoded), `verify` decodes and
 * checks all of it, `export` consolidates the parameters of all ranks into one model file
 * (safetensors with Hugging Face's GPT-2 names, or llm.c's format). The model's shape comes
 * from the job text saved in the manifest. The work is checkpoint/'s (ckpt_tools.c,
 * safetensors.c, llmc.c); this file parses flags and prints.
 */
#include "checkpoint/checkpoint.h"
#include "launcher/launcher.h"
#include "launcher/launcher_internal.h"

#include <stdio.h>
#include <string.h>

static const char *ckpt_usage =
    "usage: ctrain ckpt info PATH\n"
    "       ctrain ckpt verify PATH\n"
    "       ctrain ckpt export PATH --out FILE [--format safetensors|llmc]\n"
    "PATH is a checkpoint (a step_NNNNNNNN directory) or a checkpoint.dir, meaning its newest\n"
    "complete checkpoint.\n"
    "info:   format version, step, world size, strategy, data position, the model, every unit\n"
    "        and rank file, and the raw and compressed bytes of params, Adam m and v.\n"
    "verify: checks every rank file against the manifest, decodes every frame (checksums) and\n"
    "        checks that the frames tile every unit exactly once; prints OK or the first error\n"
    "        (exit 1).\n"
    "export: the full parameters (not the optimizer state) as one model file: safetensors with\n"
    "        Hugging Face GPT-2 names (GPT2LMHeadModel; lm_head is tied to wte and not written)\n"
    "        or llm.c's model file (what model.init_from and `ctrain sample` read; the export\n"
    "        of a run's last checkpoint is its final.bin byte for byte). Without --format, a\n"
    "        FILE ending in .bin means llmc, anything else safetensors.\n";

/* Prints "ctrain ckpt CMD: message" for the recorded error; returns the exit code 1. */
static int fail(const char *cmd) {
    fprintf(stderr, "ctrain ckpt %s: %s\n", cmd, ct_error_message());
    return 1;
}

/* Finds and opens the checkpoint at `path`; on failure prints and returns false. */
static bool open_checkpoint(const char *cmd, const char *path, ct_ckpt_step *ck) {
    char step_dir[CT_CKPT_STEP_PATH_BYTES];
    memset(ck, 0, sizeof(*ck)); /* closable whatever fails */
    ct_status st = ct_ckpt_find(path, step_dir, sizeof(step_dir));
    if (st == CT_OK) st = ct_ckpt_step_open(ck, step_dir);
    if (st != CT_OK) {
        fail(cmd);
        ct_ckpt_step_close(ck);
        return false;
    }
    return true;
}

/* The model of the job saved in the manifest. */
static ct_status saved_model(const ct_ckpt_step *ck, ct_gpt_config *config) {
    char source[CT_CKPT_STEP_PATH_BYTES + 32];
    snprintf(source, sizeof(source), "%s/manifest.json (saved job)", ck->path);
    ct_job *job = ct_alloc(CT_MEM_OTHER, sizeof(ct_job));
    if (!job) return ct_error(CT_ERR_NOMEM, "job");
    ct_status st = ct_job_load_text(job, ck->manifest.config_text, source);
    *config = (ct_gpt_config){.n_layer = job->model_n_layer,
                              .n_head = job->model_n_head,
                              .n_embd = job->model_n_embd,
                              .vocab_size = job->model_vocab_size,
                              .seq_len = job->model_seq_len};
    ct_free(CT_MEM_OTHER, job, sizeof(ct_job));
    return st;
}

static void print_bytes_line(const char *what, uint64_t raw, uint64_t compressed) {
    printf("  %-7s raw %14llu bytes  compressed %14llu bytes  ratio %.3f\n", what,
           (unsigned long long)raw, (unsigned long long)compressed,
           raw ? (double)compressed / (double)raw : 0.0);
}

static int info(const char *path) {
    ct_ckpt_step ck;
    if (!open_checkpoint("info", path, &ck)) return 1;
    const ct_ckpt_manifest *m = &ck.manifest;
    printf("checkpoint:     %s\n", ck.path);
    printf("format version: %d\n", m->format_version);
    printf("step:           %lld\n", (long long)m->step);
    printf("world size:     %d\n", m->world_size);
    printf("strategy:       %s\n", m->strategy);
    printf("data position:  step %lld\n", (long long)m->data_step);
    printf("rng seed:       %llu\n", (unsigned long long)m->rng_seed);
    ct_gpt_config c;
    if (saved_model(&ck, &c) == CT_OK)
        printf("model:          gpt2, n_layer %d, n_head %d, n_embd %d, vocab_size %d, "
               "seq_len %d\n",
               c.n_layer, c.n_head, c.n_embd, c.vocab_size, c.seq_len);
    else
        printf("model:          unknown (%s)\n", ct_error_message());
    int64_t numel = 0;
    printf("units: %d\n", m->n_units);
    for (int u = 0; u < m->n_units; u++) {
        printf("  %4d  %-12s %12lld elements\n", u, m->units[u].name, (long long)m->units[u].numel);
        numel += m->units[u].numel;
    }
    printf("  total              %12lld parameters\n", (long long)numel);
    uint64_t raw[CT_CKPT_KIND_COUNT] = {0}, packed[CT_CKPT_KIND_COUNT] = {0}, file_bytes = 0;
    printf("rank files: %d\n", m->world_size);
    for (int r = 0; r < m->world_size; r++) {
        const ct_ckpt_reader *reader = ck.readers[r];
        int n = ct_ckpt_reader_entry_count(reader);
        printf("  %-16s %14llu bytes  %d frames\n", m->ranks[r].file,
               (unsigned long long)m->ranks[r].file_bytes, n);
        file_bytes += m->ranks[r].file_bytes;
        for (int i = 0; i < n; i++) {
            const ct_ckpt_entry *e = ct_ckpt_reader_entry(reader, i);
            raw[e->kind] += e->raw_bytes;
            packed[e->kind] += e->frame_bytes - CT_CKPT_FRAME_HEADER_BYTES;
        }
    }
    printf("totals (compressed = zstd frames without headers; ratio = compressed / raw):\n");
    uint64_t raw_all = 0, packed_all = 0;
    for (int k = 0; k < CT_CKPT_KIND_COUNT; k++) {
        print_bytes_line(ct_ckpt_kind_name((ct_ckpt_kind)k), raw[k], packed[k]);
        raw_all += raw[k], packed_all += packed[k];
    }
    print_bytes_line("all", raw_all, packed_all);
    printf("  files   %14llu bytes\n", (unsigned long long)file_bytes);
    ct_ckpt_step_close(&ck);
    return 0;
}

static int verify(const char *path) {
    ct_ckpt_step ck;
    if (!open_checkpoint("verify", path, &ck)) return 1;
    ct_ckpt_verify_counts counts;
    ct_status st = ct_ckpt_step_verify(&ck, &counts);
    if (st == CT_OK)
        printf("OK: %s: %d rank files, %lld frames, %d units, %llu bytes decoded from %llu\n",
               ck.path, counts.files, (long long)counts.frames, counts.units,
               (unsigned long long)counts.raw_bytes, (unsigned long long)counts.file_bytes);
    else
        fail("verify");
    ct_ckpt_step_close(&ck);
    return st == CT_OK ? 0 : 1;
}

/* Writes the consolidated model of `ck` to `out` in `format`. */
static ct_status export_model(ct_ckpt_step *ck, const char *out, bool llmc) {
    ct_gpt_config config;
    CT_CHECK(saved_model(ck, &config));
    ct_gpt gpt;
    ct_status st = ct_gpt_init(&gpt, &config);
    if (st != CT_OK) return st;
    st = ct_gpt_alloc_full(&gpt);
    if (st == CT_OK) st = ct_ckpt_step_read_params(ck, &gpt);
    if (st == CT_OK && llmc) st = ct_ckpt_llmc_write(out, &gpt);
    if (st == CT_OK && !llmc) {
        char step[32], shape[5][16];
        snprintf(step, sizeof(step), "%lld", (long long)ck->manifest.step);
        int dims[5] = {config.n_layer, config.n_head, config.n_embd, config.vocab_size,
                       config.seq_len};
        for (int i = 0; i < 5; i++)
            snprintf(shape[i], sizeof(shape[i]), "%d", dims[i]);
        const char *metadata[] = {"producer",    "ctrain " CTRAIN_VERSION,
                                  "source",      ck->path,
                                  "step",        step,
                                  "n_layer",     shape[0],
                                  "n_head",      shape[1],
                                  "n_embd",      shape[2],
                                  "vocab_size",  shape[3],
                                  "n_positions", shape[4],
                                  NULL};
        st = ct_ckpt_safetensors_write(out, &gpt, metadata);
    }
    ct_gpt_free(&gpt);
    return st;
}

static int export_cmd(int argc, char **argv) {
    const char *path = NULL, *out = NULL, *format = NULL, *cmd = "ckpt export";
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (ct_cli_is_help(a)) return ct_cli_help(ckpt_usage);
        if (strcmp(a, "--out") == 0 || strcmp(a, "--format") == 0) {
            if (i + 1 >= argc) return ct_cli_usage_error(cmd, ckpt_usage, "%s needs a value", a);
            *(strcmp(a, "--out") == 0 ? &out : &format) = argv[++i];
        } else if (a[0] == '-' && a[1]) {
            return ct_cli_bad_flag(cmd, a, ckpt_usage);
        } else if (!path) {
            path = a;
        } else {
            return ct_cli_usage_error(cmd, ckpt_usage, "export takes one PATH, got '%s' too", a);
        }
    }
    if (!path || !out)
        return ct_cli_usage_error(cmd, ckpt_usage, "export needs PATH and --out FILE");
    if (!format) {
        size_t n = strlen(out);
        format = n >= 4 && strcmp(out + n - 4, ".bin") == 0 ? "llmc" : "safetensors";
    }
    if (strcmp(format, "llmc") != 0 && strcmp(format, "safetensors") != 0)
        return ct_cli_usage_error(cmd, ckpt_usage, "--format must be safetensors or llmc, got '%s'",
                                  format);
    ct_ckpt_step ck;
    if (!open_checkpoint("export", path, &ck)) return 1;
    ct_status st = export_model(&ck, out, strcmp(format, "llmc") == 0);
    if (st == CT_OK)
        printf("exported %s (step %lld, %s) to %s\n", ck.path, (long long)ck.manifest.step, format,
               out);
    else
        fail("export");
    ct_ckpt_step_close(&ck);
    return st == CT_OK ? 0 : 1;
}

int ct_cli_ckpt(int argc, char **argv) {
    if (argc < 1) return ct_cli_usage_error("ckpt", ckpt_usage, "expected info, verify or export");
    const char *sub = argv[0];
    if (ct_cli_is_help(sub)) return ct_cli_help(ckpt_usage);
    if (strcmp(sub, "export") == 0) return export_cmd(argc - 1, argv + 1);
    if (strcmp(sub, "info") != 0 && strcmp(sub, "verify") != 0)
        return ct_cli_usage_error("ckpt", ckpt_usage, "unknown subcommand '%s'", sub);
    char cmd[16];
    snprintf(cmd, sizeof(cmd), "ckpt %s", sub);
    for (int i = 1; i < argc; i++)
        if (ct_cli_is_help(argv[i])) return ct_cli_help(ckpt_usage);
    if (argc != 2 || (argv[1][0] == '-' && argv[1][1]))
        return argc < 2   ? ct_cli_usage_error(cmd, ckpt_usage, "%s needs PATH", sub)
               : argc > 2 ? ct_cli_usage_error(cmd, ckpt_usage, "%s takes one PATH", sub)
                          : ct_cli_bad_flag(cmd, argv[1], ckpt_usage);
    return strcmp(sub, "info") == 0 ? info(argv[1]) : verify(argv[1]);
}
