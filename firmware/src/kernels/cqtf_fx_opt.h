/*
 * cqtf_fx_opt.h - the block accumulator of the fixed-point profiles for the optimized kernels:
 * the same integers as cqtf_fx_flush / cqtf_fx_finish (cqtf_fixed.h), in 32-bit arithmetic with
 * the per-layer constants worked out once instead of per block.
 *
 * The optimized kernels sum each block's products exactly (dual MACs, any order inside a block)
 * and hand the block sum to cqtf_fx_opt_flush. A block is arith->block consecutive products of the
 * ky, kx, ic order (padding positions count as zero products); block 0 = one block of all K.
 * Host twin: cqtf.reference_fixed.accumulate.
 *
 * Why 32 bits suffice: a block sum is below 2^30 in magnitude (CQTF_MAX_PRODUCTS products of at most
 * 2^14), the accumulator has at most 32 bits, and the saturating add never forms acc + s when it
 * would leave [lo, hi].
 */
#ifndef CQTF_FX_OPT_H
#define CQTF_FX_OPT_H

#include <stdint.h>

#include "cqtf_fixed.h"

typedef struct {
    int32_t lo, hi;     /* the accumulator's range: signed acc_bits */
    int32_t shift;      /* acc_shift */
    uint32_t mask;      /* 2^shift - 1 (shift > 0) */
    uint32_t add;       /* fast rounding of the low bits: half up 2^(shift-1), floor 0, ceil 2^shift-1 */
    uint32_t block;     /* products per block, in [1, K] (block 0 or >= K: K) */
    uint8_t mode;       /* block rounding (cqtf_rounding_t) */
    uint8_t fast;       /* 1: shift 0, or shift > 0 and a floor-like block rounding */
    uint8_t out_mode;   /* output rounding (cqtf_rounding_t) */
    uint8_t out_fast;   /* 1: the output rounding is half up, floor or ceil */
    uint8_t exact1;     /* 1: a one-product block passes unchanged (shift 0, |product| <= 2^14 <= hi) */
} cqtf_fx_opt_t;

/* 1 for the roundings that are floor((x + add) / 2^e) for an add of the low bits alone. */
static inline int cqtf_fx_opt_floor_like(uint8_t mode)
{
    return mode == CQTF_ROUND_HALF_UP || mode == CQTF_ROUND_FLOOR || mode == CQTF_ROUND_CEIL;
}

/* What floor-like rounding adds to the low e bits (0 < e <= 31): half up 2^(e-1), ceil 2^e - 1. */
static inline uint32_t cqtf_fx_opt_addend(uint8_t mode, uint32_t e)
{
    if (mode == CQTF_ROUND_HALF_UP) {
        return (uint32_t)1 << (e - 1u);
    }
    return (mode == CQTF_ROUND_CEIL) ? (uint32_t)((((uint64_t)1) << e) - 1u) : 0u;
}

/* floor(x / 2^e), 0 <= e <= 31, without relying on >> of a negative value (compiles to one ASR). */
static inline int32_t cqtf_asr32(int32_t x, int32_t e)
{
    return (x >= 0) ? (x >> e) : ~(~x >> e);
}

/* floor((x + add) / 2^e) for 0 <= e <= 31, mask = 2^e - 1, add <= mask: the quotient of x plus that
 * of its low bits and the addend (below 2^32). Equals cqtf_round_shift for half up, floor and ceil. */
static inline int32_t cqtf_fx_opt_shift(int32_t x, int32_t e, uint32_t mask, uint32_t add)
{
    return cqtf_asr32(x, e) + (int32_t)((((uint32_t)x & mask) + add) >> e);
}

static inline void cqtf_fx_opt_init(cqtf_fx_opt_t *p, const cqtf_quant_t *q, uint32_t k_all)
{
    const cqtf_arith_t *ar = q->arith;

    p->hi = (int32_t)((((int64_t)1) << (ar->acc_bits - 1u)) - 1);
    p->lo = -p->hi - 1;
    p->shift = q->acc_shift;
    p->block = (ar->block == 0u || ar->block >= k_all) ? k_all : ar->block;
    p->mode = ar->block_rounding;
    p->mask = (p->shift > 0) ? (uint32_t)((((int64_t)1) << p->shift) - 1) : 0u;
    p->fast = p->shift == 0 || (p->shift > 0 && cqtf_fx_opt_floor_like(p->mode));
    p->add = (p->shift > 0) ? cqtf_fx_opt_addend(p->mode, (uint32_t)p->shift) : 0u;
    p->out_mode = ar->out_rounding;
    p->out_fast = (uint8_t)cqtf_fx_opt_floor_like(p->out_mode);
    p->exact1 = p->shift == 0 && p->hi >= (1 << 14);
}

/* clamp(acc + s, lo, hi) for acc, s in [lo, hi], never forming an out-of-range sum. */
static inline int32_t cqtf_fx_opt_add(const cqtf_fx_opt_t *p, int32_t acc, int32_t s)
{
    if (s >= 0) {
        return (acc > p->hi - s) ? p->hi : acc + s;
    }
    return (acc < p->lo - s) ? p->lo : acc + s;
}

/* The saturated, rounded block sum: sat(round_shift(sum, shift, mode), acc_bits), as cqtf_fx_flush. */
static inline int32_t cqtf_fx_opt_block(const cqtf_fx_opt_t *p, int32_t sum)
{
    int64_t s;

    if (p->fast) {
        const int32_t r = cqtf_fx_opt_shift(sum, p->shift, p->mask, p->add);
        return (r < p->lo) ? p->lo : ((r > p->hi) ? p->hi : r);
    }
    s = cqtf_round_shift(sum, p->shift, p->mode); /* left shifts, ties away / to even: rare */
    return (int32_t)((s < p->lo) ? p->lo : ((s > p->hi) ? p->hi : s));
}

/* acc (in range) after one more block: cqtf_fx_flush. */
static inline int32_t cqtf_fx_opt_flush(const cqtf_fx_opt_t *p, int32_t acc, int32_t sum)
{
    return cqtf_fx_opt_add(p, acc, cqtf_fx_opt_block(p, sum));
}

/* acc after a block of one product (block 1, e.g. fixed8-acc16: the accumulator saturates after every
 * product). exact: p->exact1, a constant at each call so that the test folds away. */
static inline int32_t cqtf_fx_opt_flush1(const cqtf_fx_opt_t *p, int32_t acc, int32_t product, int exact)
{
    return exact ? cqtf_fx_opt_add(p, acc, product) : cqtf_fx_opt_flush(p, acc, product);
}

/* Bias, output shift and clamp of a finished accumulator: cqtf_fx_finish without the flush. */
static inline int8_t cqtf_fx_opt_output(const cqtf_fx_opt_t *p, const cqtf_quant_t *q, int32_t acc,
                                        int32_t bias, uint32_t oc)
{
    const int64_t a = (int64_t)acc + bias;
    const int32_t sat = (int32_t)((a < p->lo) ? p->lo : ((a > p->hi) ? p->hi : a));
    const int32_t e = -q->shift[oc]; /* in [-30, 31] */
    int64_t r;

    if (e > 0 && p->out_fast) {
        const uint32_t mask = (uint32_t)((((uint64_t)1) << e) - 1u);
        r = cqtf_fx_opt_shift(sat, e, mask, cqtf_fx_opt_addend(p->out_mode, (uint32_t)e));
    } else {
        r = cqtf_round_shift(sat, e, p->out_mode); /* left shifts, ties away / to even */
    }
    return (int8_t)cqtf_clamp64(r, q->act_min, q->act_max);
}

#endif /* CQTF_FX_OPT_H */
