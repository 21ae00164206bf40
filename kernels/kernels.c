/*
 * What kernels/ offers whatever the backend: the sizes and names of element types, and the one
 * place a backend is chosen from the device keys.
 */
#include "kernels/kernels.h"

#include <string.h>

size_t ct_dtype_size(ct_dtype dtype) {
    return dtype == CT_BF16 || dtype == CT_F16 ? 2 : 4;
}

const char *ct_dtype_name(ct_dtype dtype) {
    static const char *names[] = {"f32", "bf16", "f16", "i32"};
    return (unsigned)dtype < CT_ARRAY_LEN(names) ? names[dtype] : "unknown dtype";
}

ct_status ct_kernels_for_device(const ct_kernels_options *options, const ct_kernels **kernels) {
    const char *type = options->type;
    *kernels = NULL;
    if (strcmp(type, "cuda") == 0)
        return ct_error(CT_ERR_INVALID,
                        "device.type = \"cuda\": CUDA training is not built yet (it arrives "
                        "with the CUDA backend); use \"cpu\" or \"auto\"");
    if (strcmp(type, "cpu") != 0 && strcmp(type, "auto") != 0)
        return ct_error(CT_ERR_INVALID, "device.type = \"%s\": expected auto, cpu or cuda", type);
    ct_blas blas;
    CT_CHECK(ct_kern_cpu_blas_for(options->blas, &blas));
    ct_kern_cpu_set_threads(options->cpu_threads);
    ct_half_path half;
    CT_CHECK(ct_kern_cpu_half_path_for(options->half ? options->half : "auto", &half));
    *kernels = ct_kern_cpu(blas, half);
    return CT_OK;
}
