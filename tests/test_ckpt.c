/*
 * Sharded checkpoint storage: zstd frames (byte-plane shuffle, checksums) and per-rank files.
 * Single process: a world of N is simulated by writing the N rank files that its ranks would
 * write, each holding the ranges [g*S, (g+1)*S) clipped to numel (docs/parallel.md) of every
 * unit and kind. Round trips are bitwise (memcmp): compression is lossless, so any difference
 * is a bug. Corruptions must fail with a message naming the file (and the unit).
 */
#define _GNU_SOURCE /* nftw, mkdtemp */
#include "checkpoint/checkpoint.h"
#include "tests/test_temp_dir.h"
#include "tests/test_util.h"

#include <math.h>
#include <string.h>
#include <unistd.h>
/* The reference XXH3-64 for the expected frame checksums, compiled in (nothing to link). */
#define XXH_INLINE_ALL
#include <xxhash.h>

#define N_UNITS 5
/* Odd sizes so that padding matters; unit 0 is smaller than the world (some ranks own none). */
static const int64_t unit_numel[N_UNITS] = {2, 7, 1001, 4099, 12345};
static const char *unit_names[N_UNITS] = {"lnf", "bias", "h.0", "h.1", "embed"};
static float *state[N_UNITS][CT_CKPT_KIND_COUNT];

/* Trained-like values: weights 0.02 x (noise + a smooth component), Adam m small and signed,
 * v small and positive, like the moments of such weights' gradients. */
static float fake_value(int unit, int kind, int64_t i) {
    uint64_t key = ct_rng_key(1234, 7, (uint64_t)unit, (uint64_t)kind);
    double smooth = 0.5 * sin((double)i * 0.003) + 0.3 * cos((double)i * 0.0007);
    double x = 0.02 * (ct_rng_normal(key, (uint64_t)i) + smooth);
    if (kind == CT_CKPT_ADAM_M) return (float)(1e-3 * x);
    if (kind == CT_CKPT_ADAM_V) return (float)(1e-6 * x * x);
    return (float)x;
}

static void make_state(void) {
    for (int u = 0; u < N_UNITS; u++)
        for (int k = 0; k < CT_CKPT_KIND_COUNT; k++) {
            state[u][k] = malloc((size_t)unit_numel[u] * sizeof(float));
            for (int64_t i = 0; i < unit_numel[u]; i++)
                state[u][k][i] = fake_value(u, k, i);
        }
}

static void free_state(void) {
    for (int u = 0; u < N_UNITS; u++)
        for (int k = 0; k < CT_CKPT_KIND_COUNT; k++)
            free(state[u][k]);
}

/* The range rank g of a group of n owns: [g*S, (g+1)*S) clipped to numel, S = ceil(numel/n). */
static void owned_range(int64_t numel, int n, int g, int64_t *lo, int64_t *hi) {
    int64_t s = (numel + n - 1) / n;
    *lo = CT_MIN(g * s, numel);
    *hi = CT_MIN((g + 1) * s, numel);
}

/* Writes the n rank files of a world of n into temp_dir; counts non-empty entries per rank. */
static void write_world(int n, ct_ckpt_shuffle shuffle, int *entries) {
    for (int g = 0; g < n; g++) {
        char path[512];
        ct_ckpt_rank_path(temp_dir, g, path, sizeof(path));
        ct_ckpt_writer *w = NULL;
        CU_ASSERT_EQUAL_FATAL(ct_ckpt_writer_open(&w, path, g, n, 3, shuffle), CT_OK);
        entries[g] = 0;
        for (int u = 0; u < N_UNITS; u++)
            for (int k = 0; k < CT_CKPT_KIND_COUNT; k++) {
                int64_t lo, hi;
                owned_range(unit_numel[u], n, g, &lo, &hi);
                CU_ASSERT_EQUAL(ct_ckpt_writer_add(w, u, k, lo, hi, state[u][k] + lo), CT_OK);
                entries[g] += hi > lo;
            }
        uint64_t bytes = 0, sum = 0;
        CU_ASSERT_EQUAL_FATAL(ct_ckpt_writer_close(w, &bytes, &sum), CT_OK);
        ct_ckpt_reader *r = NULL;
        CU_ASSERT_EQUAL_FATAL(ct_ckpt_reader_open(&r, path), CT_OK);
        CU_ASSERT_EQUAL(ct_ckpt_reader_file_bytes(r), bytes);
        CU_ASSERT_EQUAL(ct_ckpt_reader_checksum(r), sum);
        ct_ckpt_reader_close(r);
    }
}

static void open_world(int n, ct_ckpt_reader **readers) {
    for (int g = 0; g < n; g++) {
        char path[512];
        ct_ckpt_rank_path(temp_dir, g, path, sizeof(path));
        CU_ASSERT_EQUAL_FATAL(ct_ckpt_reader_open(&readers[g], path), CT_OK);
    }
}

static void close_world(int n, ct_ckpt_reader **readers) {
    for (int g = 0; g < n; g++)
        ct_ckpt_reader_close(readers[g]);
}

