/*
 * manifest: manifest.json, the description of one checkpoint that rank 0 writes last. It says
 * what the rank files hold (format version, step, world size, strategy, every unit's layout),
 * lists each rank file with its size and checksum, and carries what resume needs besides the
 * tensors (the job's configuration as text, the data position, the RNG seed). The writer is a
 * small hand-made JSON printer (its bytes in a fixed order, which the checksum below relies
 * on; bytes of a string that are not UTF-8 are written as the \u00XX of that byte); the
 * reader parses with jansson (duplicate keys, integers beyond 64 bits, NUL in strings and
 * invalid UTF-8 refused; syntax errors name the byte offset) and then checks the schema
 * strictly: unknown keys and values of the wrong type or range fail naming the key. The
 * document carries its own checksum: ct_hash64 of the file's bytes with the 16 hex digits of
 * "checksum" set to '0'.
 */
#define _GNU_SOURCE /* memmem */
#include "checkpoint/checkpoint.h"
#include "shard/shard.h"

#include <errno.h>
#include <jansson.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    char *data;
    size_t len, cap;
    ct_status status;
} text_buf;

/* ---------------------------------------------------------------- writing */

static void buf_printf(text_buf *b, const char *fmt, ...) __attribute__((format(printf, 2, 3)));
static void buf_printf(text_buf *b, const char *fmt, ...) {
    if (b->status != CT_OK) return;
    va_list ap;
    va_start(ap, fmt);
    int need = vsnprintf(NULL, 0, fmt, ap);
    va_end(ap);
    if (b->len + (size_t)need + 1 > b->cap) {
        size_t cap = CT_MAX(2 * b->cap, b->len + (size_t)need + 4096);
        char *grown = ct_alloc(CT_MEM_OTHER, cap);
        if (!grown) {
            b->status = CT_ERR_NOMEM;
            return;
        }
        if (b->len) memcpy(grown, b->data, b->len);
        ct_free(CT_MEM_OTHER, b->data, b->cap);
        b->data = grown, b->cap = cap;
    }
    va_start(ap, fmt);
    vsnprintf(b->data + b->len, b->cap - b->len, fmt, ap);
    va_end(ap);
    b->len += (size_t)need;
}

/* The length of the UTF-8 sequence at p (n bytes left) when it is one jansson accepts (no
 * overlong form, surrogate or code point above U+10FFFF), else 0. */
static size_t utf8_length(const unsigned char *p, size_t n) {
    size_t len = p[0] < 0x80                    ? 1
                 : p[0] >= 0xc2 && p[0] <= 0xdf ? 2
                 : p[0] >= 0xe0 && p[0] <= 0xef ? 3
                 : p[0] >= 0xf0 && p[0] <= 0xf4 ? 4
                                                : 0;
    if (len == 0 || len > n) return 0;
    uint32_t cp = len == 1 ? p[0] : p[0] & (0x7fu >> len);
    for (size_t i = 1; i < len; i++) {
        if ((p[i] & 0xc0) != 0x80) return 0;
        cp = cp << 6 | (p[i] & 0x3fu);
    }
    static const uint32_t least[5] = {0, 0, 0x80, 0x800, 0x10000};
    return cp < least[len] || cp > 0x10ffff || (cp >= 0xd800 && cp < 0xe000) ? 0 : len;
}

static void buf_string(text_buf *b, const char *s) {
    buf_printf(b, "\"");
    const unsigned char *p = (const unsigned char *)s, *end = p + strlen(s);
    while (p < end) {
        size_t len = *p < 0x80 ? 1 : utf8_length(p, (size_t)(end - p));
        if (*p == '"' || *p == '\\')
            buf_printf(b, "\\%c", *p);
        else if (*p == '\n')
            buf_printf(b, "\\n");
        else if (*p == '\t')
            buf_printf(b, "\\t");
        else if (*p < 0x20 || len == 0) /* a control byte, or a byte that is not UTF-8 */
            buf_printf(b, "\\u%04x", *p);
        else
            buf_printf(b, "%.*s", (int)len, (const char *)p);
        p += len ? len : 1;
    }
    buf_printf(b, "\"");
}

/* ---------------------------------------------------------------- reading the schema
 * `where` is a value's place in the document for messages: "" for the top object, "units[2]",
 * "data", ... */

