/*
 * step_outputs.c - the output step of one layer's training forward, host only (cqtf.train.native_step).
 *
 * The device-exact forward pass ends each conv/linear layer with an elementwise step: requantize
 * the accumulator, clamp, dequantize for the float shadow; training also needs where outputs
 * saturated (the gradient masks) and each channel's accumulator range (the observer). numpy does
 * that in about fifteen whole-array passes; this does it in one, with the firmware's own
 * requantizers (kernels/cqtf_requant.h, kernels/cqtf_fixed.h), so the training forward computes
 * exactly what the device will. The numpy path (cqtf.fixedpoint) stays as the fallback and the
 * oracle of tests/test_native_step.py.
 *
 * Layout: acc is (n, channels, inner), row-major (NCHW, NCL or NC with inner 1). Outputs, in
 * that layout: q (int64), exact (float32) and the gradient masks (bytes 0/1: numpy bools: inside,
 * the gradient passes; high and low, saturated; negative, below a ReLU's zero), and
 * stats[] = {pre_min, pre_max, acc_min, acc_max} over the whole array (pre: the requantized value
 * before the clamp, offset included) and range[] = {min, max} over channels c of
 * (double)extreme_c * channel_scale[c], the observer's range of the float pre-activation.
 */
#include <stdint.h>

#include "cqtf_fixed.h"
#include "cqtf_requant.h"

static void minmax(int64_t v, int64_t *lo, int64_t *hi)
{
    if (v < *lo) {
        *lo = v;
    }
    if (v > *hi) {
        *hi = v;
    }
}

static void channel_init(int64_t *ch_min, int64_t *ch_max, int32_t channels)
{
    int32_t c;

    for (c = 0; c < channels; ++c) {
        ch_min[c] = INT64_MAX;
        ch_max[c] = INT64_MIN;
    }
}

/* The float range of the channels' extremes times their scales (as numpy: int64 -> double, then *). */
static void scaled_range(const int64_t *ch_min, const int64_t *ch_max, const double *scale, int32_t channels,
                         double *range)
{
    int32_t c;

    range[0] = (double)ch_min[0] * scale[0];
    range[1] = (double)ch_max[0] * scale[0];
    for (c = 1; c < channels; ++c) {
        const double lo = (double)ch_min[c] * scale[c];
        const double hi = (double)ch_max[c] * scale[c];
        range[0] = lo < range[0] ? lo : range[0];
        range[1] = hi > range[1] ? hi : range[1];
    }
}

/*
 * int8 affine: acc holds the exact int32 accumulators (bias included) as float32 integers, the
 * convolution's own output. pre = requantize(acc) + zero_point (TFLM double rounding, or single
 * rounding by `rounding` when single != 0); q = clamp(pre); exact = (q - zero_point) * scale.
 * inside: act_min <= pre <= act_max (below a ReLU's zero is outside too: its gradient is zero).
 */
void cqtf_step_outputs_s8(const float *acc, int32_t n, int32_t channels, int32_t inner,
                          const int32_t *multiplier, const int32_t *shift, int32_t single, uint8_t rounding,
                          int32_t zero_point, int32_t act_min, int32_t act_max, float scale,
                          const double *channel_scale, int64_t *q, float *exact, uint8_t *inside,
                          uint8_t *high, uint8_t *low, int64_t *stats, double *range)
{
    int64_t ch_min[channels > 0 ? channels : 1], ch_max[channels > 0 ? channels : 1];
    int32_t b, c, i;
    int64_t k = 0;

    stats[0] = stats[2] = INT64_MAX;
    stats[1] = stats[3] = INT64_MIN;
    channel_init(ch_min, ch_max, channels);
    for (b = 0; b < n; ++b) {
        for (c = 0; c < channels; ++c) {
            const int32_t m = multiplier[c];
            const int32_t s = shift[c];
            for (i = 0; i < inner; ++i, ++k) {
                const int32_t a = (int32_t)acc[k];
                const int64_t r = single ? cqtf_round_shift((int64_t)a * m, 31 - s, rounding)
                                         : (int64_t)cqtf_requantize(a, m, s);
                const int64_t pre = r + zero_point;
                const int64_t out = pre < act_min ? act_min : (pre > act_max ? act_max : pre);
                q[k] = out;
                exact[k] = (float)(out - zero_point) * scale;
                high[k] = (uint8_t)(pre > act_max);
                low[k] = (uint8_t)(pre < act_min);
                inside[k] = (uint8_t)(pre == out);
                minmax(pre, &stats[0], &stats[1]);
                minmax(a, &ch_min[c], &ch_max[c]);
            }
        }
    }
    for (c = 0; c < channels; ++c) {
        minmax(ch_min[c], &stats[2], &stats[3]);
        minmax(ch_max[c], &stats[2], &stats[3]);
    }
    scaled_range(ch_min, ch_max, channel_scale, channels, range);
}

/*
 * Fixed point: biased = acc + bias[c] (observed), saturated to acc_bits; pre = round_shift(that,
 * shift, rounding); q = clamp(pre); exact = q * scale. high: pre > act_max or the accumulator at its
 * max; low: pre < act_min or at its min; negative: pre < 0. inside: none of high and (relu: negative,
 * else low).
 */
void cqtf_step_outputs_fx(const int64_t *acc, int32_t n, int32_t channels, int32_t inner, const int64_t *bias,
                          uint32_t acc_bits, int32_t shift, uint8_t rounding, int32_t act_min, int32_t act_max,
                          float scale, int32_t relu, const double *channel_scale, int64_t *q, float *exact,
                          uint8_t *inside, uint8_t *high, uint8_t *low, uint8_t *negative, int64_t *stats,
                          double *range)
{
    const int64_t acc_hi = ((int64_t)1 << (acc_bits - 1u)) - 1;
    const int64_t acc_lo = -((int64_t)1 << (acc_bits - 1u));
    int64_t ch_min[channels > 0 ? channels : 1], ch_max[channels > 0 ? channels : 1];
    int32_t b, c, i;
    int64_t k = 0;

    stats[0] = stats[2] = INT64_MAX;
    stats[1] = stats[3] = INT64_MIN;
    channel_init(ch_min, ch_max, channels);
    for (b = 0; b < n; ++b) {
        for (c = 0; c < channels; ++c) {
            for (i = 0; i < inner; ++i, ++k) {
                const int64_t biased = acc[k] + bias[c];
                const int64_t sat = cqtf_saturate(biased, acc_bits);
                const int64_t pre = cqtf_round_shift(sat, shift, rounding);
                const int64_t out = pre < act_min ? act_min : (pre > act_max ? act_max : pre);
                const uint8_t is_high = (uint8_t)(pre > act_max || sat == acc_hi);
                const uint8_t is_low = (uint8_t)(pre < act_min || sat == acc_lo);
                const uint8_t is_negative = (uint8_t)(pre < 0);
                q[k] = out;
                exact[k] = (float)out * scale;
                high[k] = is_high;
                low[k] = is_low;
                negative[k] = is_negative;
                inside[k] = (uint8_t)!(is_high || (relu ? is_negative : is_low));
                minmax(pre, &stats[0], &stats[1]);
                minmax(sat, &stats[2], &stats[3]);
                minmax(biased, &ch_min[c], &ch_max[c]);
            }
        }
    }
    scaled_range(ch_min, ch_max, channel_scale, channels, range);
}
