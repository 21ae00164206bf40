/*
 * The trainer: everything one rank needs to take optimizer steps. It owns the model, the
 * optimizer state, the datasets, the tape and the batch buffers, all made once in
 * ct_trainer_new; a step then reads its batch (a pure function of the step number), runs
 * grad_accum forward/backward passes into the accumulated gradients, clips by the global norm
 * and applies AdamW, allocating nothing once warm.
 */
#include "checkpoint/sharded.h"
#include "common/fault.h"
#include "data/data.h"
#include "model/model.h"
#include "train/train.h"
#include "train/train_internal.h"

#include <math.h>
#include <stdio.h>
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
    tr->train_tokens = ct_data_num_tokens(tr->train);
    tr->train_fingerprint = ct_data_fingerprint(tr->train);
    tr->sampler = (ct_data_sampler){.seq_len = job->model_seq_len,
                                    .batch_size = job->train_batch_size,
                                    .grad_accum = job->train_grad_accum,
                                    .world_size = tr->world_size,
                                    .rank = tr->rank,
                                    .shuffle = job->data_shuffle,
                                    .seed = (uint64_t)job->train_seed};
    /* Evaluation reads train.eval_steps global batches of the validation data in order from
     * its start, each rank its share as in training: the same sequences at every world size of
     * the same global batch, so val_loss compares across a reshard. */
    tr->val_sampler = tr->sampler;
    tr->val_sampler.shuffle = false;
    return CT_OK;
}

/* Reads tokens [lo, hi) of `data` in chunks, failing (naming the file and byte offset) at the
 * first token >= vocab_size. */
static ct_status check_tokens(const ct_data_dataset *data, uint64_t lo, uint64_t hi) {
    const uint64_t chunk = 1 << 16;
    int32_t *buffer = ct_alloc(CT_MEM_DATA, sizeof(int32_t) * chunk);
    if (!buffer) return ct_error(CT_ERR_NOMEM, "a buffer to check the data");
    ct_status status = CT_OK;
    for (uint64_t at = lo; at < hi && status == CT_OK; at += chunk)
        status = ct_data_read_tokens(data, at, CT_MIN(chunk, hi - at), buffer);
    ct_free(CT_MEM_DATA, buffer, sizeof(int32_t) * chunk);
    return status;
}

/* Before the first step, everything the run will read: every token of data.train (each rank
 * its 1/world of the stream; a rank that finds a bad one ends the job), and that data.val
 * holds the sequences of an evaluation, every one of its tokens valid. A bad file must not cost a
 * trained model at the end of the run. */
static ct_status check_data(const ct_trainer *tr) {
    const ct_job *job = &tr->job;
    uint64_t n = ct_data_num_tokens(tr->train), W = (uint64_t)tr->world_size;
    uint64_t r = (uint64_t)tr->rank;
    CT_CHECK(check_tokens(tr->train, n / W * r + CT_MIN(r, n % W),
                          n / W * (r + 1) + CT_MIN(r + 1, n % W)));
    if (!tr->val) return CT_OK;
    uint64_t T = (uint64_t)job->model_seq_len, have = ct_data_num_sequences(tr->val, (int)T);
    uint64_t global = W * (uint64_t)job->train_batch_size * (uint64_t)job->train_grad_accum;
    uint64_t need = (uint64_t)job->train_eval_steps * global;
    if (have < need)
        return ct_error(CT_ERR_INVALID,
                        "data.val (%s, first file %s) holds %llu tokens = %llu sequences of "
                        "seq_len + 1 = %llu tokens; an evaluation reads train.eval_steps (%d) x "
                        "the global batch (%llu sequences) = %llu: lower train.eval_steps to at "
                        "most %llu, or add validation data",
                        job->data_val, ct_data_shard_path(tr->val, 0),
                        (unsigned long long)ct_data_num_tokens(tr->val), (unsigned long long)have,
                        (unsigned long long)(T + 1), job->train_eval_steps,
                        (unsigned long long)global, (unsigned long long)need,
                        (unsigned long long)(have / global));
    return check_tokens(tr->val, 0, ct_data_num_tokens(tr->val)); /* all of it: it is small */
}

/* The arena's reservation: the activation bound with a quarter of margin, plus 64 MiB. */
static size_t activation_reserve_bytes(size_t activation_bytes) {
    return activation_bytes + activation_bytes / 4 + ((size_t)64 << 20);
}

static double gib(size_t bytes) {
    return (double)bytes / (1 << 30);
}

