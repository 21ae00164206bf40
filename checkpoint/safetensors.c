/*
 * safetensors: GPT-2 weights under Hugging Face's names and layouts, so that transformers'
 * GPT2LMHeadModel loads what ctrain exports and ctrain starts from HF's own files.
 *
 * The file: u64 (little-endian) header length N, N bytes of JSON (padded with spaces to a
 * multiple of 8) mapping each tensor name to {"dtype", "shape", "data_offsets": [begin, end)}
 * (offsets from the first byte after the header), plus "__metadata__" (string values); then
 * the data. ctrain writes F32 tensors named "transformer.<name>" in its own order; HF's
 * Conv1D layers (attn.c_attn, attn.c_proj, mlp.c_fc, mlp.c_proj) store (in, out), the
 * transpose of ctrain's (out, in) linear weights. lm_head.weight is not written: it is tied to
 * wte, and HF's save_pretrained leaves tied copies out the same way.
 *
 * Reading accepts names with and without "transformer." (HF's gpt2 model.safetensors has
 * none), ignores the attention mask buffers (attn.bias, attn.masked_bias), requires an
 * lm_head.weight, when present, to equal wte, and checks every size read from the file against
 * the file's size before using it. As the format requires, the tensors' byte ranges must tile
 * the data exactly: no overlap (one tensor reading another's bytes), no hole, no tail. The
 * header is parsed with jansson (duplicate keys refused) and then held to the shape of a
 * safetensors header: an object of tensor entries {dtype, shape, data_offsets} and a
 * "__metadata__" object of strings.
 */
#include "checkpoint/checkpoint.h"

#include <errno.h>
#include <fcntl.h>
#include <jansson.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ST_PREFIX "transformer."
#define ST_NAME_BYTES 128
#define ST_MAX_HEADER_BYTES (100u << 20) /* the limit HF's own reader sets */
#define ST_MAX_DIMS 8

/* HF name (after "transformer."; per-layer ones after "h.<l>.") -> ctrain parameter. */
typedef struct {
    const char *hf, *ct;
    bool per_layer, transpose;
} st_slot;

static const st_slot st_slots[] = {
    {"wte.weight", "wte", false, false},
    {"wpe.weight", "wpe", false, false},
    {"ln_1.weight", "ln1.weight", true, false},
    {"ln_1.bias", "ln1.bias", true, false},
    {"attn.c_attn.weight", "attn.qkv.weight", true, true},
    {"attn.c_attn.bias", "attn.qkv.bias", true, false},
    {"attn.c_proj.weight", "attn.proj.weight", true, true},
    {"attn.c_proj.bias", "attn.proj.bias", true, false},
    {"ln_2.weight", "ln2.weight", true, false},
    {"ln_2.bias", "ln2.bias", true, false},
    {"mlp.c_fc.weight", "mlp.fc.weight", true, true},
    {"mlp.c_fc.bias", "mlp.fc.bias", true, false},
    {"mlp.c_proj.weight", "mlp.proj.weight", true, true},
    {"mlp.c_proj.bias", "mlp.proj.bias", true, false},
    {"ln_f.weight", "lnf.weight", false, false},
    {"ln_f.bias", "lnf.bias", false, false},
};

/* One tensor of the model in HF's terms. */
typedef struct {
    char name[ST_NAME_BYTES]; /* without "transformer." */
    ct_tensor *param;
    bool transpose;
    int64_t shape[2]; /* HF's: the parameter's, transposed for Conv1D weights */
    int ndim;
} st_tensor;

/* One entry of a file's header. */
typedef struct {
    char name[ST_NAME_BYTES];
    char dtype[16];
    int ndim;
    uint64_t shape[ST_MAX_DIMS];
    uint64_t begin, end;
} st_entry;

/* ---------------------------------------------------------------- the name mapping */

static int st_tensor_count(const ct_gpt *gpt) {
    return 4 + 12 * gpt->config.n_layer;
}