static bool message_has(const char *needle) {
    bool found = strstr(ct_error_message(), needle) != NULL;
    if (!found) printf("\n  message \"%s\" lacks \"%s\"\n", ct_error_message(), needle);
    return found;
}

/* ---------------------------------------------------------------- frames */

static size_t encoded_size(const float *x, size_t n, ct_ckpt_shuffle shuffle, uint32_t *flags) {
    uint8_t *frame = malloc(ct_ckpt_frame_bound_bytes(n));
    ct_ckpt_codec *codec = NULL;
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_codec_new(&codec), CT_OK);
    size_t bytes = 0;
    CU_ASSERT_EQUAL(ct_ckpt_frame_encode(codec, x, n, CT_CKPT_PARAMS, 3, shuffle, frame,
                                         ct_ckpt_frame_bound_bytes(n), &bytes),
                    CT_OK);
    *flags = ct_ckpt_get_u32(frame + 12);
    float *back = malloc(n * sizeof(float) + 1);
    CU_ASSERT_EQUAL(ct_ckpt_frame_decode(codec, frame, bytes, "test frame", back, n), CT_OK);
    CU_ASSERT_EQUAL(memcmp(back, x, n * sizeof(float)), 0);
    ct_ckpt_codec_free(codec);
    free(back), free(frame);
    return bytes;
}

/* Frames above the codec's thresholds: AUTO judges from a sample above 1M floats, and plain
 * frames over 512 KiB compressed decode in steps with the checksum following (2 threads). */
#define BIG_N ((size_t)1 << 21)

/* Trained-like weights (shuffle wins) or text-like bytes: words drawn at random from a
 * vocabulary of 64 (plain zstd matches whole words, shuffled planes break every word into
 * letters four apart, so plain wins). */
static float *make_data(size_t n, bool text, int kind) {
    float *x = malloc(n * sizeof(float) + 1);
    if (!text) {
        for (size_t i = 0; i < n; i++)
            x[i] = fake_value(3, kind, (int64_t)i);
        return x;
    }
    uint8_t *bytes = (uint8_t *)x;
    size_t at = 0;
    for (uint64_t t = 0; at < n * sizeof(float); t++) {
        uint64_t w = ct_rng_u64(99, t) % 64, letters = 3 + w % 7;
        for (uint64_t j = 0; j <= letters && at < n * sizeof(float); j++)
            bytes[at++] = j == letters ? ' ' : (uint8_t)('a' + ct_rng_u64(77, w * 16 + j) % 26);
    }
    return x;
}

/* AUTO must keep the smaller of the two, flagged as such, on data where either wins: judged in
 * full on a small frame, from the sample on a large one. */
static void test_shuffle_chosen_when_smaller(void) {
    const size_t sizes[2] = {1 << 16, BIG_N};
    const char *names[2] = {"trained-like weights", "text-like words"};
    for (int z = 0; z < 2; z++) {
        size_t N = sizes[z];
        int shuffle_won = 0, plain_won = 0;
        for (int d = 0; d < 2; d++) {
            float *x = make_data(N, d == 1, CT_CKPT_PARAMS);
            uint32_t f_off, f_on, f_auto;
            size_t off = encoded_size(x, N, CT_CKPT_SHUFFLE_OFF, &f_off);
            size_t on = encoded_size(x, N, CT_CKPT_SHUFFLE_ON, &f_on);
            size_t chosen = encoded_size(x, N, CT_CKPT_SHUFFLE_AUTO, &f_auto);
            printf("\n  %s, %zu floats, zstd 3: plain %zu bytes (%.3f), shuffled %zu bytes "
                   "(%.3f), auto %zu",
                   names[d], N, off, (double)off / (4.0 * N), on, (double)on / (4.0 * N), chosen);
            CU_ASSERT_EQUAL(f_off & CT_CKPT_FRAME_FLAG_SHUFFLE, 0);
            CU_ASSERT_EQUAL(f_on & CT_CKPT_FRAME_FLAG_SHUFFLE, CT_CKPT_FRAME_FLAG_SHUFFLE);
            CU_ASSERT_EQUAL(chosen, CT_MIN(off, on));
            CU_ASSERT_EQUAL((f_auto & CT_CKPT_FRAME_FLAG_SHUFFLE) != 0, on < off);
            shuffle_won += on < off, plain_won += off < on;
            free(x);
        }
        /* Each kind of data exercises one branch of the choice (measured above: shuffle wins
         * on trained-like weights, plain on text-like words), at both sizes. */
        CU_ASSERT_EQUAL(shuffle_won, 1);
        CU_ASSERT_EQUAL(plain_won, 1);
    }
}

/* The checksum docs/checkpoints.md gives a frame of format version `version`. */
static uint64_t spec_checksum(int version, const void *data, size_t bytes) {
    return version == 1 ? ct_hash64(data, bytes, 0) : XXH3_64bits(data, bytes);
}

