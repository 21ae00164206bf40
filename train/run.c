/*
 * The training run as a user sees it: the banner, one line per log.every steps, evaluation,
 * the metrics file (metrics.c), checkpoints and the final weights. Rank-local work is in
 * trainer.c.
 *
 * Nothing is lost:
 * - Everything the run reads is checked when the trainer is made, before the first step
 *   (trainer.c), and the checkpoint to resume must be this run's (ckpt_io.c).
 * - At the last step the checkpoint and final.bin are written before the final evaluation. A
 *   save that fails is made again, synchronously, from the state still in memory into the
 *   first place that takes it (the directory above checkpoint.dir, then $TMPDIR or /tmp);
 *   the run then stops with CT_EXIT_CONFIG, saying where the state went.
 * - SIGTERM, SIGINT and SIGUSR1 ask the run to stop: each rank notes the signal, the ranks agree
 *   at the next step boundary (the loss all-reduce carries the flag, trainer.c), save a
 *   checkpoint at that step and return CT_EXIT_STOPPED. A second SIGINT or SIGTERM ends the
 *   process at once.
 * - A run resumed at train.steps is complete: it says so and changes nothing.
 * Exit codes are CT_EXIT_* (launcher.h): errors of configuration, data and disk, which a
 * restart would meet again, are CT_EXIT_CONFIG; other failures CT_EXIT_FAILED.
 */
#include "common/fault.h"
#include "kernels/kernels.h"
#include "train/train.h"
#include "train/train_internal.h"

#include <errno.h>
#include <math.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- stop signals */

static const int stop_signals[] = {SIGTERM, SIGINT, SIGUSR1};
#define N_STOP_SIGNALS ((int)CT_ARRAY_LEN(stop_signals))
static volatile sig_atomic_t stop_signal; /* the first one received, or 0 */

static void on_stop_signal(int sig) {
    if (stop_signal != 0 && sig != SIGUSR1) { /* asked twice: stop now, as the signal would */
        signal(sig, SIG_DFL);
        raise(sig);
        return;
    }
    if (stop_signal == 0) stop_signal = sig;
}

static const char *stop_signal_name(int sig) {
    return sig == SIGTERM   ? "SIGTERM"
           : sig == SIGINT  ? "SIGINT"
           : sig == SIGUSR1 ? "SIGUSR1"
                            : "another rank";
}

static bool handlers_installed;
static struct sigaction old_handlers[N_STOP_SIGNALS];

void ct_train_catch_stop_signals(void) {
    if (handlers_installed) return;
    struct sigaction sa = {.sa_handler = on_stop_signal, .sa_flags = SA_RESTART};
    sigemptyset(&sa.sa_mask);
    for (int i = 0; i < N_STOP_SIGNALS; i++)
        sigaction(stop_signals[i], &sa, &old_handlers[i]);
    handlers_installed = true;
}

static void release_stop_signals(void) {
    for (int i = 0; i < N_STOP_SIGNALS; i++)
        sigaction(stop_signals[i], &old_handlers[i], NULL);
    handlers_installed = false;
    stop_signal = 0;
}

/* Whether the run's GEMMs take bf16 inputs: compute bf16 on the native half path. */
static bool gemms_in_bf16(const ct_trainer *tr) {
    return tr->compute == CT_BF16 && tr->kernels->ctx.cpu_half == CT_HALF_NATIVE;
}

/* The GEMM rate MFU is measured against: best of 10 (noisy host) of a 1024^3 GEMM in the dtype
 * and on the library the run's GEMMs use (bf16 on oneDNN, else f32 on device.blas: the portable
 * half path computes in f32). */
static double ceiling_gflops(const ct_trainer *tr) {
    double gflops = 0.0;
    if (gemms_in_bf16(tr) &&
        ct_kern_cpu_gemm_gflops(1024, 10, CT_BLAS_ONEDNN, CT_BF16, &gflops) == CT_OK)
        return gflops;
    ct_error_clear();
    return ct_kern_cpu_sgemm_gflops(1024, 10, tr->kernels->ctx.cpu_blas);
}

