/*
 * `ctrain sample`: text generation from a model file. Each new token runs the model on the
 * last seq_len tokens (no key/value cache: sampling is a tool, not a hot path), then draws
 * from the softmax of the last position's logits, with temperature and top-k, using the
 * counter-based generator keyed by the seed, so the same command prints the same text.
 * Byte-level models (vocabulary 256) take a text prompt and print bytes; others take and print
 * token ids. A model with a non-finite weight, or whose logits overflow, is an error (exit 1)
 * rather than text made of NUL bytes.
 */
#include "checkpoint/checkpoint.h"
#include "launcher/launcher_internal.h"
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

enum { RNG_PURPOSE_SAMPLE = 7 };

typedef struct {
    const char *init;
    const char *prompt;
    const char *prompt_ids;
    int tokens;
    double temperature;
    int top_k;
    long long seed;
} sample_options;

static const char *sample_usage =
    "usage: ctrain sample --init MODEL.bin [--prompt TEXT | --prompt-ids 1,2,3] [--tokens N]\n"
    "                     [--temperature X] [--top-k K] [--seed S]\n"
    "Generates text from an llm.c-format model file (such as <run dir>/final.bin).\n"
    "  --init FILE        model weights (llm.c model format, fp32)\n"
    "  --prompt TEXT      start of the text (byte-level models, vocabulary 256)\n"
    "  --prompt-ids LIST  start as comma-separated token ids (any vocabulary)\n"
    "  --tokens N         tokens to generate (default 256)\n"
    "  --temperature X    softmax temperature; 0 = greedy (default 0.8)\n"
    "  --top-k K          sample among the K most likely tokens; 0 = all (default 40)\n"
    "  --seed S           random seed (default 1337)\n";

/* Draws a token from logits (V) at `temperature`, among the top_k largest. */
static int draw_token(float *logits, int V, double temperature, int top_k, double uniform) {
    int best = 0;
    for (int j = 1; j < V; j++)
        if (logits[j] > logits[best]) best = j;
    if (temperature <= 0) return best;
    float threshold = -INFINITY;
    if (top_k > 0 && top_k < V) {
        /* the k-th largest value, by repeated selection (V is small next to a forward pass) */
        float previous = INFINITY;
        for (int k = 0; k < top_k; k++) {
            float next = -INFINITY;
            for (int j = 0; j < V; j++)
                if (logits[j] < previous && logits[j] > next) next = logits[j];
            previous = next;
        }
        threshold = previous;
    }
    double sum = 0.0;
    for (int j = 0; j < V; j++)
        sum += logits[j] >= threshold ? exp((logits[j] - logits[best]) / temperature) : 0.0;
    double target = uniform * sum, acc = 0.0;
    for (int j = 0; j < V; j++) {
        if (logits[j] < threshold) continue;
        acc += exp((logits[j] - logits[best]) / temperature);
        if (acc >= target) return j;
    }
    return best;
}

/* The first non-finite parameter (a diverged run's weights, or a damaged file) is reported by
 * name: the forward pass would turn it into NaN logits and the sampler into NUL bytes. */
static bool weights_finite(const ct_gpt *gpt, const char *path) {
    for (int u = 0; u < gpt->n_units; u++) {
        const ct_unit *unit = &gpt->units[u];
        for (int p = 0; p < unit->n_params; p++) {
            const float *w = ct_tensor_f32(&unit->tensors[p]);
            for (int64_t i = 0; i < unit->params[p].numel; i++) {
                if (isfinite(w[i])) continue;
                fprintf(stderr,
                        "ctrain sample: %s: parameter %s.%s element %lld is %s (a diverged run "
                        "or a damaged file): nothing to sample from\n",
                        path, unit->name, unit->params[p].name, (long long)i,
                        isnan(w[i]) ? "nan" : "inf");
                return false;
            }
        }
    }
    return true;
}

/* Whether all V logits are finite; finite weights can still overflow (huge values). */
static bool logits_finite(const float *logits, int V) {
    for (int j = 0; j < V; j++)
        if (!isfinite(logits[j])) return false;
    return true;
}

static int parse_options(int argc, char **argv, sample_options *o) {
    *o = (sample_options){.tokens = 256, .temperature = 0.8, .top_k = 40, .seed = 1337};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (ct_cli_is_help(a)) return ct_cli_help(sample_usage);
        bool known = strcmp(a, "--init") == 0 || strcmp(a, "--prompt") == 0 ||
                     strcmp(a, "--prompt-ids") == 0 || strcmp(a, "--tokens") == 0 ||
                     strcmp(a, "--temperature") == 0 || strcmp(a, "--top-k") == 0 ||
                     strcmp(a, "--seed") == 0;
        if (!known) return ct_cli_bad_flag("sample", a, sample_usage);
        if (!v) return ct_cli_usage_error("sample", sample_usage, "%s needs a value", a);
        i++;
        bool ok = true;
        if (strcmp(a, "--init") == 0) o->init = v;
        if (strcmp(a, "--prompt") == 0) o->prompt = v;
        if (strcmp(a, "--prompt-ids") == 0) o->prompt_ids = v;
        if (strcmp(a, "--tokens") == 0) ok = ct_cli_parse_int(v, 1, 1 << 20, &o->tokens);
        if (strcmp(a, "--temperature") == 0) ok = ct_cli_parse_double(v, 0, 100, &o->temperature);
        if (strcmp(a, "--top-k") == 0) ok = ct_cli_parse_int(v, 0, 1 << 20, &o->top_k);
        if (strcmp(a, "--seed") == 0) {
            int seed = 0;
            ok = ct_cli_parse_int(v, 0, 2147483647, &seed);
            o->seed = seed;
        }
        if (!ok) return ct_cli_usage_error("sample", sample_usage, "bad value '%s' for %s", v, a);
    }
    if (!o->init) return ct_cli_usage_error("sample", sample_usage, "--init is required");
    return -1;
}

