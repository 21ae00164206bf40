/*
 * The answer to "NCCL?" for builds without the CUDA backend. Builds with it compile comm/nccl.c
 * instead.
 */
#include "comm/comm_internal.h"

ct_status ct_comm_init_nccl(ct_comm *group, int device, ct_comm **nccl) {
    (void)group;
    (void)device;
    *nccl = NULL;
    return ct_error(CT_ERR_INVALID, "the NCCL backend needs a build with CUDA (configure with "
                                    "-DCTRAIN_CUDA=ON where CUDA and NCCL are installed)");
}

void *ct_comm_stream(const ct_comm *comm) {
    (void)comm;
    return NULL;
}
