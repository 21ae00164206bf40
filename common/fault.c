/*
 * Test-only faults (fault.h): the one parser of CTRAIN_FAULT, and the points where a fault
 * fires. comm/ asks for "stall" before each collective (the watchdog's test); the trainer asks
 * for "kill" at the top of each step and for "kill_in_save" inside a checkpoint save (the
 * restart and crash-consistency tests of tests/mpi_faults.py).
 *
 * The variable is parsed once per process, by whichever thread gets here first; the others
 * wait for that parse (a save thread or a communication thread may be the first to ask). Each
 * fault fires once: an atomic flag per fault, so two threads at the same point cannot both
 * fire it. CTRAIN_RESTART=k (k >= 1, set by `ctrain-launch --max-restarts` on a relaunch)
 * disarms every fault, but a malformed CTRAIN_FAULT is an error in every attempt.
 */
#define _POSIX_C_SOURCE 200809L /* kill */
#include "common/fault.h"

#include <errno.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define FAULT_MAX 8
#define FAULT_KIND_BYTES 16

typedef struct {
    char kind[FAULT_KIND_BYTES];
    int rank;
    int64_t step;
    atomic_bool fired;
} fault;

static const char *const fault_kinds[] = {"stall", "kill", "kill_in_save", "overflow"};

enum { PARSE_NOT_STARTED = 0, PARSE_RUNNING, PARSE_DONE };

static struct {
    atomic_int parse_state;
    ct_status status;  /* of the parse */
    char message[512]; /* its error message, recorded again on every later call */
    bool armed;        /* false without CTRAIN_FAULT and in a restarted attempt */
    int count;
    fault faults[FAULT_MAX];
} faults;

/* One "kind:rank=R:step=S" of `len` bytes at `text` into *f; false when malformed. */
static bool parse_one(const char *text, size_t len, fault *f) {
    char item[128];
    if (len == 0 || len >= sizeof(item)) return false;
    memcpy(item, text, len);
    item[len] = '\0';
    const char *colon = strchr(item, ':');
    if (!colon || (size_t)(colon - item) >= FAULT_KIND_BYTES) return false;
    size_t kind_len = (size_t)(colon - item);
    bool known = false;
    for (size_t i = 0; i < CT_ARRAY_LEN(fault_kinds); i++)
        known |= strlen(fault_kinds[i]) == kind_len && strncmp(item, fault_kinds[i], kind_len) == 0;
    if (!known) return false;
    int rank, used = 0;
    long long step;
    if (sscanf(colon, ":rank=%d:step=%lld%n", &rank, &step, &used) != 2 || colon[used] != '\0' ||
        rank < 0 || step < 0)
        return false;
    memcpy(f->kind, item, kind_len);
    f->kind[kind_len] = '\0';
    f->rank = rank;
    f->step = step;
    atomic_store(&f->fired, false);
    return true;
}

/* CTRAIN_RESTART as the attempt number (0 when unset); false when it is not a number >= 0. */
static bool restart_attempt(long long *attempt) {
    const char *env = getenv("CTRAIN_RESTART");
    *attempt = 0;
    if (!env || !*env) return true;
    char *end;
    errno = 0;
    *attempt = strtoll(env, &end, 10);
    return errno == 0 && *end == '\0' && *attempt >= 0;
}

/* Fills `faults` from the environment; the message of a failure goes into faults.message. */
static ct_status parse_env(void) {
    long long attempt;
    if (!restart_attempt(&attempt)) {
        snprintf(faults.message, sizeof(faults.message),
                 "CTRAIN_RESTART=%s: expected the restart number, an integer >= 0 (set by "
                 "ctrain-launch --max-restarts)",
                 getenv("CTRAIN_RESTART"));
        return CT_ERR_INVALID;
    }
    const char *env = getenv("CTRAIN_FAULT");
    if (!env || !*env) return CT_OK;
    for (const char *p = env;;) {
        const char *comma = strchr(p, ',');
        size_t len = comma ? (size_t)(comma - p) : strlen(p);
        if (faults.count == FAULT_MAX || !parse_one(p, len, &faults.faults[faults.count])) {
            snprintf(faults.message, sizeof(faults.message),
                     "CTRAIN_FAULT=%s: bad fault '%.*s': expected KIND:rank=R:step=S, "
                     "several separated by ',' (at most %d), KIND one of stall, kill, "
                     "kill_in_save (a test-only variable)",
                     env, (int)CT_MIN(len, (size_t)100), p, FAULT_MAX);
            faults.count = 0;
            return CT_ERR_INVALID;
        }
        faults.count++;
        if (!comma) break;
        p = comma + 1;
    }
    faults.armed = attempt == 0;
    return CT_OK;
}

/* The first caller parses; any other waits until that parse is done. */
static void parse_once(void) {
    int expected = PARSE_NOT_STARTED;
    if (atomic_compare_exchange_strong(&faults.parse_state, &expected, PARSE_RUNNING)) {
        faults.status = parse_env();
        atomic_store(&faults.parse_state, PARSE_DONE);
        return;
    }
    while (atomic_load(&faults.parse_state) != PARSE_DONE)
        sched_yield();
}

ct_status ct_fault_init(void) {
    parse_once();
    if (faults.status != CT_OK) return ct_error(faults.status, "%s", faults.message);
    return CT_OK;
}

bool ct_fault_fires(const char *kind, int rank, int64_t step) {
    /* In a program that never called ct_fault_init the first question parses; a malformed
     * value then fires nothing (ct_fault_init is where it is reported). */
    parse_once();
    if (faults.status != CT_OK || !faults.armed) return false;
    for (int i = 0; i < faults.count; i++) {
        fault *f = &faults.faults[i];
        if (f->rank == rank && f->step == step && strcmp(f->kind, kind) == 0 &&
            !atomic_exchange(&f->fired, true))
            return true;
    }
    return false;
}

void ct_fault_kill_point(const char *kind, int rank, int64_t step) {
    if (!ct_fault_fires(kind, rank, step)) return;
    fprintf(stderr, "[rank %d] CTRAIN_FAULT: %s at step %lld\n", rank, kind, (long long)step);
    fflush(stderr);
    fflush(stdout);
    kill(getpid(), SIGKILL);
    for (;;) /* SIGKILL is delivered before kill returns; never go on past a fired fault */
        pause();
}
