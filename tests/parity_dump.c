/*
 * ct-parity: the C side of scripts/torch_parity.py. Loads an llm.c model file and a batch,
 * writes the initial loss, logits and gradients, then takes N AdamW steps (warmup + cosine,
 * clipping by the global norm) on the same batch and writes each step's loss and the final
 * parameters. PyTorch computes the same from the same file; the script compares.
 *
 * BATCH.bin: int32 B, int32 T, B*T int32 inputs, B*T int32 targets.
 * OUT.bin (float32): loss, logits (B,T,V), gradients (llm.c order, V rows of wte),
 *                    N losses, final parameters (llm.c order).
 */
#include "checkpoint/checkpoint.h"
#include "model/model.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct {
    const char *model, *batch, *out;
    int steps, warmup;
    double lr, min_lr, grad_clip, weight_decay, beta1, beta2, eps;
} parity_args;

static int parse(int argc, char **argv, parity_args *a) {
    *a = (parity_args){.steps = 10,
                       .warmup = 0,
                       .lr = 1e-3,
                       .min_lr = 1e-4,
                       .grad_clip = 1.0,
                       .weight_decay = 0.1,
                       .beta1 = 0.9,
                       .beta2 = 0.95,
                       .eps = 1e-8};
    for (int i = 1; i + 1 < argc; i += 2) {
        const char *k = argv[i], *v = argv[i + 1];
        if (!strcmp(k, "--model"))
            a->model = v;
        else if (!strcmp(k, "--batch"))
            a->batch = v;
        else if (!strcmp(k, "--out"))
            a->out = v;
        else if (!strcmp(k, "--steps"))
            a->steps = atoi(v);
        else if (!strcmp(k, "--warmup"))
            a->warmup = atoi(v);
        else if (!strcmp(k, "--lr"))
            a->lr = atof(v);
        else if (!strcmp(k, "--min-lr"))
            a->min_lr = atof(v);
        else if (!strcmp(k, "--grad-clip"))
            a->grad_clip = atof(v);
        else if (!strcmp(k, "--weight-decay"))
            a->weight_decay = atof(v);
        else if (!strcmp(k, "--beta1"))
            a->beta1 = atof(v);
        else if (!strcmp(k, "--beta2"))
            a->beta2 = atof(v);
        else if (!strcmp(k, "--eps"))
            a->eps = atof(v);
        else if (!strcmp(k, "--schedule")) {
            if (strcmp(v, "cosine") != 0) return fprintf(stderr, "only cosine\n"), 1;
        } else
            return fprintf(stderr, "ct-parity: unknown flag %s\n", k), 1;
    }
    if (!a->model || !a->batch || !a->out)
        return fprintf(stderr, "usage: ct-parity --model M --batch B --out O [...]\n"), 1;
    return 0;
}

static int32_t *read_batch(const char *path, int *B, int *T) {
    FILE *f = fopen(path, "rb");
    int32_t dims[2];
    if (!f || fread(dims, sizeof(int32_t), 2, f) != 2 || dims[0] < 1 || dims[1] < 1) {
        if (f) fclose(f);
        return NULL;
    }
    size_t n = 2 * (size_t)dims[0] * dims[1];
    int32_t *tokens = malloc(sizeof(int32_t) * n);
    if (tokens && fread(tokens, sizeof(int32_t), n, f) != n) {
        free(tokens);
        tokens = NULL;
    }
    fclose(f);
    *B = dims[0];
    *T = dims[1];
    return tokens;
}

static double grad_norm(const ct_gpt *gpt, const ct_kernels *k) {
    double sum = 0.0;
    for (int u = 0; u < gpt->n_units; u++)
        sum += k->sum_squares(&k->ctx, gpt->units[u].grad, (size_t)gpt->units[u].numel);
    return sqrt(sum);
}