static void print_banner(const ct_trainer *tr, const char *run_dir) {
    const ct_job *job = &tr->job;
    const ct_gpt *gpt = &tr->gpt;
    double mib = 1.0 / (1 << 20);
    printf("ctrain: %s\n", job->source_path);
    char plan[256];
    ct_shard_describe_plan(tr->shard, plan, sizeof(plan));
    printf("  world size %d | strategy %s | device cpu, %d threads per rank\n", tr->world_size,
           job->parallel_strategy, ct_kern_cpu_threads());
    printf("  model gpt2: n_layer %d n_head %d n_embd %d vocab %d seq_len %d | %.2fM params | "
           "%.2f MFLOP/token\n",
           job->model_n_layer, job->model_n_head, job->model_n_embd, job->model_vocab_size,
           job->model_seq_len, gpt->num_params / 1e6, tr->flops_per_token / 1e6);
    ct_shard_memory memory;
    ct_shard_get_memory(tr->shard, &memory);
    printf("  precision: compute %s, reduce %s%s\n", job->precision_compute, job->precision_reduce,
           tr->scaler.enabled ? ", dynamic loss scale from 65536" : "");
    printf("  memory per rank (docs/memory.md): params %.1f MiB %s", memory.params_bytes * mib,
           ct_dtype_name(memory.compute));
    if (memory.masters_bytes) printf(" + fp32 masters %.1f MiB", memory.masters_bytes * mib);
    printf(", grads %.1f MiB, Adam %.1f MiB = model state %.1f MiB\n    formula %s\n"
           "    activations planned up to %.1f MiB (activation_checkpointing %s) | comm buffers "
           "%.1f MiB\n",
           memory.grads_bytes * mib, memory.optimizer_bytes * mib, memory.model_state_bytes * mib,
           plan, tr->activation_plan_bytes * mib, job->memory_activation_checkpointing,
           memory.comm_buffer_bytes * mib);
    printf("  data: %s (%llu tokens, %d shards)", job->data_train,
           (unsigned long long)ct_data_num_tokens(tr->train), ct_data_num_shards(tr->train));
    if (tr->val)
        printf(" | val %s (%llu tokens)", job->data_val,
               (unsigned long long)ct_data_num_tokens(tr->val));
    printf("\n  batch: %d ranks x %d x %d tokens x %d micro-batches = %d tokens/step | %d steps | "
           "lr %g (%s, warmup %d, min %g)\n",
           tr->world_size, job->train_batch_size, job->model_seq_len, job->train_grad_accum,
           tr->world_size * job->train_batch_size * job->model_seq_len * job->train_grad_accum,
           job->train_steps, job->train_lr, job->train_schedule, job->train_warmup_steps,
           job->train_min_lr);
    char kernels[256];
    ct_kern_describe_half(tr->kernels, tr->compute, kernels, sizeof(kernels));
    printf("  kernels: %s\n", kernels);
    printf("  GEMM ceiling %.1f GFLOP/s (%s 1024^3 on %s, %d threads) | run dir %s\n",
           tr->ceiling_gflops, gemms_in_bf16(tr) ? "bf16" : "f32",
           gemms_in_bf16(tr) ? "onednn" : ct_kern_cpu_blas_name(tr->kernels->ctx.cpu_blas),
           ct_kern_cpu_threads(), run_dir);
    fflush(stdout);
}

/* Steps left out of the profile: the first ones fault in and consolidate the arena. */
#define PROFILE_WARMUP_STEPS 3

/* CTRAIN_PROFILE=1: where a step's time goes, per op kind (forward and backward) and for the
 * rest of the step, averaged over the steps after warm-up. */
