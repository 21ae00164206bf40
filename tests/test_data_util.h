/*
 * Helpers shared by the data/ suites (test_data, test_data_files, test_data_tools): counting
 * shards written into the test's temporary directory, opening a dataset there, the two-shard
 * stream the formula tests use, and a check on the last error message. Include after
 * data/data.h and tests/test_temp_dir.h.
 */
#ifndef CT_TEST_DATA_UTIL_H
#define CT_TEST_DATA_UTIL_H

#include "data/data.h"
#include "tests/test_temp_dir.h"

#include <CUnit/CUnit.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* An llm.c shard whose token k is first + k. */
static inline void write_counting_shard(const char *name, uint16_t first, uint64_t count) {
    uint16_t tokens[4096];
    CU_ASSERT_FATAL(count <= 4096);
    for (uint64_t k = 0; k < count; k++)
        tokens[k] = (uint16_t)(first + k);
    char path[512];
    CU_ASSERT_EQUAL_FATAL(ct_data_write_shard(temp_path(path, sizeof(path), name), tokens, count),
                          CT_OK);
}

/* Opens temp_dir/pattern; NULL (and the status in *status) when it fails. */
static inline ct_data_dataset *open_in_temp(const char *pattern, ct_data_format format, int vocab,
                                            ct_status *status) {
    char path[512];
    ct_data_dataset *ds = NULL;
    *status = ct_data_open(&ds, temp_path(path, sizeof(path), pattern), format, vocab);
    return ds;
}

/* The stream of the two-shard dataset used by the formula tests: 21 tokens, value 100 + p at
 * position p, split 10 + 11 so that sequence 2 (tokens 8..12 at T=4) spans both files. */
static inline ct_data_dataset *open_two_shard_stream(void) {
    write_counting_shard("s_000000.bin", 100, 10);
    write_counting_shard("s_000001.bin", 110, 11);
    ct_status status;
    ct_data_dataset *ds = open_in_temp("s_*.bin", CT_DATA_FORMAT_LLMC, 256, &status);
    CU_ASSERT_EQUAL(status, CT_OK);
    return ds;
}

/* Whether the last error message contains `needle`; prints both when it does not. */
static inline bool message_has(const char *needle) {
    bool found = strstr(ct_error_message(), needle) != NULL;
    if (!found) printf("\n  message '%s' lacks '%s'\n", ct_error_message(), needle);
    return found;
}

#endif
