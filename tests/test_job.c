/*
 * job.toml loading: defaults, every value type, overrides over the file, and every kind of
 * error with the file, line and key it must name. Each test writes its own job file into a
 * fresh temporary directory; messages are checked with strstr for the parts a user relies on
 * (the "file:line:" prefix, the key, the suggestion), not their exact wording.
 */
#include "job/job.h"
#include "job/toml.h"
#include "tests/test_util.h"

#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static char dir[64];
static char job_path[128]; /* <dir>/job.toml, written by write_job */

static void write_job(const char *text) {
    if (!dir[0]) {
        const char *tmp = getenv("TMPDIR");
        snprintf(dir, sizeof(dir), "%s/ct_test_job_XXXXXX", tmp && *tmp ? tmp : "/tmp");
        CU_ASSERT_FATAL(mkdtemp(dir) != NULL);
    }
    snprintf(job_path, sizeof(job_path), "%s/job.toml", dir);
    FILE *f = fopen(job_path, "w");
    CU_ASSERT_FATAL(f != NULL);
    fputs(text, f);
    fclose(f);
}

static ct_status load(ct_job *job, const char *text, int n, char **overrides) {
    write_job(text);
    ct_error_clear();
    return ct_job_load(job, job_path, n, overrides);
}

/* The load fails and the message holds every non-NULL needle. */
static void expect_error(const char *text, int n, char **overrides, const char *needle1,
                         const char *needle2, const char *needle3) {
    ct_job job;
    ct_status status = load(&job, text, n, overrides);
    CU_ASSERT(status != CT_OK);
    const char *msg = ct_error_message();
    const char *needles[] = {needle1, needle2, needle3};
    for (int i = 0; i < 3; i++) {
        if (!needles[i]) continue;
        bool found = strstr(msg, needles[i]) != NULL;
        CU_ASSERT(found);
        if (!found) fprintf(stderr, "\n  message \"%s\" lacks \"%s\"\n", msg, needles[i]);
    }
}

#define DATA "[data]\ntrain = \"data/train_*.bin\"\n"

static void test_defaults_match_the_key_table(void) {
    ct_job job;
    ct_job_defaults(&job);
    CU_ASSERT_STRING_EQUAL(job.model_arch, "gpt2");
    CU_ASSERT_EQUAL(job.model_n_layer, 4);
    CU_ASSERT_EQUAL(job.model_n_head, 4);
    CU_ASSERT_EQUAL(job.model_n_embd, 256);
    CU_ASSERT_EQUAL(job.model_vocab_size, 50257);
    CU_ASSERT_EQUAL(job.model_seq_len, 128);
    CU_ASSERT_STRING_EQUAL(job.data_format, "llmc");
    CU_ASSERT_FALSE(job.data_shuffle);
    CU_ASSERT_EQUAL(job.train_batch_size, 8);
    CU_ASSERT_EQUAL(job.train_steps, 100);
    CU_ASSERT_EQUAL(job.train_lr, 6e-4); /* exact: both sides are the literal 6e-4 */
    CU_ASSERT_EQUAL(job.train_min_lr, 6e-5);
    CU_ASSERT_STRING_EQUAL(job.train_schedule, "cosine");
    CU_ASSERT_EQUAL(job.train_beta2, 0.95);
    CU_ASSERT_EQUAL(job.train_eps, 1e-8);
    CU_ASSERT_EQUAL(job.train_seed, 1337);
    CU_ASSERT_EQUAL(job.train_eval_steps, 10);
    CU_ASSERT_STRING_EQUAL(job.parallel_strategy, "ddp");
    CU_ASSERT_EQUAL(job.log_every, 10);
    CU_ASSERT_STRING_EQUAL(job.device_type, "auto");
    CU_ASSERT_EQUAL(job.device_threads_per_rank, 0);
    /* Only data.train lacks a usable default. */
    CU_ASSERT_NOT_EQUAL(ct_job_validate(&job), CT_OK);
    CU_ASSERT_PTR_NOT_NULL(strstr(ct_error_message(), "data.train"));
    snprintf(job.data_train, sizeof(job.data_train), "x.bin");
    CU_ASSERT_EQUAL(ct_job_validate(&job), CT_OK);
}