static void print_profile(const ct_trainer *tr, double total_s, int steps) {
    const ct_tape_profile *p = &tr->profile;
    if (!tr->tape.profile || steps <= 0) return;
    double per_step = 1e3 / steps, accounted = tr->data_s + tr->optimizer_s;
    printf("profile (ms per step, mean of %d steps after %d warm-up):\n  %-14s %9s %9s %7s\n",
           steps, PROFILE_WARMUP_STEPS, "op", "forward", "backward", "share");
    for (int i = 0; i < p->n_ops; i++) {
        double op_s = p->fwd_s[i] + p->bwd_s[i];
        accounted += op_s;
        printf("  %-14s %9.2f %9.2f %6.1f%%\n", p->names[i], p->fwd_s[i] * per_step,
               p->bwd_s[i] * per_step, 100 * op_s / total_s);
    }
    printf("  %-14s %9.2f %9s %6.1f%%\n", "optimizer", tr->optimizer_s * per_step, "",
           100 * tr->optimizer_s / total_s);
    printf("  %-14s %9.2f %9s %6.1f%%\n", "data", tr->data_s * per_step, "",
           100 * tr->data_s / total_s);
    printf("  %-14s %9.2f %9s %6.1f%%\n", "other", (total_s - accounted) * per_step, "",
           100 * (total_s - accounted) / total_s);
}

/* CTRAIN_STOP_AFTER=N (tests only): save a checkpoint after step N and exit 0 without the
 * final weights, as an interrupted run would have left it; 0 = unset. */
static int stop_after_steps(void) {
    const char *text = getenv("CTRAIN_STOP_AFTER");
    return text ? atoi(text) : 0;
}

/* Configuration, data and disk errors would fail a restart the same way. */
static int exit_code_of(ct_status status) {
    bool lasting = status == CT_ERR_INVALID || status == CT_ERR_FORMAT || status == CT_ERR_IO;
    return lasting ? CT_EXIT_CONFIG : CT_EXIT_FAILED;
}

static int fail(const char *what, ct_status status) {
    ct_log(CT_LOG_ERROR, "train", "%s%s%s", what, what[0] ? ": " : "", ct_error_message());
    return exit_code_of(status);
}

/* ---------------------------------------------------------------- saving */

#define RESCUE_PLACES 2

/* Where state goes when its own directory will not take it: the directory above `dir`, then
 * $TMPDIR (else /tmp)/ctrain-rescue-<run name>. */
static void rescue_dir(const ct_trainer *tr, const char *dir, int place, char *out, size_t bytes) {
    if (place == 0) {
        const char *slash = strrchr(dir, '/');
        snprintf(out, bytes, "%.*s", slash ? (int)(slash - dir) : 1, slash ? dir : ".");
        if (!out[0]) snprintf(out, bytes, "/");
        return;
    }
    char run_dir[CT_JOB_STR];
    ct_job_run_dir(&tr->job, run_dir, sizeof(run_dir));
    const char *name = strrchr(run_dir, '/'), *tmp = getenv("TMPDIR");
    int n = snprintf(out, bytes, "%s/ctrain-rescue-%s", tmp && tmp[0] ? tmp : "/tmp",
                     name ? name + 1 : run_dir);
    if (n < 0 || (size_t)n >= bytes) snprintf(out, bytes, "/tmp/ctrain-rescue");
}

/* The job as job.toml text, in a malloc'd string (the manifest keeps it). */
static ct_status job_text(const ct_job *job, char **text) {
    size_t bytes;
    FILE *f = open_memstream(text, &bytes);
    if (!f) return ct_error(CT_ERR_NOMEM, "open_memstream: %s", strerror(errno));
    ct_job_print(job, f);
    fclose(f);
    return CT_OK;
}

