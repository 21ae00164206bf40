/*
 * A fresh temporary directory per test, for suites that write files: make it, build paths
 * inside it, write bytes, and remove it with everything in it.
 */
#ifndef CT_TEST_TEMP_DIR_H
#define CT_TEST_TEMP_DIR_H

#include <CUnit/CUnit.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>

static char temp_dir[256];

static inline void make_temp_dir(void) {
    snprintf(temp_dir, sizeof(temp_dir), "/tmp/ct_test_XXXXXX");
    CU_ASSERT_PTR_NOT_NULL_FATAL(mkdtemp(temp_dir));
}

static inline int remove_entry(const char *path, const struct stat *st, int flag, struct FTW *ftw) {
    (void)st, (void)flag, (void)ftw;
    return remove(path);
}

static inline void remove_temp_dir(void) {
    nftw(temp_dir, remove_entry, 16, FTW_DEPTH | FTW_PHYS);
}

/* temp_dir/name into `out`. */
static inline const char *temp_path(char *out, size_t bytes, const char *name) {
    snprintf(out, bytes, "%s/%s", temp_dir, name);
    return out;
}

static inline void write_bytes(const char *path, const void *data, size_t bytes) {
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    CU_ASSERT_EQUAL(fwrite(data, 1, bytes, f), bytes);
    fclose(f);
}

#endif
