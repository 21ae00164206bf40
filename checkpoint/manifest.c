/*
 * manifest: manifest.json, the description of one checkpoint that rank 0 writes last. It says
 * what the rank files hold (format version, step, world size, strategy, every unit's layout),
 * lists each rank file with its size and checksum, and carries what resume needs besides the
 * tensors (the job's configuration as text, the data position, the RNG seed). The writer is a
 * small hand-made JSON printer; the reader is a strict parser of exactly that subset of JSON
 * (objects, arrays, strings, integers, numbers; no true/false/null), which rejects unknown and
 * duplicate keys and names the byte offset of every error. The document carries its own
 * checksum: ct_hash64 of the file's bytes with the 16 hex digits of "checksum" set to '0'.
 */
#include "checkpoint/checkpoint.h"

#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

typedef enum { J_OBJECT, J_ARRAY, J_STRING, J_INT, J_NUMBER } json_type;

typedef struct {
    json_type type;
    size_t offset;      /* of the value's first byte */
    const char *key;    /* in the parent object, else NULL */
    const char *str;    /* J_STRING, decoded and NUL-terminated */
    uint64_t magnitude; /* J_INT */
    bool negative;
    int first, next; /* children and siblings: node indices, -1 for none */
    int count;       /* children */
} json_node;

typedef struct {
    const char *path, *text;
    size_t len, pos;
    json_node *nodes;
    int n_nodes, cap_nodes;
    char *strings; /* decoded strings, never longer than the text */
    size_t strings_used;
} json_parser;

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

static void buf_string(text_buf *b, const char *s) {
    buf_printf(b, "\"");
    for (const unsigned char *p = (const unsigned char *)s; *p; p++) {
        if (*p == '"' || *p == '\\')
            buf_printf(b, "\\%c", *p);
        else if (*p == '\n')
            buf_printf(b, "\\n");
        else if (*p == '\t')
            buf_printf(b, "\\t");
        else if (*p < 0x20)
            buf_printf(b, "\\u%04x", *p);
        else
            buf_printf(b, "%c", *p);
    }
    buf_printf(b, "\"");
}

/* ---------------------------------------------------------------- parsing */

static ct_status parse_fail(json_parser *p, size_t offset, const char *what) {
    return ct_error(CT_ERR_FORMAT, "%s: byte %zu: %s", p->path, offset, what);
}

static void skip_space(json_parser *p) {
    while (p->pos < p->len && strchr(" \t\r\n", p->text[p->pos]) && p->text[p->pos])
        p->pos++;
}

static int hex_value(char c) {
    if (c >= '0' && c <= '9') return c - '0';
    if (c >= 'a' && c <= 'f') return c - 'a' + 10;
    if (c >= 'A' && c <= 'F') return c - 'A' + 10;
    return -1;
}

