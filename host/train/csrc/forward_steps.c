/*
 * forward_steps.c - the training forward's integer steps around the convolution (host only):
 * cqtf_int8_params (an int8 layer's integers from its float weights and bias), cqtf_int8_post
 * (requantize, clamp, gradient masks and observer extremes of the accumulator, in one pass), and
 * for the fixed-point profiles cqtf_fixed_params (weights and bias) and cqtf_fixed_post (the same
 * pass from the dot product on), and their block-wise saturating accumulators:
 * cqtf_accumulator_columns (im2col from the codes), cqtf_block_accumulate (any block, shift,
 * rounding, width up to 31 bits) and cqtf_saturating_accumulate16 (fixed8-acc16 in AVX2).
 *
 * Their numpy twins, QuantLayer.integer_params, _requantize_numpy, _fixed_arrays, _fixed_post_numpy,
 * device_columns and _fixed_accumulator in host/train/layers.py, stay the reference;
 * tests/test_train_native.py checks that the two agree bit for bit. Float steps are the same IEEE
 * operations in the same order (float32 where numpy uses float32, double where it uses float64;
 * -std=c99 keeps gcc from contracting them into FMAs).
 * Single rounding's general case is the firmware's own cqtf_round_shift.
 *
 * Arguments are scalars and pointers (no structs to build on the Python side: a training step
 * calls these twice per layer, where every microsecond of call overhead counts).
 */
#include <math.h>
#include <stdint.h>

#include "cqtf_fixed.h"

/* Element loops vectorize only where every branch in them is on a constant: helpers taking such
 * constants must be inlined into each instance. */
#if defined(__GNUC__)
#define ALWAYS_INLINE static inline __attribute__((always_inline))
#else
#define ALWAYS_INLINE static inline
#endif

/* The SIMD loops are compiled twice where gcc and glibc can pick at load time (an ifunc): for AVX2
 * and for the baseline CPU. SIMD_CLONES_ANY_COUNT also lets a loop whose trip count is not a
 * constant vectorize (-O2's cost model refuses loops that need a scalar epilogue). Elsewhere the
 * same C, as the compiler makes it. */
#if defined(__GNUC__) && !defined(__clang__) && defined(__x86_64__) && defined(__GLIBC__)
#define SIMD_CLONES __attribute__((target_clones("avx2", "default")))
#define SIMD_CLONES_ANY_COUNT __attribute__((target_clones("avx2", "default"), optimize("vect-cost-model=dynamic")))
#else
#define SIMD_CLONES
#define SIMD_CLONES_ANY_COUNT
#endif

#define DOUBLE_ROUNDING (-1) /* `mode` of TFLM's double rounding; otherwise a cqtf_rounding_t */

/* One output channel, written by cqtf_int8_params and read by cqtf_int8_post, which also keeps its
 * requantization shifts and accumulator extremes here. All 8-byte fields: numpy reads the table
 * as an (O, CHANNEL_FIELDS) array (train/native_forward.py). */
typedef struct {
    double scale;         /* weight scale * input scale: the accumulator's unit in real numbers */
    double weight_scale;  /* the float32 weight scale */
    int64_t bias;         /* the bias in accumulator units, clipped to int32 */
    int64_t multiplier;   /* Q31 of input scale * weight scale / output scale, in [0, 2^31) */
    int64_t shift;        /* its power of two, positive = left */
    int64_t left, right;       /* cqtf_int8_post: the requantization's shifts */
    int64_t nudge, low_step;   /* double rounding adds nudge, less low_step where p < -2^30 */
    int64_t acc_min, acc_max;  /* cqtf_int8_post: the accumulator's extremes */
} cqtf_channel_t;

/* ---- The layer's integers (the numpy twin: QuantLayer.integer_params) ---- */

/* np.sign(x) * np.floor(np.abs(x) + 0.5) in float32 (np.sign(-0) is +0). */
static float round_half_away_f(float x)
{
    const float sign = (float)((x > 0.0f) - (x < 0.0f));
    return sign * floorf(fabsf(x) + 0.5f);
}

static double round_half_away_d(double x)
{
    const double sign = (double)((x > 0.0) - (x < 0.0));
    return sign * floor(fabs(x) + 0.5);
}

/* cqtf.fixedpoint.quantize_multiplier (TFLM's QuantizeMultiplier) of real >= 0. */
static void quantize_multiplier(double real, int64_t *multiplier, int64_t *shift)
{
    int exponent;
    double mantissa;
    int64_t q_fixed;

    *multiplier = 0;
    *shift = 0;
    if (real == 0.0) {
        return;
    }
    mantissa = frexp(real, &exponent);
    q_fixed = (int64_t)floor(mantissa * 2147483648.0 + 0.5);
    if (q_fixed == ((int64_t)1 << 31)) {
        q_fixed /= 2;
        exponent += 1;
    }
    if (exponent < -31) {
        return;
    }
    if (exponent > 30) {
        *multiplier = INT32_MAX;
        *shift = 30;
        return;
    }
    *multiplier = q_fixed;
    *shift = exponent;
}

/* weight: (out_channels, fan_in) float32; bias: float32 per channel. Writes the integer weights
 * (float32, exact), weight_fake = weight + (weights * scale - weight) (the straight-through
 * shadow's weights, as torch adds the detached offset to weight),
 * the bias as float32 (for the convolution), the channel table, and returns the largest |bias|. */
int64_t cqtf_int8_params(int64_t out_channels, int64_t fan_in, float in_scale, float out_scale,
                         const float *restrict weight, const float *restrict bias, float *restrict weights,
                         float *restrict weight_fake, float *restrict bias_float,
                         cqtf_channel_t *restrict channels)
{
    int64_t o, k, bias_bound = 0;

    for (o = 0; o < out_channels; o++) {
        const float *w = weight + o * fan_in;
        cqtf_channel_t *ch = &channels[o];
        float largest = 0.0f, scale;
        double b;
        int64_t magnitude;

        for (k = 0; k < fan_in; k++) {
            largest = fabsf(w[k]) > largest ? fabsf(w[k]) : largest;
        }
        scale = largest / 127.0f;
        scale = scale > 1e-12f ? scale : 1e-12f;
        for (k = 0; k < fan_in; k++) {
            const float q = round_half_away_f(w[k] / scale);
            const float offset = q * scale - w[k];

            weights[o * fan_in + k] = q;
            weight_fake[o * fan_in + k] = w[k] + offset;
        }
        ch->weight_scale = scale;
        ch->scale = (double)scale * (double)in_scale;
        b = round_half_away_d((double)bias[o] / ch->scale);
        b = b < (double)INT32_MIN ? (double)INT32_MIN : (b > (double)INT32_MAX ? (double)INT32_MAX : b);
        ch->bias = (int64_t)b;
        bias_float[o] = (float)ch->bias;
        magnitude = ch->bias < 0 ? -ch->bias : ch->bias;
        bias_bound = magnitude > bias_bound ? magnitude : bias_bound;
        quantize_multiplier((double)in_scale * (double)scale / (double)out_scale, &ch->multiplier, &ch->shift);
    }
    return bias_bound;
}