static const char *type_name(json_type type) {
    switch (type) {
    case JSON_OBJECT:
        return "an object";
    case JSON_ARRAY:
        return "an array";
    case JSON_STRING:
        return "a string";
    case JSON_INTEGER:
        return "an integer";
    case JSON_REAL:
        return "a fraction";
    case JSON_TRUE:
        return "true";
    case JSON_FALSE:
        return "false";
    default:
        return "null";
    }
}

/* Member `key` of obj, which must be of `type`. */
static ct_status member(const char *path, const json_t *obj, const char *where, const char *key,
                        json_type type, json_t **out) {
    json_t *v = json_is_object(obj) ? json_object_get(obj, key) : NULL;
    if (!v)
        return ct_error(CT_ERR_FORMAT, "%s: %s lacks \"%s\"", path,
                        where[0] ? where : "the document", key);
    if (json_typeof(v) != type)
        return ct_error(CT_ERR_FORMAT, "%s: \"%s%s%s\" must be %s, not %s", path, where,
                        where[0] ? "." : "", key, type_name(type), type_name(json_typeof(v)));
    *out = v;
    return CT_OK;
}

/* Rejects keys outside `allowed` (NULL-terminated): a strict reader of what we write. */
static ct_status only_keys(const char *path, const json_t *obj, const char *where,
                           const char *const *allowed) {
    const char *key;
    json_t *value;
    json_object_foreach((json_t *)obj, key, value) {
        bool known = false;
        for (const char *const *k = allowed; *k; k++)
            known = known || !strcmp(*k, key);
        if (!known)
            return ct_error(CT_ERR_FORMAT, "%s: unknown key \"%s\" in %s", path, key,
                            where[0] ? where : "the document");
    }
    return CT_OK;
}

/* A non-negative integer member no larger than max (we never write negative values). */
static ct_status get_int(const char *path, const json_t *obj, const char *where, const char *key,
                         uint64_t max, uint64_t *out) {
    json_t *n = NULL;
    CT_CHECK(member(path, obj, where, key, JSON_INTEGER, &n));
    json_int_t v = json_integer_value(n);
    if (v < 0 || (uint64_t)v > max)
        return ct_error(CT_ERR_FORMAT, "%s: \"%s%s%s\" is %lld, out of range [0, %llu]", path,
                        where, where[0] ? "." : "", key, (long long)v, (unsigned long long)max);
    *out = (uint64_t)v;
    return CT_OK;
}

/* A string member copied into out (out_bytes with its NUL). */
static ct_status get_str(const char *path, const json_t *obj, const char *where, const char *key,
                         char *out, size_t out_bytes) {
    json_t *n = NULL;
    CT_CHECK(member(path, obj, where, key, JSON_STRING, &n));
    size_t len = json_string_length(n); /* jansson refuses NUL inside strings */
    if (len >= out_bytes)
        return ct_error(CT_ERR_FORMAT, "%s: \"%s%s%s\" longer than %zu bytes", path, where,
                        where[0] ? "." : "", key, out_bytes - 1);
    memcpy(out, json_string_value(n), len + 1);
    return CT_OK;
}

/* A checksum: a string of 16 lowercase hex digits. */
static ct_status get_hex(const char *path, const json_t *obj, const char *where, const char *key,
                         uint64_t *out) {
    char text[32];
    CT_CHECK(get_str(path, obj, where, key, text, sizeof(text)));
    uint64_t v = 0;
    size_t i = 0;
    for (; text[i]; i++) {
        char c = text[i];
        int h = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : -1;
        if (h < 0) break;
        v = v * 16 + (uint64_t)h;
    }
    if (i != 16 || text[i])
        return ct_error(CT_ERR_FORMAT, "%s: \"%s%s%s\" is not 16 lowercase hex digits", path, where,
                        where[0] ? "." : "", key);
    *out = v;
    return CT_OK;
}

