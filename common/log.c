/*
 * Logging by level. CTRAIN_LOG=error|warn|info|debug picks the threshold (info by default).
 * Errors and warnings go to stderr with the rank in front once it is known; info and debug go
 * to stdout, debug lines tagged with their subsystem.
 */
#include "common/common.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int log_rank = -1;
static int log_threshold = -1;

void ct_log_set_rank(int rank) {
    log_rank = rank;
}

int ct_log_rank(void) {
    return log_rank;
}

ct_log_level ct_log_threshold(void) {
    if (log_threshold < 0) {
        const char *env = getenv("CTRAIN_LOG");
        log_threshold = CT_LOG_INFO;
        if (env && strcmp(env, "error") == 0) log_threshold = CT_LOG_ERROR;
        if (env && strcmp(env, "warn") == 0) log_threshold = CT_LOG_WARN;
        if (env && strcmp(env, "debug") == 0) log_threshold = CT_LOG_DEBUG;
    }
    return (ct_log_level)log_threshold;
}

void ct_log(ct_log_level level, const char *subsystem, const char *fmt, ...) {
    if (level > ct_log_threshold()) return;
    FILE *out = level <= CT_LOG_WARN ? stderr : stdout;
    if (log_rank >= 0 && level <= CT_LOG_WARN) fprintf(out, "[rank %d] ", log_rank);
    if (level == CT_LOG_ERROR) fputs("error: ", out);
    if (level == CT_LOG_WARN) fputs("warning: ", out);
    if (level == CT_LOG_DEBUG) fprintf(out, "[debug %s] ", subsystem);
    va_list args;
    va_start(args, fmt);
    vfprintf(out, fmt, args);
    va_end(args);
    fputc('\n', out);
    if (level <= CT_LOG_WARN) fflush(out);
}
