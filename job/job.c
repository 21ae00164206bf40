/*
 * job.toml: the one table of keys (section, name, type, field of ct_job, default, allowed
 * values, meaning) and everything it drives: defaults, the type and range checks of the parser
 * and of command-line overrides with their messages (through job_key.c), the checks between
 * keys, ct_job_print and docs/config.md. A key is added by adding one entry to `keys` (and its
 * field to ct_job); nothing else lists keys, so the parser, the messages and the documentation
 * cannot drift apart.
 *
 * Loading remembers where each key was last set (a file line or an override) so that a broken
 * relation between two keys, found only once everything is read, still names a line.
 */
#include "job/toml.h"

#include <limits.h>
#include <math.h>
#include <stddef.h>
#include <string.h>
#include <strings.h>

/* Shorthands for the table below (kept out of clang-format, which mangles braces in macros). */
enum { CLOSED = CT_JOB_BOUND_CLOSED, OPEN = CT_JOB_BOUND_OPEN };
// clang-format off
#define FIELD(f) offsetof(ct_job, f)
#define INT_KEY(s, n, f, def, lo, hi, text)                                                        \
    {s, n, CT_JOB_KEY_INT, FIELD(f), .def_int = def, .min_int = lo, .max_int = hi, .doc = text}
#define INT64_KEY(s, n, f, def, lo, hi, text)                                                      \
    {s, n, CT_JOB_KEY_INT64, FIELD(f), .def_int = def, .min_int = lo, .max_int = hi, .doc = text}
#define FLOAT_KEY(s, n, f, def, lo, lo_open, hi, hi_open, text)                                    \
    {s, n, CT_JOB_KEY_FLOAT, FIELD(f), .def_float = def, .min_float = lo, .min_open = lo_open,     \
     .max_float = hi, .max_open = hi_open, .doc = text}
#define BOOL_KEY(s, n, f, def, text)                                                               \
    {s, n, CT_JOB_KEY_BOOL, FIELD(f), .def_int = def, .doc = text}
#define STRING_KEY(s, n, f, def, text)                                                             \
    {s, n, CT_JOB_KEY_STRING, FIELD(f), .def_string = def, .doc = text}
#define CHOICE_KEY(s, n, f, def, options, text)                                                    \
    {s, n, CT_JOB_KEY_CHOICE, FIELD(f), .def_string = def, .choices = options, .doc = text}
// clang-format on

static const struct {
    const char *name, *doc;
} sections[] = {
    {"model", "The network: a GPT-2 style decoder-only transformer."},
    {"data", "The token shards to train and evaluate on."},
    {"train", "The optimisation: batch, steps, AdamW and the learning-rate schedule."},
    {"parallel", "How the ranks share the model state."},
    {"precision", "Number formats of the computation (mixed precision, docs/precision.md)."},
    {"memory", "Trading compute for memory (docs/memory.md)."},
    {"comm", "Communication between ranks."},
    {"log", "What the run writes, and where."},
    {"checkpoint", "Sharded checkpoints: saving and resuming the model and optimizer state "
                   "(docs/checkpoints.md)."},
    {"device", "Where each rank computes."},
};