/* ---- After the accumulator (the numpy twin: QuantLayer._requantize_numpy) ---- */

enum { STAT_HIGH, STAT_LOW, STAT_VECTORIZED };

/* Running results over all elements (a local struct, so they stay in registers). */
typedef struct {
    int64_t n_high, n_low;
} totals_t;

/* TFLM's double rounding as one shift. Step 1, gemmlowp's truncating (p + nudge) / 2^31 of
 * p = x * M, is h = floor((p + 2^30) / 2^31) for either sign of p; step 2, the tie-away division by
 * 2^r (r > 0), is floor((h + 2^(r-1) - [h < 0]) / 2^r). As floor((floor(u) + k) / n) =
 * floor((u + k) / n) for integers k and n > 0, and h < 0 exactly when p < -2^30, the two are
 * (p + 2^30 + 2^(30+r) - [p < -2^30] 2^31) >> (31 + r): nudge = 2^30 + 2^(30+r), low_step = 2^31
 * (r = 0: nudge = 2^30, low_step = 0). |p| < 2^55 here, so the sum stays far inside int64. */
static void channel_start(cqtf_channel_t *ch, int32_t mode)
{
    if (mode == DOUBLE_ROUNDING) {
        const int64_t r = ch->shift > 0 ? 0 : -ch->shift;

        ch->left = ch->shift > 0 ? ch->shift : 0;
        ch->right = 31 + r;
        ch->nudge = ((int64_t)1 << 30) + (r > 0 ? (int64_t)1 << (30 + r) : 0);
        ch->low_step = r > 0 ? (int64_t)1 << 31 : 0;
    } else { /* round(acc * M / 2^(31 - shift)): one right shift by 31 - shift >= 1 */
        ch->left = 0;
        ch->right = 31 - ch->shift;
        ch->nudge = ch->low_step = 0; /* unused: round_shift_fast adds by the rounding mode */
    }
    ch->acc_min = INT64_MAX;
    ch->acc_max = INT64_MIN;
}

/* cqtf_requantize (TFLM double rounding) of |acc| < 2^24, as channel_start's one shift. */
static inline int64_t requantize_double(const cqtf_channel_t *ch, int64_t acc, int any_left)
{
    int64_t x = acc, p, low;

    if (any_left) { /* a constant in each instance of the element loop: no test per element */
        x = acc * ((int64_t)1 << ch->left);
        x = x > INT32_MAX ? INT32_MAX : x;
        x = x < INT32_MIN ? INT32_MIN : x;
    }
    p = x * ch->multiplier;
    low = -(int64_t)(p < -((int64_t)1 << 30)); /* all ones or zero: no branch on the data's sign */
    return cqtf_asr64(p + ch->nudge - (low & ch->low_step), (int32_t)ch->right);
}

/* cqtf_round_shift(x, e, mode): a left shift for e <= 0, the floor identities of
 * cqtf.fixedpoint.round_shift for the right shifts where they hold, the firmware's general case
 * otherwise (half to even). */
static inline int64_t round_shift_fast(int64_t x, int32_t e, int32_t mode)
{
    if (e <= 0) {
        return x * ((int64_t)1 << -e);
    }
    switch (mode) {
    case CQTF_ROUND_FLOOR:
        return cqtf_asr64(x, e);
    case CQTF_ROUND_CEIL:
        return -cqtf_asr64(-x, e);
    case CQTF_ROUND_HALF_UP:
        return cqtf_asr64(x + ((int64_t)1 << (e - 1)), e);
    case CQTF_ROUND_HALF_AWAY:
        return cqtf_asr64(x + ((int64_t)1 << (e - 1)) - (x < 0), e);
    default:
        return cqtf_round_shift(x, e, (uint8_t)mode);
    }
}

/* cqtf_round_shift(acc * M, 31 - shift, mode): int8 single rounding. */
static inline int64_t requantize_single(const cqtf_channel_t *ch, int64_t acc, int32_t mode)
{
    return round_shift_fast(acc * ch->multiplier, (int32_t)ch->right, mode);
}

typedef struct {
    int32_t mode, zero_point, act_min, act_max;
    float out_scale;
} post_t;

/* One element of channel ch. restrict: the uint8 masks may not alias the rest, which would make
 * the compiler reload every parameter after each mask store (3x slower). */
static inline void post_one(const post_t *restrict p, cqtf_channel_t *restrict ch, totals_t *restrict t,
                            float acc_value, int64_t *restrict q, float *restrict exact, uint8_t *restrict inside,
                            uint8_t *restrict high, uint8_t *restrict low, int any_left)
{
    const int64_t acc = (int64_t)acc_value;
    const int64_t r = (p->mode == DOUBLE_ROUNDING ? requantize_double(ch, acc, any_left)
                                                  : requantize_single(ch, acc, p->mode))
                      + p->zero_point;
    const int64_t clamped_low = r < p->act_min ? p->act_min : r;
    const int64_t v = clamped_low > p->act_max ? p->act_max : clamped_low;
    const uint8_t above = (uint8_t)(r > p->act_max), below = (uint8_t)(r < p->act_min);

    ch->acc_min = acc < ch->acc_min ? acc : ch->acc_min;
    ch->acc_max = acc > ch->acc_max ? acc : ch->acc_max;
    t->n_high += above;
    t->n_low += below;
    *high = above;
    *low = below;
    *inside = (uint8_t)!(above | below);
    *q = v;
    *exact = (float)(v - p->zero_point) * p->out_scale;
}

/* The element loop; any_left: whether a channel shifts left (a constant in each inlined instance). */
static inline void post_all(const post_t *restrict p, cqtf_channel_t *restrict channels, totals_t *restrict t,
                            int64_t outer, int64_t n_channels, int64_t inner, const float *restrict acc,
                            int64_t *restrict q, float *restrict exact, uint8_t *restrict inside,
                            uint8_t *restrict high, uint8_t *restrict low, int any_left)
{
    int64_t o, c, i, k = 0;

    for (o = 0; o < outer; o++) {
        for (c = 0; c < n_channels; c++) {
            if (inner == 1) { /* channels last: the common case, no inner loop */
                post_one(p, &channels[c], t, acc[k], q + k, exact + k, inside + k, high + k, low + k, any_left);
                k++;
                continue;
            }
            for (i = 0; i < inner; i++, k++) {
                post_one(p, &channels[c], t, acc[k], q + k, exact + k, inside + k, high + k, low + k, any_left);
            }
        }
    }
}

/* ---- The same pass in SIMD: channels last, no left shift ---- */

/* Every rounding but half to even is one right shift after adding a nudge, less low_step where p
 * is below `threshold`: double rounding (channel_start), single rounding floor (nudge 0), ceil
 * (2^e - 1), half up (2^(e-1)), half away (2^(e-1), less 1 below 0). The arithmetic shift by a
 * per-channel amount is a logical one of p + nudge + 2^62 (non-negative: |p| < 2^55, nudge <= 2^60),
 * less 2^62 >> e: AVX2 shifts 64-bit lanes by per-lane amounts only logically. */
