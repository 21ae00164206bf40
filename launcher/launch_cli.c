/*
 * `ctrain-launch`: starts a job's ranks. It loads the job first (so a bad job file fails here,
 * once, not on every rank), then either
 * - runs the worker in this process: --nproc 1 on this machine without --max-restarts, or when
 *   it already runs inside an MPI or Slurm job (mpirun/srun started it: the world comes from
 *   there); the trainer then handles signals itself, or
 * - builds an mpirun command (mpirun.c) and runs it as its child (a lone worker too, with
 *   --max-restarts): it stays the parent, so that its stop signals reach every rank as a request
 *   to save a checkpoint and stop (ct_launch_catch_signals), and its death takes the job down.
 *   --dry-run prints the command and the resolved job instead.
 *
 * With --max-restarts K it relaunches a failed job up to K times, each time resuming from the
 * newest checkpoint the job wrote (checkpoint.resume=auto) with CTRAIN_RESTART=k in the ranks'
 * environment. What a restart cannot fix is not restarted: errors this launcher finds before
 * starting anything (flags, the job file, CTRAIN_FAULT, the data files' headers), a job that
 * exits 2 or whose rank reports code 2 (usage, configuration, data or disk: it would fail the
 * same way again), and a job stopped on purpose (a signal to this launcher or to mpirun itself,
 * or exit code 4: the ranks saved a checkpoint and stopped). Exit codes: CT_EXIT_* (launcher.h),
 * errors found here are CT_EXIT_CONFIG (docs/launching.md, "Exit codes").
 */
#include "checkpoint/checkpoint.h"
#include "common/fault.h"
#include "data/data.h"
#include "launcher/launcher.h"
#include "launcher/launcher_internal.h"

#include <limits.h>
#include <signal.h>
#include <stdarg.h>
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
    "                       (flags, job file, data files), exit code 2 (a usage, configuration\n"
    "                       or data error), 4 (stopped) or a stop signal (docs/launching.md)\n"
    "  --dry-run            print the command that would run and the resolved job, then exit\n"
    "  -h, --help           this text\n"
    "Flags go before the job file. SIGINT, SIGTERM or SIGUSR1 to ctrain-launch: every rank saves\n"
    "a checkpoint and the job exits 4; a second SIGINT or SIGTERM stops it at once. Exit codes:\n"
    "0 done, 1 failed, 2 usage/configuration/data error, 3 hang (watchdog), 4 stopped.\n"
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

/* A usage error: the message and the usage text, exit 2. (ct_cli_usage_error prints
 * "ctrain COMMAND:", the prefix of ctrain's subcommands.) */
