/*
 * The hang watchdog and the test-only stall fault.
 *
 * A thread per world sends a heartbeat every 0.5 s to every other rank, point to point, on a
 * communicator of its own (a duplicate of the world): {rank, last started #seq, last completed
 * #seq, age and identity of its oldest pending collective, expired?, stopping?, step, the rank
 * it found silent, reported?}. The heartbeat used to be an MPI_Allgather, which needs every
 * rank's answer: one rank frozen by SIGSTOP (its watchdog thread frozen with it) left every
 * other watchdog waiting in the exchange, and the job hung with nobody reporting. Now nothing
 * waits for a peer: each rank keeps one MPI_Irecv posted per peer and drains it with MPI_Test,
 * posts an MPI_Isend per peer (never a second one while the first is still incomplete, so a
 * frozen peer costs one request), and remembers per peer its last record and the local time it
 * arrived. Two rules end the job, evaluated every period over that table:
 *
 * - a peer that has sent nothing for longer than the timeout (and was not seen stopping) is
 *   stopped, frozen or dead: this rank prints "rank R has sent no heartbeat for X s" with R's
 *   last heartbeat (step, last collective started and completed, its oldest pending one). Its
 *   own heartbeat then names R, so a peer that has not noticed yet reports it too;
 * - a record (this rank's or a peer's last) whose oldest pending collective is older than the
 *   timeout (the main thread stuck in a collective, its watchdog alive): every rank prints the
 *   stuck collective and the rank that is behind (the fewest collectives started), as before.
 *
 * After its report and its ring of the last 32 collectives, a rank keeps beating, marked
 * reported, until every peer that still answers has reported too (at most 3 s: no barrier, which
 * a frozen rank would block). Then the lowest rank that reported calls MPI_Abort (exit 3); the
 * others call it too if that has not ended them 2 s later. timeout 0 turns both rules off.
 *
 * Shutdown: a rank that frees its world keeps beating, marked stopping, until the last record
 * of every peer says stopping and its own stopping record has been posted to every peer; it
 * then waits (bounded) for its sends, cancels its receives and leaves. A peer seen stopping is
 * never declared silent, so one that has left holds nobody up, and send errors to it (its MPI
 * may be finalizing) are ignored.
 *
 * Ending the job: every live group's backend communicator is torn down first (NCCL:
 * ncclCommAbort, so that kernels waiting on a peer end and no GPU is left held), then MPI_Abort.
 *
 * The watchdog's test is the stall fault (CTRAIN_FAULT=stall:rank=R:step=S, comm.c): world rank
 * R sleeps forever at its first collective of step S.
 */
#include "comm/comm_internal.h"

#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#define HEARTBEAT_PERIOD_S 0.5
#define STOPPING_PERIOD_S 0.05 /* while stopping or reporting: leave soon after the others */
#define REPORT_GRACE_S 3.0     /* the longest wait for the peers' reports before aborting */
#define SEND_DRAIN_S 2.0       /* the longest wait for this rank's last sends when stopping */
#define ABORT_FALLBACK_S 2.0   /* a reporting rank's wait for the first reporter's MPI_Abort */
#define HEARTBEAT_TAG 8

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
    HB_SILENT,   /* 1 + the rank this rank found silent; 0: none */
    HB_REPORTED, /* this rank has printed its report and is about to abort */
    HB_FIELDS
};

struct peer {
    int64_t last[HB_FIELDS]; /* the last record received (this rank's own at its own index) */
    int64_t in[HB_FIELDS];   /* the posted receive's buffer */
    int64_t out[HB_FIELDS];  /* the send's buffer, untouched while the send is in flight */
    MPI_Request recv, send;
    bool seen;          /* a record has arrived */
    bool sent_stopping; /* a record marked stopping has been posted to it */
    bool gone;          /* it was seen stopping, then MPI failed to reach it: left */
    double heard_s;     /* ct_time_s() of the last arrival (the watchdog's start before one) */
};

struct ct_watchdog {
    MPI_Comm mpi;
    int rank, size;
    pthread_t thread;
    pthread_mutex_t lock;
    pthread_cond_t wake;
    bool stopping, started;
    struct peer *peers; /* size entries */
    size_t peers_bytes;
};