#define VECTOR_SPAN 512 /* parameters of this many consecutive elements live on the stack */
#define VECTOR_MIN_SPAN 64 /* a pass covers whole positions and at least this many elements */
#define VECTOR_RIGHT_MAX 60
#define SHIFT_BIAS ((int64_t)1 << 62)

/* How many consecutive elements of channels-last storage the SIMD passes' parameters cover: whole
 * positions, at least VECTOR_MIN_SPAN elements where they fit (n_channels <= VECTOR_SPAN). */
static int64_t span_of(int64_t n_channels)
{
    const int64_t span = n_channels * (n_channels >= VECTOR_MIN_SPAN ? 1 : (VECTOR_MIN_SPAN + n_channels - 1) / n_channels);

    return span > VECTOR_SPAN ? n_channels : span;
}

/* The channels' parameters repeated over `span` consecutive elements of channels-last storage
 * (element j has channel j % n_channels): few channels (8, 16) would leave a vector loop over one
 * position's channels in its scalar remainder. */
typedef struct {
    int64_t span;
    int64_t nudge[VECTOR_SPAN], low_step[VECTOR_SPAN], offset[VECTOR_SPAN], multiplier[VECTOR_SPAN];
    uint64_t right[VECTOR_SPAN];
    int32_t acc_min[VECTOR_SPAN], acc_max[VECTOR_SPAN];
} vector_channels_t;

/* Fills v from the channel table for `mode`; 0 where the SIMD pass cannot take the layer: half to
 * even, a multiplier of 1 or more (a shift left, or a single rounding's shift below 31), or one
 * below 2^-29 (a shift past VECTOR_RIGHT_MAX), or more than VECTOR_SPAN channels. */
static int vector_start(const cqtf_channel_t *restrict channels, int64_t n_channels, int32_t mode,
                        vector_channels_t *restrict v, int64_t *restrict threshold)
{
    int64_t c, j;

    if (n_channels > VECTOR_SPAN || mode == CQTF_ROUND_HALF_EVEN) {
        return 0;
    }
    *threshold = mode == DOUBLE_ROUNDING ? -((int64_t)1 << 30) : 0;
    v->span = span_of(n_channels);
    for (c = 0; c < n_channels; c++) {
        const int64_t e = channels[c].right;

        if (channels[c].left > 0 || e < 31 || e > VECTOR_RIGHT_MAX) { /* e >= 31: |result| < 2^24, int32 */
            return 0;
        }
    }
    for (j = 0; j < v->span; j++) {
        const cqtf_channel_t *ch = &channels[j % n_channels];
        const int64_t e = ch->right;

        v->multiplier[j] = ch->multiplier;
        v->right[j] = (uint64_t)e;
        v->offset[j] = SHIFT_BIAS >> e;
        v->low_step[j] = mode == DOUBLE_ROUNDING ? ch->low_step : (mode == CQTF_ROUND_HALF_AWAY);
        v->nudge[j] = mode == DOUBLE_ROUNDING ? ch->nudge
                      : mode == CQTF_ROUND_FLOOR ? 0
                      : mode == CQTF_ROUND_CEIL ? ((int64_t)1 << e) - 1
                                                : (int64_t)1 << (e - 1); /* half up, half away */
        v->acc_min[j] = INT32_MAX;
        v->acc_max[j] = INT32_MIN;
    }
    return 1;
}

/* post_all for channels last (inner = 1), with the parameters in v, `span` elements at a time. */
SIMD_CLONES_ANY_COUNT
static void post_channels_last(const post_t *restrict p, vector_channels_t *restrict v, int64_t threshold,
                               totals_t *restrict t, int64_t outer, int64_t n_channels, const float *restrict acc,
                               int64_t *restrict q, float *restrict exact, uint8_t *restrict inside,
                               uint8_t *restrict high, uint8_t *restrict low)
{
    const int32_t zero_point = p->zero_point, act_min = p->act_min, act_max = p->act_max;
    const float out_scale = p->out_scale;
    const int64_t total = outer * n_channels;
    int64_t k0, j, n_high = 0, n_low = 0;

    for (k0 = 0; k0 < total; k0 += v->span) {
        const int64_t count = total - k0 < v->span ? total - k0 : v->span;

        for (j = 0; j < count; j++) {
            const int32_t x = (int32_t)acc[k0 + j];
            const int64_t prod = (int64_t)x * v->multiplier[j];
            const int64_t below_threshold = prod < threshold ? v->low_step[j] : 0;
            const int64_t shifted = (int64_t)((uint64_t)(prod + v->nudge[j] - below_threshold + SHIFT_BIAS) >> v->right[j]);
            const int32_t r = (int32_t)(shifted - v->offset[j]) + zero_point;
            const int32_t value = r < act_min ? act_min : (r > act_max ? act_max : r);
            const uint8_t above = (uint8_t)(r > act_max), under = (uint8_t)(r < act_min);

            v->acc_min[j] = x < v->acc_min[j] ? x : v->acc_min[j];
            v->acc_max[j] = x > v->acc_max[j] ? x : v->acc_max[j];
            n_high += above;
            n_low += under;
            high[k0 + j] = above;
            low[k0 + j] = under;
            inside[k0 + j] = (uint8_t)!(above | under);
            q[k0 + j] = value;
            exact[k0 + j] = (float)(value - zero_point) * out_scale;
        }
    }
    t->n_high += n_high;
    t->n_low += n_low;
}

/* acc: exact integers below 2^24 in float32 (the caller's bound), a dense tensor whose elements of
 * one channel lie in runs of `inner` consecutive elements: storage [outer][channels][inner] (NCHW:
 * inner = H*W; channels last or a linear layer: inner = 1). Writes, in the same storage order, q
 * (int64, clamped, zero point included), exact ((q - zero point) * out_scale) and the masks inside
 * / high / low (0 or 1); stats: how many requantized values were above and below the clamp, and
 * whether the SIMD pass ran (post_channels_last);
 * acc_range: the least acc_min[c] * scale[c] and the largest acc_max[c] * scale[c] (the observer's
 * range in real units). */
