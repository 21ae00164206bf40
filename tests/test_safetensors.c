/*
 * safetensors with Hugging Face GPT-2 names (checkpoint/safetensors.c): a written model reads
 * back bit for bit (memcmp: nothing is computed, so any difference is a bug), Conv1D weights
 * are stored transposed, HF's variants (no "transformer." prefix, mask buffers, a tied
 * lm_head) read the same, and every malformed or mismatched file (overlapping or gapped
 * data_offsets included) fails with a message naming the file and, where one is involved, the
 * tensor.
 */
#define _GNU_SOURCE /* nftw, mkdtemp */
#include "checkpoint/checkpoint.h"
#include "tests/test_temp_dir.h"
#include "tests/test_util.h"

#include <errno.h>
#include <signal.h>
#include <string.h>
#include <sys/resource.h>
#include <unistd.h>

/* Odd sizes: V not a multiple of anything, C != 3C != 4C so a transposed shape differs. */
static const ct_gpt_config config = {
    .n_layer = 2, .n_head = 2, .n_embd = 8, .vocab_size = 11, .seq_len = 5};

static char model_path[300];

/* A fully bound model with `config`'s shape changed by the arguments (0 = keep). */
static void make_model(ct_gpt *gpt, int n_layer, int n_embd, uint64_t seed) {
    ct_gpt_config c = config;
    if (n_layer) c.n_layer = n_layer;
    if (n_embd) c.n_embd = n_embd;
    CU_ASSERT_FATAL(ct_gpt_init(gpt, &c) == CT_OK);
    CU_ASSERT_FATAL(ct_gpt_alloc_full(gpt) == CT_OK);
    ct_gpt_init_weights(gpt, seed);
    /* LayerNorm ones and zero biases would hide a swap of weight and bias: perturb all. */
    for (int u = 0; u < gpt->n_units; u++)
        for (int64_t i = 0; i < gpt->units[u].numel; i++)
            ((float *)gpt->units[u].data)[i] += 0.001f * (float)(i % 7) + 0.01f * (float)u;
}

static bool same_params(const ct_gpt *a, const ct_gpt *b) {
    for (int u = 0; u < a->n_units; u++)
        if (memcmp(a->units[u].data, b->units[u].data, sizeof(float) * a->units[u].numel) != 0)
            return false;
    return true;
}

static bool message_has(const char *needle) {
    bool found = strstr(ct_error_message(), needle) != NULL;
    if (!found) printf("\n  message \"%s\" lacks \"%s\"\n", ct_error_message(), needle);
    return found;
}