/* Sections in the order above, keys of a section together: print and docs follow this order. */
static const ct_job_key keys[] = {
    CHOICE_KEY("model", "arch", model_arch, "gpt2", "gpt2",
               "Model family. gpt2: pre-LayerNorm decoder blocks (causal self-attention, GELU MLP "
               "4 x n_embd wide), learned positional embeddings, output head tied to the token "
               "embedding."),
    INT_KEY("model", "n_layer", model_n_layer, 4, 1, 1024, "Number of transformer blocks."),
    INT_KEY("model", "n_head", model_n_head, 4, 1, 1024,
            "Attention heads per block; each head has n_embd / n_head channels."),
    INT_KEY("model", "n_embd", model_n_embd, 256, 1, 65536,
            "Width of the residual stream, in channels per token; a multiple of n_head."),
    INT_KEY("model", "vocab_size", model_vocab_size, 50257, 1, 65536,
            "Number of token ids (0 .. vocab_size-1). Tokens are stored as uint16, hence at most "
            "65536. 50257 is GPT-2's BPE; byte-level shards from `ctrain data prepare` need 256."),
    INT_KEY("model", "seq_len", model_seq_len, 128, 1, 65536,
            "Context length in tokens: the length of every training sequence and the number of "
            "positional embeddings."),
    STRING_KEY(
        "model", "init_from", model_init_from, "",
        "File to take the initial weights from: an llm.c model file (the gpt2_124M.bin "
        "format) or a safetensors file with Hugging Face GPT-2 names (`ctrain ckpt export`'s "
        "output, or GPT-2's model.safetensors), told apart by their first bytes; its shapes "
        "must match the keys above. \"\" = random initialisation from train.seed."),
    STRING_KEY("data", "train", data_train, "",
               "Glob of the training shards (e.g. \"data/train_*.bin\"), read in sorted order as "
               "one token stream. Required."),
    STRING_KEY("data", "val", data_val, "", "Glob of the validation shards; \"\" = no evaluation."),
    CHOICE_KEY("data", "format", data_format, "llmc", "llmc|nanogpt",
               "Shard layout. llmc: llm.c's files (1024-byte header with magic 20240520, then "
               "uint16 tokens). nanogpt: headerless uint16 tokens (nanoGPT's train.bin)."),
    BOOL_KEY("data", "shuffle", data_shuffle, 0,
             "Visit the training sequences in an order permuted by (train.seed, epoch) instead "
             "of in stream order."),
    INT_KEY("train", "batch_size", train_batch_size, 8, 1, 65536,
            "Sequences per rank per micro-batch. Tokens per step = ranks x batch_size x "
            "grad_accum x model.seq_len."),
    INT_KEY("train", "grad_accum", train_grad_accum, 1, 1, 65536,
            "Micro-batches per step; their gradients are averaged into one optimizer step."),
    INT_KEY("train", "steps", train_steps, 100, 1, INT_MAX, "Optimizer steps to train for."),
    FLOAT_KEY("train", "lr", train_lr, 6e-4, 0, CLOSED, INFINITY, OPEN,
              "Peak learning rate, reached at the end of the warmup."),
    FLOAT_KEY("train", "min_lr", train_min_lr, 6e-5, 0, CLOSED, INFINITY, OPEN,
              "Learning rate at the end of a cosine or linear schedule; at most train.lr."),
    INT_KEY("train", "warmup_steps", train_warmup_steps, 0, 0, INT_MAX,
            "Steps over which the learning rate rises linearly to train.lr (0 = no warmup); at "
            "most train.steps."),
    CHOICE_KEY("train", "schedule", train_schedule, "cosine", "cosine|linear|constant",
               "Learning rate after the warmup: cosine or linear decay from train.lr to "
               "train.min_lr at the last step, or constant at train.lr."),
    FLOAT_KEY("train", "weight_decay", train_weight_decay, 0.1, 0, CLOSED, INFINITY, OPEN,
              "AdamW decoupled weight decay: each step multiplies weights by 1 - lr x "
              "weight_decay."),
    FLOAT_KEY("train", "beta1", train_beta1, 0.9, 0, CLOSED, 1, OPEN,
              "AdamW decay rate of the running mean of the gradient (first moment)."),
    FLOAT_KEY("train", "beta2", train_beta2, 0.95, 0, CLOSED, 1, OPEN,
              "AdamW decay rate of the running mean of the squared gradient (second moment)."),
    FLOAT_KEY("train", "eps", train_eps, 1e-8, 0, OPEN, INFINITY, OPEN,
              "AdamW epsilon, added to the square root of the second moment."),
    FLOAT_KEY("train", "grad_clip", train_grad_clip, 1.0, 0, CLOSED, INFINITY, OPEN,
              "Largest global L2 norm of the gradient (all parameters, all ranks); a larger "
              "gradient is scaled down to it. 0 = no clipping."),
    INT64_KEY("train", "seed", train_seed, 1337, 0, LLONG_MAX,
              "Seed of every random draw (initial weights, data order): the same seed gives "
              "bitwise the same run."),
    INT_KEY("train", "eval_every", train_eval_every, 0, 0, INT_MAX,
            "Steps between evaluations on data.val; 0 = only after the last step."),
    INT_KEY("train", "eval_steps", train_eval_steps, 10, 1, INT_MAX,
            "Validation batches per evaluation, each the size of a training step's global "
            "batch (world size x batch_size x grad_accum sequences, every rank reading its "
            "share), read in order from the start of data.val: the same sequences at every "
            "world size, so val_loss compares across runs and reshards. data.val must hold "
            "them (checked before the first step)."),
    CHOICE_KEY("parallel", "strategy", parallel_strategy, "ddp", "ddp|zero1|zero2|fsdp|hsdp",
               "How ranks split the model state: ddp replicates it and all-reduces gradients; "
               "zero1 shards the optimizer state, zero2 also the gradients, fsdp also the "
               "parameters; hsdp is fsdp inside groups of parallel.shard_group_size ranks, "
               "replicated across the groups. docs/parallel.md has each one's memory and "
               "traffic."),
    FLOAT_KEY("parallel", "bucket_mb", parallel_bucket_mb, 25.0, 0, OPEN, INFINITY, OPEN,
              "ddp: gradients are all-reduced in buckets of about this many MiB, each sent as "
              "soon as backward has finished its units."),
    BOOL_KEY("parallel", "prefetch", parallel_prefetch, 1,
             "fsdp/hsdp: start gathering the next unit's parameters while the current unit "
             "computes (forward and backward)."),
    BOOL_KEY("parallel", "reshard_after_forward", parallel_reshard_after_forward, 1,
             "fsdp/hsdp: free a unit's gathered parameters after its forward and gather them "
             "again for backward (less memory, one more all-gather per unit)."),
    BOOL_KEY("parallel", "reduce_every_microbatch", parallel_reduce_every_microbatch, 0,
             "zero2/fsdp/hsdp: reduce-scatter the gradients after every micro-batch instead of "
             "only the last, so full gradients never outlive a micro-batch: less memory, "
             "grad_accum times the reduce-scatter traffic."),
    INT_KEY("parallel", "shard_group_size", parallel_shard_group_size, 0, 0, 65536,
            "hsdp: ranks per shard group; must divide the world size. 0 = the ranks of one "
            "node."),
    CHOICE_KEY("precision", "compute", precision_compute, "fp32", "fp32|bf16|fp16",
               "Format of the parameters the forward and backward passes use (FSDP's "
               "param_dtype): fp32, or bf16 / fp16, in which every Linear and the LM head "
               "multiply on half-precision inputs with fp32 sums. Master weights, Adam state and "
               "gradients stay fp32 (gradients accumulate in fp32 across micro-batches), and "
               "fsdp/zero gather parameters in this format (half the bytes). Activations stay "
               "fp32. fp16 scales the loss dynamically: 65536 at the start, halved and the step "
               "skipped when a gradient overflows, doubled after 1000 good steps, at least 1. "
               "Checkpoints hold the fp32 masters: a run resumes or reshards under any "
               "precision."),
    CHOICE_KEY("precision", "reduce", precision_reduce, "fp32", "fp32|bf16",
               "Format in which gradients are summed over the ranks (FSDP's reduce_dtype): fp32, "
               "or bf16 (half the bytes of the reduce-scatter / all-reduce; the received sum is "
               "added into the fp32 gradient, so micro-batches never accumulate in bf16)."),
    CHOICE_KEY("memory", "activation_checkpointing", memory_activation_checkpointing, "none",
               "none|block|selective",
               "none keeps every activation for backward; block keeps only each transformer "
               "block's input and recomputes the block's forward in backward (about a third more "
               "compute, activation memory of one block instead of n_layer); selective keeps "
               "the matmul and attention outputs and recomputes LayerNorm and GELU. Gradients are "
               "bitwise those of none (docs/memory.md)."),
    FLOAT_KEY("comm", "timeout_s", comm_timeout_s, 600.0, 0, CLOSED, INFINITY, OPEN,
              "Hang watchdog: a collective not finished after this many seconds, or a rank "
              "that has sent no heartbeat for as long (frozen, stopped or dead), makes every "
              "other rank print its last 32 collectives and which rank is behind or silent, then "
              "the job exits with code 3. 0 = off."),
    STRING_KEY("log", "dir", log_dir, "",
               "Run directory for the run's outputs (metrics, checkpoints, final.bin); \"\" = "
               "`runs/<job file name without .toml>` in the job file's own directory, so that two "
               "job files never share a run directory by accident. A relative path is taken from "
               "the current directory, like every other path of a job."),
    INT_KEY("log", "every", log_every, 10, 1, INT_MAX,
            "Steps between progress lines and metrics records."),
    STRING_KEY("log", "metrics", log_metrics, "",
               "Path of the metrics file (JSON Lines, one object per record); \"\" = "
               "`<log.dir>/metrics.jsonl`."),
    STRING_KEY("checkpoint", "dir", checkpoint_dir, "",
               "Directory of the checkpoints, one `step_NNNNNNNN/` each; \"\" = "
               "`<log.dir>/ckpt`."),
    INT_KEY("checkpoint", "every", checkpoint_every, 0, 0, INT_MAX,
            "Steps between checkpoints; 0 = only after the last step (one is always written "
            "there)."),
    INT_KEY("checkpoint", "keep", checkpoint_keep, 2, 1, INT_MAX,
            "Complete checkpoints kept in checkpoint.dir; older ones are deleted after each save, "
            "never the newest."),
    INT_KEY("checkpoint", "zstd_level", checkpoint_zstd_level, 1, 1, 19,
            "zstd compression level of the checkpoint frames. Higher levels are slower; on fp32 "
            "training state they are not smaller (mantissa bytes are noise): 1 saved the "
            "gpt2-124m state fastest and smallest (docs/performance.md)."),
    BOOL_KEY("checkpoint", "async", checkpoint_async, 1,
             "Save in the background: each rank copies its shards to a host buffer (as large as "
             "its part of params, Adam m and v) and training continues while a thread compresses "
             "and writes them; the next save and the end of the run wait for it. false = training "
             "waits for every save."),
    BOOL_KEY(
        "checkpoint", "overwrite", checkpoint_overwrite, 0,
        "What to do when checkpoint.dir holds checkpoints at or after the step this run starts "
        "from (another run's, or a later part of this one when resuming from an older "
        "checkpoint): false = refuse to start, naming them; true = replace them as this run "
        "saves (each is removed when this run saves at or before its step)."),
    STRING_KEY("checkpoint", "resume", checkpoint_resume, "auto",
               "\"auto\" = continue this run from the newest complete checkpoint in "
               "checkpoint.dir when there is one, else start fresh; it refuses a checkpoint of "
               "another run (any [model] key, data.train and its contents, data.format, "
               "data.shuffle, train.seed or the global batch differ), naming what differs. "
               "\"never\" = start fresh (refusing to replace later checkpoints unless "
               "checkpoint.overwrite). \"replace\" = start fresh and delete the run directory's "
               "checkpoints and final.bin first. Any other value is the path of a checkpoint (a "
               "step_NNNNNNNN directory) to resume from, whatever its data and seed (a "
               "fine-tuning start). Any world size and parallel.strategy may resume a checkpoint "
               "when world size x train.batch_size x train.grad_accum (the global batch) is the "
               "saved one (docs/checkpoints.md)."),
    CHOICE_KEY("device", "type", device_type, "auto", "auto|cpu|cuda",
               "Where ranks compute: cpu, cuda (one GPU per rank), or auto = cuda when the build "
               "has CUDA and a GPU is present, else cpu."),
    INT_KEY("device", "threads_per_rank", device_threads_per_rank, 0, 0, 4096,
            "CPU threads (OpenMP and BLAS) per rank; 0 = OMP_NUM_THREADS when it is set, else "
            "the machine's cores divided by the ranks on it."),
    CHOICE_KEY("device", "blas", device_blas, "auto", "auto|onednn|openblas",
               "Library of the CPU GEMMs (Linear layers, LM head): onednn (oneDNN's matmul "
               "primitive; a few small allocations per GEMM), openblas (sgemm), or auto = "
               "openblas (for fp32 the two measured about even here: docs/performance.md). "
               "Results differ between the two in the last bits; each is deterministic."),
    CHOICE_KEY("device", "half_kernels", device_half_kernels, "auto", "auto|native|portable",
               "CPU kernels for precision.compute = bf16 / fp16: native (bf16 GEMMs on oneDNN, AMX "
               "where the CPU has it, and AVX-512-BF16 casts), portable (half-precision values "
               "widened to fp32 and multiplied by the fp32 GEMM: works on every CPU, no faster "
               "than fp32), or auto = native on a CPU with AMX-BF16, else portable (bf16 on plain "
               "AVX-512 measured slower than fp32: docs/performance.md). fp16 GEMMs are always "
               "portable. native on a CPU without bf16 support is an error."),
};
#define N_KEYS CT_ARRAY_LEN(keys)