/* The i-th tensor in ctrain's order: wte, wpe, the blocks' in unit order, ln_f. */
static void st_tensor_at(ct_gpt *gpt, int i, st_tensor *t) {
    int per_layer = 12, L = gpt->config.n_layer;
    const st_slot *slot;
    char ct_name[ST_NAME_BYTES];
    if (i < 2 || i >= 2 + per_layer * L) {
        slot = &st_slots[i < 2 ? i : i - per_layer * L + per_layer];
        snprintf(t->name, sizeof(t->name), "%s", slot->hf);
        snprintf(ct_name, sizeof(ct_name), "embed.%s", slot->ct);
    } else {
        int l = (i - 2) / per_layer;
        slot = &st_slots[2 + (i - 2) % per_layer];
        snprintf(t->name, sizeof(t->name), "h.%d.%s", l, slot->hf);
        snprintf(ct_name, sizeof(ct_name), "block.%d.%s", l, slot->ct);
    }
    t->param = ct_gpt_param(gpt, ct_name);
    CT_ASSERT(t->param, "no parameter %s", ct_name);
    t->transpose = slot->transpose;
    t->ndim = t->param->ndim;
    for (int d = 0; d < t->ndim; d++)
        t->shape[d] = t->param->shape[slot->transpose ? t->ndim - 1 - d : d];
}

/* dst (cols, rows) = src (rows, cols) transposed. */
static void transpose(float *dst, const float *src, int64_t rows, int64_t cols) {
    for (int64_t r = 0; r < rows; r++)
        for (int64_t c = 0; c < cols; c++)
            dst[c * rows + r] = src[r * cols + c];
}

static void format_shape(char *out, size_t bytes, const uint64_t *shape, int ndim) {
    size_t n = (size_t)snprintf(out, bytes, "[");
    for (int d = 0; d < ndim && n < bytes; d++)
        n += (size_t)snprintf(out + n, bytes - n, "%s%llu", d ? ", " : "",
                              (unsigned long long)shape[d]);
    if (n < bytes) snprintf(out + n, bytes - n, "]");
}

/* ---------------------------------------------------------------- header writing */

