/*
 * common: what every module of ctrain may use, and which uses nothing else.
 *
 * - Status codes and error messages: a function that can fail returns a ct_status and records
 *   one message (with file:line of where it was raised) in a thread-local buffer that the caller
 *   prints once, at the top. CT_CHECK propagates a failure upwards unchanged.
 * - CT_ASSERT for broken invariants (bugs): prints the condition and state, then aborts.
 * - Logging by level from the CTRAIN_LOG environment variable, every line prefixed with the rank
 *   once the process knows it.
 * - The counting allocator (ct_alloc/ct_free): bytes per category, current and peak, for the
 *   memory report, and a count of every allocation so tests can prove a step does none.
 * - Arenas: bump allocators for per-step activations; reset after each step, no malloc once warm;
 *   a mark and rewind give back the top of one within a step.
 * - A counter-based random generator keyed by (seed, purpose, index): the same number comes out
 *   whatever the world size, thread count or resume point.
 */
#ifndef CT_COMMON_H
#define CT_COMMON_H

#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---------------------------------------------------------------- status and errors */

typedef enum {
    CT_OK = 0,
    CT_ERR_INVALID, /* bad user input: a job file, a flag, a value */
    CT_ERR_IO,      /* a file could not be read or written */
    CT_ERR_FORMAT,  /* a file's content is malformed (data shard, model file) */
    CT_ERR_NOMEM,   /* an allocation failed */
    CT_ERR_EXTERNAL /* a library (MPI, NCCL, CUDA, zstd) reported an error */
} ct_status;

/* Records the message for the current failure (printf-style) and returns `status`. The message
 * replaces any earlier one: the innermost failure says what happened, with its context. */
