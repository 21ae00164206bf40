/*
 * launcher: the user-facing layer: the `ctrain-launch` and `ctrain` commands (their entry
 * points here), rank launching and mpirun supervision. The job file is job/'s, the training
 * train/'s.
 */
#ifndef CT_LAUNCHER_H
#define CT_LAUNCHER_H

#include "job/job.h"
#include "train/train.h"

/* Command-line entry points (argv as given to main). */
int ct_launch_main(int argc, char **argv);
int ct_cli_main(int argc, char **argv);

#endif
