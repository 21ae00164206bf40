/*
 * The trainer: everything one rank needs to take optimizer steps. It owns the model, the
 * optimizer state, the datasets, the tape and the batch buffers, all made once in
 * ct_trainer_new; a step then reads its batch (a pure function of the step number), runs
 * grad_accum forward/backward passes into the accumulated gradients, clips by the global norm
 * and applies AdamW, allocating nothing once warm.
 */
#include "checkpoint/checkpoint.h"
#include "data/data.h"
#include "launcher/launcher.h"
#include "launcher/trainer_internal.h"
#include "model/model.h"

#include <math.h>
#include <stdlib.h>
#include <string.h>

static ct_schedule_kind schedule_kind(const char *name) {
    if (strcmp(name, "constant") == 0) return CT_SCHEDULE_CONSTANT;
    if (strcmp(name, "linear") == 0) return CT_SCHEDULE_LINEAR;
    return CT_SCHEDULE_COSINE;
}

static ct_status open_datasets(ct_trainer *tr) {
    const ct_job *job = &tr->job;
    ct_data_format format =
        strcmp(job->data_format, "nanogpt") == 0 ? CT_DATA_FORMAT_NANOGPT : CT_DATA_FORMAT_LLMC;
    CT_CHECK(ct_data_open(&tr->train, job->data_train, format, job->model_vocab_size));
    if (job->data_val[0])
        CT_CHECK(ct_data_open(&tr->val, job->data_val, format, job->model_vocab_size));
    tr->sampler = (ct_data_sampler){.seq_len = job->model_seq_len,
                                    .batch_size = job->train_batch_size,
                                    .grad_accum = job->train_grad_accum,
                                    .world_size = 1,
                                    .rank = 0,
                                    .shuffle = job->data_shuffle,
                                    .seed = (uint64_t)job->train_seed};
    /* Evaluation reads the validation data in order from its start, one micro-batch a step. */
    tr->val_sampler = tr->sampler;
    tr->val_sampler.grad_accum = 1;
    tr->val_sampler.shuffle = false;
    return CT_OK;
}

static ct_status build_model(ct_trainer *tr) {
    const ct_job *job = &tr->job;
    ct_gpt_config config = {.n_layer = job->model_n_layer,
                            .n_head = job->model_n_head,
                            .n_embd = job->model_n_embd,
                            .vocab_size = job->model_vocab_size,
                            .seq_len = job->model_seq_len};
    CT_CHECK(ct_gpt_init(&tr->gpt, &config));
    CT_CHECK(ct_gpt_alloc_full(&tr->gpt));
    if (job->model_init_from[0])
        CT_CHECK(ct_ckpt_llmc_read(job->model_init_from, &tr->gpt));
    else
        ct_gpt_init_weights(&tr->gpt, (uint64_t)job->train_seed);
    CT_CHECK(ct_adamw_init(&tr->opt, &tr->gpt, NULL, NULL));
    size_t n = (size_t)tr->gpt.n_units;
    tr->params = ct_alloc(CT_MEM_OTHER, sizeof(float *) * n);
    tr->grads = ct_alloc(CT_MEM_OTHER, sizeof(float *) * n);
    if (!tr->params || !tr->grads) return CT_ERR_NOMEM;
    for (size_t u = 0; u < n; u++) {
        tr->params[u] = tr->gpt.units[u].data;
        tr->grads[u] = tr->gpt.units[u].grad;
    }
    return CT_OK;
}

ct_status ct_trainer_new(ct_trainer **out, const ct_job *job) {
    *out = NULL;
    if (strcmp(job->device_type, "cuda") == 0)
        return ct_error(CT_ERR_INVALID,
                        "%s: device.type = \"cuda\": CUDA training is not built yet (it arrives "
                        "with the CUDA backend); use \"cpu\" or \"auto\"",
                        job->source_path);
    ct_trainer *tr = ct_alloc(CT_MEM_OTHER, sizeof(ct_trainer));
    if (!tr) return CT_ERR_NOMEM;
    tr->job = *job;
    *out = tr;
    ct_kern_cpu_set_threads(job->device_threads_per_rank);
    tr->kernels = ct_kern_cpu();
    CT_CHECK(open_datasets(tr));
    CT_CHECK(build_model(tr));
    ct_tape_init(&tr->tape, tr->kernels);
    const char *profile = getenv("CTRAIN_PROFILE");
    if (profile && profile[0] && strcmp(profile, "0") != 0) tr->tape.profile = &tr->profile;
    size_t tokens = (size_t)job->train_batch_size * job->model_seq_len;
    tr->inputs = ct_alloc(CT_MEM_DATA, sizeof(int32_t) * tokens);
    tr->targets = ct_alloc(CT_MEM_DATA, sizeof(int32_t) * tokens);
    if (!tr->inputs || !tr->targets) return CT_ERR_NOMEM;
    tr->flops_per_token = ct_gpt_flops_per_token(&tr->gpt.config, job->model_seq_len);
    return CT_OK;
}

