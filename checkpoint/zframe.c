/*
 * zframe: one range of floats as one zstd frame behind a small header of our own, the unit of
 * storage in a rank's checkpoint file (checkpoint/ckpt_file.c). The header says what the frame
 * holds (kind, raw and compressed sizes), how it was packed (byte-plane shuffle or not) and the
 * ct_hash64 of the raw float bytes, so a reader can tell a damaged frame from a good one before
 * it trusts a single value. Byte-plane shuffle splits each float's 4 bytes into 4 planes (all
 * low bytes, then the next, ...): the sign/exponent planes of trained weights are nearly
 * constant and compress far better apart from the noisy mantissa bytes. The writer can try both
 * and keep the smaller, per frame. All header fields are little-endian; docs/checkpoints.md has
 * the layout byte by byte.
 */
#include "checkpoint/checkpoint.h"

#include <stdio.h>
#include <string.h>
#include <zstd.h>

#define CT_FRAME_MAGIC 0x52464354u /* "CTFR" read as a little-endian u32 */
#define CT_FRAME_VERSION 1u
#define CT_FRAME_FLAG_SHUFFLE 1u

/* Turns a zstd return code into a status with zstd's own text and file:line (STYLE rule 4). */
#define CT_ZSTD(call, what)                                                                        \
    do {                                                                                           \
        size_t ct_zstd_ret_ = (call);                                                              \
        if (ZSTD_isError(ct_zstd_ret_))                                                            \
            return ct_error(CT_ERR_EXTERNAL, "zstd %s: %s", (what),                                \
                            ZSTD_getErrorName(ct_zstd_ret_));                                      \
    } while (0)