/* Appends printf output to buf (cap bytes); *len counts what would be written. */
static void append(char *buf, size_t cap, size_t *len, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static void append(char *buf, size_t cap, size_t *len, const char *fmt, ...) {
    va_list args;
    va_start(args, fmt);
    int n = vsnprintf(*len < cap ? buf + *len : NULL, *len < cap ? cap - *len : 0, fmt, args);
    va_end(args);
    *len += (size_t)n;
}

/* A JSON string: quotes, and escapes for '"', '\\' and control bytes. */
static void append_string(char *buf, size_t cap, size_t *len, const char *s) {
    append(buf, cap, len, "\"");
    for (; *s; s++) {
        unsigned char c = (unsigned char)*s;
        if (c == '"' || c == '\\')
            append(buf, cap, len, "\\%c", c);
        else if (c < 0x20)
            append(buf, cap, len, "\\u%04x", c);
        else
            append(buf, cap, len, "%c", c);
    }
    append(buf, cap, len, "\"");
}

/* The whole header (without its length prefix, padded with spaces to a multiple of 8) into
 * buf; returns its length (a call with cap 0 measures). */
static size_t write_header(ct_gpt *gpt, const char *const *metadata, char *buf, size_t cap) {
    size_t len = 0;
    append(buf, cap, &len, "{\"__metadata__\":{\"format\":\"pt\"");
    for (int i = 0; metadata && metadata[i] && metadata[i + 1]; i += 2) {
        append(buf, cap, &len, ",");
        append_string(buf, cap, &len, metadata[i]);
        append(buf, cap, &len, ":");
        append_string(buf, cap, &len, metadata[i + 1]);
    }
    append(buf, cap, &len, "}");
    uint64_t at = 0;
    for (int i = 0; i < st_tensor_count(gpt); i++) {
        st_tensor t;
        st_tensor_at(gpt, i, &t);
        uint64_t bytes = 4 * (uint64_t)ct_tensor_numel(t.param);
        append(buf, cap, &len, ",\"" ST_PREFIX "%s\":{\"dtype\":\"F32\",\"shape\":[%lld", t.name,
               (long long)t.shape[0]);
        if (t.ndim == 2) append(buf, cap, &len, ",%lld", (long long)t.shape[1]);
        append(buf, cap, &len, "],\"data_offsets\":[%llu,%llu]}", (unsigned long long)at,
               (unsigned long long)(at + bytes));
        at += bytes;
    }
    append(buf, cap, &len, "}");
    while (len % 8 != 0)
        append(buf, cap, &len, " ");
    return len;
}

/* ---------------------------------------------------------------- header reading */

/* `count` (at most `max`) non-negative integers of a JSON array into out. */
static bool st_u64_array(const json_t *arr, uint64_t *out, size_t max, int *count) {
    if (!json_is_array(arr) || json_array_size(arr) > max) return false;
    for (size_t i = 0; i < json_array_size(arr); i++) {
        const json_t *v = json_array_get(arr, i);
        if (!json_is_integer(v) || json_integer_value(v) < 0) return false;
        out[i] = (uint64_t)json_integer_value(v);
    }
    *count = (int)json_array_size(arr);
    return true;
}

/* One tensor entry {"dtype": ..., "shape": [...], "data_offsets": [begin, end]}, all three. */
static ct_status st_tensor_entry(const char *path, const char *name, const json_t *obj,
                                 st_entry *e) {
    if (!json_is_object(obj))
        return ct_error(CT_ERR_FORMAT, "%s: safetensors header: tensor %s is not an object", path,
                        name);
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value) {
        if (strcmp(key, "dtype") && strcmp(key, "shape") && strcmp(key, "data_offsets"))
            return ct_error(CT_ERR_FORMAT,
                            "%s: safetensors header: tensor %s: unknown key \"%s\" (a tensor "
                            "entry has dtype, shape and data_offsets)",
                            path, name, key);
    }
    const json_t *dtype = json_object_get(obj, "dtype"), *shape = json_object_get(obj, "shape"),
                 *offsets = json_object_get(obj, "data_offsets");
    if (!dtype || !shape || !offsets)
        return ct_error(CT_ERR_FORMAT,
                        "%s: safetensors header: tensor %s: a tensor entry needs dtype, shape and "
                        "data_offsets",
                        path, name);
    uint64_t range[2];
    int n_range = 0;
    if (!json_is_string(dtype) || json_string_length(dtype) >= sizeof(e->dtype))
        return ct_error(CT_ERR_FORMAT, "%s: safetensors header: tensor %s: bad dtype", path, name);
    if (!st_u64_array(shape, e->shape, ST_MAX_DIMS, &e->ndim))
        return ct_error(CT_ERR_FORMAT,
                        "%s: safetensors header: tensor %s: shape must be at most %d "
                        "non-negative integers",
                        path, name, ST_MAX_DIMS);
    if (!st_u64_array(offsets, range, 2, &n_range) || n_range != 2)
        return ct_error(CT_ERR_FORMAT,
                        "%s: safetensors header: tensor %s: data_offsets must be [begin, end]",
                        path, name);
    snprintf(e->dtype, sizeof(e->dtype), "%s", json_string_value(dtype));
    e->begin = range[0], e->end = range[1];
    return CT_OK;
}

