/*
 * manifest.json and the checkpoint directory protocol: the manifest round-trips every field,
 * its reader is strict (damage, unknown keys, a wrong version or layout fail with the file and
 * byte offset), and latest/prune see only complete checkpoints (step_NNNNNNNN/ with a
 * manifest), never a .tmp, and never delete the newest.
 */
#define _GNU_SOURCE /* nftw, mkdtemp */
#include "checkpoint/checkpoint.h"
#include "tests/test_temp_dir.h"
#include "tests/test_util.h"

#include <string.h>
#include <sys/stat.h>

static ct_ckpt_unit_layout units[3] = {
    {"embed", 12345, 3087, 12348}, {"h.0", 7, 2, 8}, {"h.1", 2, 1, 4}};
static ct_ckpt_rank_file ranks[4] = {{"rank_00000.ctk", 1000, 0x0123456789abcdefull},
                                     {"rank_00001.ctk", 2000, 0xfedcba9876543210ull},
                                     {"rank_00002.ctk", 3, 0},
                                     {"rank_00003.ctk", 4, 0xffffffffffffffffull}};

static ct_ckpt_manifest sample(void) {
    ct_ckpt_manifest m = {.format_version = CT_CKPT_FORMAT_VERSION,
                          .step = 500,
                          .world_size = 4,
                          .strategy = "fsdp",
                          .n_units = 3,
                          .units = units,
                          .ranks = ranks,
                          .data_step = 500,
                          .rng_seed = 9223372036854775783ull}; /* the last prime < 2^63 */
    /* Quotes, backslashes, newlines, tabs, a control byte and UTF-8 must survive. */
    m.config_text = "[model]\nname = \"gpt2-124m\"\tpath = \"C:\\\\x\" \x01 caf\xc3\xa9\n";
    return m;
}

static bool message_has(const char *needle) {
    bool found = strstr(ct_error_message(), needle) != NULL;
    if (!found) printf("\n  message \"%s\" lacks \"%s\"\n", ct_error_message(), needle);
    return found;
}

static void write_text(const char *path, const char *text) {
    write_bytes(path, text, strlen(text));
}

static char *read_text(const char *path) {
    FILE *f = fopen(path, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    char *text = calloc((size_t)n + 1, 1);
    CU_ASSERT_EQUAL(fread(text, 1, (size_t)n, f), (size_t)n);
    fclose(f);
    return text;
}

/* ---------------------------------------------------------------- manifest */

static void test_manifest_round_trips_every_field(void) {
    make_temp_dir();
    char path[512];
    temp_path(path, sizeof(path), "manifest.json");
    ct_ckpt_manifest m = sample(), back;
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_manifest_write(path, &m), CT_OK);
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_manifest_read(path, &back), CT_OK);
    CU_ASSERT_EQUAL(back.format_version, CT_CKPT_FORMAT_VERSION);
    CU_ASSERT_EQUAL(back.step, 500);
    CU_ASSERT_EQUAL(back.world_size, 4);
    CU_ASSERT_STRING_EQUAL(back.strategy, "fsdp");
    CU_ASSERT_STRING_EQUAL(back.config_text, m.config_text);
    CU_ASSERT_EQUAL(back.n_units, 3);
    for (int u = 0; u < 3; u++) {
        CU_ASSERT_STRING_EQUAL(back.units[u].name, units[u].name);
        CU_ASSERT_EQUAL(back.units[u].numel, units[u].numel);
        CU_ASSERT_EQUAL(back.units[u].shard_len, units[u].shard_len);
        CU_ASSERT_EQUAL(back.units[u].padded, units[u].padded);
    }
    for (int r = 0; r < 4; r++) {
        CU_ASSERT_STRING_EQUAL(back.ranks[r].file, ranks[r].file);
        CU_ASSERT_EQUAL(back.ranks[r].file_bytes, ranks[r].file_bytes);
        CU_ASSERT_EQUAL(back.ranks[r].checksum, ranks[r].checksum);
    }
    CU_ASSERT_EQUAL(back.data_step, 500);
    CU_ASSERT_EQUAL(back.rng_seed, 9223372036854775783ull);
    ct_ckpt_manifest_free(&back);
    CU_ASSERT_PTR_NULL(back.units);
    remove_temp_dir();
}

