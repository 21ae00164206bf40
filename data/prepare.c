/*
 * `ctrain data prepare`: UTF-8 text -> byte-level token shards (vocabulary 256), the smallest
 * tokenizer there is, so a user can train on their own text with nothing but ctrain.
 *
 * The files are read in the order given, as one stream of bytes (no separator is added); each
 * byte is one token. The last `val_fraction` of the stream's bytes becomes DIR/val_NNNNNN.bin,
 * the rest DIR/train_NNNNNN.bin, in llm.c shards of at most CT_DATA_SHARD_MAX_TOKENS tokens.
 * Files are streamed through one shard-sized buffer, so input larger than memory works.
 * The text is checked to be UTF-8 (the byte offset of the first bad byte is reported) because a
 * file in another encoding, or a binary file given by mistake, would otherwise train silently on
 * garbage. A character may straddle the train/val boundary: tokens are bytes, so no harm.
 * The shards are written as one set (data.h): a failed prepare leaves the folder as it was, a
 * successful one replaces every shard of an earlier prepare or synth there (a stale val shard
 * included), after checking that the shards fit in the free space.
 */
#include "data/data.h"

#include <errno.h>
#include <inttypes.h>
#include <limits.h>
#include <math.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>

#define READ_CHUNK_BYTES (1 << 16)

/* Tokens waiting to be written as DIR/<split>_<index>.bin (through the set). */
typedef struct {
    ct_data_shard_set *set;
    const char *split; /* "train" or "val" */
    int index;         /* of the next shard to write */
    uint16_t *tokens;
    uint64_t used, capacity;
} shard_sink;

/* Where a UTF-8 check is inside a file: the bytes still owed by the current character and the
 * range the next one must fall in (narrower than 80..BF after E0, ED, F0, F4, which is how
 * overlong forms, surrogates and code points above U+10FFFF are refused). */
typedef struct {
    int need;
    unsigned char lo, hi;
    uint64_t lead_offset; /* of the current character's first byte */
} utf8_state;

/* ---------------------------------------------------------------- helpers */

static ct_status sink_flush(shard_sink *sink) {
    if (sink->used == 0) return CT_OK;
    CT_CHECK(
        ct_data_shard_set_write(sink->set, sink->split, sink->index, sink->tokens, sink->used));
    sink->used = 0;
    sink->index++;
    return CT_OK;
}

static ct_status sink_put(shard_sink *sink, const unsigned char *bytes, uint64_t n) {
    while (n > 0) {
        uint64_t take = CT_MIN(n, sink->capacity - sink->used);
        for (uint64_t i = 0; i < take; i++)
            sink->tokens[sink->used + i] = bytes[i];
        sink->used += take;
        bytes += take;
        n -= take;
        if (sink->used == sink->capacity) CT_CHECK(sink_flush(sink));
    }
    return CT_OK;
}

/* Checks `n` bytes of a file that start at byte `offset` of it. */
static ct_status utf8_check(utf8_state *st, const unsigned char *p, size_t n, uint64_t offset,
                            const char *path) {
    for (size_t i = 0; i < n; i++) {
        unsigned char c = p[i];
        if (st->need > 0) {
            if (c >= st->lo && c <= st->hi) {
                st->need--;
                st->lo = 0x80;
                st->hi = 0xBF;
                continue;
            }
        } else {
            st->lead_offset = offset + i;
            st->lo = 0x80;
            st->hi = 0xBF;
            if (c < 0x80) continue;
            if (c >= 0xC2 && c <= 0xDF)
                st->need = 1;
            else if (c >= 0xE0 && c <= 0xEF)
                st->need = 2;
            else if (c >= 0xF0 && c <= 0xF4)
                st->need = 3;
            if (c == 0xE0) st->lo = 0xA0;
            if (c == 0xED) st->hi = 0x9F;
            if (c == 0xF0) st->lo = 0x90;
            if (c == 0xF4) st->hi = 0x8F;
            if (st->need > 0) continue;
        }
        return ct_error(CT_ERR_FORMAT,
                        "%s: invalid UTF-8 byte 0x%02X at byte offset %" PRIu64
                        " (data prepare reads UTF-8 text; convert other encodings first, e.g. "
                        "with iconv)",
                        path, c, offset + i);
    }
    return CT_OK;
}

/* Streams one file into the train sink, then (from byte `train_bytes` of the whole stream on)
 * into the val sink. `*pos` is the stream position, advanced by the file's size. */
