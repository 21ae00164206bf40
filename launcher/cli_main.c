/*
 * `ctrain`: the toolbox. Subcommands: data (make shards), sample (generate text), info (what
 * this build and machine have), config (key reference, resolved job), bench (the sgemm ceiling,
 * collective bandwidth), worker (train as one rank of an MPI job, or alone: what ctrain-launch runs
 * for each rank; `train` is the same command).
 */
#include "job/toml.h"
#include "kernels/kernels.h"
#include "launcher/launcher.h"
#include "launcher/launcher_internal.h"

#include <cblas.h>
#include <stdio.h>
#include <stdlib.h>
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

    "  bench gemm [--dtype fp32|bf16] [...]  the GEMM rate MFU is measured against (sgemm: fp32)\n"
    "  bench comm [--nproc N] [...]  collective bandwidth, nccl-tests style (--help)\n"
    "  bench ckpt [--levels 1,3,9] [...]  checkpoint save/load GB/s and ratio (--help)\n"
    "  ckpt info|verify|export PATH ...  inspect, check or export a checkpoint (--help)\n"
    "  info                     build and machine facts\n"
    "Every command prints its usage with -h or --help.\n";

static const char *config_usage =
    "usage: ctrain config docs\n"
    "       ctrain config show JOB.toml [section.key=value ...]\n"
    "docs: the job.toml key reference (docs/config.md is this output).\n"
    "show: the job as ctrain-launch would run it: every key with defaults and overrides\n"
    "      applied, in job.toml syntax (the output loads as a job file). Where log.dir,\n"
    "      log.metrics or checkpoint.dir are unset, the paths they resolve to are shown,\n"
    "      marked '# default'.\n";

static const char *bench_usage =
    "usage: ctrain bench gemm [--dtype fp32|bf16] [--threads N] [--size N]\n"
    "                         [--blas auto|onednn|openblas]\n"
    "       ctrain bench sgemm [...]  (the same as gemm --dtype fp32)\n"
    "       ctrain bench comm [...]   (ctrain bench comm --help)\n"
    "       ctrain bench ckpt [...]   (ctrain bench ckpt --help)\n"
    "gemm: the matrix multiply rate of N x N matrices (default 1024) on N threads (default:\n"
    "      all cores), the ceiling MFU is measured against: fp32 on the GEMM library of\n"
    "      device.blas (default auto), or bf16 inputs with fp32 sums on oneDNN (AMX where the\n"
    "      CPU has it); prints JSON.\n";

static const char *info_usage = "usage: ctrain info\n"
                                "The version, the CPU threads, the GEMM library device.blas =\n"
                                "\"auto\" picks, the OpenBLAS configuration, and\n"
                                "the CUDA devices and the NCCL this build sees.\n";

static int cli_info(void) {
    char cuda[1024], nccl[128];
    int devices = 0;
    ct_kern_cuda_describe(cuda, sizeof(cuda), &devices);
    ct_comm_describe_nccl(nccl, sizeof(nccl));
    ct_kern_cpu_set_threads(0); /* the default: all cores */
    printf("ctrain %s\n", CTRAIN_VERSION);
    ct_blas blas;
    CT_ASSERT(ct_kern_cpu_blas_for("auto", &blas) == CT_OK, "\"auto\" is a device.blas name");
    printf("cpu: %d threads by default | GEMMs (device.blas = auto): %s | OpenBLAS: %s\n",
           ct_kern_cpu_threads(), ct_kern_cpu_blas_name(blas), openblas_get_config());
    printf("cuda: %s\n", cuda);
    printf("nccl: %s\n", nccl);
    return 0;
}

/* The line of `key` = "" in `printed` replaced by `value` with a comment that it is the
 * default, resolved; keys that were set stay as printed. */
static void print_resolved_line(const char *line, size_t len, const char *value) {
    char quoted[2 * CT_JOB_STR + 3];
    ct_job_toml_format_string(value, quoted, sizeof(quoted));
    const char *eq = memchr(line, '=', len);
    printf("%.*s= %s  # default (unset in the job), resolved\n", (int)(eq - line), line, quoted);
}

/* ct_job_print, with the run directory, metrics path and checkpoint directory resolved where
 * the job leaves them "" (ct_job_run_dir and ct_job_checkpoint_dir decide the defaults). The
 * result still loads as a job file, with the same paths from the same working directory. */
