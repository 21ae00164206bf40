/*
 * `ctrain-launch`: starts a job's ranks. It loads the job first (so a bad job file fails here,
 * once, not on every rank), then either
 * - runs the worker in this process: --nproc 1 on this machine, or when it already runs inside
 *   an MPI or Slurm job (mpirun/srun started it: the world comes from there), or
 * - builds an mpirun command (mpirun.c) and replaces itself with it; every rank then runs
 *   `ctrain worker` (worker.c). --dry-run prints the command and the resolved job instead.
 *
 * With --max-restarts K (K > 0) it stays as mpirun's parent instead (a lone worker becomes a
 * child `ctrain worker` too) and relaunches a failed job up to K times, each time resuming from
 * the newest checkpoint the job wrote (checkpoint.resume=auto) with CTRAIN_RESTART=k in the
 * ranks' environment. What a restart cannot fix is not restarted: errors this launcher finds
 * before starting anything (flags, the job file, CTRAIN_FAULT, the data files' headers), a
 * job that exits 2 (a usage or configuration error: it would fail the same way again), and a
 * job stopped from outside (a signal to this launcher or to mpirun itself).
 */
#include "checkpoint/checkpoint.h"
#include "common/fault.h"
#include "data/data.h"
#include "launcher/launch_internal.h"
#include "launcher/launcher.h"
#include "launcher/launcher_internal.h"

#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

static const char *launch_usage =
    "usage: ctrain-launch [--nproc N] [--hostfile F] [--mpirun-args \"...\"]\n"
    "                     [--max-restarts K] [--dry-run] JOB.toml [section.key=value ...]\n"
    "Runs a training job described by JOB.toml (keys: docs/config.md), with dotted overrides\n"
    "such as train.lr=3e-4 applied after the file. Several ranks start through mpirun, each\n"
    "running `ctrain worker JOB.toml ...` (docs/launching.md).\n"
    "  --nproc N            ranks to start (default 1: train in this process, no mpirun)\n"
    "  --hostfile F         Open MPI hostfile (\"host slots=N\" lines) for several machines;\n"
    "                       without it every rank runs on this machine\n"
    "  --mpirun-args \"...\"  extra mpirun arguments, split like a shell (quotes respected),\n"
    "                       e.g. \"--mca btl tcp,self\"\n"
    "  --max-restarts K     relaunch a failed job up to K times (default 0), resuming from the\n"
    "                       newest checkpoint it wrote (checkpoint.resume=auto) with\n"
    "                       CTRAIN_RESTART=k set; not after errors found before the start\n"
    "                       (flags, job file, data files), an exit code of 2 (a usage or\n"
    "                       configuration error) or a stop by a signal (docs/launching.md)\n"
    "  --dry-run            print the command that would run and the resolved job, then exit\n"
    "  -h, --help           this text\n"
    "Inside an MPI or Slurm job (OMPI_COMM_WORLD_SIZE, PMIX_RANK or SLURM_PROCID set) the\n"
    "worker runs directly: the surrounding job decides the ranks. Threads per rank are\n"
    "device.threads_per_rank, or this machine's cores / ranks per machine.\n";

/* The worker's arguments for the job (argv[first..]) as `ctrain worker` would get them. */
static int run_worker(int argc, char **argv, int first) {
    return ct_worker_main(argc - first, argv + first);
}

/* --dry-run: the command line, then the job with defaults and overrides applied. */
static void print_plan(const char *comment, const char *env_prefix, const ct_argv *command,
                       const ct_job *job) {
    printf("# %s\n", comment);
    fputs(env_prefix, stdout);
    ct_argv_print(command, stdout);
    printf("# job (defaults and overrides applied):\n");
    ct_job_print(job, stdout);
}

static int launch_fail(ct_argv *command) {
    fprintf(stderr, "ctrain-launch: %s\n", ct_error_message());
    ct_argv_free(command);
    return 1;
}

/* ---------------------------------------------------------------- restarts */

/* The newest complete checkpoint of a directory, and which directory it is (device, inode and
 * change time: a checkpoint saved again at the same step is a new directory renamed into
 * place), so that one the job wrote can be told from one that was there before it started. */
