/*
 * The identity of a dataset's contents, for telling whether a checkpoint was trained on the
 * data a job now names. Hashing every token of a dataset of billions would make every start
 * slow, so the fingerprint covers what a changed dataset almost always changes: the token
 * count and 66 windows of tokens (the first, the last, and 64 spread evenly over the stream).
 * Moving or renaming the files keeps it; re-tokenizing, adding or replacing a shard changes it.
 */
#include "data/data.h"

#define WINDOWS 64
#define WINDOW_TOKENS 256

/* Adds the tokens [start, start + count) of the stream to the hash (values as stored). */
static uint64_t add_window(uint64_t h, const ct_data_dataset *dataset, uint64_t start,
                           uint64_t count) {
    int32_t tokens[WINDOW_TOKENS];
    /* A token beyond vocab_size still fills `tokens`: the check belongs to the reader. */
    if (ct_data_read_tokens(dataset, start, count, tokens) != CT_OK) ct_error_clear();
    return ct_hash64_add(h, tokens, sizeof(int32_t) * (size_t)count);
}

uint64_t ct_data_fingerprint(const ct_data_dataset *dataset) {
    uint64_t n = ct_data_num_tokens(dataset);
    uint64_t h = ct_hash64_add(ct_hash64_start(0x6461746166707231ULL), &n, sizeof(n));
    uint64_t window = n < WINDOW_TOKENS ? n : WINDOW_TOKENS;
    h = add_window(h, dataset, 0, window);
    for (uint64_t i = 1; i <= WINDOWS && n > window; i++)
        h = add_window(h, dataset, (n - window) / (WINDOWS + 1) * i, window);
    h = add_window(h, dataset, n - window, window);
    return ct_hash64_finish(h);
}
