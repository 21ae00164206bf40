/*
 * Tests of the shard makers: `data prepare` (UTF-8 text -> byte tokens, the train/val split,
 * shard sizes, refusal of text that is not UTF-8) and `data synth` (deterministic for a seed,
 * and learnable: the next token given the previous one has low entropy), and how both treat
 * the folder: a new run replaces an earlier run's shards, a failed one (bad input, a full
 * disk) leaves them as they were, a run larger than the free space writes nothing. Each test
 * works in a fresh temporary directory.
 */
/* nftw() */
#define _GNU_SOURCE

#include "data/data.h"
#include "tests/test_data_util.h"
#include "tests/test_temp_dir.h"
#include "tests/test_util.h"

#include <dirent.h>
#include <errno.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>

/* ---------------------------------------------------------------- helpers */

/* Reads every token of temp_dir/pattern (llm.c shards, vocab 256 unless told) into a malloc'd
 * array; *count gets how many, *shards how many files. */
static int32_t *read_all(const char *pattern, int vocab, uint64_t *count, int *shards) {
    char path[512];
    ct_data_dataset *ds = NULL;
    CU_ASSERT_EQUAL_FATAL(
        ct_data_open(&ds, temp_path(path, sizeof(path), pattern), CT_DATA_FORMAT_LLMC, vocab),
        CT_OK);
    *count = ct_data_num_tokens(ds);
    *shards = ct_data_num_shards(ds);
    int32_t *tokens = malloc(*count * sizeof(int32_t));
    CU_ASSERT_PTR_NOT_NULL_FATAL(tokens);
    CU_ASSERT_EQUAL(ct_data_read_tokens(ds, 0, *count, tokens), CT_OK);
    ct_data_close(ds);
    return tokens;
}

static bool tokens_equal_bytes(const int32_t *tokens, const char *bytes, size_t n) {
    for (size_t i = 0; i < n; i++)
        if (tokens[i] != (unsigned char)bytes[i]) return false;
    return true;
}

/* Multibyte UTF-8 of every length: 2 (é, ö), 3 (—, 日本語) and 4 (🎉) bytes. */
static const char utf8_text[] = "héllo wörld — 日本語 🎉 byte-level tokens\n"
                                "second line, ünïcödé again: ∑ 𝔘 ✓\n";

/* ---------------------------------------------------------------- prepare */

static void test_prepare_round_trips_utf8_bytes_and_splits_val(void) {
    make_temp_dir();
    char in[512], out[512];
    const size_t n = sizeof(utf8_text) - 1;
    write_bytes(temp_path(in, sizeof(in), "input.txt"), utf8_text, n);
    const char *files[] = {in};
    /* into a directory that does not exist yet, two levels deep (mkdir -p) */
    CU_ASSERT_EQUAL_FATAL(ct_data_prepare(files, 1, temp_path(out, sizeof(out), "a/b"), 0.1),
                          CT_OK);
    const size_t val = (size_t)(n * 0.1); /* the last floor(10%) of the bytes */
    uint64_t count;
    int shards;
    int32_t *train = read_all("a/b/train_*.bin", 256, &count, &shards);
    CU_ASSERT_EQUAL(count, n - val);
    CU_ASSERT_EQUAL(shards, 1);
    CU_ASSERT(tokens_equal_bytes(train, utf8_text, n - val));
    free(train);
    int32_t *valid = read_all("a/b/val_*.bin", 256, &count, &shards);
    CU_ASSERT_EQUAL(count, val);
    CU_ASSERT(tokens_equal_bytes(valid, utf8_text + (n - val), val));
    free(valid);
    remove_temp_dir();
}

/* Input larger than the 64 KiB read chunk: multibyte characters straddle chunk boundaries
 * (the UTF-8 check carries its state across them) and the split falls inside a chunk. */