/* Element i of the array `name` (arr): an object with only `keys`; its place into where. */
static ct_status element(const char *path, const json_t *arr, const char *name, size_t i,
                         const char *const *keys, char *where, size_t where_bytes,
                         const json_t **out) {
    const json_t *e = json_array_get(arr, i);
    snprintf(where, where_bytes, "%s[%zu]", name, i);
    if (!json_is_object(e))
        return ct_error(CT_ERR_FORMAT, "%s: %s must be an object, not %s", path, where,
                        type_name(json_typeof(e)));
    *out = e;
    return only_keys(path, e, where, keys);
}

static ct_status read_units(const char *path, const json_t *arr, ct_ckpt_manifest *m) {
    static const char *const keys[] = {"name", "numel", "shard_len", "padded", NULL};
    size_t count = json_array_size(arr);
    m->units = ct_alloc(CT_MEM_OTHER, count * sizeof(ct_ckpt_unit_layout) + 1);
    if (!m->units) return ct_error(CT_ERR_NOMEM, "%s: %zu units", path, count);
    m->n_units = (int)count;
    for (size_t i = 0; i < count; i++) {
        const json_t *u = NULL;
        ct_ckpt_unit_layout *l = &m->units[i];
        uint64_t numel, shard_len, padded;
        char where[32];
        CT_CHECK(element(path, arr, "units", i, keys, where, sizeof(where), &u));
        CT_CHECK(get_str(path, u, where, "name", l->name, sizeof(l->name)));
        CT_CHECK(get_int(path, u, where, "numel", INT64_MAX, &numel));
        CT_CHECK(get_int(path, u, where, "shard_len", INT64_MAX, &shard_len));
        CT_CHECK(get_int(path, u, where, "padded", INT64_MAX, &padded));
        /* The layout of docs/parallel.md over the layout's ranks (numel bounded first, so that
         * its arithmetic cannot overflow). */
        ct_shard_range r =
            ct_shard_layout((int64_t)CT_MIN(numel, (uint64_t)1 << 56), m->layout_ranks, 0);
        if (numel > (uint64_t)1 << 56 || shard_len != (uint64_t)r.shard_len ||
            padded != (uint64_t)r.padded)
            return ct_error(CT_ERR_FORMAT,
                            "%s: unit %zu (%s): numel %llu, shard_len %llu, padded %llu do not "
                            "match %d layout ranks",
                            path, i, l->name, (unsigned long long)numel,
                            (unsigned long long)shard_len, (unsigned long long)padded,
                            m->layout_ranks);
        l->numel = (int64_t)numel, l->shard_len = (int64_t)shard_len, l->padded = (int64_t)padded;
    }
    return CT_OK;
}

static ct_status read_ranks(const char *path, const json_t *arr, ct_ckpt_manifest *m) {
    static const char *const keys[] = {"file", "bytes", "checksum", NULL};
    size_t count = json_array_size(arr);
    if (count != (size_t)m->world_size)
        return ct_error(CT_ERR_FORMAT, "%s: %zu rank files for world size %d", path, count,
                        m->world_size);
    m->ranks = ct_alloc(CT_MEM_OTHER, count * sizeof(ct_ckpt_rank_file));
    if (!m->ranks) return ct_error(CT_ERR_NOMEM, "%s: %zu ranks", path, count);
    for (size_t i = 0; i < count; i++) {
        const json_t *r = NULL;
        ct_ckpt_rank_file *f = &m->ranks[i];
        char where[32];
        CT_CHECK(element(path, arr, "ranks", i, keys, where, sizeof(where), &r));
        CT_CHECK(get_str(path, r, where, "file", f->file, sizeof(f->file)));
        if (strchr(f->file, '/') || !strcmp(f->file, "..") || !f->file[0])
            return ct_error(CT_ERR_FORMAT, "%s: %s: rank file \"%s\" is not a plain name", path,
                            where, f->file);
        CT_CHECK(get_int(path, r, where, "bytes", INT64_MAX, &f->file_bytes));
        CT_CHECK(get_hex(path, r, where, "checksum", &f->checksum));
    }
    return CT_OK;
}

