/*
 * Test-only faults, injected through the environment so that tests can make a rank stall or die
 * at a chosen point. CTRAIN_FAULT holds one or more faults separated by ',':
 *   stall:rank=R:step=S         rank R sleeps forever before its first collective of step S
 *   kill:rank=R:step=S          rank R sends itself SIGKILL before training step S (steps count
 *                               from 0: S steps are done, and a checkpoint of step S is saved)
 *   kill_in_save:rank=R:step=S  rank R sends itself SIGKILL while the checkpoint of step S is
 *                               being written (after its rank file, before the commit)
 *   overflow:rank=R:step=S      precision.compute = fp16: rank R's first micro-batch of step S
 *                               uses an infinite loss scale, so its gradient overflows (the
 *                               loss scaler's test)
 * A fault fires at most once per process, and only in the first attempt of a job: the launcher
 * sets CTRAIN_RESTART=k (k >= 1) when it relaunches a failed job, and faults are then disarmed,
 * so a restarted job runs to the end. Ranks are world ranks. Parsed in common/fault.c; the
 * points that ask are comm/ (stall), train/run.c (kill), checkpoint/save.c
 * (kill_in_save) and train/trainer.c (overflow).
 */
#ifndef CT_FAULT_H
#define CT_FAULT_H

#include "common/common.h"

#include <stdbool.h>
#include <stdint.h>

/* Parses CTRAIN_FAULT and CTRAIN_RESTART (once per process, thread-safe; later calls return the
 * first result). A malformed value is an error naming it. */
ct_status ct_fault_init(void);
/* True (once) when a fault of `kind` names `rank` and `step` and is armed. */
bool ct_fault_fires(const char *kind, int rank, int64_t step);
/* When a fault of `kind` fires for (rank, step): prints "[rank R] CTRAIN_FAULT: <kind> at step S"
 * to stderr and sends SIGKILL to this process (never returns then). */
void ct_fault_kill_point(const char *kind, int rank, int64_t step);

#endif
