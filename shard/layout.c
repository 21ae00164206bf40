/*
 * The one shard layout (docs/parallel.md), used by the shard layer and by checkpoints: a unit
 * of numel elements over L ranks has shards of S = ceil(numel / L) elements, padded to S * L,
 * and rank r holds [r*S, (r+1)*S) clipped to numel (an empty range at numel for r >= L).
 */
#include "shard/shard.h"

ct_shard_range ct_shard_layout(int64_t numel, int ranks, int rank) {
    int64_t S = (numel + ranks - 1) / ranks;
    ct_shard_range r = {.shard_len = S, .padded = S * ranks};
    r.lo = rank < ranks ? CT_MIN(rank * S, numel) : numel;
    r.hi = rank < ranks ? CT_MIN(r.lo + S, numel) : numel;
    return r;
}
