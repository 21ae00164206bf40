/*
 * The worker: what every rank runs (`ctrain worker JOB.toml [k=v ...]`, started by mpirun, srun
 * or `ctrain-launch`). It loads the job, joins the world (MPI; a plain process is a world of
 * one), binds itself to its node-local block of cores, settles its thread count and trains.
 *
 * Threads per rank: device.threads_per_rank when set, else OMP_NUM_THREADS when set (mpirun from
 * ctrain-launch sets it; so do Slurm users), else the cores of the block this rank was bound to
 * (or, left unbound, the cores this process may use divided by the ranks on this node). The
 * answer goes into the job the trainer sees, so the banner shows it.
 *
 * Failure on any rank ends the whole job: the rank prints `[rank r] error: ...` and calls
 * ct_comm_abort, which takes every other rank down with it (MPI_Abort), so nobody waits forever
 * in a collective for a rank that has gone. The abort carries the exit code (CT_EXIT_*), so
 * mpirun's exit status and report say 2 for a configuration error, which a supervisor does not
 * restart. A stop on request (CT_EXIT_STOPPED: the ranks agreed on it and saved a checkpoint)
 * is no failure: every rank finalizes and exits 4.
 */
#include "launcher/launcher_internal.h"

#include <stdlib.h>
#include <string.h>

static const char *worker_usage =
    "usage: ctrain worker JOB.toml [section.key=value ...]\n"
    "Trains JOB.toml as one rank of the MPI job around this process (mpirun, srun, or\n"
    "ctrain-launch, which starts one worker per rank); outside any MPI job it trains alone.\n"
    "Each rank binds itself to its share of this node's cores (hwloc). `ctrain train` is the\n"
    "same command.\n"
    "  -h, --help   this text\n";

/* OMP_NUM_THREADS as a positive count, or 0 when unset or not a number. */
static int env_threads(void) {
    const char *env = getenv("OMP_NUM_THREADS");
    int threads = 0;
    if (env && !ct_cli_parse_int(env, 1, 4096, &threads)) threads = 0;
    return threads;
}

/* Prints this rank's failure and ends the job; never returns. Before the world exists there is
 * no rank to name, and ct_comm_abort exits without MPI. */
static _Noreturn void worker_fail(ct_comm *world, const char *what) {
    ct_log(CT_LOG_ERROR, "worker", "%s: %s", what, ct_error_message());
    ct_comm_abort(world, 1);
}

int ct_worker_main(int argc, char **argv) {
    if (argc >= 1 && (strcmp(argv[0], "-h") == 0 || strcmp(argv[0], "--help") == 0)) {
        fputs(worker_usage, stdout);
        return 0;
    }
    if (argc < 1) return ct_cli_usage_error("worker", worker_usage, "expected a job file");
    if (argv[0][0] == '-') return ct_cli_bad_flag("worker", argv[0], worker_usage);
    int misplaced = ct_launch_check_flag_order("ctrain worker", worker_usage, argc, argv, 0);
    if (misplaced) return misplaced;

    /* The job first: a bad job file is the same error on every rank, printed before MPI. */
    ct_job job;
    if (ct_job_load(&job, argv[0], argc - 1, argv + 1) != CT_OK) {
        fprintf(stderr, "ctrain worker: %s\n", ct_error_message());
        return CT_EXIT_CONFIG;
    }

    ct_comm *world = NULL;
    ct_train_catch_stop_signals(); /* mpirun may forward a stop while the world forms */
    if (ct_comm_init_world(&world, &argc, &argv) != CT_OK) worker_fail(world, "joining the job");
    int rank = ct_comm_rank(world), size = ct_comm_size(world);
    /* One rank prints like a plain program; several prefix their errors with the rank. */
    ct_log_set_rank(size > 1 ? rank : -1);

    /* Threads: the job's key, else OMP_NUM_THREADS, else (0 here) the cores of the block the
     * binding gives this rank. */
    int local_size = ct_comm_local_size(world);
    int threads = job.device_threads_per_rank > 0 ? job.device_threads_per_rank : env_threads();
    int cores_before = ct_launch_core_count();
    char binding[256];
    if (ct_comm_bind_cores(ct_comm_local_rank(world), local_size, threads, binding,
                           sizeof(binding)) != CT_OK)
        worker_fail(world, "binding to cores");
    if (threads <= 0) {
        /* Bound to a block: its cores. Left as it was: a share of what this process may use. */
        int cores_after = ct_launch_core_count();
        threads = cores_after < cores_before ? cores_after
                                             : CT_MAX(1, cores_before / CT_MAX(1, local_size));
    }
    job.device_threads_per_rank = threads;
    /* Rank 0 says how its node is laid out; every rank's own placement is a debug line. */
    if (rank == 0 && size > 1)
        ct_log(CT_LOG_INFO, "worker", "%d ranks, %d on this node, %d thread%s per rank; rank 0 %s",
               size, local_size, threads, threads == 1 ? "" : "s", binding);
    ct_log(CT_LOG_DEBUG, "worker", "rank %d of %d (local %d of %d): %d threads, %s", rank, size,
           ct_comm_local_rank(world), local_size, threads, binding);

    if (size > 1) ct_comm_set_timeout(world, job.comm_timeout_s); /* comm.timeout_s */
    int code = ct_train_run(&job, world);
    if (code != CT_EXIT_OK && code != CT_EXIT_STOPPED && size > 1) {
        /* ct_train_run has printed what went wrong; other ranks may wait in a collective. */
        ct_comm_abort(world, code);
    }
    ct_comm_free(world);
    ct_comm_finalize();
    return code;
}
