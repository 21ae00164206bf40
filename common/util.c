/*
 * Small helpers with no better home: the monotonic clock and the edit distance used for
 * "did you mean" suggestions on unknown keys and flags.
 */
#include "common/common.h"

#include <stdlib.h>
#include <string.h>
#include <time.h>

double ct_time_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

size_t ct_edit_distance(const char *a, const char *b) {
    size_t n = strlen(a), m = strlen(b);
    if (n > 255 || m > 255) return (size_t)-1;
    size_t row[256];
    for (size_t j = 0; j <= m; j++) row[j] = j;
    for (size_t i = 1; i <= n; i++) {
        size_t diagonal = row[0];
        row[0] = i;
        for (size_t j = 1; j <= m; j++) {
            size_t above = row[j];
            size_t substitute = diagonal + (a[i - 1] != b[j - 1]);
            row[j] = CT_MIN(CT_MIN(row[j - 1] + 1, above + 1), substitute);
            diagonal = above;
        }
    }
    return row[m];
}
