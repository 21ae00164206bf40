/*
 * checkpoint: the storage layer of model and training state on disk, used by the command-line
 * tools and, through checkpoint/sharded.h, by training. In the order of this header:
 *   - llm.c's model file (llmc.c; final weights and model.init_from):
 *     int32 header[256] = {20240326, 3, maxT, V, L, NH, C, Vp, 0...}, then fp32 parameters in
 *     llm.c's order: wte (Vp,C) [rows V..Vp-1 zero], wpe (maxT,C), ln1w (L,C), ln1b (L,C),
 *     qkvw (L,3C,C), qkvb (L,3C), attprojw (L,C,C), attprojb (L,C), ln2w (L,C), ln2b (L,C),
 *     fcw (L,4C,C), fcb (L,4C), fcprojw (L,C,4C), fcprojb (L,C), lnfw (C), lnfb (C);
 *   - frames (zframe.c): a range of floats, optionally byte-shuffled, as zstd frames of 2 MiB
 *     of input with an XXH3-64 checksum (format version 2; version 1's FNV-1a still read);
 *   - rank files (ckpt_file.c): one per rank, header, frames, index, trailer;
 *   - manifest.json (manifest.c, read with jansson) and step directories (ckpt_dir.c);
 *   - whole checkpoints read at any layout (ct_ckpt_step), safetensors (safetensors.c).
 * docs/checkpoints.md has the formats byte by byte.
 */
#ifndef CT_CHECKPOINT_H
#define CT_CHECKPOINT_H

#include "common/common.h"
#include "model/model.h"

#include <stdbool.h>

#define CT_LLMC_MODEL_MAGIC 20240326
#define CT_LLMC_MODEL_VERSION 3

/* Copies every parameter (or, with `grads`, every gradient) in llm.c's order with wte
 * unpadded (V rows) into dest (gpt->num_params floats). The model must be fully bound. */
void ct_ckpt_llmc_pack(const ct_gpt *gpt, bool grads, float *dest);
/* The inverse of pack for parameters. */
void ct_ckpt_llmc_unpack(ct_gpt *gpt, const float *src);

/* Writes `gpt`'s parameters as an llm.c model file (Vp = V rounded up to a multiple of 128). */
ct_status ct_ckpt_llmc_write(const char *path, const ct_gpt *gpt);
/* Reads only the header: the model's configuration. Checks magic, version and file size. */
ct_status ct_ckpt_llmc_read_config(const char *path, ct_gpt_config *config);
/* Reads the parameters into a fully bound model whose configuration must match the file's. */
ct_status ct_ckpt_llmc_read(const char *path, ct_gpt *gpt);

/* ================================================================ sharded checkpoints
 * The storage layer of sharded checkpoints (docs/checkpoints.md has the format byte by byte).
 * Saving and loading a shard layer's state over them is checkpoint/sharded.h; whole
 * checkpoints (ckpt info, verify, export) and safetensors are at the end of this header. */

typedef enum {
    CT_CKPT_PARAMS = 0,
    CT_CKPT_ADAM_M,
    CT_CKPT_ADAM_V,
    CT_CKPT_KIND_COUNT
} ct_ckpt_kind;
const char *ct_ckpt_kind_name(ct_ckpt_kind kind);

/* Byte-plane shuffle: AUTO keeps the smaller way per frame (ties keep plain), judged in full
 * for small frames and from a 1 MiB sample for large ones. */
typedef enum { CT_CKPT_SHUFFLE_AUTO = 0, CT_CKPT_SHUFFLE_OFF, CT_CKPT_SHUFFLE_ON } ct_ckpt_shuffle;

/* Little-endian field access for the on-disk formats. */
void ct_ckpt_put_u32(uint8_t *p, uint32_t v);
void ct_ckpt_put_u64(uint8_t *p, uint64_t v);
uint32_t ct_ckpt_get_u32(const uint8_t *p);
uint64_t ct_ckpt_get_u64(const uint8_t *p);

/* ---------------------------------------------------------------- frames (zframe.c) */

#define CT_CKPT_FRAME_HEADER_BYTES 40
#define CT_CKPT_FRAME_FLAG_SHUFFLE 1u

typedef struct {
    uint32_t version; /* 1 or 2, as the rank file's format version */
    uint32_t kind, flags;
    uint64_t raw_bytes;        /* 4 x floats */
    uint64_t compressed_bytes; /* the zstd frame after the header */
    uint64_t checksum; /* of the raw float bytes: XXH3-64 (version 2) or ct_hash64 (1), seed 0 */
} ct_ckpt_frame_header;

/* A frame codec: zstd contexts and scratch kept from frame to frame (one per writer or reader;
 * one caller at a time). Its threads (default 2 when the CPU kernels have 2 or more, else 1)
 * compress and decompress a frame's 2 MiB pieces side by side; the bytes written do not depend
 * on the thread count. */