void cqtf_int8_post(int64_t outer, int64_t n_channels, int64_t inner, int32_t mode, int32_t zero_point,
                    int32_t act_min, int32_t act_max, float out_scale, cqtf_channel_t *restrict channels,
                    const float *restrict acc, int64_t *restrict q, float *restrict exact, uint8_t *restrict inside,
                    uint8_t *restrict high, uint8_t *restrict low, int64_t *restrict stats, double *restrict acc_range)
{
    const post_t p = {mode, zero_point, act_min, act_max, out_scale};
    totals_t t = {0, 0};
    vector_channels_t vector;
    int64_t c, threshold;
    int any_left = 0;

    for (c = 0; c < n_channels; c++) {
        channel_start(&channels[c], mode);
        any_left |= channels[c].left > 0;
    }
    stats[STAT_VECTORIZED] = inner == 1 && vector_start(channels, n_channels, mode, &vector, &threshold);
    if (stats[STAT_VECTORIZED]) {
        post_channels_last(&p, &vector, threshold, &t, outer, n_channels, acc, q, exact, inside, high, low);
        const int64_t seen = outer * n_channels < vector.span ? outer * n_channels : vector.span;

        for (c = 0; c < seen; c++) { /* every channel's extremes over its copies that saw elements */
            cqtf_channel_t *ch = &channels[c % n_channels];

            ch->acc_min = vector.acc_min[c] < ch->acc_min ? vector.acc_min[c] : ch->acc_min;
            ch->acc_max = vector.acc_max[c] > ch->acc_max ? vector.acc_max[c] : ch->acc_max;
        }
    } else if (any_left) {
        post_all(&p, channels, &t, outer, n_channels, inner, acc, q, exact, inside, high, low, 1);
    } else {
        post_all(&p, channels, &t, outer, n_channels, inner, acc, q, exact, inside, high, low, 0);
    }
    stats[STAT_HIGH] = t.n_high;
    stats[STAT_LOW] = t.n_low;
    acc_range[0] = INFINITY;
    acc_range[1] = -INFINITY;
    for (c = 0; c < n_channels; c++) {
        const double low_c = (double)channels[c].acc_min * channels[c].scale;
        const double high_c = (double)channels[c].acc_max * channels[c].scale;

        acc_range[0] = low_c < acc_range[0] ? low_c : acc_range[0];
        acc_range[1] = high_c > acc_range[1] ? high_c : acc_range[1];
    }
}

/* ---- Fixed-point profiles after the dot product (the numpy twin: QuantLayer._fixed_post_numpy) ---- */

enum { FX_ANY_HIGH, FX_ANY_LOW, FX_ANY_NEGATIVE, FX_HIGH, FX_HIGH_OR_LOW, FX_VECTORIZED };

/* cqtf_round_shift(x, e, mode) for |x| < 2^60, -31 <= e <= 60, branch-free: a right shift is the
 * floor of x plus a nudge over 2^e, a logical shift of that plus 2^62 (non-negative) less 2^62 >> e
 * (AVX2 has no arithmetic shift of 64-bit lanes); half to even nudges by 2^(e-1) - 1 plus the
 * floor quotient's lowest bit. `mode` and the sign of e are constants in each inlined instance. */
ALWAYS_INLINE int64_t shift_floor64(int64_t x, int32_t e)
{
    return (int64_t)((uint64_t)(x + SHIFT_BIAS) >> e) - (SHIFT_BIAS >> e);
}

ALWAYS_INLINE int64_t round_shift64(int64_t x, int32_t e, int32_t mode, int left)
{
    const int64_t half = (int64_t)1 << (e > 0 ? e - 1 : 0);

    if (left) {
        return x * ((int64_t)1 << (e < 0 ? -e : 0));
    }
    switch (mode) {
    case CQTF_ROUND_FLOOR:
        return shift_floor64(x, e);
    case CQTF_ROUND_CEIL:
        return shift_floor64(x + 2 * half - 1, e);
    case CQTF_ROUND_HALF_AWAY:
        return shift_floor64(x + half - (x < 0), e);
    case CQTF_ROUND_HALF_EVEN:
        return shift_floor64(x + half - 1 + (shift_floor64(x, e) & 1), e);
    default: /* CQTF_ROUND_HALF_UP */
        return shift_floor64(x + half, e);
    }
}

/* What every element of the fixed-point post step reads (see cqtf_fixed_post). */
typedef struct {
    int64_t acc_min, acc_max;
    int32_t fits, out_shift, mode, relu, act_min, act_max;
    float out_scale;
} fixed_post_t;

/* Running counts over all elements (locals, so they stay in registers). */
typedef struct {
    int64_t n_high, n_low, n_negative, n_high_or_low;
} fixed_totals_t;

/* One element k of the fixed-point post step from its dot product `sum` and its channel's bias;
 * returns sum + bias (for the observer's range). The output's rounding shift is round_shift64 in
 * the SIMD pass (`simd`; `mode` and `left` constants there) and the general round_shift_fast in the
 * scalar loop. */
ALWAYS_INLINE int64_t fixed_post_one(const fixed_post_t *restrict p, fixed_totals_t *restrict t, int64_t sum,
                                     int64_t bias, int simd, int32_t mode, int left, int64_t k, int64_t *restrict q,
                                     float *restrict exact, uint8_t *restrict inside, uint8_t *restrict high,
                                     uint8_t *restrict low, uint8_t *restrict negative)
{
    const int64_t biased = sum + bias;
    const int64_t saturated = biased < p->acc_min ? p->acc_min : (biased > p->acc_max ? p->acc_max : biased);
    const int64_t acc = p->fits ? biased : saturated;
    const int64_t pre = simd ? round_shift64(acc, p->out_shift, mode, left) : round_shift_fast(acc, p->out_shift, mode);
    const int64_t clamped = pre < p->act_min ? p->act_min : (pre > p->act_max ? p->act_max : pre);
    const uint8_t above = (uint8_t)((pre > p->act_max) | (acc == p->acc_max));
    const uint8_t below = (uint8_t)((pre < p->act_min) | (acc == p->acc_min));
    const uint8_t dead = (uint8_t)(pre < 0);

    t->n_high += above;
    t->n_low += below;
    t->n_negative += dead;
    t->n_high_or_low += above | below;
    high[k] = above;
    low[k] = below;
    negative[k] = dead;
    inside[k] = (uint8_t)!(above | (p->relu ? dead : below));
    q[k] = clamped;
    exact[k] = (float)(int32_t)clamped * p->out_scale;
    return biased;
}

ALWAYS_INLINE void fixed_post_stats(const fixed_totals_t *t, int64_t *restrict stats)
{
    stats[FX_ANY_HIGH] = t->n_high > 0;
    stats[FX_ANY_LOW] = t->n_low > 0;
    stats[FX_ANY_NEGATIVE] = t->n_negative > 0;
    stats[FX_HIGH] = t->n_high;
    stats[FX_HIGH_OR_LOW] = t->n_high_or_low;
}

/* The scalar loop of cqtf_fixed_post, any layout: dot is float32 (exact integers) or, with
 * int64_acc, int64 (an accumulator already summed block by block); a constant in each inlined
 * instance. */