/* A string at p->pos (the opening quote) into the string store; *out points at it. */
static ct_status parse_string(json_parser *p, const char **out) {
    size_t start = p->pos++;
    char *dst = p->strings + p->strings_used;
    size_t n = 0;
    for (;;) {
        if (p->pos >= p->len) return parse_fail(p, start, "unterminated string");
        unsigned char c = (unsigned char)p->text[p->pos++];
        if (c == '"') break;
        if (c < 0x20) return parse_fail(p, p->pos - 1, "control character in string");
        if (c != '\\') {
            dst[n++] = (char)c;
            continue;
        }
        if (p->pos >= p->len) return parse_fail(p, start, "unterminated string");
        char e = p->text[p->pos++];
        const char *simple = strchr("\"\\/bfnrt", e);
        if (e && simple) {
            dst[n++] = "\"\\/\b\f\n\r\t"[simple - "\"\\/bfnrt"];
            continue;
        }
        if (e != 'u') return parse_fail(p, p->pos - 2, "unknown escape in string");
        unsigned cp = 0;
        for (int i = 0; i < 4; i++) {
            int h = p->pos < p->len ? hex_value(p->text[p->pos]) : -1;
            if (h < 0) return parse_fail(p, p->pos, "bad \\u escape");
            cp = cp * 16 + (unsigned)h, p->pos++;
        }
        if (cp >= 0xd800 && cp < 0xe000) return parse_fail(p, p->pos - 6, "surrogate escape");
        if (cp < 0x80) {
            if (cp == 0) return parse_fail(p, p->pos - 6, "NUL in string");
            dst[n++] = (char)cp;
        } else if (cp < 0x800) { /* a \uXXXX escape takes 6 bytes, its UTF-8 at most 3 */
            dst[n++] = (char)(0xc0 | (cp >> 6)), dst[n++] = (char)(0x80 | (cp & 0x3f));
        } else {
            dst[n++] = (char)(0xe0 | (cp >> 12));
            dst[n++] = (char)(0x80 | ((cp >> 6) & 0x3f)), dst[n++] = (char)(0x80 | (cp & 0x3f));
        }
    }
    dst[n] = '\0';
    p->strings_used += n + 1;
    *out = dst;
    return CT_OK;
}

static ct_status parse_value(json_parser *p, int depth, int *index);

static int new_node(json_parser *p, json_type type) {
    CT_ASSERT(p->n_nodes < p->cap_nodes, "%d nodes", p->n_nodes); /* one per text byte at most */
    json_node *n = &p->nodes[p->n_nodes];
    memset(n, 0, sizeof(*n));
    n->type = type, n->offset = p->pos, n->first = n->next = -1;
    return p->n_nodes++;
}

/* An object or array at p->pos: its members, linked in order. */
static ct_status parse_container(json_parser *p, int depth, int *index) {
    bool object = p->text[p->pos] == '{';
    int self = new_node(p, object ? J_OBJECT : J_ARRAY), last = -1;
    *index = self;
    p->pos++;
    skip_space(p);
    if (p->pos < p->len && p->text[p->pos] == (object ? '}' : ']')) {
        p->pos++;
        return CT_OK;
    }
    for (;;) {
        const char *key = NULL;
        if (object) {
            skip_space(p);
            if (p->pos >= p->len || p->text[p->pos] != '"')
                return parse_fail(p, p->pos, "expected a key string");
            size_t key_at = p->pos;
            CT_CHECK(parse_string(p, &key));
            for (int c = p->nodes[self].first; c >= 0; c = p->nodes[c].next)
                if (strcmp(p->nodes[c].key, key) == 0)
                    return parse_fail(p, key_at, "duplicate key");
            skip_space(p);
            if (p->pos >= p->len || p->text[p->pos] != ':')
                return parse_fail(p, p->pos, "expected ':'");
            p->pos++;
        }
        int child;
        CT_CHECK(parse_value(p, depth + 1, &child));
        p->nodes[child].key = key;
        if (last < 0)
            p->nodes[self].first = child;
        else
            p->nodes[last].next = child;
        last = child;
        p->nodes[self].count++;
        skip_space(p);
        if (p->pos >= p->len) return parse_fail(p, p->pos, "unexpected end of file");
        char c = p->text[p->pos++];
        if (c == (object ? '}' : ']')) return CT_OK;
        if (c != ',')
            return parse_fail(p, p->pos - 1,
                              object ? "expected ',' or '}'" : "expected ',' or ']'");
    }
}