typedef struct {
    bool found;
    int64_t step;
    dev_t dev;
    ino_t ino;
    struct timespec ctime;
} newest_checkpoint;

static bool same_checkpoint(const newest_checkpoint *a, const newest_checkpoint *b) {
    return a->found && b->found && a->step == b->step && a->dev == b->dev && a->ino == b->ino &&
           a->ctime.tv_sec == b->ctime.tv_sec && a->ctime.tv_nsec == b->ctime.tv_nsec;
}

/* None when the directory is missing or unreadable: the worker reports what is wrong with it. */
static newest_checkpoint find_newest(const char *dir) {
    newest_checkpoint newest = {0};
    char path[PATH_MAX];
    struct stat sb;
    if (stat(dir, &sb) != 0) return newest;
    if (ct_ckpt_latest(dir, &newest.found, &newest.step, path, sizeof(path)) != CT_OK ||
        (newest.found && stat(path, &sb) != 0)) {
        ct_error_clear();
        newest.found = false;
    }
    newest.dev = sb.st_dev;
    newest.ino = sb.st_ino;
    newest.ctime = sb.st_ctim;
    return newest;
}

/* With restarts, the data files' headers are checked here, once: a bad file fails every
 * attempt the same way. */
static ct_status check_data(const ct_job *job) {
    ct_data_format format =
        strcmp(job->data_format, "nanogpt") == 0 ? CT_DATA_FORMAT_NANOGPT : CT_DATA_FORMAT_LLMC;
    const char *patterns[2] = {job->data_train, job->data_val};
    for (int i = 0; i < 2; i++) {
        if (!patterns[i][0]) continue;
        ct_data_dataset *data;
        CT_CHECK(ct_data_open(&data, patterns[i], format, job->model_vocab_size));
        ct_data_close(data);
    }
    return CT_OK;
}

/* What ended a failed attempt, from mpirun's report when it made one. */
static void describe_failure(const ct_launch_result *r, bool mpirun, char *out, size_t bytes) {
    const char *who = mpirun ? "mpirun" : "the worker";
    int n;
    if (r->how == CT_LAUNCH_RANK_KILLED)
        n = snprintf(out, bytes, "rank %d killed by signal %d (%s)", r->rank, r->rank_signal,
                     strsignal(r->rank_signal));
    else if (r->how == CT_LAUNCH_RANK_ABORTED)
        n = snprintf(out, bytes, "rank %d called MPI_Abort with error code %d", r->rank,
                     r->rank_code);
    else if (r->how == CT_LAUNCH_RANK_EXITED)
        n = snprintf(out, bytes, "rank %d exited with code %d", r->rank, r->rank_code);
    else if (r->signal)
        n = snprintf(out, bytes, "%s killed by signal %d (%s)", who, r->signal,
                     strsignal(r->signal));
    else
        n = snprintf(out, bytes, "%s exited with code %d", who, r->exit_code);
    if (n >= 0 && (size_t)n < bytes && (r->how != CT_LAUNCH_RANK_UNKNOWN))
        snprintf(out + n, bytes - (size_t)n, "; %s exit code %d", who, r->exit_code);
}

/* Why a failed attempt must not be restarted, or NULL when it may be. */
static const char *no_restart_reason(const ct_launch_result *r, bool mpirun) {
    if (r->stop_signal)
        return r->stop_signal == SIGINT ? "ctrain-launch was interrupted (SIGINT)"
                                        : "ctrain-launch was asked to stop (SIGTERM or SIGHUP)";
    if (mpirun && r->signal) return "mpirun itself was ended by a signal";
    if (r->exit_code == 2)
        return "exit code 2 is a usage or configuration error, which would fail every attempt";
    return NULL;
}

/* Runs the job (mpirun, or a lone worker as a child) and relaunches it after a failure, up to
 * opts->max_restarts times. A relaunch resumes from the newest checkpoint in checkpoint.dir
 * when the job has written one there (override checkpoint.resume=auto); before its first
 * checkpoint it starts as the first attempt did, so that it never picks up another run's
 * checkpoint. Returns the exit code of the last attempt. */
