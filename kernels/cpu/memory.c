/*
 * The CPU table's memory entries: memset and copy (host and "device" are the same memory, so
 * every direction is one memcpy), and casts between f32, bf16 and f16. The casts are exact
 * integer code on the bit patterns (no hardware half support needed, the same result on every
 * machine): bf16 is the top half of an f32 rounded to nearest even; f16 is IEEE binary16 with
 * subnormals, rounded to nearest even, overflowing to infinity.
 */
#include "common/floats.h"
#include "kernels/cpu/cpu_internal.h"

#include <stdbool.h>
#include <string.h>

/* The lowest `shift` bits of `mantissa` dropped, rounding to nearest, ties to even
 * (1 <= shift <= 31). */
static uint32_t round_shift(uint32_t mantissa, int shift) {
    uint32_t kept = mantissa >> shift, rest = mantissa & ((1u << shift) - 1u);
    uint32_t half = 1u << (shift - 1);
    return kept + (rest > half || (rest == half && (kept & 1u)));
}

static uint16_t f32_to_f16(float x) {
    uint32_t bits = ct_f32_bits(x);
    uint16_t sign = (uint16_t)((bits >> 16) & 0x8000u);
    uint32_t exponent = (bits >> 23) & 0xffu, mantissa = bits & 0x7fffffu;
    if (exponent == 0xff) /* infinity, or NaN kept quiet with its top mantissa bits */
        return (uint16_t)(sign | 0x7c00u | (mantissa ? 0x0200u | (mantissa >> 13) : 0));
    int e = (int)exponent - 127 + 15; /* the f16 biased exponent */
    if (e >= 31) return (uint16_t)(sign | 0x7c00u);
    if (e <= 0) {
        /* A subnormal (or zero) f16: the value is m * 2^-24 for the 24-bit significand shifted
         * right by 14 - e; f32 subnormals (exponent 0) are far below half the smallest one. */
        if (e < -10) return sign;
        return (uint16_t)(sign | round_shift(mantissa | 0x800000u, 14 - e));
    }
    /* Normal: rounding may carry into the exponent, and from the largest into infinity. */
    return (uint16_t)(sign | (((uint32_t)e << 10) + round_shift(mantissa, 13)));
}

/* Element i of src as an f32 (exact for every source type). */
static float load(const void *src, ct_dtype dtype, size_t i) {
    if (dtype == CT_BF16) return ct_bf16_to_f32(((const uint16_t *)src)[i]);
    if (dtype == CT_F16) return ct_f16_to_f32(((const uint16_t *)src)[i]);
    return ((const float *)src)[i];
}

static bool is_float(ct_dtype dtype) {
    return dtype == CT_F32 || dtype == CT_BF16 || dtype == CT_F16;
}

void *ct_cpu_device_alloc(const ct_kern_ctx *ctx, ct_mem_category category, size_t bytes) {
    (void)ctx;
    return ct_alloc(category, bytes);
}

void ct_cpu_device_free(const ct_kern_ctx *ctx, ct_mem_category category, void *ptr, size_t bytes) {
    (void)ctx;
    ct_free(category, ptr, bytes);
}

ct_status ct_cpu_memset_bytes(const ct_kern_ctx *ctx, void *dst, int value, size_t bytes) {
    (void)ctx;
    if (bytes) memset(dst, value, bytes);
    return CT_OK;
}

ct_status ct_cpu_copy(const ct_kern_ctx *ctx, void *dst, const void *src, size_t bytes,
                      ct_copy_kind kind) {
    (void)ctx, (void)kind;
    if (bytes) memcpy(dst, src, bytes);
    return CT_OK;
}

ct_status ct_cpu_cast(const ct_kern_ctx *ctx, void *dst, ct_dtype dst_dtype, const void *src,
                      ct_dtype src_dtype, size_t n) {
    if (!is_float(dst_dtype) || !is_float(src_dtype))
        return ct_error(CT_ERR_INVALID, "cast from %s to %s: only f32, bf16 and f16 cast",
                        ct_dtype_name(src_dtype), ct_dtype_name(dst_dtype));
    if (dst_dtype == src_dtype)
        return ct_cpu_copy(ctx, dst, src, n * ct_dtype_size(dst_dtype), CT_COPY_DEVICE_TO_DEVICE);
        /* Every source converts exactly to f32, so each result is rounded once. */
#pragma omp parallel for schedule(static)
    for (size_t i = 0; i < n; i++) {
        float x = load(src, src_dtype, i);
        if (dst_dtype == CT_F32)
            ((float *)dst)[i] = x;
        else if (dst_dtype == CT_BF16)
            ((uint16_t *)dst)[i] = ct_f32_to_bf16(x);
        else
            ((uint16_t *)dst)[i] = f32_to_f16(x);
    }
    return CT_OK;
}
