/*
 * Model and trainer behaviour on small GPTs: the initial loss is ln(vocab), one batch can be
 * overfitted, training on a learnable stream lowers the validation loss, gradient accumulation
 * equals one larger batch, two identical runs agree bitwise, and a warm step allocates nothing
 * (with OpenBLAS; with oneDNN only its per-call bookkeeping) in every recomputation mode.
 */
#include "data/data.h"
#include "model/model.h"
#include "test_util.h"
#include "train/train.h"
#include "train/train_internal.h"

#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- malloc interposition: counts every allocation the process makes through libc. */
extern void *__libc_malloc(size_t);
extern void *__libc_calloc(size_t, size_t);
extern void *__libc_realloc(void *, size_t);
static volatile long libc_allocations;
static volatile size_t libc_bytes;
void *malloc(size_t n) {
    libc_allocations++;
    libc_bytes += n;
    return __libc_malloc(n);
}
void *calloc(size_t a, size_t b) {
    libc_allocations++;
    libc_bytes += a * b;
    return __libc_calloc(a, b);
}
void *realloc(void *p, size_t n) {
    libc_allocations++;
    libc_bytes += n;
    return __libc_realloc(p, n);
}

static char data_dir[256];

/* A small job on synthetic data (vocabulary 64). */
static void small_job(ct_job *job) {
    ct_job_defaults(job);
    job->model_n_layer = 2;
    job->model_n_head = 2;
    job->model_n_embd = 32;
    job->model_vocab_size = 64;
    job->model_seq_len = 16;
    snprintf(job->data_train, sizeof(job->data_train), "%s/train_*.bin", data_dir);
    snprintf(job->data_val, sizeof(job->data_val), "%s/val_*.bin", data_dir);
    job->train_batch_size = 4;
    job->train_steps = 40;
    job->train_lr = 1e-2;
    job->train_min_lr = 1e-3;
    job->train_warmup_steps = 2;
    job->train_eval_steps = 4;
    job->device_threads_per_rank = 2;
    snprintf(job->source_path, sizeof(job->source_path), "test_gpt");
}

static ct_trainer *new_trainer(const ct_job *job) {
    ct_trainer *tr = NULL;
    ct_status status = ct_trainer_new(&tr, job, NULL);
    if (status) fprintf(stderr, "trainer: %s\n", ct_error_message());
    CU_ASSERT_FATAL(status == CT_OK);
    return tr;
}

static void test_initial_loss_is_ln_vocab(void) {
    ct_job job;
    small_job(&job);
    ct_trainer *tr = new_trainer(&job);
    double val;
    CU_ASSERT(ct_trainer_eval(tr, &val) == CT_OK);
    /* N(0, 0.02) weights give logits within ~0.1 of each other: loss within 2% of ln V. */
    CU_ASSERT(fabs(val - log(64.0)) < 0.02 * log(64.0));
    ct_trainer_free(tr);
}

static void test_overfits_one_batch_below_0_05(void) {
    ct_job job;
    small_job(&job);
    job.train_lr = 3e-3;
    job.train_weight_decay = 0.0;
    job.train_schedule[0] = '\0';
    strcpy(job.train_schedule, "constant");
    ct_trainer *tr = new_trainer(&job);
    double loss = 1e9;
    for (int i = 0; i < 300 && loss >= 0.05; i++) {
        ct_step_stats s;
        tr->step = 0; /* the same batch every time */
        CU_ASSERT_FATAL(ct_trainer_step(tr, &s) == CT_OK);
        loss = s.loss;
    }
    CU_ASSERT(loss < 0.05);
    ct_trainer_free(tr);
}

static void test_training_lowers_val_loss(void) {
    ct_job job;
    small_job(&job);
    ct_trainer *tr = new_trainer(&job);
    double before, after;
    CU_ASSERT(ct_trainer_eval(tr, &before) == CT_OK);
    for (int i = 0; i < job.train_steps; i++) {
        ct_step_stats s;
        CU_ASSERT_FATAL(ct_trainer_step(tr, &s) == CT_OK);
    }
    CU_ASSERT(ct_trainer_eval(tr, &after) == CT_OK);
    /* The synthetic chain has ~4 likely successors per token: well below ln 64 = 4.16. */
    CU_ASSERT(after < before - 1.0);
    ct_trainer_free(tr);
}