/* Every single-byte change to the document fails, naming the file. */
static void test_manifest_any_flipped_byte_fails(void) {
    make_temp_dir();
    char path[512];
    temp_path(path, sizeof(path), "manifest.json");
    ct_ckpt_manifest m = sample(), back;
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_manifest_write(path, &m), CT_OK);
    char *good = read_text(path);
    size_t n = strlen(good);
    int failures = 0;
    for (size_t i = 0; i < n; i++) {
        char *bad = strdup(good);
        bad[i] = bad[i] == '7' ? '8' : (char)(bad[i] ^ 0x01);
        write_bytes(path, bad, n);
        ct_status st = ct_ckpt_manifest_read(path, &back);
        if (st == CT_OK) {
            printf("\n  flipping byte %zu was not detected", i);
            ct_ckpt_manifest_free(&back);
        } else {
            failures += strstr(ct_error_message(), path) != NULL;
        }
        free(bad);
    }
    CU_ASSERT_EQUAL(failures, (int)n);
    /* A digit of the step: valid JSON, caught by the document's checksum. */
    char *bad = strdup(good);
    char *step = strstr(bad, "\"step\": 500");
    step[9] = '6';
    write_text(path, bad);
    CU_ASSERT_NOT_EQUAL(ct_ckpt_manifest_read(path, &back), CT_OK);
    CU_ASSERT(message_has(path) && message_has("checksum mismatch"));
    free(bad), free(good);
    remove_temp_dir();
}

static void test_manifest_wrong_version_or_layout_fails(void) {
    make_temp_dir();
    char path[512];
    temp_path(path, sizeof(path), "manifest.json");
    ct_ckpt_manifest m = sample(), back;
    m.format_version = CT_CKPT_FORMAT_VERSION + 1;
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_manifest_write(path, &m), CT_OK);
    CU_ASSERT_NOT_EQUAL(ct_ckpt_manifest_read(path, &back), CT_OK);
    char newer[64];
    snprintf(newer, sizeof(newer), "format version %d", CT_CKPT_FORMAT_VERSION + 1);
    CU_ASSERT(message_has(path) && message_has(newer));
    m = sample();
    ct_ckpt_unit_layout wrong[3] = {units[0], units[1], {"h.1", 2, 1, 5}};
    m.units = wrong;
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_manifest_write(path, &m), CT_OK);
    CU_ASSERT_NOT_EQUAL(ct_ckpt_manifest_read(path, &back), CT_OK);
    CU_ASSERT(message_has(path) && message_has("unit 2 (h.1)"));
    m = sample();
    m.world_size = 3; /* the first three rank entries; layouts re-derived for 3 */
    ct_ckpt_unit_layout three[1] = {{"embed", 12345, 4115, 12345}};
    m.units = three, m.n_units = 1;
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_manifest_write(path, &m), CT_OK);
    CU_ASSERT_EQUAL(ct_ckpt_manifest_read(path, &back), CT_OK);
    CU_ASSERT_EQUAL(back.world_size, 3);
    ct_ckpt_manifest_free(&back);
    remove_temp_dir();
}

/* The parser's (jansson's) errors carry the byte offset (a checksum would catch these too, so
 * they are checked before it: the offsets below are just past where the text goes wrong). */
static void test_manifest_parser_names_byte_offset(void) {
    make_temp_dir();
    char path[512];
    temp_path(path, sizeof(path), "manifest.json");
    ct_ckpt_manifest back;
    const struct {
        const char *text, *message;
    } cases[] = {
        {"{\"a\": [1, 2,, 3]}", "byte 13: unexpected token near ','"},
        {"{\"a\": 1} x", "byte 10: end of file expected near 'x'"},
        {"{\"a\": 1, \"a\": 2}", "byte 12: duplicate object key"},
        {"{\"a\": \"x\\q\"}", "byte 10: invalid escape"},
        {"{\"a\": 012}", "byte 7: invalid token near '0'"},
        {"{\"a\": 99999999999999999999}", "byte 26: too big integer"},
        {"{\"a\": \"\\u0000\"}", "byte 14: \\u0000 is not allowed"},
        {"{\"a\": \"\xff\"}", "byte 7: unable to decode byte 0xff"},
        {"{\"a\": tru}", "byte 9: invalid token near 'tru'"},
        {"{\"a\": 1", "byte 7: '}' expected near end of file"},
        {"{\"checksum\": true}", "\"checksum\" must be a string, not true"},
        {"[]", "\"checksum\""},
    };
    for (size_t i = 0; i < CT_ARRAY_LEN(cases); i++) {
        write_text(path, cases[i].text);
        CU_ASSERT_NOT_EQUAL(ct_ckpt_manifest_read(path, &back), CT_OK);
        CU_ASSERT(message_has(path) && message_has(cases[i].message));
    }
    remove_temp_dir();
}

/* Rewrites the manifest text at path with `from` replaced by `to` and a valid own checksum
 * (docs/checkpoints.md), so that only the schema can refuse it. */
