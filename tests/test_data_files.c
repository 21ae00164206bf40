/*
 * Tests of reading shards: both file formats, positions past 32 bits, and the message of every
 * bad input (each must name the file, and the byte offset where there is one). Each test writes
 * its own files into a fresh temporary directory.
 */
/* nftw() */
#define _GNU_SOURCE

#include "data/data.h"
#include "tests/test_data_util.h"
#include "tests/test_temp_dir.h"
#include "tests/test_util.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---------------------------------------------------------------- formats and sizes */

static void test_nanogpt_headerless_shards_read_as_tokens(void) {
    make_temp_dir();
    uint16_t tokens[9] = {5, 6, 7, 8, 9, 10, 11, 12, 13};
    char path[512];
    write_bytes(temp_path(path, sizeof(path), "ng_a.bin"), tokens, 4 * sizeof(uint16_t));
    write_bytes(temp_path(path, sizeof(path), "ng_b.bin"), tokens + 4, 5 * sizeof(uint16_t));
    ct_status status;
    ct_data_dataset *ds = open_in_temp("ng_*.bin", CT_DATA_FORMAT_NANOGPT, 50257, &status);
    CU_ASSERT_EQUAL_FATAL(status, CT_OK);
    CU_ASSERT_EQUAL(ct_data_num_tokens(ds), 9);
    ct_data_sampler s = {3, 1, 1, 1, 0, false, 0};
    int32_t in[3], tg[3];
    CU_ASSERT_EQUAL(ct_data_get_batch(ds, &s, 1, 0, in, tg), CT_OK); /* tokens 3..6 */
    CU_ASSERT(in[0] == 8 && in[1] == 9 && in[2] == 10);
    CU_ASSERT(tg[0] == 9 && tg[1] == 10 && tg[2] == 11);
    ct_data_close(ds);
    /* the same files read as llm.c shards fail on the header, pointing at nanogpt */
    ds = open_in_temp("ng_*.bin", CT_DATA_FORMAT_LLMC, 50257, &status);
    CU_ASSERT_NOT_EQUAL(status, CT_OK);
    CU_ASSERT(message_has("ng_a.bin") && message_has("nanogpt"));
    remove_temp_dir();
}

/* A sparse headerless file of 2^32 + 16 tokens (8 GiB of address space, a few KiB of disk):
 * positions and byte offsets past 32 bits must be computed in 64 bits. */
static void test_positions_beyond_4g_tokens_use_64_bit_offsets(void) {
    make_temp_dir();
    const uint64_t n_tokens = (1ULL << 32) + 16;
    char path[512];
    temp_path(path, sizeof(path), "big.bin");
    int fd = open(path, O_CREAT | O_WRONLY | O_TRUNC, 0644);
    CU_ASSERT_FATAL(fd >= 0);
    if (ftruncate(fd, (off_t)(n_tokens * 2)) != 0) {
        printf("\n  (skipped: no sparse 8 GiB file in /tmp)\n");
        close(fd);
        remove_temp_dir();
        return;
    }
    uint16_t tail[8] = {1, 2, 3, 4, 5, 6, 7, 300};
    CU_ASSERT_EQUAL(pwrite(fd, tail, sizeof(tail), (off_t)((n_tokens - 8) * 2)),
                    (ssize_t)sizeof(tail));
    close(fd);
    ct_status status;
    ct_data_dataset *ds = open_in_temp("big.bin", CT_DATA_FORMAT_NANOGPT, 256, &status);
    CU_ASSERT_EQUAL_FATAL(status, CT_OK);
    CU_ASSERT_EQUAL(ct_data_num_tokens(ds), n_tokens);
    CU_ASSERT_EQUAL(ct_data_num_sequences(ds, 4), (n_tokens - 1) / 4);
    /* the last sequence starts at 4 * (2^30 + 2) = n_tokens - 8: tokens 1..5 */
    ct_data_sampler s = {4, 1, 1, 1, 0, false, 0};
    int32_t in[4], tg[4];
    int64_t last = (int64_t)((n_tokens - 1) / 4) - 1;
    CU_ASSERT_EQUAL(ct_data_get_batch(ds, &s, last, 0, in, tg), CT_OK);
    CU_ASSERT(in[0] == 1 && in[3] == 4 && tg[3] == 5);
    /* the bad token at position n_tokens - 1 is reported at its byte offset 2^33 + 30 */
    int32_t out[8];
    CU_ASSERT_EQUAL(ct_data_read_tokens(ds, n_tokens - 8, 8, out), CT_ERR_FORMAT);
    CU_ASSERT(message_has("big.bin") && message_has("token 300 at byte offset 8589934622"));
    CU_ASSERT_EQUAL(out[7], 300); /* still filled in full */
    ct_data_close(ds);
    remove_temp_dir();
}

