/* cqtf_maxpool2d_s8.c - reference int8 2-D max pooling (NHWC); padding positions are skipped. */
#include "cqtf_kernels.h"

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

    if (!cqtf_pool2d_geometry_ok(layer, CQTF_OP_MAXPOOL2D)) {
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
