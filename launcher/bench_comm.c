/*
 * `ctrain bench comm`: collective bandwidth, nccl-tests style. For each operation and size it
 * times blocking float collectives on the world group, checks the first result against the
 * value every rank can compute, and prints time, algbw = bytes / time and busbw (algbw x
 * 2(n-1)/n for all-reduce, x (n-1)/n for reduce-scatter and all-gather, x 1 for broadcast),
 * with bytes counted as comm.h does. With --nproc N it starts itself under mpirun.
 */
#include "comm/comm.h"
#include "launcher/launcher_internal.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *bench_comm_usage =
    "usage: ctrain bench comm [--nproc N] [--min-bytes B] [--max-bytes B] [--iters K]\n"
    "Times all-reduce, reduce-scatter, all-gather and broadcast of float buffers from B_min to\n"
    "B_max bytes (doubling; defaults 1 KiB and 64 MiB), K iterations each (default 10), and\n"
    "checks every result. --nproc N starts N ranks through mpirun; inside an MPI job (mpirun,\n"
    "srun) it uses the ranks it has.\n";

typedef struct {
    int nproc, iters;
    unsigned long long min_bytes, max_bytes;
} bench_options;

static int parse(int argc, char **argv, bench_options *o) {
    *o = (bench_options){.nproc = 0, .iters = 10, .min_bytes = 1024, .max_bytes = 64 << 20};
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        bool ok = v != NULL;
        if (strcmp(a, "--nproc") == 0 && ok)
            ok = ct_cli_parse_int(v, 1, 4096, &o->nproc);
        else if (strcmp(a, "--iters") == 0 && ok)
            ok = ct_cli_parse_int(v, 1, 1000000, &o->iters);
        else if (strcmp(a, "--min-bytes") == 0 && ok)
            ok = ct_cli_parse_u64(v, &o->min_bytes);
        else if (strcmp(a, "--max-bytes") == 0 && ok)
            ok = ct_cli_parse_u64(v, &o->max_bytes);
        else if (ct_cli_is_help(a)) {
            return ct_cli_help(bench_comm_usage);
        } else
            return ct_cli_bad_flag("bench comm", a, bench_comm_usage);
        if (!ok) return ct_cli_usage_error("bench comm", bench_comm_usage, "bad value for %s", a);
        i++;
    }
    if (o->min_bytes < 16 || o->max_bytes < o->min_bytes || o->max_bytes > (1ULL << 34))
        return ct_cli_usage_error("bench comm", bench_comm_usage,
                                  "need 16 <= --min-bytes <= --max-bytes <= 16 GiB");
    return -1;
}

/* Starts `ctrain bench comm` (without --nproc) under mpirun. */
static int relaunch(int argc, char **argv, int nproc) {
    ct_argv args;
    ct_argv_init(&args);
    char ctrain[1024];
    ct_status status = ct_launch_ctrain_path(ctrain, sizeof(ctrain));
    if (!status) status = ct_argv_push(&args, "mpirun");
    if (!status) status = ct_argv_pushf(&args, "-np");
    if (!status) status = ct_argv_pushf(&args, "%d", nproc);
    if (!status) status = ct_argv_push(&args, "--oversubscribe");
    if (!status) status = ct_argv_push(&args, ctrain);
    if (!status) status = ct_argv_push(&args, "bench");
    if (!status) status = ct_argv_push(&args, "comm");
    for (int i = 0; !status && i < argc; i++) {
        if (strcmp(argv[i], "--nproc") == 0) {
            i++;
            continue;
        }
        status = ct_argv_push(&args, argv[i]);
    }
    if (!status) status = ct_launch_exec(&args);
    fprintf(stderr, "ctrain bench comm: %s\n", ct_error_message());
    ct_argv_free(&args);
    return 1;
}

/* Runs `iters` collectives of `kind` on n floats; returns seconds per call (mean over ranks)
 * or -1 on failure; *wrong counts result elements that differ from the expected values. */
