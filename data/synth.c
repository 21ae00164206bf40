/*
 * A synthetic dataset that a model can learn, for tests, benchmarks and demos that must not
 * depend on downloaded text.
 *
 * The stream is a sparse Markov chain: each token t has 4 successors, drawn at random once
 * from the vocabulary by the seed, taken with probabilities 1/2, 1/4, 1/8, 1/8. The next-token
 * entropy given the previous token is then at most 1.75 bits, against log2(vocab_size) for a
 * model that has learnt nothing (8 bits at vocabulary 256), so a falling loss is easy to see
 * and the floor it should reach is known. Everything comes from the counter-based generator,
 * so the same seed writes byte-identical files on any machine, and no successor table is
 * stored: successor k of t is a hash of (seed, t, k). The shards are written as one set
 * (data.h): checked against the free space first, put in place only when all are written, and
 * replacing an earlier prepare's or synth's shards in the folder.
 */
#include "data/data.h"

#include <inttypes.h>
#include <stdio.h>

#define SYNTH_PURPOSE_TABLE 0x73796e7468746162ULL  /* the successor sets */
#define SYNTH_PURPOSE_STREAM 0x73796e746873747aULL /* the walk through them */
#define SYNTH_SUCCESSORS 4

/* Successor k (0..3) of token `prev`. */
static uint16_t successor(uint64_t table_key, uint32_t prev, int k, uint32_t vocab) {
    uint64_t r = ct_rng_u64(table_key, (uint64_t)prev * SYNTH_SUCCESSORS + (uint64_t)k);
    return (uint16_t)(r % vocab); /* the bias of % is below vocab / 2^64: irrelevant */
}

/* Which successor to take, from one random draw: 0 with p 1/2, 1 with 1/4, 2 and 3 with 1/8. */
static int pick_successor(uint64_t r) {
    if (r & 1) return 0;
    if (r & 2) return 1;
    return (r & 4) ? 2 : 3;
}

/* Writes <split>_NNNNNN.bin shards of `set` holding `n_tokens` tokens of the walk keyed by
 * `stream_key`, through `buffer` (room for `capacity` tokens). */
static ct_status write_walk(ct_data_shard_set *set, const char *split, uint64_t n_tokens,
                            uint32_t vocab, uint64_t table_key, uint64_t stream_key,
                            uint16_t *buffer, uint64_t capacity) {
    uint32_t prev = (uint32_t)(ct_rng_u64(stream_key, 0) % vocab);
    uint64_t done = 0;
    for (int index = 0; done < n_tokens; index++) {
        uint64_t n = CT_MIN(capacity, n_tokens - done);
        for (uint64_t i = 0; i < n; i++) {
            uint64_t pos = done + i;
            if (pos > 0) {
                int k = pick_successor(ct_rng_u64(stream_key, pos));
                prev = successor(table_key, prev, k, vocab);
            }
            buffer[i] = (uint16_t)prev;
        }
        CT_CHECK(ct_data_shard_set_write(set, split, index, buffer, n));
        done += n;
    }
    return CT_OK;
}

ct_status ct_data_synth(const char *out_dir, uint64_t n_tokens, int vocab_size, uint64_t seed) {
    if (vocab_size < 2 || vocab_size > 65536)
        return ct_error(CT_ERR_INVALID,
                        "data synth: vocab_size %d is outside 2..65536 (tokens are uint16)",
                        vocab_size);
    if (n_tokens < 1) return ct_error(CT_ERR_INVALID, "data synth: n_tokens must be >= 1");
    /* Shard numbers have 6 digits; the bound also keeps every byte count below 2^64. */
    const uint64_t max_tokens = CT_DATA_MAX_SHARDS * CT_DATA_SHARD_MAX_TOKENS;
    if (n_tokens > max_tokens)
        return ct_error(CT_ERR_INVALID,
                        "data synth: %" PRIu64 " tokens is more than the %" PRIu64
                        " (%d shards of %llu) one split can hold",
                        n_tokens, max_tokens, CT_DATA_MAX_SHARDS, CT_DATA_SHARD_MAX_TOKENS);
    const uint64_t val_tokens = (n_tokens + 9) / 10; /* 10% of train, at least one token */
    const uint64_t capacity = CT_MIN(n_tokens, CT_DATA_SHARD_MAX_TOKENS);
    uint64_t write_bytes =
        ct_data_shards_bytes(n_tokens, capacity) + ct_data_shards_bytes(val_tokens, capacity);
    ct_data_shard_set *set = NULL;
    CT_CHECK(ct_data_shard_set_new(&set, out_dir, write_bytes));
    size_t buffer_bytes = (size_t)capacity * sizeof(uint16_t);
    uint16_t *buffer = ct_alloc(CT_MEM_DATA, buffer_bytes);
    if (!buffer) {
        ct_data_shard_set_abort(set);
        return ct_error(CT_ERR_NOMEM, "data synth: a shard buffer of %zu bytes", buffer_bytes);
    }
    const uint32_t vocab = (uint32_t)vocab_size;
    const uint64_t table_key = ct_rng_key(seed, SYNTH_PURPOSE_TABLE, 0, 0);
    /* train and val walk the same chain (so val measures the same task) on different draws */
    ct_status status = write_walk(set, "train", n_tokens, vocab, table_key,
                                  ct_rng_key(seed, SYNTH_PURPOSE_STREAM, 0, 0), buffer, capacity);
    if (status == CT_OK)
        status = write_walk(set, "val", val_tokens, vocab, table_key,
                            ct_rng_key(seed, SYNTH_PURPOSE_STREAM, 1, 0), buffer, capacity);
    if (status == CT_OK)
        status = ct_data_shard_set_commit(set);
    else
        ct_data_shard_set_abort(set);
    ct_free(CT_MEM_DATA, buffer, buffer_bytes);
    return status;
}
