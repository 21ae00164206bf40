/*
 * A strict parser for the TOML subset of job files (see toml.h for what it accepts). Formatting
 * values back into TOML text lives with the key operations in job_key.c.
 *
 * The file is read whole, a leading UTF-8 byte order mark is skipped, CRLF line ends become
 * LF, and each line is parsed in place: a value
 * never spans lines, so every error knows its line. The parser remembers the tables it has seen
 * and the keys of the current table (tables cannot be reopened, so no other table's keys can
 * come back) to report duplicates with the line of the first occurrence.
 */
#include "job/toml.h"

#include <ctype.h>
#include <errno.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define MAX_FILE_BYTES (1 << 20) /* a job file is a page of text; anything bigger is a mistake */
#define TOKEN_SHOWN 40           /* at most this many bytes of bad input are quoted back */

typedef struct {
    char name[CT_JOB_TOML_KEY];
    int line;
} seen_name;

typedef struct {
    seen_name *items; /* counted as CT_MEM_OTHER, grown by doubling */
    size_t count, capacity;
} seen_list;

typedef struct {
    const char *source;
    const ct_job_toml_handler *handler;
    int line;
    char where[CT_JOB_STR + 32]; /* "source:line" */
    char table[CT_JOB_TOML_KEY]; /* the current table, "" before the first header */
    seen_list tables;
    seen_list keys; /* of the current table */
} parser;

/* ---------------------------------------------------------------- small helpers */

static bool is_eol(char c) {
    return c == '\0' || c == '\n';
}

static bool is_bare(char c) {
    return isalnum((unsigned char)c) || c == '_' || c == '-';
}

static void skip_blanks(const char **p) {
    while (**p == ' ' || **p == '\t')
        (*p)++;
}

/* Bytes of the token at p: up to a blank, '#', ',', ']' or the line end; for quoting it back. */
static int token_length(const char *p) {
    int n = 0;
    while (!is_eol(p[n]) && !strchr(" \t#,]", p[n]) && n < TOKEN_SHOWN)
        n++;
    return n > 0 ? n : 1;
}

/* The error for a non-ASCII byte inside (or at the start of) a bare key or table name: UTF-8
 * letters look like valid names, so say which rule they break. `start` is the name's start,
 * `bad` the byte. */
static ct_status non_ascii_name(const char *where, const char *what, const char *start,
                                const char *bad) {
    int n = 0;
    while (!is_eol(start[n]) && !strchr(" \t=]#", start[n]) && n < TOKEN_SHOWN)
        n++;
    return ct_error(CT_ERR_INVALID,
                    "%s: %s '%.*s' contains a non-ASCII character (byte 0x%02X at column %d; "
                    "bare keys and table names are A-Z a-z 0-9 _ -, and quoted keys are not "
                    "supported)",
                    where, what, n, start, (unsigned)(unsigned char)*bad, (int)(bad - start) + 1);
}

/* Reads a bare key into out; returns its length (0 when none starts at p), -1 when too long. */
static int read_bare_key(const char **p, char out[CT_JOB_TOML_KEY]) {
    int n = 0;
    while (is_bare((*p)[n]))
        n++;
    if (n >= CT_JOB_TOML_KEY) return -1;
    memcpy(out, *p, (size_t)n);
    out[n] = '\0';
    *p += n;
    return n;
}

static seen_name *seen_find(const seen_list *list, const char *name) {
    for (size_t i = 0; i < list->count; i++)
        if (strcmp(list->items[i].name, name) == 0) return &list->items[i];
    return NULL;
}

static ct_status seen_add(seen_list *list, const char *name, int line) {
    if (list->count == list->capacity) {
        size_t capacity = list->capacity ? 2 * list->capacity : 16;
        seen_name *items = ct_alloc(CT_MEM_OTHER, capacity * sizeof(seen_name));
        if (!items) return CT_ERR_NOMEM;
        if (list->count) memcpy(items, list->items, list->count * sizeof(seen_name));
        ct_free(CT_MEM_OTHER, list->items, list->capacity * sizeof(seen_name));
        list->items = items;
        list->capacity = capacity;
    }
    snprintf(list->items[list->count].name, CT_JOB_TOML_KEY, "%s", name);
    list->items[list->count++].line = line;
    return CT_OK;
}