static int supervise(const ct_launch_options *opts, bool mpirun, const ct_job *job, int n_overrides,
                     char *const *overrides) {
    char dir[CT_JOB_STR + 8];
    ct_job_checkpoint_dir(job, dir, sizeof(dir));
    newest_checkpoint before = find_newest(dir);
    /* The overrides of a relaunch: the user's, then the resume (the last one wins). */
    char *more[n_overrides + 1];
    for (int i = 0; i < n_overrides; i++)
        more[i] = overrides[i];
    more[n_overrides] = "checkpoint.resume=auto";
    bool resume_newest = false;
    for (int attempt = 0;; attempt++) {
        char restart[32];
        snprintf(restart, sizeof(restart), "%d", attempt);
        /* Set before the command is built: mpirun passes every CTRAIN_* on (-x). */
        if (attempt > 0 && setenv("CTRAIN_RESTART", restart, 1) != 0) {
            fprintf(stderr, "ctrain-launch: setenv CTRAIN_RESTART: out of memory\n");
            return 1;
        }
        int n = resume_newest ? n_overrides + 1 : n_overrides;
        ct_argv command;
        ct_argv_init(&command);
        ct_status status = mpirun ? ct_launch_mpirun_argv(&command, opts, job, n, more)
                                  : ct_launch_worker_argv(&command, job->source_path, n, more);
        ct_launch_result r;
        if (status == CT_OK) status = ct_launch_run(&command, &r);
        if (status != CT_OK) return launch_fail(&command);
        ct_argv_free(&command);
        if (r.exit_code == 0) {
            if (attempt > 0)
                fprintf(stderr, "ctrain-launch: job finished after %d restart%s\n", attempt,
                        attempt == 1 ? "" : "s");
            return 0;
        }
        char cause[256];
        describe_failure(&r, mpirun, cause, sizeof(cause));
        const char *why = no_restart_reason(&r, mpirun);
        if (why || attempt == opts->max_restarts) {
            fprintf(stderr, "ctrain-launch: job failed (%s); not restarted: %s\n", cause,
                    why ? why : "no restarts left (--max-restarts)");
            return r.exit_code;
        }
        newest_checkpoint now = find_newest(dir);
        resume_newest = now.found && !same_checkpoint(&before, &now);
        if (resume_newest)
            fprintf(stderr,
                    "ctrain-launch: job failed (%s); restart %d of %d, resuming from the newest "
                    "checkpoint in %s (step %lld)\n",
                    cause, attempt + 1, opts->max_restarts, dir, (long long)now.step);
        else
            fprintf(stderr,
                    "ctrain-launch: job failed (%s); restart %d of %d, starting as the first "
                    "attempt did (checkpoint.resume = \"%s\"): the job has written no "
                    "checkpoint in %s yet\n",
                    cause, attempt + 1, opts->max_restarts, job->checkpoint_resume, dir);
    }
}

