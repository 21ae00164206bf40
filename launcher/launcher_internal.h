/*
 * Internal to launcher/ (not part of the public API), in two parts:
 * - the command-line tools' helpers: flag parsing with strict number checks, usage errors that
 *   exit 2 with the command's usage text, --help, and each `ctrain` subcommand's entry;
 * - how ranks are started: the parts of `ctrain-launch` (launch_cli.c) that build an mpirun
 *   command line (mpirun.c) and supervise it (supervise.c), and the worker entry every rank
 *   runs (worker.c: `ctrain worker`, also reached in-process by `ctrain-launch --nproc 1`).
 */
#ifndef CT_LAUNCHER_INTERNAL_H
#define CT_LAUNCHER_INTERNAL_H

#include "comm/comm.h"
#include "launcher/launcher.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>

/* Whole-string integer in [min, max]. */
bool ct_cli_parse_int(const char *text, long long min, long long max, int *out);
bool ct_cli_parse_u64(const char *text, unsigned long long *out);
/* Whole-string finite number in [min, max]. */
bool ct_cli_parse_double(const char *text, double min, double max, double *out);
/* Prints "ctrain CMD: MESSAGE" and the usage to stderr; returns 2 (the exit code). CMD is the
 * whole subcommand ("data prepare", "bench comm"); a CMD starting with "ctrain-" is a program
 * of its own and printed without "ctrain " ("ctrain-launch: MESSAGE"). */
