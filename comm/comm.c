/*
 * The one checked entry every collective goes through (STYLE rule 4). It validates the call,
 * numbers it (one sequence per process: in an SPMD program every rank issues the same
 * collectives in the same order, so #seq names the same operation on every rank), counts its
 * bytes (nccl-tests convention) and time per kind, keeps the last 32 in a ring for the
 * watchdog, then hands a request from the group's fixed pool to the group's backend (its
 * launch on this thread, then group.c's queue). ct_comm_wait blocks on the request and raises
 * the group thread's error message on the caller's thread. Nothing here allocates: a warm step
 * costs no malloc. Nothing here knows MPI or NCCL: the backend is the group's table.
 *
 * Also here, under the same lock: the registry of live groups, which the watchdog reads and
 * the end of a job walks to abort every backend; and the training step with the test-only
 * stall fault (CTRAIN_FAULT=stall:rank=R:step=S, parsed by common/fault.c, makes world rank R
 * sleep forever at its first collective while the step set by ct_comm_set_step is S).
 */
#include "comm/comm_internal.h"
#include "common/fault.h"

#include <stdatomic.h>
#include <string.h>
#include <unistd.h>

typedef struct {
    uint64_t seq, bytes;
    ct_coll_kind kind;
    ct_comm_req_state state;
    int group_size;
} ring_entry;

/* Process-wide bookkeeping; see comm_internal.h for the lock order. */
static struct {
    pthread_mutex_t lock;
    uint64_t next_seq; /* the last number handed out */
    uint64_t completed_max;
    ring_entry ring[CT_COMM_RING];
    ct_comm *registry;
    int world_rank;
} accounting = {PTHREAD_MUTEX_INITIALIZER, 0, 0, {{0}}, NULL, -1};

static _Atomic int64_t current_step;

static const char *const kind_names[CT_COLL_KINDS] = {"allreduce", "reduce_scatter", "allgather",
                                                      "broadcast", "barrier"};
static const char *const state_names[] = {"free", "queued", "running", "done", "failed"};

/* ---------------------------------------------------------------- helpers */

static void ring_set_state(uint64_t seq, ct_comm_req_state state) {
    ring_entry *e = &accounting.ring[seq % CT_COMM_RING];
    if (e->seq == seq) e->state = state;
}

static bool is_reduction(ct_coll_kind kind) {
    return kind == CT_COLL_ALLREDUCE || kind == CT_COLL_REDUCE_SCATTER;
}

/* Stalls this rank forever when CTRAIN_FAULT has a stall fault for its world rank and the
 * current step. */
static void fault_check(void) {
    int rank = accounting.world_rank;
    int64_t step = atomic_load(&current_step);
    if (!ct_fault_fires("stall", rank, step)) return;
    fprintf(stderr, "[rank %d] CTRAIN_FAULT: stalling before the first collective of step %lld\n",
            rank, (long long)step);
    fflush(stderr);
    for (;;)
        sleep(1000);
}

