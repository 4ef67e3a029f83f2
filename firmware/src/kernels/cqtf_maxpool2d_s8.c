/* cqtf_maxpool2d_s8.c - reference int8 2-D max pooling (NHWC); padding positions are skipped. */
#include "cqtf_kernels.h"

/* Besides the basics, every window must overlap the input, so that its max is a real input value
 * (as in PyTorch, whose pool padding is at most half the kernel). */
static int maxpool2d_layer_ok(const cqtf_layer_t *layer)
{
    const cqtf_shape_t in = layer->in;
    const cqtf_shape_t out = layer->out;
    const cqtf_quant_t *q = &layer->quant;

    if (layer->op != CQTF_OP_MAXPOOL2D || layer->kernel_h == 0 || layer->kernel_w == 0 ||
        layer->stride_h == 0 || layer->stride_w == 0) {
        return 0;
    }
    if (cqtf_shape_size(in) == 0 || cqtf_shape_size(out) == 0 || out.c != in.c) {
        return 0;
    }
    if (layer->pad_top >= layer->kernel_h || layer->pad_left >= layer->kernel_w) {
        return 0; /* the first window would lie in the padding */
    }
    if ((uint32_t)(out.h - 1u) * layer->stride_h >= (uint32_t)in.h + layer->pad_top ||
        (uint32_t)(out.w - 1u) * layer->stride_w >= (uint32_t)in.w + layer->pad_left) {
        return 0; /* the last window would start past the input */
    }
    return q->act_min >= -128 && q->act_max <= 127 && q->act_min <= q->act_max;
}

/* Max of channel c over the in-range positions of the window of output (y, x). */
static int32_t maxpool2d_window(const cqtf_layer_t *layer, const int8_t *input, uint32_t y,
                                uint32_t x, uint32_t c)
{
    const cqtf_shape_t in = layer->in;
    const int32_t y0 = (int32_t)(y * layer->stride_h) - layer->pad_top;
    const int32_t x0 = (int32_t)(x * layer->stride_w) - layer->pad_left;
    int32_t max = INT8_MIN; /* the window is never empty (checked), so this is always replaced */
    uint32_t ky, kx;

    for (ky = 0; ky < layer->kernel_h; ++ky) {
        const int32_t iy = y0 + (int32_t)ky;
        if (iy < 0 || iy >= (int32_t)in.h) {
            continue;
        }
        for (kx = 0; kx < layer->kernel_w; ++kx) {
            const int32_t ix = x0 + (int32_t)kx;
            if (ix >= 0 && ix < (int32_t)in.w) {
                const int32_t v = input[cqtf_offset(in, (uint32_t)iy, (uint32_t)ix, c)];
                max = (v > max) ? v : max;
            }
        }
    }
    return max;
}

cqtf_status_t cqtf_maxpool2d_s8(const cqtf_layer_t *layer, const int8_t *input, int8_t *output)
{
    const cqtf_quant_t *q = &layer->quant;
    uint32_t y, x, c;

    if (!maxpool2d_layer_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    for (y = 0; y < layer->out.h; ++y) {
        for (x = 0; x < layer->out.w; ++x) {
            for (c = 0; c < layer->out.c; ++c) {
                const int32_t max = maxpool2d_window(layer, input, y, x, c);
                output[cqtf_offset(layer->out, y, x, c)] =
                    (int8_t)cqtf_clamp(max, q->act_min, q->act_max);
            }
        }
    }
    return CQTF_OK;
}
