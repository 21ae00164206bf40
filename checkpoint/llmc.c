/*
 * llm.c's model file (see checkpoint.h for the layout). llm.c groups parameters by kind across
 * layers (all ln1 weights, then all ln1 biases, ...), while ctrain groups them by unit, so
 * reading and writing walk one table that maps each llm.c slot to a parameter name. Writing goes
 * through PATH.tmp, fsynced and renamed, so a reader sees the old file or the whole new one;
 * any failure (a full disk) removes the .tmp.
 */
#include "checkpoint/checkpoint.h"

#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* llm.c's parameter slots in file order: per-layer slots take "block.<l>." + name. */
static const struct {
    const char *name;
    bool per_layer;
} llmc_slots[] = {
    {"wte", false},
    {"wpe", false},
    {"ln1.weight", true},
    {"ln1.bias", true},
    {"attn.qkv.weight", true},
    {"attn.qkv.bias", true},
    {"attn.proj.weight", true},
    {"attn.proj.bias", true},
    {"ln2.weight", true},
    {"ln2.bias", true},
    {"mlp.fc.weight", true},
    {"mlp.fc.bias", true},
    {"mlp.proj.weight", true},
    {"mlp.proj.bias", true},
    {"lnf.weight", false},
    {"lnf.bias", false},
};

typedef void (*visit_fn)(ct_tensor *param, float *file_data, int64_t numel, void *ctx);

/* Calls fn for each parameter in llm.c's order with the position it has in a packed array. */
static void visit_llmc_order(ct_gpt *gpt, float *packed, visit_fn fn, void *ctx) {
    int64_t at = 0;
    char name[96];
    for (size_t s = 0; s < CT_ARRAY_LEN(llmc_slots); s++) {
        int layers = llmc_slots[s].per_layer ? gpt->config.n_layer : 1;
        for (int l = 0; l < layers; l++) {
            if (llmc_slots[s].per_layer)
                snprintf(name, sizeof(name), "block.%d.%s", l, llmc_slots[s].name);
            else
                snprintf(name, sizeof(name), "embed.%s", llmc_slots[s].name);
            ct_tensor *param = ct_gpt_param(gpt, name);
            CT_ASSERT(param, "no parameter %s", name);
            int64_t numel = ct_tensor_numel(param);
            fn(param, packed + at, numel, ctx);
            at += numel;
        }
    }
    CT_ASSERT(at == gpt->num_params, "packed %lld of %lld", (long long)at,
              (long long)gpt->num_params);
}

static void pack_data(ct_tensor *param, float *file_data, int64_t numel, void *ctx) {
    (void)ctx;
    memcpy(file_data, param->data, sizeof(float) * (size_t)numel);
}

static void pack_grad(ct_tensor *param, float *file_data, int64_t numel, void *ctx) {
    (void)ctx;
    memcpy(file_data, param->grad, sizeof(float) * (size_t)numel);
}

static void unpack_data(ct_tensor *param, float *file_data, int64_t numel, void *ctx) {
    (void)ctx;
    memcpy(param->data, file_data, sizeof(float) * (size_t)numel);
}

void ct_ckpt_llmc_pack(const ct_gpt *gpt, bool grads, float *dest) {
    visit_llmc_order((ct_gpt *)gpt, dest, grads ? pack_grad : pack_data, NULL);
}

void ct_ckpt_llmc_unpack(ct_gpt *gpt, const float *src) {
    visit_llmc_order(gpt, (float *)src, unpack_data, NULL);
}

static int padded_vocab(int V) {
    return (V + 127) / 128 * 128;
}

