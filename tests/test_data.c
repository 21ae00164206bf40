/*
 * Tests of the sampler: batches against the formula of data.h worked by hand, every rank and
 * micro-batch at world sizes 1..3 with wrap-around and a sequence spanning two shards, the
 * shuffle (a permutation per epoch, fixed by seed and epoch), and batch hashes. Each test
 * writes its own shards into a fresh temporary directory.
 */
/* nftw() */
#define _GNU_SOURCE

#include "data/data.h"
#include "tests/test_data_util.h"
#include "tests/test_temp_dir.h"
#include "tests/test_util.h"

#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- the formula */

static void test_num_sequences_counts_whole_overlapping_sequences(void) {
    make_temp_dir();
    ct_data_dataset *ds = open_two_shard_stream();
    CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
    CU_ASSERT_EQUAL(ct_data_num_tokens(ds), 21);
    CU_ASSERT_EQUAL(ct_data_num_shards(ds), 2);
    CU_ASSERT_EQUAL(ct_data_num_sequences(ds, 4), 5);  /* last one is tokens 16..20 */
    CU_ASSERT_EQUAL(ct_data_num_sequences(ds, 5), 4);  /* 15..20 */
    CU_ASSERT_EQUAL(ct_data_num_sequences(ds, 20), 1); /* needs all 21 */
    CU_ASSERT_EQUAL(ct_data_num_sequences(ds, 21), 0);
    ct_data_close(ds);
    remove_temp_dir();
}

typedef struct {
    int world, batch, accum, rank, micro;
    int64_t step;
    int first_token[3]; /* of each sequence of the micro-batch (T = 4, 100 + position) */
} formula_case;

/* Worked by hand from data.h: G = W*B*A per step, global index s*G + r*B*A + m*B + b, mod 5
 * sequences, sequence i = tokens 4i..4i+4, token value 100 + position. */
static const formula_case formula_cases[] = {
    {1, 2, 1, 0, 0, 0, {100, 104}},      /* step 0: sequences 0, 1 */
    {1, 2, 1, 0, 0, 1, {108, 112}},      /* step 1: 2 (spans the two files), 3 */
    {1, 2, 1, 0, 0, 2, {116, 100}},      /* step 2: 4, then wraps to 0 */
    {1, 2, 1, 0, 0, 3, {104, 108}},      /* step 3: globals 6, 7 -> 1, 2 */
    {2, 1, 2, 0, 1, 0, {104}},           /* rank 0 micro 1: global 1 */
    {2, 1, 2, 1, 0, 0, {108}},           /* rank 1 micro 0: global 2 */
    {2, 1, 2, 1, 0, 1, {104}},           /* step 1 (G=4): global 4+2 = 6 -> 1 */
    {2, 1, 2, 1, 1, 1, {108}},           /* global 7 -> 2 */
    {3, 1, 1, 0, 0, 1, {112}},           /* G=3: global 3 */
    {3, 1, 1, 2, 0, 1, {100}},           /* global 5 -> wraps to 0 */
    {3, 3, 1, 1, 0, 2, {104, 108, 112}}, /* G=9: globals 18+3 .. 18+5 = 21..23 -> 1, 2, 3 */
};

static void test_sequential_batches_follow_formula(void) {
    make_temp_dir();
    ct_data_dataset *ds = open_two_shard_stream();
    CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
    for (size_t c = 0; c < CT_ARRAY_LEN(formula_cases); c++) {
        const formula_case *fc = &formula_cases[c];
        ct_data_sampler s = {4, fc->batch, fc->accum, fc->world, fc->rank, false, 0};
        int32_t in[3 * 4], tg[3 * 4];
        memset(in, 0, sizeof(in));
        memset(tg, 0, sizeof(tg));
        CU_ASSERT_EQUAL_FATAL(ct_data_get_batch(ds, &s, fc->step, fc->micro, in, tg), CT_OK);
        for (int b = 0; b < fc->batch; b++)
            for (int t = 0; t < 4; t++) {
                CU_ASSERT_EQUAL(in[b * 4 + t], fc->first_token[b] + t);
                CU_ASSERT_EQUAL(tg[b * 4 + t], fc->first_token[b] + t + 1);
            }
    }
    ct_data_close(ds);
    remove_temp_dir();
}

/* The same formula swept over every world size 1..3, rank, micro-batch, batch size, grad_accum
 * and enough steps to wrap around the 5 sequences several times. */