static _Atomic int64_t timeout_us; /* 0: off */

/* Tears down every backend, then ends the job with exit code 3. */
_Noreturn static void end_job(void) {
    ct_comm_abort_backends();
    MPI_Abort(MPI_COMM_WORLD, 3);
    _exit(3);
}

/* ---------------------------------------------------------------- heartbeats */

_Noreturn static void heartbeat_failed(int rc, const char *call, int peer) {
    ct_comm_mpi_error(rc, call, __FILE__, __LINE__);
    fprintf(stderr, "%s (watchdog heartbeat with rank %d): ending the job\n", ct_error_message(),
            peer);
    fflush(stderr);
    end_job();
}

/* An MPI failure towards a peer already seen stopping means it left: forget it. Any other
 * failure ends the job. */
static void check_peer_call(struct ct_watchdog *wd, int p, int rc, const char *call) {
    if (rc == MPI_SUCCESS) return;
    if (!wd->peers[p].last[HB_STOPPING]) heartbeat_failed(rc, call, p);
    wd->peers[p].gone = true;
}

static void build_record(struct ct_watchdog *wd, bool stopping, int silent, bool reported) {
    ct_comm_progress p;
    ct_comm_get_progress(&p);
    int64_t limit_us = atomic_load(&timeout_us);
    int64_t age_us = (int64_t)(p.oldest_age_s * 1e6);
    int64_t *mine = wd->peers[wd->rank].last;
    mine[HB_RANK] = wd->rank;
    mine[HB_STARTED] = (int64_t)p.started;
    mine[HB_COMPLETED] = (int64_t)p.completed;
    mine[HB_PENDING] = p.pending;
    mine[HB_AGE_US] = p.pending ? age_us : 0;
    mine[HB_SEQ] = (int64_t)p.oldest_seq;
    mine[HB_KIND] = p.oldest_kind;
    mine[HB_BYTES] = (int64_t)p.oldest_bytes;
    mine[HB_EXPIRED] = limit_us > 0 && p.pending && age_us > limit_us;
    mine[HB_STOPPING] = stopping;
    mine[HB_STEP] = ct_comm_current_step();
    mine[HB_SILENT] = silent + 1;
    mine[HB_REPORTED] = reported;
    wd->peers[wd->rank].seen = true;
}

/* Posts this rank's record to every peer whose previous send has completed. */
static void send_all(struct ct_watchdog *wd) {
    const int64_t *mine = wd->peers[wd->rank].last;
    for (int p = 0; p < wd->size; p++) {
        struct peer *peer = &wd->peers[p];
        if (p == wd->rank || peer->gone) continue;
        if (peer->send != MPI_REQUEST_NULL) {
            int done = 0;
            check_peer_call(wd, p, MPI_Test(&peer->send, &done, MPI_STATUS_IGNORE), "MPI_Test");
            if (!done || peer->gone) continue;
        }
        memcpy(peer->out, mine, sizeof(peer->out));
        check_peer_call(
            wd, p,
            MPI_Isend(peer->out, HB_FIELDS, MPI_INT64_T, p, HEARTBEAT_TAG, wd->mpi, &peer->send),
            "MPI_Isend");
        if (!peer->gone && mine[HB_STOPPING]) peer->sent_stopping = true;
    }
}

static int post_receive(struct ct_watchdog *wd, int p) {
    struct peer *peer = &wd->peers[p];
    return MPI_Irecv(peer->in, HB_FIELDS, MPI_INT64_T, p, HEARTBEAT_TAG, wd->mpi, &peer->recv);
}

/* Takes every record that has arrived; each peer's last one wins. */
static void drain(struct ct_watchdog *wd) {
    for (int p = 0; p < wd->size; p++) {
        struct peer *peer = &wd->peers[p];
        while (p != wd->rank && !peer->gone && peer->recv != MPI_REQUEST_NULL) {
            int arrived = 0;
            check_peer_call(wd, p, MPI_Test(&peer->recv, &arrived, MPI_STATUS_IGNORE), "MPI_Test");
            if (!arrived || peer->gone) break;
            memcpy(peer->last, peer->in, sizeof(peer->last));
            peer->seen = true;
            peer->heard_s = ct_time_s();
            check_peer_call(wd, p, post_receive(wd, p), "MPI_Irecv");
        }
    }
}