void ct_trainer_free(ct_trainer *tr) {
    if (!tr) return;
    size_t tokens = (size_t)tr->job.train_batch_size * tr->job.model_seq_len;
    ct_free(CT_MEM_DATA, tr->inputs, sizeof(int32_t) * tokens);
    ct_free(CT_MEM_DATA, tr->targets, sizeof(int32_t) * tokens);
    ct_free(CT_MEM_OTHER, tr->params, sizeof(float *) * (size_t)tr->gpt.n_units);
    ct_free(CT_MEM_OTHER, tr->grads, sizeof(float *) * (size_t)tr->gpt.n_units);
    ct_tape_free(&tr->tape);
    if (tr->opt.m) ct_adamw_free(&tr->opt);
    if (tr->gpt.units) ct_gpt_free(&tr->gpt);
    if (tr->train) ct_data_close(tr->train);
    if (tr->val) ct_data_close(tr->val);
    ct_free(CT_MEM_OTHER, tr, sizeof(ct_trainer));
}

/* Forward and backward of one micro-batch; adds its loss to *loss_sum. */
static ct_status micro_step(ct_trainer *tr, int64_t step, int micro, double *loss_sum) {
    const ct_job *job = &tr->job;
    int B = job->train_batch_size, T = job->model_seq_len;
    double t0 = ct_time_s();
    CT_CHECK(ct_data_get_batch(tr->train, &tr->sampler, step, micro, tr->inputs, tr->targets));
    tr->data_s += ct_time_s() - t0;
    CT_CHECK(ct_tape_reset(&tr->tape));
    tr->tape.recording = true;
    float grad_scale = 1.0f / (float)job->train_grad_accum;
    ct_tensor *loss =
        ct_gpt_forward_loss(&tr->gpt, &tr->tape, tr->inputs, tr->targets, B, T, grad_scale);
    if (!loss) return ct_tape_status(&tr->tape);
    *loss_sum += *(float *)loss->data;
    return ct_tape_backward(&tr->tape);
}

static double global_grad_norm(const ct_trainer *tr) {
    double sum = 0.0;
    for (int u = 0; u < tr->gpt.n_units; u++)
        sum += tr->kernels->sum_squares(tr->grads[u], (size_t)tr->gpt.units[u].numel);
    return sqrt(sum);
}

ct_status ct_trainer_step(ct_trainer *tr, ct_step_stats *stats) {
    const ct_job *job = &tr->job;
    int step = tr->step;
    double t0 = ct_time_s();
    ct_gpt_zero_grad(&tr->gpt, tr->kernels);
    double t_passes = ct_time_s();
    double loss_sum = 0.0;
    for (int micro = 0; micro < job->train_grad_accum; micro++)
        CT_CHECK(micro_step(tr, step, micro, &loss_sum));
    double t_optimizer = ct_time_s();

    double norm = global_grad_norm(tr);
    if (!isfinite(norm))
        return ct_error(CT_ERR_INVALID,
                        "step %d: gradient norm is %f (loss %f): training "
                        "diverged; lower train.lr or set train.grad_clip",
                        step, norm, loss_sum / job->train_grad_accum);
    float clip = ct_clip_scale(norm, job->train_grad_clip);
    double lr = ct_lr_at(schedule_kind(job->train_schedule), job->train_lr, job->train_min_lr,
                         job->train_warmup_steps, job->train_steps, step);
    ct_adamw_hparams hp = {.lr = (float)lr,
                           .beta1 = (float)job->train_beta1,
                           .beta2 = (float)job->train_beta2,
                           .eps = (float)job->train_eps,
                           .weight_decay = (float)job->train_weight_decay};
    ct_adamw_step(&tr->opt, &tr->gpt, tr->params, (const float *const *)tr->grads, &hp, clip,
                  tr->kernels);
    double t1 = ct_time_s();
    double dt = t1 - t0;
    tr->optimizer_s += (t_passes - t0) + (t1 - t_optimizer);

    double tokens = (double)job->train_batch_size * job->train_grad_accum * job->model_seq_len;
    memset(stats, 0, sizeof(*stats));
    stats->step = step;
    stats->loss = loss_sum / job->train_grad_accum;
    stats->lr = lr;
    stats->grad_norm = norm;
    stats->ms = 1e3 * dt;
    stats->tokens_per_s = tokens / dt;
    if (tr->ceiling_gflops > 0)
        stats->mfu = tr->flops_per_token * stats->tokens_per_s / (tr->ceiling_gflops * 1e9);
    stats->batch_hash = ct_data_batch_hash(tr->train, &tr->sampler, step);
    tr->step++;
    return CT_OK;
}

ct_status ct_trainer_eval(ct_trainer *tr, double *val_loss) {
    const ct_job *job = &tr->job;
    *val_loss = NAN;
    if (!tr->val) return CT_OK;
    int B = job->train_batch_size, T = job->model_seq_len;
    double sum = 0.0;
    for (int i = 0; i < job->train_eval_steps; i++) {
        CT_CHECK(ct_data_get_batch(tr->val, &tr->val_sampler, i, 0, tr->inputs, tr->targets));
        CT_CHECK(ct_tape_reset(&tr->tape));
        tr->tape.recording = false;
        ct_tensor *loss =
            ct_gpt_forward_loss(&tr->gpt, &tr->tape, tr->inputs, tr->targets, B, T, 1.0f);
        tr->tape.recording = true;
        if (!loss) return ct_tape_status(&tr->tape);
        sum += *(float *)loss->data;
    }
    *val_loss = sum / job->train_eval_steps;
    return CT_OK;
}