static double time_op(ct_comm *world, ct_coll_kind kind, float *a, float *b, size_t n, int iters,
                      long *wrong) {
    int rank = ct_comm_rank(world), size = ct_comm_size(world);
    size_t block = n / (size_t)size;
    double t0 = 0;
    for (int it = -1; it < iters; it++) { /* iteration -1: warm-up and correctness */
        for (size_t i = 0; it < 0 && i < n; i++)
            a[i] = (float)(rank + 1);
        if (it == 0) {
            CT_CHECK(ct_comm_barrier(world));
            t0 = ct_time_s();
        }
        ct_status s = CT_OK;
        if (kind == CT_COLL_ALLREDUCE) s = ct_comm_allreduce(world, a, n, CT_COMM_F32, NULL);
        if (kind == CT_COLL_REDUCE_SCATTER)
            s = ct_comm_reduce_scatter(world, a, b, block, CT_COMM_F32, NULL);
        if (kind == CT_COLL_ALLGATHER) s = ct_comm_allgather(world, a, b, block, CT_COMM_F32, NULL);
        if (kind == CT_COLL_BROADCAST) s = ct_comm_broadcast(world, a, n, CT_COMM_F32, 0, NULL);
        if (s) return -1;
        if (it >= 0) continue;
        float sum = (float)size * (float)(size + 1) / 2;
        for (size_t i = 0; i < n && kind == CT_COLL_ALLREDUCE; i++)
            *wrong += a[i] != sum;
        for (size_t i = 0; i < block && kind == CT_COLL_REDUCE_SCATTER; i++)
            *wrong += b[i] != sum;
        for (size_t i = 0; i < block * size && kind == CT_COLL_ALLGATHER; i++)
            *wrong += b[i] != (float)(i / block + 1);
        for (size_t i = 0; i < n && kind == CT_COLL_BROADCAST; i++)
            *wrong += a[i] != 1.0f;
    }
    double seconds = (ct_time_s() - t0) / iters;
    if (ct_comm_allreduce(world, &seconds, 1, CT_COMM_F64, NULL)) return -1;
    return seconds / size;
}

static int run(ct_comm *world, const bench_options *o) {
    int rank = ct_comm_rank(world), size = ct_comm_size(world);
    size_t max_floats = (size_t)(o->max_bytes / 4);
    float *a = ct_alloc(CT_MEM_COMM, 4 * max_floats), *b = ct_alloc(CT_MEM_COMM, 4 * max_floats);
    if (!a || !b) return 1;
    static const ct_coll_kind kinds[] = {CT_COLL_ALLREDUCE, CT_COLL_REDUCE_SCATTER,
                                         CT_COLL_ALLGATHER, CT_COLL_BROADCAST};
    static const double bus_factor_num[] = {2, 1, 1, 0}; /* x (n-1)/n, broadcast x 1 */
    if (rank == 0)
        printf("# ctrain bench comm: %d ranks, backend %s, %d iterations, float32\n"
               "# %14s %-15s %12s %12s %12s %8s\n",
               size, ct_comm_backend(world), o->iters, "bytes", "op", "time (us)", "algbw (GB/s)",
               "busbw (GB/s)", "wrong");
    long total_wrong = 0;
    for (size_t k = 0; k < CT_ARRAY_LEN(kinds); k++) {
        for (unsigned long long bytes = o->min_bytes; bytes <= o->max_bytes; bytes *= 2) {
            size_t n = (size_t)(bytes / 4) / (size_t)size * (size_t)size; /* whole blocks */
            long wrong = 0;
            double t = time_op(world, kinds[k], a, b, n, o->iters, &wrong);
            if (t < 0) {
                fprintf(stderr, "[rank %d] ctrain bench comm: %s\n", rank, ct_error_message());
                return 1;
            }
            double algbw = 4.0 * n / t / 1e9;
            double factor = bus_factor_num[k] ? bus_factor_num[k] * (size - 1) / size : 1.0;
            total_wrong += wrong;
            if (rank == 0)
                printf("  %14zu %-15s %12.1f %12.3f %12.3f %8ld\n", 4 * n,
                       ct_comm_kind_name(kinds[k]), t * 1e6, algbw, algbw * factor, wrong);
        }
    }
    ct_free(CT_MEM_COMM, a, 4 * max_floats);
    ct_free(CT_MEM_COMM, b, 4 * max_floats);
    return total_wrong ? 1 : 0;
}

int ct_cli_bench_comm(int argc, char **argv) {
    bench_options o;
    int parsed = parse(argc, argv, &o);
    if (parsed >= 0) return parsed;
    if (o.nproc > 1 && !ct_launch_outer_job()) return relaunch(argc, argv, o.nproc);
    ct_comm *world = NULL;
    if (ct_comm_init_world(&world, NULL, NULL) != CT_OK) {
        fprintf(stderr, "ctrain bench comm: %s\n", ct_error_message());
        return 1;
    }
    int code = run(world, &o);
    if (code && ct_comm_size(world) > 1) ct_comm_abort(world, code);
    ct_comm_free(world);
    ct_comm_finalize();
    return code;
}
