/*
 * The NCCL backend's public entries for builds without CUDA: an NCCL group cannot be made.
 * Builds with CUDA compile comm/nccl.c instead.
 */
#include "comm/comm.h"

#include <stdio.h>

ct_status ct_comm_init_nccl(ct_comm *group, int device, ct_comm **nccl) {
    (void)group;
    (void)device;
    *nccl = NULL;
    return ct_error(CT_ERR_INVALID, "the NCCL backend needs a build with CUDA (configure with "
                                    "-DCTRAIN_CUDA=ON where CUDA and NCCL are installed)");
}

void ct_comm_describe_nccl(char *info, size_t info_bytes) {
    snprintf(info, info_bytes, "built without CUDA (configure with -DCTRAIN_CUDA=ON)");
}