/* Optional "loss_scale": {"scale": S, "good_steps": N} (fp16 runs). */
static ct_status read_loss_scale(const char *path, const json_t *root, ct_ckpt_manifest *m) {
    static const char *const keys[] = {"scale", "good_steps", "skipped_steps", NULL};
    json_t *object = NULL, *scale = NULL;
    m->has_loss_scale = json_object_get(root, "loss_scale") != NULL;
    if (!m->has_loss_scale) return CT_OK;
    CT_CHECK(member(path, root, "", "loss_scale", JSON_OBJECT, &object));
    CT_CHECK(only_keys(path, object, "loss_scale", keys));
    scale = json_object_get(object, "scale");
    if (!json_is_number(scale) || !(json_number_value(scale) >= 1.0) ||
        !isfinite(json_number_value(scale)))
        return ct_error(CT_ERR_FORMAT, "%s: loss_scale.scale must be a finite number >= 1", path);
    m->loss_scale = json_number_value(scale);
    uint64_t good;
    CT_CHECK(get_int(path, object, "loss_scale", "good_steps", INT64_MAX, &good));
    m->loss_scale_good_steps = (int64_t)good;
    CT_CHECK(get_int(path, object, "loss_scale", "skipped_steps", m->step, &good));
    m->skipped_steps = (int64_t)good;
    return CT_OK;
}

/* The schema of docs/checkpoints.md over a parsed document. */
static ct_status read_document(const char *path, const json_t *root, ct_ckpt_manifest *m) {
    static const char *const keys[] = {
        "format_version", "step", "world_size", "layout_ranks", "strategy",   "config", "units",
        "ranks",          "data", "rng",        "checksum",     "loss_scale", NULL};
    uint64_t v;
    if (!json_is_object(root))
        return ct_error(CT_ERR_FORMAT, "%s: the document must be an object, not %s", path,
                        type_name(json_typeof(root)));
    CT_CHECK(only_keys(path, root, "", keys));
    CT_CHECK(get_int(path, root, "", "format_version", INT32_MAX, &v));
    if (v < 1 || v > CT_CKPT_FORMAT_VERSION)
        return ct_error(CT_ERR_FORMAT, "%s: format version %llu, this build reads versions 1 to %d",
                        path, (unsigned long long)v, CT_CKPT_FORMAT_VERSION);
    m->format_version = (int)v;
    CT_CHECK(get_int(path, root, "", "step", INT64_MAX, &v));
    m->step = (int64_t)v;
    CT_CHECK(get_int(path, root, "", "world_size", 1 << 20, &v));
    if (v == 0) return ct_error(CT_ERR_FORMAT, "%s: world size 0", path);
    m->world_size = (int)v;
    m->layout_ranks = m->world_size; /* optional: absent = the world layout */
    if (json_object_get(root, "layout_ranks")) {
        CT_CHECK(get_int(path, root, "", "layout_ranks", (uint64_t)m->world_size, &v));
        if (v == 0) return ct_error(CT_ERR_FORMAT, "%s: layout_ranks 0", path);
        m->layout_ranks = (int)v;
    }
    CT_CHECK(get_str(path, root, "", "strategy", m->strategy, sizeof(m->strategy)));
    json_t *config = NULL, *units = NULL, *ranks = NULL, *data = NULL, *rng = NULL;
    CT_CHECK(member(path, root, "", "config", JSON_STRING, &config));
    size_t config_bytes = json_string_length(config) + 1;
    m->config_text = ct_alloc(CT_MEM_OTHER, config_bytes);
    if (!m->config_text) return ct_error(CT_ERR_NOMEM, "%s: config text", path);
    memcpy(m->config_text, json_string_value(config), config_bytes);
    CT_CHECK(member(path, root, "", "units", JSON_ARRAY, &units));
    CT_CHECK(read_units(path, units, m));
    CT_CHECK(member(path, root, "", "ranks", JSON_ARRAY, &ranks));
    CT_CHECK(read_ranks(path, ranks, m));
    static const char *const data_keys[] = {"step", "train_tokens", "train_fingerprint", NULL},
                             *const seed_key[] = {"seed", NULL};
    CT_CHECK(member(path, root, "", "data", JSON_OBJECT, &data));
    CT_CHECK(only_keys(path, data, "data", data_keys));
    CT_CHECK(get_int(path, data, "data", "step", INT64_MAX, &v));
    m->data_step = (int64_t)v;
    /* Optional: checkpoints written before the data identity was recorded lack both. */
    m->has_data_identity = json_object_get(data, "train_fingerprint") != NULL;
    if (m->has_data_identity) {
        CT_CHECK(get_hex(path, data, "data", "train_fingerprint", &m->data_fingerprint));
        CT_CHECK(get_int(path, data, "data", "train_tokens", INT64_MAX, &m->data_tokens));
    }
    CT_CHECK(member(path, root, "", "rng", JSON_OBJECT, &rng));
    CT_CHECK(only_keys(path, rng, "rng", seed_key));
    CT_CHECK(get_int(path, rng, "rng", "seed", INT64_MAX, &m->rng_seed));
    return read_loss_scale(path, root, m);
}

