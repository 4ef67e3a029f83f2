/*
 * cqtf_depthwise_opt.h - what the optimized depthwise kernels (cqtf_depthwise_conv2d_s8_opt.c,
 * cqtf_depthwise_conv2d_fx_opt.c) share: the in-range part of a kernel window, found once per
 * output pixel instead of tested per product, and 4 channels per kernel position with one word load
 * of inputs and of weights (NHWC keeps channels adjacent): SXTAB16 / SXTB16 split them into
 * 16-bit lanes, one single 16 x 16 MAC (SMLABB / SMLATT) per channel. Channels are independent,
 * so no dual MAC applies; the gain is in loads, sign extension and addressing.
 */
#ifndef CQTF_DEPTHWISE_OPT_H
#define CQTF_DEPTHWISE_OPT_H

#include <stdint.h>

#include "cqtf_kernels.h"
#include "cqtf_simd.h"

/* Output pixel (y, x)'s window: kernel rows [ky0, ky1) and columns [kx0, kx1) are in range (empty
 * when ky1 <= ky0 or kx1 <= kx0); kernel position (ky, kx) reads input pixel (iy0 + ky, ix0 + kx). */
typedef struct {
    int32_t iy0, ix0;
    int32_t ky0, ky1, kx0, kx1;
} cqtf_dw_window_t;

static inline int32_t cqtf_dw_max(int32_t a, int32_t b)
{
    return a > b ? a : b;
}

static inline int32_t cqtf_dw_min(int32_t a, int32_t b)
{
    return a < b ? a : b;
}

static inline cqtf_dw_window_t cqtf_dw_window(const cqtf_layer_t *layer, uint32_t y, uint32_t x)
{
    cqtf_dw_window_t w;

    w.iy0 = (int32_t)(y * layer->stride_h) - layer->pad_top;
    w.ix0 = (int32_t)(x * layer->stride_w) - layer->pad_left;
    w.ky0 = cqtf_dw_max(0, -w.iy0);
    w.ky1 = cqtf_dw_min((int32_t)layer->kernel_h, (int32_t)layer->in.h - w.iy0);
    w.kx0 = cqtf_dw_max(0, -w.ix0);
    w.kx1 = cqtf_dw_min((int32_t)layer->kernel_w, (int32_t)layer->in.w - w.ix0);
    return w;
}

/* acc[i] += (in[i] + offset) * w[i] for the 4 channels at in and w (offset2: the input offset in both
 * lanes). Lanes hold in + offset in [-255, 255]: exact. */
static inline void cqtf_dw_mac4(const int8_t *in, const int8_t *w, uint32_t offset2, int32_t acc[4])
{
    const uint32_t x4 = cqtf_read_s8x4(in), w4 = cqtf_read_s8x4(w);
    const uint32_t xe = cqtf_sxtab16(offset2, x4), xo = cqtf_sxtab16_ror8(offset2, x4);
    const uint32_t we = cqtf_sxtb16(w4), wo = cqtf_sxtb16_ror8(w4);

    acc[0] = cqtf_smlabb(xe, we, acc[0]);
    acc[1] = cqtf_smlabb(xo, wo, acc[1]);
    acc[2] = cqtf_smlatt(xe, we, acc[2]);
    acc[3] = cqtf_smlatt(xo, wo, acc[3]);
}

#endif /* CQTF_DEPTHWISE_OPT_H */