static void codec_reused_at_version(int version) {
    enum { FRAMES = 7 };
    const size_t sizes[FRAMES] = {BIG_N, 1001, BIG_N - 3, 7, 65536, BIG_N, 12345};
    const ct_ckpt_kind kinds[FRAMES] = {CT_CKPT_PARAMS, CT_CKPT_ADAM_M, CT_CKPT_PARAMS,
                                        CT_CKPT_ADAM_V, CT_CKPT_ADAM_V, CT_CKPT_ADAM_M,
                                        CT_CKPT_PARAMS};
    const ct_ckpt_shuffle modes[FRAMES] = {
        CT_CKPT_SHUFFLE_AUTO, CT_CKPT_SHUFFLE_ON,  CT_CKPT_SHUFFLE_OFF, CT_CKPT_SHUFFLE_AUTO,
        CT_CKPT_SHUFFLE_AUTO, CT_CKPT_SHUFFLE_OFF, CT_CKPT_SHUFFLE_ON};
    const bool text[FRAMES] = {false, false, true, false, false, false, true};
    CU_ASSERT_EQUAL(spec_checksum(2, "", 0), 0x2d06800538d394c2ull); /* XXH3's own test vector */
    float *src[FRAMES];
    uint8_t *frames[2][FRAMES];
    size_t frame_bytes[2][FRAMES];
    for (int f = 0; f < FRAMES; f++)
        src[f] = make_data(sizes[f], text[f], kinds[f]);
    float *back = malloc(BIG_N * sizeof(float));
    for (int t = 0; t < 2; t++) {
        ct_ckpt_codec *enc = NULL, *dec = NULL;
        CU_ASSERT_EQUAL_FATAL(ct_ckpt_codec_new(&enc), CT_OK);
        CU_ASSERT_EQUAL_FATAL(ct_ckpt_codec_new(&dec), CT_OK);
        ct_ckpt_codec_set_threads(enc, t + 1);
        ct_ckpt_codec_set_threads(dec, t + 1);
        ct_ckpt_codec_set_version(enc, version);
        ct_mem_stats warm, after;
        for (int pass = 0; pass < 2; pass++) {
            ct_mem_get_stats(&warm);
            for (int f = 0; f < FRAMES; f++) {
                size_t bound = ct_ckpt_frame_bound_bytes(sizes[f]), bytes = 0;
                uint8_t *frame = pass ? frames[t][f] : malloc(bound);
                CU_ASSERT_EQUAL(ct_ckpt_frame_encode(enc, src[f], sizes[f], kinds[f], 3, modes[f],
                                                     frame, bound, &bytes),
                                CT_OK);
                CU_ASSERT(pass == 0 || bytes == frame_bytes[t][f]);
                frames[t][f] = frame, frame_bytes[t][f] = bytes;
                CU_ASSERT_EQUAL(ct_ckpt_get_u32(frame + 4), (uint32_t)version);
                CU_ASSERT_EQUAL(ct_ckpt_get_u64(frame + 32),
                                spec_checksum(version, src[f], sizes[f] * sizeof(float)));
                memset(back, 0xff, sizes[f] * sizeof(float));
                CU_ASSERT_EQUAL(ct_ckpt_frame_decode(dec, frame, bytes, "reuse", back, sizes[f]),
                                CT_OK);
                CU_ASSERT_EQUAL(memcmp(back, src[f], sizes[f] * sizeof(float)), 0);
            }
            ct_mem_get_stats(&after);
            if (pass == 1) CU_ASSERT_EQUAL(after.allocations, warm.allocations);
        }
        ct_ckpt_codec_free(enc);
        ct_ckpt_codec_free(dec);
    }
    for (int f = 0; f < FRAMES; f++) {
        CU_ASSERT_EQUAL(frame_bytes[0][f], frame_bytes[1][f]);
        CU_ASSERT(frame_bytes[0][f] == frame_bytes[1][f] &&
                  memcmp(frames[0][f], frames[1][f], frame_bytes[0][f]) == 0);
        free(frames[0][f]), free(frames[1][f]), free(src[f]);
    }
    free(back);
}

/* One encoding codec and one decoding codec, each reused over frames of every size (small,
 * large, small again), kind and shuffle mode, with 1 and with 2 threads, writing frames of
 * version 2 (XXH3-64) and of version 1 (FNV-1a): every frame decodes bitwise, its checksum is
 * the spec's of the floats (so the blocked, fused and parallel checksums are right), the bytes
 * do not depend on the thread count, and once the codecs have seen the largest frame a second
 * pass allocates nothing. */
static void test_codec_reused_across_sizes_kinds_and_threads(void) {
    for (int version = CT_CKPT_FORMAT_VERSION; version >= 1; version--)
        codec_reused_at_version(version);
}

/* A large frame (several zstd frames decoded on 2 threads), plain or shuffled, that is
 * damaged fails with a message: a flipped payload byte, a payload cut short, trailing bytes;
 * the codec decodes the good frame afterwards. */
