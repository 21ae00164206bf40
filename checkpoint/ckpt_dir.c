/*
 * ckpt_dir: the directory protocol that keeps a checkpoint all-or-nothing. A save writes into
 * DIR/step_NNNNNNNN.tmp/ (rank files, then manifest.json last, each fsynced), fsyncs that
 * directory, renames it to DIR/step_NNNNNNNN/ and fsyncs DIR, so a crash at any point leaves
 * either the complete new checkpoint or none (plus a .tmp that every reader ignores). A
 * checkpoint is complete when its directory has the final name and holds manifest.json;
 * latest and prune consider nothing else.
 */
#define _GNU_SOURCE /* nftw */
#include "checkpoint/checkpoint.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <ftw.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CT_CKPT_DIR_PATH_BYTES 1024

/* ---------------------------------------------------------------- helpers */

static ct_status fsync_dir(const char *path) {
    int fd = open(path, O_RDONLY | O_DIRECTORY);
    if (fd < 0) return ct_error(CT_ERR_IO, "%s: open directory: %s", path, strerror(errno));
    int rc = fsync(fd);
    int err = errno;
    close(fd);
    if (rc != 0) return ct_error(CT_ERR_IO, "%s: fsync directory: %s", path, strerror(err));
    return CT_OK;
}

static int remove_entry(const char *path, const struct stat *sb, int flag, struct FTW *ftw) {
    (void)sb, (void)flag, (void)ftw;
    return remove(path);
}

static ct_status remove_tree(const char *path) {
    if (nftw(path, remove_entry, 16, FTW_DEPTH | FTW_PHYS) != 0)
        return ct_error(CT_ERR_IO, "%s: cannot remove: %s", path, strerror(errno));
    return CT_OK;
}

/* Leaves room for /step_NNNNNNNN.tmp/manifest.json in every path buffer. */
static ct_status check_dir_length(const char *dir) {
    if (strlen(dir) > CT_CKPT_DIR_PATH_BYTES - 64)
        return ct_error(CT_ERR_INVALID, "checkpoint directory path too long (%zu bytes): %s",
                        strlen(dir), dir);
    return CT_OK;
}

/* The step of a name that is exactly step_ followed by 8 or more digits, else -1. */
static int64_t parse_step_name(const char *name) {
    if (strncmp(name, "step_", 5) != 0) return -1;
    const char *d = name + 5;
    size_t n = strspn(d, "0123456789");
    if (n < 8 || n > 18 || d[n] != '\0') return -1;
    return strtoll(d, NULL, 10);
}

static bool has_manifest(const char *dir, const char *name) {
    char path[CT_CKPT_DIR_PATH_BYTES];
    snprintf(path, sizeof(path), "%s/%s/manifest.json", dir, name);
    struct stat sb;
    return stat(path, &sb) == 0 && S_ISREG(sb.st_mode);
}

/* The steps of the complete checkpoints in dir, ascending, in a ct_alloc'd array. */
static ct_status list_complete(const char *dir, int64_t **steps, int *count, int *cap) {
    *steps = NULL, *count = 0, *cap = 0;
    DIR *d = opendir(dir);
    if (!d) return ct_error(CT_ERR_IO, "%s: cannot list checkpoints: %s", dir, strerror(errno));
    struct dirent *e;
    while ((e = readdir(d)) != NULL) {
        int64_t step = parse_step_name(e->d_name);
        if (step < 0 || !has_manifest(dir, e->d_name)) continue;
        if (*count == *cap) {
            int grown_cap = *cap ? 2 * *cap : 16;
            int64_t *grown = ct_alloc(CT_MEM_OTHER, (size_t)grown_cap * sizeof(int64_t));
            if (!grown) {
                closedir(d);
                ct_free(CT_MEM_OTHER, *steps, (size_t)*cap * sizeof(int64_t));
                return ct_error(CT_ERR_NOMEM, "%s: checkpoint list", dir);
            }
            if (*count) memcpy(grown, *steps, (size_t)*count * sizeof(int64_t));
            ct_free(CT_MEM_OTHER, *steps, (size_t)*cap * sizeof(int64_t));
            *steps = grown, *cap = grown_cap;
        }
        int i = (*count)++;
        for (; i > 0 && (*steps)[i - 1] > step; i--)
            (*steps)[i] = (*steps)[i - 1];
        (*steps)[i] = step;
    }
    closedir(d);
    return CT_OK;
}

/* ---------------------------------------------------------------- public */

void ct_ckpt_step_path(const char *dir, int64_t step, bool tmp, char *out, size_t out_bytes) {
    snprintf(out, out_bytes, "%s/step_%08lld%s", dir, (long long)step, tmp ? ".tmp" : "");
}

void ct_ckpt_rank_path(const char *step_dir, int rank, char *out, size_t out_bytes) {
    snprintf(out, out_bytes, "%s/rank_%05d.ctk", step_dir, rank);
}

