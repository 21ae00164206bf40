/*
 * Flag parsing for the command-line tools: numbers must be the whole argument and inside
 * their range, every usage error names the command ("ctrain data prepare: ...") and what was
 * wrong, then exits 2, and -h/--help prints the command's usage to stdout and exits 0.
 */
#include "launcher/launcher_internal.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

bool ct_cli_parse_int(const char *text, long long min, long long max, int *out) {
    char *end;
    errno = 0;
    long long v = strtoll(text, &end, 10);
    if (errno || end == text || *end || v < min || v > max) return false;
    *out = (int)v;
    return true;
}

bool ct_cli_parse_u64(const char *text, unsigned long long *out) {
    char *end;
    errno = 0;
    if (text[0] == '-') return false;
    unsigned long long v = strtoull(text, &end, 10);
    if (errno || end == text || *end) return false;
    *out = v;
    return true;
}

bool ct_cli_parse_double(const char *text, double min, double max, double *out) {
    char *end;
    errno = 0;
    double v = strtod(text, &end);
    if (errno || end == text || *end || !isfinite(v) || v < min || v > max) return false;
    *out = v;
    return true;
}

int ct_cli_usage_verror(const char *command, const char *usage, const char *fmt, va_list args) {
    /* "data prepare" -> "ctrain data prepare: "; a whole program name such as "ctrain-launch"
     * is printed as it is. */
    bool program = strncmp(command, "ctrain-", 7) == 0;
    fprintf(stderr, "%s%s: ", program ? "" : "ctrain ", command);
    vfprintf(stderr, fmt, args);
    fprintf(stderr, "\n\n%s", usage);
    return 2;
}

int ct_cli_usage_error(const char *command, const char *usage, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int code = ct_cli_usage_verror(command, usage, fmt, args);
    va_end(args);
    return code;
}

int ct_cli_bad_flag(const char *command, const char *flag, const char *usage) {
    return ct_cli_usage_error(command, usage, "unknown option '%s'", flag);
}

bool ct_cli_is_help(const char *arg) {
    return strcmp(arg, "-h") == 0 || strcmp(arg, "--help") == 0;
}

int ct_cli_help(const char *usage) {
    fputs(usage, stdout);
    return 0;
}