/* Relative L2 distance between two units' flat buffers, over the whole model. */
static double rel_l2(const ct_gpt *a, const ct_gpt *b, bool grads) {
    double diff = 0, norm = 0;
    for (int u = 0; u < a->n_units; u++) {
        const float *x = grads ? a->units[u].grad : a->units[u].data;
        const float *y = grads ? b->units[u].grad : b->units[u].data;
        for (int64_t i = 0; i < a->units[u].numel; i++) {
            diff += (double)(x[i] - y[i]) * (x[i] - y[i]);
            norm += (double)y[i] * y[i];
        }
    }
    return sqrt(diff / norm);
}

static void test_grad_accum_equals_larger_batch(void) {
    ct_job one, accum;
    small_job(&one);
    one.train_batch_size = 6;
    small_job(&accum);
    accum.train_batch_size = 2;
    accum.train_grad_accum = 3;
    ct_trainer *a = new_trainer(&one), *b = new_trainer(&accum);
    for (int i = 0; i < 3; i++) {
        ct_step_stats sa, sb;
        CU_ASSERT_FATAL(ct_trainer_step(a, &sa) == CT_OK);
        CU_ASSERT_FATAL(ct_trainer_step(b, &sb) == CT_OK);
        /* Same global batch; only the order of fp32 sums differs: 1e-6 relative. */
        CU_ASSERT(sa.batch_hash == sb.batch_hash);
        CU_ASSERT(ct_test_rel_err(sa.loss, sb.loss, 1e-12) < 1e-6);
        CU_ASSERT(ct_test_rel_err(sa.grad_norm, sb.grad_norm, 1e-12) < 1e-6);
        /* At equal parameters (the first step) the gradients agree to 1e-6. */
        if (i == 0) CU_ASSERT(rel_l2(&a->gpt, &b->gpt, true) < 1e-6);
    }
    /* Adam scales each element's update to about lr whatever its gradient's size, so elements
     * whose gradient is near zero turn rounding differences into ~1e-6 relative parameter
     * differences per step (measured 1.6e-6 after 2 steps): 1e-5 after 3. */
    CU_ASSERT(rel_l2(&a->gpt, &b->gpt, false) < 1e-5);
    ct_trainer_free(a);
    ct_trainer_free(b);
}

static void test_two_runs_are_bitwise_equal(void) {
    ct_job job;
    small_job(&job);
    ct_trainer *a = new_trainer(&job), *b = new_trainer(&job);
    for (int i = 0; i < 5; i++) {
        ct_step_stats sa, sb;
        CU_ASSERT_FATAL(ct_trainer_step(a, &sa) == CT_OK);
        CU_ASSERT_FATAL(ct_trainer_step(b, &sb) == CT_OK);
        CU_ASSERT(memcmp(&sa.loss, &sb.loss, sizeof(double)) == 0);
    }
    for (int u = 0; u < a->gpt.n_units; u++)
        CU_ASSERT(memcmp(a->gpt.units[u].data, b->gpt.units[u].data,
                         sizeof(float) * (size_t)a->gpt.units[u].numel) == 0);
    ct_trainer_free(a);
    ct_trainer_free(b);
}

/* fsdp without a process group keeps more units' buffers in flight at once (every unit
 * gathered through forward, full gradients through backward) than a pool sized for a fixed
 * count held: a deep model at world 1 once overran it. It trains, and matches ddp bitwise (the
 * same arithmetic on the same numbers). */
static void test_fsdp_at_world_1_with_many_units_matches_ddp(void) {
    ct_job ddp, fsdp;
    small_job(&ddp);
    ddp.model_n_layer = 12; /* 13 units: 26 buffers in flight */
    fsdp = ddp;
    snprintf(fsdp.parallel_strategy, sizeof(fsdp.parallel_strategy), "fsdp");
    ct_trainer *a = new_trainer(&ddp), *b = new_trainer(&fsdp);
    for (int i = 0; i < 3; i++) {
        ct_step_stats sa, sb;
        CU_ASSERT_FATAL(ct_trainer_step(a, &sa) == CT_OK);
        CU_ASSERT_FATAL(ct_trainer_step(b, &sb) == CT_OK);
        CU_ASSERT(memcmp(&sa.loss, &sb.loss, sizeof(double)) == 0);
    }
    ct_trainer_free(a);
    ct_trainer_free(b);
}

