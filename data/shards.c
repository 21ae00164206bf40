/*
 * Token shards on disk: opening a glob of them as one dataset, reading ranges of the
 * concatenated token stream, and writing a shard.
 *
 * Every file is memory-mapped read-only, so a dataset of many gigabytes costs address space,
 * not memory, and ranks on one machine share the page cache. Positions in the stream are 64-bit
 * (a dataset is routinely more than 2^32 tokens); only the per-shard token count of llm.c's
 * header is 32-bit. Headers are checked when the dataset is opened; token values only as they
 * are read (ct_data_read_tokens), because scanning billions of tokens up front would make every
 * start of a job wait on the disk. All multi-byte values are little-endian, as llm.c writes
 * them, which is the byte order of every machine ctrain runs on.
 */
#include "data/data.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <glob.h>
#include <inttypes.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <unistd.h>

#define HEADER_BYTES ((uint64_t)CT_DATA_HEADER_INTS * sizeof(int32_t))

typedef struct {
    char *path;
    size_t path_bytes;
    void *map; /* the whole file; NULL for a file without tokens (mmap refuses length 0) */
    size_t map_bytes;
    const uint16_t *tokens; /* into map, after the header if there is one */
    uint64_t num_tokens;
    uint64_t first_token; /* position of tokens[0] in the concatenated stream */
    uint64_t data_offset; /* byte offset of tokens[0] in the file (1024 or 0) */
} data_shard;

struct ct_data_dataset {
    data_shard *shards;
    int num_shards;
    uint64_t num_tokens;
    int vocab_size;
    ct_data_format format;
};

/* ---------------------------------------------------------------- helpers */

static char *copy_string(const char *s, size_t *bytes) {
    *bytes = strlen(s) + 1;
    char *copy = ct_alloc(CT_MEM_DATA, *bytes);
    if (copy) memcpy(copy, s, *bytes);
    return copy;
}

