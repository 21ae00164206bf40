/*
 * What the CUDA runtime and its libraries report: runtime and driver versions, the cuBLASLt
 * version, and each device's name, memory and compute capability. Compiled only when the CUDA
 * backend is built; a machine without a GPU answers with the runtime's reason. (NCCL's version
 * is comm/'s to say: ct_comm_describe_nccl.)
 */
extern "C" {
#include "kernels/kernels.h"
}

#include <cublasLt.h>
#include <cuda_runtime.h>
#include <stdio.h>

extern "C" void ct_kern_cuda_describe(char *info, size_t info_bytes, int *device_count) {
    int runtime = 0, driver = 0;
    cudaRuntimeGetVersion(&runtime);
    cudaDriverGetVersion(&driver);
    size_t lt = cublasLtGetVersion();
    int count = 0;
    cudaError_t err = cudaGetDeviceCount(&count);
    size_t used = (size_t)snprintf(info, info_bytes, "CUDA runtime %d, driver %d, cuBLASLt %zu; ",
                                   runtime, driver, lt);
    if (err != cudaSuccess) {
        snprintf(info + used, info_bytes - used, "no device: %s", cudaGetErrorString(err));
        *device_count = 0;
        return;
    }
    for (int d = 0; d < count && used < info_bytes; d++) {
        cudaDeviceProp prop;
        if (cudaGetDeviceProperties(&prop, d) != cudaSuccess) continue;
        used += (size_t)snprintf(info + used, info_bytes - used,
                                 "%sdevice %d: %s, %.1f GiB, sm_%d%d", d ? "; " : "", d, prop.name,
                                 (double)prop.totalGlobalMem / (1 << 30), prop.major, prop.minor);
    }
    *device_count = count;
}
