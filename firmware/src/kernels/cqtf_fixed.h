/*
 * cqtf_fixed.h - the integer steps of the non-TFLM profiles (host twin: host/fixedpoint.py
 * round_shift, saturate, requantize_single; the accumulation: host/reference_fixed.py accumulate).
 *
 * All arithmetic is in int64 where an intermediate can exceed 32 bits; every shift of a negative
 * value goes through cqtf_asr64 (well defined in C99).
 */
#ifndef CQTF_FIXED_H
#define CQTF_FIXED_H

#include <stdint.h>

#include "cqtf_types.h"

/* floor(x / 2^e), 0 <= e <= 62. */
static inline int64_t cqtf_asr64(int64_t x, int32_t e)
{
    return (x >= 0) ? (x >> e) : ~(~x >> e);
}

/* x / 2^e rounded by `mode` (cqtf_rounding_t) for 0 < e <= 62; x * 2^-e for -31 <= e <= 0 (exact
 * for |x| < 2^32). Twin: cqtf.fixedpoint.round_shift. */
static inline int64_t cqtf_round_shift(int64_t x, int32_t e, uint8_t mode)
{
    int64_t floor_q, rem, half;

    if (e <= 0) {
        return x * ((int64_t)1 << -e);
    }
    floor_q = cqtf_asr64(x, e);
    rem = x - floor_q * ((int64_t)1 << e); /* in [0, 2^e) */
    half = (int64_t)1 << (e - 1);
    switch (mode) {
    case CQTF_ROUND_FLOOR:
        return floor_q;
    case CQTF_ROUND_CEIL:
        return floor_q + ((rem > 0) ? 1 : 0);
    case CQTF_ROUND_HALF_AWAY:
        return floor_q + ((rem > half || (rem == half && x >= 0)) ? 1 : 0);
    case CQTF_ROUND_HALF_EVEN:
        return floor_q + ((rem > half || (rem == half && (floor_q & 1) != 0)) ? 1 : 0);
    case CQTF_ROUND_HALF_UP:
    default:
        return floor_q + ((rem >= half) ? 1 : 0);
    }
}

/* x / d rounded by `mode` (cqtf_rounding_t), d > 0. Twin: cqtf.fixedpoint.round_div. */
static inline int32_t cqtf_round_div(int32_t x, int32_t d, uint8_t mode)
{
    int32_t q = x / d; /* C truncates toward zero: make it the floor */
    int32_t r = x % d;

    if (r < 0) {
        q -= 1;
        r += d;
    }
    switch (mode) {
    case CQTF_ROUND_FLOOR:
        return q;
    case CQTF_ROUND_CEIL:
        return q + ((r > 0) ? 1 : 0);
    case CQTF_ROUND_HALF_AWAY:
        return q + ((2 * r > d || (2 * r == d && x >= 0)) ? 1 : 0);
    case CQTF_ROUND_HALF_EVEN:
        return q + ((2 * r > d || (2 * r == d && (q & 1) != 0)) ? 1 : 0);
    case CQTF_ROUND_HALF_UP:
    default:
        return q + ((2 * r >= d) ? 1 : 0);
    }
}

/* Clamp to the signed range of `bits` bits (1 <= bits <= 32). Twin: cqtf.fixedpoint.saturate. */
static inline int64_t cqtf_saturate(int64_t x, uint32_t bits)
{
    const int64_t hi = ((int64_t)1 << (bits - 1u)) - 1;
    const int64_t lo = -((int64_t)1 << (bits - 1u));
    return (x < lo) ? lo : ((x > hi) ? hi : x);
}

static inline int32_t cqtf_clamp64(int64_t v, int32_t lo, int32_t hi)
{
    return (int32_t)((v < lo) ? lo : ((v > hi) ? hi : v));
}

/* int8 single rounding: acc * multiplier / 2^(31 - shift) rounded once (|acc * M| < 2^62), plus
 * the output offset, clamped. Twin: cqtf.fixedpoint.requantize_single (+ offset and clip in
 * cqtf.reference._requantize_clamp). */