/* A checkpoint of tr->step in `dir` (async as checkpoint.async says, unless `sync`). */
static ct_status save_checkpoint_in(ct_trainer *tr, const char *dir, bool sync) {
    if (!tr->saver) CT_CHECK(ct_ckpt_saver_new(&tr->saver, tr->shard, &tr->gpt, tr->world));
    char *config_text = NULL;
    CT_CHECK(job_text(&tr->job, &config_text));
    ct_ckpt_save_info info = {.dir = dir,
                              .zstd_level = tr->job.checkpoint_zstd_level,
                              .async = tr->job.checkpoint_async && !sync,
                              .keep = tr->job.checkpoint_keep,
                              .strategy = tr->job.parallel_strategy,
                              .config_text = config_text,
                              .rng_seed = (uint64_t)tr->job.train_seed,
                              .data_fingerprint = tr->train_fingerprint,
                              .data_tokens = tr->train_tokens,
                              .has_loss_scale = tr->scaler.enabled,
                              .loss_scale = tr->scaler.scale,
                              .loss_scale_good_steps = tr->scaler.good_steps,
                              .skipped_steps = tr->scaler.skipped_steps};
    ct_status status = ct_ckpt_save(tr->saver, tr->step, &info);
    free(config_text);
    return status;
}

/* A checkpoint at tr->step; with `wait`, committed on every rank when this returns. When
 * checkpoint.dir cannot take it (or an earlier background save failed), the state is saved
 * again synchronously into the rescue places, and an error says where it went (or that no
 * place took it): the caller stops the run. */
static ct_status save_checkpoint(ct_trainer *tr, bool wait) {
    char dir[CT_JOB_STR], first_error[1024];
    ct_job_checkpoint_dir(&tr->job, dir, sizeof(dir));
    ct_status status = save_checkpoint_in(tr, dir, false);
    if (status == CT_OK && wait) status = ct_ckpt_saver_wait(tr->saver);
    if (status == CT_OK) return CT_OK;
    snprintf(first_error, sizeof(first_error), "%s", ct_error_message());
    ct_log(CT_LOG_ERROR, "checkpoint", "%s; saving step %d elsewhere", first_error, tr->step);
    for (int place = 0; place < RESCUE_PLACES; place++) {
        char rescue[CT_JOB_STR], rescued[CT_JOB_STR + 32];
        rescue_dir(tr, dir, place, rescue, sizeof(rescue));
        ct_status again = save_checkpoint_in(tr, rescue, true);
        ct_ckpt_step_path(rescue, tr->step, false, rescued, sizeof(rescued));
        if (again == CT_OK)
            return ct_error(CT_ERR_IO,
                            "%s; the checkpoint of step %d was saved to %s instead: fix "
                            "checkpoint.dir, then resume with checkpoint.resume=%s",
                            first_error, tr->step, rescued, rescued);
        ct_log(CT_LOG_ERROR, "checkpoint", "%s", ct_error_message());
    }
    return ct_error(status, "%s; no rescue place took the checkpoint of step %d either (see above)",
                    first_error, tr->step);
}

/* Final weights as an llm.c model file, written by rank 0 unless `ready` (rank 0's) says its
 * directory failed; every rank takes part in gathering the units (a collective under fsdp)
 * and returns the outcome. */
static ct_status save_final_at(ct_trainer *tr, const char *path, ct_status ready) {
    ct_status status = ct_ckpt_model_from_shard(path, &tr->gpt.config, tr->shard, tr->rank, ready);
    return ct_trainer_agree(tr, status, "writing the final weights");
}

