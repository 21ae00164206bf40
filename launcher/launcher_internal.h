/*
 * Helpers shared by the command-line tools of launcher/: flag parsing with strict number
 * checks, and usage errors that exit 2 with the command's usage text.
 */
#ifndef CT_LAUNCHER_INTERNAL_H
#define CT_LAUNCHER_INTERNAL_H

#include <stdbool.h>

/* Whole-string integer in [min, max]. */
bool ct_cli_parse_int(const char *text, long long min, long long max, int *out);
bool ct_cli_parse_u64(const char *text, unsigned long long *out);
/* Whole-string finite number in [min, max]. */
bool ct_cli_parse_double(const char *text, double min, double max, double *out);
/* Prints "ctrain CMD: MESSAGE" and the usage to stderr; returns 2 (the exit code). */
int ct_cli_usage_error(const char *command, const char *usage, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
/* An unknown flag: names it, prints the usage, returns 2. */
int ct_cli_bad_flag(const char *command, const char *flag, const char *usage);

int ct_cli_sample(int argc, char **argv);
int ct_cli_data(int argc, char **argv);
int ct_cli_ckpt(int argc, char **argv);
int ct_cli_bench_comm(int argc, char **argv);
int ct_cli_bench_ckpt(int argc, char **argv);

#endif
