/*
 * cqtf_requant.h - the one requantization helper of the firmware.
 *
 * cqtf_requantize(acc, multiplier, shift) = TFLite Micro's MultiplyByQuantizedMultiplier with
 * DOUBLE rounding (gemmlowp SaturatingRoundingDoublingHighMul, then RoundingDivideByPOT):
 *   acc * multiplier * 2^(shift - 31), rounded twice.
 * It deliberately does not use single rounding: TFLM rounds twice, and the host simulation
 * (host/) copies this function bit for bit.
 *
 * Ranges (cqtf_types.h): multiplier Q31 in [2^30, 2^31) or 0; shift in [-31, 30] (positive = left).
 * One documented difference from TFLM: acc * 2^left_shift is computed in int64 and saturated to
 * int32, where TFLM multiplies in int32 (undefined behaviour on overflow).
 *
 * Every operation below is well defined in C99: left shifts are done as int64 multiplications,
 * and right shifts of negative values go through the one's complement (see cqtf_asr32), which
 * int32_t permits because exact-width types are two's complement without padding (C99 7.18.1.1).
 */
#ifndef CQTF_REQUANT_H
#define CQTF_REQUANT_H

#include <stdint.h>

/* Arithmetic (flooring) shift right, 0 <= e <= 31. ~x of a negative x is non-negative, so the
 * shift is exact, and ~ again gives floor(x / 2^e). gcc folds this into one asr. */
static inline int32_t cqtf_asr32(int32_t x, int32_t e)
{
    return (x >= 0) ? (int32_t)(x >> e) : (int32_t)~(~x >> e);
}

/* gemmlowp SaturatingRoundingDoublingHighMul: a * b / 2^31 rounded to nearest, ties toward
 * +infinity (2.5 -> 3 but -2.5 -> -2: the negative nudge is 1 - 2^30, not -2^30), with the single
 * overflowing case INT32_MIN * INT32_MIN saturated to INT32_MAX. */
static inline int32_t cqtf_sat_rounding_doubling_high_mul(int32_t a, int32_t b)
{
    int64_t ab;
    int64_t nudge;

    if (a == INT32_MIN && b == INT32_MIN) {
        return INT32_MAX;
    }
    ab = (int64_t)a * (int64_t)b;
    nudge = (ab >= 0) ? ((int64_t)1 << 30) : (1 - ((int64_t)1 << 30));
    /* C division truncates toward zero, exactly as gemmlowp relies on. */
    return (int32_t)((ab + nudge) / ((int64_t)1 << 31));
}

/* gemmlowp RoundingDivideByPOT: x / 2^e rounded to nearest, ties away from zero, 0 <= e <= 31. */
static inline int32_t cqtf_rounding_divide_by_pot(int32_t x, int32_t e)
{
    const int32_t mask = (int32_t)(((int64_t)1 << e) - 1);
    const int32_t remainder = x & mask;
    const int32_t threshold = (mask >> 1) + ((x < 0) ? 1 : 0);

    return cqtf_asr32(x, e) + ((remainder > threshold) ? 1 : 0);
}

static inline int32_t cqtf_requantize(int32_t acc, int32_t multiplier, int32_t shift)
{
    const int32_t left_shift = (shift > 0) ? shift : 0;
    const int32_t right_shift = (shift > 0) ? 0 : -shift;
    int64_t x = (int64_t)acc * ((int64_t)1 << left_shift); /* |acc| * 2^30 < 2^62: fits */

    if (x > INT32_MAX) {
        x = INT32_MAX;
    } else if (x < INT32_MIN) {
        x = INT32_MIN;
    }
    return cqtf_rounding_divide_by_pot(
        cqtf_sat_rounding_doubling_high_mul((int32_t)x, multiplier), right_shift);
}

/* Non-inline copy for host tests (ctypes); defined in cqtf_requant.c. */
int32_t cqtf_requantize_fn(int32_t acc, int32_t multiplier, int32_t shift);

#endif /* CQTF_REQUANT_H */
