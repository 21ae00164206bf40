/*
 * Error recording and assertion failures. One message per thread: the function that detects a
 * failure records it with its context, every caller above passes the status up, and the top
 * level prints the message once.
 */
#include "common/common.h"

#include <stdio.h>
#include <stdlib.h>

static _Thread_local char error_message[1024];

ct_status ct_error_at(ct_status status, const char *file, int line, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    vsnprintf(error_message, sizeof(error_message), fmt, args);
    va_end(args);
    ct_log(CT_LOG_DEBUG, "error", "raised at %s:%d: %s", file, line, error_message);
    return status;
}

const char *ct_error_message(void) {
    return error_message;
}

void ct_error_clear(void) {
    error_message[0] = '\0';
}

void ct_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...) {
    char detail[512];
    va_list args;
    va_start(args, fmt);
    vsnprintf(detail, sizeof(detail), fmt, args);
    va_end(args);
    int rank = ct_log_rank();
    if (rank >= 0) fprintf(stderr, "[rank %d] ", rank);
    fprintf(stderr, "ctrain: internal error at %s:%d: assertion '%s' failed: %s\n", file, line,
            cond, detail);
    fflush(stderr);
    abort();
}