/* Checks between keys, made once every key is read; `a` and `b` name the keys involved. */
typedef struct {
    const char *a, *b; /* b is NULL for a check of one key */
    const char *rule;
    bool (*holds)(const ct_job *job);
} job_rule;

static bool heads_divide_width(const ct_job *j) {
    return j->model_n_embd % j->model_n_head == 0;
}
static bool min_lr_below_lr(const ct_job *j) {
    return j->train_min_lr <= j->train_lr;
}
static bool warmup_within_steps(const ct_job *j) {
    return j->train_warmup_steps <= j->train_steps;
}
static bool train_data_given(const ct_job *j) {
    return j->data_train[0] != '\0';
}

/* A resume keyword in another case ("Never") is a typo, not the path of a checkpoint. */
static bool resume_valid(const ct_job *j) {
    static const char *const words[] = {"auto", "never", "replace"};
    const char *r = j->checkpoint_resume;
    if (!r[0]) return false;
    for (size_t i = 0; i < CT_ARRAY_LEN(words); i++)
        if (strcasecmp(r, words[i]) == 0) return strcmp(r, words[i]) == 0;
    return true;
}

static const job_rule rules[] = {
    {"model.n_embd", "model.n_head", "model.n_embd must be a multiple of model.n_head",
     heads_divide_width},
    {"train.min_lr", "train.lr", "train.min_lr must be <= train.lr", min_lr_below_lr},
    {"train.warmup_steps", "train.steps", "train.warmup_steps must be <= train.steps",
     warmup_within_steps},
    {"data.train", NULL,
     "data.train must be set to a glob of training shards, e.g. "
     "\"data/train_*.bin\"",
     train_data_given},
    {"checkpoint.resume", NULL,
     "checkpoint.resume must be \"auto\", \"never\", \"replace\" (lower case) or the path of a "
     "checkpoint",
     resume_valid},
};