#define CT_CKPT_CODEC_MAX_THREADS 8
typedef struct ct_ckpt_codec ct_ckpt_codec;
ct_status ct_ckpt_codec_new(ct_ckpt_codec **codec);
/* 1 to CT_CKPT_CODEC_MAX_THREADS. */
void ct_ckpt_codec_set_threads(ct_ckpt_codec *codec, int threads);
/* The frame version (and so checksum) it writes: CT_CKPT_FORMAT_VERSION by default; 1 (FNV-1a)
 * only for tests of the version 1 reader. Decoding follows each frame's own version. */
void ct_ckpt_codec_set_version(ct_ckpt_codec *codec, int version);
void ct_ckpt_codec_free(ct_ckpt_codec *codec);

/* The most bytes a frame of n floats takes (header included). */
size_t ct_ckpt_frame_bound_bytes(size_t n);
/* Compresses src (n floats) at zstd `level` into dst (>= bound bytes); *frame_bytes is the
 * header plus the compressed bytes. AUTO: see docs/checkpoints.md (frames). */
ct_status ct_ckpt_frame_encode(ct_ckpt_codec *codec, const float *src, size_t n, ct_ckpt_kind kind,
                               int level, ct_ckpt_shuffle shuffle, uint8_t *dst, size_t dst_bytes,
                               size_t *frame_bytes);
/* Checks magic, version (1 or 2), kind, flags and that the compressed bytes fit in avail_bytes.
 * `where` (file, offset, unit) starts every error message. */
ct_status ct_ckpt_frame_parse_header(const uint8_t *frame, size_t avail_bytes, const char *where,
                                     ct_ckpt_frame_header *header);
/* Decodes a frame of exactly n floats into dst, checking every size and the checksum. */
ct_status ct_ckpt_frame_decode(ct_ckpt_codec *codec, const uint8_t *frame, size_t avail_bytes,
                               const char *where, float *dst, size_t n);

/* ---------------------------------------------------------------- rank files (ckpt_file.c) */

/* 2: frame checksums are XXH3-64. Version 1 (FNV-1a frame checksums, otherwise the same
 * layout) is still read and verified. */
#define CT_CKPT_FORMAT_VERSION 2
#define CT_CKPT_FILE_HEADER_BYTES 32
#define CT_CKPT_INDEX_ENTRY_BYTES 64
#define CT_CKPT_TRAILER_BYTES 32

/* One frame of a rank file: elements [lo, hi) of unit `unit`'s flat buffer of kind `kind`. */
typedef struct {
    uint32_t unit, kind, flags;
    uint64_t lo, hi;
    uint64_t offset;      /* of the frame header, from the start of the file */
    uint64_t frame_bytes; /* header + compressed */
    uint64_t raw_bytes;
    uint64_t checksum; /* of the raw floats, as in the frame header */
} ct_ckpt_entry;

typedef struct ct_ckpt_writer ct_ckpt_writer;

/* Creates (truncates) `path` for rank `rank` of `world_size`. */
ct_status ct_ckpt_writer_open(ct_ckpt_writer **writer, const char *path, int rank, int world_size,
                              int zstd_level, ct_ckpt_shuffle shuffle);
/* Threads of the writer's codec, 1 to CT_CKPT_CODEC_MAX_THREADS (default: 2 when the CPU
 * kernels have 2 or more); a background save beside training may want 1. */
void ct_ckpt_writer_set_threads(ct_ckpt_writer *writer, int threads);
/* Writes format version `version` (1 or 2) instead of CT_CKPT_FORMAT_VERSION: for tests that
 * make version 1 files. Call before the first add. */
void ct_ckpt_writer_set_version(ct_ckpt_writer *writer, int version);
/* Appends one frame: data holds hi - lo floats, elements [lo, hi) of the unit's buffer. An
 * empty range (lo == hi, a rank that owns nothing of a small unit) writes nothing. */
ct_status ct_ckpt_writer_add(ct_ckpt_writer *writer, int unit, ct_ckpt_kind kind, int64_t lo,
                             int64_t hi, const float *data);
/* Writes the index and trailer, fsyncs and closes; frees the writer in every case. file_bytes
 * and checksum (ct_hash64 of the index bytes, which hold every frame's checksum) are for the
 * manifest; either may be NULL. */
ct_status ct_ckpt_writer_close(ct_ckpt_writer *writer, uint64_t *file_bytes, uint64_t *checksum);
/* Closes, removes the file and frees (after a failure). */
void ct_ckpt_writer_abort(ct_ckpt_writer *writer);

typedef struct ct_ckpt_reader ct_ckpt_reader;