/* What five warm steps (after three of warm-up) of a small job on `blas` allocate, each
 * recomputation mode in turn (the sums over the modes). */
typedef struct {
    long ct_allocs;    /* through ct_alloc */
    long libc[5];      /* libc malloc/calloc/realloc calls, per step */
    size_t libc_bytes; /* their bytes, all five steps */
} warm_allocations;

static warm_allocations measure_warm_steps(const char *blas, const char *compute,
                                           const char *half_kernels) {
    warm_allocations w = {0};
    for (ct_recompute mode = CT_RECOMPUTE_NONE; mode <= CT_RECOMPUTE_SELECTIVE; mode++) {
        ct_job job;
        small_job(&job);
        job.train_grad_accum = 2;
        snprintf(job.device_blas, sizeof(job.device_blas), "%s", blas);
        snprintf(job.precision_compute, sizeof(job.precision_compute), "%s", compute);
        snprintf(job.device_half_kernels, sizeof(job.device_half_kernels), "%s", half_kernels);
        ct_trainer *tr = new_trainer(&job);
        ct_gpt_set_recompute(&tr->gpt, mode);
        ct_step_stats s;
        for (int i = 0; i < 3; i++)
            CU_ASSERT_FATAL(ct_trainer_step(tr, &s) == CT_OK);
        ct_mem_stats before, after;
        ct_mem_get_stats(&before);
        size_t bytes_before = libc_bytes;
        for (int i = 0; i < 5; i++) {
            long start = libc_allocations;
            CU_ASSERT_FATAL(ct_trainer_step(tr, &s) == CT_OK);
            w.libc[i] += libc_allocations - start;
        }
        ct_mem_get_stats(&after);
        w.ct_allocs += (long)(after.allocations - before.allocations);
        w.libc_bytes += libc_bytes - bytes_before;
        ct_trainer_free(tr);
    }
    return w;
}

static void test_warm_step_allocates_nothing_with_openblas(void) {
    warm_allocations w = measure_warm_steps("openblas", "fp32", "auto");
    CU_ASSERT_EQUAL(w.ct_allocs, 0);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(w.libc[i], 0);
}

/* bf16 parameters on the portable path: the half kernels' workspace grows during warm-up only,
 * and the casts of masters to parameters reuse their buffers. */
static void test_warm_bf16_step_allocates_nothing_on_the_portable_path(void) {
    warm_allocations w = measure_warm_steps("openblas", "bf16", "portable");
    CU_ASSERT_EQUAL(w.ct_allocs, 0);
    for (int i = 0; i < 5; i++)
        CU_ASSERT_EQUAL(w.libc[i], 0);
}

/* oneDNN's primitive API builds a small argument map (C++ containers) inside every
 * dnnl_primitive_execute; no call avoids it in oneDNN 2.6. Its primitives, memory objects and
 * scratchpads are made once (kernels/cpu/gemm.c), so a warm step allocates no buffer: nothing
 * through ct_alloc, the same libc allocations in every step (no primitive is remade), and
 * small ones (under 1 KiB on average: bookkeeping, not data). */
static void check_onednn_warm_steps(warm_allocations w) {
    CU_ASSERT_EQUAL(w.ct_allocs, 0);
    long count = 0;
    for (int i = 0; i < 5; i++) {
        CU_ASSERT_EQUAL(w.libc[i], w.libc[0]);
        count += w.libc[i];
    }
    CU_ASSERT(count == 0 || w.libc_bytes / (size_t)count < 1024);
}

static void test_warm_step_with_onednn_allocates_only_its_execution_records(void) {
    check_onednn_warm_steps(measure_warm_steps("onednn", "fp32", "auto"));
}

/* The native bf16 path runs its GEMMs on oneDNN too: the same bound (where the CPU has it). */
static void test_warm_native_bf16_step_allocates_only_onednn_execution_records(void) {
    ct_half_path path;
    if (ct_kern_cpu_half_path_for("native", &path) != CT_OK) {
        printf("\n    skipped: %s", ct_error_message());
        ct_error_clear();
        return;
    }
    check_onednn_warm_steps(measure_warm_steps("openblas", "bf16", "native"));
}

