/*
 * checkpoint: model and training state on disk. For now, llm.c's model file (the format of
 * final weights until sharded checkpoints arrive, and a way to start from llm.c's weights):
 * int32 header[256] = {20240326, 3, maxT, V, L, NH, C, Vp, 0...}, then fp32 parameters in
 * llm.c's order: wte (Vp,C) [rows V..Vp-1 zero], wpe (maxT,C), ln1w (L,C), ln1b (L,C),
 * qkvw (L,3C,C), qkvb (L,3C), attprojw (L,C,C), attprojb (L,C), ln2w (L,C), ln2b (L,C),
 * fcw (L,4C,C), fcb (L,4C), fcprojw (L,C,4C), fcprojb (L,C), lnfw (C), lnfb (C).
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

#endif