int ct_launch_main(int argc, char **argv) {
    ct_launch_options opts = {.nproc = 1, .hostfile = NULL, .mpirun_args = NULL};
    bool restarts_given = false;
    bool dry_run = false, nproc_given = false;
    int first = 1;
    for (; first < argc && argv[first][0] == '-'; first++) {
        const char *a = argv[first];
        bool has_value = first + 1 < argc;
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(launch_usage, stdout);
            return 0;
        } else if (strcmp(a, "--dry-run") == 0) {
            dry_run = true;
        } else if (strcmp(a, "--nproc") == 0) {
            if (!has_value || !ct_cli_parse_int(argv[first + 1], 1, 1 << 20, &opts.nproc))
                return ct_cli_usage_error("launch", launch_usage,
                                          "--nproc needs a positive integer");
            nproc_given = true;
            first++;
        } else if (strcmp(a, "--hostfile") == 0) {
            if (!has_value || !argv[first + 1][0])
                return ct_cli_usage_error("launch", launch_usage, "--hostfile needs a file");
            opts.hostfile = argv[++first];
        } else if (strcmp(a, "--max-restarts") == 0) {
            if (!has_value || !ct_cli_parse_int(argv[first + 1], 0, INT_MAX, &opts.max_restarts))
                return ct_cli_usage_error("launch", launch_usage,
                                          "--max-restarts needs a non-negative integer, got %s%s%s",
                                          has_value ? "'" : "nothing",
                                          has_value ? argv[first + 1] : "", has_value ? "'" : "");
            restarts_given = true;
            first++;
        } else if (strcmp(a, "--mpirun-args") == 0) {
            if (!has_value)
                return ct_cli_usage_error("launch", launch_usage, "--mpirun-args needs a value");
            opts.mpirun_args = argv[++first];
            ct_argv words;
            ct_argv_init(&words);
            ct_status status = ct_argv_split(&words, opts.mpirun_args);
            ct_argv_free(&words);
            if (status != CT_OK)
                return ct_cli_usage_error("launch", launch_usage, "--mpirun-args: %s",
                                          ct_error_message());
        } else {
            return ct_cli_bad_flag("launch", a, launch_usage);
        }
    }
    if (first >= argc) return ct_cli_usage_error("launch", launch_usage, "expected a job file");

    ct_job job;
    if (ct_job_load(&job, argv[first], argc - first - 1, argv + first + 1) != CT_OK) {
        fprintf(stderr, "ctrain-launch: %s\n", ct_error_message());
        return 1;
    }
    int n_overrides = argc - first - 1;
    char *const *overrides = argv + first + 1;
    ct_argv command;
    ct_argv_init(&command);
    /* Test-only faults are checked once here rather than failing on every rank. */
    if (ct_fault_init() != CT_OK) {
        fprintf(stderr, "ctrain-launch: %s\n", ct_error_message());
        return 2;
    }

    const char *outer = ct_launch_outer_job();
    if (outer) {
        fprintf(stderr,
                "ctrain-launch: inside an MPI or Slurm job (%s is set): running the worker "
                "directly%s%s\n",
                outer,
                nproc_given || opts.hostfile || opts.mpirun_args
                    ? "; --nproc, --hostfile and --mpirun-args are ignored"
                    : "",
                restarts_given ? "; --max-restarts is ignored (the outer job owns the ranks)" : "");
        if (!dry_run) return run_worker(argc, argv, first);
        if (ct_launch_worker_argv(&command, argv[first], n_overrides, overrides) != CT_OK)
            return launch_fail(&command);
        print_plan("would run the worker directly (this process is one rank of the outer job):", "",
                   &command, &job);
        ct_argv_free(&command);
        return 0;
    }

    bool mpirun = !(opts.nproc == 1 && !opts.hostfile && !opts.mpirun_args);
    if (opts.max_restarts > 0 && check_data(&job) != CT_OK) return launch_fail(&command);
    if (!dry_run && opts.max_restarts > 0)
        return supervise(&opts, mpirun, &job, n_overrides, overrides);
    if (!mpirun) {
        if (!dry_run) return run_worker(argc, argv, first);
        if (ct_launch_worker_argv(&command, argv[first], n_overrides, overrides) != CT_OK)
            return launch_fail(&command);
        print_plan(opts.max_restarts > 0 ? "would train in a child process (1 rank, no mpirun), as:"
                                         : "would train in this process (1 rank, no mpirun), as:",
                   "", &command, &job);
    } else {
        if (ct_launch_mpirun_argv(&command, &opts, &job, n_overrides, overrides) != CT_OK)
            return launch_fail(&command);
        if (!dry_run) {
            ct_launch_exec(&command); /* returns only when mpirun could not be started */
            return launch_fail(&command);
        }
        print_plan("would run (Open MPI's run-as-root variables are set by ctrain-launch):",
                   "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ", &command, &job);
    }
    if (opts.max_restarts > 0)
        printf("# on failure: up to %d restart%s, each with CTRAIN_RESTART=k and the override "
               "checkpoint.resume=auto once the job has written a checkpoint\n",
               opts.max_restarts, opts.max_restarts == 1 ? "" : "s");
    ct_argv_free(&command);
    return 0;
}
