/*
 * `ctrain data`: making token shards. `prepare` turns UTF-8 text into byte-level shards;
 * `synth` writes a learnable synthetic stream for tests and benchmarks.
 */
#include "data/data.h"
#include "launcher/launcher_internal.h"

#include <stdio.h>
#include <string.h>

#define PREPARE_LINE "ctrain data prepare FILE... --out DIR [--val FRACTION]\n"
#define SYNTH_LINE "ctrain data synth --out DIR --tokens N [--vocab V] [--seed S]\n"
#define PREPARE_DOC                                                                                \
    "prepare: UTF-8 text -> byte-level token shards (vocabulary 256) in llm.c's format,\n"         \
    "         DIR/train_NNNNNN.bin and DIR/val_NNNNNN.bin; the last FRACTION of the text\n"        \
    "         (default 0.05) becomes validation data.\n"
#define SYNTH_DOC                                                                                  \
    "synth:   a learnable synthetic token stream (a sparse random Markov chain fixed by the\n"     \
    "         seed): DIR/train_000000.bin with N tokens and DIR/val_000000.bin with N/10.\n"       \
    "         --vocab defaults to 256, --seed to 1.\n"
#define SHARDS_DOC                                                                                 \
    "Both check the free space first, and replace the train_/val_ shards an earlier prepare or\n"  \
    "synth left in DIR (no other file); a run that fails leaves DIR as it was.\n"

static const char *data_usage =
    "usage: " PREPARE_LINE "       " SYNTH_LINE PREPARE_DOC SYNTH_DOC SHARDS_DOC;
static const char *prepare_usage = "usage: " PREPARE_LINE PREPARE_DOC SHARDS_DOC;
static const char *synth_usage = "usage: " SYNTH_LINE SYNTH_DOC SHARDS_DOC;

static int prepare(int argc, char **argv) {
    const char *files[256], *cmd = "data prepare";
    int n_files = 0;
    const char *out = NULL;
    double val = 0.05;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (ct_cli_is_help(a)) return ct_cli_help(prepare_usage);
        if (strcmp(a, "--out") == 0 || strcmp(a, "--val") == 0) {
            if (i + 1 >= argc) return ct_cli_usage_error(cmd, prepare_usage, "%s needs a value", a);
            const char *v = argv[++i];
            if (strcmp(a, "--out") == 0)
                out = v;
            else if (!ct_cli_parse_double(v, 0.0, 0.99, &val))
                return ct_cli_usage_error(cmd, prepare_usage,
                                          "--val must be a fraction in [0, 0.99], got '%s'", v);
        } else if (a[0] == '-' && a[1]) {
            return ct_cli_bad_flag(cmd, a, prepare_usage);
        } else if (n_files < (int)(sizeof(files) / sizeof(files[0]))) {
            files[n_files++] = a;
        } else {
            return ct_cli_usage_error(cmd, prepare_usage, "too many input files (at most 256)");
        }
    }
    if (!out) return ct_cli_usage_error(cmd, prepare_usage, "prepare needs --out DIR");
    if (n_files == 0) return ct_cli_usage_error(cmd, prepare_usage, "prepare needs input files");
    if (ct_data_prepare(files, n_files, out, val) != CT_OK) {
        fprintf(stderr, "ctrain %s: %s\n", cmd, ct_error_message());
        return 1;
    }
    return 0;
}

static int synth(int argc, char **argv) {
    const char *out = NULL, *cmd = "data synth";
    unsigned long long tokens = 0, seed = 1;
    int vocab = 256;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (ct_cli_is_help(a)) return ct_cli_help(synth_usage);
        bool known = strcmp(a, "--out") == 0 || strcmp(a, "--tokens") == 0 ||
                     strcmp(a, "--vocab") == 0 || strcmp(a, "--seed") == 0;
        if (!known) return ct_cli_bad_flag(cmd, a, synth_usage);
        if (i + 1 >= argc) return ct_cli_usage_error(cmd, synth_usage, "%s needs a value", a);
        const char *v = argv[++i];
        bool ok = true;
        if (strcmp(a, "--out") == 0) out = v;
        if (strcmp(a, "--tokens") == 0) ok = ct_cli_parse_u64(v, &tokens) && tokens > 0;
        if (strcmp(a, "--vocab") == 0) ok = ct_cli_parse_int(v, 2, 65536, &vocab);
        if (strcmp(a, "--seed") == 0) ok = ct_cli_parse_u64(v, &seed);
        if (!ok) return ct_cli_usage_error(cmd, synth_usage, "bad value '%s' for %s", v, a);
    }
    if (!out || tokens == 0)
        return ct_cli_usage_error(cmd, synth_usage, "synth needs --out DIR and --tokens N");
    if (ct_data_synth(out, tokens, vocab, seed) != CT_OK) {
        fprintf(stderr, "ctrain %s: %s\n", cmd, ct_error_message());
        return 1;
    }
    return 0;
}

int ct_cli_data(int argc, char **argv) {
    if (argc < 1) return ct_cli_usage_error("data", data_usage, "expected 'prepare' or 'synth'");
    if (ct_cli_is_help(argv[0])) return ct_cli_help(data_usage);
    if (strcmp(argv[0], "prepare") == 0) return prepare(argc - 1, argv + 1);
    if (strcmp(argv[0], "synth") == 0) return synth(argc - 1, argv + 1);
    return ct_cli_usage_error("data", data_usage, "unknown subcommand '%s'", argv[0]);
}
