/*
 * The sampler: which sequences of the token stream a rank trains on at a step.
 *
 * Everything is a pure function of (step, rank, micro-batch, seed), with no state carried from
 * one step to the next, so a resumed run needs only the step to read what the uninterrupted
 * run read, and any rank can compute any other rank's batch (ct_data_batch_hash does, to check
 * that ranks agree). The layout (see data.h): G = world_size * batch_size * grad_accum
 * sequences per step; step s takes global sequences s*G .. s*G+G-1; rank r the r-th block of
 * batch_size*grad_accum of them; micro-batch m the m-th block of batch_size within that.
 *
 * Global sequence g falls in epoch g / N (N whole sequences in the data) at position g % N.
 * Without shuffling that position is the sequence. With shuffling it goes through a
 * permutation of 0..N-1 chosen by (seed, epoch): a Feistel network on the smallest even number
 * of bits that covers N, made a permutation of 0..N-1 by cycle-walking (apply it again until
 * the value is below N). That needs no per-epoch table, so it costs no memory for datasets of
 * billions of sequences and nothing to set up when an epoch begins.
 */
#include "data/data.h"

#include <inttypes.h>
#include <string.h>

#define SHUFFLE_PURPOSE 0x73687566666c65ULL /* "shuffle": the ct_rng_key purpose */
#define FEISTEL_ROUNDS 6 /* 4 rounds already make a pseudo-random permutation (Luby-Rackoff) */
#define HASH_CHUNK_TOKENS 256

/* ---------------------------------------------------------------- the permutation */

typedef struct {
    uint64_t n;    /* permute 0..n-1 */
    int half_bits; /* the Feistel network works on 2*half_bits bits */
    uint64_t round_keys[FEISTEL_ROUNDS];
} shuffle_perm;

static void shuffle_perm_init(shuffle_perm *perm, uint64_t n, uint64_t seed, uint64_t epoch) {
    perm->n = n;
    int bits = n > 1 ? 64 - __builtin_clzll(n - 1) : 1; /* bits of the largest value, n-1 */
    perm->half_bits = (bits + 1) / 2;                   /* so the domain 4^half < 4n */
    for (int r = 0; r < FEISTEL_ROUNDS; r++)
        perm->round_keys[r] = ct_rng_key(seed, SHUFFLE_PURPOSE, epoch, (uint64_t)r);
}

/* One pass of the Feistel network: a bijection on [0, 2^(2*half_bits)) whatever the round
 * function, because each round only xors one half with a function of the other. */
static uint64_t feistel(const shuffle_perm *perm, uint64_t x) {
    const int h = perm->half_bits;
    const uint64_t mask = (1ULL << h) - 1; /* h <= 32 */
    uint64_t left = x >> h, right = x & mask;
    for (int r = 0; r < FEISTEL_ROUNDS; r++) {
        uint64_t next = left ^ (ct_rng_u64(perm->round_keys[r], right) & mask);
        left = right;
        right = next;
    }
    return (left << h) | right;
}

/* Cycle-walking: i < n lies on a cycle of the bijection, which comes back to i, so walking
 * from i reaches a value < n; the first one met defines a bijection on 0..n-1. The domain is
 * under 4n, so about 4 steps on average. */
static uint64_t shuffle_perm_apply(const shuffle_perm *perm, uint64_t i) {
    if (perm->n <= 1) return i;
    uint64_t x = i;
    do {
        x = feistel(perm, x);
    } while (x >= perm->n);
    return x;
}

/* ---------------------------------------------------------------- helpers */

static ct_status check_sampler(const ct_data_dataset *dataset, const ct_data_sampler *s) {
    if (s->seq_len < 1 || s->batch_size < 1 || s->grad_accum < 1 || s->world_size < 1)
        return ct_error(CT_ERR_INVALID,
                        "data sampler: seq_len %d, batch_size %d, grad_accum %d and world_size %d "
                        "must all be >= 1",
                        s->seq_len, s->batch_size, s->grad_accum, s->world_size);
    if (s->rank < 0 || s->rank >= s->world_size)
        return ct_error(CT_ERR_INVALID, "data sampler: rank %d is outside 0..%d", s->rank,
                        s->world_size - 1);
    if (ct_data_num_sequences(dataset, s->seq_len) == 0)
        return ct_error(CT_ERR_INVALID,
                        "%s: dataset too short for one sequence: %d file(s) hold %" PRIu64
                        " tokens, one sequence needs seq_len + 1 = %d",
                        ct_data_shard_path(dataset, 0), ct_data_num_shards(dataset),
                        ct_data_num_tokens(dataset), s->seq_len + 1);
    return CT_OK;
}