/* Opens a rank file and checks its header, trailer and index against the file's size. */
ct_status ct_ckpt_reader_open(ct_ckpt_reader **reader, const char *path);
void ct_ckpt_reader_close(ct_ckpt_reader *reader);
int ct_ckpt_reader_rank(const ct_ckpt_reader *reader);
int ct_ckpt_reader_world_size(const ct_ckpt_reader *reader);
int ct_ckpt_reader_version(const ct_ckpt_reader *reader);
uint64_t ct_ckpt_reader_file_bytes(const ct_ckpt_reader *reader);
uint64_t ct_ckpt_reader_checksum(const ct_ckpt_reader *reader);
int ct_ckpt_reader_entry_count(const ct_ckpt_reader *reader);
const ct_ckpt_entry *ct_ckpt_reader_entry(const ct_ckpt_reader *reader, int i);
/* Copies the part of elements [lo, hi) of (unit, kind) that this file holds into
 * dst[x - lo], decoding (and checksumming) only the frames that overlap; *covered counts the
 * elements copied. `unit_name` (may be NULL) goes into error messages. */
ct_status ct_ckpt_reader_read(ct_ckpt_reader *reader, int unit, const char *unit_name,
                              ct_ckpt_kind kind, int64_t lo, int64_t hi, float *dst,
                              int64_t *covered);
/* The same over several files (the rank files of one checkpoint): fails unless they cover
 * [lo, hi) exactly once. This is the read a reshard needs. */
ct_status ct_ckpt_read_range(ct_ckpt_reader *const *readers, int n_readers, int unit,
                             const char *unit_name, ct_ckpt_kind kind, int64_t lo, int64_t hi,
                             float *dst);
/* Decodes every frame of the file (checksums included): what `ckpt verify` does per file. */
ct_status ct_ckpt_reader_verify(ct_ckpt_reader *reader);

/* ---------------------------------------------------------------- manifest (manifest.c) */

#define CT_CKPT_NAME_BYTES 64

typedef struct {
    char name[CT_CKPT_NAME_BYTES];
    int64_t numel, shard_len, padded;
} ct_ckpt_unit_layout;

typedef struct {
    char file[CT_CKPT_NAME_BYTES]; /* rank_NNNNN.ctk, relative to the checkpoint directory */
    uint64_t file_bytes;
    uint64_t checksum;
} ct_ckpt_rank_file;

typedef struct {
    int format_version;
    int64_t step;
    int world_size;
    /* The ranks the units are split among in the files (docs/parallel.md's layout over
     * layout_ranks ranks; rank files r >= layout_ranks are empty): world_size, except for hsdp
     * with shard groups smaller than the world, where the first group writes. 0 when writing
     * = world_size. */
    int layout_ranks;
    char strategy[CT_CKPT_NAME_BYTES];
    char *config_text; /* the job's configuration as text */
    int n_units;
    ct_ckpt_unit_layout *units; /* n_units */
    ct_ckpt_rank_file *ranks;   /* world_size */
    int64_t data_step;          /* the data position: steps consumed */
    /* The training data's identity (ct_data_fingerprint) and token count; has_data_identity is
     * false for a checkpoint written before they were recorded. */
    bool has_data_identity;
    uint64_t data_fingerprint, data_tokens;
    uint64_t rng_seed;
    /* fp16's dynamic loss scale and its count of good steps (optional: has_loss_scale). */
    bool has_loss_scale;
    double loss_scale;
    int64_t loss_scale_good_steps;
    int64_t skipped_steps; /* optimizer steps = step - skipped_steps */
} ct_ckpt_manifest;

/* Writes manifest.json at `path` (with its own checksum) and fsyncs it. */
ct_status ct_ckpt_manifest_write(const char *path, const ct_ckpt_manifest *manifest);
/* Reads and checks a manifest; errors name the file and the byte offset. Owns what it
 * allocates until ct_ckpt_manifest_free. */
ct_status ct_ckpt_manifest_read(const char *path, ct_ckpt_manifest *manifest);
void ct_ckpt_manifest_free(ct_ckpt_manifest *manifest);

/* Checks an open rank file against the manifest's entry for `rank`: its header's format
 * version, rank and world size, its size and its checksum; errors name the file. */
ct_status ct_ckpt_check_rank_file(const ct_ckpt_manifest *manifest, int rank,
                                  const ct_ckpt_reader *reader);

/* ---------------------------------------------------------------- directories (ckpt_dir.c) */