void ct_ckpt_put_u32(uint8_t *p, uint32_t v) {
    for (int i = 0; i < 4; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

void ct_ckpt_put_u64(uint8_t *p, uint64_t v) {
    for (int i = 0; i < 8; i++)
        p[i] = (uint8_t)(v >> (8 * i));
}

uint32_t ct_ckpt_get_u32(const uint8_t *p) {
    uint32_t v = 0;
    for (int i = 0; i < 4; i++)
        v |= (uint32_t)p[i] << (8 * i);
    return v;
}

uint64_t ct_ckpt_get_u64(const uint8_t *p) {
    uint64_t v = 0;
    for (int i = 0; i < 8; i++)
        v |= (uint64_t)p[i] << (8 * i);
    return v;
}

const char *ct_ckpt_kind_name(ct_ckpt_kind kind) {
    switch (kind) {
    case CT_CKPT_PARAMS:
        return "params";
    case CT_CKPT_ADAM_M:
        return "adam_m";
    case CT_CKPT_ADAM_V:
        return "adam_v";
    default:
        return "unknown";
    }
}

/* n floats (4n bytes) from src into 4 planes of n bytes each in dst, and back. */
static void shuffle_planes(const uint8_t *src, size_t n, uint8_t *dst) {
    for (size_t i = 0; i < n; i++)
        for (size_t b = 0; b < 4; b++)
            dst[b * n + i] = src[4 * i + b];
}

static void unshuffle_planes(const uint8_t *src, size_t n, uint8_t *dst) {
    for (size_t i = 0; i < n; i++)
        for (size_t b = 0; b < 4; b++)
            dst[4 * i + b] = src[b * n + i];
}

size_t ct_ckpt_frame_bound_bytes(size_t n) {
    return CT_CKPT_FRAME_HEADER_BYTES + ZSTD_compressBound(n * sizeof(float));
}

size_t ct_ckpt_frame_scratch_bytes(size_t n) {
    return n * sizeof(float) + ZSTD_compressBound(n * sizeof(float));
}

ct_status ct_ckpt_frame_encode(const float *src, size_t n, ct_ckpt_kind kind, int level,
                               ct_ckpt_shuffle shuffle, uint8_t *dst, size_t dst_bytes,
                               uint8_t *scratch, size_t *frame_bytes) {
    size_t raw_bytes = n * sizeof(float);
    size_t bound = ZSTD_compressBound(raw_bytes);
    CT_ASSERT(dst_bytes >= CT_CKPT_FRAME_HEADER_BYTES + bound, "dst %zu bytes for %zu floats",
              dst_bytes, n);
    uint8_t *payload = dst + CT_CKPT_FRAME_HEADER_BYTES;
    size_t packed = 0;
    uint32_t flags = 0;
    if (shuffle != CT_CKPT_SHUFFLE_ON) {
        packed = ZSTD_compress(payload, bound, src, raw_bytes, level);
        CT_ZSTD(packed, "compress");
    }
    if (shuffle != CT_CKPT_SHUFFLE_OFF) {
        uint8_t *planes = scratch, *out = scratch + raw_bytes;
        shuffle_planes((const uint8_t *)src, n, planes);
        size_t packed_shuffled = ZSTD_compress(out, bound, planes, raw_bytes, level);
        CT_ZSTD(packed_shuffled, "compress (shuffled)");
        /* Ties keep the plain frame: it decodes without the extra pass. */
        if (shuffle == CT_CKPT_SHUFFLE_ON || packed_shuffled < packed) {
            memcpy(payload, out, packed_shuffled);
            packed = packed_shuffled;
            flags |= CT_FRAME_FLAG_SHUFFLE;
        }
    }
    ct_ckpt_put_u32(dst + 0, CT_FRAME_MAGIC);
    ct_ckpt_put_u32(dst + 4, CT_FRAME_VERSION);
    ct_ckpt_put_u32(dst + 8, (uint32_t)kind);
    ct_ckpt_put_u32(dst + 12, flags);
    ct_ckpt_put_u64(dst + 16, raw_bytes);
    ct_ckpt_put_u64(dst + 24, packed);
    ct_ckpt_put_u64(dst + 32, ct_hash64(src, raw_bytes, 0));
    *frame_bytes = CT_CKPT_FRAME_HEADER_BYTES + packed;
    return CT_OK;
}

ct_status ct_ckpt_frame_parse_header(const uint8_t *frame, size_t avail_bytes, const char *where,
                                     ct_ckpt_frame_header *header) {
    if (avail_bytes < CT_CKPT_FRAME_HEADER_BYTES)
        return ct_error(CT_ERR_FORMAT, "%s: frame header needs %d bytes, %zu remain", where,
                        CT_CKPT_FRAME_HEADER_BYTES, avail_bytes);
    uint32_t magic = ct_ckpt_get_u32(frame), version = ct_ckpt_get_u32(frame + 4);
    if (magic != CT_FRAME_MAGIC)
        return ct_error(CT_ERR_FORMAT, "%s: bad frame magic 0x%08x (expected 0x%08x)", where, magic,
                        CT_FRAME_MAGIC);
    if (version != CT_FRAME_VERSION)
        return ct_error(CT_ERR_FORMAT, "%s: frame format version %u, this build reads %u", where,
                        version, CT_FRAME_VERSION);
    header->kind = ct_ckpt_get_u32(frame + 8);
    header->flags = ct_ckpt_get_u32(frame + 12);
    header->raw_bytes = ct_ckpt_get_u64(frame + 16);
    header->compressed_bytes = ct_ckpt_get_u64(frame + 24);
    header->checksum = ct_ckpt_get_u64(frame + 32);
    if (header->kind >= CT_CKPT_KIND_COUNT || (header->flags & ~CT_FRAME_FLAG_SHUFFLE))
        return ct_error(CT_ERR_FORMAT, "%s: frame kind %u / flags 0x%x unknown", where,
                        header->kind, header->flags);
    if (header->compressed_bytes > avail_bytes - CT_CKPT_FRAME_HEADER_BYTES)
        return ct_error(CT_ERR_FORMAT, "%s: frame says %llu compressed bytes, %zu remain", where,
                        (unsigned long long)header->compressed_bytes,
                        avail_bytes - CT_CKPT_FRAME_HEADER_BYTES);
    return CT_OK;
}

ct_status ct_ckpt_frame_decode(const uint8_t *frame, size_t avail_bytes, const char *where,
                               float *dst, size_t n, uint8_t *scratch) {
    ct_ckpt_frame_header h;
    CT_CHECK(ct_ckpt_frame_parse_header(frame, avail_bytes, where, &h));
    size_t raw_bytes = n * sizeof(float);
    if (h.raw_bytes != raw_bytes)
        return ct_error(CT_ERR_FORMAT, "%s: frame holds %llu raw bytes, expected %zu", where,
                        (unsigned long long)h.raw_bytes, raw_bytes);
    const uint8_t *payload = frame + CT_CKPT_FRAME_HEADER_BYTES;
    /* Two sentinels, neither caught by ZSTD_isError: check both, then the size itself. */
    unsigned long long content = ZSTD_getFrameContentSize(payload, h.compressed_bytes);
    if (content == ZSTD_CONTENTSIZE_ERROR)
        return ct_error(CT_ERR_FORMAT, "%s: not a zstd frame", where);
    if (content == ZSTD_CONTENTSIZE_UNKNOWN)
        return ct_error(CT_ERR_FORMAT, "%s: zstd frame without a content size", where);
    if (content != raw_bytes)
        return ct_error(CT_ERR_FORMAT, "%s: zstd content size %llu, header says %zu", where,
                        content, raw_bytes);
    bool shuffled = (h.flags & CT_FRAME_FLAG_SHUFFLE) != 0;
    uint8_t *out = shuffled ? scratch : (uint8_t *)dst;
    size_t got = ZSTD_decompress(out, raw_bytes, payload, h.compressed_bytes);
    if (ZSTD_isError(got))
        return ct_error(CT_ERR_FORMAT, "%s: zstd decompress: %s", where, ZSTD_getErrorName(got));
    if (got != raw_bytes)
        return ct_error(CT_ERR_FORMAT, "%s: decompressed %zu bytes, expected %zu", where, got,
                        raw_bytes);
    if (shuffled) unshuffle_planes(scratch, n, (uint8_t *)dst);
    uint64_t sum = ct_hash64(dst, raw_bytes, 0);
    if (sum != h.checksum)
        return ct_error(CT_ERR_FORMAT, "%s: checksum mismatch (stored %016llx, computed %016llx)",
                        where, (unsigned long long)h.checksum, (unsigned long long)sum);
    return CT_OK;
}