/* The document's own checksum: the hash of the text with the 16 digits of the top-level
 * "checksum" set to '0'. The parser keeps no byte offsets, so the digits are found in the
 * text: each `"checksum": "<the stored digits>"` is tried (a rank file's checksum may look
 * the same; the top-level one is the one under which the hash matches). */
static ct_status check_own_checksum(const char *path, const json_t *root, char *text, size_t len) {
    uint64_t stored, computed = 0;
    CT_CHECK(get_hex(path, root, "", "checksum", &stored));
    const char *digits = json_string_value(json_object_get(root, "checksum"));
    const char *end = text + len, *space = " \t\r\n";
    for (char *at = text; (at = memmem(at, (size_t)(end - at), "\"checksum\"", 10)); at += 10) {
        char *p = at + 10;
        while (p < end && strchr(space, *p) && *p)
            p++;
        if (p == end || *p++ != ':') continue;
        while (p < end && strchr(space, *p) && *p)
            p++;
        if (end - p < 18 || p[0] != '"' || memcmp(p + 1, digits, 16) != 0 || p[17] != '"') continue;
        memset(p + 1, '0', 16);
        computed = ct_hash64(text, len, 0);
        memcpy(p + 1, digits, 16);
        if (computed == stored) return CT_OK;
    }
    return ct_error(CT_ERR_FORMAT,
                    "%s: manifest checksum mismatch (stored %016llx, computed %016llx): the file "
                    "was modified or damaged",
                    path, (unsigned long long)stored, (unsigned long long)computed);
}

/* ---------------------------------------------------------------- public */

ct_status ct_ckpt_manifest_write(const char *path, const ct_ckpt_manifest *m) {
    /* The reader's integers are jansson's, signed 64-bit (train.seed is at most 2^63 - 1). */
    if (m->rng_seed > INT64_MAX || m->data_tokens > INT64_MAX)
        return ct_error(CT_ERR_INVALID,
                        "%s: rng.seed %llu or data.train_tokens %llu above 2^63 - 1", path,
                        (unsigned long long)m->rng_seed, (unsigned long long)m->data_tokens);
    text_buf b = {0};
    buf_printf(&b,
               "{\n  \"format_version\": %d,\n  \"step\": %lld,\n  \"world_size\": %d,\n"
               "  \"layout_ranks\": %d,\n",
               m->format_version, (long long)m->step, m->world_size,
               m->layout_ranks > 0 ? m->layout_ranks : m->world_size);
    buf_printf(&b, "  \"strategy\": ");
    buf_string(&b, m->strategy);
    buf_printf(&b, ",\n  \"config\": ");
    buf_string(&b, m->config_text ? m->config_text : "");
    buf_printf(&b, ",\n  \"units\": [");
    for (int u = 0; u < m->n_units; u++) {
        buf_printf(&b, "%s\n    {\"name\": ", u ? "," : "");
        buf_string(&b, m->units[u].name);
        buf_printf(&b, ", \"numel\": %lld, \"shard_len\": %lld, \"padded\": %lld}",
                   (long long)m->units[u].numel, (long long)m->units[u].shard_len,
                   (long long)m->units[u].padded);
    }
    buf_printf(&b, "\n  ],\n  \"ranks\": [");
    for (int r = 0; r < m->world_size; r++) {
        buf_printf(&b, "%s\n    {\"file\": ", r ? "," : "");
        buf_string(&b, m->ranks[r].file);
        buf_printf(&b, ", \"bytes\": %llu, \"checksum\": \"%016llx\"}",
                   (unsigned long long)m->ranks[r].file_bytes,
                   (unsigned long long)m->ranks[r].checksum);
    }
    buf_printf(&b, "\n  ],\n  \"data\": {\"step\": %lld", (long long)m->data_step);
    if (m->has_data_identity)
        buf_printf(&b, ", \"train_tokens\": %llu, \"train_fingerprint\": \"%016llx\"",
                   (unsigned long long)m->data_tokens, (unsigned long long)m->data_fingerprint);
    buf_printf(&b, "},\n  \"rng\": {\"seed\": %llu},\n", (unsigned long long)m->rng_seed);
    if (m->has_loss_scale)
        buf_printf(&b,
                   "  \"loss_scale\": {\"scale\": %.17g, \"good_steps\": %lld, "
                   "\"skipped_steps\": %lld},\n",
                   m->loss_scale, (long long)m->loss_scale_good_steps, (long long)m->skipped_steps);
    buf_printf(&b, "  \"checksum\": \"");
    size_t digits_at = b.len;
    buf_printf(&b, "0000000000000000\"\n}\n");
    if (b.status != CT_OK) {
        ct_free(CT_MEM_OTHER, b.data, b.cap);
        return ct_error(CT_ERR_NOMEM, "%s: manifest text", path);
    }
    char digits[17];
    snprintf(digits, sizeof(digits), "%016llx", (unsigned long long)ct_hash64(b.data, b.len, 0));
    memcpy(b.data + digits_at, digits, 16);
    ct_status st = CT_OK;
    FILE *f = fopen(path, "wb");
    if (!f)
        st = ct_error(CT_ERR_IO, "%s: cannot create: %s", path, strerror(errno));
    else if (fwrite(b.data, 1, b.len, f) != b.len || fflush(f) != 0 || fsync(fileno(f)) != 0)
        st = ct_error(CT_ERR_IO, "%s: write: %s", path, strerror(errno));
    if (f && fclose(f) != 0 && st == CT_OK)
        st = ct_error(CT_ERR_IO, "%s: close: %s", path, strerror(errno));
    ct_free(CT_MEM_OTHER, b.data, b.cap);
    return st;
}