static void test_every_rank_and_micro_batch_reads_its_block_world1_to_3(void) {
    make_temp_dir();
    ct_data_dataset *ds = open_two_shard_stream();
    CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
    int checked = 0;
    for (int w = 1; w <= 3; w++)
        for (int bs = 1; bs <= 2; bs++)
            for (int acc = 1; acc <= 2; acc++)
                for (int r = 0; r < w; r++)
                    for (int m = 0; m < acc; m++)
                        for (int64_t step = 0; step < 7; step++) {
                            ct_data_sampler s = {4, bs, acc, w, r, false, 0};
                            int32_t in[8], tg[8];
                            CU_ASSERT_EQUAL_FATAL(ct_data_get_batch(ds, &s, step, m, in, tg),
                                                  CT_OK);
                            for (int b = 0; b < bs; b++) {
                                int64_t g = step * w * bs * acc + r * bs * acc + m * bs + b;
                                int first = 100 + (int)(g % 5) * 4;
                                for (int t = 0; t < 4; t++) {
                                    CU_ASSERT_EQUAL(in[b * 4 + t], first + t);
                                    CU_ASSERT_EQUAL(tg[b * 4 + t], first + t + 1);
                                }
                                checked++;
                            }
                        }
    CU_ASSERT_EQUAL(checked, 7 * (1 + 2 + 3) * (1 + 2) * (1 + 2)); /* steps*ranks*B*(A micros) */
    ct_data_close(ds);
    remove_temp_dir();
}

static void test_get_batch_allocates_nothing(void) {
    make_temp_dir();
    ct_data_dataset *ds = open_two_shard_stream();
    CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
    ct_data_sampler s = {4, 2, 1, 1, 0, true, 7};
    int32_t in[8], tg[8];
    ct_mem_stats before, after;
    ct_mem_get_stats(&before);
    for (int64_t step = 0; step < 10; step++)
        CU_ASSERT_EQUAL(ct_data_get_batch(ds, &s, step, 0, in, tg), CT_OK);
    ct_mem_get_stats(&after);
    CU_ASSERT_EQUAL(after.allocations, before.allocations);
    ct_data_close(ds);
    remove_temp_dir();
}

/* ---------------------------------------------------------------- shuffling */

/* A dataset of n_seq sequences at T = 2 whose token at position p is p, so a batch's first
 * input names its sequence (first / 2). */
static ct_data_dataset *open_numbered_sequences(uint64_t n_seq) {
    uint64_t n_tokens = n_seq * 2 + 1;
    CU_ASSERT_FATAL(n_tokens <= 65536);
    uint16_t *tokens = malloc(n_tokens * sizeof(uint16_t));
    CU_ASSERT_PTR_NOT_NULL_FATAL(tokens);
    for (uint64_t p = 0; p < n_tokens; p++)
        tokens[p] = (uint16_t)p;
    char path[512];
    CU_ASSERT_EQUAL(
        ct_data_write_shard(temp_path(path, sizeof(path), "n_000000.bin"), tokens, n_tokens),
        CT_OK);
    free(tokens);
    ct_status status;
    ct_data_dataset *ds = open_in_temp("n_*.bin", CT_DATA_FORMAT_LLMC, 65536, &status);
    CU_ASSERT_EQUAL(status, CT_OK);
    CU_ASSERT_EQUAL(ct_data_num_sequences(ds, 2), n_seq);
    return ds;
}

/* order[g] = the sequence that global index g reads, for g < n_global, gathered from every
 * rank and micro-batch of a W=3, B=2, A=2 layout so the layout and the permutation are both
 * exercised. */
static void shuffled_order(const ct_data_dataset *ds, uint64_t seed, uint64_t n_global,
                           uint64_t *order) {
    const int w = 3, bs = 2, acc = 2, per_step = w * bs * acc;
    for (int64_t step = 0; (uint64_t)step * per_step < n_global; step++)
        for (int r = 0; r < w; r++)
            for (int m = 0; m < acc; m++) {
                ct_data_sampler s = {2, bs, acc, w, r, true, seed};
                int32_t in[4], tg[4];
                CU_ASSERT_EQUAL_FATAL(ct_data_get_batch(ds, &s, step, m, in, tg), CT_OK);
                for (int b = 0; b < bs; b++) {
                    uint64_t g = (uint64_t)step * per_step + (uint64_t)(r * bs * acc + m * bs + b);
                    CU_ASSERT_EQUAL(in[b * 2] % 2, 0); /* starts on a sequence boundary */
                    CU_ASSERT_EQUAL(in[b * 2 + 1], in[b * 2] + 1);
                    CU_ASSERT_EQUAL(tg[b * 2 + 1], in[b * 2] + 2);
                    if (g < n_global) order[g] = (uint64_t)in[b * 2] / 2;
                }
            }
}

static bool is_permutation(const uint64_t *order, uint64_t n) {
    bool *seen = calloc(n, sizeof(bool));
    bool ok = seen != NULL;
    for (uint64_t i = 0; ok && i < n; i++) {
        ok = order[i] < n && !seen[order[i]];
        if (ok) seen[order[i]] = true;
    }
    free(seen);
    return ok;
}