static void print_job_resolved(const ct_job *job) {
    char run_dir[CT_JOB_STR], ckpt_dir[CT_JOB_STR], metrics[CT_JOB_STR + 16];
    ct_job_run_dir(job, run_dir, sizeof(run_dir));
    ct_job_checkpoint_dir(job, ckpt_dir, sizeof(ckpt_dir));
    ct_job_metrics_path(job, metrics, sizeof(metrics));
    const struct {
        const char *section, *key, *value;
        bool unset;
    } resolved[] = {
        {"log", "dir", run_dir, !job->log_dir[0]},
        {"log", "metrics", metrics, !job->log_metrics[0]},
        {"checkpoint", "dir", ckpt_dir, !job->checkpoint_dir[0]},
    };
    char *text = NULL;
    size_t bytes = 0;
    FILE *mem = open_memstream(&text, &bytes);
    if (!mem) {
        ct_job_print(job, stdout);
        return;
    }
    ct_job_print(job, mem);
    fclose(mem);
    char section[64] = "";
    for (const char *line = text; *line;) {
        const char *end = strchr(line, '\n');
        size_t len = end ? (size_t)(end - line) : strlen(line);
        if (line[0] == '[' && len < sizeof(section))
            snprintf(section, sizeof(section), "%.*s", (int)len - 2, line + 1);
        bool done = false;
        for (size_t i = 0; i < CT_ARRAY_LEN(resolved) && !done; i++) {
            char unset_line[80];
            snprintf(unset_line, sizeof(unset_line), "%s = \"\"", resolved[i].key);
            done = resolved[i].unset && strcmp(section, resolved[i].section) == 0 &&
                   len == strlen(unset_line) && strncmp(line, unset_line, len) == 0;
            if (done) print_resolved_line(line, len, resolved[i].value);
        }
        if (!done) printf("%.*s\n", (int)len, line);
        line += len + (end != NULL);
    }
    free(text);
}

static int cli_config(int argc, char **argv) {
    for (int i = 0; i < argc; i++)
        if (ct_cli_is_help(argv[i])) return ct_cli_help(config_usage);
    if (argc == 1 && strcmp(argv[0], "docs") == 0) {
        ct_job_write_docs(stdout);
        return 0;
    }
    if (argc >= 2 && strcmp(argv[0], "show") == 0) {
        ct_job job;
        if (ct_job_load(&job, argv[1], argc - 2, argv + 2) != CT_OK) {
            fprintf(stderr, "ctrain config show: %s\n", ct_error_message());
            return 1;
        }
        print_job_resolved(&job);
        return 0;
    }
    if (argc >= 1 && strcmp(argv[0], "show") == 0)
        return ct_cli_usage_error("config show", config_usage, "expected a job file");
    return ct_cli_usage_error("config", config_usage, "expected 'docs' or 'show JOB.toml'");
}

static int cli_bench(int argc, char **argv) {
    if (argc >= 1 && strcmp(argv[0], "comm") == 0) return ct_cli_bench_comm(argc - 1, argv + 1);
    if (argc >= 1 && strcmp(argv[0], "ckpt") == 0) return ct_cli_bench_ckpt(argc - 1, argv + 1);
    if (argc >= 1 && ct_cli_is_help(argv[0])) return ct_cli_help(bench_usage);
    if (argc < 1 || (strcmp(argv[0], "sgemm") != 0 && strcmp(argv[0], "gemm") != 0))
        return ct_cli_usage_error("bench", bench_usage,
                                  "expected 'gemm', 'sgemm', 'comm' or 'ckpt'");
    int threads = 0, size = 1024;
    ct_dtype dtype = CT_F32;
    const char *command = strcmp(argv[0], "gemm") == 0 ? "bench gemm" : "bench sgemm";
    ct_blas blas;
    CT_ASSERT(ct_kern_cpu_blas_for("auto", &blas) == CT_OK, "\"auto\" is a device.blas name");
    for (int i = 1; i < argc; i++) {
        bool ok = i + 1 < argc;
        if (ct_cli_is_help(argv[i]))
            return ct_cli_help(bench_usage);
        else if (strcmp(argv[i], "--threads") == 0 && ok)
            ok = ct_cli_parse_int(argv[++i], 0, 1024, &threads);
        else if (strcmp(argv[i], "--size") == 0 && ok)
            ok = ct_cli_parse_int(argv[++i], 16, 16384, &size);
        else if (strcmp(argv[i], "--blas") == 0 && ok)
            ok = ct_kern_cpu_blas_for(argv[++i], &blas) == CT_OK;
        else if (strcmp(argv[i], "--dtype") == 0 && ok && strcmp(argv[0], "gemm") == 0) {
            const char *name = argv[++i];
            ok = strcmp(name, "fp32") == 0 || strcmp(name, "bf16") == 0;
            dtype = strcmp(name, "bf16") == 0 ? CT_BF16 : CT_F32;
        } else
            return ct_cli_bad_flag(command, argv[i], bench_usage);
        if (!ok) return ct_cli_usage_error(command, bench_usage, "bad value for %s", argv[i - 1]);
    }
    ct_kern_cpu_set_threads(threads);
    double gflops = 0.0;
    if (ct_kern_cpu_gemm_gflops(size, 5, blas, dtype, &gflops) != CT_OK) {
        fprintf(stderr, "ctrain %s: %s\n", command, ct_error_message());
        return 1;
    }
    printf("{\"gflops\": %.2f, \"threads\": %d, \"size\": %d, \"dtype\": \"%s\", \"blas\": "
           "\"%s\"}\n",
           gflops, ct_kern_cpu_threads(), size, dtype == CT_BF16 ? "bf16" : "fp32",
           dtype == CT_BF16 ? "onednn" : ct_kern_cpu_blas_name(blas));
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
    if (strcmp(cmd, "info") == 0) {
        if (argc == 3 && ct_cli_is_help(argv[2])) return ct_cli_help(info_usage);
        if (argc > 2) return ct_cli_usage_error("info", info_usage, "takes no arguments");
        return cli_info();
    }
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
