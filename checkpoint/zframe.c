/*
 * zframe: one range of floats as one zstd frame behind a small header of our own, the unit of
 * storage in a rank's checkpoint file (checkpoint/ckpt_file.c). The header says what the frame
 * holds (kind, raw and compressed sizes), how it was packed (byte-plane shuffle or not) and the
 * checksum of the raw float bytes, so a reader can tell a damaged frame from a good one before
 * it trusts a single value. Byte-plane shuffle splits each float's 4 bytes into 4 planes (all
 * low bytes, then the next, ...): the sign/exponent planes of trained weights are nearly
 * constant and compress far better apart from the noisy mantissa bytes. With AUTO the writer
 * picks one per frame: both ways in full for small frames, from a sample for large ones. All
 * header fields are little-endian; docs/checkpoints.md has the layout byte by byte.
 *
 * The checksum depends on the frame version: XXH3-64 (libxxhash, seed 0) from version 2,
 * ct_hash64 (byte-serial FNV-1a, seed 0) in version 1, which is still read and, for tests,
 * written (ct_ckpt_codec_set_version).
 *
 * Speed. A codec (one per writer or reader) keeps its zstd contexts and scratch from frame to
 * frame: no allocation once it has seen the largest frame. The checksum runs over blocks of
 * the (un)shuffle while they are in cache (version 1: fused into its byte loop), and with two
 * threads beside zstd: beside compression, and behind a streaming decompression (for a
 * shuffled frame, behind its last plane). XXH3 runs at memory speed; version 1's FNV-1a, a
 * serial chain of about 4 cycles a byte, was as slow as zstd itself.
 */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_d_stableOutBuffer: decode into the caller's floats */
#include "checkpoint/checkpoint.h"
#include "kernels/kernels.h"

#include <omp.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>
#include <xxhash.h>
#include <zstd.h>

#define CT_FRAME_MAGIC 0x52464354u /* on disk, little-endian: the bytes "TCFR" */
/* The frame version equals the rank file's format version (1: FNV-1a, 2: XXH3-64). */
#define CT_FRAME_VERSION ((uint32_t)CT_CKPT_FORMAT_VERSION)
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

/* AUTO on frames above SAMPLE_MIN_FLOATS compresses a sample both ways and the whole frame once:
 * SAMPLE_CHUNKS contiguous runs of SAMPLE_CHUNK_FLOATS, evenly spaced (1 MiB in all, about 4%
 * of a gpt2-124m block's frame). Smaller frames are compressed both ways in full. */
#define SAMPLE_CHUNKS 4
#define SAMPLE_CHUNK_FLOATS (64 * 1024)
#define SAMPLE_FLOATS (SAMPLE_CHUNKS * SAMPLE_CHUNK_FLOATS)
#define SAMPLE_MIN_FLOATS (4 * SAMPLE_FLOATS)
/* With 2 threads, frames decode in steps of this many compressed bytes so the checksum can
 * follow. */
#define DECODE_STEP_BYTES (512 * 1024)
/* Version 2 checksums the (un)shuffle in blocks of this many floats (64 KiB), hashed while the
 * block is still in cache. */
#define SUM_BLOCK_FLOATS (16 * 1024)

struct ct_ckpt_codec {
    ZSTD_CCtx *cctx;
    ZSTD_DCtx *dctx;
    XXH3_state_t *xxh; /* the running XXH3 of the frame in hand */
    uint32_t version;  /* of the frames it writes: CT_FRAME_VERSION, or 1 (tests) */
    int threads;       /* 1, or 2: the checksum beside zstd */
    uint8_t *planes;   /* shuffled bytes: the input of compression, the output of decompression */
    uint8_t *aux;      /* AUTO: the other way's output, or the sample, its planes and output */
    size_t planes_bytes, aux_bytes;
};

/* ---------------------------------------------------------------- checksum
 * A frame's running checksum, by frame version: start, bytes in order, finish. Version 1 is
 * ct_hash64 with seed 0 (common/rng.c, docs/checkpoints.md), fused with the (un)shuffle's byte
 * loop; version 2 is XXH3-64 with seed 0 over the raw float bytes. */