int ct_cli_usage_error(const char *command, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* The same with a va_list, for a caller's own printf-like wrapper. */
int ct_cli_usage_verror(const char *command, const char *usage, const char *fmt, va_list args)
    __attribute__((format(printf, 3, 0)));
/* An unknown flag: names it, prints the usage, returns 2. */
int ct_cli_bad_flag(const char *command, const char *flag, const char *usage);
/* Whether an argument asks for help (-h or --help). */
bool ct_cli_is_help(const char *arg);
/* Prints `usage` to stdout and returns 0, the exit code of a --help. */
int ct_cli_help(const char *usage);

int ct_cli_sample(int argc, char **argv);
int ct_cli_data(int argc, char **argv);
int ct_cli_ckpt(int argc, char **argv);
int ct_cli_bench_comm(int argc, char **argv);
int ct_cli_bench_ckpt(int argc, char **argv);

/* ---------------------------------------------------------------- launching ranks */

/* `ctrain worker JOB.toml [k=v ...]` (and its alias `ctrain train`): argv holds the arguments
 * after the subcommand's name. Loads the job, joins the world (MPI), binds this rank to its
 * cores, sets its threads and trains. A failing rank prints `[rank r] error: ...` and ends the
 * whole job with a non-zero exit. Returns the process exit code. */
int ct_worker_main(int argc, char **argv);

/* Flags go before the job file (argv[job]; argv holds the arguments after the program's name):
 * when a later argument starts with '-', prints "PROGRAM: '-x' after the job file: flags go
 * before the job file: " and the command with them moved before it, then `usage`, and returns
 * CT_EXIT_CONFIG; else 0. Overrides (section.key=value) never start with '-'. */
int ct_launch_check_flag_order(const char *program, const char *usage, int argc, char *const *argv,
                               int job);

/* A growable, NULL-terminated argument vector; every string is owned by it. */
typedef struct {
    char **argv;
    int argc;
    int capacity;
} ct_argv;

void ct_argv_init(ct_argv *args);
void ct_argv_free(ct_argv *args);
ct_status ct_argv_push(ct_argv *args, const char *arg);
ct_status ct_argv_pushf(ct_argv *args, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
/* Splits `text` into words as a POSIX shell would, without expansions: blanks separate words,
 * '...' keeps everything literally, "..." keeps all but \" \\ \$ \` escapes, \x outside quotes is
 * x. An unterminated quote is an error (CT_ERR_INVALID). */
ct_status ct_argv_split(ct_argv *args, const char *text);
/* One line: the words shell-quoted where needed, so the line can be pasted into a shell. */
void ct_argv_print(const ct_argv *args, FILE *out);

/* Physical cores this process may run on (its affinity mask, hyperthreads counted once). */
int ct_launch_core_count(void);
/* Threads per rank: device.threads_per_rank when set, else cores / ranks_per_node (>= 1). */
int ct_launch_threads_per_rank(const ct_job *job, int cores, int ranks_per_node);
/* The name of the variable that shows this process already runs inside an MPI or Slurm job
 * (OMPI_COMM_WORLD_SIZE, PMIX_RANK, SLURM_PROCID), or NULL. */
const char *ct_launch_outer_job(void);
/* The absolute path of the `ctrain` binary beside this executable. */
ct_status ct_launch_ctrain_path(char *out, size_t out_bytes);

typedef struct {
    int nproc;
    const char *hostfile;    /* NULL: every rank on this machine */
    const char *mpirun_args; /* NULL or extra words for mpirun, split like a shell */
    int max_restarts;        /* relaunches of a failed job (--max-restarts); 0: none */
} ct_launch_options;

/* The worker's command: `/abs/ctrain worker /abs/JOB.toml [k=v ...]`. */
ct_status ct_launch_worker_argv(ct_argv *args, const char *job_path, int n_overrides,
                                char *const *overrides);
/* The whole mpirun command for `opts` and the job (loaded, so its threads_per_rank is known):
 * mpirun -np N [--hostfile F] [--oversubscribe] --bind-to none -x OMP_NUM_THREADS=t
 * -x OPENBLAS_NUM_THREADS=t [-x CTRAIN_*] [extra] /abs/ctrain worker JOB [k=v ...]. */
ct_status ct_launch_mpirun_argv(ct_argv *args, const ct_launch_options *opts, const ct_job *job,
                                int n_overrides, char *const *overrides);
/* Open MPI's run-as-root variables (it refuses root unless told twice; containers run as
 * root). */
ct_status ct_launch_allow_root(void);
/* The error of an execvp of `program` that failed with errno `err`. */
ct_status ct_launch_exec_error(const char *program, int err);
/* Sets Open MPI's run-as-root variables and replaces this process with mpirun; returns only on
 * failure (mpirun not found or not runnable), with the error recorded. ctrain-launch itself
 * stays mpirun's parent (ct_launch_run); `ctrain bench comm` execs. */
ct_status ct_launch_exec(const ct_argv *args);

/* How the rank that mpirun blamed for a failure ended, as its report says. */
typedef enum {
    CT_LAUNCH_RANK_UNKNOWN = 0, /* no report read (a lone worker, or mpirun said nothing) */
    CT_LAUNCH_RANK_KILLED,      /* by a signal: rank_signal */
    CT_LAUNCH_RANK_ABORTED,     /* it called MPI_Abort: rank_code is the error code */
    CT_LAUNCH_RANK_EXITED       /* with a non-zero exit code: rank_code */
} ct_launch_rank_end;

/* How a command run by ct_launch_run ended. */
typedef struct {
    int exit_code;   /* as a shell reports it: the exit status, or 128 + the signal */
    int signal;      /* the signal that ended the child itself (mpirun or the worker), or 0 */
    int stop_signal; /* the first SIGINT, SIGTERM, SIGHUP or SIGUSR1 this launcher got, or 0 */
    int rank;        /* the rank mpirun's report blamed, or -1 */
    ct_launch_rank_end how;
    int rank_signal;
    int rank_code;
} ct_launch_result;

/* Catches SIGINT, SIGTERM, SIGHUP, SIGUSR1 (and SIGTSTP, SIGCONT) for the rest of this
 * process, so that ct_launch_run passes them on to its child: the first asks the job to save a
 * checkpoint and stop (SIGUSR1 to mpirun, which forwards it to every rank; a lone worker gets
 * the signal itself), a second SIGINT, SIGTERM or SIGHUP stops it at once (SIGTERM), a third
 * kills it (SIGKILL). One line on stderr says what each did. An ignored SIGHUP (nohup) stays
 * ignored. Call before the first ct_launch_run. */
void ct_launch_catch_signals(void);
/* The first stop signal this process got since ct_launch_catch_signals, or 0. */
int ct_launch_stop_signal(void);
/* "SIGINT", "SIGTERM", "SIGHUP", "SIGUSR1", "SIGKILL", else "a signal"; safe in a handler. */
const char *ct_launch_signal_name(int sig);

/* Sets Open MPI's run-as-root variables, runs `args` (mpirun when `mpirun`, else a lone worker)
 * as a child and waits for it. The child runs in its own process group with stdin from
 * /dev/null and gets SIGTERM when this process dies, even by SIGKILL (mpirun then ends its
 * ranks). Its stderr passes through this process, which reads mpirun's report of a failed rank
 * from it. Returns an error only when the command could not be started (CT_ERR_IO when it is
 * not there or not runnable: every attempt would fail so); how it ended is in *result. */
ct_status ct_launch_run(const ct_argv *args, bool mpirun, ct_launch_result *result);

#endif