/* Where each key was last set while loading, to name it in messages. */
typedef struct {
    ct_job *job;
    const char *path; /* NULL when there is no file */
    char *const *overrides;
    int origin[N_KEYS]; /* 0 = default, > 0 = line of the file, -(i+1) = overrides[i] */
} job_loader;

#define WHERE_BYTES (CT_JOB_STR + 400)

/* ---------------------------------------------------------------- the key table */

static int find_key(const char *section, const char *name) {
    for (size_t i = 0; i < N_KEYS; i++)
        if (strcmp(keys[i].section, section) == 0 && strcmp(keys[i].name, name) == 0) return (int)i;
    return -1;
}

static int find_full_name(const char *full) {
    char name[2 * CT_JOB_TOML_KEY];
    for (size_t i = 0; i < N_KEYS; i++) {
        ct_job_key_full_name(&keys[i], name, sizeof(name));
        if (strcmp(name, full) == 0) return (int)i;
    }
    CT_ASSERT(false, "no key '%s' in the key table", full);
    return -1;
}

static bool is_section(const char *name) {
    for (size_t i = 0; i < CT_ARRAY_LEN(sections); i++)
        if (strcmp(sections[i].name, name) == 0) return true;
    return false;
}

/* ---------------------------------------------------------------- messages */

