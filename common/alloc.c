/*
 * The counting allocator. Every long-lived buffer of ctrain (parameters, gradients, optimizer
 * state, arena blocks, communication buffers) comes from here, so the memory report is a sum
 * of counters rather than a guess, and a test can prove that a warm training step calls it
 * zero times. Counters are atomics: the data prefetch thread allocates too.
 */
#include "common/common.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

static _Atomic size_t current_bytes[CT_MEM_COUNT];
static _Atomic size_t peak_bytes[CT_MEM_COUNT];
static _Atomic size_t total_current_bytes;
static _Atomic size_t total_peak_bytes;
static _Atomic uint64_t allocation_count;

static const char *category_names[CT_MEM_COUNT] = {"params",      "grads",      "optimizer",
                                                   "activations", "gathered",   "comm",
                                                   "data",        "checkpoint", "other"};

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
