/*
 * The counting allocator. Every long-lived buffer of ctrain (parameters, gradients, optimizer
 * state, arena blocks, communication buffers) comes from here, so the memory report is a sum
 * of counters rather than a guess, and a test can prove that a warm training step calls it
 * zero times. Counters are atomics: the data prefetch thread allocates too. Also here: how
 * much memory and address space the machine can still give, for the plan checked before a run
 * allocates.
 */
#include "common/common.h"

#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>

static _Atomic size_t current_bytes[CT_MEM_COUNT];
static _Atomic size_t peak_bytes[CT_MEM_COUNT];
static _Atomic size_t total_current_bytes;
static _Atomic size_t total_peak_bytes;
static _Atomic uint64_t allocation_count;

static const char *category_names[CT_MEM_COUNT] = {"params",      "masters",  "grads", "optimizer",
                                                   "activations", "gathered", "comm",  "data",
                                                   "checkpoint",  "other"};

static void raise_peak(_Atomic size_t *peak, size_t value) {
    size_t seen = atomic_load(peak);
    while (value > seen && !atomic_compare_exchange_weak(peak, &seen, value)) {
    }
}

void *ct_alloc(ct_mem_category category, size_t bytes) {
    CT_ASSERT(category < CT_MEM_COUNT, "category %d", (int)category);
    size_t rounded = (bytes + 63) & ~(size_t)63;
    void *ptr = NULL;
    if (posix_memalign(&ptr, 64, rounded ? rounded : 64) != 0) {
        ct_error(CT_ERR_NOMEM, "out of memory allocating %zu bytes for %s", bytes,
                 category_names[category]);
        return NULL;
    }
    memset(ptr, 0, rounded);
    atomic_fetch_add(&allocation_count, 1);
    raise_peak(&peak_bytes[category], atomic_fetch_add(&current_bytes[category], bytes) + bytes);
    raise_peak(&total_peak_bytes, atomic_fetch_add(&total_current_bytes, bytes) + bytes);
    return ptr;
}

void ct_free(ct_mem_category category, void *ptr, size_t bytes) {
    if (!ptr) return;
    atomic_fetch_sub(&current_bytes[category], bytes);
    atomic_fetch_sub(&total_current_bytes, bytes);
    free(ptr);
}

void ct_mem_account(ct_mem_category category, int64_t delta_bytes) {
    size_t magnitude = (size_t)(delta_bytes < 0 ? -delta_bytes : delta_bytes);
    if (delta_bytes < 0) {
        atomic_fetch_sub(&current_bytes[category], magnitude);
        atomic_fetch_sub(&total_current_bytes, magnitude);
        return;
    }
    raise_peak(&peak_bytes[category],
               atomic_fetch_add(&current_bytes[category], magnitude) + magnitude);
    raise_peak(&total_peak_bytes, atomic_fetch_add(&total_current_bytes, magnitude) + magnitude);
}

void ct_mem_get_stats(ct_mem_stats *stats) {
    for (int c = 0; c < CT_MEM_COUNT; c++) {
        stats->current_bytes[c] = atomic_load(&current_bytes[c]);
        stats->peak_bytes[c] = atomic_load(&peak_bytes[c]);
    }
    stats->total_current_bytes = atomic_load(&total_current_bytes);
    stats->total_peak_bytes = atomic_load(&total_peak_bytes);
    stats->allocations = atomic_load(&allocation_count);
}

const char *ct_mem_category_name(ct_mem_category category) {
    return category < CT_MEM_COUNT ? category_names[category] : "?";
}

/* ---------------------------------------------------------------- what the machine can give */

/* The first "Key: N kB" line of a /proc file, in bytes; 0 when absent. */
static size_t proc_kib(const char *path, const char *key) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char line[256];
    size_t kib = 0, key_len = strlen(key);
    while (fgets(line, sizeof(line), f))
        if (strncmp(line, key, key_len) == 0 && line[key_len] == ':') {
            kib = strtoull(line + key_len + 1, NULL, 10);
            break;
        }
    fclose(f);
    return kib * 1024;
}

/* A number alone in a file ("max" or missing: 0). */
static size_t file_number(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) return 0;
    char text[64] = "";
    if (!fgets(text, sizeof(text), f)) text[0] = '\0';
    fclose(f);
    return text[0] >= '0' && text[0] <= '9' ? strtoull(text, NULL, 10) : 0;
}

size_t ct_mem_available_bytes(const char **limited_by) {
    size_t best = proc_kib("/proc/meminfo", "MemAvailable");
    *limited_by = "MemAvailable in /proc/meminfo";
    /* A container's cgroup (v2) may allow less than the machine has free. */
    size_t limit = file_number("/sys/fs/cgroup/memory.max");
    size_t used = file_number("/sys/fs/cgroup/memory.current");
    if (limit > 0 && (best == 0 || limit - CT_MIN(limit, used) < best)) {
        best = limit - CT_MIN(limit, used);
        *limited_by = "the cgroup's memory.max";
    }
    return best;
}

size_t ct_mem_address_space_left_bytes(void) {
    struct rlimit limit;
    if (getrlimit(RLIMIT_AS, &limit) != 0 || limit.rlim_cur == RLIM_INFINITY) return 0;
    size_t used = proc_kib("/proc/self/status", "VmSize");
    return limit.rlim_cur > used ? (size_t)limit.rlim_cur - used : 1;
}