static void test_damaged_large_frame_fails_with_threads(void) {
    float *x = make_data(BIG_N, false, CT_CKPT_PARAMS), *back = malloc(BIG_N * sizeof(float));
    size_t bound = ct_ckpt_frame_bound_bytes(BIG_N) + 64;
    uint8_t *frame = calloc(1, bound);
    ct_ckpt_codec *codec = NULL;
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_codec_new(&codec), CT_OK);
    ct_ckpt_codec_set_threads(codec, 2);
    const ct_ckpt_shuffle modes[2] = {CT_CKPT_SHUFFLE_OFF, CT_CKPT_SHUFFLE_ON};
    for (int m = 0; m < 2; m++) {
        size_t bytes = 0;
        memset(frame, 0, bound);
        CU_ASSERT_EQUAL_FATAL(ct_ckpt_frame_encode(codec, x, BIG_N, CT_CKPT_PARAMS, 1, modes[m],
                                                   frame, bound, &bytes),
                              CT_OK);
        size_t packed = bytes - CT_CKPT_FRAME_HEADER_BYTES;
        CU_ASSERT_FATAL(packed > 2 * 2 * 1024 * 1024); /* several zstd frames */
        frame[CT_CKPT_FRAME_HEADER_BYTES + packed / 2] ^= 0x40;
        CU_ASSERT_NOT_EQUAL(ct_ckpt_frame_decode(codec, frame, bytes, "big.ctk", back, BIG_N),
                            CT_OK);
        CU_ASSERT(message_has("big.ctk"));
        frame[CT_CKPT_FRAME_HEADER_BYTES + packed / 2] ^= 0x40;
        ct_ckpt_put_u64(frame + 24, packed - 1000);
        CU_ASSERT_NOT_EQUAL(
            ct_ckpt_frame_decode(codec, frame, bytes - 1000, "big.ctk", back, BIG_N), CT_OK);
        CU_ASSERT(message_has("big.ctk"));
        ct_ckpt_put_u64(frame + 24, packed + 64);
        CU_ASSERT_NOT_EQUAL(ct_ckpt_frame_decode(codec, frame, bytes + 64, "big.ctk", back, BIG_N),
                            CT_OK);
        CU_ASSERT(message_has("big.ctk"));
        ct_ckpt_put_u64(frame + 24, packed);
        CU_ASSERT_EQUAL(ct_ckpt_frame_decode(codec, frame, bytes, "big.ctk", back, BIG_N), CT_OK);
        CU_ASSERT_EQUAL(memcmp(back, x, BIG_N * sizeof(float)), 0);
    }
    ct_ckpt_codec_free(codec);
    free(frame), free(back), free(x);
}

/* A frame whose zstd payload claims no content size, or is not zstd, fails by name. */
static void test_frame_rejects_bad_sizes(void) {
    float x[64];
    for (int i = 0; i < 64; i++)
        x[i] = fake_value(1, 0, i);
    uint8_t frame[1024];
    size_t bytes = 0;
    ct_ckpt_codec *codec = NULL;
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_codec_new(&codec), CT_OK);
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_frame_encode(codec, x, 64, CT_CKPT_PARAMS, 1, CT_CKPT_SHUFFLE_OFF,
                                               frame, sizeof(frame), &bytes),
                          CT_OK);
    float back[64];
    /* One float fewer than the frame holds. */
    CU_ASSERT_NOT_EQUAL(ct_ckpt_frame_decode(codec, frame, bytes, "f.ctk", back, 63), CT_OK);
    CU_ASSERT(message_has("f.ctk") && message_has("raw bytes"));
    /* The compressed size runs past what the file holds. */
    CU_ASSERT_NOT_EQUAL(ct_ckpt_frame_decode(codec, frame, bytes - 1, "f.ctk", back, 64), CT_OK);
    CU_ASSERT(message_has("remain"));
    /* zstd magic broken: ZSTD_CONTENTSIZE_ERROR. */
    frame[CT_CKPT_FRAME_HEADER_BYTES] ^= 0xff;
    CU_ASSERT_NOT_EQUAL(ct_ckpt_frame_decode(codec, frame, bytes, "f.ctk", back, 64), CT_OK);
    CU_ASSERT(message_has("not a zstd frame"));
    frame[CT_CKPT_FRAME_HEADER_BYTES] ^= 0xff;
    CU_ASSERT_EQUAL(ct_ckpt_frame_decode(codec, frame, bytes, "f.ctk", back, 64), CT_OK);
    CU_ASSERT_EQUAL(memcmp(back, x, sizeof(x)), 0);
    /* A valid zstd frame that declares no content size (ZSTD_CONTENTSIZE_UNKNOWN), made by
     * hand: magic, descriptor 0x00 (no size field, not single-segment), window byte 0x00
     * (1 KiB), one last raw block of 256 bytes (header 1 | 0 << 1 | 256 << 3, 3 bytes LE). */
    uint8_t *z = frame + CT_CKPT_FRAME_HEADER_BYTES;
    const uint8_t head[9] = {0x28, 0xb5, 0x2f, 0xfd, 0x00, 0x00, 0x01, 0x08, 0x00};
    memcpy(z, head, sizeof(head));
    memcpy(z + sizeof(head), x, sizeof(x));
    ct_ckpt_put_u64(frame + 24, sizeof(head) + sizeof(x));
    CU_ASSERT_NOT_EQUAL(ct_ckpt_frame_decode(codec, frame,
                                             CT_CKPT_FRAME_HEADER_BYTES + sizeof(head) + sizeof(x),
                                             "f.ctk", back, 64),
                        CT_OK);
    CU_ASSERT(message_has("f.ctk") && message_has("without a content size"));
    ct_ckpt_codec_free(codec);
}

