/*
 * Internal to job/ (and its tests): the TOML subset that job files are written in, parsed strictly
 * (toml.c), and the operations on one entry of the job key table (job_key.c) that job.c's
 * table, loader, printer and docs writer share.
 *
 * Accepted: `[table]` headers (no dotted names, no `[[arrays of tables]]`), `key = value` lines
 * with bare keys (A-Z a-z 0-9 _ -; a non-ASCII byte in one is named as such), blank lines and
 * `#` comments after anything, and a UTF-8 byte order mark at the start (skipped). Values:
 * "basic strings" with the escapes \" \\ \n \t \r, 'literal strings', decimal integers with an
 * optional sign and `_` between digits, floats (3.0, 6e-4, 1e-3), true/false, and one-line
 * arrays of those. Everything else (multi-line strings, inline tables, dates, inf/nan, hex) is
 * an error rather than being guessed at.
 *
 * The parser knows no keys: it reports each table header and each key = value to a handler
 * (job.c's key table decides what they mean), and finds only what is wrong with the syntax:
 * duplicate keys and tables, unterminated strings, a missing '=', text after a value. Every
 * message starts with "file:line: ".
 *
 * A key entry (ct_job_key) binds "section.name" to a field of ct_job with its type, default,
 * allowed values and meaning. The entries themselves are the one table in job.c.
 */
#ifndef CT_JOB_TOML_H
#define CT_JOB_TOML_H

#include "job/job.h"

#define CT_JOB_TOML_KEY 64    /* bytes for a bare key or table name, with its NUL */
#define CT_JOB_TOML_TEXT 96   /* bytes for a value as written (longer ones end in "...") */
#define CT_JOB_TOML_NUMBER 40 /* bytes that hold any formatted integer or float */

typedef enum {
    CT_JOB_TOML_STRING,
    CT_JOB_TOML_INT,
    CT_JOB_TOML_FLOAT,
    CT_JOB_TOML_BOOL,
    CT_JOB_TOML_ARRAY
} ct_job_toml_type;

typedef struct {
    ct_job_toml_type type;
    long long integer;       /* CT_JOB_TOML_INT */
    double number;           /* CT_JOB_TOML_FLOAT, and CT_JOB_TOML_INT converted */
    bool boolean;            /* CT_JOB_TOML_BOOL */
    int n_items;             /* CT_JOB_TOML_ARRAY: elements (checked, not kept: no key takes one) */
    char string[CT_JOB_STR]; /* CT_JOB_TOML_STRING, escapes resolved */
    char text[CT_JOB_TOML_TEXT]; /* the value as written, for messages */
} ct_job_toml_value;

/* What the parser calls, in file order. `table` is "" for keys before the first header. A
 * non-OK status stops the parse and is returned as is (the callee records the message). */
typedef struct {
    ct_status (*on_table)(void *ctx, const char *table, int line);
    ct_status (*on_key)(void *ctx, const char *table, const char *key,
                        const ct_job_toml_value *value, int line);
    void *ctx;
} ct_job_toml_handler;

/* Parses NUL-terminated `text`; `source` names it in messages ("job.toml:12: ..."). */
ct_status ct_job_toml_parse(const char *text, const char *source,
                            const ct_job_toml_handler *handler);

/* Reads the file at `path` and parses it; CT_ERR_IO when it cannot be read. */
ct_status ct_job_toml_parse_file(const char *path, const ct_job_toml_handler *handler);

/* Parses `text` as exactly one value (surrounding blanks allowed, no comment). Messages start
 * with `where` and name `key`. */
ct_status ct_job_toml_parse_value(const char *text, const char *where, const char *key,
                                  ct_job_toml_value *out);

/* True when `name` is a non-empty bare key that fits CT_JOB_TOML_KEY. */
bool ct_job_toml_is_bare_key(const char *name);

/* -------------------------------------------------------- values as TOML text (job_key.c) */

/* `s` as a basic string with quotes and escapes, so that parsing gives `s` back. Truncated
 * (and still quoted) when out_bytes is too small; 2 * strlen(s) + 3 bytes always suffice. */
void ct_job_toml_format_string(const char *s, char *out, size_t out_bytes);

/* The shortest text that parses back to exactly `x`, always a TOML float ("1.0", "6e-5"). */
void ct_job_toml_format_float(double x, char *out, size_t out_bytes);

/* -------------------------------------------------------- key entries (job_key.c) */

typedef enum {
    CT_JOB_KEY_INT,    /* int field */
    CT_JOB_KEY_INT64,  /* long long field */
    CT_JOB_KEY_FLOAT,  /* double field; integers are accepted */
    CT_JOB_KEY_BOOL,   /* bool field */
    CT_JOB_KEY_STRING, /* char[CT_JOB_STR] field */
    CT_JOB_KEY_CHOICE  /* char[CT_JOB_STR] field holding one of `choices` */
} ct_job_key_type;

enum { CT_JOB_BOUND_CLOSED = 0, CT_JOB_BOUND_OPEN = 1 }; /* whether a float bound is allowed */

typedef struct {
    const char *section, *name;
    ct_job_key_type type;
    size_t offset;               /* of the field in ct_job */
    long long def_int;           /* default of INT, INT64, BOOL */
    double def_float;            /* default of FLOAT */
    const char *def_string;      /* default of STRING, CHOICE */
    long long min_int, max_int;  /* INT, INT64: inclusive */
    double min_float, max_float; /* FLOAT; +-INFINITY = unbounded */
    int min_open, max_open;      /* FLOAT: CT_JOB_BOUND_OPEN excludes the bound */
    const char *choices;         /* CHOICE: "a|b|c" */
    const char *doc;             /* meaning and units, for docs/config.md */
} ct_job_key;

/* "section.name" into out (2 * CT_JOB_TOML_KEY bytes suffice). */
void ct_job_key_full_name(const ct_job_key *k, char *out, size_t out_bytes);

/* Sets the key's field to its default. */
void ct_job_key_default(ct_job *job, const ct_job_key *k);

/* Stores a parsed value after checking its type and allowed values; messages start with
 * `where` ("job.toml:7" or "command line override '...'") and name the key and the value. */
ct_status ct_job_key_set(ct_job *job, const ct_job_key *k, const ct_job_toml_value *value,
                         const char *where);

/* Checks the field as it is (a job may be filled by code), with the same messages. */
ct_status ct_job_key_check(const ct_job *job, const ct_job_key *k, const char *where);

/* The field's value in TOML syntax; CT_JOB_KEY_VALUE bytes always suffice. */
#define CT_JOB_KEY_VALUE (2 * CT_JOB_STR + 4)
void ct_job_key_format(const ct_job *job, const ct_job_key *k, char *out, size_t out_bytes);

/* The allowed values in words: "1 to 1024", ">= 0 and < 1", "\"ddp\", \"fsdp\"". */
void ct_job_key_describe(const ct_job_key *k, char *out, size_t out_bytes);

/* "integer", "float", "boolean", "string" or "choice". */
const char *ct_job_key_type_name(const ct_job_key *k);

/* Whether a name at edit distance `distance` from what the user typed is worth suggesting: at
 * most 2 edits, or half the length of what was typed. */
bool ct_job_near_miss(size_t distance, const char *typed);

#endif