static inline int8_t cqtf_requant_single_clamp(const cqtf_quant_t *q, uint32_t oc, int32_t acc)
{
    const int64_t r = cqtf_round_shift((int64_t)acc * q->multiplier[oc], 31 - q->shift[oc],
                                       q->arith->out_rounding);
    return (int8_t)cqtf_clamp64(r + q->output_offset, q->act_min, q->act_max);
}

/* 1 when the layer uses single rounding instead of TFLM's double rounding. */
static inline int cqtf_single_rounding(const cqtf_quant_t *q)
{
    return q->arith != 0 && q->arith->requant == CQTF_REQUANT_SINGLE;
}

/* Block accumulator of the fixed-point profiles. Twin: cqtf.reference_fixed.accumulate. */
typedef struct {
    int64_t acc;   /* running accumulator, saturated to arith->acc_bits */
    int32_t block; /* exact sum of the current block: < 255 * 2^14 (or 65535 * 2^14 for block 0) */
    uint32_t n;    /* products in the current block */
} cqtf_fx_acc_t;

static inline void cqtf_fx_flush(cqtf_fx_acc_t *a, const cqtf_quant_t *q)
{
    const cqtf_arith_t *ar = q->arith;
    const int64_t s = cqtf_saturate(cqtf_round_shift(a->block, q->acc_shift, ar->block_rounding),
                                    ar->acc_bits);
    a->acc = cqtf_saturate(a->acc + s, ar->acc_bits);
    a->block = 0;
    a->n = 0;
}

/* Adds one product (0 for a padding position: it still takes its place in the block). */
static inline void cqtf_fx_add(cqtf_fx_acc_t *a, const cqtf_quant_t *q, int32_t product)
{
    a->block += product;
    if (++a->n == q->arith->block) { /* block 0: never here, one block of everything */
        cqtf_fx_flush(a, q);
    }
}

/* Last partial block, bias, output shift and clamp. */
static inline int8_t cqtf_fx_finish(cqtf_fx_acc_t *a, const cqtf_quant_t *q, int32_t bias,
                                    uint32_t oc)
{
    const cqtf_arith_t *ar = q->arith;
    int64_t acc;

    if (a->n > 0u) {
        cqtf_fx_flush(a, q);
    }
    acc = cqtf_saturate(a->acc + bias, ar->acc_bits);
    return (int8_t)cqtf_clamp64(cqtf_round_shift(acc, -q->shift[oc], ar->out_rounding), q->act_min,
                                q->act_max);
}

/* Sanity check of a fixed-point layer: arithmetic in range, parameters present, shifts bounded. */
static inline int cqtf_fx_params_ok(const cqtf_layer_t *layer)
{
    const cqtf_quant_t *q = &layer->quant;
    const cqtf_arith_t *ar = q->arith;
    uint32_t oc;

    if (ar == 0 || ar->requant != CQTF_REQUANT_SHIFT || ar->act_bits != CQTF_ARITH_ACT_BITS ||
        ar->acc_bits < CQTF_ARITH_ACC_BITS_MIN || ar->acc_bits > CQTF_ARITH_ACC_BITS_MAX ||
        ar->block_rounding > CQTF_ROUND_MAX || ar->out_rounding > CQTF_ROUND_MAX) {
        return 0;
    }
    if (layer->weights == 0 || layer->bias == 0 || q->shift == 0 || q->input_offset != 0 ||
        q->acc_shift < -31 || q->acc_shift > 31) {
        return 0;
    }
    if (q->act_min < -128 || q->act_max > 127 || q->act_min > q->act_max) {
        return 0;
    }
    for (oc = 0; oc < layer->out.c; ++oc) {
        if (q->shift[oc] < -31 || q->shift[oc] > 30) {
            return 0;
        }
    }
    return 1;
}

#endif /* CQTF_FIXED_H */