/* Before anything large is allocated: this rank's plan (model state, pooled units, the
 * background save's host copy, activations) times the ranks on this machine, against the
 * memory the machine can still give, and the reservation against `ulimit -v`. A job that
 * cannot fit fails here with the figures rather than being killed by the kernel later.
 * CTRAIN_SKIP_MEMORY_CHECK=1 skips the memory figure (the estimate may be wrong). */
static ct_status check_memory(const ct_trainer *tr, ct_shard_strategy strategy, int group_size) {
    const ct_job *job = &tr->job;
    size_t state = ct_shard_plan_bytes(&tr->gpt, strategy, group_size, tr->compute);
    /* The background save's copy: 3 floats per element of this rank's slice of the layout
     * (hsdp: over its shard group, otherwise over the world). */
    size_t layout_ranks = (size_t)(strategy == CT_SHARD_HSDP ? group_size : tr->world_size);
    size_t copy = job->checkpoint_async ? 12 * (size_t)tr->gpt.num_params / layout_ranks : 0;
    size_t activations =
        ct_gpt_activation_bytes(tr->kernels, &tr->gpt.config, job->train_batch_size,
                                job->model_seq_len, tr->gpt.recompute, tr->compute);
    size_t rank_bytes = state + copy + activations;
    int local = tr->world ? ct_comm_local_size(tr->world) : 1;
    const char *source;
    size_t available = ct_mem_available_bytes(&source);
    const char *skip = getenv("CTRAIN_SKIP_MEMORY_CHECK");
    if (available > 0 && rank_bytes * (size_t)local > available &&
        !(skip && strcmp(skip, "1") == 0))
        return ct_error(CT_ERR_INVALID,
                        "%s: this job needs about %.2f GiB per rank (model state %.2f GiB for "
                        "%s over %d rank(s), activations %.2f GiB for batch_size %d "
                        "x seq_len %d, background-save copy %.2f GiB) x %d rank%s on this "
                        "machine = %.2f GiB, but %.2f GiB are available (%s). Lower "
                        "train.batch_size (raise grad_accum to keep the global batch), shard "
                        "more (parallel.strategy = \"fsdp\"), use more machines, or set "
                        "CTRAIN_SKIP_MEMORY_CHECK=1 if the estimate is wrong",
                        job->source_path, gib(rank_bytes), gib(state), job->parallel_strategy,
                        group_size, gib(activations), job->train_batch_size, job->model_seq_len,
                        gib(copy), local, local == 1 ? "" : "s", gib(rank_bytes * (size_t)local),
                        gib(available), source);
    size_t address_left = ct_mem_address_space_left_bytes();
    size_t reserve = activation_reserve_bytes(activations) + state + copy;
    if (address_left > 0 && reserve > address_left)
        return ct_error(CT_ERR_INVALID,
                        "%s: this rank needs about %.2f GiB of address space (activations "
                        "reserved %.2f GiB, model state %.2f GiB), but `ulimit -v` leaves %.2f "
                        "GiB: raise the limit or lower train.batch_size",
                        job->source_path, gib(reserve), gib(activation_reserve_bytes(activations)),
                        gib(state + copy), gib(address_left));
    return CT_OK;
}

/* precision.compute's name as a dtype. */
static ct_status parse_compute(const char *name, ct_dtype *dtype) {
    static const struct {
        const char *name;
        ct_dtype dtype;
    } formats[] = {{"fp32", CT_F32}, {"bf16", CT_BF16}, {"fp16", CT_F16}};
    for (size_t i = 0; i < CT_ARRAY_LEN(formats); i++)
        if (strcmp(name, formats[i].name) == 0) {
            *dtype = formats[i].dtype;
            return CT_OK;
        }
    return ct_error(CT_ERR_INVALID, "precision.compute = \"%s\" (fp32, bf16, fp16)", name);
}

