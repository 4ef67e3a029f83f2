/*
 * cqtf_requant_opt.h - a faster cqtf_requantize() for the optimized kernels, same results.
 *
 * gemmlowp's SaturatingRoundingDoublingHighMul nudges by 2^30 or 1 - 2^30 and divides by 2^31
 * truncating toward zero. For every 64-bit product p that is exactly floor((p + 2^30) / 2^31):
 * for p >= 0 both round half up; for p < 0, truncating (p + 1 - 2^30) / 2^31 toward zero equals
 * flooring (p + 1 - 2^30 + 2^31 - 1) / 2^31. So one add and one arithmetic shift replace the sign
 * test and the division (its INT32_MIN * INT32_MIN case cannot occur: the multiplier is >= 0).
 * This relies on >> of a negative int64 being arithmetic, as gcc and clang define it (C99 leaves
 * it to the implementation; cqtf_requant.h, the reference, avoids it). RoundingDivideByPOT is
 * unchanged. tests/test_kernels_optimized.py compares it with the reference on edge and random
 * values.
 */
#ifndef CQTF_REQUANT_OPT_H
#define CQTF_REQUANT_OPT_H

#include <stdint.h>

#include "cqtf_requant.h"

static inline int32_t cqtf_requantize_opt(int32_t acc, int32_t multiplier, int32_t shift)
{
    int32_t x = acc;
    int32_t high;

    if (shift > 0) { /* rare (scales above 1): saturating left shift as the reference */
        int64_t wide = (int64_t)acc * ((int64_t)1 << shift);
        x = (wide > INT32_MAX) ? INT32_MAX : ((wide < INT32_MIN) ? INT32_MIN : (int32_t)wide);
        shift = 0;
    }
    high = (int32_t)(((int64_t)x * multiplier + ((int64_t)1 << 30)) >> 31);
    return cqtf_rounding_divide_by_pot(high, -shift);
}

/* Non-inline copy for host tests (ctypes); defined in cqtf_requant.c. */
int32_t cqtf_requantize_opt_fn(int32_t acc, int32_t multiplier, int32_t shift);

#endif /* CQTF_REQUANT_OPT_H */