static void seen_free(seen_list *list) {
    ct_free(CT_MEM_OTHER, list->items, list->capacity * sizeof(seen_name));
    *list = (seen_list){0};
}

/* ---------------------------------------------------------------- values */

/* A "basic" or 'literal' string at p into out (CT_JOB_STR bytes). */
static ct_status parse_string(const char **pp, const char *where, const char *key, char *out) {
    const char *p = *pp;
    char quote = *p++;
    if (p[0] == quote && p[1] == quote)
        return ct_error(CT_ERR_INVALID,
                        "%s: multi-line strings (%c%c%c) are not supported (in '%s')", where, quote,
                        quote, quote, key);
    size_t n = 0;
    for (;;) {
        char c = *p;
        if (is_eol(c))
            return ct_error(CT_ERR_INVALID,
                            "%s: unterminated string in the value of '%s' (add the closing %c; "
                            "a string ends on the line it starts)",
                            where, key, quote);
        if (c == quote) {
            p++;
            break;
        }
        if (((unsigned char)c < 0x20 && c != '\t') || c == 0x7f)
            return ct_error(CT_ERR_INVALID, "%s: control character 0x%02x in the string of '%s'",
                            where, (unsigned)(unsigned char)c, key);
        if (quote == '"' && c == '\\') {
            char e = p[1];
            if (is_eol(e))
                return ct_error(CT_ERR_INVALID, "%s: unterminated string in the value of '%s'",
                                where, key);
            const char *from = "\"\\ntr", *to = "\"\\\n\t\r";
            const char *hit = strchr(from, e);
            if (!hit)
                return ct_error(CT_ERR_INVALID,
                                "%s: unsupported escape '\\%c' in the string of '%s' (supported: "
                                "\\\" \\\\ \\n \\t \\r; 'literal strings' take backslashes as is)",
                                where, e, key);
            c = to[hit - from];
            p++;
        }
        p++;
        if (n + 1 >= CT_JOB_STR)
            return ct_error(CT_ERR_INVALID, "%s: the string of '%s' is longer than %d bytes", where,
                            key, CT_JOB_STR - 1);
        out[n++] = c;
    }
    out[n] = '\0';
    *pp = p;
    return CT_OK;
}

/* A run of digits with '_' only between digits, appended to clean[*n] (which keeps `cap` bytes
 * free for its NUL and what parse_number appends after); returns the digit count, -1 for a
 * misplaced '_', -2 when the digits do not fit. */
static int read_digits(const char **pp, char *clean, size_t *n, size_t cap) {
    const char *p = *pp;
    int digits = 0;
    while (isdigit((unsigned char)*p) || *p == '_') {
        if (*p == '_') {
            if (!digits || !isdigit((unsigned char)p[1])) return -1;
        } else {
            if (*n + 1 >= cap) return -2;
            clean[(*n)++] = *p;
            digits++;
        }
        p++;
    }
    clean[*n] = '\0';
    *pp = p;
    return digits;
}