/* ---------------------------------------------------------------- rank files */

/* For N = 1..4: every rank reads back its own ranges, and the whole state reassembles from
 * the N files, bitwise; the index lists exactly the non-empty ranges. */
static void test_round_trip_bitwise_world1to4(void) {
    for (int n = 1; n <= 4; n++) {
        int entries[4];
        make_temp_dir();
        write_world(n, CT_CKPT_SHUFFLE_AUTO, entries);
        ct_ckpt_reader *readers[4];
        open_world(n, readers);
        for (int g = 0; g < n; g++) {
            CU_ASSERT_EQUAL(ct_ckpt_reader_rank(readers[g]), g);
            CU_ASSERT_EQUAL(ct_ckpt_reader_world_size(readers[g]), n);
            CU_ASSERT_EQUAL(ct_ckpt_reader_entry_count(readers[g]), entries[g]);
        }
        for (int u = 0; u < N_UNITS; u++)
            for (int k = 0; k < CT_CKPT_KIND_COUNT; k++) {
                int64_t numel = unit_numel[u];
                float *back = malloc((size_t)numel * sizeof(float));
                for (int g = 0; g < n; g++) {
                    int64_t lo, hi, covered = -1;
                    owned_range(numel, n, g, &lo, &hi);
                    memset(back, 0xff, (size_t)numel * sizeof(float));
                    CU_ASSERT_EQUAL(ct_ckpt_reader_read(readers[g], u, unit_names[u], k, lo, hi,
                                                        back, &covered),
                                    CT_OK);
                    CU_ASSERT_EQUAL(covered, hi - lo);
                    CU_ASSERT_EQUAL(memcmp(back, state[u][k] + lo, (size_t)(hi - lo) * 4), 0);
                }
                memset(back, 0xff, (size_t)numel * sizeof(float));
                CU_ASSERT_EQUAL(ct_ckpt_read_range(readers, n, u, unit_names[u], k, 0, numel, back),
                                CT_OK);
                CU_ASSERT_EQUAL(memcmp(back, state[u][k], (size_t)numel * sizeof(float)), 0);
                free(back);
            }
        for (int g = 0; g < n; g++)
            CU_ASSERT_EQUAL(ct_ckpt_reader_verify(readers[g]), CT_OK);
        close_world(n, readers);
        remove_temp_dir();
    }
}

/* Saved at 4 ranks, read as 3 would own it: ranges span frames of two files. */
static void test_reshard_4_to_3_reads_across_files(void) {
    int entries[4];
    make_temp_dir();
    write_world(4, CT_CKPT_SHUFFLE_AUTO, entries);
    ct_ckpt_reader *readers[4];
    open_world(4, readers);
    for (int u = 0; u < N_UNITS; u++)
        for (int k = 0; k < CT_CKPT_KIND_COUNT; k++)
            for (int g = 0; g < 3; g++) {
                int64_t lo, hi;
                owned_range(unit_numel[u], 3, g, &lo, &hi);
                float *back = malloc((size_t)(hi - lo) * sizeof(float) + 4);
                memset(back, 0xff, (size_t)(hi - lo) * sizeof(float));
                CU_ASSERT_EQUAL(ct_ckpt_read_range(readers, 4, u, unit_names[u], k, lo, hi, back),
                                CT_OK);
                CU_ASSERT_EQUAL(memcmp(back, state[u][k] + lo, (size_t)(hi - lo) * 4), 0);
                free(back);
            }
    /* Unit 3 (4099): old S = 1025, new S = 1367. New rank 0's [0, 1367) takes 1025 elements
     * from file 0 and 342 from file 1, none from files 2 and 3. */
    float back[1367];
    int64_t expect[4] = {1025, 342, 0, 0};
    for (int f = 0; f < 4; f++) {
        int64_t covered = -1;
        CU_ASSERT_EQUAL(
            ct_ckpt_reader_read(readers[f], 3, "h.1", CT_CKPT_ADAM_V, 0, 1367, back, &covered),
            CT_OK);
        CU_ASSERT_EQUAL(covered, expect[f]);
    }
    /* A range past the unit's end is not covered by any file: an error, not garbage. */
    float big[40];
    CU_ASSERT_NOT_EQUAL(ct_ckpt_read_range(readers, 4, 1, "bias", CT_CKPT_PARAMS, 0, 8, big),
                        CT_OK);
    CU_ASSERT(message_has("bias") && message_has("cover only up to element 7"));
    /* Only three of the four files: a hole. */
    CU_ASSERT_NOT_EQUAL(ct_ckpt_read_range(readers, 3, 4, "embed", CT_CKPT_PARAMS, 9250, 9290, big),
                        CT_OK);
    CU_ASSERT(message_has("embed") && message_has("cover only up to element 9261"));
    /* File 0 twice: [0, 10) claimed twice; the second claim starts at 0, where 10 was due. */
    ct_ckpt_reader *twice[2] = {readers[0], readers[0]};
    CU_ASSERT_NOT_EQUAL(ct_ckpt_read_range(twice, 2, 4, "embed", CT_CKPT_PARAMS, 0, 10, big),
                        CT_OK);
    CU_ASSERT(message_has("gap or an overlap at element 10"));
    close_world(4, readers);
    remove_temp_dir();
}