static inline void fixed_post_all(const fixed_post_t *restrict p, int64_t outer, int64_t n_channels, int64_t inner,
                                  const void *restrict dot, int int64_acc, const int64_t *restrict bias,
                                  int64_t *restrict q, float *restrict exact, uint8_t *restrict inside,
                                  uint8_t *restrict high, uint8_t *restrict low, uint8_t *restrict negative,
                                  int64_t *restrict stats, int64_t *restrict biased_range)
{
    fixed_totals_t t = {0, 0, 0, 0};
    int64_t o, c, i, k = 0, lowest = INT64_MAX, highest = INT64_MIN;

    for (o = 0; o < outer; o++) {
        for (c = 0; c < n_channels; c++) {
            for (i = 0; i < inner; i++, k++) {
                const int64_t sum = int64_acc ? ((const int64_t *)dot)[k] : (int64_t)((const float *)dot)[k];
                const int64_t biased = fixed_post_one(p, &t, sum, bias[c], 0, p->mode, 0, k, q, exact, inside, high,
                                                      low, negative);

                lowest = biased < lowest ? biased : lowest;
                highest = biased > highest ? biased : highest;
            }
        }
    }
    fixed_post_stats(&t, stats);
    biased_range[0] = lowest;
    biased_range[1] = highest;
}

/* ---- The same pass in SIMD: channels last ---- */

/* Per element slot of a span (as vector_channels_t): the bias, and the extremes seen. */
typedef struct {
    int64_t span;
    int64_t bias[VECTOR_SPAN], lowest[VECTOR_SPAN], highest[VECTOR_SPAN];
} fixed_span_t;

/* fixed_post_all for channels last: `span` elements at a time; int64_acc, mode and left constants. */
ALWAYS_INLINE void fixed_post_span(const fixed_post_t *restrict p, int64_t total, const void *restrict dot,
                                   int int64_acc, fixed_span_t *restrict v, int32_t mode, int left,
                                   int64_t *restrict q, float *restrict exact, uint8_t *restrict inside,
                                   uint8_t *restrict high, uint8_t *restrict low, uint8_t *restrict negative,
                                   int64_t *restrict stats)
{
    fixed_totals_t t = {0, 0, 0, 0};
    int64_t k0, j;

    for (k0 = 0; k0 < total; k0 += v->span) {
        const int64_t count = total - k0 < v->span ? total - k0 : v->span;

        for (j = 0; j < count; j++) {
            const int64_t sum = int64_acc ? ((const int64_t *)dot)[k0 + j]
                                          : (int64_t)(int32_t)((const float *)dot)[k0 + j];
            const int64_t biased = fixed_post_one(p, &t, sum, v->bias[j], 1, mode, left, k0 + j, q, exact, inside,
                                                  high, low, negative);

            v->lowest[j] = biased < v->lowest[j] ? biased : v->lowest[j];
            v->highest[j] = biased > v->highest[j] ? biased : v->highest[j];
        }
    }
    fixed_post_stats(&t, stats);
}

#define FIXED_INSTANCE(int64_acc, mode, left) \
    fixed_post_span(p, total, dot, int64_acc, v, mode, left, q, exact, inside, high, low, negative, stats)

/* The instances of fixed_post_span, one per accumulator type, rounding mode and shift direction. */
SIMD_CLONES_ANY_COUNT
static void fixed_post_channels_last(const fixed_post_t *restrict p, int64_t total, const void *restrict dot,
                                     int int64_acc, fixed_span_t *restrict v, int64_t *restrict q,
                                     float *restrict exact, uint8_t *restrict inside, uint8_t *restrict high,
                                     uint8_t *restrict low, uint8_t *restrict negative, int64_t *restrict stats)
{
    if (p->out_shift <= 0) {
        if (int64_acc) {
            FIXED_INSTANCE(1, CQTF_ROUND_HALF_UP, 1);
        } else {
            FIXED_INSTANCE(0, CQTF_ROUND_HALF_UP, 1);
        }
        return;
    }
#define BY_MODE(int64_acc)                                          \
    switch (p->mode) {                                              \
    case CQTF_ROUND_FLOOR:                                          \
        FIXED_INSTANCE(int64_acc, CQTF_ROUND_FLOOR, 0);             \
        break;                                                      \
    case CQTF_ROUND_CEIL:                                           \
        FIXED_INSTANCE(int64_acc, CQTF_ROUND_CEIL, 0);              \
        break;                                                      \
    case CQTF_ROUND_HALF_AWAY:                                      \
        FIXED_INSTANCE(int64_acc, CQTF_ROUND_HALF_AWAY, 0);         \
        break;                                                      \
    case CQTF_ROUND_HALF_EVEN:                                      \
        FIXED_INSTANCE(int64_acc, CQTF_ROUND_HALF_EVEN, 0);         \
        break;                                                      \
    default:                                                        \
        FIXED_INSTANCE(int64_acc, CQTF_ROUND_HALF_UP, 0);           \
    }
    if (int64_acc) {
        BY_MODE(1)
    } else {
        BY_MODE(0)
    }
#undef BY_MODE
}
#undef FIXED_INSTANCE

/* dot: the dot products without the bias, laid out as in cqtf_int8_post: exact integers below 2^24
 * in float32, or (int64_acc) the int64 accumulator a block-wise sum left; bias: per channel, in
 * accumulator units. Each element: acc = dot + bias (saturated to [acc_min, acc_max] unless `fits`:
 * the caller's bound says it cannot leave), pre = acc rounded by `mode` to the output format (e =
 * out_shift: a right shift by e > 0, a left one by -e), q = pre clamped to [act_min, act_max], exact
 * = q * out_scale. Masks: high (pre above act_max or the accumulator at its top), low (pre below
 * act_min or the accumulator at its bottom), negative (pre below zero: a ReLU's dead zone), inside =
 * none of high, `relu` ? negative : low. stats: FX_ANY_HIGH / FX_ANY_LOW / FX_ANY_NEGATIVE (0 or 1),
 * FX_HIGH and FX_HIGH_OR_LOW (counts), FX_VECTORIZED (whether the SIMD pass ran: channels last).
 * acc_range: the least and largest dot + bias (before saturation) times acc_scale. */
void cqtf_fixed_post(int64_t outer, int64_t n_channels, int64_t inner, const void *restrict dot, int32_t int64_acc,
                     const int64_t *restrict bias, int32_t fits, int64_t acc_min, int64_t acc_max, int32_t out_shift,
                     int32_t mode, int32_t relu, int32_t act_min, int32_t act_max, float out_scale, double acc_scale,
                     int64_t *restrict q, float *restrict exact, uint8_t *restrict inside, uint8_t *restrict high,
                     uint8_t *restrict low, uint8_t *restrict negative, int64_t *restrict stats,
                     double *restrict acc_range)
{
    const fixed_post_t p = {acc_min, acc_max, fits, out_shift, mode, relu, act_min, act_max, out_scale};
    int64_t biased_range[2];
    fixed_span_t span;

    stats[FX_VECTORIZED] = inner == 1 && n_channels <= VECTOR_SPAN && out_shift >= -31
                           && out_shift <= VECTOR_RIGHT_MAX && acc_min > -((int64_t)1 << 40)
                           && acc_max < ((int64_t)1 << 40); /* |acc| < 2^60 in round_shift64 */
    if (stats[FX_VECTORIZED]) {
        int64_t j;

        span.span = span_of(n_channels);
        for (j = 0; j < span.span; j++) {
            span.bias[j] = bias[j % n_channels];
            span.lowest[j] = INT64_MAX;
            span.highest[j] = INT64_MIN;
        }
        fixed_post_channels_last(&p, outer * n_channels, dot, int64_acc, &span, q, exact, inside, high, low, negative,
                                 stats);
        biased_range[0] = INT64_MAX;
        biased_range[1] = INT64_MIN;
        for (j = 0; j < span.span; j++) {
            biased_range[0] = span.lowest[j] < biased_range[0] ? span.lowest[j] : biased_range[0];
            biased_range[1] = span.highest[j] > biased_range[1] ? span.highest[j] : biased_range[1];
        }
    } else if (int64_acc) {
        fixed_post_all(&p, outer, n_channels, inner, dot, 1, bias, q, exact, inside, high, low, negative, stats,
                       biased_range);
    } else {
        fixed_post_all(&p, outer, n_channels, inner, dot, 0, bias, q, exact, inside, high, low, negative, stats,
                       biased_range);
    }
    acc_range[0] = (double)biased_range[0] * acc_scale;
    acc_range[1] = (double)biased_range[1] * acc_scale;
}

