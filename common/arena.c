/*
 * Arenas: per-step bump allocation for activations and temporaries. An arena reserves address
 * space once (PROT_NONE: no memory is committed or counted by the kernel), the size its owner
 * planned or else that of physical memory, and makes pages accessible as the bump pointer first
 * passes them. A step's shapes do
 * not change, so after the first step every page a step needs is mapped and a step makes no
 * system call and no allocation; the resident size is the true peak, never a chain of blocks.
 */
#include "common/common.h"

#include <errno.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

/* Pages are made accessible in steps of this many bytes (fewer mprotect calls). */
#define COMMIT_GRANULE_BYTES ((size_t)2 << 20)

struct ct_arena_region {
    char *base;
    size_t reserved_bytes;
    size_t committed_bytes;
};

static size_t physical_memory_bytes(void) {
    long pages = sysconf(_SC_PHYS_PAGES), page = sysconf(_SC_PAGESIZE);
    return pages > 0 && page > 0 ? (size_t)pages * (size_t)page : (size_t)16 << 30;
}

void ct_arena_init(ct_arena *arena, ct_mem_category category) {
    memset(arena, 0, sizeof(*arena));
    arena->category = category;
}

ct_status ct_arena_init_over(ct_arena *arena, ct_mem_category category, void *base, size_t bytes) {
    ct_arena_init(arena, category);
    arena->external = true;
    arena->capacity_bytes = bytes;
    ct_arena_region *r = ct_alloc(CT_MEM_OTHER, sizeof(*r));
    if (!r) return CT_ERR_NOMEM;
    *r = (ct_arena_region){.base = base, .reserved_bytes = bytes, .committed_bytes = bytes};
    arena->region = r;
    return CT_OK;
}

void ct_arena_set_capacity(ct_arena *arena, size_t bytes) {
    CT_ASSERT(!arena->region, "an arena's capacity is set before its first allocation");
    arena->capacity_bytes = bytes;
}

void ct_arena_free(ct_arena *arena) {
    ct_arena_region *r = arena->region;
    if (r && !arena->external) {
        ct_mem_account(arena->category, -(int64_t)r->committed_bytes);
        munmap(r->base, r->reserved_bytes);
    }
    if (r) {
        ct_free(CT_MEM_OTHER, r, sizeof(*r));
    }
    memset(arena, 0, sizeof(*arena));
}

/* Reserves the address space on first use. */
static ct_status reserve(ct_arena *arena) {
    ct_arena_region *r = ct_alloc(CT_MEM_OTHER, sizeof(*r));
    if (!r) return CT_ERR_NOMEM;
    r->reserved_bytes = arena->capacity_bytes ? arena->capacity_bytes : physical_memory_bytes();
    r->base = mmap(NULL, r->reserved_bytes, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
                   -1, 0);
    if (r->base == MAP_FAILED) {
        size_t wanted = r->reserved_bytes;
        ct_free(CT_MEM_OTHER, r, sizeof(*r));
        return ct_error(CT_ERR_NOMEM,
                        "cannot reserve %zu MiB of address space for %s: %s (is `ulimit -v` "
                        "too low?)",
                        wanted >> 20, ct_mem_category_name(arena->category), strerror(errno));
    }
    arena->region = r;
    return CT_OK;
}

void *ct_arena_alloc_uninit(ct_arena *arena, size_t bytes) {
    if (!arena->region && reserve(arena) != CT_OK) return NULL;
    ct_arena_region *r = arena->region;
    size_t rounded = (bytes + 63) & ~(size_t)63;
    size_t end = arena->used_bytes + rounded;
    if (end > r->reserved_bytes) {
        ct_error(CT_ERR_NOMEM, "%s need more than the %zu MiB reserved for them (%s)",
                 ct_mem_category_name(arena->category), r->reserved_bytes >> 20,
                 arena->capacity_bytes ? "the plan's figure: a bug in the plan"
                                       : "the machine's physical memory");
        return NULL;
    }
    if (end > r->committed_bytes) {
        size_t target =
            (end + COMMIT_GRANULE_BYTES - 1) / COMMIT_GRANULE_BYTES * COMMIT_GRANULE_BYTES;
        target = CT_MIN(target, r->reserved_bytes);
        if (mprotect(r->base + r->committed_bytes, target - r->committed_bytes,
                     PROT_READ | PROT_WRITE) != 0) {
            ct_error(CT_ERR_NOMEM, "cannot commit %zu bytes for %s: %s", target,
                     ct_mem_category_name(arena->category), strerror(errno));
            return NULL;
        }
        ct_mem_account(arena->category, (int64_t)(target - r->committed_bytes));
        r->committed_bytes = target;
    }
    void *ptr = r->base + arena->used_bytes;
    arena->used_bytes = end;
    if (end > arena->peak_bytes) arena->peak_bytes = end;
    return ptr;
}

void *ct_arena_alloc(ct_arena *arena, size_t bytes) {
    CT_ASSERT(!arena->external, "a zero-filled allocation from an arena over device memory");
    void *ptr = ct_arena_alloc_uninit(arena, bytes);
    if (ptr) memset(ptr, 0, bytes);
    return ptr;
}

ct_status ct_arena_reset(ct_arena *arena) {
    arena->used_bytes = 0;
    return CT_OK;
}

size_t ct_arena_mark(const ct_arena *arena) {
    return arena->used_bytes;
}

void ct_arena_rewind(ct_arena *arena, size_t mark) {
    CT_ASSERT(mark <= arena->used_bytes, "rewind to %zu, above the %zu bytes in use", mark,
              arena->used_bytes);
    arena->used_bytes = mark;
}