/* Validates, numbers and queues one collective; *out receives the request. */
static ct_status start(ct_comm *comm, ct_coll_kind kind, const void *send, void *recv, size_t count,
                       ct_comm_dtype dtype, int root, ct_comm_request **out) {
    *out = NULL;
    if (!comm) return ct_error(CT_ERR_INVALID, "%s on a NULL group", kind_names[kind]);
    if ((unsigned)dtype > CT_COMM_F64)
        return ct_error(CT_ERR_INVALID, "%s: unknown dtype %d", kind_names[kind], (int)dtype);
    if (dtype == CT_COMM_U8 && is_reduction(kind))
        return ct_error(CT_ERR_INVALID, "%s: u8 cannot be summed", kind_names[kind]);
    if (kind == CT_COLL_BROADCAST && (root < 0 || root >= comm->size))
        return ct_error(CT_ERR_INVALID, "broadcast: root %d outside a group of %d", root,
                        comm->size);
    if (count > 0 && (!recv || (kind != CT_COLL_ALLREDUCE && kind != CT_COLL_BROADCAST && !send)))
        return ct_error(CT_ERR_INVALID, "%s of %zu elements with a NULL buffer", kind_names[kind],
                        count);
    size_t esize = ct_comm_dtype_bytes(dtype);
    uint64_t bytes = (uint64_t)count * esize;
    if (kind == CT_COLL_REDUCE_SCATTER || kind == CT_COLL_ALLGATHER) bytes *= (uint64_t)comm->size;

    /* A test-only stall happens before numbering, so the stalled rank is visibly behind. */
    fault_check();

    pthread_mutex_lock(&comm->lock);
    ct_comm_request *req = comm->free_list;
    if (req) comm->free_list = req->next;
    pthread_mutex_unlock(&comm->lock);
    if (!req)
        return ct_error(CT_ERR_INVALID,
                        "%s: more than %d collectives in flight on one group (wait on earlier "
                        "requests first)",
                        kind_names[kind], CT_COMM_POOL);

    req->comm = comm;
    req->kind = kind;
    req->dtype = dtype;
    req->send = send;
    req->recv = recv;
    req->count = count;
    req->root = root;
    req->bytes = bytes;
    req->status = CT_OK;
    req->message[0] = '\0';
    req->next = NULL;
    req->queued_s = ct_time_s();

    pthread_mutex_lock(&accounting.lock);
    req->seq = ++accounting.next_seq;
    accounting.ring[req->seq % CT_COMM_RING] =
        (ring_entry){req->seq, bytes, kind, CT_REQ_QUEUED, comm->size};
    pthread_mutex_unlock(&accounting.lock);
    ct_log(CT_LOG_DEBUG, "comm", "#%llu %s %llu bytes (group of %d)", (unsigned long long)req->seq,
           kind_names[kind], (unsigned long long)bytes, comm->size);

    /* Pending from here, before the launch: a launch that does not return (NCCL's, polling a
     * nonblocking communicator) is the watchdog's to report, as a queued collective. */
    pthread_mutex_lock(&comm->lock);
    req->state = CT_REQ_QUEUED;
    pthread_mutex_unlock(&comm->lock);
    ct_status status = comm->ops->launch ? comm->ops->launch(comm, req) : CT_OK;
    if (status != CT_OK) {
        ct_comm_mark_done(req, status, ct_error_message());
        return ct_comm_wait(req);
    }
    ct_comm_enqueue(comm, req);
    *out = req;
    return CT_OK;
}

/* The blocking form is the asynchronous one followed by its wait. */
static ct_status finish(ct_status status, ct_comm_request *req, ct_comm_request **request) {
    if (status != CT_OK) return status;
    if (request) {
        *request = req;
        return CT_OK;
    }
    return ct_comm_wait(req);
}

/* ---------------------------------------------------------------- internal interface */

int ct_comm_world_rank(void) {
    return accounting.world_rank;
}

void ct_comm_set_world_rank(int rank) {
    accounting.world_rank = rank;
}

int64_t ct_comm_current_step(void) {
    return atomic_load(&current_step);
}

void ct_comm_register(ct_comm *comm) {
    pthread_mutex_lock(&accounting.lock);
    comm->next_registered = accounting.registry;
    accounting.registry = comm;
    pthread_mutex_unlock(&accounting.lock);
}

void ct_comm_unregister(ct_comm *comm) {
    pthread_mutex_lock(&accounting.lock);
    for (ct_comm **p = &accounting.registry; *p; p = &(*p)->next_registered) {
        if (*p == comm) {
            *p = comm->next_registered;
            break;
        }
    }
    pthread_mutex_unlock(&accounting.lock);
}

int ct_comm_live_groups(void) {
    int n = 0;
    pthread_mutex_lock(&accounting.lock);
    for (ct_comm *c = accounting.registry; c; c = c->next_registered)
        n++;
    pthread_mutex_unlock(&accounting.lock);
    return n;
}

