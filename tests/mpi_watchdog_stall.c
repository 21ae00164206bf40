/*
 * The watchdog's subject: a small training-like loop (steps of one all-reduce and a little
 * "compute") with the watchdog timeout from argv[1]. Run by tests/mpi_watchdog.sh, once clean
 * (it must finish and exit 0) and once with CTRAIN_FAULT=stall:rank=1:step=3 (the watchdog must
 * end the job, every rank naming the stuck collective and the rank behind).
 */
#include "comm/comm.h"

#include <stdio.h>
#include <stdlib.h>
#include <unistd.h>

int main(int argc, char **argv) {
    ct_comm *world;
    if (ct_comm_init_world(&world, &argc, &argv) != CT_OK) {
        fprintf(stderr, "%s\n", ct_error_message());
        return 2;
    }
    double timeout_s = argc > 1 ? atof(argv[1]) : 2.0;
    ct_comm_set_timeout(world, timeout_s);
    static float grads[1001];
    for (int64_t step = 0; step < 8; step++) {
        ct_comm_set_step(world, step);
        if (ct_comm_allreduce(world, grads, 1001, CT_COMM_F32, NULL) != CT_OK) {
            fprintf(stderr, "%s\n", ct_error_message());
            ct_comm_abort(world, 1);
        }
        usleep(50000);
    }
    if (ct_comm_rank(world) == 0) printf("finished 8 steps\n");
    ct_comm_free(world);
    ct_comm_finalize();
    return 0;
}