static ct_status parse_number(json_parser *p, int *index) {
    int self = new_node(p, J_INT);
    json_node *n = &p->nodes[self];
    *index = self;
    size_t start = p->pos;
    if (p->text[p->pos] == '-') n->negative = true, p->pos++;
    size_t digits = p->pos;
    while (p->pos < p->len && p->text[p->pos] >= '0' && p->text[p->pos] <= '9') {
        uint64_t d = (uint64_t)(p->text[p->pos] - '0');
        if (n->magnitude > (UINT64_MAX - d) / 10) return parse_fail(p, start, "integer too large");
        n->magnitude = n->magnitude * 10 + d, p->pos++;
    }
    if (p->pos == digits) return parse_fail(p, start, "expected a value");
    if (p->pos - digits > 1 && p->text[digits] == '0') return parse_fail(p, start, "leading zero");
    if (p->pos < p->len && strchr(".eE", p->text[p->pos]) && p->text[p->pos]) {
        n->type = J_NUMBER; /* kept as text: nothing we read is fractional */
        p->pos++;
        while (p->pos < p->len && p->text[p->pos] && strchr("0123456789+-eE", p->text[p->pos]))
            p->pos++;
    }
    return CT_OK;
}

static ct_status parse_value(json_parser *p, int depth, int *index) {
    skip_space(p);
    if (depth > 16) return parse_fail(p, p->pos, "nested too deeply");
    if (p->pos >= p->len) return parse_fail(p, p->pos, "unexpected end of file");
    char c = p->text[p->pos];
    if (c == '{' || c == '[') return parse_container(p, depth, index);
    if (c == '"') {
        int self = new_node(p, J_STRING);
        *index = self;
        return parse_string(p, &p->nodes[self].str);
    }
    return parse_number(p, index);
}

/* ---------------------------------------------------------------- reading the schema */

static const json_node *member(json_parser *p, const json_node *obj, const char *key,
                               json_type type, ct_status *st) {
    for (int c = obj->first; c >= 0; c = p->nodes[c].next) {
        const json_node *n = &p->nodes[c];
        if (strcmp(n->key, key) != 0) continue;
        if (n->type != type) {
            static const char *names[] = {"an object", "an array", "a string", "an integer",
                                          "a number"};
            *st = ct_error(CT_ERR_FORMAT, "%s: byte %zu: \"%s\" must be %s", p->path, n->offset,
                           key, names[type]);
            return NULL;
        }
        return n;
    }
    *st = ct_error(CT_ERR_FORMAT, "%s: byte %zu: object lacks \"%s\"", p->path, obj->offset, key);
    return NULL;
}

static bool has_member(const json_parser *p, const json_node *obj, const char *key) {
    for (int c = obj->first; c >= 0; c = p->nodes[c].next)
        if (strcmp(p->nodes[c].key, key) == 0) return true;
    return false;
}

/* Rejects keys outside `allowed` (NULL-terminated): a strict reader of what we write. */
static ct_status only_keys(json_parser *p, const json_node *obj, const char *const *allowed) {
    for (int c = obj->first; c >= 0; c = p->nodes[c].next) {
        bool known = false;
        for (const char *const *k = allowed; *k; k++)
            known = known || !strcmp(*k, p->nodes[c].key);
        if (!known)
            return ct_error(CT_ERR_FORMAT, "%s: byte %zu: unknown key \"%s\"", p->path,
                            p->nodes[c].offset, p->nodes[c].key);
    }
    return CT_OK;
}

/* A non-negative integer member no larger than max (we never write negative values). */
static ct_status get_int(json_parser *p, const json_node *obj, const char *key, uint64_t max,
                         uint64_t *out) {
    ct_status st = CT_OK;
    const json_node *n = member(p, obj, key, J_INT, &st);
    if (!n) return st;
    if (n->negative || n->magnitude > max)
        return ct_error(CT_ERR_FORMAT, "%s: byte %zu: \"%s\" out of range [0, %llu]", p->path,
                        n->offset, key, (unsigned long long)max);
    *out = n->magnitude;
    return CT_OK;
}

