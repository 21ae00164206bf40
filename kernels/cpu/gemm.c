/*
 * The CPU backend's one GEMM seam: every matrix product of the CPU kernels (matmul.c, lm_head.c)
 * goes through ct_cpu_gemm, which runs it on the library the table's context names
 * (device.blas): OpenBLAS sgemm (the default), or oneDNN's matmul primitive, which measured
 * about even with it in fp32 on this project's AVX-512 Xeon (docs/performance.md, "GEMMs
 * through oneDNN") and is the way to AMX's bf16 GEMMs.
 *
 * oneDNN's primitives are compiled (JIT) for one shape, so they are made on first use of a shape
 * and kept in a small fixed cache keyed by every parameter of the call and the thread count:
 * the primitive, its memory objects (pointed at the caller's buffers on each call) and its
 * scratchpad (user-managed, allocated once with the primitive) are made during warm-up and live
 * as long as the process, and a steady-state step reuses them. oneDNN 2.6 still builds a small
 * argument map (C++ containers) inside each dnnl_primitive_execute; no call of its API avoids
 * that, so a oneDNN step makes a few small libc allocations per GEMM, never a buffer
 * (tests/test_gpt.c states both). Transposes are strides of the memory descriptors; beta = 1 is
 * a `sum` post-op. One CPU engine and one stream serve every primitive.
 *
 * Threads: Debian's oneDNN is built on OpenMP and uses omp_get_max_threads() of the calling
 * thread, which ct_kern_cpu_set_threads sets (omp_set_num_threads), so oneDNN, OpenBLAS and our
 * loops run on the same count. Results are deterministic for a given shape and thread count.
 */
#include "kernels/cpu/cpu_internal.h"

#include <cblas.h>
#include <omp.h>
#include <oneapi/dnnl/dnnl.h>
#include <pthread.h>

/* Distinct GEMM shapes one process keeps primitives for: a GPT step uses about 20 (three per
 * Linear kind, three for the LM head and its last chunk); tests that build several models in
 * one process need more. When full, entries are replaced in turn. */
#define GEMM_CACHE_ENTRIES 64

/* Everything a primitive depends on. */
typedef struct {
    int trans_a, trans_b, M, N, K, lda, ldb, ldc, accumulate, threads;
    int bf16_inputs; /* A and B bf16 (C stays f32, the products summed in f32) */
} gemm_key;

typedef struct {
    gemm_key key;
    dnnl_primitive_t primitive; /* NULL = empty entry */
    dnnl_memory_t src, weights, dst, scratchpad;
    void *scratchpad_buffer;
    size_t scratchpad_bytes;
} gemm_entry;

static struct {
    pthread_mutex_t lock; /* one GEMM at a time: entries and their scratchpads are shared */
    dnnl_engine_t engine;
    dnnl_stream_t stream;
    gemm_entry entries[GEMM_CACHE_ENTRIES];
    int used, next_replaced;
} onednn = {.lock = PTHREAD_MUTEX_INITIALIZER};

/* A failing oneDNN call here is a bug (the shapes are valid) or an exhausted host: abort. */
#define CT_DNNL(call)                                                                              \
    do {                                                                                           \
        dnnl_status_t dnnl_status_ = (call);                                                       \
        CT_ASSERT(dnnl_status_ == dnnl_success, "oneDNN: %s failed with status %d", #call,         \
                  (int)dnnl_status_);                                                              \
    } while (0)

static void onednn_init_once(void) {
    if (onednn.engine) return;
    CT_DNNL(dnnl_engine_create(&onednn.engine, dnnl_cpu, 0));
    CT_DNNL(dnnl_stream_create(&onednn.stream, onednn.engine, dnnl_stream_default_flags));
}

/* A row-major (rows, cols) matrix with leading dimension ld, or its transpose when trans. */
static void matrix_desc(dnnl_memory_desc_t *md, int rows, int cols, int ld, int trans,
                        dnnl_data_type_t type) {
    dnnl_dims_t dims = {rows, cols};
    dnnl_dims_t strides = {trans ? 1 : ld, trans ? ld : 1};
    CT_DNNL(dnnl_memory_desc_init_by_strides(md, 2, dims, type, strides));
}