static ct_status build_model(ct_trainer *tr) {
    const ct_job *job = &tr->job;
    ct_gpt_config config = {.n_layer = job->model_n_layer,
                            .n_head = job->model_n_head,
                            .n_embd = job->model_n_embd,
                            .vocab_size = job->model_vocab_size,
                            .seq_len = job->model_seq_len};
    CT_CHECK(ct_gpt_init(&tr->gpt, &config));
    ct_recompute recompute;
    CT_CHECK(ct_recompute_parse(job->memory_activation_checkpointing, &recompute));
    ct_gpt_set_recompute(&tr->gpt, recompute);
    ct_shard_config cfg = {.bucket_mb = job->parallel_bucket_mb,
                           .prefetch = job->parallel_prefetch,
                           .reshard_after_forward = job->parallel_reshard_after_forward,
                           .shard_group_size = job->parallel_shard_group_size,
                           .reduce_every_microbatch = job->parallel_reduce_every_microbatch,
                           .compute = tr->compute,
                           .reduce = strcmp(job->precision_reduce, "bf16") == 0 ? CT_BF16 : CT_F32};
    CT_CHECK(ct_shard_parse_strategy(job->parallel_strategy, &cfg.strategy));
    if (cfg.shard_group_size == 0)
        cfg.shard_group_size = tr->world ? ct_comm_local_size(tr->world) : 1;
    int group_size = cfg.strategy == CT_SHARD_HSDP  ? cfg.shard_group_size
                     : cfg.strategy == CT_SHARD_DDP ? 1
                                                    : tr->world_size;
    CT_CHECK(check_memory(tr, cfg.strategy, CT_MAX(group_size, 1)));
    tr->activation_plan_bytes =
        ct_gpt_activation_bytes(tr->kernels, &config, job->train_batch_size, job->model_seq_len,
                                tr->gpt.recompute, tr->compute);
    CT_CHECK(ct_tape_set_capacity(&tr->tape, activation_reserve_bytes(tr->activation_plan_bytes)));
    CT_CHECK(ct_shard_new(&tr->shard, &tr->gpt, tr->world, &cfg, tr->kernels,
                          (uint64_t)job->train_seed));
    if (job->model_init_from[0])
        CT_CHECK(ct_ckpt_model_into_shard(job->model_init_from, &tr->gpt.config, tr->shard));
    tr->tape.hooks = ct_shard_hooks(tr->shard);
    return CT_OK;
}

ct_status ct_trainer_new(ct_trainer **out, const ct_job *job, ct_comm *world) {
    *out = NULL;
    const ct_kernels *kernels;
    ct_kernels_options device = {.type = job->device_type,
                                 .cpu_threads = job->device_threads_per_rank,
                                 .blas = job->device_blas,
                                 .half = job->device_half_kernels};
    if (ct_kernels_for_device(&device, &kernels)) {
        char why[512];
        snprintf(why, sizeof(why), "%s", ct_error_message());
        return ct_error(CT_ERR_INVALID, "%s: %s", job->source_path, why);
    }
    ct_trainer *tr = ct_alloc(CT_MEM_OTHER, sizeof(ct_trainer));
    if (!tr) return CT_ERR_NOMEM;
    tr->job = *job;
    *out = tr;
    tr->world = world;
    tr->rank = world ? ct_comm_rank(world) : 0;
    tr->world_size = world ? ct_comm_size(world) : 1;
    tr->kernels = kernels;
    CT_CHECK(parse_compute(job->precision_compute, &tr->compute));
    ct_loss_scaler_init(&tr->scaler, tr->compute == CT_F16);
    CT_CHECK(open_datasets(tr));
    CT_CHECK(check_data(tr));
    ct_tape_init(&tr->tape, tr->kernels);
    CT_CHECK(build_model(tr));
    CT_CHECK(ct_trainer_resume(tr));
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
    ct_ckpt_saver_free(tr->saver);
    tr->saver = NULL;
    size_t tokens = (size_t)tr->job.train_batch_size * tr->job.model_seq_len;
    ct_free(CT_MEM_DATA, tr->inputs, sizeof(int32_t) * tokens);
    ct_free(CT_MEM_DATA, tr->targets, sizeof(int32_t) * tokens);
    ct_tape_free(&tr->tape);
    ct_shard_free(tr->shard);
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
    /* Summed over ranks by the reductions, this makes the gradient the global batch's mean
     * (times fp16's loss scale, divided out again before the update). */
    float grad_scale = (float)(tr->scaler.scale / ((double)job->train_grad_accum * tr->world_size));
    /* CTRAIN_FAULT=overflow:rank=R:step=S: an infinite loss scale for that micro-batch. */
    if (tr->scaler.enabled && micro == 0 && ct_fault_fires("overflow", tr->rank, step))
        grad_scale = INFINITY;
    CT_CHECK(ct_shard_begin_micro(tr->shard, micro == 0, micro + 1 == job->train_grad_accum));
    ct_tensor *loss =
        ct_gpt_forward_loss(&tr->gpt, &tr->tape, tr->inputs, tr->targets, B, T, grad_scale);
    if (!loss) return ct_tape_status(&tr->tape);
    float value;
    CT_CHECK(ct_tape_read_scalar(&tr->tape, loss, &value));
    *loss_sum += value;
    return ct_tape_backward(&tr->tape);
}