/* Zeroes the gradients and runs forward + backward; returns the loss. */
static float loss_and_grads(ct_gpt *gpt, ct_tape *tape, const int32_t *tokens, int B, int T) {
    ct_gpt_zero_grad(gpt, tape->kernels);
    ct_tape_reset(tape);
    ct_tensor *loss = ct_gpt_forward_loss(gpt, tape, tokens, tokens + (size_t)B * T, B, T, 1.0f);
    if (!loss || ct_tape_backward(tape) != CT_OK) {
        fprintf(stderr, "ct-parity: forward/backward failed: %s\n", ct_error_message());
        exit(1);
    }
    float value;
    if (ct_tape_read_scalar(tape, loss, &value) != CT_OK) exit(1);
    return value;
}

int main(int argc, char **argv) {
    parity_args a;
    if (parse(argc, argv, &a)) return 2;
    const ct_kernels *k;
    if (ct_kernels_for_device(&(ct_kernels_options){"cpu", 1, "auto", "auto"}, &k) != CT_OK)
        return 1;
    ct_gpt_config config;
    ct_gpt gpt;
    int B, T;
    int32_t *tokens = read_batch(a.batch, &B, &T);
    if (!tokens) return fprintf(stderr, "ct-parity: cannot read %s\n", a.batch), 1;
    if (ct_ckpt_llmc_read_config(a.model, &config) || ct_gpt_init(&gpt, &config) ||
        ct_gpt_alloc_full(&gpt) || ct_ckpt_llmc_read(a.model, &gpt))
        return fprintf(stderr, "ct-parity: %s\n", ct_error_message()), 1;
    FILE *out = fopen(a.out, "wb");
    if (!out) return fprintf(stderr, "ct-parity: cannot write %s\n", a.out), 1;

    ct_tape tape;
    ct_tape_init(&tape, k);
    size_t n = (size_t)gpt.num_params, nlogits = (size_t)B * T * config.vocab_size;
    float *buf = malloc(sizeof(float) * (n > nlogits ? n : nlogits));
    ct_tape_reset(&tape);
    ct_gpt_forward_logits(&gpt, &tape, tokens, B, T, buf);
    float loss = loss_and_grads(&gpt, &tape, tokens, B, T);
    fwrite(&loss, sizeof(float), 1, out);
    fwrite(buf, sizeof(float), nlogits, out);
    ct_ckpt_llmc_pack(&gpt, true, buf);
    fwrite(buf, sizeof(float), n, out);

    ct_adamw opt;
    ct_adamw_init(&opt, &gpt, NULL, NULL, k);
    void **params = malloc(sizeof(void *) * (size_t)gpt.n_units);
    const void **grads = malloc(sizeof(void *) * (size_t)gpt.n_units);
    for (int u = 0; u < gpt.n_units; u++) {
        params[u] = gpt.units[u].data;
        grads[u] = gpt.units[u].grad;
    }
    for (int s = 0; s < a.steps; s++) {
        float step_loss = loss_and_grads(&gpt, &tape, tokens, B, T);
        fwrite(&step_loss, sizeof(float), 1, out);
        ct_adamw_hparams hp = {
            .lr = (float)ct_lr_at(CT_SCHEDULE_COSINE, a.lr, a.min_lr, a.warmup, a.steps, s),
            .beta1 = (float)a.beta1,
            .beta2 = (float)a.beta2,
            .eps = (float)a.eps,
            .weight_decay = (float)a.weight_decay};
        float clip = ct_clip_scale(grad_norm(&gpt, k), a.grad_clip);
        if (ct_adamw_step(&opt, &gpt, params, grads, &hp, clip, k) != CT_OK) return 1;
    }
    ct_ckpt_llmc_pack(&gpt, false, buf);
    fwrite(buf, sizeof(float), n, out);
    int failed = fclose(out) != 0;
    free(buf);
    free(params);
    free(grads);
    free(tokens);
    ct_adamw_free(&opt);
    ct_tape_free(&tape);
    ct_gpt_free(&gpt);
    return failed;
}
