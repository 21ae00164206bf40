/*
 * ckpt_file: one rank's file of a sharded checkpoint, rank_NNNNN.ctk. A 32-byte header, then
 * one frame (checkpoint/zframe.c) per (unit, kind) holding the range [lo, hi) of the unit's
 * flat buffer this rank owned, then an index of every frame and a 32-byte trailer that points
 * at it. The index makes a reader independent of the world size that wrote the file: to
 * reshard, a rank asks each file for the ranges it now owns and only the overlapping frames
 * are read and decoded. Every size read from the file is checked against the file's size
 * before it is used. Layout byte by byte: docs/checkpoints.md.
 */
#define _GNU_SOURCE /* sync_file_range */
#include "checkpoint/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define CT_CKPT_MAGIC "CTCK"
#define CT_CKPT_INDEX_MAGIC "CTCKIDX" /* 8 bytes with its NUL */
#define CT_CKPT_PATH_BYTES 512

struct ct_ckpt_writer {
    FILE *file;
    char path[CT_CKPT_PATH_BYTES];
    int rank, world_size, level, version;
    ct_ckpt_shuffle shuffle;
    uint64_t offset; /* where the next frame goes */
    ct_ckpt_entry *entries;
    int n_entries, cap_entries;
    uint8_t *frame; /* grown to the largest frame so far */
    size_t frame_bytes;
    ct_ckpt_codec *codec;
};

struct ct_ckpt_reader {
    int fd;
    char path[CT_CKPT_PATH_BYTES];
    int rank, world_size, version;
    uint64_t file_bytes, index_checksum;
    ct_ckpt_entry *entries;
    int n_entries;
    uint8_t *frame;
    float *values; /* a frame's floats when only part of it is wanted */
    size_t frame_bytes, values_bytes;
    ct_ckpt_codec *codec;
};

/* ---------------------------------------------------------------- helpers */

/* Makes *buf at least `need` bytes (contents not kept). */
static ct_status grow(uint8_t **buf, size_t *bytes, size_t need) {
    if (*bytes >= need) return CT_OK;
    ct_free(CT_MEM_OTHER, *buf, *bytes);
    *bytes = 0;
    *buf = ct_alloc(CT_MEM_OTHER, need);
    if (!*buf) return ct_error(CT_ERR_NOMEM, "checkpoint buffer of %zu bytes", need);
    *bytes = need;
    return CT_OK;
}

static ct_status write_all(ct_ckpt_writer *w, const void *data, size_t bytes) {
    if (fwrite(data, 1, bytes, w->file) != bytes)
        return ct_error(CT_ERR_IO, "%s: write: %s", w->path, strerror(errno));
    return CT_OK;
}