/* The plan's activation bound (which sizes the arena's reservation) holds the measured peak of
 * a recorded step in each recomputation mode, and is not wildly above it, on shapes that stress
 * each term: odd sizes, a long sequence (attention's blocks of rows), a wide vocabulary (the head's
 * chunk), deep and wide. */
static void test_activation_bound_holds_the_measured_peak(void) {
    static const int shapes[][6] = {/* n_layer, n_head, n_embd, vocab, seq_len, batch */
                                    {1, 1, 8, 64, 7, 3},
                                    {2, 2, 32, 64, 16, 4},
                                    {1, 2, 16, 64, 128, 2},
                                    {2, 2, 32, 20000, 16, 8},
                                    {4, 4, 64, 300, 32, 2}};
    for (size_t i = 0; i < CT_ARRAY_LEN(shapes); i++)
        for (ct_recompute mode = CT_RECOMPUTE_NONE; mode <= CT_RECOMPUTE_SELECTIVE; mode++) {
            ct_job job;
            small_job(&job);
            job.model_n_layer = shapes[i][0];
            job.model_n_head = shapes[i][1];
            job.model_n_embd = shapes[i][2];
            job.model_vocab_size = shapes[i][3];
            job.model_seq_len = shapes[i][4];
            job.train_batch_size = shapes[i][5];
            job.train_grad_accum = 2;
            ct_trainer *tr = new_trainer(&job);
            ct_gpt_set_recompute(&tr->gpt, mode);
            ct_step_stats s;
            CU_ASSERT_FATAL(ct_trainer_step(tr, &s) == CT_OK);
            size_t bound =
                ct_gpt_activation_bytes(tr->kernels, &tr->gpt.config, job.train_batch_size,
                                        job.model_seq_len, mode, CT_F32);
            size_t peak = tr->tape.data.peak_bytes + tr->tape.host.peak_bytes;
            printf("\n    shape %zu, %s: peak %zu bytes, bound %zu (%.2fx)", i,
                   ct_recompute_name(mode), peak, bound, (double)bound / (double)peak);
            CU_ASSERT(peak <= bound);
            /* Above the peak by the records' allowance (32 KiB a unit) and at most a third
             * more. */
            CU_ASSERT(bound <= peak + peak / 3 + (size_t)(job.model_n_layer + 2) * 32 * 1024);
            ct_trainer_free(tr);
        }
}

int main(void) {
    snprintf(data_dir, sizeof(data_dir), "/tmp/ctrain_test_gpt_XXXXXX");
    if (!mkdtemp(data_dir) || ct_data_synth(data_dir, 60000, 64, 5) != CT_OK) {
        fprintf(stderr, "cannot make test data: %s\n", ct_error_message());
        return 1;
    }
    const ct_test_case cases[] = {
        {"test_initial_loss_is_ln_vocab", test_initial_loss_is_ln_vocab},
        {"test_overfits_one_batch_below_0_05", test_overfits_one_batch_below_0_05},
        {"test_training_lowers_val_loss", test_training_lowers_val_loss},
        {"test_grad_accum_equals_larger_batch", test_grad_accum_equals_larger_batch},
        {"test_two_runs_are_bitwise_equal", test_two_runs_are_bitwise_equal},
        {"test_fsdp_at_world_1_with_many_units_matches_ddp",
         test_fsdp_at_world_1_with_many_units_matches_ddp},
        {"test_warm_step_allocates_nothing_with_openblas",
         test_warm_step_allocates_nothing_with_openblas},
        {"test_warm_step_with_onednn_allocates_only_its_execution_records",
         test_warm_step_with_onednn_allocates_only_its_execution_records},
        {"test_warm_bf16_step_allocates_nothing_on_the_portable_path",
         test_warm_bf16_step_allocates_nothing_on_the_portable_path},
        {"test_warm_native_bf16_step_allocates_only_onednn_execution_records",
         test_warm_native_bf16_step_allocates_only_onednn_execution_records},
        {"test_activation_bound_holds_the_measured_peak",
         test_activation_bound_holds_the_measured_peak},
    };
    int code = ct_test_run("gpt", cases, (int)CT_ARRAY_LEN(cases));
    char cmd[300];
    snprintf(cmd, sizeof(cmd), "rm -rf %s", data_dir);
    if (system(cmd) != 0) fprintf(stderr, "could not remove %s\n", data_dir);
    return code;
}
