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
 * Speed. zstd is the cost (level 1 on fp32 state: ~0.35 GB/s compressing, ~1.4 GB/s
 * decompressing on one core), so a frame's payload is a run of independent zstd frames, one
 * per CHUNK_BYTES of input, which the codec's threads compress and decompress side by side;
 * the byte-plane shuffle is gathered chunk by chunk inside the same loop, and the checksum
 * (XXH3, at memory speed; version 1's FNV-1a is a serial chain of ~4 cycles a byte) runs on
 * one thread beside the compression. The chunks are cut at fixed offsets, so the bytes do not
 * depend on the thread count. A codec (one per writer or reader) keeps its zstd contexts and
 * scratch from frame to frame: no allocation once it has seen the largest frame.
 */
#define ZSTD_STATIC_LINKING_ONLY /* ZSTD_d_stableOutBuffer: decode into the caller's floats */
#include "checkpoint/checkpoint.h"
#include "kernels/kernels.h"

#include <omp.h>
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
/* The input of one zstd frame of a payload (the last is shorter): 2 MiB, 4x level 1's window,
 * costs < 0.1% of the ratio and splits a gpt2-124m block's 28 MB into 14 even pieces. */
#define CHUNK_BYTES ((size_t)2 << 20)
/* Floats a thread unshuffles at a time. */
#define UNSHUFFLE_BLOCK_FLOATS ((size_t)64 * 1024)

/* One zstd frame of a payload being decoded: where its bytes are, where its content goes. */
typedef struct {
    size_t in, in_bytes, out, out_bytes;
    size_t ret; /* zstd's code */
} chunk;

struct ct_ckpt_codec {
    ZSTD_CCtx *cctx[CT_CKPT_CODEC_MAX_THREADS];
    ZSTD_DCtx *dctx[CT_CKPT_CODEC_MAX_THREADS];
    XXH3_state_t *xxh; /* the running XXH3 of the frame in hand */
    uint32_t version;  /* of the frames it writes: CT_FRAME_VERSION, or 1 (tests) */
    int threads;       /* 1..CT_CKPT_CODEC_MAX_THREADS */
    uint8_t *planes;   /* shuffled bytes: the input of compression, the output of decompression */
    uint8_t *aux;      /* AUTO: the other way's output, or the sample, its planes and output */
    chunk *chunks;     /* one per zstd frame of the payload in hand */
    size_t planes_bytes, aux_bytes, chunks_bytes;
};

/* ---------------------------------------------------------------- checksum
 * A frame's running checksum, by frame version: start, bytes in order, finish. Version 1 is
 * ct_hash64 with seed 0 (common/rng.c, docs/checkpoints.md); version 2 is XXH3-64 with seed 0,
 * both over the raw float bytes. */

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

/* ---------------------------------------------------------------- byte planes
 * n floats (4n bytes) as 4 planes of n bytes: plane b holds byte b of every float. */

/* Bytes [a, b) of the planes of n floats, gathered from src (4n bytes) into dst. */
static void shuffle_span(const uint8_t *restrict src, size_t n, size_t a, size_t b,
                         uint8_t *restrict dst) {
    while (a < b) {
        size_t plane = a / n, i0 = a - plane * n, i1 = CT_MIN(n, i0 + (b - a));
        const uint8_t *restrict from = src + plane;
        uint8_t *restrict to = dst + plane * n;
        for (size_t i = i0; i < i1; i++)
            to[i] = from[4 * i];
        a += i1 - i0;
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

/* The zstd contexts of the first `threads` threads and room for `chunks` chunk records. */
static ct_status codec_ready(ct_ckpt_codec *c, int threads, bool compress, size_t chunks) {
    for (int t = 0; t < threads; t++) {
        if (compress && !c->cctx[t] && !(c->cctx[t] = ZSTD_createCCtx()))
            return ct_error(CT_ERR_NOMEM, "zstd compression context");
        if (!compress && !c->dctx[t] && !(c->dctx[t] = ZSTD_createDCtx()))
            return ct_error(CT_ERR_NOMEM, "zstd decompression context");
    }
    return grow((uint8_t **)&c->chunks, &c->chunks_bytes, chunks * sizeof(chunk));
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
    CT_ASSERT(threads >= 1 && threads <= CT_CKPT_CODEC_MAX_THREADS, "threads %d", threads);
    codec->threads = threads;
}

void ct_ckpt_codec_free(ct_ckpt_codec *codec) {
    if (!codec) return;
    for (int t = 0; t < CT_CKPT_CODEC_MAX_THREADS; t++) {
        ZSTD_freeCCtx(codec->cctx[t]);
        ZSTD_freeDCtx(codec->dctx[t]);
    }
    XXH3_freeState(codec->xxh);
    ct_free(CT_MEM_OTHER, codec->planes, codec->planes_bytes);
    ct_free(CT_MEM_OTHER, codec->aux, codec->aux_bytes);
    ct_free(CT_MEM_OTHER, codec->chunks, codec->chunks_bytes);
    ct_free(CT_MEM_OTHER, codec, sizeof(*codec));
}

/* ---------------------------------------------------------------- encoding */

static size_t chunk_count(size_t bytes) {
    return bytes ? (bytes + CHUNK_BYTES - 1) / CHUNK_BYTES : 1;
}

/* The most bytes the zstd frames of `bytes` input bytes take, chunk by chunk. */
static size_t payload_bound(size_t bytes) {
    size_t k = chunk_count(bytes);
    return (k - 1) * ZSTD_compressBound(CHUNK_BYTES) +
           ZSTD_compressBound(bytes - (k - 1) * CHUNK_BYTES);
}

size_t ct_ckpt_frame_bound_bytes(size_t n) {
    return CT_CKPT_FRAME_HEADER_BYTES + payload_bound(n * sizeof(float));
}

/* Byte planes at level 1 (the fastest, the trainer's default) compress with a hash table of
 * 2^6 entries instead of the level's 2^16: the sign/exponent plane (a few dozen byte values)
 * then goes mostly to Huffman-coded literals rather than a flood of short matches, ~1.5x
 * faster to compress and ~2x to decompress (zstd -b on N(0, 0.02) planes), for a file 0.3%
 * larger on the gpt2-124m state (docs/performance.md, Checkpoints). The noise planes are
 * stored raw either way. */
#define PLANES_HASH_LOG 6
#define PLANES_HASH_LOG_MAX_LEVEL 1

/* One zstd frame (content size set) of src_bytes at `level` into dst; returns zstd's code. */
static size_t compress(ZSTD_CCtx *cctx, void *dst, size_t dst_bytes, const void *src,
                       size_t src_bytes, int level, bool planes) {
    int hash_log = planes && level <= PLANES_HASH_LOG_MAX_LEVEL ? PLANES_HASH_LOG : 0;
    size_t ret = ZSTD_CCtx_setParameter(cctx, ZSTD_c_compressionLevel, level);
    if (!ZSTD_isError(ret)) ret = ZSTD_CCtx_setParameter(cctx, ZSTD_c_hashLog, hash_log);
    return ZSTD_isError(ret) ? ret : ZSTD_compress2(cctx, dst, dst_bytes, src, src_bytes);
}

/* Compresses `bytes` bytes of src into dst (payload_bound bytes) as zstd frames of CHUNK_BYTES
 * input each (the last shorter), on up to c->threads threads; *packed is their total. With
 * `shuffle`, src holds bytes / 4 floats and each chunk of their planes is gathered into
 * c->planes first. With `sum`, one thread adds src's bytes to the checksum meanwhile. */
static ct_status compress_chunks(ct_ckpt_codec *c, const uint8_t *src, size_t bytes, bool shuffle,
                                 int level, frame_sum *sum, uint8_t *dst, size_t *packed) {
    size_t k = chunk_count(bytes), slot = ZSTD_compressBound(CHUNK_BYTES);
    int threads = (int)CT_MIN((size_t)c->threads, k + (sum != NULL));
    CT_CHECK(codec_ready(c, threads, true, k));
    chunk *chunks = c->chunks;
#pragma omp parallel num_threads(threads)
    {
#pragma omp single nowait
        if (sum) sum_add(sum, src, bytes);
#pragma omp for schedule(dynamic, 1) nowait
        for (size_t i = 0; i < k; i++) {
            size_t at = i * CHUNK_BYTES, len = CT_MIN(CHUNK_BYTES, bytes - at);
            const uint8_t *in = src + at;
            if (shuffle) {
                shuffle_span(src, bytes / sizeof(float), at, at + len, c->planes);
                in = c->planes + at;
            }
            chunks[i].ret = compress(c->cctx[omp_get_thread_num()], dst + i * slot,
                                     ZSTD_compressBound(len), in, len, level, shuffle);
        }
    }
    size_t done = 0; /* the frames move down to close the gaps their slots left */
    for (size_t i = 0; i < k; i++) {
        CT_ZSTD(chunks[i].ret, shuffle ? "compress (shuffled)" : "compress");
        memmove(dst + done, dst + i * slot, chunks[i].ret);
        done += chunks[i].ret;
    }
    *packed = done;
    return CT_OK;
}

/* AUTO on a large frame: true when the sample compresses smaller shuffled (ties: plain). */
static ct_status sample_says_shuffle(ct_ckpt_codec *c, const float *src, size_t n, int level,
                                     bool *shuffle) {
    size_t sample_bytes = SAMPLE_FLOATS * sizeof(float), bound = ZSTD_compressBound(sample_bytes);
    CT_CHECK(grow(&c->aux, &c->aux_bytes, 2 * sample_bytes + bound));
    CT_CHECK(codec_ready(c, 1, true, 1));
    float *sample = (float *)c->aux;
    uint8_t *planes = c->aux + sample_bytes, *out = planes + sample_bytes;
    for (size_t k = 0; k < SAMPLE_CHUNKS; k++) {
        size_t at = k * (n - SAMPLE_CHUNK_FLOATS) / (SAMPLE_CHUNKS - 1);
        memcpy(sample + k * SAMPLE_CHUNK_FLOATS, src + at, SAMPLE_CHUNK_FLOATS * sizeof(float));
    }
    shuffle_span((const uint8_t *)sample, SAMPLE_FLOATS, 0, sample_bytes, planes);
    size_t plain = compress(c->cctx[0], out, bound, sample, sample_bytes, level, false);
    CT_ZSTD(plain, "compress (sample)");
    size_t shuffled = compress(c->cctx[0], out, bound, planes, sample_bytes, level, true);
    CT_ZSTD(shuffled, "compress (sample, shuffled)");
    *shuffle = shuffled < plain;
    return CT_OK;
}

ct_status ct_ckpt_frame_encode(ct_ckpt_codec *c, const float *src, size_t n, ct_ckpt_kind kind,
                               int level, ct_ckpt_shuffle shuffle, uint8_t *dst, size_t dst_bytes,
                               size_t *frame_bytes) {
    size_t raw_bytes = n * sizeof(float), bound = payload_bound(raw_bytes);
    CT_ASSERT(dst_bytes >= CT_CKPT_FRAME_HEADER_BYTES + bound, "dst %zu bytes for %zu floats",
              dst_bytes, n);
    uint8_t *payload = dst + CT_CKPT_FRAME_HEADER_BYTES;
    const uint8_t *bytes = (const uint8_t *)src;
    bool exact = shuffle == CT_CKPT_SHUFFLE_AUTO && n < SAMPLE_MIN_FLOATS;
    bool shuffled = shuffle == CT_CKPT_SHUFFLE_ON;
    if (shuffle == CT_CKPT_SHUFFLE_AUTO && !exact)
        CT_CHECK(sample_says_shuffle(c, src, n, level, &shuffled));
    if (shuffled || exact) CT_CHECK(grow(&c->planes, &c->planes_bytes, raw_bytes + 1));
    frame_sum sum;
    sum_start(c, c->version, &sum);
    size_t packed = 0;
    CT_CHECK(compress_chunks(c, bytes, raw_bytes, shuffled, level, &sum, payload, &packed));
    if (exact) {
        /* Small frame: the other way in full too, keep the smaller (ties keep plain: it
         * decodes without the extra pass). */
        size_t packed_shuffled = 0;
        CT_CHECK(grow(&c->aux, &c->aux_bytes, bound));
        CT_CHECK(compress_chunks(c, bytes, raw_bytes, true, level, NULL, c->aux, &packed_shuffled));
        shuffled = packed_shuffled < packed;
        if (shuffled) memcpy(payload, c->aux, packed = packed_shuffled);
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

/* Splits a payload of `packed` bytes into its zstd frames (chunks, *count of them), checking
 * each frame's extent and content size (zstd's two sentinels, neither caught by ZSTD_isError)
 * and that the contents add up to raw_bytes. */
static ct_status find_chunks(ct_ckpt_codec *c, const uint8_t *payload, size_t packed,
                             size_t raw_bytes, const char *where, size_t *count) {
    size_t k = 0, in = 0, out = 0;
    do {
        size_t in_bytes = ZSTD_findFrameCompressedSize(payload + in, packed - in);
        unsigned long long content = ZSTD_getFrameContentSize(payload + in, packed - in);
        if (content == ZSTD_CONTENTSIZE_ERROR)
            return ct_error(CT_ERR_FORMAT, "%s: not a zstd frame (payload byte %zu)", where, in);
        if (content == ZSTD_CONTENTSIZE_UNKNOWN)
            return ct_error(CT_ERR_FORMAT, "%s: zstd frame without a content size", where);
        if (ZSTD_isError(in_bytes))
            return ct_error(CT_ERR_FORMAT, "%s: zstd frame at payload byte %zu of %zu: %s", where,
                            in, packed, ZSTD_getErrorName(in_bytes));
        if (content > raw_bytes - out)
            return ct_error(CT_ERR_FORMAT, "%s: zstd content sizes add up to more than %zu", where,
                            raw_bytes);
        if ((k + 1) * sizeof(chunk) > c->chunks_bytes) {
            chunk *grown = ct_alloc(CT_MEM_OTHER, 2 * (k + 1) * sizeof(chunk));
            if (!grown) return ct_error(CT_ERR_NOMEM, "%s: %zu zstd frames", where, k + 1);
            if (k) memcpy(grown, c->chunks, k * sizeof(chunk));
            ct_free(CT_MEM_OTHER, c->chunks, c->chunks_bytes);
            c->chunks = grown, c->chunks_bytes = 2 * (k + 1) * sizeof(chunk);
        }
        c->chunks[k++] = (chunk){.in = in, .in_bytes = in_bytes, .out = out, .out_bytes = content};
        in += in_bytes, out += (size_t)content;
    } while (in < packed);
    if (out != raw_bytes)
        return ct_error(CT_ERR_FORMAT, "%s: zstd content size %zu, header says %zu", where, out,
                        raw_bytes);
    *count = k;
    return CT_OK;
}

ct_status ct_ckpt_frame_decode(ct_ckpt_codec *c, const uint8_t *frame, size_t avail_bytes,
                               const char *where, float *dst, size_t n) {
    ct_ckpt_frame_header h;
    CT_CHECK(ct_ckpt_frame_parse_header(frame, avail_bytes, where, &h));
    size_t raw_bytes = n * sizeof(float), k = 0;
    if (h.raw_bytes != raw_bytes)
        return ct_error(CT_ERR_FORMAT, "%s: frame holds %llu raw bytes, expected %zu", where,
                        (unsigned long long)h.raw_bytes, raw_bytes);
    const uint8_t *payload = frame + CT_CKPT_FRAME_HEADER_BYTES;
    CT_CHECK(find_chunks(c, payload, h.compressed_bytes, raw_bytes, where, &k));
    bool shuffled = (h.flags & CT_FRAME_FLAG_SHUFFLE) != 0;
    if (shuffled) CT_CHECK(grow(&c->planes, &c->planes_bytes, raw_bytes + 1));
    uint8_t *out = shuffled ? c->planes : (uint8_t *)dst;
    int threads = (int)CT_MIN((size_t)c->threads, k);
    CT_CHECK(codec_ready(c, threads, false, k));
    chunk *chunks = c->chunks;
#pragma omp parallel for num_threads(threads) schedule(dynamic, 1)
    for (size_t i = 0; i < k; i++)
        chunks[i].ret =
            ZSTD_decompressDCtx(c->dctx[omp_get_thread_num()], out + chunks[i].out,
                                chunks[i].out_bytes, payload + chunks[i].in, chunks[i].in_bytes);
    for (size_t i = 0; i < k; i++) {
        if (ZSTD_isError(chunks[i].ret))
            return ct_error(CT_ERR_FORMAT, "%s: zstd decompress (payload byte %zu): %s", where,
                            chunks[i].in, ZSTD_getErrorName(chunks[i].ret));
        if (chunks[i].ret != chunks[i].out_bytes)
            return ct_error(CT_ERR_FORMAT,
                            "%s: decompressed %zu bytes from the zstd frame at payload byte %zu, "
                            "expected %zu",
                            where, chunks[i].ret, chunks[i].in, chunks[i].out_bytes);
    }
    if (shuffled) {
        int unshuffle_threads = (int)CT_MIN((size_t)c->threads, n / UNSHUFFLE_BLOCK_FLOATS + 1);
#pragma omp parallel for num_threads(unshuffle_threads) schedule(static)
        for (size_t i = 0; i < n; i += UNSHUFFLE_BLOCK_FLOATS)
            unshuffle_range(c->planes, n, i, CT_MIN(n, i + UNSHUFFLE_BLOCK_FLOATS), (uint8_t *)dst);
    }
    frame_sum sum;
    sum_start(c, h.version, &sum);
    sum_add(&sum, dst, raw_bytes);
    uint64_t computed = sum_finish(&sum);
    if (computed != h.checksum)
        return ct_error(CT_ERR_FORMAT, "%s: checksum mismatch (stored %016llx, computed %016llx)",
                        where, (unsigned long long)h.checksum, (unsigned long long)computed);
    return CT_OK;
}