/* dir/step_NNNNNNNN (or .tmp) into out. */
void ct_ckpt_step_path(const char *dir, int64_t step, bool tmp, char *out, size_t out_bytes);
/* step_dir/rank_NNNNN.ctk into out. */
void ct_ckpt_rank_path(const char *step_dir, int rank, char *out, size_t out_bytes);
/* Makes dir/step_NNNNNNNN.tmp/ empty (removing a crashed save's leftovers) and its path. */
ct_status ct_ckpt_begin(const char *dir, int64_t step, char *tmp_path, size_t tmp_path_bytes);
/* After every file inside is written and fsynced (manifest last): fsyncs the .tmp directory,
 * renames it to step_NNNNNNNN/ and fsyncs `dir`. Fails if the final name exists. */
ct_status ct_ckpt_commit(const char *dir, int64_t step);
/* The newest complete checkpoint (step_NNNNNNNN/ with a manifest.json; *.tmp ignored):
 * *found false when there is none. path may be NULL. */
ct_status ct_ckpt_latest(const char *dir, bool *found, int64_t *step, char *path,
                         size_t path_bytes);
/* Deletes complete checkpoints older than the newest `keep` (>= 1): never the newest. */
ct_status ct_ckpt_prune(const char *dir, int keep);
/* The oldest complete checkpoint of step >= `step`: *found false when there is none. */
ct_status ct_ckpt_first_from(const char *dir, int64_t step, bool *found, int64_t *first);
/* Deletes complete checkpoints of step >= `step`: before a run that started fresh or from an
 * older checkpoint commits step `step`, what is there at or after it is another run's. */
ct_status ct_ckpt_remove_from(const char *dir, int64_t step);

/* ---------------------------------------------------------------- whole checkpoints
 * (ckpt_tools.c) What `ctrain ckpt info|verify|export` needs: one complete checkpoint with its
 * manifest and every rank file open. */

#define CT_CKPT_STEP_PATH_BYTES 1024

typedef struct {
    char path[CT_CKPT_STEP_PATH_BYTES]; /* the step_NNNNNNNN directory */
    ct_ckpt_manifest manifest;
    ct_ckpt_reader **readers; /* manifest.world_size, in rank order (NULL past a failed open) */
} ct_ckpt_step;

typedef struct {
    int files, units;
    int64_t frames;
    uint64_t raw_bytes;  /* decoded: params, m and v of every unit */
    uint64_t file_bytes; /* all rank files */
} ct_ckpt_verify_counts;

/* `path` is a step_NNNNNNNN directory (it holds manifest.json) or a checkpoint.dir, whose newest
 * complete checkpoint is taken; the step directory goes into step_dir. */
ct_status ct_ckpt_find(const char *path, char *step_dir, size_t step_dir_bytes);
/* Reads the manifest and opens every rank file, checked against it (rank, world size, size,
 * checksum). Call ct_ckpt_step_close afterwards, also after a failure. */
ct_status ct_ckpt_step_open(ct_ckpt_step *ck, const char *step_dir);
void ct_ckpt_step_close(ct_ckpt_step *ck);
/* Checks that every frame lies inside a unit of the manifest, that the frames of the files tile
 * each (unit, kind) exactly once, and decodes every frame (sizes, zstd, checksum). Errors name
 * the file, and the unit where one is involved. */
ct_status ct_ckpt_step_verify(ct_ckpt_step *ck, ct_ckpt_verify_counts *counts);
/* Assembles the full parameters of every unit (not m, v) into a fully bound model, whose units
 * must be the manifest's (name and size). */
ct_status ct_ckpt_step_read_params(ct_ckpt_step *ck, ct_gpt *gpt);

/* ---------------------------------------------------------------- safetensors (safetensors.c)
 * GPT-2 under Hugging Face's names and layouts (docs/checkpoints.md has the mapping): F32
 * tensors "transformer.wte.weight" (V,C), "transformer.wpe.weight" (maxT,C),
 * "transformer.h.<l>.{ln_1,attn.c_attn,attn.c_proj,ln_2,mlp.c_fc,mlp.c_proj}.{weight,bias}"
 * with Conv1D weights (in,out), the transpose of ctrain's, and "transformer.ln_f.*"; no
 * lm_head.weight (tied to wte). */

/* Writes a fully bound model; `metadata` (may be NULL) holds key, value, key, value, ..., NULL
 * for "__metadata__", after {"format": "pt"}. */
ct_status ct_ckpt_safetensors_write(const char *path, const ct_gpt *gpt,
                                    const char *const *metadata);
/* Reads into a fully bound model: names with or without "transformer.", HF's attention mask
 * buffers ignored, lm_head.weight (if any) must equal wte; every shape must be the model's.
 * Errors name the file and the tensor. */
ct_status ct_ckpt_safetensors_read(const char *path, ct_gpt *gpt);
/* An llm.c model file or safetensors, told apart by the first bytes (model.init_from). */
ct_status ct_ckpt_model_read(const char *path, ct_gpt *gpt);

#endif