static void test_every_value_type_parses(void) {
    ct_job job;
    ct_status status = load(&job,
                            "# a job\n"
                            "\n"
                            "  [model]   # the network\n"
                            "n_layer = +1_2   # integer with sign and separator\n"
                            "n_embd=768\n"
                            "\tn_head = 12\n"
                            "init_from = 'C:\\models\\gpt2.bin'  # literal: no escapes\n"
                            "[data]\n"
                            "train = \"a \\\"b\\\" \\\\ c\\td\\n\"\n"
                            "shuffle = true\n"
                            "format = \"nanogpt\"\n"
                            "[train]\n"
                            "lr = 1e-3\n"
                            "min_lr = 0\n"
                            "beta1 = 0.5\n"
                            "weight_decay = 2.5E-1\n"
                            "grad_clip = 3\n"
                            "seed = 9_000_000_000\n",
                            0, NULL);
    CU_ASSERT_EQUAL_FATAL(status, CT_OK);
    CU_ASSERT_EQUAL(job.model_n_layer, 12);
    CU_ASSERT_EQUAL(job.model_n_embd, 768);
    CU_ASSERT_EQUAL(job.model_n_head, 12);
    CU_ASSERT_STRING_EQUAL(job.model_init_from, "C:\\models\\gpt2.bin");
    CU_ASSERT_STRING_EQUAL(job.data_train, "a \"b\" \\ c\td\n");
    CU_ASSERT_TRUE(job.data_shuffle);
    CU_ASSERT_STRING_EQUAL(job.data_format, "nanogpt");
    CU_ASSERT_EQUAL(job.train_lr, 1e-3); /* exact: strtod of the same literal */
    CU_ASSERT_EQUAL(job.train_min_lr, 0.0);
    CU_ASSERT_EQUAL(job.train_beta1, 0.5);
    CU_ASSERT_EQUAL(job.train_weight_decay, 0.25);
    CU_ASSERT_EQUAL(job.train_grad_clip, 3.0); /* an integer is accepted for a float */
    CU_ASSERT_EQUAL(job.train_seed, 9000000000LL);
    CU_ASSERT_STRING_EQUAL(job.source_path, job_path);
}

static void test_crlf_lines_and_hashes_in_strings(void) {
    ct_job job;
    ct_status status = load(&job,
                            "[data]\r\ntrain = \"a#b\"  # the '#' in quotes is no comment\r\n"
                            "val = 'c # d'\r\n\r\n[train]\r\nsteps = 7\r\n",
                            0, NULL);
    CU_ASSERT_EQUAL_FATAL(status, CT_OK);
    CU_ASSERT_STRING_EQUAL(job.data_train, "a#b");
    CU_ASSERT_STRING_EQUAL(job.data_val, "c # d");
    CU_ASSERT_EQUAL(job.train_steps, 7);
    expect_error("[data]\r\ntrain = 'x'\r\n[train]\r\nsteps = 0\r\n", 0, NULL,
                 "job.toml:4:", "train.steps", NULL);
}

static void test_arrays_parse_but_no_key_takes_one(void) {
    ct_job_toml_value v;
    CU_ASSERT_EQUAL(ct_job_toml_parse_value("[1, 2.5, \"x\", 'y', true,]", "here", "k", &v), CT_OK);
    CU_ASSERT_EQUAL(v.type, CT_JOB_TOML_ARRAY);
    CU_ASSERT_EQUAL(v.n_items, 5);
    CU_ASSERT_EQUAL(ct_job_toml_parse_value("[]", "here", "k", &v), CT_OK);
    CU_ASSERT_EQUAL(v.n_items, 0);
    CU_ASSERT_NOT_EQUAL(ct_job_toml_parse_value("[1, 2", "here", "k", &v), CT_OK);
    CU_ASSERT_NOT_EQUAL(ct_job_toml_parse_value("[1 2]", "here", "k", &v), CT_OK);
    CU_ASSERT_NOT_EQUAL(ct_job_toml_parse_value("[[1]]", "here", "k", &v), CT_OK);
    expect_error(DATA "[model]\nn_layer = [1, 2]\n", 0, NULL, "job.toml:4:", "model.n_layer",
                 "[1, 2]");
}