ct_status ct_ckpt_manifest_read(const char *path, ct_ckpt_manifest *manifest) {
    memset(manifest, 0, sizeof(*manifest));
    FILE *f = fopen(path, "rb");
    if (!f) return ct_error(CT_ERR_IO, "%s: cannot open: %s", path, strerror(errno));
    long size = (fseek(f, 0, SEEK_END) == 0) ? ftell(f) : -1;
    if (size < 0 || size > (64l << 20) || fseek(f, 0, SEEK_SET) != 0) {
        fclose(f);
        return ct_error(CT_ERR_FORMAT, "%s: size %ld is not that of a manifest", path, size);
    }
    char *text = ct_alloc(CT_MEM_OTHER, (size_t)size + 1);
    ct_status st = CT_OK;
    if (!text)
        st = ct_error(CT_ERR_NOMEM, "%s: %ld bytes", path, size);
    else if (fread(text, 1, (size_t)size, f) != (size_t)size)
        st = ct_error(CT_ERR_IO, "%s: read: %s", path, strerror(errno));
    fclose(f);
    json_t *root = NULL;
    if (st == CT_OK) {
        json_error_t err;
        root = json_loadb(text, (size_t)size, JSON_REJECT_DUPLICATES, &err);
        if (!root) st = ct_error(CT_ERR_FORMAT, "%s: byte %d: %s", path, err.position, err.text);
    }
    if (st == CT_OK) st = check_own_checksum(path, root, text, (size_t)size);
    if (st == CT_OK) st = read_document(path, root, manifest);
    json_decref(root);
    ct_free(CT_MEM_OTHER, text, (size_t)size + 1);
    if (st != CT_OK) ct_ckpt_manifest_free(manifest);
    return st;
}

void ct_ckpt_manifest_free(ct_ckpt_manifest *m) {
    if (m->config_text) ct_free(CT_MEM_OTHER, m->config_text, strlen(m->config_text) + 1);
    ct_free(CT_MEM_OTHER, m->units, (size_t)m->n_units * sizeof(ct_ckpt_unit_layout) + 1);
    ct_free(CT_MEM_OTHER, m->ranks, (size_t)m->world_size * sizeof(ct_ckpt_rank_file));
    memset(m, 0, sizeof(*m));
}