/* ---- A fixed-point layer's integers (the numpy twin: QuantLayer.fixed_params' arrays) ---- */

/* cqtf.pow2.quantize of one value (float64 in weight units): the nearest of 0, +-1, +-2, ...,
 * +-2^max_exp, ties upward, by the same comparisons: level = how many of the thresholds
 * 1.5 * 2^k (k < max_exp) |v| reaches, and 2^level where |v| >= 1/2 (pow(2, level) is exact, as is
 * ldexp). */
static double pow2_quantize(double v, int32_t max_exp)
{
    const double a = fabs(v);
    int32_t k, level = 0;

    for (k = 0; k < max_exp; k++) {
        level += a >= 1.5 * ldexp(1.0, k);
    }
    return (double)((v > 0.0) - (v < 0.0)) * (a >= 0.5 ? ldexp(1.0, level) : 0.0);
}

/* weight (n_weights float32) in units of 2^-w_frac (w_scale = 2^w_frac): fixed point (pot_max_exp
 * < 0) rounds half away and clips to +-qmax; power of two (cqtf.pow2.blend) quantizes, blended by
 * alpha < 1 early in training. bias (n_bias float32) in accumulator units (acc_scale = 2^acc_frac),
 * rounded half away and clipped to [acc_min, acc_max]. Writes weights (float32 integers) and
 * bias_int; bounds[0] = the largest |weight|, bounds[1] = the largest |bias|. */
void cqtf_fixed_params(int64_t n_weights, const float *restrict weight, double w_scale, int32_t pot_max_exp,
                       double alpha, int64_t qmax, int64_t n_bias, const float *restrict bias, double acc_scale,
                       int64_t acc_min, int64_t acc_max, float *restrict weights, int64_t *restrict bias_int,
                       int64_t *restrict bounds)
{
    int64_t k;
    double largest = 0.0;

    for (k = 0; k < n_weights; k++) {
        const double v = (double)weight[k] * w_scale;
        double q;

        if (pot_max_exp < 0) {
            q = round_half_away_d(v);
            q = q < (double)-qmax ? (double)-qmax : (q > (double)qmax ? (double)qmax : q);
        } else {
            q = pow2_quantize(v, pot_max_exp);
            if (alpha < 1.0) {
                q = round_half_away_d(v - alpha * (v - q));
                q = q < -127.0 ? -127.0 : (q > 127.0 ? 127.0 : q);
            }
        }
        weights[k] = (float)q;
        largest = fabs(q) > largest ? fabs(q) : largest;
    }
    bounds[0] = (int64_t)largest;
    bounds[1] = 0;
    for (k = 0; k < n_bias; k++) {
        double b = round_half_away_d((double)bias[k] * acc_scale);
        int64_t magnitude;

        b = b < (double)acc_min ? (double)acc_min : (b > (double)acc_max ? (double)acc_max : b);
        bias_int[k] = (int64_t)b;
        magnitude = bias_int[k] < 0 ? -bias_int[k] : bias_int[k];
        bounds[1] = magnitude > bounds[1] ? magnitude : bounds[1];
    }
}

/* ---- Block-wise accumulators (the numpy twin: QuantLayer._fixed_accumulator) ---- */

/* Outputs are computed in tiles of ACC_TILE (the caller pads the columns to a multiple): loops of
 * a constant trip count over int32 arrays, which gcc vectorizes at -O2. */
#define ACC_TILE 64


/* floor(x / 2^e), 0 <= e <= 31, well defined in C99 (gcc: one arithmetic shift). */
ALWAYS_INLINE int32_t asr32(int32_t x, int32_t e)
{
    return x >= 0 ? (int32_t)(x >> e) : (int32_t)~(~x >> e);
}

#define NO_SHIFT (-1) /* round_shift32's mode where e = 0 */

/* cqtf_round_shift(x, e, mode) for 0 < e <= 30 and |x| + 2^e < 2^31 (the caller's bound), without
 * branches on x: half to even adds 2^(e-1) - 1 plus the floor quotient's lowest bit. */
ALWAYS_INLINE int32_t round_shift32(int32_t x, int32_t e, int32_t mode)
{
    const int32_t half = e > 0 ? (int32_t)1 << (e - 1) : 0;

    switch (mode) {
    case NO_SHIFT:
        return x;
    case CQTF_ROUND_FLOOR:
        return asr32(x, e);
    case CQTF_ROUND_CEIL:
        return -asr32(-x, e);
    case CQTF_ROUND_HALF_AWAY:
        return asr32(x + half - (x < 0), e);
    case CQTF_ROUND_HALF_EVEN:
        return asr32(x + half - 1 + (asr32(x, e) & 1), e);
    default: /* CQTF_ROUND_HALF_UP */
        return asr32(x + half, e);
    }
}

/* One block's sums, each rounded by e and saturated, added to the running sums and saturated;
 * clipped[t] |= whether either saturation changed a value. */
ALWAYS_INLINE void add_block(int32_t *restrict running, int32_t *restrict clipped, const int32_t *restrict sums,
                             int32_t e, int32_t mode, int32_t lo, int32_t hi)
{
    int32_t t;

    for (t = 0; t < ACC_TILE; t++) {
        const int32_t s = round_shift32(sums[t], e, mode);
        const int32_t s_sat = s < lo ? lo : (s > hi ? hi : s);
        const int32_t r = running[t] + s_sat;
        const int32_t r_sat = r < lo ? lo : (r > hi ? hi : r);

        clipped[t] |= (s_sat != s) | (r_sat != r);
        running[t] = r_sat;
    }
}