static int32_t read_le_i32(const unsigned char *p) {
    uint32_t v = (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24;
    return (int32_t)v;
}

/* Checks llm.c's header against the file size and sets where the tokens are. */
static ct_status check_llmc_header(data_shard *shard, uint64_t file_bytes) {
    const unsigned char *bytes = shard->map;
    if (file_bytes < HEADER_BYTES)
        return ct_error(CT_ERR_FORMAT,
                        "%s: truncated: %" PRIu64 " bytes at offset 0, shorter than the %" PRIu64
                        "-byte llm.c header (headerless uint16 files need data.format = "
                        "\"nanogpt\")",
                        shard->path, file_bytes, HEADER_BYTES);
    int32_t magic = read_le_i32(bytes);
    if (magic != CT_DATA_SHARD_MAGIC)
        return ct_error(CT_ERR_FORMAT,
                        "%s: bad magic %" PRId32 " at offset 0 (expected %d, an llm.c token "
                        "shard; headerless uint16 files need data.format = \"nanogpt\")",
                        shard->path, magic, CT_DATA_SHARD_MAGIC);
    int32_t version = read_le_i32(bytes + 4);
    if (version != CT_DATA_SHARD_VERSION)
        return ct_error(CT_ERR_FORMAT,
                        "%s: unsupported version %" PRId32 " at offset 4 (expected %d: uint16 "
                        "tokens; version 2 shards hold uint32 tokens and are not supported)",
                        shard->path, version, CT_DATA_SHARD_VERSION);
    int32_t count = read_le_i32(bytes + 8);
    if (count < 0)
        return ct_error(CT_ERR_FORMAT, "%s: negative token count %" PRId32 " at offset 8",
                        shard->path, count);
    uint64_t token_bytes = (uint64_t)count * sizeof(uint16_t);
    uint64_t after_header = file_bytes - HEADER_BYTES;
    if (after_header < token_bytes)
        return ct_error(CT_ERR_FORMAT,
                        "%s: truncated: header says %" PRId32 " tokens (%" PRIu64
                        " bytes) but file has %" PRIu64 " bytes after the header",
                        shard->path, count, token_bytes, after_header);
    if (after_header > token_bytes)
        return ct_error(CT_ERR_FORMAT,
                        "%s: header says %" PRId32 " tokens (%" PRIu64
                        " bytes) but file has %" PRIu64 " bytes after the header: %" PRIu64
                        " extra bytes at offset %" PRIu64,
                        shard->path, count, token_bytes, after_header, after_header - token_bytes,
                        HEADER_BYTES + token_bytes);
    shard->data_offset = HEADER_BYTES;
    shard->num_tokens = (uint64_t)count;
    return CT_OK;
}

static ct_status check_nanogpt_file(data_shard *shard, uint64_t file_bytes) {
    if (file_bytes % sizeof(uint16_t) != 0)
        return ct_error(CT_ERR_FORMAT,
                        "%s: truncated: %" PRIu64 " bytes is not a whole number of uint16 "
                        "tokens (a lone byte at offset %" PRIu64 ")",
                        shard->path, file_bytes, file_bytes - 1);
    shard->data_offset = 0;
    shard->num_tokens = file_bytes / sizeof(uint16_t);
    return CT_OK;
}

static ct_status not_regular(const char *path, mode_t mode) {
    const char *what = S_ISFIFO(mode)   ? "a FIFO"
                       : S_ISDIR(mode)  ? "a directory"
                       : S_ISCHR(mode)  ? "a character device"
                       : S_ISBLK(mode)  ? "a block device"
                       : S_ISSOCK(mode) ? "a socket"
                                        : "a special file";
    return ct_error(CT_ERR_IO, "%s: %s, not a regular file: a data shard must be one", path, what);
}

/* Opens, maps and checks one file; the shard owns its path and mapping from then on, so
 * ct_data_close releases them whether or not this succeeded. */
static ct_status open_shard(data_shard *shard, const char *path, ct_data_format format) {
    shard->path = copy_string(path, &shard->path_bytes);
    if (!shard->path) return CT_ERR_NOMEM;
    /* A FIFO would block open() until a writer came (forever, for a job), a device or a
     * directory is no shard: look first, and open with O_NONBLOCK so that a file swapped for a
     * FIFO in between cannot block either; fstat then checks what was opened. */
    struct stat st;
    if (stat(path, &st) != 0)
        return ct_error(CT_ERR_IO, "%s: cannot stat: %s", path, strerror(errno));
    if (!S_ISREG(st.st_mode)) return not_regular(path, st.st_mode);
    int fd = open(path, O_RDONLY | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) return ct_error(CT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    if (fstat(fd, &st) != 0) {
        int err = errno;
        close(fd);
        return ct_error(CT_ERR_IO, "%s: cannot stat: %s", path, strerror(err));
    }
    if (!S_ISREG(st.st_mode)) {
        close(fd);
        return not_regular(path, st.st_mode);
    }
    uint64_t file_bytes = (uint64_t)st.st_size;
    if (file_bytes > 0) {
        void *map = mmap(NULL, (size_t)file_bytes, PROT_READ, MAP_PRIVATE, fd, 0);
        if (map == MAP_FAILED) {
            int err = errno;
            close(fd);
            return ct_error(CT_ERR_IO, "%s: cannot mmap %" PRIu64 " bytes: %s", path, file_bytes,
                            strerror(err));
        }
        shard->map = map;
        shard->map_bytes = (size_t)file_bytes;
    }
    close(fd); /* the mapping keeps the file open */
    if (format == CT_DATA_FORMAT_LLMC) {
        CT_CHECK(check_llmc_header(shard, file_bytes));
    } else {
        CT_CHECK(check_nanogpt_file(shard, file_bytes));
    }
    if (shard->num_tokens > 0)
        shard->tokens = (const uint16_t *)((const unsigned char *)shard->map + shard->data_offset);
    return CT_OK;
}

/* The index of the shard holding stream position `pos` (< num_tokens): the last shard that
 * starts at or before it. Empty shards start where the next one does, so they are never it. */
static int find_shard(const ct_data_dataset *dataset, uint64_t pos) {
    int lo = 0, hi = dataset->num_shards - 1;
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (dataset->shards[mid].first_token <= pos)
            lo = mid;
        else
            hi = mid - 1;
    }
    return lo;
}

/* ---------------------------------------------------------------- public */

ct_status ct_data_open(ct_data_dataset **dataset, const char *pattern, ct_data_format format,
                       int vocab_size) {
    *dataset = NULL;
    if (format != CT_DATA_FORMAT_LLMC && format != CT_DATA_FORMAT_NANOGPT)
        return ct_error(CT_ERR_INVALID, "%s: unknown data format %d", pattern, (int)format);
    if (vocab_size < 1 || vocab_size > 65536)
        return ct_error(CT_ERR_INVALID,
                        "%s: vocab_size %d is outside 1..65536 (tokens are stored as uint16)",
                        pattern, vocab_size);
    glob_t matches;
    int rc = glob(pattern, 0, NULL, &matches); /* sorted by name unless GLOB_NOSORT */
    if (rc == GLOB_NOMATCH) return ct_error(CT_ERR_IO, "no files match '%s'", pattern);
    if (rc != 0) {
        globfree(&matches);
        return ct_error(CT_ERR_IO, "'%s': glob failed (%s)", pattern,
                        rc == GLOB_NOSPACE ? "out of memory" : "read error");
    }
    if (matches.gl_pathc > (size_t)INT32_MAX) {
        globfree(&matches);
        return ct_error(CT_ERR_INVALID, "'%s' matches too many files", pattern);
    }

    ct_data_dataset *ds = ct_alloc(CT_MEM_DATA, sizeof(*ds));
    if (!ds) {
        globfree(&matches);
        return CT_ERR_NOMEM;
    }
    ds->vocab_size = vocab_size;
    ds->format = format;
    ds->num_shards = (int)matches.gl_pathc;
    ds->shards = ct_alloc(CT_MEM_DATA, sizeof(data_shard) * matches.gl_pathc);
    ct_status status = ds->shards ? CT_OK : CT_ERR_NOMEM;
    if (!ds->shards) ds->num_shards = 0;
    for (int i = 0; status == CT_OK && i < ds->num_shards; i++) {
        status = open_shard(&ds->shards[i], matches.gl_pathv[i], format);
        ds->shards[i].first_token = ds->num_tokens;
        ds->num_tokens += ds->shards[i].num_tokens;
    }
    if (status == CT_OK && ds->num_tokens == 0)
        status = ct_error(CT_ERR_FORMAT,
                          "'%s': the dataset is empty: its %d file(s) (first %s) hold 0 tokens",
                          pattern, ds->num_shards, matches.gl_pathv[0]);
    globfree(&matches);
    if (status != CT_OK) {
        ct_data_close(ds);
        return status;
    }
    *dataset = ds;
    return CT_OK;
}

void ct_data_close(ct_data_dataset *dataset) {
    if (!dataset) return;
    for (int i = 0; i < dataset->num_shards; i++) {
        data_shard *shard = &dataset->shards[i];
        if (shard->map) munmap(shard->map, shard->map_bytes);
        ct_free(CT_MEM_DATA, shard->path, shard->path_bytes);
    }
    if (dataset->shards)
        ct_free(CT_MEM_DATA, dataset->shards, sizeof(data_shard) * (size_t)dataset->num_shards);
    ct_free(CT_MEM_DATA, dataset, sizeof(*dataset));
}

uint64_t ct_data_num_tokens(const ct_data_dataset *dataset) {
    return dataset->num_tokens;
}

int ct_data_num_shards(const ct_data_dataset *dataset) {
    return dataset->num_shards;
}

const char *ct_data_shard_path(const ct_data_dataset *dataset, int index) {
    CT_ASSERT(index >= 0 && index < dataset->num_shards, "shard %d of %d", index,
              dataset->num_shards);
    return dataset->shards[index].path;
}

ct_status ct_data_read_tokens(const ct_data_dataset *dataset, uint64_t start, uint64_t count,
                              int32_t *out) {
    if (start > dataset->num_tokens || count > dataset->num_tokens - start)
        return ct_error(CT_ERR_INVALID,
                        "tokens [%" PRIu64 ", %" PRIu64
                        ") are past the end of the dataset (%" PRIu64 " tokens, first file %s)",
                        start, start + count, dataset->num_tokens, dataset->shards[0].path);
    if (count == 0) return CT_OK;
    const uint32_t vocab = (uint32_t)dataset->vocab_size;
    const data_shard *bad_shard = NULL; /* the first out-of-range token, reported at the end */
    uint64_t bad_index = 0;
    int s = find_shard(dataset, start);
    uint64_t done = 0;
    while (done < count) {
        const data_shard *shard = &dataset->shards[s++];
        if (shard->num_tokens == 0) continue;
        uint64_t local = start + done - shard->first_token;
        uint64_t n = CT_MIN(count - done, shard->num_tokens - local);
        const uint16_t *src = shard->tokens + local;
        int32_t *dst = out + done;
        for (uint64_t i = 0; i < n; i++) {
            dst[i] = src[i];
            if (src[i] >= vocab && !bad_shard) {
                bad_shard = shard;
                bad_index = local + i;
            }
        }
        done += n;
    }
    if (bad_shard)
        return ct_error(CT_ERR_FORMAT,
                        "%s: token %u at byte offset %" PRIu64 " is >= vocab_size %d",
                        bad_shard->path, (unsigned)bad_shard->tokens[bad_index],
                        bad_shard->data_offset + bad_index * sizeof(uint16_t), dataset->vocab_size);
    return CT_OK;
}

ct_status ct_data_write_shard(const char *path, const uint16_t *tokens, uint64_t count) {
    if (count > (uint64_t)INT32_MAX)
        return ct_error(CT_ERR_INVALID,
                        "%s: %" PRIu64 " tokens do not fit one llm.c shard (at most %d)", path,
                        count, INT32_MAX);
    unsigned char header[HEADER_BYTES];
    memset(header, 0, sizeof(header));
    const int32_t fields[3] = {CT_DATA_SHARD_MAGIC, CT_DATA_SHARD_VERSION, (int32_t)count};
    memcpy(header, fields, sizeof(fields)); /* little-endian host, like llm.c */
    FILE *f = fopen(path, "wb");
    if (!f) return ct_error(CT_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    int ok = fwrite(header, 1, sizeof(header), f) == sizeof(header);
    if (ok && count > 0) ok = fwrite(tokens, sizeof(uint16_t), (size_t)count, f) == (size_t)count;
    ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0; /* a full disk may show only here */
    int err = errno;
    if (fclose(f) != 0 && ok) {
        ok = 0;
        err = errno;
    }
    if (!ok) {
        remove(path); /* a partial shard would fail later with a confusing message */
        return ct_error(CT_ERR_IO, "%s: write failed: %s", path, strerror(err));
    }
    return CT_OK;
}

/* ---------------------------------------------------------------- shard sets */

#define SET_NAME_BYTES 32 /* "train_NNNNNN.bin" and its ".tmp" */

struct ct_data_shard_set {
    char *dir;
    size_t dir_bytes;
    char (*names)[SET_NAME_BYTES]; /* the final names written so far */
    int count, capacity;
};

/* Whether `name` is one that prepare or synth writes: (train|val)_<6+ digits>.bin[.tmp]. */
static bool is_tool_shard_name(const char *name) {
    const char *p = strncmp(name, "train_", 6) == 0 ? name + 6
                    : strncmp(name, "val_", 4) == 0 ? name + 4
                                                    : NULL;
    if (!p) return false;
    int digits = 0;
    while (p[digits] >= '0' && p[digits] <= '9')
        digits++;
    return digits >= 6 && (strcmp(p + digits, ".bin") == 0 || strcmp(p + digits, ".bin.tmp") == 0);
}

static void set_path(const ct_data_shard_set *set, const char *name, bool tmp, char *out,
                     size_t bytes) {
    snprintf(out, bytes, "%s/%s%s", set->dir, name, tmp ? ".tmp" : "");
}

/* Removes DIR's shards (by name) that are not in the set: an earlier run's. */
static ct_status remove_other_shards(const ct_data_shard_set *set) {
    DIR *d = opendir(set->dir);
    if (!d) return ct_error(CT_ERR_IO, "%s: cannot list: %s", set->dir, strerror(errno));
    ct_status status = CT_OK;
    struct dirent *e;
    while (status == CT_OK && (e = readdir(d)) != NULL) {
        if (!is_tool_shard_name(e->d_name)) continue;
        bool ours = false;
        for (int i = 0; i < set->count && !ours; i++)
            ours = strcmp(set->names[i], e->d_name) == 0;
        if (ours) continue;
        char path[PATH_MAX];
        set_path(set, e->d_name, false, path, sizeof(path));
        if (unlink(path) != 0)
            status = ct_error(CT_ERR_IO, "%s: left by an earlier run, cannot remove: %s", path,
                              strerror(errno));
        else
            printf("removed %s (left by an earlier run)\n", path);
    }
    closedir(d);
    return status;
}

uint64_t ct_data_shards_bytes(uint64_t tokens, uint64_t shard_tokens) {
    uint64_t shards = tokens / shard_tokens + (tokens % shard_tokens != 0);
    return shards * HEADER_BYTES + tokens * sizeof(uint16_t);
}

ct_status ct_data_shard_set_new(ct_data_shard_set **set, const char *dir, uint64_t write_bytes) {
    *set = NULL;
    CT_CHECK(ct_mkdir_p(dir));
    struct statvfs fs;
    if (statvfs(dir, &fs) != 0)
        return ct_error(CT_ERR_IO, "%s: cannot query free space: %s", dir, strerror(errno));
    uint64_t free_bytes = (uint64_t)fs.f_bavail * (uint64_t)fs.f_frsize;
    if (write_bytes > free_bytes)
        return ct_error(CT_ERR_IO,
                        "%s: the shards take %" PRIu64 " bytes, the file system has %" PRIu64
                        " bytes free: nothing written",
                        dir, write_bytes, free_bytes);
    ct_data_shard_set *s = ct_alloc(CT_MEM_DATA, sizeof(*s));
    if (!s) return ct_error(CT_ERR_NOMEM, "%s: shard set", dir);
    memset(s, 0, sizeof(*s));
    s->dir = copy_string(dir, &s->dir_bytes);
    if (!s->dir) {
        ct_free(CT_MEM_DATA, s, sizeof(*s));
        return ct_error(CT_ERR_NOMEM, "%s: shard set", dir);
    }
    *set = s;
    return CT_OK;
}

ct_status ct_data_shard_set_write(ct_data_shard_set *set, const char *split, int index,
                                  const uint16_t *tokens, uint64_t count) {
    CT_ASSERT(index >= 0 && index < CT_DATA_MAX_SHARDS, "shard %d", index);
    if (set->count == set->capacity) {
        int capacity = set->capacity ? 2 * set->capacity : 16;
        size_t bytes = (size_t)capacity * SET_NAME_BYTES;
        char(*names)[SET_NAME_BYTES] = ct_alloc(CT_MEM_DATA, bytes);
        if (!names) return ct_error(CT_ERR_NOMEM, "%s: names of %d shards", set->dir, capacity);
        if (set->count) memcpy(names, set->names, (size_t)set->count * SET_NAME_BYTES);
        ct_free(CT_MEM_DATA, set->names, (size_t)set->capacity * SET_NAME_BYTES);
        set->names = names, set->capacity = capacity;
    }
    char *name = set->names[set->count], path[PATH_MAX];
    snprintf(name, SET_NAME_BYTES, "%s_%06d.bin", split, index);
    set_path(set, name, true, path, sizeof(path));
    CT_CHECK(ct_data_write_shard(path, tokens, count));
    set->count++;
    set_path(set, name, false, path, sizeof(path));
    printf("wrote %s: %" PRIu64 " tokens\n", path, count);
    fflush(stdout);
    return CT_OK;
}

ct_status ct_data_shard_set_commit(ct_data_shard_set *set) {
    ct_status status = CT_OK;
    int renamed = 0;
    for (; renamed < set->count; renamed++) {
        char tmp[PATH_MAX], path[PATH_MAX];
        set_path(set, set->names[renamed], true, tmp, sizeof(tmp));
        set_path(set, set->names[renamed], false, path, sizeof(path));
        if (rename(tmp, path) != 0) {
            status = ct_error(CT_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
            break;
        }
    }
    if (status == CT_OK) status = remove_other_shards(set);
    /* abort removes the temporary files of the shards not renamed (none after success) */
    if (renamed > 0 && renamed < set->count)
        memmove(set->names, set->names + renamed, (size_t)(set->count - renamed) * SET_NAME_BYTES);
    set->count -= renamed;
    ct_data_shard_set_abort(set);
    return status;
}

void ct_data_shard_set_abort(ct_data_shard_set *set) {
    if (!set) return;
    for (int i = 0; i < set->count; i++) {
        char tmp[PATH_MAX];
        set_path(set, set->names[i], true, tmp, sizeof(tmp));
        remove(tmp);
    }
    ct_free(CT_MEM_DATA, set->names, (size_t)set->capacity * SET_NAME_BYTES);
    ct_free(CT_MEM_DATA, set->dir, set->dir_bytes);
    ct_free(CT_MEM_DATA, set, sizeof(*set));
}