static void test_number_syntax_is_strict(void) {
    ct_job_toml_value v;
    const char *bad[] = {"1__0",
                         "_1",
                         "1_",
                         "01",
                         "1.",
                         ".5",
                         "1e",
                         "0x10",
                         "inf",
                         "nan",
                         "+",
                         "1.5.2",
                         "99999999999999999999",
                         "1e999"};
    for (size_t i = 0; i < CT_ARRAY_LEN(bad); i++) {
        bool rejected = ct_job_toml_parse_value(bad[i], "here", "k", &v) != CT_OK;
        CU_ASSERT(rejected);
        if (!rejected) fprintf(stderr, "\n  '%s' was accepted\n", bad[i]);
    }
    CU_ASSERT_EQUAL(ct_job_toml_parse_value("-0", "here", "k", &v), CT_OK);
    CU_ASSERT_EQUAL(ct_job_toml_parse_value("6e-05", "here", "k", &v), CT_OK);
    CU_ASSERT_EQUAL(v.number, 6e-5);
}

static void test_overrides_apply_after_the_file(void) {
    char *overrides[] = {"train.lr=1e-3",      "data.train=data/x_*.bin", "model.n_layer = 6",
                         "data.val=\"v.bin\"", "train.lr=2e-3",           "data.shuffle=true"};
    ct_job job;
    ct_status status = load(&job, DATA "[train]\nlr = 5e-4\n[model]\nn_layer = 2\n", 6, overrides);
    CU_ASSERT_EQUAL_FATAL(status, CT_OK);
    CU_ASSERT_EQUAL(job.train_lr, 2e-3);                    /* the last override of a key wins */
    CU_ASSERT_STRING_EQUAL(job.data_train, "data/x_*.bin"); /* a bare word is a string */
    CU_ASSERT_STRING_EQUAL(job.data_val, "v.bin");
    CU_ASSERT_EQUAL(job.model_n_layer, 6);
    CU_ASSERT_TRUE(job.data_shuffle);
}

static void test_unknown_key_suggests_the_nearest(void) {
    expect_error(DATA "[train]\nsteps = 10\n\n# lr\n\nlrr = 1\n", 0, NULL,
                 "job.toml:8:", "unknown key 'train.lrr'", "did you mean 'train.lr'?");
    expect_error(DATA "[train]\nevery = 5\n", 0, NULL, "job.toml:4:", "'train.every'",
                 "did you mean 'log.every'?");
    expect_error("lr = 1\n" DATA, 0, NULL, "job.toml:1:", "'lr'", "did you mean 'train.lr'?");
    expect_error(DATA "[train]\nfoo = 5\n", 0, NULL, "job.toml:4:", "'train.foo'", "batch_size");
}

static void test_unknown_table_suggests_the_nearest(void) {
    expect_error(DATA "[trian]\nlr = 1\n", 0, NULL, "job.toml:3:", "[trian]",
                 "did you mean [train]?");
    expect_error(DATA "[optimizer]\n", 0, NULL, "job.toml:3:", "[optimizer]", "[model]");
}

static void test_wrong_types_name_key_and_value(void) {
    expect_error(DATA "[model]\nn_layer = \"four\"\n", 0, NULL,
                 "job.toml:4:", "model.n_layer must be an integer", "got \"four\"");
    expect_error(DATA "[model]\nn_layer = 4.0\n", 0, NULL, "job.toml:4:", "model.n_layer", "4.0");
    expect_error(DATA "[train]\nlr = true\n", 0, NULL, "job.toml:4:", "train.lr must be a number",
                 "true");
    expect_error("[data]\nshuffle = 1\ntrain = 'x'\n", 0, NULL, "job.toml:2:", "data.shuffle",
                 "true or false");
    expect_error(DATA "[model]\narch = 2\n", 0, NULL, "job.toml:4:", "model.arch must be a string",
                 NULL);
    expect_error(DATA "[model]\nn_layer = four\n", 0, NULL, "job.toml:4:", "n_layer",
                 "needs quotes");
}

static void test_out_of_range_names_the_allowed_range(void) {
    expect_error(DATA "[model]\nn_layer = 0\n", 0, NULL, "job.toml:4:", "model.n_layer = 0",
                 "1 to 1024");
    expect_error(DATA "[model]\nvocab_size = 70000\n", 0, NULL, "job.toml:4:", "model.vocab_size",
                 "65536");
    expect_error(DATA "[train]\nbeta2 = 1.0\n", 0, NULL, "job.toml:4:", "train.beta2 = 1.0",
                 ">= 0 and < 1");
    expect_error(DATA "[train]\neps = 0\n", 0, NULL, "job.toml:4:", "train.eps", "> 0");
    expect_error(DATA "[train]\ngrad_clip = -1\n", 0, NULL, "job.toml:4:", "train.grad_clip",
                 ">= 0");
    expect_error(DATA "[model]\nn_layer = 3000000000\n", 0, NULL, "job.toml:4:", "model.n_layer",
                 "3000000000");
}