static void cancel_receives(struct ct_watchdog *wd) {
    for (int p = 0; p < wd->size; p++) {
        MPI_Request *recv = &wd->peers[p].recv;
        if (*recv == MPI_REQUEST_NULL) continue;
        if (MPI_Cancel(recv) == MPI_SUCCESS) MPI_Wait(recv, MPI_STATUS_IGNORE);
    }
}

/* Waits (bounded) for this rank's sends, then cancels its receives. A send still incomplete
 * after SEND_DRAIN_S is freed; MPI completes it in the background. */
static void shut_down(struct ct_watchdog *wd) {
    double until = ct_time_s() + SEND_DRAIN_S;
    for (int p = 0; p < wd->size; p++) {
        MPI_Request *send = &wd->peers[p].send;
        while (*send != MPI_REQUEST_NULL) {
            int done = 0;
            if (MPI_Test(send, &done, MPI_STATUS_IGNORE) != MPI_SUCCESS || done) break;
            if (ct_time_s() > until) {
                MPI_Request_free(send);
                break;
            }
            usleep(1000);
        }
    }
    cancel_receives(wd);
}

static bool all_stopped(const struct ct_watchdog *wd) {
    for (int p = 0; p < wd->size; p++) {
        const struct peer *peer = &wd->peers[p];
        if (p == wd->rank || peer->gone) continue;
        if (!peer->last[HB_STOPPING] || !peer->sent_stopping) return false;
    }
    return true;
}

/* Seconds since the last record from peer p arrived. */
static double quiet_s(const struct ct_watchdog *wd, int p) {
    return ct_time_s() - wd->peers[p].heard_s;
}

/* ---------------------------------------------------------------- reports */

static void describe_last(const struct peer *peer, char *text, size_t text_bytes) {
    const int64_t *h = peer->last;
    if (!peer->seen) {
        snprintf(text, text_bytes, "no heartbeat from it has arrived since the watchdog started");
        return;
    }
    char pending[120] = "none pending";
    if (h[HB_PENDING])
        snprintf(pending, sizeof(pending), "#%lld %s (%lld bytes) pending for %.1f s",
                 (long long)h[HB_SEQ], ct_comm_kind_name((ct_coll_kind)h[HB_KIND]),
                 (long long)h[HB_BYTES], (double)h[HB_AGE_US] * 1e-6);
    snprintf(text, text_bytes,
             "its last heartbeat: step %lld, last collective started #%lld, completed #%lld, %s",
             (long long)h[HB_STEP], (long long)h[HB_STARTED], (long long)h[HB_COMPLETED], pending);
}

/* A peer (or, told by `by`, this rank itself) stopped beating. */
static void report_silent(const struct ct_watchdog *wd, int silent, int by) {
    double limit_s = ct_comm_timeout_s();
    if (silent == wd->rank) {
        fprintf(stderr,
                "[rank %d] watchdog: rank %d has had no heartbeat from this rank for longer than "
                "its timeout: this rank was stopped or frozen; ending the job\n",
                wd->rank, by);
        return;
    }
    char last[320], found[48] = "";
    describe_last(&wd->peers[silent], last, sizeof(last));
    if (by >= 0) snprintf(found, sizeof(found), "; rank %d noticed first", by);
    fprintf(
        stderr,
        "[rank %d] watchdog: rank %d has sent no heartbeat for %.1f s (stopped, frozen or dead; "
        "timeout %.1f s%s); %s\n",
        wd->rank, silent, quiet_s(wd, silent), limit_s, found, last);
}