static void entry_free(gemm_entry *e) {
    if (!e->primitive) return;
    dnnl_primitive_destroy(e->primitive);
    dnnl_memory_destroy(e->src);
    dnnl_memory_destroy(e->weights);
    dnnl_memory_destroy(e->dst);
    if (e->scratchpad) dnnl_memory_destroy(e->scratchpad);
    if (e->scratchpad_buffer) ct_free(CT_MEM_OTHER, e->scratchpad_buffer, e->scratchpad_bytes);
    memset(e, 0, sizeof(*e));
}

/* Makes the entry's primitive; false (the entry left empty) when oneDNN has no implementation
 * for the key on this CPU, as oneDNN 2.6 has none of bf16 matmul without AVX-512. */
static bool entry_make(gemm_entry *e, const gemm_key *key) {
    dnnl_data_type_t in = key->bf16_inputs ? dnnl_bf16 : dnnl_f32;
    dnnl_memory_desc_t src_md, weights_md, dst_md;
    matrix_desc(&src_md, key->M, key->K, key->lda, key->trans_a, in);
    matrix_desc(&weights_md, key->K, key->N, key->ldb, key->trans_b, in);
    matrix_desc(&dst_md, key->M, key->N, key->ldc, 0, dnnl_f32);
    dnnl_matmul_desc_t desc;
    CT_DNNL(dnnl_matmul_desc_init(&desc, &src_md, &weights_md, NULL, &dst_md));

    dnnl_primitive_attr_t attr;
    CT_DNNL(dnnl_primitive_attr_create(&attr));
    /* A scratchpad we own, so executing never allocates one. */
    CT_DNNL(dnnl_primitive_attr_set_scratchpad_mode(attr, dnnl_scratchpad_mode_user));
    if (key->accumulate) {
        dnnl_post_ops_t post_ops;
        CT_DNNL(dnnl_post_ops_create(&post_ops));
        CT_DNNL(dnnl_post_ops_append_sum(post_ops, 1.0f)); /* C = A B + 1 * C */
        CT_DNNL(dnnl_primitive_attr_set_post_ops(attr, post_ops));
        dnnl_post_ops_destroy(post_ops);
    }
    dnnl_primitive_desc_t pd;
    dnnl_status_t made = dnnl_primitive_desc_create(&pd, &desc, attr, onednn.engine, NULL);
    dnnl_primitive_attr_destroy(attr);
    if (made == dnnl_unimplemented) return false;
    CT_DNNL(made);
    CT_DNNL(dnnl_primitive_create(&e->primitive, pd));

    CT_DNNL(dnnl_memory_create(&e->src, &src_md, onednn.engine, DNNL_MEMORY_NONE));
    CT_DNNL(dnnl_memory_create(&e->weights, &weights_md, onednn.engine, DNNL_MEMORY_NONE));
    CT_DNNL(dnnl_memory_create(&e->dst, &dst_md, onednn.engine, DNNL_MEMORY_NONE));
    const dnnl_memory_desc_t *scratch_md =
        dnnl_primitive_desc_query_md(pd, dnnl_query_scratchpad_md, 0);
    e->scratchpad_bytes = scratch_md ? dnnl_memory_desc_get_size(scratch_md) : 0;
    if (e->scratchpad_bytes > 0) {
        e->scratchpad_buffer = ct_alloc(CT_MEM_OTHER, e->scratchpad_bytes);
        CT_ASSERT(e->scratchpad_buffer, "oneDNN scratchpad of %zu bytes", e->scratchpad_bytes);
        CT_DNNL(
            dnnl_memory_create(&e->scratchpad, scratch_md, onednn.engine, e->scratchpad_buffer));
    }
    dnnl_primitive_desc_destroy(pd);
    e->key = *key;
    return true;
}

/* The cached primitive for `key`, made on first use; NULL when oneDNN has none for it. */
static gemm_entry *entry_for(const gemm_key *key) {
    for (int i = 0; i < onednn.used; i++)
        if (memcmp(&onednn.entries[i].key, key, sizeof(*key)) == 0) return &onednn.entries[i];
    gemm_entry *e;
    if (onednn.used < GEMM_CACHE_ENTRIES) {
        e = &onednn.entries[onednn.used++];
    } else {
        e = &onednn.entries[onednn.next_replaced];
        onednn.next_replaced = (onednn.next_replaced + 1) % GEMM_CACHE_ENTRIES;
        entry_free(e);
    }
    if (entry_make(e, key)) return e;
    memset(e, 0, sizeof(*e)); /* an empty slot: the next new shape takes it */
    if (e == &onednn.entries[onednn.used - 1]) onednn.used--;
    return NULL;
}

