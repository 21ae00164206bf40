/*
 * `ctrain-launch`: starts a job's ranks. With --nproc 1 it trains in this process. Several
 * ranks (through mpirun), hostfiles and restarts arrive with the Distributed and Checkpoints
 * issues; until then asking for them is an error that says so.
 */
#include "launcher/launcher.h"
#include "launcher/launcher_internal.h"

#include <stdio.h>
#include <string.h>

static const char *launch_usage =
    "usage: ctrain-launch [--nproc N] [--dry-run] JOB.toml [section.key=value ...]\n"
    "Runs a training job described by JOB.toml (keys: docs/config.md), with dotted overrides\n"
    "such as train.lr=3e-4 applied after the file.\n"
    "  --nproc N    ranks to start (default 1; this build trains with one rank)\n"
    "  --dry-run    print the resolved job and what would run, then exit\n"
    "  -h, --help   this text\n";

int ct_launch_main(int argc, char **argv) {
    int nproc = 1;
    bool dry_run = false;
    int first = 1;
    for (; first < argc && argv[first][0] == '-'; first++) {
        const char *a = argv[first];
        if (strcmp(a, "-h") == 0 || strcmp(a, "--help") == 0) {
            fputs(launch_usage, stdout);
            return 0;
        } else if (strcmp(a, "--dry-run") == 0) {
            dry_run = true;
        } else if (strcmp(a, "--nproc") == 0) {
            if (first + 1 >= argc || !ct_cli_parse_int(argv[first + 1], 1, 1 << 20, &nproc))
                return ct_cli_usage_error("launch", launch_usage,
                                          "--nproc needs a positive integer");
            first++;
        } else {
            return ct_cli_bad_flag("launch", a, launch_usage);
        }
    }
    if (first >= argc) return ct_cli_usage_error("launch", launch_usage, "expected a job file");
    if (nproc != 1) {
        fprintf(stderr,
                "ctrain-launch: --nproc %d: multi-rank training is not built yet (it "
                "arrives with the Distributed issue); use --nproc 1\n",
                nproc);
        return 2;
    }
    ct_job job;
    if (ct_job_load(&job, argv[first], argc - first - 1, argv + first + 1) != CT_OK) {
        fprintf(stderr, "ctrain-launch: %s\n", ct_error_message());
        return 1;
    }
    if (dry_run) {
        printf("# would train in this process (1 rank):\n");
        ct_job_print(&job, stdout);
        return 0;
    }
    return ct_train_main(&job);
}