static void test_prepare_streams_input_larger_than_a_read_chunk(void) {
    make_temp_dir();
    /* 3+3+3+4+1 = 14 bytes: the chunk boundaries at 65536 and 131072 fall 2 and 4 bytes into
     * a unit, inside the 3-byte characters */
    const char *unit = "日本語🎉|";
    const size_t unit_bytes = strlen(unit), n = 150001;
    char *text = malloc(n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(text);
    for (size_t i = 0; i < n - 1; i++)
        text[i] = unit[i % unit_bytes];
    text[n - 1] = '\n';
    text[n - 2] = '.'; /* the last unit is cut: end on whole characters */
    for (size_t i = n - 2; i > 0 && (unsigned char)text[i - 1] >= 0x80; i--)
        text[i - 1] = '.';
    char in[512], out[512];
    write_bytes(temp_path(in, sizeof(in), "big.txt"), text, n);
    const char *files[] = {in};
    CU_ASSERT_EQUAL_FATAL(
        ct_data_prepare_sharded(files, 1, temp_path(out, sizeof(out), "o"), 0.3, 40000), CT_OK);
    const size_t val = (size_t)(n * 0.3);
    uint64_t count;
    int shards;
    int32_t *train = read_all("o/train_*.bin", 256, &count, &shards);
    CU_ASSERT_EQUAL(count, n - val);
    CU_ASSERT_EQUAL(shards, 3); /* 105001 tokens: 40000 + 40000 + 25001 */
    CU_ASSERT(tokens_equal_bytes(train, text, n - val));
    free(train);
    int32_t *valid = read_all("o/val_*.bin", 256, &count, &shards);
    CU_ASSERT_EQUAL(count, val);
    CU_ASSERT_EQUAL(shards, 2);
    CU_ASSERT(tokens_equal_bytes(valid, text + (n - val), val));
    free(valid);
    free(text);
    remove_temp_dir();
}

/* Several files are one stream, cut into shards of the given size, the split falling inside
 * the second file. */
static void test_prepare_concatenates_files_into_bounded_shards(void) {
    make_temp_dir();
    char a[512], b[512], out[512];
    const char *part_a = "first file: ñ\n", *part_b = "second file: 日本 and more text here\n";
    write_bytes(temp_path(a, sizeof(a), "a.txt"), part_a, strlen(part_a));
    write_bytes(temp_path(b, sizeof(b), "b.txt"), part_b, strlen(part_b));
    char all[256];
    snprintf(all, sizeof(all), "%s%s", part_a, part_b);
    const size_t n = strlen(all), val = (size_t)(n * 0.25);
    const char *files[] = {a, b};
    CU_ASSERT_EQUAL_FATAL(
        ct_data_prepare_sharded(files, 2, temp_path(out, sizeof(out), "out"), 0.25, 7), CT_OK);
    uint64_t count;
    int shards;
    int32_t *train = read_all("out/train_*.bin", 256, &count, &shards);
    CU_ASSERT_EQUAL(count, n - val);
    CU_ASSERT_EQUAL(shards, (int)((n - val + 6) / 7)); /* full shards of 7, then the rest */
    CU_ASSERT(tokens_equal_bytes(train, all, n - val));
    free(train);
    int32_t *valid = read_all("out/val_*.bin", 256, &count, &shards);
    CU_ASSERT_EQUAL(count, val);
    CU_ASSERT_EQUAL(shards, (int)((val + 6) / 7));
    CU_ASSERT(tokens_equal_bytes(valid, all + (n - val), val));
    free(valid);
    remove_temp_dir();
}

static void test_prepare_refuses_invalid_utf8_naming_file_and_offset(void) {
    make_temp_dir();
    struct {
        const char *bytes;
        const char *expect;
    } cases[] = {
        {"abc\xC3\x28z", "byte 0x28 at byte offset 4"},              /* continuation missing */
        {"ok \xC0\xAF", "byte 0xC0 at byte offset 3"},               /* overlong '/' */
        {"x\xED\xA0\x80", "byte 0xA0 at byte offset 2"},             /* a UTF-16 surrogate */
        {"\xF4\x90\x80\x80", "byte 0x90 at byte offset 1"},          /* above U+10FFFF */
        {"tail \xE6\x97", "character that starts at byte offset 5"}, /* cut at the end */
    };
    char in[512], out[512];
    for (size_t c = 0; c < CT_ARRAY_LEN(cases); c++) {
        write_bytes(temp_path(in, sizeof(in), "bad.txt"), cases[c].bytes, strlen(cases[c].bytes));
        const char *files[] = {in};
        ct_error_clear();
        CU_ASSERT_EQUAL(ct_data_prepare(files, 1, temp_path(out, sizeof(out), "o"), 0.0),
                        CT_ERR_FORMAT);
        CU_ASSERT(message_has("bad.txt") && message_has(cases[c].expect));
    }
    /* a missing input and an impossible fraction are errors too */
    const char *missing[] = {temp_path(in, sizeof(in), "missing.txt")};
    CU_ASSERT_EQUAL(ct_data_prepare(missing, 1, out, 0.1), CT_ERR_IO);
    CU_ASSERT(message_has("missing.txt"));
    write_bytes(temp_path(in, sizeof(in), "good.txt"), "good", 4);
    const char *good[] = {in};
    CU_ASSERT_EQUAL(ct_data_prepare(good, 1, out, 1.0), CT_ERR_INVALID);
    remove_temp_dir();
}

/* The names in temp_dir/sub, sorted, one per line, into out; plus each file's size. */
static const char *listing(const char *sub, char *out, size_t bytes) {
    char dir[512], names[64][256];
    int n = 0;
    DIR *d = opendir(temp_path(dir, sizeof(dir), sub));
    CU_ASSERT_PTR_NOT_NULL_FATAL(d);
    for (struct dirent *e; (e = readdir(d)) != NULL;)
        if (e->d_name[0] != '.' && n < 64) snprintf(names[n++], sizeof(names[0]), "%s", e->d_name);
    closedir(d);
    qsort(names, (size_t)n, sizeof(names[0]), (int (*)(const void *, const void *))strcmp);
    size_t len = 0;
    out[0] = '\0';
    for (int i = 0; i < n && len < bytes; i++) {
        char path[1024];
        struct stat st;
        snprintf(path, sizeof(path), "%.500s/%.255s", dir, names[i]);
        CU_ASSERT_FATAL(stat(path, &st) == 0);
        len +=
            (size_t)snprintf(out + len, bytes - len, "%s %lld\n", names[i], (long long)st.st_size);
    }
    return out;
}

/* A second prepare into the same folder (--val 0, one shard) removes the first one's shards
 * that it does not write (val_*, train_000001...), and no other file. */
static void test_prepare_replaces_an_earlier_prepares_shards(void) {
    make_temp_dir();
    char in[512], out[512], other[512], list[2048];
    write_bytes(temp_path(in, sizeof(in), "in.txt"), utf8_text, sizeof(utf8_text) - 1);
    const char *files[] = {in};
    CU_ASSERT_EQUAL_FATAL(
        ct_data_prepare_sharded(files, 1, temp_path(out, sizeof(out), "o"), 0.3, 40), CT_OK);
    write_bytes(temp_path(other, sizeof(other), "o/notes.txt"), "keep", 4);
    write_bytes(temp_path(other, sizeof(other), "o/train_extra.bin"), "keep", 4);
    write_bytes(temp_path(other, sizeof(other), "o/val_000009.bin.tmp"), "crashed", 7);
    CU_ASSERT(strstr(listing("o", list, sizeof(list)), "val_000000.bin") != NULL);
    CU_ASSERT(strstr(list, "train_000001.bin") != NULL);
    CU_ASSERT_EQUAL_FATAL(ct_data_prepare(files, 1, out, 0.0), CT_OK);
    char want[256];
    snprintf(want, sizeof(want), "notes.txt 4\ntrain_000000.bin %zu\ntrain_extra.bin 4\n",
             1024 + 2 * (sizeof(utf8_text) - 1));
    CU_ASSERT_STRING_EQUAL(listing("o", list, sizeof(list)), want);
    remove_temp_dir();
}

/* A prepare that fails (invalid UTF-8 in its second file, after shards of the first were
 * written) and a synth that fails (a full disk: a file size limit makes writes fail with
 * EFBIG, as ENOSPC would) leave the folder exactly as the earlier prepare left it. */
static void test_failed_prepare_and_synth_leave_the_folder_as_it_was(void) {
    make_temp_dir();
    char in[512], bad[512], out[512], before[2048], after[2048];
    write_bytes(temp_path(in, sizeof(in), "in.txt"), utf8_text, sizeof(utf8_text) - 1);
    write_bytes(temp_path(bad, sizeof(bad), "bad.txt"), "ok \xC0\xAF", 5);
    const char *good[] = {in}, *files[] = {in, bad};
    CU_ASSERT_EQUAL_FATAL(
        ct_data_prepare_sharded(good, 1, temp_path(out, sizeof(out), "o"), 0.5, 30), CT_OK);
    uint64_t count;
    int shards;
    int32_t *first = read_all("o/train_*.bin", 256, &count, &shards);
    listing("o", before, sizeof(before));
    CU_ASSERT_EQUAL(ct_data_prepare_sharded(files, 2, out, 0.0, 7), CT_ERR_FORMAT);
    CU_ASSERT(message_has("bad.txt"));
    CU_ASSERT_STRING_EQUAL(listing("o", after, sizeof(after)), before);
    struct rlimit saved, small;
    CU_ASSERT_FATAL(getrlimit(RLIMIT_FSIZE, &saved) == 0);
    small = saved;
    small.rlim_cur = 4096; /* 5000 tokens take 11024 bytes */
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    CU_ASSERT_FATAL(setrlimit(RLIMIT_FSIZE, &small) == 0);
    ct_status st = ct_data_synth(out, 5000, 256, 1);
    CU_ASSERT_FATAL(setrlimit(RLIMIT_FSIZE, &saved) == 0);
    signal(SIGXFSZ, old_handler);
    CU_ASSERT_EQUAL(st, CT_ERR_IO);
    CU_ASSERT(message_has("train_000000.bin.tmp") && message_has(strerror(EFBIG)));
    CU_ASSERT_STRING_EQUAL(listing("o", after, sizeof(after)), before);
    uint64_t count_after;
    int32_t *again = read_all("o/train_*.bin", 256, &count_after, &shards);
    CU_ASSERT(count_after == count && memcmp(first, again, count * sizeof(int32_t)) == 0);
    free(first), free(again);
    remove_temp_dir();
}

/* ---------------------------------------------------------------- synth */

/* A token count beyond the free space is refused before anything is written, with both
 * numbers; one beyond any file system (or 2^64 bytes) is refused as absurd. */
static void test_synth_refuses_more_than_the_free_space(void) {
    make_temp_dir();
    char dir[512], list[256];
    ct_error_clear();
    CU_ASSERT_EQUAL(ct_data_synth(temp_path(dir, sizeof(dir), "s"), 99999999999999ULL, 256, 1),
                    CT_ERR_IO);
    /* train: 10^14 - 1 tokens in 10^6 shards; val: 10^13 in 10^5; 2 bytes a token, 1024 a header */
    CU_ASSERT(message_has("the shards take 220001126399998 bytes, the file system has") &&
              message_has("bytes free: nothing written"));
    CU_ASSERT_STRING_EQUAL(listing("s", list, sizeof(list)), "");
    CU_ASSERT_EQUAL(ct_data_synth(dir, UINT64_MAX, 256, 1), CT_ERR_INVALID);
    CU_ASSERT(message_has("18446744073709551615 tokens is more than the 100000000000000"));
    remove_temp_dir();
}

static void test_synth_is_deterministic_for_a_seed(void) {
    make_temp_dir();
    char d1[512], d2[512], d3[512];
    CU_ASSERT_EQUAL_FATAL(ct_data_synth(temp_path(d1, sizeof(d1), "s1"), 5000, 256, 7), CT_OK);
    CU_ASSERT_EQUAL_FATAL(ct_data_synth(temp_path(d2, sizeof(d2), "s2"), 5000, 256, 7), CT_OK);
    CU_ASSERT_EQUAL_FATAL(ct_data_synth(temp_path(d3, sizeof(d3), "s3"), 5000, 256, 8), CT_OK);
    const char *names[] = {"train_*.bin", "val_*.bin"};
    const uint64_t sizes[] = {5000, 500}; /* val is 10% of train */
    for (int k = 0; k < 2; k++) {
        char p1[600], p2[600], p3[600];
        snprintf(p1, sizeof(p1), "s1/%s", names[k]);
        snprintf(p2, sizeof(p2), "s2/%s", names[k]);
        snprintf(p3, sizeof(p3), "s3/%s", names[k]);
        uint64_t n1, n2, n3;
        int shards;
        int32_t *t1 = read_all(p1, 256, &n1, &shards), *t2 = read_all(p2, 256, &n2, &shards);
        int32_t *t3 = read_all(p3, 256, &n3, &shards);
        CU_ASSERT(n1 == sizes[k] && n2 == sizes[k] && n3 == sizes[k]);
        CU_ASSERT(memcmp(t1, t2, n1 * sizeof(int32_t)) == 0);
        CU_ASSERT(memcmp(t1, t3, n1 * sizeof(int32_t)) != 0);
        free(t1);
        free(t2);
        free(t3);
    }
    remove_temp_dir();
}

/* Entropies in nats from counts: H(next | prev) and H(next). */
static void entropies(const int32_t *t, uint64_t n, int vocab, double *conditional,
                      double *marginal) {
    uint64_t *pair = calloc((size_t)vocab * vocab, sizeof(uint64_t));
    uint64_t *prev = calloc((size_t)vocab, sizeof(uint64_t));
    uint64_t *next = calloc((size_t)vocab, sizeof(uint64_t));
    CU_ASSERT_FATAL(pair && prev && next);
    for (uint64_t i = 1; i < n; i++) {
        pair[(size_t)t[i - 1] * vocab + t[i]]++;
        prev[t[i - 1]]++;
        next[t[i]]++;
    }
    const double total = (double)(n - 1);
    *conditional = *marginal = 0;
    for (int a = 0; a < vocab; a++) {
        if (next[a]) *marginal -= next[a] / total * log(next[a] / total);
        for (int b = 0; b < vocab; b++) {
            uint64_t c = pair[(size_t)a * vocab + b];
            if (c) *conditional -= c / total * log((double)c / prev[a]);
        }
    }
    free(pair);
    free(prev);
    free(next);
}

static void test_synth_next_token_is_predictable_from_previous(void) {
    make_temp_dir();
    char dir[512];
    const uint64_t n = 400000;
    CU_ASSERT_EQUAL_FATAL(ct_data_synth(temp_path(dir, sizeof(dir), "s"), n, 256, 123), CT_OK);
    uint64_t count;
    int shards;
    int32_t *t = read_all("s/train_*.bin", 256, &count, &shards);
    CU_ASSERT_EQUAL_FATAL(count, n);
    double h_cond, h_marg;
    entropies(t, count, 256, &h_cond, &h_marg);
    printf("\n  H(next|prev) = %.3f nats, H(next) = %.3f nats, log(256) = %.3f\n", h_cond, h_marg,
           log(256.0));
    /* the chain's entropy is at most 1.75 bits = 1.213 nats (less where two of a token's 4
     * successors coincide); the plug-in estimate from 400k pairs over ~1024 cells is biased
     * low by ~cells/(2n) = 0.001, so 1.25 nats bounds it with room, and is far below the 5.545
     * of an unlearnable stream */
    CU_ASSERT(h_cond < 1.25);
    CU_ASSERT(h_cond > 0.8); /* it is random: each token has several successors */
    /* and the stream is not a trivial cycle: most of the vocabulary is in use */
    CU_ASSERT(h_marg > 0.8 * log(256.0));
    free(t);
    remove_temp_dir();
}

int main(void) {
    const ct_test_case cases[] = {
        {"prepare_round_trips_utf8_bytes_and_splits_val",
         test_prepare_round_trips_utf8_bytes_and_splits_val},
        {"prepare_streams_input_larger_than_a_read_chunk",
         test_prepare_streams_input_larger_than_a_read_chunk},
        {"prepare_concatenates_files_into_bounded_shards",
         test_prepare_concatenates_files_into_bounded_shards},
        {"prepare_refuses_invalid_utf8_naming_file_and_offset",
         test_prepare_refuses_invalid_utf8_naming_file_and_offset},
        {"prepare_replaces_an_earlier_prepares_shards",
         test_prepare_replaces_an_earlier_prepares_shards},
        {"failed_prepare_and_synth_leave_the_folder_as_it_was",
         test_failed_prepare_and_synth_leave_the_folder_as_it_was},
        {"synth_refuses_more_than_the_free_space", test_synth_refuses_more_than_the_free_space},
        {"synth_is_deterministic_for_a_seed", test_synth_is_deterministic_for_a_seed},
        {"synth_next_token_is_predictable_from_previous",
         test_synth_next_token_is_predictable_from_previous},
    };
    return ct_test_run("data_tools", cases, (int)CT_ARRAY_LEN(cases));
}