/* The first global sequence of `step`: step * G, where G sequences make one step. */
static ct_status step_first_sequence(const ct_data_sampler *s, int64_t step, uint64_t *first) {
    uint64_t per_step = (uint64_t)s->world_size * (uint64_t)s->batch_size * (uint64_t)s->grad_accum;
    if (step < 0 || (uint64_t)step > UINT64_MAX / per_step - 1)
        return ct_error(CT_ERR_INVALID, "data sampler: step %" PRId64 " is out of range", step);
    *first = (uint64_t)step * per_step;
    return CT_OK;
}

/* The token position where global sequence g starts. The permutation's round keys are
 * derived again only when the epoch changes: a batch seldom crosses an epoch boundary, so that
 * costs one comparison per sequence. */
static uint64_t sequence_start(const ct_data_sampler *s, uint64_t n_seq, uint64_t g,
                               shuffle_perm *perm, uint64_t *perm_epoch) {
    uint64_t epoch = g / n_seq, i = g % n_seq;
    if (s->shuffle) {
        if (epoch != *perm_epoch) {
            shuffle_perm_init(perm, n_seq, s->seed, epoch);
            *perm_epoch = epoch;
        }
        i = shuffle_perm_apply(perm, i);
    }
    return i * (uint64_t)s->seq_len;
}

/* ---------------------------------------------------------------- public */

uint64_t ct_data_num_sequences(const ct_data_dataset *dataset, int seq_len) {
    uint64_t n = ct_data_num_tokens(dataset);
    if (seq_len < 1 || n < (uint64_t)seq_len + 1) return 0;
    /* sequence i needs tokens up to i*T + T inclusive: i*T + T + 1 <= n */
    return (n - 1) / (uint64_t)seq_len;
}

ct_status ct_data_get_batch(const ct_data_dataset *dataset, const ct_data_sampler *sampler,
                            int64_t step, int micro, int32_t *inputs, int32_t *targets) {
    CT_CHECK(check_sampler(dataset, sampler));
    if (micro < 0 || micro >= sampler->grad_accum)
        return ct_error(CT_ERR_INVALID, "data sampler: micro-batch %d is outside 0..%d", micro,
                        sampler->grad_accum - 1);
    uint64_t first = 0;
    CT_CHECK(step_first_sequence(sampler, step, &first));
    const uint64_t T = (uint64_t)sampler->seq_len;
    const uint64_t per_rank = (uint64_t)sampler->batch_size * (uint64_t)sampler->grad_accum;
    first += (uint64_t)sampler->rank * per_rank + (uint64_t)micro * sampler->batch_size;
    const uint64_t n_seq = ct_data_num_sequences(dataset, sampler->seq_len);
    shuffle_perm perm;
    uint64_t perm_epoch = UINT64_MAX;
    for (int b = 0; b < sampler->batch_size; b++) {
        uint64_t start = sequence_start(sampler, n_seq, first + (uint64_t)b, &perm, &perm_epoch);
        int32_t *in = inputs + (size_t)b * T, *tg = targets + (size_t)b * T;
        /* inputs are tokens [start, start+T), targets the same shifted by one: read T into the
         * inputs, copy the overlap, then read the one token only the targets have */
        CT_CHECK(ct_data_read_tokens(dataset, start, T, in));
        memcpy(tg, in + 1, (size_t)(T - 1) * sizeof(int32_t));
        CT_CHECK(ct_data_read_tokens(dataset, start + T, 1, tg + T - 1));
    }
    return CT_OK;
}

uint64_t ct_data_batch_hash(const ct_data_dataset *dataset, const ct_data_sampler *sampler,
                            int64_t step) {
    uint64_t first = 0;
    if (check_sampler(dataset, sampler) != CT_OK) return 0;
    if (step_first_sequence(sampler, step, &first) != CT_OK) return 0;
    const uint64_t T = (uint64_t)sampler->seq_len;
    const uint64_t per_step = (uint64_t)sampler->world_size * (uint64_t)sampler->batch_size *
                              (uint64_t)sampler->grad_accum;
    const uint64_t n_seq = ct_data_num_sequences(dataset, sampler->seq_len);
    shuffle_perm perm;
    uint64_t perm_epoch = UINT64_MAX;
    int32_t chunk[HASH_CHUNK_TOKENS];
    uint64_t hash = 0x6461746168617368ULL; /* "datahash" */
    /* global sequences in order are rank 0's micro-batches in order, then rank 1's, ... */
    for (uint64_t j = 0; j < per_step; j++) {
        uint64_t start = sequence_start(sampler, n_seq, first + j, &perm, &perm_epoch);
        for (uint64_t done = 0; done < T + 1;) {
            uint64_t n = CT_MIN((uint64_t)HASH_CHUNK_TOKENS, T + 1 - done);
            /* out-of-vocabulary tokens are hashed as they are (see data.h), so ignore that
             * status; the range is always inside the stream */
            (void)ct_data_read_tokens(dataset, start + done, n, chunk);
            hash = ct_hash64(chunk, (size_t)n * sizeof(int32_t), hash);
            done += n;
        }
    }
    return hash;
}
