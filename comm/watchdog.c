/*
 * The hang watchdog and the test-only stall fault.
 *
 * A thread per world exchanges a heartbeat every 0.5 s on a communicator of its own (a
 * duplicate of the world): each rank's {rank, last started #seq, last completed #seq, age and
 * identity of its oldest pending collective, expired?, stopping?, step}. The watchdog thread is
 * alive even when its rank's main thread is stuck in compute or in a fault, so the exchange
 * completes on every rank and all ranks see the same table. When any rank's oldest pending
 * collective is older than the timeout, every rank prints the stuck collective, the rank that
 * is behind (the fewest collectives started) and its own ring of the last 32 collectives, meets
 * the others at a barrier so that every report is out, then MPI_Abort ends the job with exit 3.
 *
 * Shutdown is collective too: a rank that frees its world keeps exchanging heartbeats, marked
 * stopping, until every rank is stopping; all ranks then leave after the same round, so none
 * is left waiting in an exchange.
 *
 * CTRAIN_FAULT=stall:rank=R:step=S (parsed by common/fault.c) makes world rank R sleep forever
 * (until the job is killed) at its first collective while the step set by ct_comm_set_step is
 * S: the watchdog's test.
 */
#include "comm/comm_internal.h"
#include "common/fault.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HEARTBEAT_PERIOD_S 0.5

enum {
    HB_RANK,
    HB_STARTED,
    HB_COMPLETED,
    HB_PENDING,
    HB_AGE_US,
    HB_SEQ,
    HB_KIND,
    HB_BYTES,
    HB_EXPIRED,
    HB_STOPPING,
    HB_STEP,
    HB_FIELDS
};

struct ct_watchdog {
    MPI_Comm mpi;
    int rank, size;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping, started;
    int64_t *table; /* size * HB_FIELDS: the last heartbeat of every rank */
    size_t table_bytes;
};

static _Atomic int64_t timeout_us; /* 0: off */
static _Atomic int64_t current_step;

/* ---------------------------------------------------------------- report */

/* Every rank runs this with the same table: print, meet, end the job. */
_Noreturn static void report_and_abort(struct ct_watchdog *wd) {
    const int64_t *t = wd->table;
    int stuck = -1, behind = 0;
    bool all_equal = true;
    for (int r = 0; r < wd->size; r++) {
        const int64_t *h = t + (size_t)r * HB_FIELDS;
        if (h[HB_PENDING] && (stuck < 0 || h[HB_AGE_US] > t[(size_t)stuck * HB_FIELDS + HB_AGE_US]))
            stuck = r;
        if (h[HB_STARTED] < t[(size_t)behind * HB_FIELDS + HB_STARTED]) behind = r;
        if (h[HB_STARTED] != t[HB_STARTED]) all_equal = false;
    }
    CT_ASSERT(stuck >= 0, "the watchdog fired with nothing pending");
    const int64_t *s = t + (size_t)stuck * HB_FIELDS;
    const int64_t *b = t + (size_t)behind * HB_FIELDS;
    char behind_text[160];
    if (all_equal)
        snprintf(behind_text, sizeof(behind_text),
                 "no rank is behind in starting collectives (every rank started #%lld): a "
                 "mismatched collective or a transport failure",
                 (long long)b[HB_STARTED]);
    else
        snprintf(behind_text, sizeof(behind_text), "rank %d is behind (last started #%lld)", behind,
                 (long long)b[HB_STARTED]);
    fprintf(stderr,
            "[rank %d] watchdog: collective #%lld %s (%lld bytes) pending for %.1f s on rank %d "
            "(timeout %.1f s, step %lld); %s\n",
            wd->rank, (long long)s[HB_SEQ], ct_comm_kind_name((ct_coll_kind)s[HB_KIND]),
            (long long)s[HB_BYTES], (double)s[HB_AGE_US] * 1e-6, stuck,
            (double)atomic_load(&timeout_us) * 1e-6, (long long)s[HB_STEP], behind_text);
    ct_comm_print_ring(stderr);
    fflush(stderr);
    fflush(stdout);
    MPI_Barrier(wd->mpi); /* every rank's report is out before the first abort */
    MPI_Abort(MPI_COMM_WORLD, 3);
    _exit(3);
}

/* ---------------------------------------------------------------- the thread */

