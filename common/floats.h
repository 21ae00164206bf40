/*
 * Scalar bit-level helpers for floating-point formats, shared by the CPU casts
 * (kernels/cpu/memory.c), MPI's bf16 sum (comm/mpi.c) and the tests: an f32's bits and back,
 * bf16 (the top half of an f32) in both directions, and f16 to f32.
 */
#ifndef CT_COMMON_FLOATS_H
#define CT_COMMON_FLOATS_H

#include <stdint.h>
#include <string.h>

static inline uint32_t ct_f32_bits(float x) {
    uint32_t bits;
    memcpy(&bits, &x, sizeof(bits));
    return bits;
}

static inline float ct_bits_f32(uint32_t bits) {
    float x;
    memcpy(&x, &bits, sizeof(x));
    return x;
}

/* Round to nearest, ties to even; a NaN stays a (quiet) NaN. */
static inline uint16_t ct_f32_to_bf16(float x) {
    uint32_t bits = ct_f32_bits(x);
    if ((bits & 0x7fffffffu) > 0x7f800000u) return (uint16_t)((bits >> 16) | 0x0040u); /* NaN */
    /* Add just under half an ulp of bf16, plus the kept part's lowest bit; a carry into the
     * exponent (or to infinity) is the right answer. */
    bits += 0x7fffu + ((bits >> 16) & 1u);
    return (uint16_t)(bits >> 16);
}

/* Exact: bf16 is the top half of an f32. */
static inline float ct_bf16_to_f32(uint16_t h) {
    return ct_bits_f32((uint32_t)h << 16);
}

/* Exact: every f16 (subnormals included) is an f32. */
static inline float ct_f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000u) << 16;
    uint32_t exponent = (h >> 10) & 0x1fu, mantissa = h & 0x3ffu;
    if (exponent == 0x1f) return ct_bits_f32(sign | 0x7f800000u | (mantissa << 13));
    if (exponent == 0) /* zero or subnormal: m * 2^-24, exact in f32 */
        return sign ? -(float)mantissa * 0x1p-24f : (float)mantissa * 0x1p-24f;
    return ct_bits_f32(sign | ((exponent + 127 - 15) << 23) | (mantissa << 13));
}

#endif