static ct_status pread_all(ct_ckpt_reader *r, void *dst, size_t bytes, uint64_t offset) {
    size_t done = 0;
    while (done < bytes) {
        ssize_t got = pread(r->fd, (uint8_t *)dst + done, bytes - done, (off_t)(offset + done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return ct_error(CT_ERR_IO, "%s: read %zu bytes at offset %llu: %s", r->path, bytes,
                            (unsigned long long)offset, got < 0 ? strerror(errno) : "end of file");
        done += (size_t)got;
    }
    return CT_OK;
}

static void encode_entry(const ct_ckpt_entry *e, uint8_t *p) {
    ct_ckpt_put_u32(p + 0, e->unit);
    ct_ckpt_put_u32(p + 4, e->kind);
    ct_ckpt_put_u64(p + 8, e->lo);
    ct_ckpt_put_u64(p + 16, e->hi);
    ct_ckpt_put_u64(p + 24, e->offset);
    ct_ckpt_put_u64(p + 32, e->frame_bytes);
    ct_ckpt_put_u64(p + 40, e->raw_bytes);
    ct_ckpt_put_u64(p + 48, e->checksum);
    ct_ckpt_put_u32(p + 56, e->flags);
    ct_ckpt_put_u32(p + 60, 0);
}

static void decode_entry(const uint8_t *p, ct_ckpt_entry *e) {
    e->unit = ct_ckpt_get_u32(p + 0);
    e->kind = ct_ckpt_get_u32(p + 4);
    e->lo = ct_ckpt_get_u64(p + 8);
    e->hi = ct_ckpt_get_u64(p + 16);
    e->offset = ct_ckpt_get_u64(p + 24);
    e->frame_bytes = ct_ckpt_get_u64(p + 32);
    e->raw_bytes = ct_ckpt_get_u64(p + 40);
    e->checksum = ct_ckpt_get_u64(p + 48);
    e->flags = ct_ckpt_get_u32(p + 56);
}

static void encode_header(uint8_t *p, int version, int rank, int world_size, uint32_t n_entries) {
    memset(p, 0, CT_CKPT_FILE_HEADER_BYTES);
    memcpy(p, CT_CKPT_MAGIC, 4);
    ct_ckpt_put_u32(p + 4, (uint32_t)version);
    ct_ckpt_put_u32(p + 8, (uint32_t)rank);
    ct_ckpt_put_u32(p + 12, (uint32_t)world_size);
    ct_ckpt_put_u32(p + 16, n_entries);
}

static void free_writer(ct_ckpt_writer *w) {
    if (w->file) fclose(w->file);
    ct_free(CT_MEM_OTHER, w->entries, (size_t)w->cap_entries * sizeof(ct_ckpt_entry));
    ct_free(CT_MEM_OTHER, w->frame, w->frame_bytes);
    ct_ckpt_codec_free(w->codec);
    ct_free(CT_MEM_OTHER, w, sizeof(*w));
}

/* The offset in p[0, bytes) of the first non-zero byte; -1 when all are zero. */
static int first_nonzero(const uint8_t *p, int bytes) {
    for (int i = 0; i < bytes; i++)
        if (p[i]) return i;
    return -1;
}

/* Checks one index entry against the file: the frame lies between the header and the index. */
static ct_status check_entry(const ct_ckpt_reader *r, int i, const ct_ckpt_entry *e,
                             uint64_t index_offset) {
    if (e->kind >= CT_CKPT_KIND_COUNT || e->lo > e->hi || e->raw_bytes != (e->hi - e->lo) * 4 ||
        e->offset < CT_CKPT_FILE_HEADER_BYTES || e->frame_bytes < CT_CKPT_FRAME_HEADER_BYTES ||
        e->offset > index_offset || e->frame_bytes > index_offset - e->offset)
        return ct_error(CT_ERR_FORMAT,
                        "%s: index entry %d (unit %u kind %u [%llu, %llu) at offset %llu, %llu "
                        "bytes) is inconsistent with the file (%llu bytes, index at %llu)",
                        r->path, i, e->unit, e->kind, (unsigned long long)e->lo,
                        (unsigned long long)e->hi, (unsigned long long)e->offset,
                        (unsigned long long)e->frame_bytes, (unsigned long long)r->file_bytes,
                        (unsigned long long)index_offset);
    return CT_OK;
}

/* Reads and decodes entry i into dst (hi - lo floats). */
static ct_status load_entry(ct_ckpt_reader *r, int i, const char *unit_name, float *dst) {
    const ct_ckpt_entry *e = &r->entries[i];
    size_t n = (size_t)(e->hi - e->lo);
    CT_CHECK(grow(&r->frame, &r->frame_bytes, e->frame_bytes));
    CT_CHECK(pread_all(r, r->frame, e->frame_bytes, e->offset));
    /* Have the kernel read the next frame while this one decodes (a reader mostly wants the
     * frames in file order; advisory). */
    if (i + 1 < r->n_entries)
        posix_fadvise(r->fd, (off_t)r->entries[i + 1].offset, (off_t)r->entries[i + 1].frame_bytes,
                      POSIX_FADV_WILLNEED);
    char where[CT_CKPT_PATH_BYTES + 160];
    snprintf(where, sizeof(where), "%s: unit %u%s%s%s %s [%llu, %llu) frame at offset %llu",
             r->path, e->unit, unit_name ? " (" : "", unit_name ? unit_name : "",
             unit_name ? ")" : "", ct_ckpt_kind_name((ct_ckpt_kind)e->kind),
             (unsigned long long)e->lo, (unsigned long long)e->hi, (unsigned long long)e->offset);
    ct_ckpt_frame_header h;
    CT_CHECK(ct_ckpt_frame_parse_header(r->frame, e->frame_bytes, where, &h));
    if (h.version != (uint32_t)r->version)
        return ct_error(CT_ERR_FORMAT, "%s: frame version %u in a format version %d file", where,
                        h.version, r->version);
    if (h.kind != e->kind || h.checksum != e->checksum || h.flags != e->flags ||
        CT_CKPT_FRAME_HEADER_BYTES + h.compressed_bytes != e->frame_bytes)
        return ct_error(CT_ERR_FORMAT, "%s: frame header disagrees with the index", where);
    return ct_ckpt_frame_decode(r->codec, r->frame, e->frame_bytes, where, dst, n);
}

/* ---------------------------------------------------------------- writer */

ct_status ct_ckpt_writer_open(ct_ckpt_writer **writer, const char *path, int rank, int world_size,
                              int zstd_level, ct_ckpt_shuffle shuffle) {
    *writer = NULL;
    if (strlen(path) >= CT_CKPT_PATH_BYTES)
        return ct_error(CT_ERR_INVALID, "checkpoint path too long: %s", path);
    CT_ASSERT(rank >= 0 && rank < world_size, "rank %d of %d", rank, world_size);
    ct_ckpt_writer *w = ct_alloc(CT_MEM_OTHER, sizeof(*w));
    if (!w) return ct_error(CT_ERR_NOMEM, "checkpoint writer");
    snprintf(w->path, sizeof(w->path), "%s", path);
    w->rank = rank, w->world_size = world_size, w->level = zstd_level, w->shuffle = shuffle;
    w->version = CT_CKPT_FORMAT_VERSION;
    ct_status codec_st = ct_ckpt_codec_new(&w->codec);
    if (codec_st != CT_OK) {
        free_writer(w);
        return codec_st;
    }
    w->file = fopen(path, "wb");
    if (!w->file) {
        ct_status st = ct_error(CT_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
        free_writer(w);
        return st;
    }
    uint8_t header[CT_CKPT_FILE_HEADER_BYTES];
    encode_header(header, w->version, rank, world_size, 0); /* version, count patched at close */
    ct_status st = write_all(w, header, sizeof(header));
    if (st != CT_OK) {
        ct_ckpt_writer_abort(w);
        return st;
    }
    w->offset = CT_CKPT_FILE_HEADER_BYTES;
    *writer = w;
    return CT_OK;
}

void ct_ckpt_writer_set_threads(ct_ckpt_writer *w, int threads) {
    ct_ckpt_codec_set_threads(w->codec, threads);
}

void ct_ckpt_writer_set_version(ct_ckpt_writer *w, int version) {
    CT_ASSERT(w->n_entries == 0, "version set after %d frames", w->n_entries);
    ct_ckpt_codec_set_version(w->codec, version); /* checks the range */
    w->version = version;
}

ct_status ct_ckpt_writer_add(ct_ckpt_writer *w, int unit, ct_ckpt_kind kind, int64_t lo, int64_t hi,
                             const float *data) {
    CT_ASSERT(unit >= 0 && kind < CT_CKPT_KIND_COUNT && 0 <= lo && lo <= hi,
              "unit %d kind %d "
              "[%lld, %lld)",
              unit, (int)kind, (long long)lo, (long long)hi);
    if (lo == hi) return CT_OK;
    size_t n = (size_t)(hi - lo);
    if (w->n_entries == w->cap_entries) {
        int cap = w->cap_entries ? 2 * w->cap_entries : 64;
        ct_ckpt_entry *grown = ct_alloc(CT_MEM_OTHER, (size_t)cap * sizeof(ct_ckpt_entry));
        if (!grown) return ct_error(CT_ERR_NOMEM, "checkpoint index of %d entries", cap);
        if (w->n_entries) memcpy(grown, w->entries, (size_t)w->n_entries * sizeof(*grown));
        ct_free(CT_MEM_OTHER, w->entries, (size_t)w->cap_entries * sizeof(ct_ckpt_entry));
        w->entries = grown, w->cap_entries = cap;
    }
    CT_CHECK(grow(&w->frame, &w->frame_bytes, ct_ckpt_frame_bound_bytes(n)));
    size_t frame_bytes = 0;
    CT_CHECK(ct_ckpt_frame_encode(w->codec, data, n, kind, w->level, w->shuffle, w->frame,
                                  w->frame_bytes, &frame_bytes));
    CT_CHECK(write_all(w, w->frame, frame_bytes));
    /* Start writing this frame to disk now, beside the next frames' compression, so that the
     * fsync at close has little left to wait for (advisory: close's fsync reports errors). */
    if (fflush(w->file) == 0)
        sync_file_range(fileno(w->file), (off_t)w->offset, (off_t)frame_bytes,
                        SYNC_FILE_RANGE_WRITE);
    ct_ckpt_entry *e = &w->entries[w->n_entries++];
    e->unit = (uint32_t)unit, e->kind = (uint32_t)kind;
    e->flags = ct_ckpt_get_u32(w->frame + 12);
    e->lo = (uint64_t)lo, e->hi = (uint64_t)hi;
    e->offset = w->offset, e->frame_bytes = frame_bytes;
    e->raw_bytes = n * sizeof(float);
    e->checksum = ct_ckpt_get_u64(w->frame + 32);
    w->offset += frame_bytes;
    return CT_OK;
}

ct_status ct_ckpt_writer_close(ct_ckpt_writer *w, uint64_t *file_bytes, uint64_t *checksum) {
    size_t index_bytes = (size_t)w->n_entries * CT_CKPT_INDEX_ENTRY_BYTES;
    ct_status st = grow(&w->frame, &w->frame_bytes, index_bytes + CT_CKPT_TRAILER_BYTES);
    uint64_t index_sum = 0;
    if (st == CT_OK) {
        for (int i = 0; i < w->n_entries; i++)
            encode_entry(&w->entries[i], w->frame + (size_t)i * CT_CKPT_INDEX_ENTRY_BYTES);
        index_sum = ct_hash64(w->frame, index_bytes, 0);
        uint8_t *t = w->frame + index_bytes;
        ct_ckpt_put_u64(t + 0, w->offset);
        ct_ckpt_put_u64(t + 8, (uint64_t)w->n_entries);
        ct_ckpt_put_u64(t + 16, index_sum);
        memcpy(t + 24, CT_CKPT_INDEX_MAGIC, 8);
        st = write_all(w, w->frame, index_bytes + CT_CKPT_TRAILER_BYTES);
    }
    uint8_t header[CT_CKPT_FILE_HEADER_BYTES];
    encode_header(header, w->version, w->rank, w->world_size, (uint32_t)w->n_entries);
    if (st == CT_OK && (fseek(w->file, 0, SEEK_SET) != 0 ||
                        fwrite(header, 1, sizeof(header), w->file) != sizeof(header)))
        st = ct_error(CT_ERR_IO, "%s: rewriting the header: %s", w->path, strerror(errno));
    if (st == CT_OK && (fflush(w->file) != 0 || fsync(fileno(w->file)) != 0))
        st = ct_error(CT_ERR_IO, "%s: flush/fsync: %s", w->path, strerror(errno));
    if (st != CT_OK) {
        ct_ckpt_writer_abort(w);
        return st;
    }
    int rc = fclose(w->file);
    w->file = NULL;
    if (rc != 0) st = ct_error(CT_ERR_IO, "%s: close: %s", w->path, strerror(errno));
    if (file_bytes) *file_bytes = w->offset + index_bytes + CT_CKPT_TRAILER_BYTES;
    if (checksum) *checksum = index_sum;
    free_writer(w);
    return st;
}

void ct_ckpt_writer_abort(ct_ckpt_writer *w) {
    if (!w) return;
    if (w->file) fclose(w->file);
    w->file = NULL;
    remove(w->path);
    free_writer(w);
}

/* ---------------------------------------------------------------- reader */

ct_status ct_ckpt_reader_open(ct_ckpt_reader **reader, const char *path) {
    *reader = NULL;
    if (strlen(path) >= CT_CKPT_PATH_BYTES)
        return ct_error(CT_ERR_INVALID, "checkpoint path too long: %s", path);
    ct_ckpt_reader *r = ct_alloc(CT_MEM_OTHER, sizeof(*r));
    if (!r) return ct_error(CT_ERR_NOMEM, "checkpoint reader");
    snprintf(r->path, sizeof(r->path), "%s", path);
    r->fd = open(path, O_RDONLY);
    if (r->fd < 0) {
        ct_status st = ct_error(CT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
        ct_ckpt_reader_close(r);
        return st;
    }
    *reader = r; /* closed below on failure */
    ct_status st = CT_OK;
    struct stat sb;
    uint8_t header[CT_CKPT_FILE_HEADER_BYTES], trailer[CT_CKPT_TRAILER_BYTES];
    if ((st = ct_ckpt_codec_new(&r->codec)) != CT_OK) goto fail;
    if (fstat(r->fd, &sb) != 0) {
        st = ct_error(CT_ERR_IO, "%s: stat: %s", path, strerror(errno));
        goto fail;
    }
    r->file_bytes = (uint64_t)sb.st_size;
    if (r->file_bytes < CT_CKPT_FILE_HEADER_BYTES + CT_CKPT_TRAILER_BYTES) {
        st = ct_error(CT_ERR_FORMAT, "%s: %llu bytes, too short for a checkpoint file (truncated?)",
                      path, (unsigned long long)r->file_bytes);
        goto fail;
    }
    if ((st = pread_all(r, header, sizeof(header), 0)) != CT_OK) goto fail;
    if (memcmp(header, CT_CKPT_MAGIC, 4) != 0) {
        st = ct_error(CT_ERR_FORMAT, "%s: not a ctrain checkpoint file (bad magic)", path);
        goto fail;
    }
    uint32_t version = ct_ckpt_get_u32(header + 4);
    if (version < 1 || version > CT_CKPT_FORMAT_VERSION) {
        st = ct_error(CT_ERR_FORMAT, "%s: format version %u, this build reads versions 1 to %d",
                      path, version, CT_CKPT_FORMAT_VERSION);
        goto fail;
    }
    r->version = (int)version;
    /* Reserved bytes are zero in this version; others mean a newer writer or damage (the
     * header is not covered by the index checksum), not something to read past. */
    int reserved = first_nonzero(header + 20, CT_CKPT_FILE_HEADER_BYTES - 20);
    if (reserved >= 0) {
        st = ct_error(CT_ERR_FORMAT,
                      "%s: reserved header byte at offset %d is 0x%02x, not zero (format version "
                      "%u keeps bytes 20-31 zero): written by another version of ctrain, or "
                      "damaged",
                      path, 20 + reserved, header[20 + reserved], version);
        goto fail;
    }
    r->rank = (int)ct_ckpt_get_u32(header + 8);
    r->world_size = (int)ct_ckpt_get_u32(header + 12);
    uint32_t n_header = ct_ckpt_get_u32(header + 16);
    if ((st = pread_all(r, trailer, sizeof(trailer), r->file_bytes - sizeof(trailer))) != CT_OK)
        goto fail;
    uint64_t index_offset = ct_ckpt_get_u64(trailer), n = ct_ckpt_get_u64(trailer + 8);
    r->index_checksum = ct_ckpt_get_u64(trailer + 16);
    uint64_t index_room = r->file_bytes - CT_CKPT_FILE_HEADER_BYTES - CT_CKPT_TRAILER_BYTES;
    if (memcmp(trailer + 24, CT_CKPT_INDEX_MAGIC, 8) != 0 || n != n_header || r->world_size <= 0 ||
        r->rank < 0 || r->rank >= r->world_size || n > index_room / CT_CKPT_INDEX_ENTRY_BYTES ||
        index_offset != r->file_bytes - CT_CKPT_TRAILER_BYTES - n * CT_CKPT_INDEX_ENTRY_BYTES) {
        st = ct_error(CT_ERR_FORMAT,
                      "%s: trailer or header inconsistent with the file size %llu (index at "
                      "%llu, %llu entries, header says %u): truncated or damaged",
                      path, (unsigned long long)r->file_bytes, (unsigned long long)index_offset,
                      (unsigned long long)n, n_header);
        goto fail;
    }
    size_t index_bytes = (size_t)n * CT_CKPT_INDEX_ENTRY_BYTES;
    if ((st = grow(&r->frame, &r->frame_bytes, index_bytes + 1)) != CT_OK) goto fail;
    if ((st = pread_all(r, r->frame, index_bytes, index_offset)) != CT_OK) goto fail;
    if (ct_hash64(r->frame, index_bytes, 0) != r->index_checksum) {
        st = ct_error(CT_ERR_FORMAT, "%s: index checksum mismatch (index at offset %llu)", path,
                      (unsigned long long)index_offset);
        goto fail;
    }
    r->entries = ct_alloc(CT_MEM_OTHER, (size_t)n * sizeof(ct_ckpt_entry) + 1);
    if (!r->entries) {
        st = ct_error(CT_ERR_NOMEM, "%s: index of %llu entries", path, (unsigned long long)n);
        goto fail;
    }
    r->n_entries = (int)n;
    for (int i = 0; i < r->n_entries; i++) {
        const uint8_t *raw = r->frame + (size_t)i * CT_CKPT_INDEX_ENTRY_BYTES;
        if (first_nonzero(raw + 60, 4) >= 0) {
            st = ct_error(
                CT_ERR_FORMAT,
                "%s: index entry %d (at offset %llu): reserved bytes 60-63 are not zero: "
                "written by another version of ctrain, or damaged",
                path, i,
                (unsigned long long)(index_offset + (uint64_t)i * CT_CKPT_INDEX_ENTRY_BYTES));
            goto fail;
        }
        decode_entry(raw, &r->entries[i]);
        if ((st = check_entry(r, i, &r->entries[i], index_offset)) != CT_OK) goto fail;
    }
    return CT_OK;
fail:
    ct_ckpt_reader_close(r);
    *reader = NULL;
    return st;
}

void ct_ckpt_reader_close(ct_ckpt_reader *r) {
    if (!r) return;
    if (r->fd >= 0) close(r->fd);
    if (r->entries)
        ct_free(CT_MEM_OTHER, r->entries, (size_t)r->n_entries * sizeof(ct_ckpt_entry) + 1);
    ct_free(CT_MEM_OTHER, r->frame, r->frame_bytes);
    ct_ckpt_codec_free(r->codec);
    ct_free(CT_MEM_OTHER, r->values, r->values_bytes);
    ct_free(CT_MEM_OTHER, r, sizeof(*r));
}

int ct_ckpt_reader_rank(const ct_ckpt_reader *r) {
    return r->rank;
}
int ct_ckpt_reader_world_size(const ct_ckpt_reader *r) {
    return r->world_size;
}
int ct_ckpt_reader_version(const ct_ckpt_reader *r) {
    return r->version;
}
uint64_t ct_ckpt_reader_file_bytes(const ct_ckpt_reader *r) {
    return r->file_bytes;
}
uint64_t ct_ckpt_reader_checksum(const ct_ckpt_reader *r) {
    return r->index_checksum;
}
int ct_ckpt_reader_entry_count(const ct_ckpt_reader *r) {
    return r->n_entries;
}

const ct_ckpt_entry *ct_ckpt_reader_entry(const ct_ckpt_reader *r, int i) {
    CT_ASSERT(i >= 0 && i < r->n_entries, "entry %d of %d", i, r->n_entries);
    return &r->entries[i];
}

ct_status ct_ckpt_reader_read(ct_ckpt_reader *r, int unit, const char *unit_name, ct_ckpt_kind kind,
                              int64_t lo, int64_t hi, float *dst, int64_t *covered) {
    *covered = 0;
    for (int i = 0; i < r->n_entries; i++) {
        const ct_ckpt_entry *e = &r->entries[i];
        if (e->unit != (uint32_t)unit || e->kind != (uint32_t)kind) continue;
        int64_t a = CT_MAX(lo, (int64_t)e->lo), b = CT_MIN(hi, (int64_t)e->hi);
        if (a >= b) continue;
        if (a == (int64_t)e->lo && b == (int64_t)e->hi) {
            CT_CHECK(load_entry(r, i, unit_name, dst + (a - lo))); /* the whole frame: no copy */
        } else {
            size_t bytes = (size_t)(e->hi - e->lo) * sizeof(float) + 1;
            CT_CHECK(grow((uint8_t **)&r->values, &r->values_bytes, bytes));
            CT_CHECK(load_entry(r, i, unit_name, r->values));
            memcpy(dst + (a - lo), r->values + (a - (int64_t)e->lo),
                   (size_t)(b - a) * sizeof(float));
        }
        *covered += b - a;
    }
    return CT_OK;
}

ct_status ct_ckpt_read_range(ct_ckpt_reader *const *readers, int n_readers, int unit,
                             const char *unit_name, ct_ckpt_kind kind, int64_t lo, int64_t hi,
                             float *dst) {
    /* First the plan: the frames' parts inside [lo, hi), sorted, must tile it with no gap and
     * no overlap (two files claiming the same elements is a damaged or mixed checkpoint). */
    int n = 0;
    for (int f = 0; f < n_readers; f++)
        n += readers[f]->n_entries;
    int64_t(*parts)[2] = ct_alloc(CT_MEM_OTHER, (size_t)n * sizeof(*parts) + 1);
    if (!parts) return ct_error(CT_ERR_NOMEM, "read plan of %d frames", n);
    int count = 0;
    for (int f = 0; f < n_readers; f++)
        for (int i = 0; i < readers[f]->n_entries; i++) {
            const ct_ckpt_entry *e = &readers[f]->entries[i];
            int64_t a = CT_MAX(lo, (int64_t)e->lo), b = CT_MIN(hi, (int64_t)e->hi);
            if (e->unit != (uint32_t)unit || e->kind != (uint32_t)kind || a >= b) continue;
            int j = count++;
            for (; j > 0 && parts[j - 1][0] > a; j--)
                parts[j][0] = parts[j - 1][0], parts[j][1] = parts[j - 1][1];
            parts[j][0] = a, parts[j][1] = b;
        }
    int64_t cursor = lo; /* the next element the plan needs */
    bool tiled = true;
    for (int j = 0; j < count && tiled; j++) {
        tiled = parts[j][0] == cursor;
        if (tiled) cursor = parts[j][1];
    }
    ct_free(CT_MEM_OTHER, parts, (size_t)n * sizeof(*parts) + 1);
    if (!tiled || cursor != hi)
        return ct_error(CT_ERR_FORMAT,
                        "%s and the other %d files of the checkpoint: unit %d (%s) %s [%lld, "
                        "%lld): their frames %s element %lld",
                        n_readers ? readers[0]->path : "(no files)", CT_MAX(n_readers - 1, 0), unit,
                        unit_name ? unit_name : "?", ct_ckpt_kind_name(kind), (long long)lo,
                        (long long)hi, tiled ? "cover only up to" : "hold a gap or an overlap at",
                        (long long)cursor);
    for (int f = 0; f < n_readers; f++) {
        int64_t covered = 0;
        CT_CHECK(ct_ckpt_reader_read(readers[f], unit, unit_name, kind, lo, hi, dst, &covered));
    }
    return CT_OK;
}

ct_status ct_ckpt_reader_verify(ct_ckpt_reader *r) {
    for (int i = 0; i < r->n_entries; i++) {
        const ct_ckpt_entry *e = &r->entries[i];
        size_t bytes = (size_t)(e->hi - e->lo) * sizeof(float) + 1;
        CT_CHECK(grow((uint8_t **)&r->values, &r->values_bytes, bytes));
        CT_CHECK(load_entry(r, i, NULL, r->values));
    }
    return CT_OK;
}

ct_status ct_ckpt_check_rank_file(const ct_ckpt_manifest *m, int rank, const ct_ckpt_reader *r) {
    CT_ASSERT(rank >= 0 && rank < m->world_size, "rank %d of %d", rank, m->world_size);
    const ct_ckpt_rank_file *want = &m->ranks[rank];
    if (r->version != m->format_version)
        return ct_error(CT_ERR_FORMAT, "%s: format version %d, the manifest says %d", r->path,
                        r->version, m->format_version);
    if (r->rank != rank || r->world_size != m->world_size)
        return ct_error(CT_ERR_FORMAT,
                        "%s: written by rank %d of %d, the manifest expects rank "
                        "%d of %d",
                        r->path, r->rank, r->world_size, rank, m->world_size);
    if (r->file_bytes != want->file_bytes)
        return ct_error(CT_ERR_FORMAT, "%s: %llu bytes, the manifest says %llu", r->path,
                        (unsigned long long)r->file_bytes, (unsigned long long)want->file_bytes);
    if (r->index_checksum != want->checksum)
        return ct_error(CT_ERR_FORMAT, "%s: checksum %016llx, the manifest says %016llx", r->path,
                        (unsigned long long)r->index_checksum, (unsigned long long)want->checksum);
    return CT_OK;
}