/* A decimal integer or a float at p. */
static ct_status parse_number(const char **pp, const char *where, const char *key,
                              ct_job_toml_value *v) {
    const char *start = *pp, *p = *pp;
    char clean[CT_JOB_TOML_TEXT + 4]; /* the number without '_'; 4 spare for '.', 'e', sign */
    const size_t cap = CT_JOB_TOML_TEXT;
    size_t n = 0;
    bool is_float = false;
    if (*p == '+' || *p == '-') clean[n++] = *p++;
    const char *int_start = p;
    int digits = read_digits(&p, clean, &n, cap);
    if (digits < 0) goto bad_digits;
    if (digits == 0)
        return ct_error(CT_ERR_INVALID,
                        "%s: invalid value '%.*s' for '%s' (inf and nan are not "
                        "supported; a string needs quotes)",
                        where, token_length(start), start, key);
    if (int_start[0] == '0' && digits > 1)
        return ct_error(CT_ERR_INVALID, "%s: leading zeros are not allowed in '%.*s' (for '%s')",
                        where, token_length(start), start, key);
    if (int_start[0] == '0' && (*p == 'x' || *p == 'o' || *p == 'b'))
        return ct_error(CT_ERR_INVALID,
                        "%s: hexadecimal, octal and binary integers are not "
                        "supported ('%.*s' for '%s')",
                        where, token_length(start), start, key);
    if (*p == '.') {
        clean[n++] = *p++;
        digits = read_digits(&p, clean, &n, cap);
        if (digits < 0) goto bad_digits;
        if (digits == 0)
            return ct_error(CT_ERR_INVALID, "%s: a float needs digits after '.' ('%.*s' for '%s')",
                            where, token_length(start), start, key);
        is_float = true;
    }
    if (*p == 'e' || *p == 'E') {
        clean[n++] = *p++;
        if (*p == '+' || *p == '-') clean[n++] = *p++;
        digits = read_digits(&p, clean, &n, cap);
        if (digits < 0) goto bad_digits;
        if (digits == 0)
            return ct_error(CT_ERR_INVALID, "%s: an exponent needs digits ('%.*s' for '%s')", where,
                            token_length(start), start, key);
        is_float = true;
    }
    errno = 0;
    if (is_float) {
        v->type = CT_JOB_TOML_FLOAT;
        v->number = strtod(clean, NULL);
        if (isinf(v->number))
            return ct_error(CT_ERR_INVALID, "%s: the float %s for '%s' is too large", where, clean,
                            key);
    } else {
        v->type = CT_JOB_TOML_INT;
        v->integer = strtoll(clean, NULL, 10);
        if (errno == ERANGE)
            return ct_error(CT_ERR_INVALID, "%s: the integer %s for '%s' does not fit in 64 bits",
                            where, clean, key);
        v->number = (double)v->integer;
    }
    *pp = p;
    return CT_OK;
bad_digits:
    if (digits == -2)
        return ct_error(CT_ERR_INVALID, "%s: the number '%.*s...' for '%s' is too long", where,
                        token_length(start), start, key);
    return ct_error(CT_ERR_INVALID, "%s: '_' must sit between digits ('%.*s' for '%s')", where,
                    token_length(start), start, key);
}

/* Any value except an array. */
static ct_status parse_scalar(const char **pp, const char *where, const char *key,
                              ct_job_toml_value *v) {
    const char *p = *pp;
    char c = *p;
    if (c == '"' || c == '\'') {
        v->type = CT_JOB_TOML_STRING;
        return parse_string(pp, where, key, v->string);
    }
    if (isdigit((unsigned char)c) || c == '+' || c == '-') return parse_number(pp, where, key, v);
    if (is_eol(c) || c == '#')
        return ct_error(CT_ERR_INVALID, "%s: missing value after '%s ='", where, key);
    if (c == '{')
        return ct_error(CT_ERR_INVALID, "%s: inline tables are not supported (in '%s')", where,
                        key);
    int n = 0;
    while (is_bare(p[n]))
        n++;
    if ((n == 4 && strncmp(p, "true", 4) == 0) || (n == 5 && strncmp(p, "false", 5) == 0)) {
        v->type = CT_JOB_TOML_BOOL;
        v->boolean = n == 4;
        *pp = p + n;
        return CT_OK;
    }
    int shown = token_length(p);
    return ct_error(CT_ERR_INVALID,
                    "%s: invalid value %.*s for '%s' (a string needs quotes: "
                    "\"%.*s\")",
                    where, shown, p, key, shown, p);
}

/* A value at *pp; advances past it and keeps the text as written in v->text. */
static ct_status parse_value_at(const char **pp, const char *where, const char *key,
                                ct_job_toml_value *v) {
    const char *start = *pp, *p = *pp;
    memset(v, 0, sizeof(*v));
    if (*p != '[') {
        CT_CHECK(parse_scalar(&p, where, key, v));
    } else {
        v->type = CT_JOB_TOML_ARRAY;
        p++;
        skip_blanks(&p);
        while (*p != ']') {
            if (*p == '[')
                return ct_error(CT_ERR_INVALID, "%s: nested arrays are not supported (in '%s')",
                                where, key);
            if (is_eol(*p) || *p == '#')
                return ct_error(CT_ERR_INVALID,
                                "%s: unterminated array in the value of '%s' "
                                "(an array closes with ']' on the line it opens)",
                                where, key);
            ct_job_toml_value item;
            CT_CHECK(parse_scalar(&p, where, key, &item));
            v->n_items++;
            skip_blanks(&p);
            if (*p == ',') {
                p++;
                skip_blanks(&p);
            } else if (*p != ']' && !is_eol(*p)) {
                return ct_error(CT_ERR_INVALID,
                                "%s: expected ',' or ']' after an element of the "
                                "array '%s', got '%.*s'",
                                where, key, token_length(p), p);
            }
        }
        p++;
    }
    size_t len = (size_t)(p - start);
    if (len < sizeof(v->text)) {
        memcpy(v->text, start, len);
        v->text[len] = '\0';
    } else {
        snprintf(v->text, sizeof(v->text), "%.*s...", (int)sizeof(v->text) - 4, start);
    }
    *pp = p;
    return CT_OK;
}

