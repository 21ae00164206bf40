/*
 * GPT-2 (gpt.c): its configuration, its units (the embedding, then one per block), weight
 * initialisation, FLOP and activation counts, and forward passes built from the ops.
 */
#ifndef CT_MODEL_GPT_H
#define CT_MODEL_GPT_H

#include "model/ops/ops.h"

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int n_layer;
    int n_head;
    int n_embd;
    int vocab_size;
    int seq_len; /* maximum T: rows of the positional embedding */
} ct_gpt_config;

/* GPT-2 exactly (BENCH.md): pre-LayerNorm blocks, learned positions, tied embedding / LM head,
 * GELU (tanh), biases everywhere, LayerNorm eps 1e-5, causal attention, no dropout.
 * Unit 0 is "embed" (wte, wpe, lnf.weight, lnf.bias); unit 1+l is "block.l". */
/* Activation recomputation ([memory] activation_checkpointing): none keeps every activation
 * for backward; block keeps only each transformer block's input and output and runs the block
 * again in backward (a checkpoint per block; the embedding unit is not recomputed); selective
 * keeps the matmul and attention outputs and regenerates the LayerNorm and GELU outputs in
 * backward. The gradients are the same bits in every mode. */
typedef enum { CT_RECOMPUTE_NONE = 0, CT_RECOMPUTE_BLOCK, CT_RECOMPUTE_SELECTIVE } ct_recompute;

/* "none", "block", "selective" -> *mode; an unknown name is an error listing the names. */
ct_status ct_recompute_parse(const char *name, ct_recompute *mode);
const char *ct_recompute_name(ct_recompute mode);

typedef struct {
    ct_gpt_config config;
    ct_recompute recompute; /* CT_RECOMPUTE_NONE unless ct_gpt_set_recompute says otherwise */
    int n_units;
    ct_unit *units;
    void *flat_data; /* single-process storage of every unit (NULL when a shard layer owns it) */
    void *flat_grad;
    int64_t num_params;
} ct_gpt;

/* Lays out the units (no parameter memory yet; parameters and gradients f32, the only dtype
 * the kernels take today). Fails on an impossible config. */
ct_status ct_gpt_init(ct_gpt *gpt, const ct_gpt_config *config);
void ct_gpt_free(ct_gpt *gpt);
/* Allocates full parameter and gradient buffers for every unit (in its dtypes) and binds them.
 * Host memory: for single-process tools (sampling, export, parity), not for training. */
ct_status ct_gpt_alloc_full(ct_gpt *gpt);
/* GPT-2 initialisation of elements [lo, hi) of unit `u` into `dest` (hi - lo floats), a pure
 * function of (seed, unit, parameter, element): a shard initialises exactly its range. */
void ct_gpt_init_range(const ct_gpt *gpt, int u, uint64_t seed, int64_t lo, int64_t hi,
                       float *dest);
/* Initialises all bound parameters (single process, host memory, f32). */
void ct_gpt_init_weights(ct_gpt *gpt, uint64_t seed);
/* Sets the recomputation mode of the next passes (and each block unit's `recompute`). */
void ct_gpt_set_recompute(ct_gpt *gpt, ct_recompute mode);
/* Finds a parameter by its full name ("block.3.attn.qkv.weight", "embed.wte"). */
ct_tensor *ct_gpt_param(ct_gpt *gpt, const char *full_name);
/* Training FLOPs per token (BENCH.md): 6 x matmul weights incl. the tied head + 12 L T C. */
double ct_gpt_flops_per_token(const ct_gpt_config *config, int T);
/* An upper bound of the tape's bytes (both arenas) for one recorded forward and backward pass
 * of a (B,T) micro-batch in recomputation mode `mode`: the token ids, the activations kept
 * and recomputed, their gradients, the attention's row statistics and scratch, the LM head's
 * chunk of logits, and the tape's own records; with `compute` bf16/f16 parameters also the
 * widened LayerNorm weights and the half kernels' workspace (outside the tape). A forward pass
 * alone needs less. tests/test_gpt.c holds it against the measured peak of each mode. */
size_t ct_gpt_activation_bytes(const ct_kernels *kernels, const ct_gpt_config *config, int B, int T,
                               ct_recompute mode, ct_dtype compute);

/* One forward pass on inputs/targets (B,T) int32 in host memory (copied to the device through
 * the table). Returns the mean loss tensor (scalar, device memory: ct_tape_read_scalar reads
 * it); when the tape records, backward gives gradients of grad_scale * loss. */
ct_tensor *ct_gpt_forward_loss(ct_gpt *gpt, ct_tape *tape, const int32_t *inputs,
                               const int32_t *targets, int B, int T, float grad_scale);
/* Forward to the logits of every position (B,T,V) into `logits` (memory of the kernels'
 * device: host memory on the CPU); inputs as ct_gpt_forward_loss's. Nothing is recorded. */
ct_status ct_gpt_forward_logits(ct_gpt *gpt, ct_tape *tape, const int32_t *inputs, int B, int T,
                                float *logits);
/* Sets every unit's gradient to zero. */
void ct_gpt_zero_grad(ct_gpt *gpt, const ct_kernels *kernels);

#endif
