/*
 * The run's own collectives beside the step's reductions: per-step traffic, sums over ranks
 * (the loss, the stop flag, the validation loss), agreeing on an outcome and rank 0's word.
 * They go through the shard layer so that the trainer never calls comm/: which group carries
 * them (and later on which device stream) is decided here. Every one is over the world, and a
 * no-op in a world of one.
 */
#include "shard/shard_internal.h"

#include <stdio.h>
#include <string.h>

static void add_stats(ct_comm_stats *total, const ct_comm *comm) {
    if (!comm) return;
    ct_comm_stats more;
    ct_comm_get_stats(comm, &more);
    for (int k = 0; k < CT_COLL_KINDS; k++) {
        total->calls[k] += more.calls[k];
        total->bytes[k] += more.bytes[k];
        total->seconds[k] += more.seconds[k];
    }
}

/* The traffic so far of the world and of the shard layer's own groups (hsdp). */
static void traffic(const ct_shard *s, ct_comm_stats *total) {
    memset(total, 0, sizeof(*total));
    add_stats(total, s->world);
    if (s->owns_groups) {
        add_stats(total, s->group);
        add_stats(total, s->replica);
    }
}

void ct_shard_mark_step(ct_shard *s, int64_t step) {
    if (s->world) ct_comm_set_step(s->world, step);
    traffic(s, &s->step_start_traffic);
}

void ct_shard_step_comm_bytes(const ct_shard *s, uint64_t bytes[CT_COLL_KINDS]) {
    ct_comm_stats now;
    traffic(s, &now);
    for (int k = 0; k < CT_COLL_KINDS; k++)
        bytes[k] = now.bytes[k] - s->step_start_traffic.bytes[k];
}

void ct_shard_get_comm_stats(const ct_shard *s, ct_comm_stats *total) {
    traffic(s, total);
}

ct_status ct_shard_sum_over_ranks(ct_shard *s, double *values, int n) {
    ct_comm *world = ct_shard_live(s->world);
    return world ? ct_comm_allreduce(world, values, (size_t)n, CT_COMM_F64, NULL) : CT_OK;
}

ct_status ct_shard_agree(ct_shard *s, ct_status status, const char *what) {
    if (!ct_shard_live(s->world)) return status;
    char own[1024];
    snprintf(own, sizeof(own), "%s", status != CT_OK ? ct_error_message() : "");
    double failed = status != CT_OK ? 1.0 : 0.0;
    CT_CHECK(ct_shard_sum_over_ranks(s, &failed, 1));
    if (status != CT_OK) return ct_error(status, "%s", own);
    if (failed > 0)
        return ct_error(CT_ERR_IO, "%s failed on another rank (its log has the reason)", what);
    return CT_OK;
}

ct_status ct_shard_broadcast_from_rank0(ct_shard *s, int32_t *values, int n) {
    ct_comm *world = ct_shard_live(s->world);
    return world ? ct_comm_broadcast(world, values, (size_t)n, CT_COMM_I32, 0, NULL) : CT_OK;
}