static void rewrite_valid(const char *path, const char *from, const char *to) {
    char *text = read_text(path), *at = strstr(text, from);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    size_t n = strlen(text) - strlen(from) + strlen(to);
    char *out = calloc(n + 1, 1);
    snprintf(out, n + 1, "%.*s%s%s", (int)(at - text), text, to, at + strlen(from));
    const char *key = "\n  \"checksum\": \"";
    char *digits = strstr(out, key) + strlen(key);
    memset(digits, '0', 16);
    char sum[17];
    snprintf(sum, sizeof(sum), "%016llx", (unsigned long long)ct_hash64(out, n, 0));
    memcpy(digits, sum, 16);
    write_text(path, out);
    free(out), free(text);
}

/* Schema errors name the file and the key (with its place in the document), on documents
 * whose own checksum is valid. */
static void test_manifest_schema_errors_name_the_key(void) {
    make_temp_dir();
    char path[512];
    temp_path(path, sizeof(path), "manifest.json");
    ct_ckpt_manifest m = sample(), back;
    const struct {
        const char *from, *to, *message;
    } cases[] = {
        {"\"step\": 500", "\"step\": true", "\"step\" must be an integer, not true"},
        {"\"step\": 500", "\"step\": 5e2", "\"step\" must be an integer, not a fraction"},
        {"\"numel\": 7,", "\"numel\": -7,", "\"units[1].numel\" is -7, out of range"},
        {"\"bytes\": 2000", "\"size\": 2000", "unknown key \"size\" in ranks[1]"},
        {"\"seed\": ", "\"seeds\": ", "unknown key \"seeds\" in rng"},
        {"\"strategy\": \"fsdp\",", "", "the document lacks \"strategy\""},
    };
    for (size_t i = 0; i < CT_ARRAY_LEN(cases); i++) {
        CU_ASSERT_EQUAL_FATAL(ct_ckpt_manifest_write(path, &m), CT_OK);
        rewrite_valid(path, cases[i].from, cases[i].to);
        CU_ASSERT_NOT_EQUAL(ct_ckpt_manifest_read(path, &back), CT_OK);
        CU_ASSERT(message_has(path) && message_has(cases[i].message));
    }
    /* The reader's integers are signed 64-bit: a larger seed is refused when writing. */
    m.rng_seed = 18446744073709551557ull;
    CU_ASSERT_NOT_EQUAL(ct_ckpt_manifest_write(path, &m), CT_OK);
    CU_ASSERT(message_has(path) && message_has("above 2^63 - 1"));
    /* Bytes of the config that are not UTF-8 are written as \u00XX and read back as U+00XX. */
    m = sample();
    m.config_text = "a\xff\xc3(b";
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_manifest_write(path, &m), CT_OK);
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_manifest_read(path, &back), CT_OK);
    CU_ASSERT_STRING_EQUAL(back.config_text, "a\xc3\xbf\xc3\x83(b");
    ct_ckpt_manifest_free(&back);
    remove_temp_dir();
}

/* ---------------------------------------------------------------- directories */

static void save_step(const char *dir, int64_t step, bool commit) {
    char tmp[512], path[600];
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_begin(dir, step, tmp, sizeof(tmp)), CT_OK);
    ct_ckpt_rank_path(tmp, 0, path, sizeof(path));
    write_text(path, "shard");
    snprintf(path, sizeof(path), "%s/manifest.json", tmp);
    ct_ckpt_manifest m = sample();
    m.step = step;
    CU_ASSERT_EQUAL_FATAL(ct_ckpt_manifest_write(path, &m), CT_OK);
    if (commit) CU_ASSERT_EQUAL_FATAL(ct_ckpt_commit(dir, step), CT_OK);
}

static bool exists(const char *dir, const char *name) {
    char path[600];
    snprintf(path, sizeof(path), "%s/%s", dir, name);
    struct stat sb;
    return stat(path, &sb) == 0;
}