static void test_shuffle_visits_every_sequence_once_per_epoch(void) {
    /* 333 and 30000 are not powers of two, so the cycle-walking is exercised; 1 and 2 are the
     * degenerate sizes. */
    const uint64_t sizes[] = {1, 2, 333, 30000};
    for (size_t k = 0; k < CT_ARRAY_LEN(sizes); k++) {
        make_temp_dir();
        uint64_t n = sizes[k];
        ct_data_dataset *ds = open_numbered_sequences(n);
        CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
        uint64_t *order = malloc(3 * n * sizeof(uint64_t));
        CU_ASSERT_PTR_NOT_NULL_FATAL(order);
        shuffled_order(ds, 1234, 3 * n, order);
        for (int epoch = 0; epoch < 3; epoch++)
            CU_ASSERT(is_permutation(order + epoch * n, n));
        if (n >= 333) {
            CU_ASSERT(memcmp(order, order + n, n * sizeof(uint64_t)) != 0); /* epochs differ */
            CU_ASSERT(memcmp(order + n, order + 2 * n, n * sizeof(uint64_t)) != 0);
            uint64_t fixed = 0; /* a random permutation fixes about one point */
            for (uint64_t i = 0; i < n; i++)
                fixed += order[i] == i;
            CU_ASSERT(fixed < 10);
        }
        free(order);
        ct_data_close(ds);
        remove_temp_dir();
    }
}

static void test_shuffle_order_depends_only_on_seed_and_epoch(void) {
    make_temp_dir();
    const uint64_t n = 333;
    ct_data_dataset *ds = open_numbered_sequences(n);
    CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
    uint64_t a[2 * 333], b[2 * 333], c[2 * 333];
    shuffled_order(ds, 42, 2 * n, a);
    ct_data_close(ds);
    ds = open_numbered_sequences(n); /* a fresh open: nothing is carried over */
    CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
    shuffled_order(ds, 42, 2 * n, b);
    shuffled_order(ds, 43, 2 * n, c);
    CU_ASSERT(memcmp(a, b, sizeof(a)) == 0);
    CU_ASSERT(memcmp(a, c, n * sizeof(uint64_t)) != 0);
    CU_ASSERT(memcmp(a + n, c + n, n * sizeof(uint64_t)) != 0);
    /* a later step alone reads what the whole run read there (resume needs only the step) */
    ct_data_sampler s = {2, 1, 1, 1, 0, true, 42};
    int32_t in[2], tg[2];
    CU_ASSERT_EQUAL(ct_data_get_batch(ds, &s, (int64_t)n + 17, 0, in, tg), CT_OK);
    CU_ASSERT_EQUAL((uint64_t)in[0] / 2, a[n + 17]);
    ct_data_close(ds);
    remove_temp_dir();
}

/* ---------------------------------------------------------------- batch hashes */

static void test_batch_hash_equal_for_equal_batches_and_differs_across_steps(void) {
    make_temp_dir();
    ct_data_dataset *ds = open_two_shard_stream();
    CU_ASSERT_PTR_NOT_NULL_FATAL(ds);
    ct_data_sampler s = {4, 1, 1, 1, 0, false, 0};
    uint64_t h0 = ct_data_batch_hash(ds, &s, 0);
    CU_ASSERT_NOT_EQUAL(h0, 0);
    CU_ASSERT_EQUAL(ct_data_batch_hash(ds, &s, 0), h0);
    CU_ASSERT_NOT_EQUAL(ct_data_batch_hash(ds, &s, 1), h0);
    CU_ASSERT_NOT_EQUAL(ct_data_batch_hash(ds, &s, 2), ct_data_batch_hash(ds, &s, 1));
    /* with one sequence per step the 5 sequences come back every 5 steps: same batch */
    CU_ASSERT_EQUAL(ct_data_batch_hash(ds, &s, 5), h0);
    /* the hash covers the global batch, so every rank computes the same one */
    ct_data_sampler w3r0 = {4, 1, 1, 3, 0, false, 0}, w3r2 = {4, 1, 1, 3, 2, false, 0};
    CU_ASSERT_EQUAL(ct_data_batch_hash(ds, &w3r0, 1), ct_data_batch_hash(ds, &w3r2, 1));
    /* against shuffled batches: the hashes are equal exactly when the tokens of both ranks,
     * in rank order, are (the shuffle of 5 sequences sometimes gives step 0 the same two) */
    int32_t plain[2][2][4], in[4], tg[4];
    for (int r = 0; r < 2; r++) {
        ct_data_sampler w2 = {4, 1, 1, 2, r, false, 0};
        CU_ASSERT_EQUAL_FATAL(ct_data_get_batch(ds, &w2, 0, 0, plain[r][0], plain[r][1]), CT_OK);
    }
    ct_data_sampler w2 = {4, 1, 1, 2, 0, false, 0};
    uint64_t plain_hash = ct_data_batch_hash(ds, &w2, 0);
    int differing = 0;
    for (uint64_t seed = 1; seed <= 20; seed++) {
        bool same = true;
        for (int r = 0; r < 2; r++) {
            ct_data_sampler sh = {4, 1, 1, 2, r, true, seed};
            CU_ASSERT_EQUAL_FATAL(ct_data_get_batch(ds, &sh, 0, 0, in, tg), CT_OK);
            same = same && memcmp(in, plain[r][0], sizeof(in)) == 0 &&
                   memcmp(tg, plain[r][1], sizeof(tg)) == 0;
        }
        ct_data_sampler sh = {4, 1, 1, 2, 0, true, seed};
        CU_ASSERT_EQUAL(ct_data_batch_hash(ds, &sh, 0) == plain_hash, same);
        differing += !same;
    }
    CU_ASSERT(differing >= 10); /* the comparison above saw different batches */
    ct_data_close(ds);
    remove_temp_dir();
}