static int usage_error(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static int usage_error(const char *fmt, ...) {
    fputs("ctrain-launch: ", stderr);
    va_list ap;
    va_start(ap, fmt);
    vfprintf(stderr, fmt, ap);
    va_end(ap);
    fprintf(stderr, "\n\n%s", launch_usage);
    return CT_EXIT_CONFIG;
}

/* Input, file and format errors (a hostfile, the job, mpirun missing) would fail every attempt
 * the same way: CT_EXIT_CONFIG; others (out of memory, fork) CT_EXIT_FAILED. */
static int exit_code_of(ct_status status) {
    bool lasting = status == CT_ERR_INVALID || status == CT_ERR_IO || status == CT_ERR_FORMAT;
    return lasting ? CT_EXIT_CONFIG : CT_EXIT_FAILED;
}

static int launch_fail(ct_argv *command, ct_status status) {
    fprintf(stderr, "ctrain-launch: %s\n", ct_error_message());
    ct_argv_free(command);
    return exit_code_of(status);
}

/* A section.key=value override (a flag starts with '-', an override never does). */
static bool is_override(const char *arg) {
    return arg[0] != '-' && strchr(arg, '=') != NULL;
}

int ct_launch_check_flag_order(const char *program, const char *usage, int argc, char *const *argv,
                               int job) {
    int misplaced = job + 1;
    while (misplaced < argc && argv[misplaced][0] != '-')
        misplaced++;
    if (misplaced == argc) return 0;
    /* The same command with every word after the job file that is not an override (the flags
     * and their values) moved before it. */
    ct_argv fixed;
    ct_argv_init(&fixed);
    ct_status status = ct_argv_split(&fixed, program);
    for (int i = 0; i < job && status == CT_OK; i++)
        status = ct_argv_push(&fixed, argv[i]);
    for (int i = job + 1; i < argc && status == CT_OK; i++)
        if (!is_override(argv[i])) status = ct_argv_push(&fixed, argv[i]);
    if (status == CT_OK) status = ct_argv_push(&fixed, argv[job]);
    for (int i = job + 1; i < argc && status == CT_OK; i++)
        if (is_override(argv[i])) status = ct_argv_push(&fixed, argv[i]);
    fprintf(stderr, "%s: '%s' after the job file: flags go before the job file: ", program,
            argv[misplaced]);
    if (status == CT_OK)
        ct_argv_print(&fixed, stderr);
    else
        fprintf(stderr, "%s [flags] JOB.toml [section.key=value ...]\n", program);
    fprintf(stderr, "\n%s", usage);
    ct_argv_free(&fixed);
    return CT_EXIT_CONFIG;
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

/* The exit code a rank reported through mpirun (MPI_Abort's error code or its exit code), or
 * -1. A rank's code says more than mpirun's own, which only repeats the first failure's. */
static int rank_code(const ct_launch_result *r) {
    bool coded = r->how == CT_LAUNCH_RANK_ABORTED || r->how == CT_LAUNCH_RANK_EXITED;
    return coded ? r->rank_code : -1;
}

static bool stopped_on_request(const ct_launch_result *r) {
    return r->exit_code == CT_EXIT_STOPPED || rank_code(r) == CT_EXIT_STOPPED;
}

/* Why a failed attempt must not be restarted (into `out`), or false when it may be. */
static bool no_restart_reason(const ct_launch_result *r, bool mpirun, char *out, size_t bytes) {
    if (r->stop_signal)
        snprintf(out, bytes, "ctrain-launch was asked to stop (%s)",
                 ct_launch_signal_name(r->stop_signal));
    else if (stopped_on_request(r))
        snprintf(out, bytes,
                 "exit code 4: the job was stopped on request and saved a checkpoint "
                 "(a signal to mpirun or to a rank)");
    else if (mpirun && r->signal)
        snprintf(out, bytes, "mpirun itself was ended by a signal");
    else if (r->exit_code == CT_EXIT_CONFIG || rank_code(r) == CT_EXIT_CONFIG)
        snprintf(out, bytes,
                 "exit code 2 is a usage, configuration or data error, which would "
                 "fail every attempt");
    else
        return false;
    return true;
}

/* Runs the job (mpirun, or a lone worker as a child) and relaunches it after a failure, up to
 * opts->max_restarts times (0: one attempt). A relaunch resumes from the newest checkpoint in
 * checkpoint.dir when the job has written one there (override checkpoint.resume=auto); before
 * its first checkpoint it starts as the first attempt did, so that it never picks up another
 * run's checkpoint. Returns the exit code of the last attempt. */
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
    int last_code = CT_EXIT_FAILED;
    for (int attempt = 0;; attempt++) {
        if (attempt > 0 && ct_launch_stop_signal()) { /* it came while no attempt ran */
            fprintf(stderr,
                    "ctrain-launch: restart %d not started: ctrain-launch was asked to "
                    "stop (%s)\n",
                    attempt, ct_launch_signal_name(ct_launch_stop_signal()));
            return last_code;
        }
        char restart[32];
        snprintf(restart, sizeof(restart), "%d", attempt);
        /* Set before the command is built: mpirun passes every CTRAIN_* on (-x). */
        if (attempt > 0 && setenv("CTRAIN_RESTART", restart, 1) != 0) {
            fprintf(stderr, "ctrain-launch: setenv CTRAIN_RESTART: out of memory\n");
            return CT_EXIT_FAILED;
        }
        int n = resume_newest ? n_overrides + 1 : n_overrides;
        ct_argv command;
        ct_argv_init(&command);
        ct_status status = mpirun ? ct_launch_mpirun_argv(&command, opts, job, n, more)
                                  : ct_launch_worker_argv(&command, job->source_path, n, more);
        ct_launch_result r;
        if (status == CT_OK) status = ct_launch_run(&command, mpirun, &r);
        if (status != CT_OK) return launch_fail(&command, status);
        ct_argv_free(&command);
        if (r.exit_code == 0) {
            if (attempt > 0)
                fprintf(stderr, "ctrain-launch: job finished after %d restart%s\n", attempt,
                        attempt == 1 ? "" : "s");
            return 0;
        }
        char cause[256], why[160];
        describe_failure(&r, mpirun, cause, sizeof(cause));
        const char *ended = r.stop_signal || stopped_on_request(&r) ? "stopped" : "failed";
        bool final = no_restart_reason(&r, mpirun, why, sizeof(why));
        /* Ranks that returned 4 saved and stopped: that is how the job ended, even when mpirun
         * fails afterwards in its own teardown. */
        int code = r.how == CT_LAUNCH_RANK_EXITED && r.rank_code == CT_EXIT_STOPPED
                       ? CT_EXIT_STOPPED
                       : r.exit_code;
        last_code = code;
        if (opts->max_restarts == 0) {
            fprintf(stderr, "ctrain-launch: job %s (%s)\n", ended, cause);
            return code;
        }
        if (final || attempt == opts->max_restarts) {
            fprintf(stderr, "ctrain-launch: job %s (%s); not restarted: %s\n", ended, cause,
                    final ? why : "no restarts left (--max-restarts)");
            return code;
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

/* Ranks past this machine's cores run, slowly: say so once rather than refuse (a test of many
 * ranks on a laptop is legitimate). */
static void warn_oversubscribed(const ct_launch_options *opts) {
    int cores = ct_launch_core_count();
    if (opts->hostfile || opts->nproc <= cores) return;
    fprintf(stderr,
            "ctrain-launch: warning: --nproc %d on this machine's %d core%s: the ranks will "
            "time-share them (oversubscribed x%.3g)\n",
            opts->nproc, cores, cores == 1 ? "" : "s", (double)opts->nproc / cores);
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
                return usage_error("--nproc needs a positive integer");
            nproc_given = true;
            first++;
        } else if (strcmp(a, "--hostfile") == 0) {
            if (!has_value || !argv[first + 1][0]) return usage_error("--hostfile needs a file");
            opts.hostfile = argv[++first];
        } else if (strcmp(a, "--max-restarts") == 0) {
            if (!has_value || !ct_cli_parse_int(argv[first + 1], 0, INT_MAX, &opts.max_restarts))
                return usage_error("--max-restarts needs a non-negative integer, got %s%s%s",
                                   has_value ? "'" : "nothing", has_value ? argv[first + 1] : "",
                                   has_value ? "'" : "");
            restarts_given = true;
            first++;
        } else if (strcmp(a, "--mpirun-args") == 0) {
            if (!has_value) return usage_error("--mpirun-args needs a value");
            opts.mpirun_args = argv[++first];
            ct_argv words;
            ct_argv_init(&words);
            ct_status status = ct_argv_split(&words, opts.mpirun_args);
            ct_argv_free(&words);
            if (status != CT_OK) return usage_error("--mpirun-args: %s", ct_error_message());
        } else {
            return usage_error("unknown option '%s'", a);
        }
    }
    if (first >= argc) return usage_error("expected a job file");
    int misplaced =
        ct_launch_check_flag_order("ctrain-launch", launch_usage, argc - 1, argv + 1, first - 1);
    if (misplaced) return misplaced;

    ct_job job;
    if (ct_job_load(&job, argv[first], argc - first - 1, argv + first + 1) != CT_OK) {
        fprintf(stderr, "ctrain-launch: %s\n", ct_error_message());
        return CT_EXIT_CONFIG;
    }
    int n_overrides = argc - first - 1;
    char *const *overrides = argv + first + 1;
    ct_argv command;
    ct_argv_init(&command);
    /* Test-only faults are checked once here rather than failing on every rank. */
    if (ct_fault_init() != CT_OK) {
        fprintf(stderr, "ctrain-launch: %s\n", ct_error_message());
        return CT_EXIT_CONFIG;
    }

    const char *outer = ct_launch_outer_job();
    ct_status status;
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
        if ((status = ct_launch_worker_argv(&command, argv[first], n_overrides, overrides)) !=
            CT_OK)
            return launch_fail(&command, status);
        print_plan("would run the worker directly (this process is one rank of the outer job):", "",
                   &command, &job);
        ct_argv_free(&command);
        return 0;
    }

    bool mpirun = !(opts.nproc == 1 && !opts.hostfile && !opts.mpirun_args);
    warn_oversubscribed(&opts);
    if (opts.max_restarts > 0 && (status = check_data(&job)) != CT_OK)
        return launch_fail(&command, status);
    if (!dry_run && !mpirun && opts.max_restarts == 0) return run_worker(argc, argv, first);
    if (!dry_run) {
        ct_launch_catch_signals();
        return supervise(&opts, mpirun, &job, n_overrides, overrides);
    }
    if (!mpirun) {
        if ((status = ct_launch_worker_argv(&command, argv[first], n_overrides, overrides)) !=
            CT_OK)
            return launch_fail(&command, status);
        print_plan(opts.max_restarts > 0 ? "would train in a child process (1 rank, no mpirun), as:"
                                         : "would train in this process (1 rank, no mpirun), as:",
                   "", &command, &job);
    } else {
        if ((status = ct_launch_mpirun_argv(&command, &opts, &job, n_overrides, overrides)) !=
            CT_OK)
            return launch_fail(&command, status);
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