static void test_bad_choice_lists_the_choices(void) {
    expect_error(DATA "[train]\nschedule = \"cosin\"\n", 0, NULL,
                 "job.toml:4:", "train.schedule = \"cosin\"", "did you mean \"cosine\"?");
    expect_error(DATA "[parallel]\nstrategy = \"pipeline\"\n", 0, NULL,
                 "job.toml:4:", "parallel.strategy", "\"zero1\"");
}

static void test_syntax_errors_name_the_line(void) {
    expect_error(DATA "[train]\nlr = 1e-3\nsteps = 5\nlr = 2e-3\n", 0, NULL,
                 "job.toml:6:", "duplicate key 'lr'", "line 4");
    expect_error(DATA "[model]\n\narch = \"gpt2\n", 0, NULL, "job.toml:5:", "unterminated string",
                 "arch");
    expect_error(DATA "[train]\nlr 1e-3\n", 0, NULL, "job.toml:4:", "expected '=' after key 'lr'",
                 NULL);
    expect_error(DATA "[train]\nlr = 1e-3 x\n", 0, NULL, "job.toml:4:", "after the value of 'lr'",
                 NULL);
    expect_error(DATA "[train]\nlr = 1e-3x\n", 0, NULL, "job.toml:4:", "'x'", "lr");
    expect_error(DATA "[train]\nlr =\n", 0, NULL, "job.toml:4:", "missing value", "lr");
    expect_error(DATA "[data]\n", 0, NULL, "job.toml:3:", "duplicate table [data]", "line 1");
    expect_error(DATA "[train.x]\n", 0, NULL, "job.toml:3:", "nested", NULL);
    expect_error(DATA "[[train]]\n", 0, NULL, "job.toml:3:", "arrays of tables", NULL);
    expect_error(DATA "[train] x\n", 0, NULL, "job.toml:3:", "after [train]", NULL);
    expect_error(DATA "[model]\narch = \"g\\qpt\"\n", 0, NULL, "job.toml:4:", "escape", NULL);
    expect_error(DATA "[train]\nlr.x = 1\n", 0, NULL, "job.toml:4:", "dotted keys", NULL);
}

/* A UTF-8 byte order mark (what some editors put first) is skipped; a non-ASCII letter in a
 * key or table name is named as such, with the file and line. */
static void test_bom_is_skipped_and_non_ascii_keys_are_named(void) {
    ct_job job;
    CU_ASSERT_EQUAL_FATAL(load(&job, "\xEF\xBB\xBF" DATA "[train]\nsteps = 9\n", 0, NULL), CT_OK);
    CU_ASSERT_STRING_EQUAL(job.data_train, "data/train_*.bin");
    CU_ASSERT_EQUAL(job.train_steps, 9);
    CU_ASSERT_EQUAL_FATAL(
        ct_job_load_text(&job, "\xEF\xBB\xBF" DATA "[train]\nsteps = 8\n", "saved"), CT_OK);
    CU_ASSERT_EQUAL(job.train_steps, 8);
    expect_error(DATA "[train]\nst\xC3\xA9ps = 5\n", 0, NULL,
                 "job.toml:4: key 'st\xC3\xA9ps' contains a non-ASCII character", "A-Z a-z 0-9 _ -",
                 NULL);
    expect_error(DATA "[train]\n\xC3\xA9 = 5\n", 0, NULL, "job.toml:4: key", "non-ASCII", NULL);
    expect_error(DATA "[tr\xC3\xA4in]\n", 0, NULL, "job.toml:3: table name 'tr\xC3\xA4in'",
                 "non-ASCII", NULL);
    /* A mark anywhere but at the start is a non-ASCII byte like any other. */
    expect_error(DATA "\xEF\xBB\xBF[train]\n", 0, NULL, "job.toml:3:", "non-ASCII", NULL);
}