static void test_latest_ignores_tmp_and_incomplete(void) {
    make_temp_dir();
    char dir[300], path[600];
    temp_path(dir, sizeof(dir), "ckpt");
    bool found = true;
    int64_t step = -1;
    CU_ASSERT_NOT_EQUAL(ct_ckpt_latest(dir, &found, &step, path, sizeof(path)), CT_OK);
    CU_ASSERT(message_has(dir)); /* no such directory yet */
    save_step(dir, 100, true);
    save_step(dir, 200, true);
    save_step(dir, 300, false); /* a save that crashed before its rename, manifest and all */
    /* A directory with the final name but no manifest, and names that only look like steps. */
    snprintf(path, sizeof(path), "%s/step_00000400", dir);
    CU_ASSERT_EQUAL(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/step_0000050", dir); /* 7 digits */
    CU_ASSERT_EQUAL(mkdir(path, 0755), 0);
    snprintf(path, sizeof(path), "%s/step_0000050/manifest.json", dir);
    write_text(path, "{}");
    CU_ASSERT(exists(dir, "step_00000300.tmp/manifest.json"));
    CU_ASSERT_EQUAL(ct_ckpt_latest(dir, &found, &step, path, sizeof(path)), CT_OK);
    CU_ASSERT(found);
    CU_ASSERT_EQUAL(step, 200);
    CU_ASSERT(strstr(path, "/ckpt/step_00000200") != NULL && !strstr(path, ".tmp"));
    /* The crashed save is redone: begin clears its leftovers and commit then succeeds. */
    char tmp[512];
    CU_ASSERT_EQUAL(ct_ckpt_begin(dir, 300, tmp, sizeof(tmp)), CT_OK);
    CU_ASSERT(!exists(dir, "step_00000300.tmp/manifest.json"));
    CU_ASSERT(exists(dir, "step_00000300.tmp"));
    /* Commit refuses a directory without its manifest. */
    CU_ASSERT_NOT_EQUAL(ct_ckpt_commit(dir, 300), CT_OK);
    CU_ASSERT(message_has("step_00000300.tmp") && message_has("manifest"));
    save_step(dir, 300, true);
    CU_ASSERT(!exists(dir, "step_00000300.tmp") && exists(dir, "step_00000300/rank_00000.ctk"));
    CU_ASSERT_EQUAL(ct_ckpt_latest(dir, &found, &step, NULL, 0), CT_OK);
    CU_ASSERT_EQUAL(step, 300);
    /* A second save of the same step never replaces a complete one. */
    save_step(dir, 300, false);
    CU_ASSERT_NOT_EQUAL(ct_ckpt_commit(dir, 300), CT_OK);
    CU_ASSERT(message_has("already exists"));
    remove_temp_dir();
}

static void test_latest_none_in_empty_dir(void) {
    make_temp_dir();
    bool found = true;
    int64_t step = 77;
    CU_ASSERT_EQUAL(ct_ckpt_latest(temp_dir, &found, &step, NULL, 0), CT_OK);
    CU_ASSERT(!found);
    CU_ASSERT_EQUAL(step, 77);
    remove_temp_dir();
}

static void test_prune_keeps_newest_and_ignores_tmp(void) {
    make_temp_dir();
    char dir[300];
    temp_path(dir, sizeof(dir), "ckpt");
    /* Saved out of order: prune goes by step, not by creation order or name listing. */
    save_step(dir, 30, true);
    save_step(dir, 10, true);
    save_step(dir, 20, true);
    save_step(dir, 5, false);
    CU_ASSERT_NOT_EQUAL(ct_ckpt_prune(dir, 0), CT_OK);
    CU_ASSERT(message_has("keep = 0"));
    CU_ASSERT(exists(dir, "step_00000010") && exists(dir, "step_00000020"));
    CU_ASSERT_EQUAL(ct_ckpt_prune(dir, 2), CT_OK);
    CU_ASSERT(!exists(dir, "step_00000010"));
    CU_ASSERT(exists(dir, "step_00000020") && exists(dir, "step_00000030"));
    CU_ASSERT(exists(dir, "step_00000005.tmp"));
    CU_ASSERT_EQUAL(ct_ckpt_prune(dir, 1), CT_OK);
    CU_ASSERT(!exists(dir, "step_00000020") && exists(dir, "step_00000030/manifest.json"));
    CU_ASSERT_EQUAL(ct_ckpt_prune(dir, 1), CT_OK); /* the newest alone stays */
    CU_ASSERT(exists(dir, "step_00000030/manifest.json"));
    CU_ASSERT(exists(dir, "step_00000005.tmp"));
    remove_temp_dir();
}

int main(void) {
    const ct_test_case cases[] = {
        {"test_manifest_round_trips_every_field", test_manifest_round_trips_every_field},
        {"test_manifest_any_flipped_byte_fails", test_manifest_any_flipped_byte_fails},
        {"test_manifest_wrong_version_or_layout_fails",
         test_manifest_wrong_version_or_layout_fails},
        {"test_manifest_parser_names_byte_offset", test_manifest_parser_names_byte_offset},
        {"test_manifest_schema_errors_name_the_key", test_manifest_schema_errors_name_the_key},
        {"test_latest_ignores_tmp_and_incomplete", test_latest_ignores_tmp_and_incomplete},
        {"test_latest_none_in_empty_dir", test_latest_none_in_empty_dir},
        {"test_prune_keeps_newest_and_ignores_tmp", test_prune_keeps_newest_and_ignores_tmp},
    };
    return ct_test_run("checkpoint_dir", cases, (int)CT_ARRAY_LEN(cases));
}