/* add_block of single products w * row[t] (blocks of one: no sums array, one pass). */
ALWAYS_INLINE void add_products(int32_t *restrict running, int32_t *restrict clipped, const int32_t *restrict row,
                                int32_t w, int32_t e, int32_t mode, int32_t lo, int32_t hi)
{
    int32_t t;

    for (t = 0; t < ACC_TILE; t++) {
        const int32_t s = round_shift32(w * row[t], e, mode);
        const int32_t s_sat = s < lo ? lo : (s > hi ? hi : s);
        const int32_t r = running[t] + s_sat;
        const int32_t r_sat = r < lo ? lo : (r > hi ? hi : r);

        clipped[t] |= (s_sat != s) | (r_sat != r);
        running[t] = r_sat;
    }
}

/* The input columns the accumulators read, straight from the int64 codes q (N, C, H, W) with element
 * strides q_strides: cols (G, fan_in, m_pad), int16 (wide = 0) or int32, column m = (n * OH + oy) *
 * OW + ox, zero at padding and past N * OH * OW. Not grouped (G = 1): k = (ky * KW + kx) * C + ic,
 * the device's order; grouped (depthwise, G = C): cols[ic] with k = ky * KW + kx. */
ALWAYS_INLINE void columns_all(const int64_t *restrict q, const int64_t *restrict q_strides, const int64_t *restrict dims,
                               const int64_t *restrict geometry, int32_t grouped, int64_t m_pad, void *restrict cols,
                               int wide)
{
    const int64_t batch = dims[0], channels = dims[1], height = dims[2], width = dims[3];
    const int64_t kh = geometry[0], kw = geometry[1], sh = geometry[2], sw = geometry[3], ph = geometry[4],
                  pw = geometry[5];
    const int64_t oh = (height + 2 * ph - kh) / sh + 1, ow = (width + 2 * pw - kw) / sw + 1;
    const int64_t fan_in = grouped ? kh * kw : kh * kw * channels;
    int64_t ky, kx, ic, n, oy, ox, m;

    for (ky = 0; ky < kh; ky++) {
        for (kx = 0; kx < kw; kx++) {
            for (ic = 0; ic < channels; ic++) {
                const int64_t row = grouped ? ic * fan_in + ky * kw + kx : (ky * kw + kx) * channels + ic;
                int16_t *out16 = (int16_t *)cols + row * m_pad;
                int32_t *out32 = (int32_t *)cols + row * m_pad;

                m = 0;
                for (n = 0; n < batch; n++) {
                    for (oy = 0; oy < oh; oy++) {
                        const int64_t y = oy * sh - ph + ky;

                        for (ox = 0; ox < ow; ox++, m++) {
                            const int64_t x = ox * sw - pw + kx;
                            const int inside = y >= 0 && y < height && x >= 0 && x < width;
                            const int64_t v = inside ? q[n * q_strides[0] + ic * q_strides[1] + y * q_strides[2]
                                                         + x * q_strides[3]] : 0;

                            if (wide) {
                                out32[m] = (int32_t)v;
                            } else {
                                out16[m] = (int16_t)v;
                            }
                        }
                    }
                }
                for (; m < m_pad; m++) {
                    if (wide) {
                        out32[m] = 0;
                    } else {
                        out16[m] = 0;
                    }
                }
            }
        }
    }
}

/* columns_all: dims (N, C, H, W), geometry (KH, KW, SH, SW, PH, PW); int32 columns where wide, else
 * int16 (codes of at most 16 bits, the caller's bound). */
void cqtf_accumulator_columns(const int64_t *restrict q, const int64_t *restrict q_strides,
                              const int64_t *restrict dims, const int64_t *restrict geometry, int32_t grouped,
                              int64_t m_pad, void *restrict cols, int32_t wide)
{
    if (wide) {
        columns_all(q, q_strides, dims, geometry, grouped, m_pad, cols, 1);
    } else {
        columns_all(q, q_strides, dims, geometry, grouped, m_pad, cols, 0);
    }
}

/* The running sums of one channel over one tile of outputs: blocks of `block` products (the last
 * one shorter; zero products would add nothing), products w[k] * cols[k * stride + t]. */
ALWAYS_INLINE void accumulate_tile(const int32_t *restrict w, const int32_t *restrict cols, int64_t stride,
                                   int64_t fan_in, int64_t block, int32_t e, int32_t mode, int32_t lo, int32_t hi,
                                   int32_t *restrict running, int32_t *restrict clipped)
{
    int32_t sums[ACC_TILE];
    int64_t j, k, t;

    for (t = 0; t < ACC_TILE; t++) {
        running[t] = 0;
        clipped[t] = 0;
    }
    for (j = 0; j < fan_in; j += block) {
        const int64_t end = j + block < fan_in ? j + block : fan_in;
        int any = 0;

        if (block == 1) {
            if (w[j] != 0) { /* a zero product leaves the running sum as it is */
                add_products(running, clipped, cols + j * stride, w[j], e, mode, lo, hi);
            }
            continue;
        }
        for (t = 0; t < ACC_TILE; t++) {
            sums[t] = 0;
        }
        for (k = j; k < end; k++) {
            const int32_t wk = w[k];
            const int32_t *restrict row = cols + k * stride;

            if (wk == 0) { /* power-of-two and pruned weights: zeros are common */
                continue;
            }
            any = 1;
            for (t = 0; t < ACC_TILE; t++) {
                sums[t] += wk * row[t];
            }
        }
        if (any) { /* an all-zero block adds a zero sum */
            add_block(running, clipped, sums, e, mode, lo, hi);
        }
    }
}

/* Writes a tile's `count` running sums of channel o to acc[n * strides[0] + o * strides[1] + l *
 * strides[2]], stepping (n, l) along its outputs (no division per output); returns how many clipped. */
ALWAYS_INLINE int64_t store_tile(const int32_t *restrict running, const int32_t *restrict clipped, int64_t count,
                                 int64_t length, int64_t o, const int64_t *restrict strides, int64_t *restrict n,
                                 int64_t *restrict l, int64_t *restrict acc)
{
    int64_t t, n_clipped = 0;

    for (t = 0; t < count; t++) {
        acc[*n * strides[0] + o * strides[1] + *l * strides[2]] = running[t];
        n_clipped += clipped[t] != 0;
        if (++*l == length) {
            *l = 0;
            ++*n;
        }
    }
    return n_clipped;
}

/* The tiles of every channel (see cqtf_block_accumulate); `mode` a constant in each inlined instance
 * (NO_SHIFT: acc_shift 0), so the element loops have no switch and vectorize. */