ct_status ct_trainer_step(ct_trainer *tr, ct_step_stats *stats) {
    const ct_job *job = &tr->job;
    int step = tr->step;
    double t0 = ct_time_s();
    ct_shard_mark_step(tr->shard, step);
    CT_CHECK(ct_shard_begin_step(tr->shard));
    double t_passes = ct_time_s();
    double loss_sum = 0.0;
    for (int micro = 0; micro < job->train_grad_accum; micro++)
        CT_CHECK(micro_step(tr, step, micro, &loss_sum));
    double t_optimizer = ct_time_s();
    CT_CHECK(ct_shard_finish_grads(tr->shard));
    /* The step's loss: the mean over ranks of their micro-batch means. The same all-reduce
     * tells every rank whether any was asked to stop (a signal), so they stop together. */
    double reduced[2] = {loss_sum, tr->stop_requested ? 1.0 : 0.0};
    CT_CHECK(ct_shard_sum_over_ranks(tr->shard, reduced, 2));
    loss_sum = reduced[0] / tr->world_size;

    double norm;
    CT_CHECK(ct_shard_grad_norm(tr->shard, &norm));
    double loss_scale = tr->scaler.scale;
    bool take_step = ct_loss_scaler_update(&tr->scaler, norm);
    norm /= loss_scale;
    if (take_step && !isfinite(norm))
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
    /* A skipped step (an fp16 overflow) leaves params and Adam state as they were. */
    if (take_step) CT_CHECK(ct_shard_optimizer_step(tr->shard, &hp, (float)(clip / loss_scale)));
    double t1 = ct_time_s();
    double dt = t1 - t0;
    tr->optimizer_s += (t_passes - t0) + (t1 - t_optimizer);

    double tokens =
        (double)job->train_batch_size * job->train_grad_accum * job->model_seq_len * tr->world_size;
    memset(stats, 0, sizeof(*stats));
    stats->step = step;
    stats->loss = loss_sum / job->train_grad_accum;
    stats->lr = lr;
    stats->grad_norm = norm;
    stats->loss_scale = loss_scale;
    stats->skipped = !take_step;
    stats->ms = 1e3 * dt;
    stats->tokens_per_s = tokens / dt;
    if (tr->ceiling_gflops > 0)
        stats->mfu = tr->flops_per_token * stats->tokens_per_s /
                     (tr->ceiling_gflops * 1e9 * tr->world_size); /* each rank: its own cores */
    stats->batch_hash = ct_data_batch_hash(tr->train, &tr->sampler, step);
    stats->stop = reduced[1] > 0;
    ct_shard_step_comm_bytes(tr->shard, stats->comm_bytes);
    tr->step++;
    return CT_OK;
}

ct_status ct_trainer_agree(ct_trainer *tr, ct_status status, const char *what) {
    return tr->shard ? ct_shard_agree(tr->shard, status, what) : status;
}

ct_status ct_trainer_eval(ct_trainer *tr, double *val_loss) {
    const ct_job *job = &tr->job;
    *val_loss = NAN;
    if (!tr->val) return CT_OK;
    int B = job->train_batch_size, T = job->model_seq_len;
    double sum = 0.0;
    for (int i = 0; i < job->train_eval_steps; i++)
        for (int micro = 0; micro < job->train_grad_accum; micro++) {
            CT_CHECK(
                ct_data_get_batch(tr->val, &tr->val_sampler, i, micro, tr->inputs, tr->targets));
            CT_CHECK(ct_tape_reset(&tr->tape));
            tr->tape.recording = false;
            ct_tensor *loss =
                ct_gpt_forward_loss(&tr->gpt, &tr->tape, tr->inputs, tr->targets, B, T, 1.0f);
            tr->tape.recording = true;
            if (!loss) return ct_tape_status(&tr->tape);
            float value;
            CT_CHECK(ct_tape_read_scalar(&tr->tape, loss, &value));
            sum += value;
        }
    /* Every micro-batch has B sequences: the mean of their means is the mean over all. */
    CT_CHECK(ct_shard_sum_over_ranks(tr->shard, &sum, 1));
    *val_loss = sum / ((double)job->train_eval_steps * job->train_grad_accum * tr->world_size);
    return CT_OK;
}