/* "[model] [data] ..." */
static void list_tables(char *out, size_t out_bytes) {
    out[0] = '\0';
    for (size_t i = 0, n = 0; i < CT_ARRAY_LEN(sections) && n < out_bytes; i++)
        n += (size_t)snprintf(out + n, out_bytes - n, "%s[%s]", n ? " " : "", sections[i].name);
}

static ct_status unknown_table(const char *where, const char *table) {
    size_t best = 0, best_distance = (size_t)-1;
    char list[256];
    list_tables(list, sizeof(list));
    for (size_t i = 0; i < CT_ARRAY_LEN(sections); i++) {
        size_t d = ct_edit_distance(table, sections[i].name);
        if (d < best_distance) best = i, best_distance = d;
    }
    if (ct_job_near_miss(best_distance, table))
        return ct_error(CT_ERR_INVALID, "%s: unknown table [%s]; did you mean [%s]?", where, table,
                        sections[best].name);
    return ct_error(CT_ERR_INVALID, "%s: unknown table [%s]; the tables are %s", where, table,
                    list);
}

/* Nearest key by edit distance over "section.key", or over the key alone plus one for the wrong
 * table (so that `every` under [train] still finds log.every); a typed prefix of a key counts
 * as one edit. */
static ct_status unknown_key(const char *where, const char *section, const char *name) {
    char typed[2 * CT_JOB_TOML_KEY + 2], candidate[2 * CT_JOB_TOML_KEY + 2], list[512] = "";
    snprintf(typed, sizeof(typed), "%s%s%s", section, section[0] ? "." : "", name);
    size_t best = 0, best_distance = (size_t)-1;
    for (size_t i = 0; i < N_KEYS; i++) {
        ct_job_key_full_name(&keys[i], candidate, sizeof(candidate));
        size_t other_table = strcmp(section, keys[i].section) != 0;
        size_t d = CT_MIN(ct_edit_distance(typed, candidate),
                          ct_edit_distance(name, keys[i].name) + other_table);
        if (strlen(name) >= 3 && strncmp(keys[i].name, name, strlen(name)) == 0)
            d = CT_MIN(d, 1 + other_table); /* a prefix: "warmup" for warmup_steps */
        if (d < best_distance) best = i, best_distance = d;
        size_t n = strlen(list);
        if (strcmp(section, keys[i].section) == 0)
            snprintf(list + n, sizeof(list) - n, "%s%s", n ? ", " : "", keys[i].name);
    }
    const char *outside = section[0] ? "" : " (no table given)";
    if (ct_job_near_miss(best_distance, name)) {
        ct_job_key_full_name(&keys[best], candidate, sizeof(candidate));
        return ct_error(CT_ERR_INVALID, "%s: unknown key '%s'%s; did you mean '%s'?", where, typed,
                        outside, candidate);
    }
    if (list[0])
        return ct_error(CT_ERR_INVALID, "%s: unknown key '%s'; the keys of [%s] are: %s", where,
                        typed, section, list);
    list_tables(list, sizeof(list));
    return ct_error(CT_ERR_INVALID, "%s: unknown key '%s'%s; the tables are %s", where, typed,
                    outside, list);
}

