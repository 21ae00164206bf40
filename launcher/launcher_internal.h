/*
 * Helpers shared by the command-line tools of launcher/: flag parsing with strict number
 * checks, usage errors that exit 2 with the command's usage text, and --help.
 */
#ifndef CT_LAUNCHER_INTERNAL_H
#define CT_LAUNCHER_INTERNAL_H

#include <stdarg.h>
#include <stdbool.h>

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

#endif
