/*
 * `ctrain`: the toolbox. Subcommands: data (make shards), sample (generate text), info (what
 * this build and machine have), config (key reference, resolved job), bench (the sgemm ceiling,
 * collective bandwidth), worker (train as one rank of an MPI job, or alone: what ctrain-launch runs
 * for each rank; `train` is the same command).
 */
#include "kernels/kernels.h"
#include "launcher/launch_internal.h"
#include "launcher/launcher.h"
#include "launcher/launcher_internal.h"

#include <cblas.h>
#include <stdio.h>
#include <string.h>

static const char *ctrain_usage =
    "usage: ctrain COMMAND [ARGS]\n"
    "commands:\n"
    "  data prepare|synth ...   make token shards (ctrain data --help)\n"
    "  sample --init FILE ...   generate text from a model file (ctrain sample --help)\n"
    "  worker JOB.toml [k=v ...]  train as one rank of the MPI job around it (mpirun, srun,\n"
    "                           ctrain-launch), or alone outside one; `train` is the same\n"
    "  config docs              print the job.toml key reference (docs/config.md)\n"
    "  config show JOB.toml [k=v ...]  print the job with defaults and overrides applied\n"
    "  bench sgemm [--threads N] [--size N]  the sgemm rate MFU is measured against\n"
    "  bench comm [--nproc N] [...]  collective bandwidth, nccl-tests style (--help)\n"
    "  bench ckpt [--levels 1,3,9] [...]  checkpoint save/load GB/s and ratio (--help)\n"
    "  ckpt info|verify|export PATH ...  inspect, check or export a checkpoint (--help)\n"
    "  info                     build and machine facts\n";

static int cli_info(void) {
    char cuda[1024];
    int devices = 0;
    ct_kern_cuda_describe(cuda, sizeof(cuda), &devices);
    ct_kern_cpu();
    printf("ctrain %s\n", CTRAIN_VERSION);
    printf("cpu: %d threads by default | OpenBLAS: %s\n", ct_kern_cpu_threads(),
           openblas_get_config());
    printf("cuda: %s\n", cuda);
    return 0;
}

static int cli_config(int argc, char **argv) {
    if (argc >= 1 && strcmp(argv[0], "docs") == 0) {
        ct_job_write_docs(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[0], "show") == 0) {
        ct_job job;
        if (ct_job_load(&job, argv[1], argc - 2, argv + 2) != CT_OK) {
            fprintf(stderr, "ctrain config: %s\n", ct_error_message());
            return 1;
        }
        ct_job_print(&job, stdout);
        return 0;
    }
    return ct_cli_usage_error("config", ctrain_usage, "expected 'docs' or 'show JOB.toml'");
}

static int cli_bench(int argc, char **argv) {
    if (argc >= 1 && strcmp(argv[0], "comm") == 0) return ct_cli_bench_comm(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "ckpt") == 0) return ct_cli_bench_ckpt(argc - 1, argv + 1);
    if (argc < 1 || strcmp(argv[0], "sgemm") != 0)
        return ct_cli_usage_error("bench", ctrain_usage, "expected 'sgemm' or 'comm'");
    int threads = 0, size = 1024;
    for (int i = 1; i < argc; i++) {
        bool ok = i + 1 < argc;
        if (strcmp(argv[i], "--threads") == 0 && ok)
            ok = ct_cli_parse_int(argv[++i], 0, 1024, &threads);
        else if (strcmp(argv[i], "--size") == 0 && ok)
            ok = ct_cli_parse_int(argv[++i], 16, 16384, &size);
        else
            return ct_cli_bad_flag("bench", argv[i], ctrain_usage);
        if (!ok) return ct_cli_usage_error("bench", ctrain_usage, "bad value for %s", argv[i - 1]);
    }
    ct_kern_cpu_set_threads(threads);
    double gflops = ct_kern_cpu_sgemm_gflops(size, 5);
    printf("{\"gflops\": %.2f, \"threads\": %d, \"size\": %d}\n", gflops, ct_kern_cpu_threads(),
           size);
    return 0;
}

int ct_cli_main(int argc, char **argv) {
    if (argc < 2) {
        fputs(ctrain_usage, stderr);
        return 2;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "-h") == 0 || strcmp(cmd, "--help") == 0 || strcmp(cmd, "help") == 0) {
        fputs(ctrain_usage, stdout);
        return 0;
    }
    if (strcmp(cmd, "--version") == 0) {
        printf("ctrain %s\n", CTRAIN_VERSION);
        return 0;
    }
    if (strcmp(cmd, "data") == 0) return ct_cli_data(argc - 2, argv + 2);
    if (strcmp(cmd, "sample") == 0) return ct_cli_sample(argc - 2, argv + 2);
    if (strcmp(cmd, "worker") == 0 || strcmp(cmd, "train") == 0)
        return ct_worker_main(argc - 2, argv + 2);
    if (strcmp(cmd, "config") == 0) return cli_config(argc - 2, argv + 2);
    if (strcmp(cmd, "bench") == 0) return cli_bench(argc - 2, argv + 2);
    if (strcmp(cmd, "ckpt") == 0) return ct_cli_ckpt(argc - 2, argv + 2);
    if (strcmp(cmd, "info") == 0) return cli_info();
    const char *commands[] = {"data",   "sample", "worker", "train",
                              "config", "bench",  "ckpt",   "info"};
    const char *nearest = commands[0];
    for (size_t i = 1; i < sizeof(commands) / sizeof(commands[0]); i++)
        if (ct_edit_distance(cmd, commands[i]) < ct_edit_distance(cmd, nearest))
            nearest = commands[i];
    fprintf(stderr, "ctrain: unknown command '%s'; did you mean '%s'?\n\n%s", cmd, nearest,
            ctrain_usage);
    return 2;
}