/* Runs C = op(A) op(B) (+ C) on oneDNN; false when oneDNN has no primitive for it. */
static bool onednn_run(const gemm_key *key, const void *A, const void *B, float *C) {
    pthread_mutex_lock(&onednn.lock);
    onednn_init_once();
    gemm_entry *e = entry_for(key);
    if (e) {
        CT_DNNL(dnnl_memory_set_data_handle(e->src, (void *)A));
        CT_DNNL(dnnl_memory_set_data_handle(e->weights, (void *)B));
        CT_DNNL(dnnl_memory_set_data_handle(e->dst, C));
        dnnl_exec_arg_t args[4] = {{DNNL_ARG_SRC, e->src},
                                   {DNNL_ARG_WEIGHTS, e->weights},
                                   {DNNL_ARG_DST, e->dst},
                                   {DNNL_ARG_SCRATCHPAD, e->scratchpad}};
        CT_DNNL(dnnl_primitive_execute(e->primitive, onednn.stream, e->scratchpad ? 4 : 3, args));
        CT_DNNL(dnnl_stream_wait(onednn.stream));
    }
    pthread_mutex_unlock(&onednn.lock);
    return e != NULL;
}

/* Whether a GEMM has no products to run; then C = beta * C is done here, as sgemm does. */
static bool trivial(int M, int N, int K, float beta, float *C, int ldc) {
    if (M == 0 || N == 0) return true;
    if (K > 0) return false;
    if (beta == 0.0f)
        for (int m = 0; m < M; m++)
            memset(C + (size_t)m * ldc, 0, sizeof(float) * N);
    return true;
}

static void onednn_gemm(bool trans_a, bool trans_b, int M, int N, int K, const float *A, int lda,
                        const float *B, int ldb, float beta, float *C, int ldc) {
    if (trivial(M, N, K, beta, C, ldc)) return;
    /* ints only, no padding: compared with memcmp */
    gemm_key key = {trans_a, trans_b, M, N, K, lda, ldb, ldc, beta != 0.0f, omp_get_max_threads(),
                    0};
    CT_ASSERT(onednn_run(&key, A, B, C), "oneDNN has no fp32 matmul for %dx%dx%d", M, N, K);
}

ct_status ct_cpu_gemm_bf16(bool trans_a, bool trans_b, int M, int N, int K, const uint16_t *A,
                           int lda, const uint16_t *B, int ldb, float beta, float *C, int ldc) {
    CT_ASSERT(beta == 0.0f || beta == 1.0f, "beta = %g: ct_cpu_gemm_bf16 takes 0 or 1", beta);
    if (trivial(M, N, K, beta, C, ldc)) return CT_OK;
    gemm_key key = {trans_a, trans_b, M, N, K, lda, ldb, ldc, beta != 0.0f, omp_get_max_threads(),
                    1};
    if (onednn_run(&key, A, B, C)) return CT_OK;
    return ct_error(CT_ERR_INVALID,
                    "oneDNN has no bf16 matmul on this CPU (oneDNN 2.6 needs AVX-512 for it)");
}

void ct_cpu_gemm(const ct_kern_ctx *ctx, bool trans_a, bool trans_b, int M, int N, int K,
                 const float *A, int lda, const float *B, int ldb, float beta, float *C, int ldc) {
    CT_ASSERT(beta == 0.0f || beta == 1.0f, "beta = %g: ct_cpu_gemm takes 0 or 1", beta);
    if (ctx->cpu_blas == CT_BLAS_ONEDNN) {
        onednn_gemm(trans_a, trans_b, M, N, K, A, lda, B, ldb, beta, C, ldc);
        return;
    }
    cblas_sgemm(CblasRowMajor, trans_a ? CblasTrans : CblasNoTrans,
                trans_b ? CblasTrans : CblasNoTrans, M, N, K, 1.0f, A, lda, B, ldb, beta, C, ldc);
}