static void test_batch_hash_depends_on_tokens_not_files(void) {
    make_temp_dir();
    /* the same 21-token stream as one file instead of two hashes the same */
    write_counting_shard("one_000000.bin", 100, 21);
    /* and a stream differing in one token (position 13, in sequence 3) hashes differently */
    uint16_t tokens[21];
    for (int p = 0; p < 21; p++)
        tokens[p] = (uint16_t)(100 + p);
    tokens[13] = 7;
    char path[512];
    CU_ASSERT_EQUAL(
        ct_data_write_shard(temp_path(path, sizeof(path), "odd_000000.bin"), tokens, 21), CT_OK);
    /* and one differing only in the last token, which is a target and never an input */
    tokens[13] = 113;
    tokens[20] = 7;
    CU_ASSERT_EQUAL(
        ct_data_write_shard(temp_path(path, sizeof(path), "end_000000.bin"), tokens, 21), CT_OK);
    ct_data_dataset *two = open_two_shard_stream();
    ct_status st1, st2;
    ct_data_dataset *one = open_in_temp("one_*.bin", CT_DATA_FORMAT_LLMC, 256, &st1);
    ct_data_dataset *odd = open_in_temp("odd_*.bin", CT_DATA_FORMAT_LLMC, 256, &st2);
    ct_data_dataset *end = open_in_temp("end_*.bin", CT_DATA_FORMAT_LLMC, 256, &st2);
    CU_ASSERT_FATAL(two && one && odd && end);
    ct_data_sampler s = {4, 2, 1, 1, 0, false, 0}; /* step 1: sequences 2 and 3 */
    CU_ASSERT_EQUAL(ct_data_batch_hash(one, &s, 1), ct_data_batch_hash(two, &s, 1));
    CU_ASSERT_NOT_EQUAL(ct_data_batch_hash(odd, &s, 1), ct_data_batch_hash(two, &s, 1));
    CU_ASSERT_EQUAL(ct_data_batch_hash(odd, &s, 0), ct_data_batch_hash(two, &s, 0));     /* 0, 1 */
    CU_ASSERT_NOT_EQUAL(ct_data_batch_hash(end, &s, 2), ct_data_batch_hash(two, &s, 2)); /* 4 */
    CU_ASSERT_EQUAL(ct_data_batch_hash(end, &s, 1), ct_data_batch_hash(two, &s, 1));
    ct_data_close(end);
    ct_data_close(two);
    ct_data_close(one);
    ct_data_close(odd);
    remove_temp_dir();
}

int main(void) {
    const ct_test_case cases[] = {
        {"num_sequences_counts_whole_overlapping_sequences",
         test_num_sequences_counts_whole_overlapping_sequences},
        {"sequential_batches_follow_formula", test_sequential_batches_follow_formula},
        {"every_rank_and_micro_batch_reads_its_block_world1_to_3",
         test_every_rank_and_micro_batch_reads_its_block_world1_to_3},
        {"get_batch_allocates_nothing", test_get_batch_allocates_nothing},
        {"shuffle_visits_every_sequence_once_per_epoch",
         test_shuffle_visits_every_sequence_once_per_epoch},
        {"shuffle_order_depends_only_on_seed_and_epoch",
         test_shuffle_order_depends_only_on_seed_and_epoch},
        {"batch_hash_equal_for_equal_batches_and_differs_across_steps",
         test_batch_hash_equal_for_equal_batches_and_differs_across_steps},
        {"batch_hash_depends_on_tokens_not_files", test_batch_hash_depends_on_tokens_not_files},
    };
    return ct_test_run("data_sampler", cases, (int)CT_ARRAY_LEN(cases));
}