/* Some record's oldest pending collective is older than the timeout. */
static void report_pending(const struct ct_watchdog *wd) {
    int stuck = -1, behind = wd->rank;
    bool all_equal = true;
    const int64_t *mine = wd->peers[wd->rank].last;
    for (int r = 0; r < wd->size; r++) {
        if (!wd->peers[r].seen) continue;
        const int64_t *h = wd->peers[r].last;
        if (h[HB_PENDING] && (stuck < 0 || h[HB_AGE_US] > wd->peers[stuck].last[HB_AGE_US]))
            stuck = r;
        if (h[HB_STARTED] < wd->peers[behind].last[HB_STARTED]) behind = r;
        if (h[HB_STARTED] != mine[HB_STARTED]) all_equal = false;
    }
    CT_ASSERT(stuck >= 0, "the watchdog fired with nothing pending");
    const int64_t *s = wd->peers[stuck].last;
    const int64_t *b = wd->peers[behind].last;
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
            (long long)s[HB_BYTES], (double)s[HB_AGE_US] * 1e-6, stuck, ct_comm_timeout_s(),
            (long long)s[HB_STEP], behind_text);
    /* A peer quiet for several periods (but not yet past the timeout) is a likely cause. */
    for (int r = 0; r < wd->size; r++) {
        if (r == wd->rank || wd->peers[r].last[HB_STOPPING]) continue;
        if (quiet_s(wd, r) <= 3 * HEARTBEAT_PERIOD_S) continue;
        char last[320];
        describe_last(&wd->peers[r], last, sizeof(last));
        fprintf(stderr, "[rank %d] watchdog: rank %d has sent no heartbeat for %.1f s; %s\n",
                wd->rank, r, quiet_s(wd, r), last);
    }
}

/* After the report: beat until every peer that still answers has reported (bounded), then end
 * the job. `silent` goes into this rank's record so that the others name it too. */
_Noreturn static void finish_report(struct ct_watchdog *wd, bool stopping, int silent) {
    ct_comm_print_ring(stderr);
    fflush(stderr);
    fflush(stdout);
    double limit_s = ct_comm_timeout_s();
    double alive_s = limit_s > 1.0 ? limit_s : 1.0;
    double until = ct_time_s() + REPORT_GRACE_S;
    for (;;) {
        build_record(wd, stopping, silent, true);
        send_all(wd);
        drain(wd);
        bool waiting = false;
        for (int p = 0; p < wd->size; p++) {
            const struct peer *peer = &wd->peers[p];
            if (p == wd->rank || p == silent || peer->gone || peer->last[HB_REPORTED]) continue;
            if (quiet_s(wd, p) < alive_s) waiting = true;
        }
        if (!waiting || ct_time_s() > until) break;
        usleep((useconds_t)(STOPPING_PERIOD_S * 1e6));
    }
    /* One abort is enough and reads best in mpirun's notice: the lowest rank that reported
     * makes it; the others follow only if it has not ended them within ABORT_FALLBACK_S. */
    bool first = true;
    for (int p = 0; p < wd->rank; p++) {
        const struct peer *peer = &wd->peers[p];
        if (!peer->gone && peer->last[HB_REPORTED] && quiet_s(wd, p) < alive_s) first = false;
    }
    usleep(first ? 200000 : (useconds_t)(ABORT_FALLBACK_S * 1e6)); /* lines through mpirun */
    end_job();
}

/* The two rules of the header comment over the table of last records. */
static void check_table(struct ct_watchdog *wd, bool stopping) {
    int64_t limit_us = atomic_load(&timeout_us);
    int silent = -1, by = -1;
    double silent_s = 0;
    for (int p = 0; p < wd->size && limit_us > 0; p++) {
        const struct peer *peer = &wd->peers[p];
        if (p == wd->rank || peer->gone || peer->last[HB_STOPPING]) continue;
        double q = quiet_s(wd, p);
        if (q * 1e6 > (double)limit_us && q > silent_s) {
            silent = p;
            silent_s = q;
        }
    }
    for (int p = 0; p < wd->size && silent < 0; p++) {
        const struct peer *peer = &wd->peers[p];
        int named = (int)peer->last[HB_SILENT] - 1;
        if (p != wd->rank && peer->seen && named >= 0 && named < wd->size && named != p) {
            silent = named;
            by = p;
        }
    }
    if (silent >= 0) {
        report_silent(wd, silent, by);
        finish_report(wd, stopping, silent);
    }
    for (int p = 0; p < wd->size; p++) {
        if (wd->peers[p].seen && wd->peers[p].last[HB_EXPIRED]) {
            report_pending(wd);
            finish_report(wd, stopping, -1);
        }
    }
}

