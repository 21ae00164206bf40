/*
 * One entry of the job key table at work: its default, the type and range check of a parsed
 * value (with the messages that name the key, the value and what is allowed), the check of a
 * field filled by code, and the value back as TOML text. job.c's table supplies the entries;
 * the loader, ct_job_print and the docs writer all go through these functions, so a key's
 * rules are stated once, in its entry.
 *
 * Floats are written in the shortest form that parses back to the same double, so a printed
 * job reloads bit for bit.
 */
#include "job/toml.h"

#include <limits.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

/* ---------------------------------------------------------------- allowed values */

static bool choice_allowed(const ct_job_key *k, const char *s) {
    size_t n = strlen(s);
    for (const char *c = k->choices; *c;) {
        size_t len = strcspn(c, "|");
        if (len == n && strncmp(c, s, n) == 0) return true;
        c += len + (c[len] == '|');
    }
    return false;
}

static bool int_allowed(const ct_job_key *k, long long x) {
    return x >= k->min_int && x <= k->max_int;
}

static bool float_allowed(const ct_job_key *k, double x) {
    bool above = k->min_open ? x > k->min_float : x >= k->min_float;
    bool below = k->max_open ? x < k->max_float : x <= k->max_float;
    return above && below; /* false for NaN */
}

/* `shown` is the value as the user sees it; `string` the raw string of a choice, from which
 * the nearest allowed choice is suggested. */
static ct_status not_allowed(const ct_job_key *k, const char *shown, const char *string,
                             const char *where) {
    char name[2 * CT_JOB_TOML_KEY], allowed[256], hint[96] = "";
    ct_job_key_full_name(k, name, sizeof(name));
    ct_job_key_describe(k, allowed, sizeof(allowed));
    if (k->type != CT_JOB_KEY_CHOICE)
        return ct_error(CT_ERR_INVALID, "%s: %s = %s is out of range (allowed: %s)", where, name,
                        shown, allowed);
    size_t best_distance = (size_t)-1;
    for (const char *c = k->choices; *c;) {
        size_t len = strcspn(c, "|");
        char option[64];
        snprintf(option, sizeof(option), "%.*s", (int)len, c);
        size_t d = ct_edit_distance(string, option);
        if (d < best_distance && ct_job_near_miss(d, string)) {
            best_distance = d;
            snprintf(hint, sizeof(hint), "; did you mean \"%s\"?", option);
        }
        c += len + (c[len] == '|');
    }
    return ct_error(CT_ERR_INVALID, "%s: %s = %s is not one of %s%s", where, name, shown, allowed,
                    hint);
}

/* ---------------------------------------------------------------- public functions */

void ct_job_toml_format_string(const char *s, char *out, size_t out_bytes) {
    if (out_bytes < 3) {
        if (out_bytes) out[0] = '\0';
        return;
    }
    size_t n = 0;
    out[n++] = '"';
    for (; *s; s++) {
        const char *hit = strchr("\"\\\n\t\r", *s);
        char escaped[3] = {*s, '\0', '\0'};
        if (hit) {
            escaped[0] = '\\';
            escaped[1] = "\"\\ntr"[hit - "\"\\\n\t\r"];
        }
        size_t len = strlen(escaped);
        if (n + len + 2 > out_bytes) break; /* keep room for the closing quote and NUL */
        memcpy(out + n, escaped, len);
        n += len;
    }
    out[n++] = '"';
    out[n] = '\0';
}

void ct_job_toml_format_float(double x, char *out, size_t out_bytes) {
    char buf[CT_JOB_TOML_NUMBER];
    if (!isfinite(x)) {
        snprintf(out, out_bytes, "%s", isnan(x) ? "nan" : x > 0 ? "inf" : "-inf");
        return;
    }
    for (int precision = 1; precision <= 17; precision++) {
        snprintf(buf, sizeof(buf), "%.*g", precision, x);
        if (strtod(buf, NULL) == x) break;
    }
    /* Tidy the exponent ("6e-05" -> "6e-5", "1e+20" -> "1e20"); mark an integral value as a
     * float ("1" -> "1.0") so that it parses back as one. */
    char *e = strchr(buf, 'e');
    if (e) {
        char *digits = e + 1;
        bool negative = *digits == '-';
        if (*digits == '+' || *digits == '-') digits++;
        while (digits[0] == '0' && digits[1])
            digits++;
        *e = '\0';
        snprintf(out, out_bytes, "%se%s%s", buf, negative ? "-" : "", digits);
    } else {
        snprintf(out, out_bytes, "%s%s", buf, strchr(buf, '.') ? "" : ".0");
    }
}

void ct_job_key_full_name(const ct_job_key *k, char *out, size_t out_bytes) {
    snprintf(out, out_bytes, "%s.%s", k->section, k->name);
}

void ct_job_key_default(ct_job *job, const ct_job_key *k) {
    char *field = (char *)job + k->offset;
    switch (k->type) {
    case CT_JOB_KEY_INT:
        *(int *)field = (int)k->def_int;
        break;
    case CT_JOB_KEY_INT64:
        *(long long *)field = k->def_int;
        break;
    case CT_JOB_KEY_FLOAT:
        *(double *)field = k->def_float;
        break;
    case CT_JOB_KEY_BOOL:
        *(bool *)field = k->def_int != 0;
        break;
    case CT_JOB_KEY_STRING:
    case CT_JOB_KEY_CHOICE:
        memset(field, 0, CT_JOB_STR);
        snprintf(field, CT_JOB_STR, "%s", k->def_string);
        break;
    }
}