static void where_of(const job_loader *ld, const ct_job *job, int key, char *out, size_t bytes) {
    int origin = ld && key >= 0 ? ld->origin[key] : 0;
    if (origin > 0)
        snprintf(out, bytes, "%s:%d", ld->path, origin);
    else if (origin < 0)
        snprintf(out, bytes, "command line override '%.300s'", ld->overrides[-origin - 1]);
    else
        snprintf(out, bytes, "%s", job->source_path[0] ? job->source_path : "job");
}

/* ---------------------------------------------------------------- setting and checking */

static ct_status validate(const ct_job *job, const job_loader *ld) {
    char where[WHERE_BYTES];
    for (size_t i = 0; i < N_KEYS; i++) {
        where_of(ld, job, (int)i, where, sizeof(where));
        CT_CHECK(ct_job_key_check(job, &keys[i], where));
    }
    for (size_t r = 0; r < CT_ARRAY_LEN(rules); r++) {
        const job_rule *rule = &rules[r];
        if (rule->holds(job)) continue;
        int a = find_full_name(rule->a), b = rule->b ? find_full_name(rule->b) : -1;
        bool a_set = ld && ld->origin[a] != 0;
        where_of(ld, job, a_set || b < 0 ? a : b, where, sizeof(where));
        char value_a[CT_JOB_KEY_VALUE], other[CT_JOB_KEY_VALUE + WHERE_BYTES + 64] = "";
        ct_job_key_format(job, &keys[a], value_a, sizeof(value_a));
        if (b >= 0) { /* either key may be the wrong one: say where the other was set too */
            char value_b[CT_JOB_KEY_VALUE], where_b[WHERE_BYTES] = "default";
            ct_job_key_format(job, &keys[b], value_b, sizeof(value_b));
            if (ld && ld->origin[b] != 0) where_of(ld, job, b, where_b, sizeof(where_b));
            snprintf(other, sizeof(other), ", %s = %s (%s)", rule->b, value_b, where_b);
        }
        return ct_error(CT_ERR_INVALID, "%s: %s (%s = %s%s)", where, rule->rule, rule->a, value_a,
                        other);
    }
    return CT_OK;
}

static ct_status apply(job_loader *ld, const char *section, const char *name,
                       const ct_job_toml_value *v, const char *where, int origin) {
    int i = find_key(section, name);
    if (i < 0) return unknown_key(where, section, name);
    CT_CHECK(ct_job_key_set(ld->job, &keys[i], v, where));
    ld->origin[i] = origin;
    return CT_OK;
}

static ct_status on_table(void *ctx, const char *table, int line) {
    const job_loader *ld = ctx;
    char where[WHERE_BYTES];
    snprintf(where, sizeof(where), "%s:%d", ld->path, line);
    return is_section(table) ? CT_OK : unknown_table(where, table);
}

static ct_status on_key(void *ctx, const char *table, const char *key, const ct_job_toml_value *v,
                        int line) {
    job_loader *ld = ctx;
    char where[WHERE_BYTES];
    snprintf(where, sizeof(where), "%s:%d", ld->path, line);
    return apply(ld, table, key, v, where, line);
}

/* "section.key=value": the value in TOML syntax, or else the words as they are, as a string
 * (so data.train=data/x_*.bin needs no quotes). A value that starts like a TOML string or array
 * must be one: a missing quote is reported, not taken as part of the word. */
