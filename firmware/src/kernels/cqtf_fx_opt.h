/*
 * cqtf_fx_opt.h - the block accumulator of the fixed-point profiles for the optimized kernels:
 * the same integers as cqtf_fx_flush / cqtf_fx_finish (cqtf_fixed.h), with the per-layer constants
 * worked out once instead of per block.
 *
 * The optimized kernels sum each block's products exactly (dual MACs, any order inside a block)
 * and hand the block sum to cqtf_fx_opt_flush. A block is arith->block consecutive products of the
 * ky, kx, ic order (padding positions count as zero products); block 0 = one block of all K.
 * Host twin: cqtf.reference_fixed.accumulate.
 */
#ifndef CQTF_FX_OPT_H
#define CQTF_FX_OPT_H

#include <stdint.h>

#include "cqtf_fixed.h"

typedef struct {
    int64_t lo, hi;     /* the accumulator's range: signed acc_bits */
    int64_t add;        /* fast rounding: floor((sum + add) / 2^shift) */
    int32_t shift;      /* acc_shift */
    uint32_t block;     /* products per block, in [1, K] (block 0 or >= K: K) */
    uint8_t mode;       /* block rounding (cqtf_rounding_t) */
    uint8_t fast;       /* 1: shift <= 0, or a mode that is floor(sum + add) (half up, floor, ceil) */
} cqtf_fx_opt_t;

static inline void cqtf_fx_opt_init(cqtf_fx_opt_t *p, const cqtf_quant_t *q, uint32_t k_all)
{
    const cqtf_arith_t *ar = q->arith;

    p->hi = ((int64_t)1 << (ar->acc_bits - 1u)) - 1;
    p->lo = -p->hi - 1;
    p->shift = q->acc_shift;
    p->block = (ar->block == 0u || ar->block >= k_all) ? k_all : ar->block;
    p->mode = ar->block_rounding;
    p->add = 0;
    p->fast = 1;
    if (p->shift > 0) {
        if (p->mode == CQTF_ROUND_HALF_UP) {
            p->add = (int64_t)1 << (p->shift - 1);
        } else if (p->mode == CQTF_ROUND_CEIL) {
            p->add = ((int64_t)1 << p->shift) - 1;
        } else if (p->mode != CQTF_ROUND_FLOOR) {
            p->fast = 0; /* ties away / to even: the reference's rounding */
        }
    }
}

static inline int64_t cqtf_fx_opt_clamp(const cqtf_fx_opt_t *p, int64_t v)
{
    return (v < p->lo) ? p->lo : ((v > p->hi) ? p->hi : v);
}

/* acc (in range) plus one exact block sum: cqtf_fx_flush. floor((x + add) / 2^e) equals
 * cqtf_round_shift for half up (add 2^(e-1)), floor (0) and ceil (2^e - 1). */
static inline int64_t cqtf_fx_opt_flush(const cqtf_fx_opt_t *p, int64_t acc, int32_t sum)
{
    int64_t s;

    if (!p->fast) {
        s = cqtf_round_shift(sum, p->shift, p->mode);
    } else if (p->shift <= 0) {
        s = (int64_t)sum * ((int64_t)1 << -p->shift); /* |sum| < 2^30: fits */
    } else {
        s = cqtf_asr64((int64_t)sum + p->add, p->shift);
    }
    return cqtf_fx_opt_clamp(p, acc + cqtf_fx_opt_clamp(p, s));
}

/* Bias, output shift and clamp of a finished accumulator: cqtf_fx_finish without the flush. */
static inline int8_t cqtf_fx_opt_output(const cqtf_fx_opt_t *p, const cqtf_quant_t *q, int64_t acc,
                                        int32_t bias, uint32_t oc)
{
    const int64_t a = cqtf_fx_opt_clamp(p, acc + bias);
    return (int8_t)cqtf_clamp64(cqtf_round_shift(a, -q->shift[oc], q->arith->out_rounding), q->act_min,
                                q->act_max);
}

#endif /* CQTF_FX_OPT_H */