static void *watchdog_thread(void *arg) {
    struct ct_watchdog *wd = arg;
    for (;;) {
        pthread_mutex_lock(&wd->lock);
        if (!wd->stopping) {
            struct timespec until;
            clock_gettime(CLOCK_REALTIME, &until);
            until.tv_nsec += (long)(HEARTBEAT_PERIOD_S * 1e9);
            until.tv_sec += until.tv_nsec / 1000000000L;
            until.tv_nsec %= 1000000000L;
            while (!wd->stopping && pthread_cond_timedwait(&wd->wake, &wd->lock, &until) == 0) {
            }
        }
        bool stopping = wd->stopping;
        pthread_mutex_unlock(&wd->lock);

        ct_comm_progress p;
        ct_comm_get_progress(&p);
        int64_t limit_us = atomic_load(&timeout_us);
        int64_t age_us = (int64_t)(p.oldest_age_s * 1e6);
        int64_t mine[HB_FIELDS] = {
            [HB_RANK] = wd->rank,
            [HB_STARTED] = (int64_t)p.started,
            [HB_COMPLETED] = (int64_t)p.completed,
            [HB_PENDING] = p.pending,
            [HB_AGE_US] = p.pending ? age_us : 0,
            [HB_SEQ] = (int64_t)p.oldest_seq,
            [HB_KIND] = p.oldest_kind,
            [HB_BYTES] = (int64_t)p.oldest_bytes,
            [HB_EXPIRED] = limit_us > 0 && p.pending && age_us > limit_us,
            [HB_STOPPING] = stopping,
            [HB_STEP] = atomic_load(&current_step),
        };
        int rc =
            MPI_Allgather(mine, HB_FIELDS, MPI_INT64_T, wd->table, HB_FIELDS, MPI_INT64_T, wd->mpi);
        if (rc != MPI_SUCCESS) {
            ct_comm_mpi_error(rc, "MPI_Allgather", __FILE__, __LINE__);
            fprintf(stderr, "%s (watchdog heartbeat): ending the job\n", ct_error_message());
            fflush(stderr);
            MPI_Abort(MPI_COMM_WORLD, 3);
            _exit(3);
        }
        bool any_expired = false, all_stopping = true;
        for (int r = 0; r < wd->size; r++) {
            any_expired |= wd->table[(size_t)r * HB_FIELDS + HB_EXPIRED] != 0;
            all_stopping &= wd->table[(size_t)r * HB_FIELDS + HB_STOPPING] != 0;
        }
        if (any_expired) report_and_abort(wd);
        if (all_stopping) return NULL;
    }
}

/* ---------------------------------------------------------------- internal interface */

ct_status ct_comm_watchdog_start(ct_comm *world) {
    struct ct_watchdog *wd = ct_alloc(CT_MEM_COMM, sizeof(*wd));
    if (!wd) return CT_ERR_NOMEM;
    wd->rank = world->rank;
    wd->size = world->size;
    wd->table_bytes = (size_t)world->size * HB_FIELDS * sizeof(int64_t);
    wd->table = ct_alloc(CT_MEM_COMM, wd->table_bytes);
    if (!wd->table) {
        ct_free(CT_MEM_COMM, wd, sizeof(*wd));
        return CT_ERR_NOMEM;
    }
    pthread_mutex_init(&wd->lock, NULL);
    pthread_cond_init(&wd->wake, NULL);
    world->watchdog = wd; /* ct_comm_watchdog_stop releases it from here on */
    wd->mpi = MPI_COMM_NULL;
    CT_MPI(MPI_Comm_dup(world->mpi, &wd->mpi));
    CT_MPI(MPI_Comm_set_errhandler(wd->mpi, MPI_ERRORS_RETURN));
    if (pthread_create(&wd->thread, NULL, watchdog_thread, wd) != 0) {
        MPI_Comm_free(&wd->mpi);
        return ct_error(CT_ERR_EXTERNAL, "[rank %d] cannot start the watchdog thread", wd->rank);
    }
    wd->started = true;
    return CT_OK;
}

void ct_comm_watchdog_stop(ct_comm *world) {
    struct ct_watchdog *wd = world->watchdog;
    if (wd->started) {
        pthread_mutex_lock(&wd->lock);
        wd->stopping = true;
        pthread_cond_signal(&wd->wake);
        pthread_mutex_unlock(&wd->lock);
        pthread_join(wd->thread, NULL);
    }
    if (wd->mpi != MPI_COMM_NULL) MPI_Comm_free(&wd->mpi);
    pthread_cond_destroy(&wd->wake);
    pthread_mutex_destroy(&wd->lock);
    ct_free(CT_MEM_COMM, wd->table, wd->table_bytes);
    ct_free(CT_MEM_COMM, wd, sizeof(*wd));
    world->watchdog = NULL;
}

void ct_comm_fault_check(void) {
    int rank = ct_comm_world_rank();
    int64_t step = atomic_load(&current_step);
    if (!ct_fault_fires("stall", rank, step)) return;
    fprintf(stderr, "[rank %d] CTRAIN_FAULT: stalling before the first collective of step %lld\n",
            rank, (long long)step);
    fflush(stderr);
    for (;;)
        sleep(1000);
}

/* ---------------------------------------------------------------- public */

/* Process-wide: the watchdog covers every group of this process. */
void ct_comm_set_timeout(ct_comm *comm, double timeout_s) {
    (void)comm;
    atomic_store(&timeout_us, timeout_s > 0 ? (int64_t)(timeout_s * 1e6) : 0);
}

void ct_comm_set_step(ct_comm *comm, int64_t step) {
    (void)comm;
    atomic_store(&current_step, step);
}