/* Bytes of a file, for the corruption tests. */
static uint8_t *slurp(const char *path, size_t *bytes) {
    FILE *f = fopen(path, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, 0, SEEK_END);
    *bytes = (size_t)ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *data = malloc(*bytes);
    CU_ASSERT_EQUAL(fread(data, 1, *bytes, f), *bytes);
    fclose(f);
    return data;
}

/* One flipped byte inside unit 4's params frame: reading that unit (and verify) fail naming
 * file and unit; reading another unit of the same file still works (only overlapping frames
 * are decoded). */
static void test_flipped_frame_byte_names_file_and_unit(void) {
    int entries[4];
    make_temp_dir();
    write_world(2, CT_CKPT_SHUFFLE_AUTO, entries);
    char path[512];
    ct_ckpt_rank_path(temp_dir, 1, path, sizeof(path));
    ct_ckpt_reader *r = NULL;
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_reader_open(&r, path), CT_OK);
    const ct_ckpt_entry *e = NULL;
    for (int i = 0; i < ct_ckpt_reader_entry_count(r); i++) {
        const ct_ckpt_entry *c = ct_ckpt_reader_entry(r, i);
        if (c->unit == 4 && c->kind == CT_CKPT_PARAMS) e = c;
    }
    CU_ASSERT_PTR_NOT_NULL_FATAL(e);
    uint64_t at = e->offset + CT_CKPT_FRAME_HEADER_BYTES + (e->frame_bytes - 40) / 2;
    int64_t lo = (int64_t)e->lo, hi = (int64_t)e->hi;
    ct_ckpt_reader_close(r);
    size_t bytes;
    uint8_t *data = slurp(path, &bytes);
    data[at] ^= 0x10;
    write_bytes(path, data, bytes);
    free(data);
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_reader_open(&r, path), CT_OK);
    float *back = malloc((size_t)(hi - lo) * sizeof(float));
    int64_t covered;
    CU_ASSERT_NOT_EQUAL(ct_ckpt_reader_read(r, 4, "embed", CT_CKPT_PARAMS, lo, hi, back, &covered),
                        CT_OK);
    CU_ASSERT(message_has(path) && message_has("unit 4 (embed) params"));
    CU_ASSERT_NOT_EQUAL(ct_ckpt_reader_verify(r), CT_OK);
    CU_ASSERT(message_has(path) && message_has("unit 4"));
    int64_t lo3, hi3;
    owned_range(unit_numel[3], 2, 1, &lo3, &hi3);
    CU_ASSERT_EQUAL(ct_ckpt_reader_read(r, 3, "h.1", CT_CKPT_PARAMS, lo3, hi3, back, &covered),
                    CT_OK);
    CU_ASSERT_EQUAL(memcmp(back, state[3][0] + lo3, (size_t)(hi3 - lo3) * 4), 0);
    free(back);
    ct_ckpt_reader_close(r);
    remove_temp_dir();
}

/* Truncation, a changed format version, a damaged index, reserved bytes that are not zero:
 * open fails naming the file. */