/* final.bin in the run directory, else in a rescue place (an error says where it went). */
static ct_status save_final(ct_trainer *tr, const char *run_dir) {
    char path[CT_JOB_STR + 32], first_error[1024];
    snprintf(path, sizeof(path), "%s/final.bin", run_dir);
    ct_status status = save_final_at(tr, path, CT_OK);
    if (status == CT_OK) {
        if (tr->rank == 0)
            printf("final weights: %s | peak RSS %.1f MiB\n", path,
                   ct_train_peak_rss_bytes() / 1048576.0);
        return CT_OK;
    }
    snprintf(first_error, sizeof(first_error), "%s", ct_error_message());
    for (int place = 0; place < RESCUE_PLACES; place++) {
        char dir[CT_JOB_STR];
        rescue_dir(tr, run_dir, place, dir, sizeof(dir));
        snprintf(path, sizeof(path), "%s/final.bin", dir);
        ct_status ready = tr->rank == 0 ? ct_mkdir_p(dir) : CT_OK;
        if (save_final_at(tr, path, ready) == CT_OK)
            return ct_error(CT_ERR_IO, "%s; the final weights were written to %s instead",
                            first_error, path);
    }
    return ct_error(status, "%s; no rescue place took the final weights either", first_error);
}

/* ---------------------------------------------------------------- the run */

static void print_step(const ct_job *job, const ct_step_stats *stats, double val_loss) {
    printf("step %5d/%d | loss %.4f | lr %.2e | norm %6.3f | %7.1f ms | %7.0f tok/s | "
           "MFU %4.1f%%",
           stats->step + 1, job->train_steps, stats->loss, stats->lr, stats->grad_norm, stats->ms,
           stats->tokens_per_s, 100 * stats->mfu);
    if (!isnan(val_loss)) printf(" | val %.4f", val_loss);
    if (stats->skipped)
        printf(" | overflow: step skipped, loss scale %g -> %g", stats->loss_scale,
               stats->loss_scale / 2 < 1 ? 1 : stats->loss_scale / 2);
    printf("\n");
    fflush(stdout);
}

/* A run resumed at train.steps: nothing to train. final.bin is written when it is missing (a
 * crash between the last checkpoint and the weights). */
static int finish_complete_run(ct_trainer *tr, const char *run_dir) {
    char path[CT_JOB_STR + 32];
    snprintf(path, sizeof(path), "%s/final.bin", run_dir);
    struct stat sb;
    int32_t missing = stat(path, &sb) != 0;
    /* rank 0's file system decides for everyone */
    if (ct_shard_broadcast_from_rank0(tr->shard, &missing, 1) != CT_OK)
        return fail("", CT_ERR_EXTERNAL);
    if (missing) {
        ct_status status = save_final(tr, run_dir);
        if (status != CT_OK) return fail("saving final weights", status);
    }
    if (tr->rank == 0)
        printf("%s: this run is complete: %s is step %d of train.steps = %d; nothing to train "
               "(raise train.steps to train further, or start over with "
               "checkpoint.resume=replace)\n",
               tr->job.source_path, tr->resumed_from, tr->step, tr->job.train_steps);
    return CT_EXIT_OK;
}