ct_status ct_error_at(ct_status status, const char *file, int line, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define ct_error(status, ...) ct_error_at((status), __FILE__, __LINE__, __VA_ARGS__)

/* The message recorded by the last failure on this thread ("" when there is none). */
const char *ct_error_message(void);
void ct_error_clear(void);

/* Propagates a failure: `CT_CHECK(ct_thing(...));` returns its status when it is not CT_OK. */
#define CT_CHECK(expr)                                                                             \
    do {                                                                                           \
        ct_status ct_check_status_ = (expr);                                                       \
        if (ct_check_status_ != CT_OK) return ct_check_status_;                                    \
    } while (0)

/* A broken invariant is a bug: print where and what, then abort (never for bad input).
 * (C++ spells _Noreturn differently: CUDA sources include this header too.) */
#ifdef __cplusplus
[[noreturn]]
#else
_Noreturn
#endif
void ct_assert_fail(const char *file, int line, const char *cond, const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
#define CT_ASSERT(cond, ...)                                                                       \
    do {                                                                                           \
        if (!(cond)) ct_assert_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                       \
    } while (0)

/* ---------------------------------------------------------------- logging */

typedef enum { CT_LOG_ERROR = 0, CT_LOG_WARN, CT_LOG_INFO, CT_LOG_DEBUG } ct_log_level;

/* The rank printed in front of error lines ("[rank r] "); -1 (the default) prints none. */
void ct_log_set_rank(int rank);
int ct_log_rank(void);
/* Level from CTRAIN_LOG (error|warn|info|debug; default info). */
ct_log_level ct_log_threshold(void);
void ct_log(ct_log_level level, const char *subsystem, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* ---------------------------------------------------------------- counting allocator */

typedef enum {
    CT_MEM_PARAMS = 0,
    CT_MEM_MASTERS, /* fp32 master weights kept apart from bf16/fp16 compute parameters */
    CT_MEM_GRADS,
    CT_MEM_OPTIMIZER,
    CT_MEM_ACTIVATIONS,
    CT_MEM_GATHERED,
    CT_MEM_COMM,
    CT_MEM_DATA,
    CT_MEM_CHECKPOINT, /* host copies of the state for background saves */
    CT_MEM_OTHER,
    CT_MEM_COUNT
} ct_mem_category;

/* 64-byte aligned, zero-filled memory counted under `category`; NULL (with an error recorded)
 * when the system has none. Free with the same category and size. */
void *ct_alloc(ct_mem_category category, size_t bytes);
void ct_free(ct_mem_category category, void *ptr, size_t bytes);

typedef struct {
    size_t current_bytes[CT_MEM_COUNT]; /* this process, per category */
    size_t peak_bytes[CT_MEM_COUNT];
    size_t total_current_bytes;
    size_t total_peak_bytes;
    uint64_t allocations; /* calls to ct_alloc since the process started */
} ct_mem_stats;

void ct_mem_get_stats(ct_mem_stats *stats);
/* Counts memory obtained outside ct_alloc (an arena's committed pages); delta may be negative. */
void ct_mem_account(ct_mem_category category, int64_t delta_bytes);
const char *ct_mem_category_name(ct_mem_category category);

/* Memory this process could still obtain: MemAvailable, or less when a cgroup limit says so
 * (*limited_by names the source); 0 when unknown. */
size_t ct_mem_available_bytes(const char **limited_by);
/* Address space left under RLIMIT_AS (`ulimit -v`); 0 when unlimited. */
size_t ct_mem_address_space_left_bytes(void);

/* ---------------------------------------------------------------- arenas */

/* A bump allocator: allocations are 64-byte aligned and live until the next ct_arena_reset.
 * It reserves address space once and commits pages as first used (counted under its
 * category), so a step of the same shape as the last allocates nothing and resident memory is
 * the true peak. */
typedef struct ct_arena_region ct_arena_region;
typedef struct {
    ct_mem_category category;
    ct_arena_region *region; /* NULL until the first allocation */
    size_t used_bytes;       /* since the last reset */
    size_t peak_bytes;       /* the most any step used */
    size_t capacity_bytes;   /* address space to reserve; 0 = the machine's physical memory */
    bool external;           /* over its owner's memory (ct_arena_init_over) */
} ct_arena;

void ct_arena_init(ct_arena *arena, ct_mem_category category);
/* An arena over memory its owner allocated and accounts for (a device's, which the host must
 * not touch): `bytes` at `base`, nothing reserved, committed or counted by the arena, and only
 * ct_arena_alloc_uninit serves from it (the owner zeroes through its device). */
ct_status ct_arena_init_over(ct_arena *arena, ct_mem_category category, void *base, size_t bytes);
/* Before the first allocation: reserve `bytes` of address space instead of the machine's
 * physical memory (a plan's figure, so that a limit on address space, `ulimit -v`, is not
 * spent on it). An allocation beyond it fails with an error naming both. */
void ct_arena_set_capacity(ct_arena *arena, size_t bytes);
void ct_arena_free(ct_arena *arena);
/* Returns zeroed memory, or NULL with an error recorded when the system is out of memory. */
void *ct_arena_alloc(ct_arena *arena, size_t bytes);
/* Like ct_arena_alloc but skips the zero fill (for buffers that are written before read). */
void *ct_arena_alloc_uninit(ct_arena *arena, size_t bytes);
ct_status ct_arena_reset(ct_arena *arena);
/* The arena's position (its used bytes), and a rewind to one taken earlier in the same step:
 * everything allocated since is given back at once (its pages stay committed), so that a part
 * of a step that is recomputed later (model/tape.h's checkpoints) leaves no trace but what
 * its owner moves below the mark. */
size_t ct_arena_mark(const ct_arena *arena);
void ct_arena_rewind(ct_arena *arena, size_t mark);

/* ---------------------------------------------------------------- random numbers */

/* Counter-based: the value depends only on (key, index), never on call order. Keys are made
 * from a seed and a purpose (and, where it matters, a step and a rank) with ct_rng_key. */
uint64_t ct_rng_key(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b);
uint64_t ct_rng_u64(uint64_t key, uint64_t index);
/* Uniform in [0, 1) with 53 random bits. */
double ct_rng_uniform(uint64_t key, uint64_t index);
/* Standard normal (Box-Muller on two uniforms drawn at 2*index and 2*index+1). */
double ct_rng_normal(uint64_t key, uint64_t index);
/* 64-bit FNV-1a style mixing hash, for batch hashes and checksums (docs/checkpoints.md). */
uint64_t ct_hash64(const void *data, size_t bytes, uint64_t seed);
/* The same in pieces, for data that arrives in parts: start, add each part in order, finish.
 * ct_hash64_finish(ct_hash64_add(ct_hash64_start(s), p, n)) == ct_hash64(p, n, s). Code that
 * fuses the byte loop with other work (checkpoint/zframe.c) multiplies by CT_HASH64_PRIME. */
#define CT_HASH64_PRIME 0x100000001b3ULL
uint64_t ct_hash64_start(uint64_t seed);
uint64_t ct_hash64_add(uint64_t h, const void *data, size_t bytes);
uint64_t ct_hash64_finish(uint64_t h);

/* ---------------------------------------------------------------- time */

/* Monotonic wall-clock seconds. */
double ct_time_s(void);

/* ---------------------------------------------------------------- small helpers */

/* mkdir -p: creates `path` and its missing parents. */
ct_status ct_mkdir_p(const char *path);

/* The edit distance between two strings (for "did you mean" suggestions). */
size_t ct_edit_distance(const char *a, const char *b);

#define CT_MIN(a, b) ((a) < (b) ? (a) : (b))
#define CT_MAX(a, b) ((a) > (b) ? (a) : (b))
#define CT_ARRAY_LEN(a) (sizeof(a) / sizeof((a)[0]))

#endif