/* Parses the whole header (len bytes of text) into entries (cap of them). */
static ct_status st_parse(const char *path, const char *text, size_t len, st_entry *entries,
                          int cap, int *n) {
    *n = 0;
    json_error_t err;
    json_t *root = json_loadb(text, len, JSON_REJECT_DUPLICATES, &err);
    if (!root)
        return ct_error(CT_ERR_FORMAT, "%s: safetensors header, byte %d: %s", path, err.position,
                        err.text);
    ct_status st = CT_OK;
    if (!json_is_object(root))
        st = ct_error(CT_ERR_FORMAT, "%s: safetensors header: not a JSON object", path);
    const char *name;
    json_t *value;
    json_object_foreach(root, name, value) {
        if (st != CT_OK) break;
        if (strcmp(name, "__metadata__") == 0) { /* an object of strings, checked, not kept */
            const char *key;
            json_t *v;
            bool strings = json_is_object(value);
            json_object_foreach(value, key, v) strings = strings && json_is_string(v);
            if (!strings)
                st = ct_error(CT_ERR_FORMAT,
                              "%s: safetensors header: __metadata__ must map names to strings",
                              path);
            continue;
        }
        if (*n == cap) {
            st = ct_error(CT_ERR_FORMAT, "%s: safetensors header: too many tensors", path);
        } else if (strlen(name) >= ST_NAME_BYTES) {
            st = ct_error(CT_ERR_FORMAT,
                          "%s: safetensors header: tensor name longer than %d "
                          "bytes",
                          path, ST_NAME_BYTES - 1);
        } else {
            st_entry *e = &entries[(*n)++];
            memset(e, 0, sizeof(*e));
            snprintf(e->name, sizeof(e->name), "%s", name);
            st = st_tensor_entry(path, name, value, e);
        }
    }
    json_decref(root);
    return st;
}

/* ---------------------------------------------------------------- reading the data */

typedef struct {
    const char *path;
    int fd;
    uint64_t data_start, data_bytes; /* the data region of the file */
} st_file;

static int st_by_offsets(const void *a, const void *b) {
    const st_entry *x = a, *y = b;
    if (x->begin != y->begin) return x->begin < y->begin ? -1 : 1;
    return x->end < y->end ? -1 : x->end > y->end;
}

/* The spec's rules for the data: every range inside it, no two sharing a byte, and every byte
 * in some tensor (no holes, nothing after the last: a hidden payload makes a polyglot file).
 * Without them one tensor could silently read another's bytes. Sorts the entries. */
static ct_status st_check_layout(const st_file *f, st_entry *entries, int n) {
    for (int i = 0; i < n; i++)
        if (entries[i].begin > entries[i].end || entries[i].end > f->data_bytes)
            return ct_error(CT_ERR_FORMAT,
                            "%s: tensor %s: data_offsets [%llu, %llu) do not lie inside the "
                            "data (%llu bytes)",
                            f->path, entries[i].name, (unsigned long long)entries[i].begin,
                            (unsigned long long)entries[i].end, (unsigned long long)f->data_bytes);
    qsort(entries, (size_t)n, sizeof(*entries), st_by_offsets);
    uint64_t cursor = 0; /* the end of the tensors so far */
    for (int i = 0; i <= n; i++) {
        const st_entry *prev = i ? &entries[i - 1] : NULL, *e = i < n ? &entries[i] : NULL;
        uint64_t begin = e ? e->begin : f->data_bytes;
        if (begin < cursor)
            return ct_error(CT_ERR_FORMAT,
                            "%s: tensors %s (data_offsets [%llu, %llu)) and %s ([%llu, %llu)) "
                            "overlap: safetensors tensors never share bytes",
                            f->path, prev->name, (unsigned long long)prev->begin,
                            (unsigned long long)prev->end, e->name, (unsigned long long)e->begin,
                            (unsigned long long)e->end);
        if (begin > cursor)
            return ct_error(CT_ERR_FORMAT,
                            "%s: data bytes [%llu, %llu) belong to no tensor (%s%s): a "
                            "safetensors file indexes every byte of its data",
                            f->path, (unsigned long long)cursor, (unsigned long long)begin,
                            e      ? "before "
                            : prev ? "after "
                                   : "",
                            e      ? e->name
                            : prev ? prev->name
                                   : "the header lists none");
        if (e) cursor = e->end;
    }
    return CT_OK;
}