/* The steps from tr->step to the end (or a stop); returns the exit code. */
static int train_steps(ct_trainer *tr, ct_train_metrics *metrics, const char *run_dir) {
    const ct_job *job = &tr->job;
    int code = CT_EXIT_OK, first = tr->step, stop_after = stop_after_steps();
    double train_s = 0.0;
    bool stopped = false, test_stop = false;
    for (int step = first; step < job->train_steps && !stopped; step++) {
        ct_fault_kill_point("kill", tr->rank, step);
        ct_step_stats stats;
        double t0 = ct_time_s();
        if (step == first + PROFILE_WARMUP_STEPS) { /* restart the profile once warm */
            memset(&tr->profile, 0, sizeof(tr->profile));
            tr->data_s = tr->optimizer_s = train_s = 0.0;
        }
        tr->stop_requested = stop_signal != 0;
        ct_status status = ct_trainer_step(tr, &stats);
        train_s += ct_time_s() - t0;
        if (status != CT_OK) return fail("training step", status);
        bool last = step + 1 == job->train_steps;
        test_stop = stop_after > 0 && tr->step == stop_after;
        stopped = (stats.stop || test_stop) && !last;
        bool periodic = job->checkpoint_every > 0 && tr->step % job->checkpoint_every == 0;
        bool eval =
            tr->val &&
            (last || (job->train_eval_every > 0 && (step + 1) % job->train_eval_every == 0));
        double val_loss = NAN;
        if (last || stopped || periodic) { /* the state first: then nothing after can lose it */
            status = save_checkpoint(tr, last || stopped);
            if (status == CT_OK && last) status = save_final(tr, run_dir);
            if (status != CT_OK) {
                code = fail("saving", status);
                break;
            }
        }
        if (eval && (status = ct_trainer_eval(tr, &val_loss)) != CT_OK) {
            code = fail("evaluation", status);
            break;
        }
        bool logged = eval || last || stopped || stats.skipped ||
                      (step + 1) % job->log_every == 0 || step == 0;
        if (logged && tr->rank == 0) {
            print_step(job, &stats, val_loss);
            ct_train_metrics_write(metrics, tr, &stats, val_loss);
        }
    }
    if (tr->rank == 0) print_profile(tr, train_s, tr->step - first - PROFILE_WARMUP_STEPS);
    if (stopped && test_stop) {
        if (tr->rank == 0) printf("stopped after step %d (CTRAIN_STOP_AFTER)\n", tr->step);
    } else if (stopped && code == CT_EXIT_OK) {
        if (tr->rank == 0)
            printf("stopped after step %d of %d on request (%s%s): the checkpoint of step %d "
                   "is saved; run the same command to continue\n",
                   tr->step, job->train_steps, stop_signal ? "signal " : "a stop signal to ",
                   stop_signal_name(stop_signal), tr->step);
        code = CT_EXIT_STOPPED;
    }
    return code;
}

int ct_train_run(const ct_job *job, ct_comm *world) {
    int rank = world ? ct_comm_rank(world) : 0;
    ct_status status = ct_fault_init(); /* a malformed CTRAIN_FAULT, before training */
    if (status != CT_OK) return fail("", status);
    char run_dir[CT_JOB_STR];
    ct_job_run_dir(job, run_dir, sizeof(run_dir));
    if (rank == 0 && (status = ct_mkdir_p(run_dir)) != CT_OK) return fail("log.dir", status);
    /* The worker catches them before joining the world; a caller that did not, here. */
    bool own_handlers = !handlers_installed;
    ct_train_catch_stop_signals();
    ct_trainer *tr = NULL;
    int code = CT_EXIT_OK;
    if ((status = ct_trainer_new(&tr, job, world)) != CT_OK) {
        code = fail("", status);
    } else if (tr->resumed && tr->step == job->train_steps) {
        code = finish_complete_run(tr, run_dir);
    } else {
        ct_train_metrics metrics = {0};
        char path[CT_METRICS_PATH_BYTES];
        ct_job_metrics_path(job, path, sizeof(path));
        if (rank == 0) status = ct_train_metrics_open(&metrics, path, tr->step);
        status = ct_trainer_agree(tr, status, "opening log.metrics");
        if (status != CT_OK) {
            code = fail("", status);
        } else {
            tr->ceiling_gflops = ceiling_gflops(tr);
            if (rank == 0) print_banner(tr, run_dir);
            code = train_steps(tr, &metrics, run_dir);
            /* A background save must be committed before the run reports success. */
            status = ct_ckpt_saver_wait(tr->saver);
            if (status != CT_OK && code == CT_EXIT_OK) code = fail("saving a checkpoint", status);
        }
        if (rank == 0 && ct_train_metrics_close(&metrics) != CT_OK && code == CT_EXIT_OK)
            code = fail("", CT_ERR_IO);
    }
    ct_trainer_free(tr);
    if (own_handlers) release_stop_signals();
    return code;
}

int ct_train_main(const ct_job *job) {
    return ct_train_run(job, NULL);
}