void ct_comm_set_backend(ct_comm *comm, const ct_comm_ops *ops, void *state) {
    pthread_mutex_lock(&accounting.lock);
    comm->ops = ops;
    comm->backend = state;
    pthread_mutex_unlock(&accounting.lock);
}

void ct_comm_abort_backends(void) {
    pthread_mutex_lock(&accounting.lock);
    for (ct_comm *c = accounting.registry; c; c = c->next_registered)
        if (c->ops->abort) c->ops->abort(c);
    pthread_mutex_unlock(&accounting.lock);
}

void ct_comm_pool_init(ct_comm *comm) {
    comm->free_list = NULL;
    for (int i = CT_COMM_POOL - 1; i >= 0; i--) {
        comm->pool[i].state = CT_REQ_FREE;
        comm->pool[i].next = comm->free_list;
        comm->free_list = &comm->pool[i];
    }
}

void ct_comm_mark_running(ct_comm_request *req) {
    pthread_mutex_lock(&accounting.lock);
    ring_set_state(req->seq, CT_REQ_RUNNING);
    pthread_mutex_unlock(&accounting.lock);
    pthread_mutex_lock(&req->comm->lock);
    req->state = CT_REQ_RUNNING;
    pthread_mutex_unlock(&req->comm->lock);
}

void ct_comm_mark_done(ct_comm_request *req, ct_status status, const char *message) {
    ct_comm *comm = req->comm;
    pthread_mutex_lock(&accounting.lock);
    ring_set_state(req->seq, status == CT_OK ? CT_REQ_DONE : CT_REQ_FAILED);
    if (req->seq > accounting.completed_max) accounting.completed_max = req->seq;
    pthread_mutex_unlock(&accounting.lock);
    double seconds = ct_time_s() - req->queued_s;
    pthread_mutex_lock(&comm->lock);
    comm->stats.calls[req->kind]++;
    comm->stats.bytes[req->kind] += req->bytes;
    comm->stats.seconds[req->kind] += seconds;
    req->status = status;
    if (status != CT_OK) snprintf(req->message, sizeof(req->message), "%s", message);
    req->state = CT_REQ_DONE;
    pthread_cond_broadcast(&comm->done);
    pthread_mutex_unlock(&comm->lock);
}

void ct_comm_get_progress(ct_comm_progress *progress) {
    memset(progress, 0, sizeof(*progress));
    double now = ct_time_s();
    pthread_mutex_lock(&accounting.lock);
    progress->started = accounting.next_seq;
    progress->completed = accounting.completed_max;
    for (ct_comm *c = accounting.registry; c; c = c->next_registered) {
        pthread_mutex_lock(&c->lock);
        for (int i = 0; i < CT_COMM_POOL; i++) {
            const ct_comm_request *r = &c->pool[i];
            if (r->state != CT_REQ_QUEUED && r->state != CT_REQ_RUNNING) continue;
            double age = now - r->queued_s;
            if (!progress->pending || age > progress->oldest_age_s) {
                progress->pending = true;
                progress->oldest_age_s = age;
                progress->oldest_seq = r->seq;
                progress->oldest_bytes = r->bytes;
                progress->oldest_kind = r->kind;
            }
        }
        pthread_mutex_unlock(&c->lock);
    }
    pthread_mutex_unlock(&accounting.lock);
}

void ct_comm_print_ring(FILE *out) {
    pthread_mutex_lock(&accounting.lock);
    uint64_t last = accounting.next_seq;
    uint64_t first = last >= CT_COMM_RING ? last - CT_COMM_RING + 1 : 1;
    fprintf(out, "[rank %d] last %llu collectives of this rank:\n", accounting.world_rank,
            (unsigned long long)(last - first + 1));
    for (uint64_t s = first; s <= last; s++) {
        const ring_entry *e = &accounting.ring[s % CT_COMM_RING];
        fprintf(out, "[rank %d]   #%llu %-14s %12llu bytes  group of %d  %s\n",
                accounting.world_rank, (unsigned long long)e->seq, kind_names[e->kind],
                (unsigned long long)e->bytes, e->group_size, state_names[e->state]);
    }
    pthread_mutex_unlock(&accounting.lock);
}