/* The file at model_path: header text (NUL-terminated) and data, malloc'd. */
static void load_file(char **header, uint8_t **data, size_t *data_bytes) {
    FILE *f = fopen(model_path, "rb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    uint8_t length[8];
    CU_ASSERT_FATAL(fread(length, 1, 8, f) == 8);
    size_t n = (size_t)ct_ckpt_get_u64(length);
    *header = calloc(n + 1, 1);
    CU_ASSERT_FATAL(fread(*header, 1, n, f) == n);
    fseek(f, 0, SEEK_END);
    *data_bytes = (size_t)ftell(f) - 8 - n;
    *data = malloc(*data_bytes + 4096);
    fseek(f, (long)(8 + n), SEEK_SET);
    CU_ASSERT_FATAL(fread(*data, 1, *data_bytes, f) == *data_bytes);
    fclose(f);
}

/* Writes a safetensors file: length, header (padded to 8 with spaces), data. */
static void write_file(const char *path, const char *header, const uint8_t *data, size_t bytes) {
    size_t n = strlen(header), padded = (n + 7) / 8 * 8;
    FILE *f = fopen(path, "wb");
    CU_ASSERT_PTR_NOT_NULL_FATAL(f);
    uint8_t length[8];
    ct_ckpt_put_u64(length, padded);
    fwrite(length, 1, 8, f);
    fwrite(header, 1, n, f);
    for (size_t i = n; i < padded; i++)
        fputc(' ', f);
    fwrite(data, 1, bytes, f);
    fclose(f);
}

/* s with every `from` replaced by `to` (malloc'd). */
static char *replace_all(const char *s, const char *from, const char *to) {
    size_t cap = strlen(s) * 2 + 4096, n = 0, lf = strlen(from), lt = strlen(to);
    char *out = malloc(cap);
    for (const char *p = s; *p;) {
        if (strncmp(p, from, lf) == 0) {
            memcpy(out + n, to, lt), n += lt, p += lf;
        } else {
            out[n++] = *p++;
        }
    }
    out[n] = '\0';
    return out;
}

/* `hdr` with one more tensor entry (first in the header) whose bytes are [*end, *end + bytes)
 * of the data, *end advanced past them (malloc'd). The model's data ends at data_bytes, so
 * entries added from *end = data_bytes on tile the data as the format requires. */
static char *add_tensor(const char *hdr, const char *name, const char *dtype, const char *shape,
                        size_t bytes, size_t *end) {
    char entry[256];
    snprintf(entry, sizeof(entry),
             "{\"%s\":{\"dtype\":\"%s\",\"shape\":[%s],\"data_offsets\":[%zu,%zu]},", name, dtype,
             shape, *end, *end + bytes);
    *end += bytes;
    char *out = malloc(strlen(hdr) + strlen(entry) + 1);
    strcpy(out, entry);
    strcat(out, hdr + 1); /* after the header's '{' */
    return out;
}

/* Reads `path` into a fresh model of `config`'s shape; returns the status. */
static ct_status read_into_fresh(const char *path, int n_layer, int n_embd, ct_gpt *gpt) {
    make_model(gpt, n_layer, n_embd, 99);
    return ct_ckpt_safetensors_read(path, gpt);
}

/* ---------------------------------------------------------------- tests */

/* Every test starts from one written model: `gpt`, its file at model_path, and the file's
 * header text and data (what the tests edit into other files). */
static ct_gpt gpt;
static char *header;
static uint8_t *data;
static size_t data_bytes;

static void setup(void) {
    make_temp_dir();
    temp_path(model_path, sizeof(model_path), "model.safetensors");
    make_model(&gpt, 0, 0, 7);
    const char *meta[] = {"step", "12", "source", "a \"quoted\" path", NULL};
    CU_ASSERT_FATAL(ct_ckpt_safetensors_write(model_path, &gpt, meta) == CT_OK);
    load_file(&header, &data, &data_bytes);
}

static void teardown(void) {
    free(header), free(data);
    ct_gpt_free(&gpt);
    remove_temp_dir();
}

static void test_round_trip_is_bitwise(void) {
    ct_gpt back;
    setup();
    CU_ASSERT(read_into_fresh(model_path, 0, 0, &back) == CT_OK);
    CU_ASSERT(same_params(&gpt, &back));
    /* Through the sniffing entry point too. */
    ct_gpt_init_weights(&back, 5);
    CU_ASSERT(ct_ckpt_model_read(model_path, &back) == CT_OK);
    CU_ASSERT(same_params(&gpt, &back));
    ct_gpt_free(&back);
    teardown();
}

static void test_layout_is_hf_gpt2(void) {
    setup();
    CU_ASSERT(strlen(header) % 8 == 0);
    CU_ASSERT(strstr(header, "\"__metadata__\":{\"format\":\"pt\",\"step\":\"12\"") != NULL);
    CU_ASSERT(strstr(header, "a \\\"quoted\\\" path") != NULL);
    CU_ASSERT(strstr(header, "lm_head") == NULL);
    CU_ASSERT(strstr(header, "\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[11,8],"
                             "\"data_offsets\":[0,352]}") != NULL);
    /* c_attn.weight is (C, 3C): element [i][j] is ctrain's qkv weight [j][i]. */
    const char *key = "\"transformer.h.1.attn.c_attn.weight\":{\"dtype\":\"F32\",\"shape\":[8,24],"
                      "\"data_offsets\":[";
    const char *at = strstr(header, key);
    CU_ASSERT_PTR_NOT_NULL_FATAL(at);
    unsigned long long begin = 0, end = 0;
    CU_ASSERT(sscanf(at + strlen(key), "%llu,%llu", &begin, &end) == 2);
    CU_ASSERT_FATAL(end - begin == 4 * 8 * 24 && end <= data_bytes);
    const ct_tensor *qkv = ct_gpt_param(&gpt, "block.1.attn.qkv.weight");
    const float *stored = (const float *)(data + begin), *w = ct_tensor_f32(qkv);
    bool transposed = true;
    for (int i = 0; i < 8; i++)
        for (int j = 0; j < 24; j++)
            transposed = transposed && stored[i * 24 + j] == w[j * 8 + i];
    CU_ASSERT(transposed);
    teardown();
}

static void test_hf_variants_read_the_same(void) {
    ct_gpt back;
    char path[300];
    setup();
    temp_path(path, sizeof(path), "hf.safetensors");
    /* HF's gpt2 file: no prefix, mask buffers (any dtype), a tied lm_head equal to wte, each
     * in bytes of its own after the model's (data has 4096 spare bytes). */
    size_t end = data_bytes;
    memcpy(data + end, data, 352); /* lm_head.weight = wte */
    memset(data + end + 352, 0, 5);
    char *bare = replace_all(header, "transformer.", "");
    char *head = add_tensor(bare, "lm_head.weight", "F32", "11,8", 352, &end);
    char *masked = add_tensor(head, "h.1.attn.masked_bias", "F32", "", 4, &end);
    char *extra = add_tensor(masked, "h.0.attn.bias", "BOOL", "1", 1, &end);
    write_file(path, extra, data, end);
    CU_ASSERT(read_into_fresh(path, 0, 0, &back) == CT_OK);
    CU_ASSERT(same_params(&gpt, &back));
    ct_gpt_free(&back);
    /* An lm_head that differs from wte cannot be loaded into a tied model. */
    memcpy(data + data_bytes, data + 4, 352);
    write_file(path, extra, data, end);
    CU_ASSERT(read_into_fresh(path, 0, 0, &back) != CT_OK);
    CU_ASSERT(message_has(path) && message_has("lm_head.weight differs from wte"));
    ct_gpt_free(&back);
    free(bare), free(head), free(masked), free(extra);
    teardown();
}

/* Writes `bad_header` with `bytes` of data to a new file and expects reading it to fail with a
 * message naming the file and holding `needle`. */
static void expect_failure_bytes(const char *bad_header, size_t bytes, const char *needle) {
    char path[300];
    temp_path(path, sizeof(path), "bad.safetensors");
    write_file(path, bad_header, data, bytes);
    ct_gpt back;
    CU_ASSERT(read_into_fresh(path, 0, 0, &back) != CT_OK);
    CU_ASSERT(message_has(path) && message_has(needle));
    ct_gpt_free(&back);
}

/* The same with the model's data. */
static void expect_failure(const char *bad_header, const char *needle) {
    expect_failure_bytes(bad_header, data_bytes, needle);
}

static void test_malformed_files_fail_naming_the_file(void) {
    setup();
    const char *wte = "\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[11,8],"
                      "\"data_offsets\":[0,352]}";
    struct {
        const char *to, *needle;
    } cases[] = {
        {"\"transformer.wte.weight\":{\"dtype\":\"F16\",\"shape\":[11,8],\"data_offsets\":[0,"
         "352]}",
         "tensor transformer.wte.weight has dtype F16"},
        {"\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[11,8],\"data_offsets\":[0,"
         "99999999]}",
         "data_offsets [0, 99999999)"},
        {"\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[11,8],\"data_offsets\":[352,"
         "0]}",
         "data_offsets"},
        {"\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[11,8]}",
         "needs dtype, shape and data_offsets"},
        {"\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[11,8],\"data_offsets\":[0,"
         "352],\"extra\":1}",
         "tensor transformer.wte.weight: unknown key \"extra\""},
        {"\"transformer.wte.weight\":{\"dtype\":\"F32\",\"dtype\":\"F32\",\"shape\":[11,8],"
         "\"data_offsets\":[0,352]}",
         "duplicate object key"},
        {"\"transformer.wte.weight\":{\"dtype\":\"F32\",\"shape\":[11,8],\"data_offsets\":[0,"
         "352]",
         "safetensors header, byte"},
        {"\"transformer.wtf.weight\":{\"dtype\":\"F32\",\"shape\":[11,8],\"data_offsets\":[0,"
         "352]}",
         "no tensor wte.weight"},
    };
    for (size_t i = 0; i < CT_ARRAY_LEN(cases); i++) {
        char *bad = replace_all(header, wte, cases[i].to);
        CU_ASSERT(strcmp(bad, header) != 0);
        expect_failure(bad, cases[i].needle);
        free(bad);
    }
    expect_failure("{\"a\":", "safetensors header, byte 8: unexpected token near end of file");
    /* A tensor twice and an unknown tensor, each with bytes of its own. */
    size_t end = data_bytes;
    char *twice = add_tensor(header, "wte.weight", "F32", "11,8", 352, &end);
    expect_failure_bytes(twice, end, "tensor wte.weight is there twice");
    end = data_bytes;
    char *gate = add_tensor(header, "transformer.h.0.mlp.gate.weight", "F32", "1", 4, &end);
    expect_failure_bytes(gate, end, "unexpected tensor transformer.h.0.mlp.gate.weight");
    free(twice), free(gate);
    /* A header length beyond the file, and a file too short for one. */
    char path[300];
    temp_path(path, sizeof(path), "short.safetensors");
    uint8_t bytes[16] = {0xff, 0xff, 0, 0, 0, 0, 0, 0, '{', '}'};
    write_bytes(path, bytes, sizeof(bytes));
    ct_gpt back;
    CU_ASSERT(read_into_fresh(path, 0, 0, &back) != CT_OK);
    CU_ASSERT(message_has(path) && message_has("header length 65535 does not fit"));
    write_bytes(path, bytes, 5);
    CU_ASSERT(ct_ckpt_safetensors_read(path, &back) != CT_OK);
    CU_ASSERT(message_has(path) && message_has("too short"));
    CU_ASSERT(ct_ckpt_model_read(path, &back) != CT_OK);
    CU_ASSERT(message_has(path) && message_has("neither an llm.c model file"));
    ct_gpt_free(&back);
    teardown();
}

/* The format's byte ranges tile the data: an overlap (one tensor reading another's bytes), a
 * hole or bytes after the last tensor are refused, naming the file and the tensors. */
static void test_data_offsets_must_tile_the_data(void) {
    setup();
    /* wpe moved 4 bytes into wte: each has its own size, so only the overlap is wrong. */
    const char *wpe = "\"transformer.wpe.weight\":{\"dtype\":\"F32\",\"shape\":[5,8],"
                      "\"data_offsets\":[352,512]}";
    const char *moved = "\"transformer.wpe.weight\":{\"dtype\":\"F32\",\"shape\":[5,8],"
                        "\"data_offsets\":[348,508]}";
    char *overlap = replace_all(header, wpe, moved);
    CU_ASSERT_FATAL(strcmp(overlap, header) != 0);
    expect_failure(overlap, "tensors transformer.wte.weight (data_offsets [0, 352)) and "
                            "transformer.wpe.weight ([348, 508)) overlap");
    /* Two names on the same bytes (an aliased tensor) overlap as well. */
    size_t end = 0;
    char *alias = add_tensor(header, "transformer.h.0.mlp.gate.weight", "F32", "1", 4, &end);
    expect_failure(alias, "transformer.h.0.mlp.gate.weight (data_offsets [0, 4)) and "
                          "transformer.wte.weight ([0, 352)) overlap");
    /* A hole between two tensors, and bytes after the last one. */
    const char *later = "\"transformer.wpe.weight\":{\"dtype\":\"F32\",\"shape\":[5,8],"
                        "\"data_offsets\":[356,516]}";
    char *hole = replace_all(header, wpe, later);
    expect_failure(hole, "data bytes [352, 356) belong to no tensor (before "
                         "transformer.wpe.weight)");
    char tail[64];
    snprintf(tail, sizeof(tail), "data bytes [%zu, %zu) belong to no tensor (after ", data_bytes,
             data_bytes + 8);
    expect_failure_bytes(header, data_bytes + 8, tail);
    free(overlap), free(alias), free(hole);
    teardown();
}

static void test_shape_mismatch_names_tensor_and_shapes(void) {
    ct_gpt back;
    setup();
    CU_ASSERT(read_into_fresh(model_path, 0, 16, &back) != CT_OK);
    CU_ASSERT(message_has(model_path) &&
              message_has("tensor transformer.wte.weight has shape [11, 8], the job's model "
                          "needs [11, 16]"));
    ct_gpt_free(&back);
    CU_ASSERT(read_into_fresh(model_path, 3, 0, &back) != CT_OK);
    CU_ASSERT(message_has("no tensor h.2.ln_1.weight"));
    ct_gpt_free(&back);
    CU_ASSERT(read_into_fresh(model_path, 1, 0, &back) != CT_OK);
    CU_ASSERT(message_has("unexpected tensor transformer.h.1."));
    ct_gpt_free(&back);
    teardown();
}

static void test_model_read_tells_llmc_from_safetensors(void) {
    ct_gpt back;
    setup();
    char path[300];
    temp_path(path, sizeof(path), "model.bin");
    CU_ASSERT_FATAL(ct_ckpt_llmc_write(path, &gpt) == CT_OK);
    make_model(&back, 0, 0, 99);
    CU_ASSERT(!same_params(&gpt, &back));
    CU_ASSERT(ct_ckpt_model_read(path, &back) == CT_OK);
    CU_ASSERT(same_params(&gpt, &back));
    ct_gpt_free(&back);
    teardown();
}

/* A full disk, simulated by a file size limit (writes past it fail with EFBIG, as they would
 * with ENOSPC): both writers fail naming PATH.tmp and the errno text, and leave neither the
 * .tmp nor the final file. */
static void test_failed_write_removes_tmp(void) {
    setup();
    char path[300], tmp[310];
    struct rlimit saved, small;
    CU_ASSERT_FATAL(getrlimit(RLIMIT_FSIZE, &saved) == 0);
    small = saved;
    small.rlim_cur = 2048; /* the model takes about 8 KB in either format */
    void (*old_handler)(int) = signal(SIGXFSZ, SIG_IGN);
    for (int llmc = 0; llmc < 2; llmc++) {
        temp_path(path, sizeof(path), llmc ? "final.bin" : "export.safetensors");
        snprintf(tmp, sizeof(tmp), "%s.tmp", path);
        CU_ASSERT_FATAL(setrlimit(RLIMIT_FSIZE, &small) == 0);
        ct_status st =
            llmc ? ct_ckpt_llmc_write(path, &gpt) : ct_ckpt_safetensors_write(path, &gpt, NULL);
        CU_ASSERT_FATAL(setrlimit(RLIMIT_FSIZE, &saved) == 0);
        CU_ASSERT(st == CT_ERR_IO);
        CU_ASSERT(message_has(tmp) && message_has(strerror(EFBIG)));
        CU_ASSERT(access(tmp, F_OK) != 0 && access(path, F_OK) != 0);
    }
    signal(SIGXFSZ, old_handler);
    teardown();
}

int main(void) {
    static const ct_test_case cases[] = {
        {"test_round_trip_is_bitwise", test_round_trip_is_bitwise},
        {"test_layout_is_hf_gpt2", test_layout_is_hf_gpt2},
        {"test_hf_variants_read_the_same", test_hf_variants_read_the_same},
        {"test_malformed_files_fail_naming_the_file", test_malformed_files_fail_naming_the_file},
        {"test_data_offsets_must_tile_the_data", test_data_offsets_must_tile_the_data},
        {"test_shape_mismatch_names_tensor_and_shapes",
         test_shape_mismatch_names_tensor_and_shapes},
        {"test_model_read_tells_llmc_from_safetensors",
         test_model_read_tells_llmc_from_safetensors},
        {"test_failed_write_removes_tmp", test_failed_write_removes_tmp},
    };
    return ct_test_run("safetensors", cases, (int)CT_ARRAY_LEN(cases));
}