/* ---------------------------------------------------------------- bad input */

/* An llm.c file with the given header fields followed by n tokens of value 1. */
static void write_raw_llmc(const char *name, int32_t magic, int32_t version, int32_t count,
                           size_t n) {
    size_t bytes = 1024 + n * 2;
    unsigned char *buf = calloc(1, bytes);
    CU_ASSERT_PTR_NOT_NULL_FATAL(buf);
    int32_t header[3] = {magic, version, count};
    memcpy(buf, header, sizeof(header));
    for (size_t k = 0; k < n; k++)
        buf[1024 + 2 * k] = 1;
    char path[512];
    write_bytes(temp_path(path, sizeof(path), name), buf, bytes);
    free(buf);
}

/* Opening temp_dir/pattern fails and the message holds each of the strings. */
static void expect_open_fails(const char *pattern, ct_data_format format, const char *s1,
                              const char *s2) {
    ct_status status;
    ct_error_clear();
    ct_data_dataset *ds = open_in_temp(pattern, format, 256, &status);
    CU_ASSERT_NOT_EQUAL(status, CT_OK);
    CU_ASSERT_PTR_NULL(ds);
    CU_ASSERT(message_has(s1));
    CU_ASSERT(message_has(s2));
}

static void test_bad_magic_names_file_and_offset(void) {
    make_temp_dir();
    write_counting_shard("m_000000.bin", 1, 5); /* a good shard first: the bad one is named */
    write_raw_llmc("m_000001.bin", 12345, 1, 5, 5);
    expect_open_fails("m_*.bin", CT_DATA_FORMAT_LLMC, "m_000001.bin: bad magic 12345 at offset 0",
                      "data.format = \"nanogpt\"");
    remove_temp_dir();
}

static void test_wrong_version_names_file_and_offset(void) {
    make_temp_dir();
    write_raw_llmc("v_000000.bin", CT_DATA_SHARD_MAGIC, 2, 5, 5);
    expect_open_fails("v_*.bin", CT_DATA_FORMAT_LLMC, "v_000000.bin", "version 2 at offset 4");
    remove_temp_dir();
}

static void test_truncated_shard_names_file_and_sizes(void) {
    make_temp_dir();
    write_raw_llmc("t_000000.bin", CT_DATA_SHARD_MAGIC, 1, 100, 50);
    expect_open_fails("t_*.bin", CT_DATA_FORMAT_LLMC, "t_000000.bin: truncated",
                      "header says 100 tokens (200 bytes) but file has 100 bytes after the header");
    char path[512]; /* shorter than the header itself */
    write_bytes(temp_path(path, sizeof(path), "h.bin"), "\x50\x2a\x35\x01", 4);
    expect_open_fails("h.bin", CT_DATA_FORMAT_LLMC, "h.bin: truncated", "1024-byte");
    /* a headerless file of an odd number of bytes ends inside a token */
    write_bytes(temp_path(path, sizeof(path), "odd.bin"), "\x01\x00\x02", 3);
    expect_open_fails("odd.bin", CT_DATA_FORMAT_NANOGPT, "odd.bin: truncated", "offset 2");
    remove_temp_dir();
}

static void test_extra_bytes_after_tokens_are_refused(void) {
    make_temp_dir();
    write_raw_llmc("x_000000.bin", CT_DATA_SHARD_MAGIC, 1, 4, 6);
    expect_open_fails("x_*.bin", CT_DATA_FORMAT_LLMC, "x_000000.bin",
                      "4 extra bytes at offset 1032");
    remove_temp_dir();
}