ALWAYS_INLINE int64_t accumulate_all(int64_t out_channels, int64_t fan_in, int64_t batch, int64_t length,
                                     int32_t grouped, const int32_t *restrict weights, const int32_t *restrict cols,
                                     int64_t m_pad, int64_t block, int32_t acc_shift, int32_t mode, int32_t acc_min,
                                     int32_t acc_max, int64_t stride_n, int64_t stride_o, int64_t stride_l,
                                     int64_t *restrict acc)
{
    const int64_t outputs = batch * length, strides[3] = {stride_n, stride_o, stride_l};
    int32_t running[ACC_TILE], clipped[ACC_TILE];
    int64_t o, m0, n_clipped = 0;

    for (o = 0; o < out_channels; o++) {
        const int32_t *w = weights + o * fan_in;
        const int32_t *channel_cols = cols + (grouped ? o * fan_in * m_pad : 0);
        int64_t n = 0, l = 0; /* output m = n * length + l, stepped along (no division per output) */

        for (m0 = 0; m0 < outputs; m0 += ACC_TILE) {
            const int64_t count = outputs - m0 < ACC_TILE ? outputs - m0 : ACC_TILE;

            accumulate_tile(w, channel_cols + m0, m_pad, fan_in, block, acc_shift, mode, acc_min, acc_max, running,
                            clipped);
            n_clipped += store_tile(running, clipped, count, length, o, strides, &n, &l, acc);
        }
    }
    return n_clipped;
}

/* The device's accumulator before the bias, every output of a conv or linear layer: weights (O,
 * fan_in) int32 in device order; cols (G, fan_in, m_pad) int32, the input column of output m = n *
 * length + l (m < batch * length; m_pad a multiple of ACC_TILE, pad columns zero), G = 1, or O
 * (grouped: channel o reads cols[o], a depthwise layer). Each block sum of `block` exact products
 * is rounded by acc_shift (`mode`) and saturated to [acc_min, acc_max], the running sum saturated
 * after each block. Writes acc[n * stride_n + o * stride_o + l * stride_l] (int64) and returns how
 * many outputs saturated somewhere. The caller's bounds: |block sum| + 2^acc_shift < 2^31,
 * 0 <= acc_shift <= 30, and the accumulator at most 31 bits (a sum of two running values fits int32). */
SIMD_CLONES /* AVX2 where the CPU has it: 8 int32 lanes */
int64_t cqtf_block_accumulate(int64_t out_channels, int64_t fan_in, int64_t batch, int64_t length, int32_t grouped,
                              const int32_t *restrict weights, const int32_t *restrict cols, int64_t m_pad,
                              int64_t block, int32_t acc_shift, int32_t mode, int32_t acc_min, int32_t acc_max,
                              int64_t stride_n, int64_t stride_o, int64_t stride_l, int64_t *restrict acc)
{
#define ACCUMULATE(m) accumulate_all(out_channels, fan_in, batch, length, grouped, weights, cols, m_pad, block, \
                                     acc_shift, (m), acc_min, acc_max, stride_n, stride_o, stride_l, acc)
    if (acc_shift == 0) {
        return ACCUMULATE(NO_SHIFT);
    }
    switch (mode) {
    case CQTF_ROUND_FLOOR:
        return ACCUMULATE(CQTF_ROUND_FLOOR);
    case CQTF_ROUND_CEIL:
        return ACCUMULATE(CQTF_ROUND_CEIL);
    case CQTF_ROUND_HALF_AWAY:
        return ACCUMULATE(CQTF_ROUND_HALF_AWAY);
    case CQTF_ROUND_HALF_EVEN:
        return ACCUMULATE(CQTF_ROUND_HALF_EVEN);
    default:
        return ACCUMULATE(CQTF_ROUND_HALF_UP);
    }
#undef ACCUMULATE
}

/* ---- 16-bit saturating accumulators, blocks of one product (fixed8-acc16), in AVX2 ---- */

#if defined(__GNUC__) && defined(__x86_64__)
#include <immintrin.h>

#define SAT16_VECTORS 4 /* 64 outputs: four vectors of 16 running sums, held in registers over all k */

/* Whether cqtf_saturating_accumulate16 can run here (an x86-64 CPU with AVX2). */
int32_t cqtf_has_avx2(void)
{
    __builtin_cpu_init();
    return __builtin_cpu_supports("avx2") != 0;
}

/* cqtf_block_accumulate for block 1, acc_shift 0 and a 16-bit accumulator where every product
 * fits int16 (the caller's bound): the product is exact in 16-bit lanes, its saturation a no-op,
 * and the saturating running sum is one instruction (vpaddsw); it clipped where it differs from
 * the wrapping sum. cols (G, fan_in, m_pad) int16; otherwise the arguments of cqtf_block_accumulate. */
__attribute__((target("avx2")))
int64_t cqtf_saturating_accumulate16(int64_t out_channels, int64_t fan_in, int64_t batch, int64_t length,
                                     int32_t grouped, const int32_t *restrict weights, const int16_t *restrict cols,
                                     int64_t m_pad, int64_t stride_n, int64_t stride_o, int64_t stride_l,
                                     int64_t *restrict acc)
{
    const int64_t outputs = batch * length, strides[3] = {stride_n, stride_o, stride_l};
    int32_t running[ACC_TILE], clipped[ACC_TILE];
    int64_t o, m0, k, n_clipped = 0;
    int32_t v;

    for (o = 0; o < out_channels; o++) {
        const int32_t *w = weights + o * fan_in;
        const int16_t *channel_cols = cols + (grouped ? o * fan_in * m_pad : 0);
        int64_t n = 0, l = 0;

        for (m0 = 0; m0 < outputs; m0 += ACC_TILE) {
            const int64_t count = outputs - m0 < ACC_TILE ? outputs - m0 : ACC_TILE;
            __m256i r[SAT16_VECTORS], c[SAT16_VECTORS];

            for (v = 0; v < SAT16_VECTORS; v++) {
                r[v] = _mm256_setzero_si256();
                c[v] = _mm256_setzero_si256();
            }
            for (k = 0; k < fan_in; k++) {
                const int16_t *row = channel_cols + k * m_pad + m0;
                __m256i wk;

                if (w[k] == 0) {
                    continue;
                }
                wk = _mm256_set1_epi16((int16_t)w[k]);
                for (v = 0; v < SAT16_VECTORS; v++) {
                    const __m256i p = _mm256_mullo_epi16(_mm256_loadu_si256((const __m256i *)(row + 16 * v)), wk);
                    const __m256i sum = _mm256_adds_epi16(r[v], p);

                    c[v] = _mm256_or_si256(c[v], _mm256_xor_si256(sum, _mm256_add_epi16(r[v], p)));
                    r[v] = sum;
                }
            }
            for (v = 0; v < SAT16_VECTORS; v++) { /* widened to int32 for store_tile */
                _mm256_storeu_si256((__m256i *)(running + 16 * v), _mm256_cvtepi16_epi32(_mm256_castsi256_si128(r[v])));
                _mm256_storeu_si256((__m256i *)(running + 16 * v + 8),
                                    _mm256_cvtepi16_epi32(_mm256_extracti128_si256(r[v], 1)));
                _mm256_storeu_si256((__m256i *)(clipped + 16 * v), _mm256_cvtepi16_epi32(_mm256_castsi256_si128(c[v])));
                _mm256_storeu_si256((__m256i *)(clipped + 16 * v + 8),
                                    _mm256_cvtepi16_epi32(_mm256_extracti128_si256(c[v], 1)));
            }
            n_clipped += store_tile(running, clipped, count, length, o, strides, &n, &l, acc);
        }
    }
    return n_clipped;
}
#endif
