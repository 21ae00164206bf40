/*
 * Counter-based random numbers: value = mix(key, index). Nothing is carried from one draw to
 * the next, so initialising a shard of a parameter, a resumed run, or a different thread split
 * draws exactly the numbers the single-process run drew.
 */
#include "common/common.h"

#include <math.h>

/* splitmix64's finaliser: a bijection on 64 bits with good avalanche. */
static uint64_t mix64(uint64_t x) {
    x ^= x >> 30;
    x *= 0xbf58476d1ce4e5b9ULL;
    x ^= x >> 27;
    x *= 0x94d049bb133111ebULL;
    x ^= x >> 31;
    return x;
}

uint64_t ct_rng_key(uint64_t seed, uint64_t purpose, uint64_t a, uint64_t b) {
    uint64_t key = mix64(seed + 0x9e3779b97f4a7c15ULL);
    key = mix64(key ^ (purpose * 0xd1b54a32d192ed03ULL));
    key = mix64(key ^ (a * 0x8cb92ba72f3d8dd7ULL));
    key = mix64(key ^ (b * 0xe7037ed1a0b428dbULL));
    return key;
}

uint64_t ct_rng_u64(uint64_t key, uint64_t index) {
    return mix64(mix64(key ^ mix64(index + 0x632be59bd9b4e019ULL)) + index);
}

double ct_rng_uniform(uint64_t key, uint64_t index) {
    return (double)(ct_rng_u64(key, index) >> 11) * (1.0 / 9007199254740992.0);
}

double ct_rng_normal(uint64_t key, uint64_t index) {
    double u1 = ct_rng_uniform(key, 2 * index);
    double u2 = ct_rng_uniform(key, 2 * index + 1);
    if (u1 < 1e-300) u1 = 1e-300;
    return sqrt(-2.0 * log(u1)) * cos(2.0 * M_PI * u2);
}

uint64_t ct_hash64_start(uint64_t seed) {
    return 0xcbf29ce484222325ULL ^ mix64(seed);
}

uint64_t ct_hash64_add(uint64_t h, const void *data, size_t bytes) {
    const unsigned char *p = data;
    for (size_t i = 0; i < bytes; i++)
        h = (h ^ p[i]) * CT_HASH64_PRIME;
    return h;
}

uint64_t ct_hash64_finish(uint64_t h) {
    return mix64(h);
}

uint64_t ct_hash64(const void *data, size_t bytes, uint64_t seed) {
    return ct_hash64_finish(ct_hash64_add(ct_hash64_start(seed), data, bytes));
}