static ct_status prepare_file(const char *path, uint64_t expected_bytes, uint64_t train_bytes,
                              uint64_t *pos, shard_sink *sink) {
    FILE *f = fopen(path, "rb");
    if (!f) return ct_error(CT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    unsigned char chunk[READ_CHUNK_BYTES];
    utf8_state utf8 = {0, 0x80, 0xBF, 0};
    uint64_t offset = 0;
    ct_status status = CT_OK;
    size_t n;
    while (status == CT_OK && (n = fread(chunk, 1, sizeof(chunk), f)) > 0) {
        status = utf8_check(&utf8, chunk, n, offset, path);
        uint64_t to_train = *pos < train_bytes ? CT_MIN((uint64_t)n, train_bytes - *pos) : 0;
        if (status == CT_OK && to_train > 0) status = sink_put(sink, chunk, to_train);
        if (status == CT_OK && to_train < n && strcmp(sink->split, "train") == 0) {
            status = sink_flush(sink); /* the stream crosses into validation here */
            sink->split = "val";
            sink->index = 0;
        }
        if (status == CT_OK && to_train < n)
            status = sink_put(sink, chunk + to_train, (uint64_t)n - to_train);
        offset += n;
        *pos += n;
    }
    if (status == CT_OK && ferror(f))
        status = ct_error(CT_ERR_IO, "%s: read error at byte offset %" PRIu64, path, offset);
    fclose(f);
    CT_CHECK(status);
    if (utf8.need > 0)
        return ct_error(CT_ERR_FORMAT,
                        "%s: invalid UTF-8: the file ends inside the character that starts at "
                        "byte offset %" PRIu64,
                        path, utf8.lead_offset);
    if (offset != expected_bytes)
        return ct_error(CT_ERR_IO,
                        "%s: changed size while being read (%" PRIu64 " bytes, then %" PRIu64 ")",
                        path, expected_bytes, offset);
    return CT_OK;
}

/* ---------------------------------------------------------------- public */

ct_status ct_data_prepare_sharded(const char *const *files, int n_files, const char *out_dir,
                                  double val_fraction, uint64_t shard_tokens) {
    if (n_files < 1) return ct_error(CT_ERR_INVALID, "data prepare: no input files");
    if (!(val_fraction >= 0.0 && val_fraction < 1.0)) /* also refuses NaN */
        return ct_error(CT_ERR_INVALID, "data prepare: val fraction %g is outside [0, 1)",
                        val_fraction);
    if (shard_tokens < 1 || shard_tokens > (uint64_t)INT32_MAX)
        return ct_error(CT_ERR_INVALID, "data prepare: shard size %" PRIu64 " is outside 1..%d",
                        shard_tokens, INT32_MAX);
    uint64_t total_bytes = 0;
    for (int i = 0; i < n_files; i++) {
        struct stat st;
        if (stat(files[i], &st) != 0)
            return ct_error(CT_ERR_IO, "%s: cannot open: %s", files[i], strerror(errno));
        if (!S_ISREG(st.st_mode)) return ct_error(CT_ERR_IO, "%s: not a regular file", files[i]);
        total_bytes += (uint64_t)st.st_size;
    }
    uint64_t val_bytes = (uint64_t)floor((double)total_bytes * val_fraction);
    if (val_bytes > total_bytes) val_bytes = total_bytes; /* rounding cannot, but be sure */
    uint64_t train_bytes = total_bytes - val_bytes;
    if (train_bytes == 0)
        return ct_error(CT_ERR_INVALID, "%s: no text to train on (%" PRIu64 " bytes in %d file(s))",
                        files[0], total_bytes, n_files);
    uint64_t write_bytes = ct_data_shards_bytes(train_bytes, shard_tokens) +
                           ct_data_shards_bytes(val_bytes, shard_tokens);
    if (total_bytes / shard_tokens >= CT_DATA_MAX_SHARDS)
        return ct_error(CT_ERR_INVALID,
                        "%s: %" PRIu64 " bytes of text would take more than %d shards", files[0],
                        total_bytes, CT_DATA_MAX_SHARDS);
    shard_sink sink = {NULL, "train", 0, NULL, 0, 0};
    CT_CHECK(ct_data_shard_set_new(&sink.set, out_dir, write_bytes));
    sink.capacity = CT_MIN(shard_tokens, CT_MAX(train_bytes, val_bytes));
    size_t buffer_bytes = (size_t)sink.capacity * sizeof(uint16_t);
    sink.tokens = ct_alloc(CT_MEM_DATA, buffer_bytes);
    ct_status status = sink.tokens ? CT_OK : ct_error(CT_ERR_NOMEM, "%s: shard buffer", out_dir);
    uint64_t pos = 0;
    for (int i = 0; status == CT_OK && i < n_files; i++) {
        struct stat st;
        if (stat(files[i], &st) != 0)
            status = ct_error(CT_ERR_IO, "%s: cannot open: %s", files[i], strerror(errno));
        else
            status = prepare_file(files[i], (uint64_t)st.st_size, train_bytes, &pos, &sink);
    }
    if (status == CT_OK) status = sink_flush(&sink);
    if (status == CT_OK)
        status = ct_data_shard_set_commit(sink.set);
    else
        ct_data_shard_set_abort(sink.set);
    ct_free(CT_MEM_DATA, sink.tokens, buffer_bytes);
    return status;
}

ct_status ct_data_prepare(const char *const *files, int n_files, const char *out_dir,
                          double val_fraction) {
    return ct_data_prepare_sharded(files, n_files, out_dir, val_fraction, CT_DATA_SHARD_MAX_TOKENS);
}