/* A string member copied into out (out_bytes with its NUL). */
static ct_status get_str(json_parser *p, const json_node *obj, const char *key, char *out,
                         size_t out_bytes) {
    ct_status st = CT_OK;
    const json_node *n = member(p, obj, key, J_STRING, &st);
    if (!n) return st;
    if (strlen(n->str) >= out_bytes)
        return ct_error(CT_ERR_FORMAT, "%s: byte %zu: \"%s\" longer than %zu bytes", p->path,
                        n->offset, key, out_bytes - 1);
    memcpy(out, n->str, strlen(n->str) + 1);
    return CT_OK;
}

/* A checksum: a string of 16 lowercase hex digits. */
static ct_status get_hex(json_parser *p, const json_node *obj, const char *key, uint64_t *out) {
    char text[32];
    CT_CHECK(get_str(p, obj, key, text, sizeof(text)));
    uint64_t v = 0;
    size_t i = 0;
    for (; text[i]; i++) {
        int h = hex_value(text[i]);
        if (h < 0 || (text[i] >= 'A' && text[i] <= 'F')) break;
        v = v * 16 + (uint64_t)h;
    }
    if (i != 16 || text[i])
        return ct_error(CT_ERR_FORMAT, "%s: \"%s\" is not 16 lowercase hex digits", p->path, key);
    *out = v;
    return CT_OK;
}

static ct_status read_units(json_parser *p, const json_node *arr, ct_ckpt_manifest *m) {
    static const char *const keys[] = {"name", "numel", "shard_len", "padded", NULL};
    m->n_units = arr->count;
    m->units = ct_alloc(CT_MEM_OTHER, (size_t)arr->count * sizeof(ct_ckpt_unit_layout) + 1);
    if (!m->units) return ct_error(CT_ERR_NOMEM, "%s: %d units", p->path, arr->count);
    int i = 0;
    for (int c = arr->first; c >= 0; c = p->nodes[c].next, i++) {
        const json_node *u = &p->nodes[c];
        ct_ckpt_unit_layout *l = &m->units[i];
        uint64_t numel, shard_len, padded;
        if (u->type != J_OBJECT)
            return ct_error(CT_ERR_FORMAT, "%s: byte %zu: a unit must be an object", p->path,
                            u->offset);
        CT_CHECK(only_keys(p, u, keys));
        CT_CHECK(get_str(p, u, "name", l->name, sizeof(l->name)));
        CT_CHECK(get_int(p, u, "numel", INT64_MAX, &numel));
        CT_CHECK(get_int(p, u, "shard_len", INT64_MAX, &shard_len));
        CT_CHECK(get_int(p, u, "padded", INT64_MAX, &padded));
        /* The layout of docs/parallel.md over the layout's ranks: padded = S * L,
         * S = ceil(numel / L). */
        uint64_t L = (uint64_t)m->layout_ranks;
        if (shard_len != (numel + L - 1) / L || padded != shard_len * L)
            return ct_error(CT_ERR_FORMAT,
                            "%s: byte %zu: unit %d (%s): numel %llu, shard_len "
                            "%llu, padded %llu do not match %d layout ranks",
                            p->path, u->offset, i, l->name, (unsigned long long)numel,
                            (unsigned long long)shard_len, (unsigned long long)padded,
                            m->layout_ranks);
        l->numel = (int64_t)numel, l->shard_len = (int64_t)shard_len, l->padded = (int64_t)padded;
    }
    return CT_OK;
}