static void test_relations_name_the_line_that_set_them(void) {
    expect_error(DATA "[model]\nn_head = 3\nn_embd = 100\n", 0, NULL,
                 "job.toml:5:", "model.n_embd must be a multiple of model.n_head",
                 "model.n_head = 3");
    /* Either key may be the one to fix: the message says where each was set. */
    expect_error(DATA "[model]\nn_head = 3\nn_embd = 32\n", 0, NULL,
                 "job.toml:5:", "model.n_embd = 32", "model.n_head = 3 (/");
    expect_error(DATA "[model]\nn_head = 3\nn_embd = 32\n", 0, NULL, "job.toml:5:", "job.toml:4)",
                 NULL);
    char *head_override[] = {"model.n_head=3"};
    expect_error(DATA "[model]\nn_embd = 32\n", 1, head_override,
                 "job.toml:4:", "model.n_embd = 32",
                 "model.n_head = 3 (command line override 'model.n_head=3')");
    /* A keyword in another case is a typo, not the path of a checkpoint. */
    expect_error(DATA "[checkpoint]\nresume = \"Never\"\n", 0, NULL,
                 "job.toml:4:", "checkpoint.resume must be", "\"Never\"");
    expect_error(DATA "[train]\nlr = 1e-4\nmin_lr = 1e-3\n", 0, NULL,
                 "job.toml:5:", "train.min_lr must be <= train.lr", NULL);
    expect_error(DATA "[train]\nsteps = 10\nwarmup_steps = 20\n", 0, NULL,
                 "job.toml:5:", "train.warmup_steps", NULL);
    /* Nothing set data.train: the message names the file and the key. */
    expect_error("[train]\nsteps = 10\n", 0, NULL, "job.toml", "data.train must be set", NULL);
}

static void test_bad_overrides_name_the_override(void) {
    char *unknown[] = {"train.lrr=1"};
    expect_error(DATA, 1, unknown, "command line override 'train.lrr=1'",
                 "did you mean 'train.lr'?", NULL);
    char *wrong_type[] = {"train.steps=1e3"};
    expect_error(DATA, 1, wrong_type, "command line override 'train.steps=1e3'",
                 "train.steps must be an integer", NULL);
    char *bare_word[] = {"train.lr=fast"};
    expect_error(DATA, 1, bare_word, "command line override 'train.lr=fast'", "\"fast\"", NULL);
    char *no_equals[] = {"train.lr"};
    expect_error(DATA, 1, no_equals, "command line override 'train.lr'", "section.key=value", NULL);
    char *unterminated[] = {"data.val=\"x"};
    expect_error(DATA, 1, unterminated, "command line override 'data.val=\"x'", "unterminated",
                 NULL);
    char *relation[] = {"model.n_head=5"};
    expect_error(DATA, 1, relation, "command line override 'model.n_head=5'", "multiple", NULL);
}

static void test_missing_file_is_an_io_error(void) {
    ct_job job;
    ct_error_clear();
    CU_ASSERT_EQUAL(ct_job_load(&job, "/nonexistent/dir/job.toml", 0, NULL), CT_ERR_IO);
    CU_ASSERT_PTR_NOT_NULL(strstr(ct_error_message(), "/nonexistent/dir/job.toml"));
}

static void test_printed_job_reloads_identically(void) {
    char *overrides[] = {"model.init_from='w\\in.bin'",
                         "log.dir=\"out \\\"q\\\"\\t\\\\\"",
                         "train.lr=3.14159e-4",
                         "train.weight_decay=0.3",
                         "train.seed=123456789012345",
                         "data.shuffle=true",
                         "parallel.strategy=fsdp",
                         "train.min_lr=1e-7",
                         "train.grad_clip=0"};
    ct_job job, again;
    CU_ASSERT_EQUAL_FATAL(load(&job, DATA, 9, overrides), CT_OK);
    write_job("");
    FILE *f = fopen(job_path, "w");
    CU_ASSERT_FATAL(f != NULL);
    ct_job_print(&job, f);
    fclose(f);
    CU_ASSERT_EQUAL_FATAL(ct_job_load(&again, job_path, 0, NULL), CT_OK);
    memset(job.source_path, 0, sizeof(job.source_path));
    memset(again.source_path, 0, sizeof(again.source_path));
    CU_ASSERT_EQUAL(memcmp(&job, &again, sizeof(job)), 0); /* bitwise, doubles included */
    CU_ASSERT_STRING_EQUAL(again.log_dir, "out \"q\"\t\\");
}