typedef struct {
    uint32_t version;
    uint64_t fnv;      /* version 1 */
    XXH3_state_t *xxh; /* version 2: the codec's */
} frame_sum;

static void sum_start(ct_ckpt_codec *c, uint32_t version, frame_sum *s) {
    s->version = version, s->fnv = ct_hash64_start(0), s->xxh = c->xxh;
    if (version != 1) XXH3_64bits_reset(c->xxh); /* fails only for a NULL state */
}

static void sum_add(frame_sum *s, const void *data, size_t bytes) {
    if (s->version == 1)
        s->fnv = ct_hash64_add(s->fnv, data, bytes);
    else
        XXH3_64bits_update(s->xxh, data, bytes);
}

static uint64_t sum_finish(const frame_sum *s) {
    return s->version == 1 ? ct_hash64_finish(s->fnv) : XXH3_64bits_digest(s->xxh);
}

/* Version 1: the FNV-1a state after 4 more bytes. */
static inline uint64_t hash4(uint64_t h, uint8_t b0, uint8_t b1, uint8_t b2, uint8_t b3) {
    h = (h ^ b0) * CT_HASH64_PRIME;
    h = (h ^ b1) * CT_HASH64_PRIME;
    h = (h ^ b2) * CT_HASH64_PRIME;
    return (h ^ b3) * CT_HASH64_PRIME;
}

/* Floats [i0, i1) of n (4n bytes) from src into 4 planes of n bytes each in dst. */
static void shuffle_range(const uint8_t *restrict src, size_t n, size_t i0, size_t i1,
                          uint8_t *restrict dst) {
    uint8_t *restrict p0 = dst, *restrict p1 = dst + n, *restrict p2 = dst + 2 * n,
                      *restrict p3 = dst + 3 * n;
    for (size_t i = i0; i < i1; i++) {
        p0[i] = src[4 * i], p1[i] = src[4 * i + 1], p2[i] = src[4 * i + 2], p3[i] = src[4 * i + 3];
    }
}

/* Floats [i0, i1) of n from the 4 planes in src back into dst (4n bytes). */
static void unshuffle_range(const uint8_t *restrict src, size_t n, size_t i0, size_t i1,
                            uint8_t *restrict dst) {
    const uint8_t *restrict p0 = src, *restrict p1 = src + n, *restrict p2 = src + 2 * n,
                            *restrict p3 = src + 3 * n;
    for (size_t i = i0; i < i1; i++) {
        dst[4 * i] = p0[i], dst[4 * i + 1] = p1[i], dst[4 * i + 2] = p2[i], dst[4 * i + 3] = p3[i];
    }
}

/* Shuffles all n floats of src into dst and adds src's bytes to the checksum. Version 1 hashes
 * in the same byte loop (the stores hide in the hash chain's latency). */
static void shuffle_sum(const uint8_t *restrict src, size_t n, uint8_t *restrict dst,
                        frame_sum *s) {
    if (s->version != 1) {
        for (size_t i = 0; i < n; i += SUM_BLOCK_FLOATS) {
            size_t end = CT_MIN(i + SUM_BLOCK_FLOATS, n);
            shuffle_range(src, n, i, end, dst);
            sum_add(s, src + 4 * i, 4 * (end - i));
        }
        return;
    }
    uint8_t *p0 = dst, *p1 = dst + n, *p2 = dst + 2 * n, *p3 = dst + 3 * n;
    uint64_t h = s->fnv;
    for (size_t i = 0; i < n; i++) {
        uint8_t b0 = src[4 * i], b1 = src[4 * i + 1], b2 = src[4 * i + 2], b3 = src[4 * i + 3];
        p0[i] = b0, p1[i] = b1, p2[i] = b2, p3[i] = b3;
        h = hash4(h, b0, b1, b2, b3);
    }
    s->fnv = h;
}

/* Floats [i0, i1) of n from the planes back into dst (4n bytes), adding their bytes to the
 * checksum in order. */
