/*
 * `ctrain-launch`: starts a job's ranks. It loads the job first (so a bad job file fails here,
 * once, not on every rank), then either
 * - runs the worker in this process: --nproc 1 on this machine, or when it already runs inside
 *   an MPI or Slurm job (mpirun/srun started it: the world comes from there), or
 * - builds an mpirun command (mpirun.c) and replaces itself with it; every rank then runs
 *   `ctrain worker` (worker.c). --dry-run prints the command and the resolved job instead.
 */
#include "launcher/launch_internal.h"
#include "launcher/launcher.h"
#include "launcher/launcher_internal.h"

#include <stdio.h>
#include <string.h>

static const char *launch_usage =
    "usage: ctrain-launch [--nproc N] [--hostfile F] [--mpirun-args \"...\"] [--dry-run]\n"
    "                     JOB.toml [section.key=value ...]\n"
    "Runs a training job described by JOB.toml (keys: docs/config.md), with dotted overrides\n"
    "such as train.lr=3e-4 applied after the file. Several ranks start through mpirun, each\n"
    "running `ctrain worker JOB.toml ...` (docs/launching.md).\n"
    "  --nproc N            ranks to start (default 1: train in this process, no mpirun)\n"
    "  --hostfile F         Open MPI hostfile (\"host slots=N\" lines) for several machines;\n"
    "                       without it every rank runs on this machine\n"
    "  --mpirun-args \"...\"  extra mpirun arguments, split like a shell (quotes respected),\n"
    "                       e.g. \"--mca btl tcp,self\"\n"
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

int ct_launch_main(int argc, char **argv) {
    ct_launch_options opts = {.nproc = 1, .hostfile = NULL, .mpirun_args = NULL};
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

    const char *outer = ct_launch_outer_job();
    if (outer) {
        fprintf(stderr,
                "ctrain-launch: inside an MPI or Slurm job (%s is set): running the worker "
                "directly%s\n",
                outer,
                nproc_given || opts.hostfile || opts.mpirun_args
                    ? "; --nproc, --hostfile and --mpirun-args are ignored"
                    : "");
        if (!dry_run) return run_worker(argc, argv, first);
        if (ct_launch_worker_argv(&command, argv[first], n_overrides, overrides) != CT_OK)
            return launch_fail(&command);
        print_plan("would run the worker directly (this process is one rank of the outer job):", "",
                   &command, &job);
        ct_argv_free(&command);
        return 0;
    }

    if (opts.nproc == 1 && !opts.hostfile && !opts.mpirun_args) {
        if (!dry_run) return run_worker(argc, argv, first);
        if (ct_launch_worker_argv(&command, argv[first], n_overrides, overrides) != CT_OK)
            return launch_fail(&command);
        print_plan("would train in this process (1 rank, no mpirun), as:", "", &command, &job);
        ct_argv_free(&command);
        return 0;
    }

    if (ct_launch_mpirun_argv(&command, &opts, &job, n_overrides, overrides) != CT_OK)
        return launch_fail(&command);
    if (dry_run) {
        print_plan("would run (Open MPI's run-as-root variables are set by ctrain-launch):",
                   "OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1 ", &command, &job);
        ct_argv_free(&command);
        return 0;
    }
    ct_launch_exec(&command); /* returns only when mpirun could not be started */
    return launch_fail(&command);
}