static void test_run_dir_comes_from_log_dir_or_job_name(void) {
    ct_job job;
    char out[CT_JOB_STR];
    ct_job_defaults(&job);
    /* Beside the job file: two job files of the same name in two folders never share one. */
    snprintf(job.source_path, sizeof(job.source_path), "configs/small_run.toml");
    ct_job_run_dir(&job, out, sizeof(out));
    CU_ASSERT_STRING_EQUAL(out, "configs/runs/small_run");
    snprintf(job.source_path, sizeof(job.source_path), "/abs/a/job.toml");
    ct_job_run_dir(&job, out, sizeof(out));
    CU_ASSERT_STRING_EQUAL(out, "/abs/a/runs/job");
    snprintf(job.source_path, sizeof(job.source_path), "plain");
    ct_job_run_dir(&job, out, sizeof(out));
    CU_ASSERT_STRING_EQUAL(out, "runs/plain");
    snprintf(job.log_dir, sizeof(job.log_dir), "/scratch/r1");
    ct_job_run_dir(&job, out, sizeof(out));
    CU_ASSERT_STRING_EQUAL(out, "/scratch/r1");
}

static void test_docs_list_every_printed_key(void) {
    char *docs = NULL, *printed = NULL;
    size_t docs_bytes = 0, printed_bytes = 0;
    FILE *d = open_memstream(&docs, &docs_bytes), *p = open_memstream(&printed, &printed_bytes);
    CU_ASSERT_FATAL(d && p);
    ct_job job;
    ct_job_defaults(&job);
    ct_job_write_docs(d);
    ct_job_print(&job, p);
    fclose(d);
    fclose(p);
    /* Every "key = value" line of the printout is a row "| `key` | ... | `value` |" of the docs. */
    for (char *line = strtok(printed, "\n"); line; line = strtok(NULL, "\n")) {
        char row[CT_JOB_STR];
        if (line[0] == '[') {
            snprintf(row, sizeof(row), "## %s\n", line);
        } else {
            char *eq = strstr(line, " = ");
            CU_ASSERT_FATAL(eq != NULL);
            snprintf(row, sizeof(row), "| `%.*s` |", (int)(eq - line), line);
            char cell[CT_JOB_KEY_VALUE + 8];
            snprintf(cell, sizeof(cell), "| `%s` |", eq + 3);
            bool has_default = strstr(docs, cell) != NULL;
            CU_ASSERT(has_default);
        }
        bool found = strstr(docs, row) != NULL;
        CU_ASSERT(found);
        if (!found) fprintf(stderr, "\n  docs lack \"%s\"\n", row);
    }
    free(docs);
    free(printed);
}

int main(void) {
    static const ct_test_case cases[] = {
        {"defaults_match_the_key_table", test_defaults_match_the_key_table},
        {"every_value_type_parses", test_every_value_type_parses},
        {"crlf_lines_and_hashes_in_strings", test_crlf_lines_and_hashes_in_strings},
        {"arrays_parse_but_no_key_takes_one", test_arrays_parse_but_no_key_takes_one},
        {"number_syntax_is_strict", test_number_syntax_is_strict},
        {"overrides_apply_after_the_file", test_overrides_apply_after_the_file},
        {"unknown_key_suggests_the_nearest", test_unknown_key_suggests_the_nearest},
        {"unknown_table_suggests_the_nearest", test_unknown_table_suggests_the_nearest},
        {"wrong_types_name_key_and_value", test_wrong_types_name_key_and_value},
        {"out_of_range_names_the_allowed_range", test_out_of_range_names_the_allowed_range},
        {"bad_choice_lists_the_choices", test_bad_choice_lists_the_choices},
        {"syntax_errors_name_the_line", test_syntax_errors_name_the_line},
        {"bom_is_skipped_and_non_ascii_keys_are_named",
         test_bom_is_skipped_and_non_ascii_keys_are_named},
        {"relations_name_the_line_that_set_them", test_relations_name_the_line_that_set_them},
        {"bad_overrides_name_the_override", test_bad_overrides_name_the_override},
        {"missing_file_is_an_io_error", test_missing_file_is_an_io_error},
        {"printed_job_reloads_identically", test_printed_job_reloads_identically},
        {"run_dir_comes_from_log_dir_or_job_name", test_run_dir_comes_from_log_dir_or_job_name},
        {"docs_list_every_printed_key", test_docs_list_every_printed_key},
    };
    int failed = ct_test_run("job", cases, (int)CT_ARRAY_LEN(cases));
    if (dir[0]) {
        unlink(job_path);
        rmdir(dir);
    }
    return failed;
}