static void test_truncated_versioned_index_damage_fail_open(void) {
    int entries[4];
    make_temp_dir();
    write_world(1, CT_CKPT_SHUFFLE_AUTO, entries);
    char path[512];
    ct_ckpt_rank_path(temp_dir, 0, path, sizeof(path));
    size_t bytes;
    uint8_t *good = slurp(path, &bytes);
    ct_ckpt_reader *r = NULL;
    /* Cut anywhere: the trailer no longer matches the file's size. */
    size_t cuts[3] = {bytes - 1, bytes / 2, 10};
    for (int c = 0; c < 3; c++) {
        write_bytes(path, good, cuts[c]);
        CU_ASSERT_NOT_EQUAL(ct_ckpt_reader_open(&r, path), CT_OK);
        CU_ASSERT(message_has(path) && message_has("truncated"));
        CU_ASSERT_PTR_NULL(r);
    }
    uint8_t *bad = malloc(bytes);
    memcpy(bad, good, bytes);
    ct_ckpt_put_u32(bad + 4, CT_CKPT_FORMAT_VERSION + 1);
    write_bytes(path, bad, bytes);
    CU_ASSERT_NOT_EQUAL(ct_ckpt_reader_open(&r, path), CT_OK);
    char newer[64];
    snprintf(newer, sizeof(newer), "format version %d", CT_CKPT_FORMAT_VERSION + 1);
    CU_ASSERT(message_has(path) && message_has(newer));
    memcpy(bad, good, bytes);
    bad[bytes - CT_CKPT_TRAILER_BYTES - 3] ^= 1; /* inside the last index entry */
    write_bytes(path, bad, bytes);
    CU_ASSERT_NOT_EQUAL(ct_ckpt_reader_open(&r, path), CT_OK);
    CU_ASSERT(message_has(path) && message_has("index checksum"));
    /* Reserved bytes that are not zero: another version's file (the index's checksum is
     * recomputed, as such a writer would), or a damaged header. */
    for (int at = 20; at < CT_CKPT_FILE_HEADER_BYTES; at += 11) {
        memcpy(bad, good, bytes);
        bad[at] = 0x5a;
        write_bytes(path, bad, bytes);
        CU_ASSERT_NOT_EQUAL(ct_ckpt_reader_open(&r, path), CT_OK);
        char needle[64];
        snprintf(needle, sizeof(needle), "reserved header byte at offset %d is 0x5a", at);
        CU_ASSERT(message_has(path) && message_has(needle));
        CU_ASSERT_PTR_NULL(r);
    }
    memcpy(bad, good, bytes);
    size_t index_bytes = (size_t)entries[0] * CT_CKPT_INDEX_ENTRY_BYTES;
    uint8_t *index = bad + bytes - CT_CKPT_TRAILER_BYTES - index_bytes;
    index[CT_CKPT_INDEX_ENTRY_BYTES + 61] = 1; /* entry 1 */
    ct_ckpt_put_u64(bad + bytes - CT_CKPT_TRAILER_BYTES + 16, ct_hash64(index, index_bytes, 0));
    write_bytes(path, bad, bytes);
    CU_ASSERT_NOT_EQUAL(ct_ckpt_reader_open(&r, path), CT_OK);
    CU_ASSERT(message_has(path) && message_has("index entry 1") &&
              message_has("reserved bytes 60-63 are not zero"));
    /* The intact bytes open again: the failures above came from the damage. */
    write_bytes(path, good, bytes);
    CU_ASSERT_EQUAL(ct_ckpt_reader_open(&r, path), CT_OK);
    ct_ckpt_reader_close(r);
    free(bad), free(good);
    remove_temp_dir();
}

/* Rank files checked against their manifest entries (built from what the writers returned):
 * a match passes; a swapped rank, another size or another checksum fails naming the file. */
static void test_rank_files_match_manifest(void) {
    make_temp_dir();
    ct_ckpt_rank_file files[2];
    for (int g = 0; g < 2; g++) {
        char path[512];
        ct_ckpt_rank_path(temp_dir, g, path, sizeof(path));
        ct_ckpt_writer *w = NULL;
        CU_ASSERT_EQUAL_FATAL(ct_ckpt_writer_open(&w, path, g, 2, 1, CT_CKPT_SHUFFLE_AUTO), CT_OK);
        int64_t lo, hi;
        owned_range(unit_numel[2], 2, g, &lo, &hi);
        CU_ASSERT_EQUAL(ct_ckpt_writer_add(w, 2, CT_CKPT_PARAMS, lo, hi, state[2][0] + lo), CT_OK);
        snprintf(files[g].file, sizeof(files[g].file), "rank_%05d.ctk", g);
        CU_ASSERT_EQUAL_FATAL(ct_ckpt_writer_close(w, &files[g].file_bytes, &files[g].checksum),
                              CT_OK);
    }
    ct_ckpt_manifest m = {
        .format_version = CT_CKPT_FORMAT_VERSION, .world_size = 2, .ranks = files};
    ct_ckpt_reader *r[2];
    open_world(2, r);
    CU_ASSERT_EQUAL(ct_ckpt_check_rank_file(&m, 0, r[0]), CT_OK);
    CU_ASSERT_EQUAL(ct_ckpt_check_rank_file(&m, 1, r[1]), CT_OK);
    CU_ASSERT_NOT_EQUAL(ct_ckpt_check_rank_file(&m, 0, r[1]), CT_OK);
    CU_ASSERT(message_has("rank_00001.ctk") && message_has("written by rank 1 of 2"));
    files[1].file_bytes += 1;
    CU_ASSERT_NOT_EQUAL(ct_ckpt_check_rank_file(&m, 1, r[1]), CT_OK);
    CU_ASSERT(message_has("rank_00001.ctk") && message_has("bytes, the manifest says"));
    files[1].file_bytes -= 1;
    files[1].checksum ^= 1;
    CU_ASSERT_NOT_EQUAL(ct_ckpt_check_rank_file(&m, 1, r[1]), CT_OK);
    CU_ASSERT(message_has("rank_00001.ctk") && message_has("checksum"));
    close_world(2, r);
    remove_temp_dir();
}

/* Format version 1 (FNV-1a frame checksums), what checkpoints saved before version 2 hold:
 * files written with the version 1 switch say version 1 in the file and frame headers, open
 * and verify, carry the spec's FNV-1a checksums, read back bitwise (also a range across both
 * files, as a reshard reads), and check against a version 1 manifest but not a version 2 one. */