/* ---------------------------------------------------------------- lines */

static ct_status parse_header(parser *ps, const char *p) {
    const char *where = ps->where;
    char name[CT_JOB_TOML_KEY];
    p++;
    if (*p == '[')
        return ct_error(CT_ERR_INVALID, "%s: arrays of tables ([[...]]) are not supported", where);
    skip_blanks(&p);
    const char *start = p;
    int n = read_bare_key(&p, name);
    if (n >= 0 && (unsigned char)*p >= 0x80) return non_ascii_name(where, "table name", start, p);
    if (n < 0)
        return ct_error(CT_ERR_INVALID, "%s: table name longer than %d bytes", where,
                        CT_JOB_TOML_KEY - 1);
    if (n == 0)
        return ct_error(CT_ERR_INVALID,
                        "%s: expected a table name after '[' (letters, digits, "
                        "'_' and '-'; no quotes)",
                        where);
    skip_blanks(&p);
    if (*p == '.')
        return ct_error(CT_ERR_INVALID, "%s: nested tables ([%s.x]) are not supported", where,
                        name);
    if (*p != ']') return ct_error(CT_ERR_INVALID, "%s: expected ']' after '[%s'", where, name);
    p++;
    skip_blanks(&p);
    if (!is_eol(*p) && *p != '#')
        return ct_error(CT_ERR_INVALID,
                        "%s: unexpected text '%.*s' after [%s] (a comment "
                        "starts with '#')",
                        where, token_length(p), p, name);
    const seen_name *first = seen_find(&ps->tables, name);
    if (first)
        return ct_error(CT_ERR_INVALID, "%s: duplicate table [%s] (first at line %d)", where, name,
                        first->line);
    CT_CHECK(seen_add(&ps->tables, name, ps->line));
    snprintf(ps->table, sizeof(ps->table), "%s", name);
    ps->keys.count = 0;
    if (!ps->handler->on_table) return CT_OK;
    return ps->handler->on_table(ps->handler->ctx, name, ps->line);
}

static ct_status parse_key_value(parser *ps, const char *p) {
    const char *where = ps->where;
    char key[CT_JOB_TOML_KEY];
    const char *start = p;
    int n = read_bare_key(&p, key);
    if (n >= 0 && (unsigned char)*p >= 0x80) return non_ascii_name(where, "key", start, p);
    if (n < 0)
        return ct_error(CT_ERR_INVALID, "%s: key longer than %d bytes", where, CT_JOB_TOML_KEY - 1);
    if (n == 0 && (*p == '"' || *p == '\''))
        return ct_error(CT_ERR_INVALID, "%s: quoted keys are not supported", where);
    if (n == 0)
        return ct_error(CT_ERR_INVALID, "%s: expected a key, a [table] or a comment, got '%.*s'",
                        where, token_length(p), p);
    skip_blanks(&p);
    if (*p == '.')
        return ct_error(CT_ERR_INVALID,
                        "%s: dotted keys ('%s.x = ...') are not supported; write "
                        "the key under its [table]",
                        where, key);
    if (*p != '=') return ct_error(CT_ERR_INVALID, "%s: expected '=' after key '%s'", where, key);
    p++;
    skip_blanks(&p);
    ct_job_toml_value value;
    CT_CHECK(parse_value_at(&p, where, key, &value));
    skip_blanks(&p);
    if (!is_eol(*p) && *p != '#')
        return ct_error(CT_ERR_INVALID,
                        "%s: unexpected text '%.*s' after the value of '%s' (a "
                        "comment starts with '#')",
                        where, token_length(p), p, key);
    const seen_name *first = seen_find(&ps->keys, key);
    if (first)
        return ct_error(CT_ERR_INVALID, "%s: duplicate key '%s'%s%s%s (first set at line %d)",
                        where, key, ps->table[0] ? " in [" : "", ps->table, ps->table[0] ? "]" : "",
                        first->line);
    CT_CHECK(seen_add(&ps->keys, key, ps->line));
    if (!ps->handler->on_key) return CT_OK;
    return ps->handler->on_key(ps->handler->ctx, ps->table, key, &value, ps->line);
}