/* Checks an entry's dtype, shape and offsets, then reads its floats into dst. */
static ct_status st_read_entry(const st_file *f, const st_entry *e, const int64_t *shape, int ndim,
                               float *dst) {
    char want[64], found[64];
    uint64_t want_shape[2] = {(uint64_t)shape[0], ndim == 2 ? (uint64_t)shape[1] : 0};
    format_shape(want, sizeof(want), want_shape, ndim);
    format_shape(found, sizeof(found), e->shape, e->ndim);
    if (strcmp(e->dtype, "F32") != 0)
        return ct_error(CT_ERR_FORMAT, "%s: tensor %s has dtype %s; ctrain reads F32", f->path,
                        e->name, e->dtype);
    if (strcmp(want, found) != 0)
        return ct_error(CT_ERR_INVALID,
                        "%s: tensor %s has shape %s, the job's model needs %s (check "
                        "model.n_layer, n_head, n_embd, vocab_size, seq_len)",
                        f->path, e->name, found, want);
    uint64_t bytes = 4 * (uint64_t)shape[0] * (ndim == 2 ? (uint64_t)shape[1] : 1);
    if (e->begin > e->end || e->end > f->data_bytes || e->end - e->begin != bytes)
        return ct_error(CT_ERR_FORMAT,
                        "%s: tensor %s: data_offsets [%llu, %llu) do not hold its %llu bytes "
                        "inside the data (%llu bytes)",
                        f->path, e->name, (unsigned long long)e->begin, (unsigned long long)e->end,
                        (unsigned long long)bytes, (unsigned long long)f->data_bytes);
    for (uint64_t done = 0; done < bytes;) {
        ssize_t got = pread(f->fd, (uint8_t *)dst + done, bytes - done,
                            (off_t)(f->data_start + e->begin + done));
        if (got < 0 && errno == EINTR) continue;
        if (got <= 0)
            return ct_error(CT_ERR_IO, "%s: reading tensor %s: %s", f->path, e->name,
                            got < 0 ? strerror(errno) : "end of file");
        done += (uint64_t)got;
    }
    return CT_OK;
}

/* The name without "transformer."; NULL for the buffers HF keeps beside the weights. */
static const char *st_model_name(const char *name) {
    if (strncmp(name, ST_PREFIX, strlen(ST_PREFIX)) == 0) name += strlen(ST_PREFIX);
    size_t n = strlen(name);
    static const char *const buffers[] = {".attn.bias", ".attn.masked_bias"};
    for (size_t i = 0; i < CT_ARRAY_LEN(buffers); i++) {
        size_t b = strlen(buffers[i]);
        if (n > b && strcmp(name + n - b, buffers[i]) == 0) return NULL;
    }
    return name;
}