static void test_version1_files_load_and_verify(void) {
    enum { N = 2 };
    make_temp_dir();
    ct_ckpt_rank_file files[N];
    for (int g = 0; g < N; g++) {
        char path[512];
        ct_ckpt_rank_path(temp_dir, g, path, sizeof(path));
        ct_ckpt_writer *w = NULL;
        CU_ASSERT_EQUAL_FATAL(ct_ckpt_writer_open(&w, path, g, N, 1, CT_CKPT_SHUFFLE_AUTO), CT_OK);
        ct_ckpt_writer_set_version(w, 1);
        for (int u = 0; u < N_UNITS; u++)
            for (int k = 0; k < CT_CKPT_KIND_COUNT; k++) {
                int64_t lo, hi;
                owned_range(unit_numel[u], N, g, &lo, &hi);
                CU_ASSERT_EQUAL(ct_ckpt_writer_add(w, u, k, lo, hi, state[u][k] + lo), CT_OK);
            }
        snprintf(files[g].file, sizeof(files[g].file), "rank_%05d.ctk", g);
        CU_ASSERT_EQUAL_FATAL(ct_ckpt_writer_close(w, &files[g].file_bytes, &files[g].checksum),
                              CT_OK);
        size_t bytes;
        uint8_t *raw = slurp(path, &bytes);
        CU_ASSERT_EQUAL(ct_ckpt_get_u32(raw + 4), 1);                             /* file */
        CU_ASSERT_EQUAL(ct_ckpt_get_u32(raw + CT_CKPT_FILE_HEADER_BYTES + 4), 1); /* frame 0 */
        free(raw);
    }
    ct_ckpt_reader *r[N];
    open_world(N, r);
    for (int g = 0; g < N; g++) {
        CU_ASSERT_EQUAL(ct_ckpt_reader_version(r[g]), 1);
        CU_ASSERT_EQUAL(ct_ckpt_reader_verify(r[g]), CT_OK);
        for (int i = 0; i < ct_ckpt_reader_entry_count(r[g]); i++) {
            const ct_ckpt_entry *e = ct_ckpt_reader_entry(r[g], i);
            CU_ASSERT_EQUAL(e->checksum,
                            ct_hash64(state[e->unit][e->kind] + e->lo, e->raw_bytes, 0));
        }
    }
    float *back = malloc((size_t)unit_numel[N_UNITS - 1] * sizeof(float));
    for (int u = 0; u < N_UNITS; u++)
        for (int k = 0; k < CT_CKPT_KIND_COUNT; k++) {
            int64_t lo = unit_numel[u] / 3, hi = unit_numel[u]; /* starts inside rank 0's */
            CU_ASSERT_EQUAL(ct_ckpt_read_range(r, N, u, unit_names[u], k, lo, hi, back), CT_OK);
            CU_ASSERT_EQUAL(memcmp(back, state[u][k] + lo, (size_t)(hi - lo) * sizeof(float)), 0);
        }
    free(back);
    ct_ckpt_manifest m = {.format_version = 1, .world_size = N, .ranks = files};
    for (int g = 0; g < N; g++)
        CU_ASSERT_EQUAL(ct_ckpt_check_rank_file(&m, g, r[g]), CT_OK);
    m.format_version = 2;
    CU_ASSERT_NOT_EQUAL(ct_ckpt_check_rank_file(&m, 0, r[0]), CT_OK);
    CU_ASSERT(message_has("rank_00000.ctk") &&
              message_has("format version 1, the manifest says 2"));
    close_world(N, r);
    remove_temp_dir();
}

/* Readers and writers return every byte they take (no leak on the error paths either). */
static void test_no_memory_left_behind(void) {
    ct_mem_stats before, after;
    ct_mem_get_stats(&before);
    test_truncated_versioned_index_damage_fail_open();
    test_flipped_frame_byte_names_file_and_unit();
    ct_mem_get_stats(&after);
    CU_ASSERT_EQUAL(after.current_bytes[CT_MEM_OTHER], before.current_bytes[CT_MEM_OTHER]);
}

int main(void) {
    make_state();
    const ct_test_case cases[] = {
        {"test_shuffle_chosen_when_smaller", test_shuffle_chosen_when_smaller},
        {"test_frame_rejects_bad_sizes", test_frame_rejects_bad_sizes},
        {"test_codec_reused_across_sizes_kinds_and_threads",
         test_codec_reused_across_sizes_kinds_and_threads},
        {"test_damaged_large_frame_fails_with_threads",
         test_damaged_large_frame_fails_with_threads},
        {"test_round_trip_bitwise_world1to4", test_round_trip_bitwise_world1to4},
        {"test_reshard_4_to_3_reads_across_files", test_reshard_4_to_3_reads_across_files},
        {"test_flipped_frame_byte_names_file_and_unit",
         test_flipped_frame_byte_names_file_and_unit},
        {"test_truncated_versioned_index_damage_fail_open",
         test_truncated_versioned_index_damage_fail_open},
        {"test_rank_files_match_manifest", test_rank_files_match_manifest},
        {"test_version1_files_load_and_verify", test_version1_files_load_and_verify},
        {"test_no_memory_left_behind", test_no_memory_left_behind},
    };
    int rc = ct_test_run("checkpoint_storage", cases, (int)CT_ARRAY_LEN(cases));
    free_state();
    return rc;
}