static ct_status read_ranks(json_parser *p, const json_node *arr, ct_ckpt_manifest *m) {
    static const char *const keys[] = {"file", "bytes", "checksum", NULL};
    if (arr->count != m->world_size)
        return ct_error(CT_ERR_FORMAT, "%s: byte %zu: %d rank files for world size %d", p->path,
                        arr->offset, arr->count, m->world_size);
    m->ranks = ct_alloc(CT_MEM_OTHER, (size_t)arr->count * sizeof(ct_ckpt_rank_file));
    if (!m->ranks) return ct_error(CT_ERR_NOMEM, "%s: %d ranks", p->path, arr->count);
    int i = 0;
    for (int c = arr->first; c >= 0; c = p->nodes[c].next, i++) {
        const json_node *r = &p->nodes[c];
        if (r->type != J_OBJECT)
            return ct_error(CT_ERR_FORMAT, "%s: byte %zu: a rank must be an object", p->path,
                            r->offset);
        CT_CHECK(only_keys(p, r, keys));
        CT_CHECK(get_str(p, r, "file", m->ranks[i].file, sizeof(m->ranks[i].file)));
        if (strchr(m->ranks[i].file, '/') || !strcmp(m->ranks[i].file, "..") ||
            !m->ranks[i].file[0])
            return ct_error(CT_ERR_FORMAT, "%s: byte %zu: rank file \"%s\" is not a plain name",
                            p->path, r->offset, m->ranks[i].file);
        CT_CHECK(get_int(p, r, "bytes", INT64_MAX, &m->ranks[i].file_bytes));
        CT_CHECK(get_hex(p, r, "checksum", &m->ranks[i].checksum));
    }
    return CT_OK;
}

/* The schema of docs/checkpoints.md over a parsed document. */
static ct_status read_document(json_parser *p, ct_ckpt_manifest *m) {
    static const char *const keys[] = {"format_version", "step",   "world_size", "layout_ranks",
                                       "strategy",       "config", "units",      "ranks",
                                       "data",           "rng",    "checksum",   NULL};
    const json_node *root = &p->nodes[0];
    ct_status st = CT_OK;
    uint64_t v;
    if (root->type != J_OBJECT) return parse_fail(p, root->offset, "expected an object");
    CT_CHECK(only_keys(p, root, keys));
    CT_CHECK(get_int(p, root, "format_version", INT32_MAX, &v));
    if (v < 1 || v > CT_CKPT_FORMAT_VERSION)
        return ct_error(CT_ERR_FORMAT, "%s: format version %llu, this build reads versions 1 to %d",
                        p->path, (unsigned long long)v, CT_CKPT_FORMAT_VERSION);
    m->format_version = (int)v;
    CT_CHECK(get_int(p, root, "step", INT64_MAX, &v));
    m->step = (int64_t)v;
    CT_CHECK(get_int(p, root, "world_size", 1 << 20, &v));
    if (v == 0) return ct_error(CT_ERR_FORMAT, "%s: world size 0", p->path);
    m->world_size = (int)v;
    m->layout_ranks = m->world_size; /* optional: absent = the world layout */
    if (has_member(p, root, "layout_ranks")) {
        CT_CHECK(get_int(p, root, "layout_ranks", (uint64_t)m->world_size, &v));
        if (v == 0) return ct_error(CT_ERR_FORMAT, "%s: layout_ranks 0", p->path);
        m->layout_ranks = (int)v;
    }
    CT_CHECK(get_str(p, root, "strategy", m->strategy, sizeof(m->strategy)));
    const json_node *config = member(p, root, "config", J_STRING, &st);
    if (!config) return st;
    size_t config_bytes = strlen(config->str) + 1;
    m->config_text = ct_alloc(CT_MEM_OTHER, config_bytes);
    if (!m->config_text) return ct_error(CT_ERR_NOMEM, "%s: config text", p->path);
    memcpy(m->config_text, config->str, config_bytes);
    const json_node *units = member(p, root, "units", J_ARRAY, &st);
    if (!units) return st;
    CT_CHECK(read_units(p, units, m));
    const json_node *ranks = member(p, root, "ranks", J_ARRAY, &st);
    if (!ranks) return st;
    CT_CHECK(read_ranks(p, ranks, m));
    static const char *const data_keys[] = {"step", "train_tokens", "train_fingerprint", NULL},
                             *const seed_key[] = {"seed", NULL};
    const json_node *data = member(p, root, "data", J_OBJECT, &st);
    if (!data) return st;
    CT_CHECK(only_keys(p, data, data_keys));
    CT_CHECK(get_int(p, data, "step", INT64_MAX, &v));
    m->data_step = (int64_t)v;
    /* Optional: checkpoints written before the data identity was recorded lack both. */
    m->has_data_identity = has_member(p, data, "train_fingerprint");
    if (m->has_data_identity) {
        CT_CHECK(get_hex(p, data, "train_fingerprint", &m->data_fingerprint));
        CT_CHECK(get_int(p, data, "train_tokens", UINT64_MAX, &m->data_tokens));
    }
    const json_node *rng = member(p, root, "rng", J_OBJECT, &st);
    if (!rng) return st;
    CT_CHECK(only_keys(p, rng, seed_key));
    return get_int(p, rng, "seed", UINT64_MAX, &m->rng_seed);
}