/* Loads every model tensor from the parsed entries into gpt; scratch holds the largest. */
static ct_status st_load(const st_file *f, const st_entry *entries, int n, ct_gpt *gpt,
                         float *scratch) {
    int count = st_tensor_count(gpt);
    for (int i = 0; i < count; i++) {
        st_tensor t;
        st_tensor_at(gpt, i, &t);
        const st_entry *found = NULL;
        for (int j = 0; j < n; j++) {
            const char *name = st_model_name(entries[j].name);
            if (!name || strcmp(name, t.name) != 0) continue;
            if (found)
                return ct_error(CT_ERR_FORMAT, "%s: tensor %s is there twice (as %s and %s)",
                                f->path, t.name, found->name, entries[j].name);
            found = &entries[j];
        }
        if (!found)
            return ct_error(CT_ERR_FORMAT,
                            "%s: no tensor %s (or " ST_PREFIX "%s): not a GPT-2 of the job's "
                            "model.n_layer = %d",
                            f->path, t.name, t.name, gpt->config.n_layer);
        float *data = ct_tensor_f32(t.param);
        CT_CHECK(st_read_entry(f, found, t.shape, t.ndim, t.transpose ? scratch : data));
        if (t.transpose) transpose(data, scratch, t.shape[0], t.shape[1]);
    }
    /* Every other entry must be a known buffer or the tied head, which must equal wte. */
    ct_tensor *wte = ct_gpt_param(gpt, "embed.wte");
    for (int j = 0; j < n; j++) {
        const char *name = st_model_name(entries[j].name);
        if (!name) continue;
        if (strcmp(name, "lm_head.weight") == 0) {
            CT_CHECK(st_read_entry(f, &entries[j], wte->shape, 2, scratch));
            if (memcmp(scratch, wte->data, 4 * (size_t)ct_tensor_numel(wte)) != 0)
                return ct_error(CT_ERR_INVALID,
                                "%s: lm_head.weight differs from wte.weight; ctrain's GPT-2 ties "
                                "them (an untied head cannot be loaded)",
                                f->path);
            continue;
        }
        bool known = false;
        for (int i = 0; i < count && !known; i++) {
            st_tensor t;
            st_tensor_at(gpt, i, &t);
            known = strcmp(name, t.name) == 0;
        }
        if (!known)
            return ct_error(CT_ERR_FORMAT,
                            "%s: unexpected tensor %s: not one of GPT-2's with the job's "
                            "model.n_layer = %d",
                            f->path, entries[j].name, gpt->config.n_layer);
    }
    return CT_OK;
}

/* ---------------------------------------------------------------- public functions */

ct_status ct_ckpt_safetensors_write(const char *path, const ct_gpt *model,
                                    const char *const *metadata) {
    ct_gpt *gpt = (ct_gpt *)model; /* st_tensor_at looks parameters up; nothing is changed */
    size_t header_bytes = write_header(gpt, metadata, NULL, 0);
    size_t max_numel = 0;
    for (int i = 0; i < st_tensor_count(gpt); i++) {
        st_tensor t;
        st_tensor_at(gpt, i, &t);
        max_numel = CT_MAX(max_numel, (size_t)ct_tensor_numel(t.param));
    }
    size_t buf_bytes = CT_MAX(header_bytes + 1, 4 * max_numel);
    char *buf = ct_alloc(CT_MEM_OTHER, buf_bytes);
    if (!buf) return ct_error(CT_ERR_NOMEM, "%s: export buffer of %zu bytes", path, buf_bytes);
    write_header(gpt, metadata, buf, header_bytes + 1);
    char tmp[1024];
    snprintf(tmp, sizeof(tmp), "%s.tmp", path);
    ct_status status = CT_OK;
    FILE *f = fopen(tmp, "wb");
    if (!f) {
        status = ct_error(CT_ERR_IO, "%s: cannot create: %s", tmp, strerror(errno));
    } else {
        uint8_t length[8];
        ct_ckpt_put_u64(length, header_bytes);
        bool ok = fwrite(length, 8, 1, f) == 1 && fwrite(buf, 1, header_bytes, f) == header_bytes;
        for (int i = 0; ok && i < st_tensor_count(gpt); i++) {
            st_tensor t;
            st_tensor_at(gpt, i, &t);
            size_t n = (size_t)ct_tensor_numel(t.param);
            const float *src = ct_tensor_f32(t.param);
            if (t.transpose) {
                transpose((float *)buf, src, t.shape[1], t.shape[0]);
                src = (const float *)buf;
            }
            ok = fwrite(src, sizeof(float), n, f) == n;
        }
        ok = ok && fflush(f) == 0 && fsync(fileno(f)) == 0; /* ENOSPC may show only here */
        int err = errno;
        if (fclose(f) != 0 && ok) ok = false, err = errno;
        if (!ok)
            status = ct_error(CT_ERR_IO, "%s: write failed: %s", tmp, strerror(err));
        else if (rename(tmp, path) != 0)
            status = ct_error(CT_ERR_IO, "%s: cannot rename to %s: %s", tmp, path, strerror(errno));
        if (status != CT_OK) remove(tmp); /* no partial export left behind */
    }
    ct_free(CT_MEM_OTHER, buf, buf_bytes);
    return status;
}