static void test_token_beyond_vocab_names_file_and_byte_offset(void) {
    make_temp_dir();
    write_counting_shard("b_000000.bin", 0, 10);
    uint16_t tokens[11] = {0, 1, 2, 3, 4, 5, 300, 7, 8, 9, 10};
    char path[512];
    CU_ASSERT_EQUAL(ct_data_write_shard(temp_path(path, sizeof(path), "b_000001.bin"), tokens, 11),
                    CT_OK);
    ct_status status;
    ct_data_dataset *ds = open_in_temp("b_*.bin", CT_DATA_FORMAT_LLMC, 256, &status);
    CU_ASSERT_EQUAL_FATAL(status, CT_OK); /* tokens are checked as read, not at open */
    ct_data_sampler s = {4, 1, 1, 1, 0, false, 0};
    int32_t in[4], tg[4];
    /* sequence 2 (tokens 8..12) is clean; sequence 3 (12..16) has position 16 = token 6 of
     * the second file, at byte 1024 + 2*6, as its last target; sequence 4 as its first input */
    CU_ASSERT_EQUAL(ct_data_get_batch(ds, &s, 2, 0, in, tg), CT_OK);
    ct_error_clear();
    CU_ASSERT_EQUAL(ct_data_get_batch(ds, &s, 3, 0, in, tg), CT_ERR_FORMAT);
    CU_ASSERT(message_has("b_000001.bin: token 300 at byte offset 1036 is >= vocab_size 256"));
    ct_error_clear();
    CU_ASSERT_EQUAL(ct_data_get_batch(ds, &s, 4, 0, in, tg), CT_ERR_FORMAT);
    CU_ASSERT(message_has("b_000001.bin: token 300 at byte offset 1036"));
    ct_data_close(ds);
    /* in a headerless file the token sits at byte 2*6; vocab_size itself is out of range */
    tokens[6] = 256;
    write_bytes(temp_path(path, sizeof(path), "nb.bin"), tokens, sizeof(tokens));
    ds = open_in_temp("nb.bin", CT_DATA_FORMAT_NANOGPT, 256, &status);
    CU_ASSERT_EQUAL_FATAL(status, CT_OK);
    ct_error_clear();
    CU_ASSERT_EQUAL(ct_data_get_batch(ds, &s, 1, 0, in, tg), CT_ERR_FORMAT);
    CU_ASSERT(message_has("nb.bin: token 256 at byte offset 12 "));
    ct_data_close(ds);
    remove_temp_dir();
}

static void test_pattern_without_files_names_the_pattern(void) {
    make_temp_dir();
    expect_open_fails("x_*.bin", CT_DATA_FORMAT_LLMC, "no files match", "/x_*.bin'");
    remove_temp_dir();
}

static void test_empty_dataset_is_refused_at_open(void) {
    make_temp_dir();
    write_raw_llmc("e_000000.bin", CT_DATA_SHARD_MAGIC, 1, 0, 0);
    char path[512];
    write_bytes(temp_path(path, sizeof(path), "ne.bin"), "", 0);
    expect_open_fails("e_*.bin", CT_DATA_FORMAT_LLMC, "e_000000.bin", "0 tokens");
    expect_open_fails("ne.bin", CT_DATA_FORMAT_NANOGPT, "ne.bin", "0 tokens");
    remove_temp_dir();
}

/* A FIFO as data.train (or a directory, or a device matched by the glob) is refused naming
 * the path and what it is; opening a FIFO for reading would block until a writer came, so an
 * alarm turns a hang into a failure of this test. */
static void test_fifo_directory_and_device_are_refused_without_blocking(void) {
    make_temp_dir();
    char path[512];
    CU_ASSERT_FATAL(mkfifo(temp_path(path, sizeof(path), "f_000000.bin"), 0600) == 0);
    alarm(20);
    expect_open_fails("f_*.bin", CT_DATA_FORMAT_LLMC, "f_000000.bin", "a FIFO, not a regular file");
    CU_ASSERT_FATAL(mkdir(temp_path(path, sizeof(path), "d_000000.bin"), 0700) == 0);
    expect_open_fails("d_*.bin", CT_DATA_FORMAT_LLMC, "d_000000.bin", "a directory");
    ct_status status;
    ct_data_dataset *ds = NULL;
    status = ct_data_open(&ds, "/dev/null", CT_DATA_FORMAT_NANOGPT, 256);
    CU_ASSERT(status == CT_ERR_IO && ds == NULL);
    CU_ASSERT(message_has("/dev/null: a character device"));
    alarm(0);
    remove_temp_dir();
}