static ct_status apply_override(job_loader *ld, int index) {
    const char *text = ld->overrides[index];
    char where[WHERE_BYTES], full[2 * CT_JOB_TOML_KEY];
    snprintf(where, sizeof(where), "command line override '%.300s'", text);
    const char *eq = strchr(text, '='), *start = text, *end = eq;
    if (eq) {
        while (*start == ' ' || *start == '\t')
            start++;
        while (end > start && (end[-1] == ' ' || end[-1] == '\t'))
            end--;
    }
    if (!eq || (size_t)(end - start) >= sizeof(full))
        return ct_error(CT_ERR_INVALID, "%s: expected section.key=value, e.g. train.lr=3e-4",
                        where);
    memcpy(full, start, (size_t)(end - start));
    full[end - start] = '\0';
    char split[sizeof(full)];
    memcpy(split, full, sizeof(full));
    char *dot = strchr(split, '.'), *key = dot ? dot + 1 : split;
    const char *section = dot ? split : "";
    if (dot) *dot = '\0';
    if ((dot && !ct_job_toml_is_bare_key(section)) || !ct_job_toml_is_bare_key(key))
        return ct_error(CT_ERR_INVALID, "%s: expected section.key=value, e.g. train.lr=3e-4",
                        where);
    const char *value_text = eq + 1;
    while (*value_text == ' ' || *value_text == '\t')
        value_text++;
    ct_job_toml_value v;
    if (*value_text && strchr("\"'[", *value_text)) {
        CT_CHECK(ct_job_toml_parse_value(value_text, where, full, &v));
    } else if (ct_job_toml_parse_value(value_text, where, full, &v) != CT_OK) {
        ct_error_clear();
        size_t len = strlen(value_text);
        while (len && (value_text[len - 1] == ' ' || value_text[len - 1] == '\t'))
            len--;
        if (len >= CT_JOB_STR)
            return ct_error(CT_ERR_INVALID, "%s: the value is longer than %d bytes", where,
                            CT_JOB_STR - 1);
        memset(&v, 0, sizeof(v));
        v.type = CT_JOB_TOML_STRING;
        memcpy(v.string, value_text, len);
        ct_job_toml_format_string(v.string, v.text, sizeof(v.text));
    }
    return apply(ld, section, key, &v, where, -(index + 1));
}

/* ---------------------------------------------------------------- public functions */

void ct_job_defaults(ct_job *job) {
    memset(job, 0, sizeof(*job)); /* padding too, so that equal jobs are equal bytes */
    for (size_t i = 0; i < N_KEYS; i++) {
        ct_job_key_default(job, &keys[i]);
        /* A key listed twice would be applied twice and documented twice: a bug. */
        for (size_t j = 0; j < i; j++)
            CT_ASSERT(strcmp(keys[i].section, keys[j].section) != 0 ||
                          strcmp(keys[i].name, keys[j].name) != 0,
                      "job key %s.%s is in the table twice", keys[i].section, keys[i].name);
    }
}

ct_status ct_job_load(ct_job *job, const char *path, int n_overrides, char *const *overrides) {
    CT_ASSERT(n_overrides == 0 || overrides, "%d overrides but no array", n_overrides);
    ct_job_defaults(job);
    job_loader ld = {.job = job, .path = path, .overrides = overrides};
    if (path) {
        if (strlen(path) >= sizeof(job->source_path))
            return ct_error(CT_ERR_INVALID, "job file path longer than %d bytes: '%.80s...'",
                            CT_JOB_STR - 1, path);
        snprintf(job->source_path, sizeof(job->source_path), "%s", path);
        ct_job_toml_handler handler = {on_table, on_key, &ld};
        CT_CHECK(ct_job_toml_parse_file(path, &handler));
    }
    for (int i = 0; i < n_overrides; i++)
        CT_CHECK(apply_override(&ld, i));
    return validate(job, &ld);
}

ct_status ct_job_load_text(ct_job *job, const char *text, const char *source) {
    ct_job_defaults(job);
    job_loader ld = {.job = job, .path = source};
    snprintf(job->source_path, sizeof(job->source_path), "%s", source);
    ct_job_toml_handler handler = {on_table, on_key, &ld};
    CT_CHECK(ct_job_toml_parse(text, source, &handler));
    return validate(job, &ld);
}

ct_status ct_job_validate(const ct_job *job) {
    return validate(job, NULL);
}

void ct_job_print(const ct_job *job, FILE *out) {
    char value[CT_JOB_KEY_VALUE];
    for (size_t i = 0; i < N_KEYS; i++) {
        if (i == 0 || strcmp(keys[i].section, keys[i - 1].section) != 0)
            fprintf(out, "%s[%s]\n", i ? "\n" : "", keys[i].section);
        ct_job_key_format(job, &keys[i], value, sizeof(value));
        fprintf(out, "%s = %s\n", keys[i].name, value);
    }
}

/* One Markdown table cell: '|' would end the cell early. */
static void write_cell(FILE *out, const char *before, const char *text, const char *after) {
    fputs(before, out);
    for (; *text; text++) {
        if (*text == '|') fputc('\\', out);
        fputc(*text, out);
    }
    fputs(after, out);
}