static void unshuffle_sum(const uint8_t *restrict src, size_t n, size_t i0, size_t i1,
                          uint8_t *restrict dst, frame_sum *s) {
    if (s->version != 1) {
        for (size_t i = i0; i < i1; i += SUM_BLOCK_FLOATS) {
            size_t end = CT_MIN(i + SUM_BLOCK_FLOATS, i1);
            unshuffle_range(src, n, i, end, dst);
            sum_add(s, dst + 4 * i, 4 * (end - i));
        }
        return;
    }
    const uint8_t *p0 = src, *p1 = src + n, *p2 = src + 2 * n, *p3 = src + 3 * n;
    uint64_t h = s->fnv;
    for (size_t i = i0; i < i1; i++) {
        uint8_t b0 = p0[i], b1 = p1[i], b2 = p2[i], b3 = p3[i];
        dst[4 * i] = b0, dst[4 * i + 1] = b1, dst[4 * i + 2] = b2, dst[4 * i + 3] = b3;
        h = hash4(h, b0, b1, b2, b3);
    }
    s->fnv = h;
}

/* ---------------------------------------------------------------- codec */

/* Makes *buf at least `need` bytes (contents not kept). */
static ct_status grow(uint8_t **buf, size_t *bytes, size_t need) {
    if (*bytes >= need) return CT_OK;
    ct_free(CT_MEM_OTHER, *buf, *bytes);
    *bytes = 0;
    *buf = ct_alloc(CT_MEM_OTHER, need);
    if (!*buf) return ct_error(CT_ERR_NOMEM, "checkpoint codec buffer of %zu bytes", need);
    *bytes = need;
    return CT_OK;
}

ct_status ct_ckpt_codec_new(ct_ckpt_codec **codec) {
    ct_ckpt_codec *c = ct_alloc(CT_MEM_OTHER, sizeof(*c));
    if (!c) return ct_error(CT_ERR_NOMEM, "checkpoint codec");
    c->xxh = XXH3_createState();
    if (!c->xxh) {
        ct_free(CT_MEM_OTHER, c, sizeof(*c));
        return ct_error(CT_ERR_NOMEM, "XXH3 state");
    }
    c->version = CT_FRAME_VERSION;
    int threads = ct_kern_cpu_threads();
    if (threads <= 0) threads = (int)sysconf(_SC_NPROCESSORS_ONLN);
    c->threads = threads >= 2 ? 2 : 1;
    *codec = c;
    return CT_OK;
}

void ct_ckpt_codec_set_version(ct_ckpt_codec *codec, int version) {
    CT_ASSERT(version >= 1 && version <= CT_CKPT_FORMAT_VERSION, "frame version %d", version);
    codec->version = (uint32_t)version;
}

void ct_ckpt_codec_set_threads(ct_ckpt_codec *codec, int threads) {
    CT_ASSERT(threads == 1 || threads == 2, "threads %d", threads);
    codec->threads = threads;
}

void ct_ckpt_codec_free(ct_ckpt_codec *codec) {
    if (!codec) return;
    ZSTD_freeCCtx(codec->cctx);
    ZSTD_freeDCtx(codec->dctx);
    XXH3_freeState(codec->xxh);
    ct_free(CT_MEM_OTHER, codec->planes, codec->planes_bytes);
    ct_free(CT_MEM_OTHER, codec->aux, codec->aux_bytes);
    ct_free(CT_MEM_OTHER, codec, sizeof(*codec));
}

/* ---------------------------------------------------------------- encoding */

size_t ct_ckpt_frame_bound_bytes(size_t n) {
    return CT_CKPT_FRAME_HEADER_BYTES + ZSTD_compressBound(n * sizeof(float));
}

/* One zstd frame (content size set) of src_bytes at `level` into dst; returns zstd's code. */
static size_t compress(ct_ckpt_codec *c, void *dst, size_t dst_bytes, const void *src,
                       size_t src_bytes, int level) {
    size_t ret = ZSTD_CCtx_setParameter(c->cctx, ZSTD_c_compressionLevel, level);
    return ZSTD_isError(ret) ? ret : ZSTD_compress2(c->cctx, dst, dst_bytes, src, src_bytes);
}