/* ---------------------------------------------------------------- public: collectives */

ct_status ct_comm_allreduce(ct_comm *comm, void *buf, size_t count, ct_comm_dtype dtype,
                            ct_comm_request **request) {
    ct_comm_request *req;
    ct_status status = start(comm, CT_COLL_ALLREDUCE, buf, buf, count, dtype, 0, &req);
    return finish(status, req, request);
}

ct_status ct_comm_reduce_scatter(ct_comm *comm, const void *send, void *recv, size_t recv_count,
                                 ct_comm_dtype dtype, ct_comm_request **request) {
    ct_comm_request *req;
    ct_status status = start(comm, CT_COLL_REDUCE_SCATTER, send, recv, recv_count, dtype, 0, &req);
    return finish(status, req, request);
}

ct_status ct_comm_allgather(ct_comm *comm, const void *send, void *recv, size_t send_count,
                            ct_comm_dtype dtype, ct_comm_request **request) {
    ct_comm_request *req;
    ct_status status = start(comm, CT_COLL_ALLGATHER, send, recv, send_count, dtype, 0, &req);
    return finish(status, req, request);
}

ct_status ct_comm_broadcast(ct_comm *comm, void *buf, size_t count, ct_comm_dtype dtype, int root,
                            ct_comm_request **request) {
    ct_comm_request *req;
    ct_status status = start(comm, CT_COLL_BROADCAST, buf, buf, count, dtype, root, &req);
    return finish(status, req, request);
}

ct_status ct_comm_barrier(ct_comm *comm) {
    ct_comm_request *req;
    ct_status status = start(comm, CT_COLL_BARRIER, NULL, NULL, 0, CT_COMM_U8, 0, &req);
    return finish(status, req, NULL);
}

ct_status ct_comm_wait(ct_comm_request *request) {
    if (!request) return ct_error(CT_ERR_INVALID, "ct_comm_wait on a NULL request");
    ct_comm *comm = request->comm;
    pthread_mutex_lock(&comm->lock);
    CT_ASSERT(request->state != CT_REQ_FREE, "request %p waited on twice", (void *)request);
    while (request->state != CT_REQ_DONE)
        pthread_cond_wait(&comm->done, &comm->lock);
    ct_status status = request->status;
    char message[sizeof(request->message)];
    memcpy(message, request->message, sizeof(message));
    request->state = CT_REQ_FREE;
    request->next = comm->free_list;
    comm->free_list = request;
    pthread_mutex_unlock(&comm->lock);
    if (status != CT_OK) return ct_error(status, "%s", message);
    return CT_OK;
}

ct_status ct_comm_order_after(ct_comm *comm, void *event) {
    if (!comm) return ct_error(CT_ERR_INVALID, "ct_comm_order_after on a NULL group");
    return comm->ops->order_after ? comm->ops->order_after(comm, event) : CT_OK;
}

/* ---------------------------------------------------------------- public: stats and step */

void ct_comm_get_stats(const ct_comm *comm, ct_comm_stats *stats) {
    ct_comm *c = (ct_comm *)comm; /* the lock is not part of the group's value */
    pthread_mutex_lock(&c->lock);
    *stats = c->stats;
    pthread_mutex_unlock(&c->lock);
}

void ct_comm_reset_stats(ct_comm *comm) {
    pthread_mutex_lock(&comm->lock);
    memset(&comm->stats, 0, sizeof(comm->stats));
    pthread_mutex_unlock(&comm->lock);
}

const char *ct_comm_kind_name(ct_coll_kind kind) {
    if ((unsigned)kind >= CT_COLL_KINDS) return "unknown";
    return kind_names[kind];
}

void ct_comm_set_step(ct_comm *comm, int64_t step) {
    (void)comm;
    atomic_store(&current_step, step);
}