static void test_dataset_shorter_than_one_sequence_names_file(void) {
    make_temp_dir();
    write_counting_shard("short_000000.bin", 0, 4);
    ct_status status;
    ct_data_dataset *ds = open_in_temp("short_*.bin", CT_DATA_FORMAT_LLMC, 256, &status);
    CU_ASSERT_EQUAL_FATAL(status, CT_OK);
    ct_data_sampler s = {4, 1, 1, 1, 0, false, 0};
    int32_t in[4], tg[4];
    ct_error_clear();
    CU_ASSERT_NOT_EQUAL(ct_data_get_batch(ds, &s, 0, 0, in, tg), CT_OK);
    CU_ASSERT(message_has("short_000000.bin") && message_has("too short for one sequence"));
    s.seq_len = 3; /* 4 tokens are exactly one sequence of 3 + 1 */
    CU_ASSERT_EQUAL(ct_data_get_batch(ds, &s, 0, 0, in, tg), CT_OK);
    CU_ASSERT(in[0] == 0 && tg[2] == 3);
    ct_data_close(ds);
    remove_temp_dir();
}

static void test_bad_sampler_settings_are_errors_not_crashes(void) {
    make_temp_dir();
    ct_data_dataset *ds = open_two_shard_stream();
    CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
    int32_t in[8], tg[8];
    ct_data_sampler bad_rank = {4, 1, 1, 2, 2, false, 0}, bad_len = {0, 1, 1, 1, 0, false, 0};
    ct_data_sampler good = {4, 1, 2, 1, 0, false, 0};
    CU_ASSERT_EQUAL(ct_data_get_batch(ds, &bad_rank, 0, 0, in, tg), CT_ERR_INVALID);
    CU_ASSERT(message_has("rank 2"));
    CU_ASSERT_EQUAL(ct_data_get_batch(ds, &bad_len, 0, 0, in, tg), CT_ERR_INVALID);
    CU_ASSERT_EQUAL(ct_data_get_batch(ds, &good, 0, 2, in, tg), CT_ERR_INVALID);
    CU_ASSERT(message_has("micro-batch 2"));
    CU_ASSERT_EQUAL(ct_data_get_batch(ds, &good, -1, 0, in, tg), CT_ERR_INVALID);
    CU_ASSERT_EQUAL(ct_data_batch_hash(ds, &bad_rank, 0), 0);
    ct_data_close(ds);
    remove_temp_dir();
}

int main(void) {
    const ct_test_case cases[] = {
        {"nanogpt_headerless_shards_read_as_tokens", test_nanogpt_headerless_shards_read_as_tokens},
        {"positions_beyond_4g_tokens_use_64_bit_offsets",
         test_positions_beyond_4g_tokens_use_64_bit_offsets},
        {"bad_magic_names_file_and_offset", test_bad_magic_names_file_and_offset},
        {"wrong_version_names_file_and_offset", test_wrong_version_names_file_and_offset},
        {"truncated_shard_names_file_and_sizes", test_truncated_shard_names_file_and_sizes},
        {"extra_bytes_after_tokens_are_refused", test_extra_bytes_after_tokens_are_refused},
        {"token_beyond_vocab_names_file_and_byte_offset",
         test_token_beyond_vocab_names_file_and_byte_offset},
        {"pattern_without_files_names_the_pattern", test_pattern_without_files_names_the_pattern},
        {"empty_dataset_is_refused_at_open", test_empty_dataset_is_refused_at_open},
        {"fifo_directory_and_device_are_refused_without_blocking",
         test_fifo_directory_and_device_are_refused_without_blocking},
        {"dataset_shorter_than_one_sequence_names_file",
         test_dataset_shorter_than_one_sequence_names_file},
        {"bad_sampler_settings_are_errors_not_crashes",
         test_bad_sampler_settings_are_errors_not_crashes},
    };
    return ct_test_run("data_files", cases, (int)CT_ARRAY_LEN(cases));
}
