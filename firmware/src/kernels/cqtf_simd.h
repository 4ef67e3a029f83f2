/*
 * cqtf_simd.h - the few Armv7E-M / Armv8-M DSP operations the optimized kernels use, on 32-bit
 * words holding two int16 lanes (low, high) or four int8 bytes.
 *
 * On cores with the DSP extension (Cortex-M4/M7/M33: __ARM_FEATURE_DSP) each is one instruction
 * (ACLE intrinsics, inline assembly for the rotated forms that ACLE lacks); elsewhere (the host,
 * Cortex-M3) they are plain C with the same results, so the optimized algorithms can be tested
 * anywhere. All lane arithmetic is exact: int8 and int16 operands, int32 sums that the kernels
 * bound (CQTF_MAX_PRODUCTS).
 */
#ifndef CQTF_SIMD_H
#define CQTF_SIMD_H

#include <stdint.h>
#include <string.h>

#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#include <arm_acle.h>
#define CQTF_SIMD_NATIVE 1
#else
#define CQTF_SIMD_NATIVE 0
#endif

/* Four int8 from any address (unaligned word loads are fine on Armv7-M/v8-M mainline). */
static inline uint32_t cqtf_read_s8x4(const int8_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* Two int16 lanes from a word-aligned int16 pair. */
static inline uint32_t cqtf_read_s16x2(const int16_t *p)
{
    uint32_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

/* One int16 (memcpy: the arena is declared as words; this keeps every access well defined). */
static inline int32_t cqtf_load_s16(const int16_t *p)
{
    int16_t v;
    memcpy(&v, p, sizeof(v));
    return v;
}

static inline void cqtf_store_s16(int16_t *p, int32_t v)
{
    const int16_t narrow = (int16_t)v;
    memcpy(p, &narrow, sizeof(narrow));
}

static inline void cqtf_write_s16x2(int16_t *p, uint32_t v)
{
    memcpy(p, &v, sizeof(v));
}

#if CQTF_SIMD_NATIVE

/* acc + lo(a) * lo(b) + hi(a) * hi(b) */
static inline int32_t cqtf_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlad((int16x2_t)a, (int16x2_t)b, acc);
}

/* acc + lo(a) * lo(b) */
static inline int32_t cqtf_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlabb((int32_t)a, (int32_t)b, acc);
}

/* acc + hi(a) * hi(b) */
static inline int32_t cqtf_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return __smlatt((int32_t)a, (int32_t)b, acc);
}

/* bytes 0 and 2 of x, sign-extended to the low and high lanes */
static inline uint32_t cqtf_sxtb16(uint32_t x)
{
    return (uint32_t)__sxtb16((int8x4_t)x);
}

/* bytes 1 and 3 of x, sign-extended to the low and high lanes */
static inline uint32_t cqtf_sxtb16_ror8(uint32_t x)
{
    uint32_t r;
    __asm("sxtb16 %0, %1, ror #8" : "=r"(r) : "r"(x));
    return r;
}

/* a + bytes 0 and 2 of x, lane by lane */
static inline uint32_t cqtf_sxtab16(uint32_t a, uint32_t x)
{
    return (uint32_t)__sxtab16((int16x2_t)a, (int8x4_t)x);
}

/* a + bytes 1 and 3 of x, lane by lane */
static inline uint32_t cqtf_sxtab16_ror8(uint32_t a, uint32_t x)
{
    uint32_t r;
    __asm("sxtab16 %0, %1, %2, ror #8" : "=r"(r) : "r"(a), "r"(x));
    return r;
}

#else /* portable C with the same results */

static inline int32_t cqtf_lane_lo(uint32_t v)
{
    const int32_t lo = (int32_t)(v & 0xFFFFu);
    return lo >= 0x8000 ? lo - 0x10000 : lo;
}

static inline int32_t cqtf_lane_hi(uint32_t v)
{
    return cqtf_lane_lo(v >> 16);
}

static inline uint32_t cqtf_pack_s16x2(int32_t lo, int32_t hi)
{
    return ((uint32_t)lo & 0xFFFFu) | (((uint32_t)hi & 0xFFFFu) << 16);
}

static inline int32_t cqtf_byte(uint32_t x, uint32_t i)
{
    const int32_t b = (int32_t)((x >> (8u * i)) & 0xFFu);
    return b >= 0x80 ? b - 0x100 : b;
}

static inline int32_t cqtf_smlad(uint32_t a, uint32_t b, int32_t acc)
{
    return acc + cqtf_lane_lo(a) * cqtf_lane_lo(b) + cqtf_lane_hi(a) * cqtf_lane_hi(b);
}

static inline int32_t cqtf_smlabb(uint32_t a, uint32_t b, int32_t acc)
{
    return acc + cqtf_lane_lo(a) * cqtf_lane_lo(b);
}

static inline int32_t cqtf_smlatt(uint32_t a, uint32_t b, int32_t acc)
{
    return acc + cqtf_lane_hi(a) * cqtf_lane_hi(b);
}

static inline uint32_t cqtf_sxtb16(uint32_t x)
{
    return cqtf_pack_s16x2(cqtf_byte(x, 0), cqtf_byte(x, 2));
}

static inline uint32_t cqtf_sxtb16_ror8(uint32_t x)
{
    return cqtf_pack_s16x2(cqtf_byte(x, 1), cqtf_byte(x, 3));
}

static inline uint32_t cqtf_sxtab16(uint32_t a, uint32_t x)
{
    return cqtf_pack_s16x2(cqtf_lane_lo(a) + cqtf_byte(x, 0), cqtf_lane_hi(a) + cqtf_byte(x, 2));
}

static inline uint32_t cqtf_sxtab16_ror8(uint32_t a, uint32_t x)
{
    return cqtf_pack_s16x2(cqtf_lane_lo(a) + cqtf_byte(x, 1), cqtf_lane_hi(a) + cqtf_byte(x, 3));
}

#endif /* CQTF_SIMD_NATIVE */

/* The same int16 value in both lanes (an input offset in [-127, 128]). */
static inline uint32_t cqtf_dup_s16(int32_t v)
{
    const uint32_t lo = (uint32_t)v & 0xFFFFu;
    return lo | (lo << 16);
}

#endif /* CQTF_SIMD_H */