/* ---------------------------------------------------------------- the thread */

/* Sleeps one period (0.5 s, cut short when the world starts to free; 50 ms once stopping). */
static void wait_period(struct ct_watchdog *wd) {
    pthread_mutex_lock(&wd->lock);
    bool was_stopping = wd->stopping;
    double period_s = was_stopping ? STOPPING_PERIOD_S : HEARTBEAT_PERIOD_S;
    struct timespec until;
    clock_gettime(CLOCK_REALTIME, &until);
    until.tv_nsec += (long)(period_s * 1e9);
    until.tv_sec += until.tv_nsec / 1000000000L;
    until.tv_nsec %= 1000000000L;
    while (wd->stopping == was_stopping &&
           pthread_cond_timedwait(&wd->wake, &wd->lock, &until) == 0) {
    }
    pthread_mutex_unlock(&wd->lock);
}

static void *watchdog_thread(void *arg) {
    struct ct_watchdog *wd = arg;
    for (;;) {
        pthread_mutex_lock(&wd->lock);
        bool stopping = wd->stopping;
        pthread_mutex_unlock(&wd->lock);
        build_record(wd, stopping, -1, false);
        send_all(wd);
        drain(wd);
        check_table(wd, stopping);
        if (stopping && all_stopped(wd)) {
            shut_down(wd);
            return NULL;
        }
        wait_period(wd);
    }
}

/* ---------------------------------------------------------------- internal interface */

ct_status ct_comm_watchdog_start(ct_comm *world) {
    struct ct_watchdog *wd = ct_alloc(CT_MEM_COMM, sizeof(*wd));
    if (!wd) return CT_ERR_NOMEM;
    wd->rank = world->rank;
    wd->size = world->size;
    wd->peers_bytes = (size_t)world->size * sizeof(struct peer);
    wd->peers = ct_alloc(CT_MEM_COMM, wd->peers_bytes);
    if (!wd->peers) {
        ct_free(CT_MEM_COMM, wd, sizeof(*wd));
        return CT_ERR_NOMEM;
    }
    double now = ct_time_s();
    for (int p = 0; p < wd->size; p++) {
        wd->peers[p].recv = MPI_REQUEST_NULL;
        wd->peers[p].send = MPI_REQUEST_NULL;
        wd->peers[p].heard_s = now;
    }
    pthread_mutex_init(&wd->lock, NULL);
    pthread_cond_init(&wd->wake, NULL);
    world->watchdog = wd; /* ct_comm_watchdog_stop releases it from here on */
    wd->mpi = MPI_COMM_NULL;
    CT_MPI(MPI_Comm_dup(world->mpi, &wd->mpi));
    CT_MPI(MPI_Comm_set_errhandler(wd->mpi, MPI_ERRORS_RETURN));
    for (int p = 0; p < wd->size; p++)
        if (p != wd->rank) CT_MPI(post_receive(wd, p));
    if (pthread_create(&wd->thread, NULL, watchdog_thread, wd) != 0)
        return ct_error(CT_ERR_EXTERNAL, "[rank %d] cannot start the watchdog thread", wd->rank);
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
    } else {
        cancel_receives(wd); /* a start that failed after posting them */
    }
    if (wd->mpi != MPI_COMM_NULL) MPI_Comm_free(&wd->mpi);
    pthread_cond_destroy(&wd->wake);
    pthread_mutex_destroy(&wd->lock);
    ct_free(CT_MEM_COMM, wd->peers, wd->peers_bytes);
    ct_free(CT_MEM_COMM, wd, sizeof(*wd));
    world->watchdog = NULL;
}

double ct_comm_timeout_s(void) {
    return (double)atomic_load(&timeout_us) * 1e-6;
}

/* ---------------------------------------------------------------- public */

/* Process-wide: the watchdog covers every group of this process. */
void ct_comm_set_timeout(ct_comm *comm, double timeout_s) {
    (void)comm;
    atomic_store(&timeout_us, timeout_s > 0 ? (int64_t)(timeout_s * 1e6) : 0);
}