/* AUTO on a large frame: true when the sample compresses smaller shuffled (ties: plain). */
static ct_status sample_says_shuffle(ct_ckpt_codec *c, const float *src, size_t n, int level,
                                     bool *shuffle) {
    size_t sample_bytes = SAMPLE_FLOATS * sizeof(float), bound = ZSTD_compressBound(sample_bytes);
    CT_CHECK(grow(&c->aux, &c->aux_bytes, 2 * sample_bytes + bound));
    float *sample = (float *)c->aux;
    uint8_t *planes = c->aux + sample_bytes, *out = planes + sample_bytes;
    for (size_t k = 0; k < SAMPLE_CHUNKS; k++) {
        size_t at = k * (n - SAMPLE_CHUNK_FLOATS) / (SAMPLE_CHUNKS - 1);
        memcpy(sample + k * SAMPLE_CHUNK_FLOATS, src + at, SAMPLE_CHUNK_FLOATS * sizeof(float));
    }
    shuffle_range((const uint8_t *)sample, SAMPLE_FLOATS, 0, SAMPLE_FLOATS, planes);
    size_t plain = compress(c, out, bound, sample, sample_bytes, level);
    CT_ZSTD(plain, "compress (sample)");
    size_t shuffled = compress(c, out, bound, planes, sample_bytes, level);
    CT_ZSTD(shuffled, "compress (sample, shuffled)");
    *shuffle = shuffled < plain;
    return CT_OK;
}

ct_status ct_ckpt_frame_encode(ct_ckpt_codec *c, const float *src, size_t n, ct_ckpt_kind kind,
                               int level, ct_ckpt_shuffle shuffle, uint8_t *dst, size_t dst_bytes,
                               size_t *frame_bytes) {
    size_t raw_bytes = n * sizeof(float);
    size_t bound = ZSTD_compressBound(raw_bytes);
    CT_ASSERT(dst_bytes >= CT_CKPT_FRAME_HEADER_BYTES + bound, "dst %zu bytes for %zu floats",
              dst_bytes, n);
    if (!c->cctx && !(c->cctx = ZSTD_createCCtx()))
        return ct_error(CT_ERR_NOMEM, "zstd compression context");
    uint8_t *payload = dst + CT_CKPT_FRAME_HEADER_BYTES;
    const uint8_t *bytes = (const uint8_t *)src;
    bool exact = shuffle == CT_CKPT_SHUFFLE_AUTO && n < SAMPLE_MIN_FLOATS;
    bool shuffled = shuffle == CT_CKPT_SHUFFLE_ON;
    if (shuffle == CT_CKPT_SHUFFLE_AUTO && !exact)
        CT_CHECK(sample_says_shuffle(c, src, n, level, &shuffled));
    frame_sum sum;
    sum_start(c, c->version, &sum);
    size_t packed = 0;
    if (exact) {
        /* Small frame: both ways in full, keep the smaller (ties keep plain: it decodes
         * without the extra pass). */
        CT_CHECK(grow(&c->planes, &c->planes_bytes, raw_bytes + 1));
        CT_CHECK(grow(&c->aux, &c->aux_bytes, bound));
        shuffle_sum(bytes, n, c->planes, &sum);
        packed = compress(c, payload, bound, src, raw_bytes, level);
        CT_ZSTD(packed, "compress");
        size_t packed_shuffled = compress(c, c->aux, bound, c->planes, raw_bytes, level);
        CT_ZSTD(packed_shuffled, "compress (shuffled)");
        shuffled = packed_shuffled < packed;
        if (shuffled) memcpy(payload, c->aux, packed = packed_shuffled);
    } else {
        if (shuffled) CT_CHECK(grow(&c->planes, &c->planes_bytes, raw_bytes + 1));
        const void *input = shuffled ? (const void *)c->planes : (const void *)src;
        if (c->threads == 1) {
            if (shuffled) shuffle_sum(bytes, n, c->planes, &sum);
            packed = compress(c, payload, bound, input, raw_bytes, level);
            if (!shuffled) sum_add(&sum, bytes, raw_bytes);
        } else {
            /* Two threads: shuffle and zstd on one, the checksum of src (the longer job at
             * levels 1-3) on the other. Either section may run on either thread; a team of
             * one runs both in turn. */
#pragma omp parallel sections num_threads(2)
            {
#pragma omp section
                {
                    if (shuffled) shuffle_range(bytes, n, 0, n, c->planes);
                    packed = compress(c, payload, bound, input, raw_bytes, level);
                }
#pragma omp section
                sum_add(&sum, bytes, raw_bytes);
            }
        }
        CT_ZSTD(packed, shuffled ? "compress (shuffled)" : "compress");
    }
    ct_ckpt_put_u32(dst + 0, CT_FRAME_MAGIC);
    ct_ckpt_put_u32(dst + 4, c->version);
    ct_ckpt_put_u32(dst + 8, (uint32_t)kind);
    ct_ckpt_put_u32(dst + 12, shuffled ? CT_FRAME_FLAG_SHUFFLE : 0);
    ct_ckpt_put_u64(dst + 16, raw_bytes);
    ct_ckpt_put_u64(dst + 24, packed);
    ct_ckpt_put_u64(dst + 32, sum_finish(&sum));
    *frame_bytes = CT_CKPT_FRAME_HEADER_BYTES + packed;
    return CT_OK;
}