ct_status ct_ckpt_safetensors_read(const char *path, ct_gpt *gpt) {
    st_file f = {.path = path, .fd = open(path, O_RDONLY)};
    if (f.fd < 0) return ct_error(CT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    struct stat sb;
    uint8_t length[8];
    ct_status status = CT_OK;
    if (fstat(f.fd, &sb) != 0 || sb.st_size < 8 || pread(f.fd, length, 8, 0) != 8) {
        close(f.fd);
        return ct_error(CT_ERR_FORMAT, "%s: too short for a safetensors file", path);
    }
    uint64_t header_bytes = ct_ckpt_get_u64(length), file_bytes = (uint64_t)sb.st_size;
    if (header_bytes < 2 || header_bytes > file_bytes - 8 || header_bytes > ST_MAX_HEADER_BYTES) {
        close(f.fd);
        return ct_error(CT_ERR_FORMAT,
                        "%s: safetensors header length %llu does not fit the file (%llu bytes; "
                        "a header takes 2 to %u bytes): truncated or not safetensors",
                        path, (unsigned long long)header_bytes, (unsigned long long)file_bytes,
                        ST_MAX_HEADER_BYTES);
    }
    f.data_start = 8 + header_bytes;
    f.data_bytes = file_bytes - f.data_start;
    /* Every entry takes more than 40 header bytes, so this many fit in any header. */
    int cap = (int)(header_bytes / 40 + 1);
    size_t max_numel = 0;
    for (int u = 0; u < gpt->n_units; u++)
        for (int i = 0; i < gpt->units[u].n_params; i++)
            max_numel = CT_MAX(max_numel, (size_t)gpt->units[u].params[i].numel);
    size_t text_bytes = (size_t)header_bytes + 1, entries_bytes = (size_t)cap * sizeof(st_entry);
    char *text = ct_alloc(CT_MEM_OTHER, text_bytes);
    st_entry *entries = ct_alloc(CT_MEM_OTHER, entries_bytes);
    float *scratch = ct_alloc(CT_MEM_OTHER, 4 * max_numel);
    if (!text || !entries || !scratch)
        status = ct_error(CT_ERR_NOMEM, "%s: reading the header", path);
    if (status == CT_OK && pread(f.fd, text, header_bytes, 8) != (ssize_t)header_bytes)
        status = ct_error(CT_ERR_IO, "%s: reading the header: %s", path, strerror(errno));
    int n = 0;
    if (status == CT_OK) status = st_parse(path, text, (size_t)header_bytes, entries, cap, &n);
    if (status == CT_OK) status = st_check_layout(&f, entries, n);
    if (status == CT_OK) status = st_load(&f, entries, n, gpt, scratch);
    close(f.fd);
    ct_free(CT_MEM_OTHER, text, text_bytes);
    ct_free(CT_MEM_OTHER, entries, entries_bytes);
    ct_free(CT_MEM_OTHER, scratch, 4 * max_numel);
    return status;
}

ct_status ct_ckpt_model_read(const char *path, ct_gpt *gpt) {
    uint8_t head[9];
    FILE *f = fopen(path, "rb");
    if (!f) return ct_error(CT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    size_t got = fread(head, 1, sizeof(head), f);
    fclose(f);
    if (got >= 8 && ct_ckpt_get_u32(head) == CT_LLMC_MODEL_MAGIC)
        return ct_ckpt_llmc_read(path, gpt);
    if (got == sizeof(head) && head[8] == '{') return ct_ckpt_safetensors_read(path, gpt);
    return ct_error(CT_ERR_FORMAT,
                    "%s: neither an llm.c model file (int32 magic %d first) nor safetensors (a "
                    "u64 header length, then '{')",
                    path, CT_LLMC_MODEL_MAGIC);
}