/* Fills context with the prompt; returns its length or -1 after printing an error. */
static int read_prompt(const sample_options *o, int V, int32_t *context, int capacity) {
    int n = 0;
    if (o->prompt_ids) {
        const char *p = o->prompt_ids;
        while (*p && n < capacity) {
            char *end;
            long id = strtol(p, &end, 10);
            if (end == p || id < 0 || id >= V) {
                fprintf(stderr, "ctrain sample: bad token id at '%s' (vocabulary %d)\n", p, V);
                return -1;
            }
            context[n++] = (int32_t)id;
            p = *end == ',' ? end + 1 : end;
        }
    } else if (o->prompt) {
        if (V < 256) {
            fprintf(stderr,
                    "ctrain sample: --prompt needs a byte-level model (vocabulary >= 256, "
                    "this one has %d); use --prompt-ids\n",
                    V);
            return -1;
        }
        for (const unsigned char *p = (const unsigned char *)o->prompt; *p && n < capacity; p++)
            context[n++] = *p;
    }
    if (n == 0) context[n++] = V == 256 ? '\n' : 0;
    return n;
}

int ct_cli_sample(int argc, char **argv) {
    sample_options o;
    int parsed = parse_options(argc, argv, &o);
    if (parsed >= 0) return parsed;
    ct_gpt_config config;
    ct_gpt gpt = {0};
    ct_tape tape;
    const ct_kernels *kernels;
    int code = 1;
    bool read =
        ct_kernels_for_device(&(ct_kernels_options){"cpu", 0, "auto", "auto"}, &kernels) == CT_OK &&
        ct_ckpt_llmc_read_config(o.init, &config) == CT_OK;
    ct_tape_init(&tape, kernels);
    tape.recording = false;
    /* A forward pass of one sequence needs less than a recorded one: reserve that (plus a
     * margin), not the machine's memory, so that `ulimit -v` is not spent on it. */
    read = read &&
           ct_tape_set_capacity(&tape, ct_gpt_activation_bytes(kernels, &config, 1, config.seq_len,
                                                               CT_RECOMPUTE_NONE, CT_F32) +
                                           (64 << 20)) == CT_OK;
    if (!read || ct_gpt_init(&gpt, &config) != CT_OK || ct_gpt_alloc_full(&gpt) != CT_OK ||
        ct_ckpt_llmc_read(o.init, &gpt) != CT_OK) {
        fprintf(stderr, "ctrain sample: %s\n", ct_error_message());
        goto done;
    }
    if (!weights_finite(&gpt, o.init)) goto done;
    int V = config.vocab_size, maxT = config.seq_len;
    int capacity = maxT + o.tokens + 4096;
    int32_t *tokens = ct_alloc(CT_MEM_OTHER, sizeof(int32_t) * (size_t)capacity);
    float *logits = ct_alloc(CT_MEM_OTHER, sizeof(float) * (size_t)maxT * V);
    int n = tokens && logits ? read_prompt(&o, V, tokens, 4096) : -1;
    if (n > 0) {
        bool bytes = V == 256;
        if (bytes) fwrite(o.prompt ? o.prompt : "", 1, o.prompt ? strlen(o.prompt) : 0, stdout);
        uint64_t key = ct_rng_key((uint64_t)o.seed, RNG_PURPOSE_SAMPLE, 0, 0);
        bool failed = false;
        for (int i = 0; i < o.tokens; i++) {
            int start = n > maxT ? n - maxT : 0, T = n - start;
            if (ct_tape_reset(&tape) != CT_OK ||
                ct_gpt_forward_logits(&gpt, &tape, tokens + start, 1, T, logits) != CT_OK)
                break;
            float *last = logits + (size_t)(T - 1) * V;
            if (!logits_finite(last, V)) {
                fprintf(stderr,
                        "\nctrain sample: %s: the logits for token %d are not finite (the "
                        "weights overflow in the forward pass): stopped\n",
                        o.init, n);
                failed = true;
                break;
            }
            int next =
                draw_token(last, V, o.temperature, o.top_k, ct_rng_uniform(key, (uint64_t)i));
            tokens[n++] = next;
            if (bytes)
                fputc(next, stdout);
            else
                printf("%s%d", i ? "," : "", next);
            fflush(stdout);
        }
        printf("\n");
        code = ct_tape_status(&tape) == CT_OK && !failed ? 0 : 1;
    }
    ct_free(CT_MEM_OTHER, tokens, sizeof(int32_t) * (size_t)capacity);
    ct_free(CT_MEM_OTHER, logits, sizeof(float) * (size_t)maxT * V);
done:
    ct_tape_free(&tape);
    if (gpt.units) ct_gpt_free(&gpt);
    return code;
}