static ct_status parse_lines(parser *ps, const char *text) {
    const char *p = text;
    for (ps->line = 1; *p; ps->line++) {
        snprintf(ps->where, sizeof(ps->where), "%s:%d", ps->source, ps->line);
        const char *q = p;
        skip_blanks(&q);
        if (*q == '[') {
            CT_CHECK(parse_header(ps, q));
        } else if (!is_eol(*q) && *q != '#') {
            CT_CHECK(parse_key_value(ps, q));
        }
        while (!is_eol(*p))
            p++;
        if (*p == '\n') p++;
    }
    return CT_OK;
}

/* ---------------------------------------------------------------- public functions */

ct_status ct_job_toml_parse(const char *text, const char *source,
                            const ct_job_toml_handler *handler) {
    parser ps = {.source = source, .handler = handler};
    /* Editors on Windows start UTF-8 files with a byte order mark; it is no part of the text. */
    if (strncmp(text, "\xEF\xBB\xBF", 3) == 0) text += 3;
    ct_status status = parse_lines(&ps, text);
    seen_free(&ps.tables);
    seen_free(&ps.keys);
    return status;
}

ct_status ct_job_toml_parse_file(const char *path, const ct_job_toml_handler *handler) {
    FILE *f = fopen(path, "rb");
    if (!f) return ct_error(CT_ERR_IO, "cannot open job file '%s': %s", path, strerror(errno));
    char *text = NULL;
    size_t capacity = MAX_FILE_BYTES + 1, size = 0;
    ct_status status = CT_OK;
    text = ct_alloc(CT_MEM_OTHER, capacity);
    if (!text) status = CT_ERR_NOMEM;
    if (status == CT_OK) {
        size = fread(text, 1, capacity, f);
        if (ferror(f))
            status = ct_error(CT_ERR_IO, "cannot read job file '%s': %s", path, strerror(errno));
        else if (size == capacity)
            status = ct_error(CT_ERR_INVALID, "%s: larger than %d bytes: not a job file", path,
                              MAX_FILE_BYTES);
    }
    fclose(f);
    if (status == CT_OK) {
        /* CRLF -> LF in place; a NUL byte means a binary file, which would end the text early. */
        size_t out = 0;
        int line = 1;
        for (size_t i = 0; i < size && status == CT_OK; i++) {
            if (text[i] == '\0')
                status =
                    ct_error(CT_ERR_INVALID, "%s:%d: NUL byte (is this a text file?)", path, line);
            if (text[i] == '\n') line++;
            if (!(text[i] == '\r' && i + 1 < size && text[i + 1] == '\n')) text[out++] = text[i];
        }
        text[out] = '\0';
    }
    if (status == CT_OK) status = ct_job_toml_parse(text, path, handler);
    ct_free(CT_MEM_OTHER, text, capacity);
    return status;
}

ct_status ct_job_toml_parse_value(const char *text, const char *where, const char *key,
                                  ct_job_toml_value *out) {
    const char *p = text;
    skip_blanks(&p);
    CT_CHECK(parse_value_at(&p, where, key, out));
    skip_blanks(&p);
    if (*p)
        return ct_error(CT_ERR_INVALID, "%s: unexpected text '%.*s' after the value of '%s'", where,
                        token_length(p), p, key);
    return CT_OK;
}

bool ct_job_toml_is_bare_key(const char *name) {
    size_t n = 0;
    while (is_bare(name[n]))
        n++;
    return n > 0 && name[n] == '\0' && n < CT_JOB_TOML_KEY;
}
