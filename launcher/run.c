/*
 * The training run as a user sees it: the banner, one line per log.every steps, evaluation,
 * the metrics JSONL file, and the final weights. Rank-local work is in trainer.c.
 */
#include "checkpoint/checkpoint.h"
#include "common/fault.h"
#include "kernels/kernels.h"
#include "launcher/launcher.h"
#include "launcher/trainer_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static size_t peak_rss_bytes(void) {
    struct rusage usage;
    getrusage(RUSAGE_SELF, &usage);
    return (size_t)usage.ru_maxrss * 1024;
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
    printf("  memory plan %s | allocated model state %.1f MiB\n", plan,
           memory.model_state_bytes * mib);
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
    printf("  sgemm ceiling %.1f GFLOP/s (1024^3, %d threads) | run dir %s\n", tr->ceiling_gflops,
           ct_kern_cpu_threads(), run_dir);
    fflush(stdout);
}

static void write_metrics(FILE *f, const ct_trainer *tr, const ct_step_stats *s, double val_loss) {
    if (!f) return;
    ct_shard_memory memory;
    ct_shard_get_memory(tr->shard, &memory);
    ct_mem_stats mem;
    ct_mem_get_stats(&mem);
    fprintf(f,
            "{\"step\": %d, \"loss\": %.9g, \"lr\": %.9g, \"grad_norm\": %.9g, \"ms\": %.4f, "
            "\"tokens_per_s\": %.3f, \"mfu\": %.6f, \"mem_peak_bytes\": %zu, "
            "\"batch_hash\": \"%016llx\"",
            s->step + 1, s->loss, s->lr, s->grad_norm, s->ms, s->tokens_per_s, s->mfu,
            peak_rss_bytes(), (unsigned long long)s->batch_hash);
    fprintf(f,
            ", \"comm_bytes\": {\"allreduce\": %llu, \"reduce_scatter\": %llu, "
            "\"allgather\": %llu, \"broadcast\": %llu}, \"model_state_bytes\": %zu, "
            "\"gathered_bytes\": %zu, \"comm_buffer_bytes\": %zu",
            (unsigned long long)s->comm_bytes[CT_COLL_ALLREDUCE],
            (unsigned long long)s->comm_bytes[CT_COLL_REDUCE_SCATTER],
            (unsigned long long)s->comm_bytes[CT_COLL_ALLGATHER],
            (unsigned long long)s->comm_bytes[CT_COLL_BROADCAST], memory.model_state_bytes,
            memory.gathered_bytes, memory.comm_buffer_bytes);
    fprintf(f, ", \"checkpoint_buffer_bytes\": %zu", mem.current_bytes[CT_MEM_CHECKPOINT]);
    if (!isnan(val_loss)) fprintf(f, ", \"val_loss\": %.9g", val_loss);
    fputs("}\n", f);
    fflush(f);
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

static int fail(const char *what) {
    ct_log(CT_LOG_ERROR, "train", "%s%s%s", what, what[0] ? ": " : "", ct_error_message());
    return 1;
}

/* Final weights as an llm.c model file, written by rank 0; every rank takes part in
 * gathering the units (a collective under fsdp). */
static ct_status save_final(ct_trainer *tr, const char *path) {
    ct_gpt full;
    ct_status status = ct_gpt_init(&full, &tr->gpt.config);
    if (status == CT_OK) status = ct_gpt_alloc_full(&full);
    for (int u = 0; status == CT_OK && u < full.n_units; u++)
        status = ct_shard_gather_unit(tr->shard, u, full.units[u].data);
    if (status == CT_OK && tr->rank == 0) status = ct_ckpt_llmc_write(path, &full);
    if (full.units) ct_gpt_free(&full);
    return status;
}

int ct_train_run(const ct_job *job, ct_comm *world) {
    ct_trainer *tr = NULL;
    char run_dir[CT_JOB_STR], path[2 * CT_JOB_STR];
    int rank = world ? ct_comm_rank(world) : 0;
    if (ct_fault_init() != CT_OK) return fail(""); /* a malformed CTRAIN_FAULT, before training */
    ct_job_run_dir(job, run_dir, sizeof(run_dir));
    if (rank == 0 && ct_mkdir_p(run_dir) != CT_OK) return fail("");
    if (ct_trainer_new(&tr, job, world) != CT_OK) {
        ct_trainer_free(tr);
        return fail("");
    }
    tr->ceiling_gflops = ct_kern_cpu_sgemm_gflops(1024, 10); /* best of 10: the host is noisy */
    FILE *metrics = NULL;
    if (rank == 0) {
        print_banner(tr, run_dir);
        if (job->log_metrics[0])
            snprintf(path, sizeof(path), "%s", job->log_metrics);
        else
            snprintf(path, sizeof(path), "%s/metrics.jsonl", run_dir);
        metrics = fopen(path, "w");
        if (!metrics) ct_log(CT_LOG_WARN, "train", "cannot write metrics to %s", path);
    }

    int code = 0, first = tr->step, stop_after = stop_after_steps();
    double train_s = 0.0;
    bool stopped = false;
    for (int step = first; step < job->train_steps; step++) {
        ct_fault_kill_point("kill", rank, step);
        ct_step_stats stats;
        double t0 = ct_time_s();
        if (step == first + PROFILE_WARMUP_STEPS) { /* restart the profile once warm */
            memset(&tr->profile, 0, sizeof(tr->profile));
            tr->data_s = tr->optimizer_s = train_s = 0.0;
        }
        ct_status status = ct_trainer_step(tr, &stats);
        train_s += ct_time_s() - t0;
        if (status != CT_OK) {
            code = fail("training step");
            break;
        }
        bool last = step + 1 == job->train_steps;
        bool eval =
            tr->val &&
            (last || (job->train_eval_every > 0 && (step + 1) % job->train_eval_every == 0));
        double val_loss = NAN;
        if (eval && ct_trainer_eval(tr, &val_loss) != CT_OK) {
            code = fail("evaluation");
            break;
        }
        bool logged = eval || last || (step + 1) % job->log_every == 0 || step == 0;
        if (logged && rank == 0) {
            printf("step %5d/%d | loss %.4f | lr %.2e | norm %6.3f | %7.1f ms | %7.0f tok/s | "
                   "MFU %4.1f%%",
                   step + 1, job->train_steps, stats.loss, stats.lr, stats.grad_norm, stats.ms,
                   stats.tokens_per_s, 100 * stats.mfu);
            if (eval) printf(" | val %.4f", val_loss);
            printf("\n");
            fflush(stdout);
            write_metrics(metrics, tr, &stats, val_loss);
        }
        stopped = stop_after > 0 && tr->step == stop_after;
        bool periodic = job->checkpoint_every > 0 && tr->step % job->checkpoint_every == 0;
        if ((last || stopped || periodic) && ct_trainer_save_checkpoint(tr) != CT_OK) {
            code = fail("saving a checkpoint");
            break;
        }
        if (stopped) break;
    }
    /* A background save must be committed before the run reports success. */
    if (ct_trainer_wait_checkpoint(tr) != CT_OK && code == 0) code = fail("saving a checkpoint");
    if (metrics) fclose(metrics);
    if (rank == 0) print_profile(tr, train_s, job->train_steps - first - PROFILE_WARMUP_STEPS);
    if (stopped && rank == 0) printf("stopped after step %d (CTRAIN_STOP_AFTER)\n", tr->step);
    if (code == 0 && !stopped) {
        snprintf(path, sizeof(path), "%s/final.bin", run_dir);
        if (save_final(tr, path) != CT_OK)
            code = fail("saving final weights");
        else if (rank == 0)
            printf("final weights: %s | peak RSS %.1f MiB\n", path, peak_rss_bytes() / 1048576.0);
    }
    ct_trainer_free(tr);
    return code;
}

int ct_train_main(const ct_job *job) {
    return ct_train_run(job, NULL);
}