ct_status ct_ckpt_llmc_write(const char *path, const ct_gpt *gpt) {
    const ct_gpt_config *c = &gpt->config;
    int Vp = padded_vocab(c->vocab_size);
    int32_t header[256] = {CT_LLMC_MODEL_MAGIC, CT_LLMC_MODEL_VERSION,
                           c->seq_len,          c->vocab_size,
                           c->n_layer,          c->n_head,
                           c->n_embd,           Vp};
    size_t n = (size_t)gpt->num_params;
    float *packed = ct_alloc(CT_MEM_OTHER, sizeof(float) * n);
    if (!packed) return ct_error(CT_ERR_NOMEM, "%s: %zu parameters to write", path, n);
    ct_ckpt_llmc_pack(gpt, false, packed);
    size_t wte = (size_t)c->vocab_size * c->n_embd;
    size_t padding = (size_t)(Vp - c->vocab_size) * c->n_embd;
    char tmp[1024];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    FILE *f = fopen(tmp, "wb");
    ct_status status = CT_OK;
    if (!f) {
        status = ct_error(CT_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        static const float zeros[1024];
        bool ok = fwrite(header, sizeof(header), 1, f) == 1 &&
                  fwrite(packed, sizeof(float), wte, f) == wte;
        for (size_t left = padding; ok && left > 0;) {
            size_t chunk = CT_MIN(left, CT_ARRAY_LEN(zeros));
            ok = fwrite(zeros, sizeof(float), chunk, f) == chunk;
            left -= chunk;
        }
        ok = ok && fwrite(packed + wte, sizeof(float), n - wte, f) == n - wte;
        /* A full disk often shows only at the flush: the first failing call's errno is the
         * reason. fsync before the rename, so that a crash cannot leave a short final file. */
        ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0;
        int err = errno;
        if (fclose(f) != 0 && ok) ok = false, err = errno;
        if (!ok)
            status = ct_error(CT_ERR_IO, "%s: write failed: %s", tmp, strerror(err));
        else if (rename(tmp, path) != 0)
            status = ct_error(CT_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        if (status != CT_OK) remove(tmp); /* never a partial model beside the real one */
    }
    ct_free(CT_MEM_OTHER, packed, sizeof(float) * n);
    return status;
}

/* Opens the file, reads and checks the header; on success the caller owns *file. */
static ct_status open_checked(const char *path, FILE **file, int32_t header[256],
                              ct_gpt_config *config) {
    FILE *f = fopen(path, "rb");
    if (!f) return ct_error(CT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat st;
    if (fstat(fileno(f), &st) != 0 || fread(header, sizeof(int32_t), 256, f) != 256) {
        fclose(f);
        return ct_error(CT_ERR_FORMAT, "%s: too short for an llm.c model header (1024 bytes)",
                        path);
    }
    if (header[0] != CT_LLMC_MODEL_MAGIC || header[1] != CT_LLMC_MODEL_VERSION) {
        fclose(f);
        return ct_error(CT_ERR_FORMAT,
                        "%s: not an fp32 llm.c model file: magic %d version %d at offset 0 "
                        "(expected %d version %d)",
                        path, header[0], header[1], CT_LLMC_MODEL_MAGIC, CT_LLMC_MODEL_VERSION);
    }
    *config = (ct_gpt_config){.seq_len = header[2],
                              .vocab_size = header[3],
                              .n_layer = header[4],
                              .n_head = header[5],
                              .n_embd = header[6]};
    int Vp = header[7];
    ct_gpt layout;
    if (Vp < config->vocab_size || ct_gpt_init(&layout, config) != CT_OK) {
        fclose(f);
        return ct_error(CT_ERR_FORMAT,
                        "%s: impossible model in header: maxT %d V %d L %d NH %d C %d Vp %d", path,
                        header[2], header[3], header[4], header[5], header[6], Vp);
    }
    int64_t expected = (int64_t)sizeof(float) *
                       (layout.num_params + (int64_t)(Vp - config->vocab_size) * config->n_embd);
    ct_gpt_free(&layout);
    if ((int64_t)st.st_size - 1024 != expected) {
        fclose(f);
        return ct_error(CT_ERR_FORMAT,
                        "%s: header promises %lld bytes of parameters, file has %lld", path,
                        (long long)expected, (long long)st.st_size - 1024);
    }
    *file = f;
    return CT_OK;
}

ct_status ct_ckpt_llmc_read_config(const char *path, ct_gpt_config *config) {
    FILE *f = NULL;
    int32_t header[256];
    CT_CHECK(open_checked(path, &f, header, config));
    fclose(f);
    return CT_OK;
}

ct_status ct_ckpt_llmc_read(const char *path, ct_gpt *gpt) {
    FILE *f = NULL;
    int32_t header[256];
    ct_gpt_config file_config;
    CT_CHECK(open_checked(path, &f, header, &file_config));
    const ct_gpt_config *c = &gpt->config;
    if (memcmp(&file_config, c, sizeof(*c)) != 0) {
        fclose(f);
        return ct_error(CT_ERR_INVALID,
                        "%s: holds a model with n_layer %d n_head %d n_embd %d vocab_size %d "
                        "seq_len %d; the job asks for %d %d %d %d %d",
                        path, file_config.n_layer, file_config.n_head, file_config.n_embd,
                        file_config.vocab_size, file_config.seq_len, c->n_layer, c->n_head,
                        c->n_embd, c->vocab_size, c->seq_len);
    }
    size_t n = (size_t)gpt->num_params, wte = (size_t)c->vocab_size * c->n_embd;
    size_t padding = (size_t)(header[7] - c->vocab_size) * c->n_embd;
    float *packed = ct_alloc(CT_MEM_OTHER, sizeof(float) * n);
    if (!packed) {
        fclose(f);
        return CT_ERR_NOMEM;
    }
    bool ok = fread(packed, sizeof(float), wte, f) == wte &&
              fseek(f, (long)(padding * sizeof(float)), SEEK_CUR) == 0 &&
              fread(packed + wte, sizeof(float), n - wte, f) == n - wte;
    fclose(f);
    if (ok) ct_ckpt_llmc_unpack(gpt, packed);
    ct_free(CT_MEM_OTHER, packed, sizeof(float) * n);
    return ok ? CT_OK : ct_error(CT_ERR_IO, "%s: read failed", path);
}