void ct_job_write_docs(FILE *out) {
    ct_job defaults;
    ct_job_defaults(&defaults);
    fputs("# job.toml reference\n\n"
          "A job file describes one training run. It is written in a strict subset of TOML: "
          "`[table]` headers, `key = value` lines and `#` comments. Values are \"basic strings\" "
          "(escapes `\\\"` `\\\\` `\\n` `\\t` `\\r`), 'literal strings', integers (`1_000` is "
          "allowed), floats (`6e-4`, `3.0`; an integer is accepted where a float is expected), "
          "`true`/`false`, and arrays on one line. Any key can be overridden on the command line "
          "after the job file as `section.key=value` in the same syntax (`train.lr=3e-4`, "
          "`data.train=data/x_*.bin`: a value that is not valid TOML, and does not start with a "
          "quote or `[`, is taken as a string); "
          "overrides apply after the file, left to right. Unknown tables and keys, wrong types, "
          "values out of range and broken relations between keys are errors that name the file "
          "and line (or the override), the key and the value, and suggest the nearest valid "
          "key.\n\n"
          "This page is generated from the key table in job/job.c by `ctrain config docs`; "
          "change the table, not this page.\n",
          out);
    char value[CT_JOB_KEY_VALUE], allowed[256];
    for (size_t i = 0; i < N_KEYS; i++) {
        const ct_job_key *k = &keys[i];
        if (i == 0 || strcmp(k->section, keys[i - 1].section) != 0) {
            for (size_t s = 0; s < CT_ARRAY_LEN(sections); s++)
                if (strcmp(sections[s].name, k->section) == 0)
                    fprintf(out, "\n## [%s]\n\n%s\n\n", k->section, sections[s].doc);
            fputs("| key | type | default | allowed | meaning |\n|---|---|---|---|---|\n", out);
        }
        ct_job_key_format(&defaults, k, value, sizeof(value));
        ct_job_key_describe(k, allowed, sizeof(allowed));
        write_cell(out, "| `", k->name, "` | ");
        write_cell(out, "", ct_job_key_type_name(k), " | ");
        write_cell(out, "`", value, "` | ");
        write_cell(out, "", allowed, " | ");
        write_cell(out, "", k->doc, " |\n");
    }
    fputs("\n## Checks between keys\n\nMade after the file and the overrides are read; an error "
          "names the line or override that set one of the keys involved.\n\n",
          out);
    for (size_t r = 0; r < CT_ARRAY_LEN(rules); r++)
        fprintf(out, "- %s\n", rules[r].rule);
}

void ct_job_checkpoint_dir(const ct_job *job, char *out, size_t out_bytes) {
    char run_dir[CT_JOB_STR];
    if (job->checkpoint_dir[0]) {
        snprintf(out, out_bytes, "%s", job->checkpoint_dir);
        return;
    }
    ct_job_run_dir(job, run_dir, sizeof(run_dir));
    snprintf(out, out_bytes, "%s/ckpt", run_dir);
}

void ct_job_run_dir(const ct_job *job, char *out, size_t out_bytes) {
    if (job->log_dir[0]) {
        snprintf(out, out_bytes, "%s", job->log_dir);
        return;
    }
    const char *slash = strrchr(job->source_path, '/');
    const char *base = slash ? slash + 1 : job->source_path;
    size_t len = strlen(base);
    if (len >= 5 && strcmp(base + len - 5, ".toml") == 0) len -= 5;
    if (len == 0) base = "job", len = 3;
    /* Beside the job file: a/job.toml and b/job.toml get a/runs/job and b/runs/job. */
    int dir_len = slash ? (int)(slash - job->source_path) : 0;
    snprintf(out, out_bytes, "%.*s%sruns/%.*s", dir_len, job->source_path, slash ? "/" : "",
             (int)len, base);
}

void ct_job_metrics_path(const ct_job *job, char *out, size_t out_bytes) {
    char run_dir[CT_JOB_STR];
    if (job->log_metrics[0]) {
        snprintf(out, out_bytes, "%s", job->log_metrics);
        return;
    }
    ct_job_run_dir(job, run_dir, sizeof(run_dir));
    snprintf(out, out_bytes, "%s/metrics.jsonl", run_dir);
}

void ct_job_diff(const ct_job *a, const ct_job *b, ct_job_diff_fn visit, void *ctx) {
    char name[2 * CT_JOB_TOML_KEY], value_a[CT_JOB_KEY_VALUE], value_b[CT_JOB_KEY_VALUE];
    for (size_t i = 0; i < N_KEYS; i++) {
        ct_job_key_format(a, &keys[i], value_a, sizeof(value_a));
        ct_job_key_format(b, &keys[i], value_b, sizeof(value_b));
        if (strcmp(value_a, value_b) == 0) continue;
        ct_job_key_full_name(&keys[i], name, sizeof(name));
        visit(ctx, name, value_a, value_b);
    }
}
