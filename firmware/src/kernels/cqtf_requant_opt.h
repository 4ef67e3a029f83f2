/*
 * cqtf_requant_opt.h - a faster cqtf_requantize() for the optimized kernels, same results.
 *
 * gemmlowp's SaturatingRoundingDoublingHighMul nudges by 2^30 or 1 - 2^30 and divides by 2^31
 * truncating toward zero. For every 64-bit product p that is exactly floor((p + 2^30) / 2^31):
 * for p >= 0 both round half up; for p < 0, truncating (p + 1 - 2^30) / 2^31 toward zero equals
 * flooring (p + 1 - 2^30 + 2^31 - 1) / 2^31. So one add and one arithmetic shift replace the sign
 * test and the division (its INT32_MIN * INT32_MIN case cannot occur: the multiplier is >= 0).
 * This relies on >> of a negative int64 (and, in cqtf_requant_channel_apply, int32) being
 * arithmetic, as gcc and clang define it (C99 leaves
 * it to the implementation; cqtf_requant.h, the reference, avoids it). RoundingDivideByPOT is
 * unchanged. tests/test_kernels_optimized.py compares it with the reference on edge and random
 * values.
 */
#ifndef CQTF_REQUANT_OPT_H
#define CQTF_REQUANT_OPT_H

#include <stdint.h>

#include "cqtf_fixed.h"
#include "cqtf_kernels.h"
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

/* One output channel's constants for cqtf_requant_channel_apply, hoisted out of the pixel loop.
 * Only for shift <= 0 (scales below 1, the usual case): there is no left shift to saturate. */
typedef struct {
    int32_t multiplier;
    int32_t right;     /* -shift, 0..31 */
    int32_t mask;      /* 2^right - 1: the bits RoundingDivideByPOT drops */
    int32_t threshold; /* mask >> 1: a larger remainder (larger than it + 1 when negative) rounds away */
} cqtf_requant_channel_t;

static inline cqtf_requant_channel_t cqtf_requant_channel(int32_t multiplier, int32_t shift)
{
    cqtf_requant_channel_t ch;

    ch.multiplier = multiplier;
    ch.right = -shift;
    ch.mask = (int32_t)(((uint32_t)1 << ch.right) - 1u);
    ch.threshold = ch.mask >> 1;
    return ch;
}

/* cqtf_requantize_opt for a channel of cqtf_requant_channel(): the same two roundings, no branch. */
static inline int32_t cqtf_requant_channel_apply(const cqtf_requant_channel_t *ch, int32_t acc)
{
    const int32_t high = (int32_t)(((int64_t)acc * ch->multiplier + ((int64_t)1 << 30)) >> 31);
    const int32_t threshold = ch->threshold + (int32_t)((uint32_t)high >> 31);

    return (high >> ch->right) + (((high & ch->mask) > threshold) ? 1 : 0);
}

/* 1 when every output channel of the layer may take cqtf_requant_channel_apply: TFLM double
 * rounding and no shift above 0. */
static inline int cqtf_requant_channels_ok(const cqtf_quant_t *q, uint32_t channels)
{
    uint32_t c;

    if (cqtf_single_rounding(q)) {
        return 0;
    }
    for (c = 0; c < channels; ++c) {
        if (q->shift[c] > 0) {
            return 0;
        }
    }
    return 1;
}

/* An optimized int8 kernel's last step: a requantized value plus the output offset, clamped. */
static inline int8_t cqtf_offset_clamp(const cqtf_quant_t *q, int32_t requantized)
{
    return (int8_t)cqtf_clamp(requantized + q->output_offset, q->act_min, q->act_max);
}

/* Output channel c's int8 value of accumulator acc, in the layer's rounding (single or TFLM double). */
static inline int8_t cqtf_requant_clamp_opt(const cqtf_quant_t *q, uint32_t c, int32_t acc)
{
    if (cqtf_single_rounding(q)) {
        return cqtf_requant_single_clamp(q, c, acc);
    }
    return cqtf_offset_clamp(q, cqtf_requantize_opt(acc, q->multiplier[c], q->shift[c]));
}

/* Non-inline copies for host tests (ctypes); defined in cqtf_requant.c. The channel one takes the
 * channel path where the shift allows it and cqtf_requantize_opt elsewhere, as the kernels do. */
int32_t cqtf_requantize_opt_fn(int32_t acc, int32_t multiplier, int32_t shift);
int32_t cqtf_requantize_channel_fn(int32_t acc, int32_t multiplier, int32_t shift);

#endif /* CQTF_REQUANT_OPT_H */
