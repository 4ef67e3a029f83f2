/*
 * cqtf_depthwise_conv2d_s8_opt.c - int8 depthwise 2-D convolution (channel multiplier 1) for cores
 * with the DSP extension. Same contract and, bit for bit, the same outputs as
 * cqtf_depthwise_conv2d_s8.c: each channel's sum over the in-range window positions is exact in any
 * order, and the requantization is cqtf_requantize_opt (equal to cqtf_requantize).
 * Per output pixel: the window's in-range rows and columns once, then 4 channels per kernel position
 * (cqtf_depthwise_opt.h); the in.c % 4 last channels one by one.
 */
#include "cqtf_depthwise_opt.h"
#include "cqtf_fixed.h"
#include "cqtf_kernels.h"
#include "cqtf_requant_opt.h"

/* Channels [c, c + 4) of one output pixel: acc += the in-range window's products. Indices walk
 * rows and columns (no pointer is formed past the tensors); the sums stay in registers. */
static inline void window_4(const cqtf_layer_t *layer, const int8_t *input, const cqtf_dw_window_t *win,
                            uint32_t c, int32_t acc[4])
{
    const uint32_t ch = layer->in.c, cols = (uint32_t)(win->kx1 - win->kx0);
    const uint32_t in_row = (uint32_t)layer->in.w * ch, w_row = (uint32_t)layer->kernel_w * ch;
    const uint32_t offset2 = cqtf_dup_s16(layer->quant.input_offset);
    uint32_t in_at, w_at, k;
    int32_t s[4], ky;

    if (win->ky1 <= win->ky0 || win->kx1 <= win->kx0) {
        return; /* the window lies in the padding */
    }
    s[0] = acc[0];
    s[1] = acc[1];
    s[2] = acc[2];
    s[3] = acc[3];
    in_at = ((uint32_t)(win->iy0 + win->ky0) * layer->in.w + (uint32_t)(win->ix0 + win->kx0)) * ch + c;
    w_at = ((uint32_t)win->ky0 * layer->kernel_w + (uint32_t)win->kx0) * ch + c;
    for (ky = win->ky0; ky < win->ky1; ++ky, in_at += in_row, w_at += w_row) {
        for (k = 0; k < cols; ++k) {
            cqtf_dw_mac4(&input[in_at + k * ch], &layer->weights[w_at + k * ch], offset2, s);
        }
    }
    acc[0] = s[0];
    acc[1] = s[1];
    acc[2] = s[2];
    acc[3] = s[3];
}

/* One channel c of one output pixel, the same sum one product at a time. */
static int32_t window_1(const cqtf_layer_t *layer, const int8_t *input, const cqtf_dw_window_t *win,
                        uint32_t c)
{
    const uint32_t ch = layer->in.c;
    int32_t acc = layer->bias[c], ky, kx;

    for (ky = win->ky0; ky < win->ky1; ++ky) {
        const int8_t *in = &input[((uint32_t)(win->iy0 + ky) * layer->in.w + (uint32_t)(win->ix0 + win->kx0)) * ch + c];
        const int8_t *w = &layer->weights[((uint32_t)ky * layer->kernel_w + (uint32_t)win->kx0) * ch + c];
        for (kx = win->kx0; kx < win->kx1; ++kx, in += ch, w += ch) {
            acc += ((int32_t)*in + layer->quant.input_offset) * (int32_t)*w;
        }
    }
    return acc;
}

cqtf_status_t cqtf_depthwise_conv2d_s8_opt(const cqtf_layer_t *layer, const int8_t *input,
                                           int8_t *output)
{
    const cqtf_quant_t *q = &layer->quant;
    const uint32_t ch = layer->in.c;
    uint32_t y, x, c, i;

    if (!cqtf_depthwise_geometry_ok(layer) || !cqtf_requant_params_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    for (y = 0; y < layer->out.h; ++y) {
        for (x = 0; x < layer->out.w; ++x) {
            const cqtf_dw_window_t win = cqtf_dw_window(layer, y, x);
            int8_t *const out = &output[cqtf_offset(layer->out, y, x, 0)];

            for (c = 0; c + 4u <= ch; c += 4u) {
                int32_t acc[4];
                for (i = 0; i < 4u; ++i) {
                    acc[i] = layer->bias[c + i];
                }
                window_4(layer, input, &win, c, acc);
                for (i = 0; i < 4u; ++i) {
                    out[c + i] = cqtf_requant_clamp_opt(q, c + i, acc[i]);
                }
            }
            for (; c < ch; ++c) {
                out[c] = cqtf_requant_clamp_opt(q, c, window_1(layer, input, &win, c));
            }
        }
    }
    return CQTF_OK;
}