/* ---------------------------------------------------------------- decoding */

ct_status ct_ckpt_frame_parse_header(const uint8_t *frame, size_t avail_bytes, const char *where,
                                     ct_ckpt_frame_header *header) {
    if (avail_bytes < CT_CKPT_FRAME_HEADER_BYTES)
        return ct_error(CT_ERR_FORMAT, "%s: frame header needs %d bytes, %zu remain", where,
                        CT_CKPT_FRAME_HEADER_BYTES, avail_bytes);
    uint32_t magic = ct_ckpt_get_u32(frame), version = ct_ckpt_get_u32(frame + 4);
    if (magic != CT_FRAME_MAGIC)
        return ct_error(CT_ERR_FORMAT, "%s: bad frame magic 0x%08x (expected 0x%08x)", where, magic,
                        CT_FRAME_MAGIC);
    if (version < 1 || version > CT_FRAME_VERSION)
        return ct_error(CT_ERR_FORMAT, "%s: frame format version %u, this build reads 1 to %u",
                        where, version, CT_FRAME_VERSION);
    header->version = version;
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

/* Decompresses a frame of n floats while the other thread checksums what has arrived: zstd
 * writes straight into `out` (stable output buffer: dst for a plain frame, the planes for a
 * shuffled one) as compressed bytes are handed to it in steps of DECODE_STEP_BYTES, and
 * publishes its progress. Plain: the checksum follows the bytes. Shuffled: float i is complete
 * once plane 3 has byte i, so the unshuffle into dst and the checksum follow plane 3 (the last
 * quarter of the decompression). Returns zstd's last code; *sum is the hash state after the
 * floats done, *got their bytes, *consumed the compressed bytes used (short of `packed` when
 * the frame ends early or makes no progress). */
static size_t decompress_hashing(ct_ckpt_codec *c, const uint8_t *payload, size_t packed,
                                 bool shuffled, uint8_t *out_bytes, uint8_t *dst, size_t n,
                                 frame_sum *sum, size_t *got, size_t *consumed) {
    size_t raw_bytes = n * sizeof(float);
    size_t ret = ZSTD_DCtx_reset(c->dctx, ZSTD_reset_session_and_parameters);
    if (!ZSTD_isError(ret)) ret = ZSTD_DCtx_setParameter(c->dctx, ZSTD_d_stableOutBuffer, 1);
    if (ZSTD_isError(ret)) return ret;
    _Atomic size_t done = 0;
    _Atomic bool finished = false;
    size_t hashed = 0; /* bytes (plain) or floats (shuffled) */
#pragma omp parallel num_threads(2)
    {
        if (omp_get_thread_num() == 0) {
            ZSTD_inBuffer in = {payload, 0, 0};
            ZSTD_outBuffer out = {out_bytes, raw_bytes, 0};
            for (;;) {
                size_t in_before = in.pos, out_before = out.pos;
                in.size = CT_MIN(in.size + DECODE_STEP_BYTES, packed);
                ret = ZSTD_decompressStream(c->dctx, &out, &in);
                atomic_store_explicit(&done, out.pos, memory_order_release);
                bool stuck = in.size == packed && in.pos == in_before && out.pos == out_before;
                if (ZSTD_isError(ret) || ret == 0 || stuck) break;
            }
            *consumed = in.pos;
            atomic_store_explicit(&finished, true, memory_order_release);
        }
        if (omp_get_thread_num() == omp_get_num_threads() - 1) {
            for (;;) {
                bool last = atomic_load_explicit(&finished, memory_order_acquire);
                size_t upto = atomic_load_explicit(&done, memory_order_acquire);
                if (shuffled) upto = upto > 3 * n ? upto - 3 * n : 0;
                if (upto > hashed) {
                    if (shuffled)
                        unshuffle_sum(out_bytes, n, hashed, upto, dst, sum);
                    else
                        sum_add(sum, dst + hashed, upto - hashed);
                    hashed = upto;
                } else if (last) {
                    break;
                } else {
                    sched_yield();
                }
            }
        }
    }
    *got = shuffled ? hashed * sizeof(float) : hashed;
    return ret;
}

ct_status ct_ckpt_frame_decode(ct_ckpt_codec *c, const uint8_t *frame, size_t avail_bytes,
                               const char *where, float *dst, size_t n) {
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
    if (!c->dctx && !(c->dctx = ZSTD_createDCtx()))
        return ct_error(CT_ERR_NOMEM, "zstd decompression context");
    bool shuffled = (h.flags & CT_FRAME_FLAG_SHUFFLE) != 0;
    frame_sum sum;
    sum_start(c, h.version, &sum);
    size_t got = 0, consumed = h.compressed_bytes, ret;
    if (shuffled) CT_CHECK(grow(&c->planes, &c->planes_bytes, raw_bytes + 1));
    uint8_t *out = shuffled ? c->planes : (uint8_t *)dst;
    if (c->threads == 2 && h.compressed_bytes > DECODE_STEP_BYTES) {
        ret = decompress_hashing(c, payload, h.compressed_bytes, shuffled, out, (uint8_t *)dst, n,
                                 &sum, &got, &consumed);
    } else {
        ret = ZSTD_DCtx_reset(c->dctx, ZSTD_reset_session_and_parameters);
        if (!ZSTD_isError(ret))
            ret = ZSTD_decompressDCtx(c->dctx, out, raw_bytes, payload, h.compressed_bytes);
        got = ZSTD_isError(ret) ? 0 : ret;
        if (got == raw_bytes && shuffled)
            unshuffle_sum(c->planes, n, 0, n, (uint8_t *)dst, &sum);
        else if (got == raw_bytes)
            sum_add(&sum, out, raw_bytes);
    }
    if (ZSTD_isError(ret))
        return ct_error(CT_ERR_FORMAT, "%s: zstd decompress: %s", where, ZSTD_getErrorName(ret));
    if (got != raw_bytes || consumed != h.compressed_bytes)
        return ct_error(CT_ERR_FORMAT,
                        "%s: decompressed %zu bytes from %zu of %llu compressed, expected %zu",
                        where, got, consumed, (unsigned long long)h.compressed_bytes, raw_bytes);
    uint64_t computed = sum_finish(&sum);
    if (computed != h.checksum)
        return ct_error(CT_ERR_FORMAT, "%s: checksum mismatch (stored %016llx, computed %016llx)",
                        where, (unsigned long long)h.checksum, (unsigned long long)computed);
    return CT_OK;
}