/* The document's own checksum: hash of the text with the stored digits set to '0'. */
static ct_status check_own_checksum(json_parser *p, char *text) {
    ct_status st = CT_OK;
    const json_node *n = member(p, &p->nodes[0], "checksum", J_STRING, &st);
    if (!n) return st;
    uint64_t stored;
    CT_CHECK(get_hex(p, &p->nodes[0], "checksum", &stored));
    memset(text + n->offset + 1, '0', 16); /* get_hex proved 16 plain digits follow the quote */
    uint64_t computed = ct_hash64(text, p->len, 0);
    if (computed != stored)
        return ct_error(CT_ERR_FORMAT,
                        "%s: manifest checksum mismatch (stored %016llx, computed "
                        "%016llx): the file was modified or damaged",
                        p->path, (unsigned long long)stored, (unsigned long long)computed);
    return CT_OK;
}

/* ---------------------------------------------------------------- public */

ct_status ct_ckpt_manifest_write(const char *path, const ct_ckpt_manifest *m) {
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
    json_parser p = {.path = path, .len = (size_t)size};
    p.cap_nodes = (int)size + 1;
    char *text = ct_alloc(CT_MEM_OTHER, (size_t)size + 1);
    p.nodes = ct_alloc(CT_MEM_OTHER, (size_t)p.cap_nodes * sizeof(json_node));
    p.strings = ct_alloc(CT_MEM_OTHER, (size_t)size + 1);
    ct_status st = CT_OK;
    if (!text || !p.nodes || !p.strings)
        st = ct_error(CT_ERR_NOMEM, "%s: parser", path);
    else if (fread(text, 1, (size_t)size, f) != (size_t)size)
        st = ct_error(CT_ERR_IO, "%s: read: %s", path, strerror(errno));
    fclose(f);
    p.text = text;
    int root = 0;
    if (st == CT_OK) st = parse_value(&p, 0, &root);
    if (st == CT_OK) {
        skip_space(&p);
        if (p.pos != p.len) st = parse_fail(&p, p.pos, "trailing content after the document");
    }
    if (st == CT_OK) st = check_own_checksum(&p, text);
    if (st == CT_OK) st = read_document(&p, manifest);
    ct_free(CT_MEM_OTHER, text, (size_t)size + 1);
    ct_free(CT_MEM_OTHER, p.nodes, (size_t)p.cap_nodes * sizeof(json_node));
    ct_free(CT_MEM_OTHER, p.strings, (size_t)size + 1);
    if (st != CT_OK) ct_ckpt_manifest_free(manifest);
    return st;
}

void ct_ckpt_manifest_free(ct_ckpt_manifest *m) {
    if (m->config_text) ct_free(CT_MEM_OTHER, m->config_text, strlen(m->config_text) + 1);
    ct_free(CT_MEM_OTHER, m->units, (size_t)m->n_units * sizeof(ct_ckpt_unit_layout) + 1);
    ct_free(CT_MEM_OTHER, m->ranks, (size_t)m->world_size * sizeof(ct_ckpt_rank_file));
    memset(m, 0, sizeof(*m));
}
