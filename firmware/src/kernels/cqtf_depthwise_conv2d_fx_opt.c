/*
 * cqtf_depthwise_conv2d_fx_opt.c - fixed-point depthwise 2-D convolution (REQUANT_SHIFT profiles,
 * channel multiplier 1) for cores with the DSP extension. Same contract and, bit for bit, the same
 * outputs as cqtf_depthwise_conv2d_fx.c.
 *
 * Each channel's kernel_h * kernel_w products, in the order ky, kx, go through the block accumulator
 * (cqtf_fx_opt.h); padding positions are zero products that keep their place in a block, so the
 * general path walks every position and only multiplies the in-range ones. One block (block 0 or
 * >= the window) needs no counting: the in-range window alone, then one flush. 4 channels share
 * each kernel position (cqtf_depthwise_opt.h); the in.c % 4 last channels go one by one.
 */
#include "cqtf_depthwise_opt.h"
#include "cqtf_fixed.h"
#include "cqtf_fx_opt.h"
#include "cqtf_kernels.h"

static inline int in_window(const cqtf_dw_window_t *win, int32_t ky, int32_t kx)
{
    return ky >= win->ky0 && ky < win->ky1 && kx >= win->kx0 && kx < win->kx1;
}

/* Offset of (kernel position ky, kx; channel c) in the input and in the weights. */
static inline uint32_t input_at(const cqtf_layer_t *layer, const cqtf_dw_window_t *win, int32_t ky,
                                int32_t kx, uint32_t c)
{
    return ((uint32_t)(win->iy0 + ky) * layer->in.w + (uint32_t)(win->ix0 + kx)) * layer->in.c + c;
}

static inline uint32_t weight_at(const cqtf_layer_t *layer, int32_t ky, int32_t kx, uint32_t c)
{
    return ((uint32_t)ky * layer->kernel_w + (uint32_t)kx) * layer->in.c + c;
}

static inline void flush_n(const cqtf_fx_opt_t *p, int32_t s[4], int32_t acc[4], uint32_t lanes)
{
    uint32_t i;

    for (i = 0; i < lanes; ++i) {
        acc[i] = cqtf_fx_opt_flush(p, acc[i], s[i]);
        s[i] = 0;
    }
}

/* Products of `lanes` channels (4, or 1 for the last ones) at kernel position (ky, kx) into s. */
static inline void mac_n(const cqtf_layer_t *layer, const int8_t *input, const cqtf_dw_window_t *win,
                         int32_t ky, int32_t kx, uint32_t c, uint32_t lanes, int32_t s[4])
{
    const int8_t *in = &input[input_at(layer, win, ky, kx, c)];
    const int8_t *w = &layer->weights[weight_at(layer, ky, kx, c)];

    if (lanes == 4u) {
        cqtf_dw_mac4(in, w, 0u, s); /* input_offset is 0 in fixed point */
    } else {
        s[0] += (int32_t)*in * (int32_t)*w;
    }
}

/* One block: the in-range window only (rows and columns walked by index), one flush. */
static void window_one_block(const cqtf_fx_opt_t *p, const cqtf_layer_t *layer, const int8_t *input,
                             const cqtf_dw_window_t *win, uint32_t c, uint32_t lanes, int32_t acc[4])
{
    const uint32_t ch = layer->in.c;
    int32_t s[4] = {0, 0, 0, 0}, ky, kx;

    for (ky = win->ky0; ky < win->ky1; ++ky) {
        uint32_t in_at = input_at(layer, win, ky, win->kx0, c), w_at = weight_at(layer, ky, win->kx0, c);
        for (kx = win->kx0; kx < win->kx1; ++kx, in_at += ch, w_at += ch) {
            if (lanes == 4u) {
                cqtf_dw_mac4(&input[in_at], &layer->weights[w_at], 0u, s); /* input_offset is 0 */
            } else {
                s[0] += (int32_t)input[in_at] * (int32_t)layer->weights[w_at];
            }
        }
    }
    flush_n(p, s, acc, lanes);
}

/* Blocks of p->block positions, padding included: every position counts, in-range ones multiply. */
static void window_blocks(const cqtf_fx_opt_t *p, const cqtf_layer_t *layer, const int8_t *input,
                          const cqtf_dw_window_t *win, uint32_t c, uint32_t lanes, int32_t acc[4])
{
    int32_t s[4] = {0, 0, 0, 0}, ky, kx;
    uint32_t n = 0;

    for (ky = 0; ky < (int32_t)layer->kernel_h; ++ky) {
        for (kx = 0; kx < (int32_t)layer->kernel_w; ++kx) {
            if (in_window(win, ky, kx)) {
                mac_n(layer, input, win, ky, kx, c, lanes, s);
            }
            if (++n == p->block) {
                flush_n(p, s, acc, lanes);
                n = 0;
            }
        }
    }
    if (n > 0u) {
        flush_n(p, s, acc, lanes);
    }
}

/* Channels [c, c + lanes) of one output pixel, written to out. */
static void pixel_channels(const cqtf_fx_opt_t *p, const cqtf_layer_t *layer, const int8_t *input,
                           const cqtf_dw_window_t *win, uint32_t c, uint32_t lanes, int8_t *out)
{
    int32_t acc[4] = {0, 0, 0, 0};
    uint32_t i;

    if (p->block == (uint32_t)layer->kernel_h * layer->kernel_w) {
        window_one_block(p, layer, input, win, c, lanes, acc);
    } else {
        window_blocks(p, layer, input, win, c, lanes, acc);
    }
    for (i = 0; i < lanes; ++i) {
        out[c + i] = cqtf_fx_opt_output(p, &layer->quant, acc[i], layer->bias[c + i], c + i);
    }
}

cqtf_status_t cqtf_depthwise_conv2d_fx_opt(const cqtf_layer_t *layer, const int8_t *input,
                                           int8_t *output)
{
    const uint32_t ch = layer->in.c;
    cqtf_fx_opt_t p;
    uint32_t y, x, c;

    if (!cqtf_depthwise_geometry_ok(layer) || !cqtf_fx_params_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    cqtf_fx_opt_init(&p, &layer->quant, (uint32_t)layer->kernel_h * layer->kernel_w);
    for (y = 0; y < layer->out.h; ++y) {
        for (x = 0; x < layer->out.w; ++x) {
            const cqtf_dw_window_t win = cqtf_dw_window(layer, y, x);
            int8_t *const out = &output[cqtf_offset(layer->out, y, x, 0)];

            for (c = 0; c + 4u <= ch; c += 4u) {
                pixel_channels(&p, layer, input, &win, c, 4u, out);
            }
            for (; c < ch; ++c) {
                pixel_channels(&p, layer, input, &win, c, 1u, out);
            }
        }
    }
    return CQTF_OK;
}
