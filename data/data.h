/*
 * data: token shards, the sampler that turns a step into a batch, and the tools that make
 * shards (byte-level text preparation, a learnable synthetic stream).
 *
 * Shards are llm.c's format (int32 header[256]: magic 20240520, version 1, token count; then
 * uint16 tokens) or nanoGPT's headerless uint16 files. A dataset is a glob of shards read in
 * sorted order and seen as one concatenated token stream, memory-mapped, with 64-bit offsets.
 *
 * Sampling is a pure function of the step: with G = world_size * batch_size * grad_accum
 * sequences per step, step s uses global sequences s*G .. s*G+G-1 (wrapping at the end of the
 * data), where sequence i is tokens [i*T, i*T+T+1) of the stream (inputs are the first T,
 * targets the last T). Rank r takes the r-th contiguous block of batch_size*grad_accum
 * sequences, and micro-batch m within it the m-th block of batch_size. With shuffle on, the
 * global sequence index goes through a permutation that depends only on (seed, epoch).
 */
#ifndef CT_DATA_H
#define CT_DATA_H

#include "common/common.h"

#include <stdbool.h>
#include <stdint.h>

#define CT_DATA_SHARD_MAGIC 20240520
#define CT_DATA_SHARD_VERSION 1
#define CT_DATA_HEADER_INTS 256

typedef enum {
    CT_DATA_FORMAT_LLMC = 0, /* int32 header[256] then uint16 tokens */
    CT_DATA_FORMAT_NANOGPT   /* headerless uint16 tokens */
} ct_data_format;

typedef struct ct_data_dataset ct_data_dataset;

/* Opens every file matching `pattern` (a glob, sorted by name). Checks each header (magic,
 * version, token count against the file size) and fails with a message naming the file and the
 * byte offset of the problem. Token values are checked against vocab_size as batches are read. */
ct_status ct_data_open(ct_data_dataset **dataset, const char *pattern, ct_data_format format,
                       int vocab_size);
void ct_data_close(ct_data_dataset *dataset);
uint64_t ct_data_num_tokens(const ct_data_dataset *dataset);
int ct_data_num_shards(const ct_data_dataset *dataset);
/* The path of shard `index` (0 <= index < ct_data_num_shards), for messages. */
const char *ct_data_shard_path(const ct_data_dataset *dataset, int index);

/* A 64-bit identity of the dataset's contents (its token count and tokens sampled across the
 * whole stream): the same for the same tokens wherever the files are, different when the data
 * changed. Cheap (reads 66 windows of 256 tokens). */
uint64_t ct_data_fingerprint(const ct_data_dataset *dataset);

/* Copies tokens [start, start+count) of the concatenated stream (across shard boundaries) into
 * `out` as int32. Every token is checked against vocab_size: the first one out of range fails
 * with CT_ERR_FORMAT naming its file and byte offset, though `out` is still filled in full.
 * A range past the end of the stream is CT_ERR_INVALID. Allocates nothing. */
ct_status ct_data_read_tokens(const ct_data_dataset *dataset, uint64_t start, uint64_t count,
                              int32_t *out);

typedef struct {
    int seq_len;    /* T */
    int batch_size; /* sequences per micro-batch per rank */
    int grad_accum; /* micro-batches per step */
    int world_size;
    int rank;
    bool shuffle;
    uint64_t seed;
} ct_data_sampler;

/* How many whole sequences of T+1 tokens (overlapping by one) the dataset holds. */
uint64_t ct_data_num_sequences(const ct_data_dataset *dataset, int seq_len);

/* Fills inputs and targets, each (batch_size, T) int32, for micro-batch `micro` of this rank at
 * `step`. Fails, naming the file and byte offset, on a token >= vocab_size or a dataset shorter
 * than one sequence. */
ct_status ct_data_get_batch(const ct_data_dataset *dataset, const ct_data_sampler *sampler,
                            int64_t step, int micro, int32_t *inputs, int32_t *targets);

/* A 64-bit hash of the token ids (all T+1 of each sequence) of the whole global batch of
 * `step`, in rank order: equal hashes mean the same samples in the same order. It hashes the
 * values as stored, without the vocab_size check; 0 (with the error recorded) when the sampler
 * or step is invalid. */
uint64_t ct_data_batch_hash(const ct_data_dataset *dataset, const ct_data_sampler *sampler,
                            int64_t step);

/* Writes one shard in llm.c format, fsynced; a failed write removes the file. */
ct_status ct_data_write_shard(const char *path, const uint16_t *tokens, uint64_t count);

/* The most tokens ct_data_prepare and ct_data_synth put in one shard. */
#define CT_DATA_SHARD_MAX_TOKENS 100000000ULL
/* The most shards of one split: their 6-digit numbers sort by name, as a glob reads them. */
#define CT_DATA_MAX_SHARDS 1000000

/* The shards that ct_data_prepare and ct_data_synth write into one directory, written as a
 * set: each under a temporary name (DIR/train_000000.bin.tmp, which a train_*.bin glob does
 * not match), then all renamed into place by commit, which also removes the shards of an
 * earlier run that this set did not write (DIR/train_NNNNNN.bin and val_NNNNNN.bin and their
 * .tmp; no other file), so a folder never mixes two runs' shards. A failed run aborts: its
 * temporary files go, and the earlier run's shards stay as they were. */
typedef struct ct_data_shard_set ct_data_shard_set;
/* Header and tokens of `tokens` tokens cut into shards of at most `shard_tokens` (>= 1). */
uint64_t ct_data_shards_bytes(uint64_t tokens, uint64_t shard_tokens);
/* Starts a set in `dir` (made if missing) after checking that `write_bytes` (every shard, per
 * ct_data_shards_bytes) fit in the free space of its file system. */
ct_status ct_data_shard_set_new(ct_data_shard_set **set, const char *dir, uint64_t write_bytes);
/* Writes DIR/<split>_<index, 6 digits>.bin.tmp; prints "wrote DIR/<name>: N tokens". */
ct_status ct_data_shard_set_write(ct_data_shard_set *set, const char *split, int index,
                                  const uint16_t *tokens, uint64_t count);
/* Renames every shard into place, removes the earlier run's other shards, frees the set. */
ct_status ct_data_shard_set_commit(ct_data_shard_set *set);
/* Removes the temporary files written so far and frees the set (NULL: nothing). */
void ct_data_shard_set_abort(ct_data_shard_set *set);

/* UTF-8 text files -> byte-level tokens (vocabulary 256) in DIR/train_NNNNNN.bin and
 * DIR/val_NNNNNN.bin; the last `val_fraction` of the bytes of all files goes to validation.
 * Prints what it wrote. */
ct_status ct_data_prepare(const char *const *files, int n_files, const char *out_dir,
                          double val_fraction);
/* ct_data_prepare with at most `shard_tokens` tokens per shard (ct_data_prepare uses
 * CT_DATA_SHARD_MAX_TOKENS; tests use small shards to exercise the split). */
ct_status ct_data_prepare_sharded(const char *const *files, int n_files, const char *out_dir,
                                  double val_fraction, uint64_t shard_tokens);

/* A learnable synthetic token stream (a sparse random Markov chain fixed by the seed) of
 * `n_tokens` tokens over `vocab_size` symbols: DIR/train_000000.bin and DIR/val_000000.bin
 * (val is 10% the size of train). */
ct_status ct_data_synth(const char *out_dir, uint64_t n_tokens, int vocab_size, uint64_t seed);

#endif