ct_status ct_job_key_set(ct_job *job, const ct_job_key *k, const ct_job_toml_value *v,
                         const char *where) {
    static const char *wanted[] = {"an integer",    "an integer", "a number",
                                   "true or false", "a string",   "a string"};
    static const ct_job_toml_type needed[] = {CT_JOB_TOML_INT,    CT_JOB_TOML_INT,
                                              CT_JOB_TOML_FLOAT,  CT_JOB_TOML_BOOL,
                                              CT_JOB_TOML_STRING, CT_JOB_TOML_STRING};
    char *field = (char *)job + k->offset;
    bool float_given_int = k->type == CT_JOB_KEY_FLOAT && v->type == CT_JOB_TOML_INT;
    if (v->type != needed[k->type] && !float_given_int) {
        char name[2 * CT_JOB_TOML_KEY];
        ct_job_key_full_name(k, name, sizeof(name));
        return ct_error(CT_ERR_INVALID, "%s: %s must be %s, got %s", where, name, wanted[k->type],
                        v->text);
    }
    switch (k->type) {
    case CT_JOB_KEY_INT:
    case CT_JOB_KEY_INT64:
        if (!int_allowed(k, v->integer)) return not_allowed(k, v->text, "", where);
        if (k->type == CT_JOB_KEY_INT)
            *(int *)field = (int)v->integer;
        else
            *(long long *)field = v->integer;
        break;
    case CT_JOB_KEY_FLOAT:
        if (!float_allowed(k, v->number)) return not_allowed(k, v->text, "", where);
        *(double *)field = v->number;
        break;
    case CT_JOB_KEY_BOOL:
        *(bool *)field = v->boolean;
        break;
    case CT_JOB_KEY_CHOICE:
        if (!choice_allowed(k, v->string)) return not_allowed(k, v->text, v->string, where);
        /* fall through */
    case CT_JOB_KEY_STRING:
        memset(field, 0, CT_JOB_STR); /* the whole field, so that equal jobs are equal bytes */
        snprintf(field, CT_JOB_STR, "%s", v->string);
        break;
    }
    return CT_OK;
}

ct_status ct_job_key_check(const ct_job *job, const ct_job_key *k, const char *where) {
    const char *field = (const char *)job + k->offset;
    bool ok = true;
    switch (k->type) {
    case CT_JOB_KEY_INT:
        ok = int_allowed(k, *(const int *)field);
        break;
    case CT_JOB_KEY_INT64:
        ok = int_allowed(k, *(const long long *)field);
        break;
    case CT_JOB_KEY_FLOAT:
        ok = float_allowed(k, *(const double *)field);
        break;
    case CT_JOB_KEY_BOOL:
    case CT_JOB_KEY_STRING:
        break;
    case CT_JOB_KEY_CHOICE:
        ok = choice_allowed(k, field);
        break;
    }
    if (ok) return CT_OK;
    char value[CT_JOB_KEY_VALUE];
    ct_job_key_format(job, k, value, sizeof(value));
    return not_allowed(k, value, k->type == CT_JOB_KEY_CHOICE ? field : "", where);
}

void ct_job_key_format(const ct_job *job, const ct_job_key *k, char *out, size_t out_bytes) {
    const char *field = (const char *)job + k->offset;
    switch (k->type) {
    case CT_JOB_KEY_INT:
        snprintf(out, out_bytes, "%d", *(const int *)field);
        break;
    case CT_JOB_KEY_INT64:
        snprintf(out, out_bytes, "%lld", *(const long long *)field);
        break;
    case CT_JOB_KEY_FLOAT:
        ct_job_toml_format_float(*(const double *)field, out, out_bytes);
        break;
    case CT_JOB_KEY_BOOL:
        snprintf(out, out_bytes, "%s", *(const bool *)field ? "true" : "false");
        break;
    case CT_JOB_KEY_STRING:
    case CT_JOB_KEY_CHOICE:
        ct_job_toml_format_string(field, out, out_bytes);
        break;
    }
}

void ct_job_key_describe(const ct_job_key *k, char *out, size_t out_bytes) {
    size_t n = 0;
    out[0] = '\0';
    switch (k->type) {
    case CT_JOB_KEY_INT:
    case CT_JOB_KEY_INT64:
        if (k->max_int == INT_MAX || k->max_int == LLONG_MAX)
            snprintf(out, out_bytes, ">= %lld", k->min_int);
        else
            snprintf(out, out_bytes, "%lld to %lld", k->min_int, k->max_int);
        break;
    case CT_JOB_KEY_FLOAT:
        if (isfinite(k->min_float))
            n = (size_t)snprintf(out, out_bytes, "%s %g", k->min_open ? ">" : ">=", k->min_float);
        if (isfinite(k->max_float) && n < out_bytes)
            snprintf(out + n, out_bytes - n, "%s%s %g", n ? " and " : "",
                     k->max_open ? "<" : "<=", k->max_float);
        break;
    case CT_JOB_KEY_BOOL:
        snprintf(out, out_bytes, "true or false");
        break;
    case CT_JOB_KEY_STRING:
        snprintf(out, out_bytes, "any string");
        break;
    case CT_JOB_KEY_CHOICE:
        for (const char *c = k->choices; *c && n < out_bytes;) {
            size_t len = strcspn(c, "|");
            n += (size_t)snprintf(out + n, out_bytes - n, "%s\"%.*s\"", n ? ", " : "", (int)len, c);
            c += len + (c[len] == '|');
        }
        break;
    }
}

const char *ct_job_key_type_name(const ct_job_key *k) {
    static const char *names[] = {"integer", "integer", "float", "boolean", "string", "choice"};
    return names[k->type];
}

bool ct_job_near_miss(size_t distance, const char *typed) {
    return distance <= CT_MAX((size_t)2, strlen(typed) / 2);
}
