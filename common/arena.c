/*
 * Arenas: per-step bump allocation for activations and temporaries. A step's shapes do not
 * change, so after the first step (or the first reset that consolidates the blocks it chained)
 * one block holds everything and a step allocates nothing from the system.
 */
#include "common/common.h"

#include <string.h>

struct ct_arena_block {
    ct_arena_block *next;
    size_t capacity_bytes;
    size_t used_bytes;
    size_t alloc_bytes; /* what ct_alloc was asked for, header included */
    /* data follows, 64-byte aligned */
};

#define BLOCK_HEADER_BYTES ((sizeof(ct_arena_block) + 63) & ~(size_t)63)

static ct_arena_block *block_new(ct_mem_category category, size_t capacity_bytes) {
    size_t alloc_bytes = BLOCK_HEADER_BYTES + capacity_bytes;
    ct_arena_block *block = ct_alloc(category, alloc_bytes);
    if (!block) return NULL;
    block->capacity_bytes = capacity_bytes;
    block->alloc_bytes = alloc_bytes;
    return block;
}

static void free_blocks(ct_arena *arena) {
    while (arena->blocks) {
        ct_arena_block *next = arena->blocks->next;
        ct_free(arena->category, arena->blocks, arena->blocks->alloc_bytes);
        arena->blocks = next;
    }
}

void ct_arena_init(ct_arena *arena, ct_mem_category category, size_t initial_bytes) {
    memset(arena, 0, sizeof(*arena));
    arena->category = category;
    if (initial_bytes) arena->blocks = block_new(category, initial_bytes);
}

void ct_arena_free(ct_arena *arena) {
    free_blocks(arena);
    memset(arena, 0, sizeof(*arena));
}

void *ct_arena_alloc_uninit(ct_arena *arena, size_t bytes) {
    size_t rounded = (bytes + 63) & ~(size_t)63;
    ct_arena_block *block = arena->blocks;
    if (!block || block->capacity_bytes - block->used_bytes < rounded) {
        /* Grow geometrically so warm-up chains few blocks. */
        size_t capacity = CT_MAX(rounded, block ? 2 * block->capacity_bytes : (size_t)1 << 20);
        ct_arena_block *fresh = block_new(arena->category, capacity);
        if (!fresh) return NULL;
        fresh->next = block;
        arena->blocks = block = fresh;
    }
    void *ptr = (char *)block + BLOCK_HEADER_BYTES + block->used_bytes;
    block->used_bytes += rounded;
    arena->used_bytes += rounded;
    if (arena->used_bytes > arena->peak_bytes) arena->peak_bytes = arena->used_bytes;
    return ptr;
}

void *ct_arena_alloc(ct_arena *arena, size_t bytes) {
    void *ptr = ct_arena_alloc_uninit(arena, bytes);
    if (ptr) memset(ptr, 0, bytes);
    return ptr;
}

ct_status ct_arena_reset(ct_arena *arena) {
    if (arena->blocks && arena->blocks->next) {
        /* Several blocks were chained: replace them by one that holds the peak. */
        size_t capacity = arena->peak_bytes;
        free_blocks(arena);
        arena->blocks = block_new(arena->category, capacity);
        if (!arena->blocks) return CT_ERR_NOMEM;
    }
    if (arena->blocks) arena->blocks->used_bytes = 0;
    arena->used_bytes = 0;
    return CT_OK;
}
