/*
 * The answer to "is there CUDA?" for builds without the CUDA backend. Builds with it compile
 * kernels/cuda/describe.cu instead, which asks the runtime.
 */
#include "kernels/kernels.h"

#include <stdio.h>

void ct_kern_cuda_describe(char *info, size_t info_bytes, int *device_count) {
    snprintf(info, info_bytes, "built without CUDA (configure with -DCTRAIN_CUDA=ON)");
    *device_count = 0;
}