ct_status ct_ckpt_begin(const char *dir, int64_t step, char *tmp_path, size_t tmp_path_bytes) {
    CT_CHECK(check_dir_length(dir));
    if (step < 0) return ct_error(CT_ERR_INVALID, "checkpoint step %lld", (long long)step);
    CT_CHECK(ct_mkdir_p(dir));
    ct_ckpt_step_path(dir, step, true, tmp_path, tmp_path_bytes);
    struct stat sb;
    if (lstat(tmp_path, &sb) == 0) CT_CHECK(remove_tree(tmp_path)); /* a crashed save's */
    if (mkdir(tmp_path, 0755) != 0)
        return ct_error(CT_ERR_IO, "%s: mkdir: %s", tmp_path, strerror(errno));
    return CT_OK;
}

ct_status ct_ckpt_commit(const char *dir, int64_t step) {
    char tmp[CT_CKPT_DIR_PATH_BYTES], final[CT_CKPT_DIR_PATH_BYTES];
    char manifest[CT_CKPT_DIR_PATH_BYTES + 16];
    CT_CHECK(check_dir_length(dir));
    ct_ckpt_step_path(dir, step, true, tmp, sizeof(tmp));
    ct_ckpt_step_path(dir, step, false, final, sizeof(final));
    snprintf(manifest, sizeof(manifest), "%s/manifest.json", tmp);
    struct stat sb;
    if (stat(manifest, &sb) != 0)
        return ct_error(CT_ERR_INVALID, "%s: no manifest.json: the checkpoint is incomplete", tmp);
    if (lstat(final, &sb) == 0)
        return ct_error(CT_ERR_IO, "%s already exists: not replacing a checkpoint", final);
    CT_CHECK(fsync_dir(tmp));
    if (rename(tmp, final) != 0)
        return ct_error(CT_ERR_IO, "rename %s -> %s: %s", tmp, final, strerror(errno));
    return fsync_dir(dir);
}

ct_status ct_ckpt_latest(const char *dir, bool *found, int64_t *step, char *path,
                         size_t path_bytes) {
    *found = false;
    CT_CHECK(check_dir_length(dir));
    int64_t *steps;
    int count, cap;
    CT_CHECK(list_complete(dir, &steps, &count, &cap));
    if (count > 0) {
        *found = true;
        *step = steps[count - 1];
        if (path) ct_ckpt_step_path(dir, *step, false, path, path_bytes);
    }
    ct_free(CT_MEM_OTHER, steps, (size_t)cap * sizeof(int64_t));
    return CT_OK;
}

ct_status ct_ckpt_prune(const char *dir, int keep) {
    if (keep < 1) return ct_error(CT_ERR_INVALID, "checkpoint keep = %d: must be at least 1", keep);
    CT_CHECK(check_dir_length(dir));
    int64_t *steps;
    int count, cap;
    CT_CHECK(list_complete(dir, &steps, &count, &cap));
    ct_status st = CT_OK;
    for (int i = 0; i + keep < count && st == CT_OK; i++) {
        char path[CT_CKPT_DIR_PATH_BYTES];
        ct_ckpt_step_path(dir, steps[i], false, path, sizeof(path));
        st = remove_tree(path);
    }
    ct_free(CT_MEM_OTHER, steps, (size_t)cap * sizeof(int64_t));
    if (st == CT_OK) st = fsync_dir(dir);
    return st;
}

ct_status ct_ckpt_first_from(const char *dir, int64_t step, bool *found, int64_t *first) {
    *found = false;
    CT_CHECK(check_dir_length(dir));
    int64_t *steps;
    int count, cap;
    CT_CHECK(list_complete(dir, &steps, &count, &cap));
    for (int i = 0; i < count && !*found; i++)
        if (steps[i] >= step) *found = true, *first = steps[i];
    ct_free(CT_MEM_OTHER, steps, (size_t)cap * sizeof(int64_t));
    return CT_OK;
}

ct_status ct_ckpt_remove_from(const char *dir, int64_t step) {
    CT_CHECK(check_dir_length(dir));
    int64_t *steps;
    int count, cap;
    CT_CHECK(list_complete(dir, &steps, &count, &cap));
    ct_status st = CT_OK;
    bool removed = false;
    for (int i = 0; i < count && st == CT_OK; i++) {
        if (steps[i] < step) continue;
        char path[CT_CKPT_DIR_PATH_BYTES];
        ct_ckpt_step_path(dir, steps[i], false, path, sizeof(path));
        /* Never silent: these were another run's (see the caller). */
        ct_log(CT_LOG_WARN, "checkpoint", "replacing %s: it is at or after step %lld of this run",
               path, (long long)step);
        st = remove_tree(path);
        removed = true;
    }
    ct_free(CT_MEM_OTHER, steps, (size_t)cap * sizeof(int64_t));
    if (st == CT_OK && removed) st = fsync_dir(dir);
    return st;
}
