/* cqtf_depthwise_conv2d_s8.c - reference int8 depthwise 2-D convolution (NHWC, channel multiplier 1,
 * per-channel requantization). Twin: host/reference.py depthwise_conv2d. Bit-exact to TFLite
 * Micro's reference DEPTHWISE_CONV_2D (per-channel int8). */
#include "cqtf_fixed.h"
#include "cqtf_kernels.h"
#include "cqtf_requant.h"

/* acc = bias + sum over the in-range window positions of (in + input_offset) * w. */
static int32_t depthwise_accumulate(const cqtf_layer_t *layer, const int8_t *input, uint32_t y,
                                    uint32_t x, uint32_t c)
{
    const cqtf_shape_t in = layer->in;
    const int32_t input_offset = layer->quant.input_offset;
    const int32_t y0 = (int32_t)(y * layer->stride_h) - layer->pad_top;
    const int32_t x0 = (int32_t)(x * layer->stride_w) - layer->pad_left;
    int32_t acc = layer->bias[c];
    uint32_t ky, kx;

    for (ky = 0; ky < layer->kernel_h; ++ky) {
        const int32_t iy = y0 + (int32_t)ky;
        if (iy < 0 || iy >= (int32_t)in.h) {
            continue; /* padding row: contributes nothing */
        }
        for (kx = 0; kx < layer->kernel_w; ++kx) {
            const int32_t ix = x0 + (int32_t)kx;
            if (ix < 0 || ix >= (int32_t)in.w) {
                continue;
            }
            acc += (input[cqtf_offset(in, (uint32_t)iy, (uint32_t)ix, c)] + input_offset) *
                   (int32_t)layer->weights[(ky * layer->kernel_w + kx) * in.c + c];
        }
    }
    return acc;
}

cqtf_status_t cqtf_depthwise_conv2d_s8(const cqtf_layer_t *layer, const int8_t *input, int8_t *output)
{
    const cqtf_quant_t *q = &layer->quant;
    uint32_t y, x, c;

    if (!cqtf_depthwise_geometry_ok(layer) || !cqtf_requant_params_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    for (y = 0; y < layer->out.h; ++y) {
        for (x = 0; x < layer->out.w; ++x) {
            for (c = 0; c < layer->out.c; ++c) {
                const int32_t acc = depthwise_accumulate(layer, input, y, x, c);
                int32_t out;
                if (cqtf_single_rounding(q)) {
                    output[cqtf_offset(layer->out, y, x, c)] = cqtf_requant_single_clamp(q, c, acc);
                    continue;
                }
                out = cqtf_requantize(acc, q->multiplier[c], q->shift[c]) + q->output_offset;
                output[cqtf_offset(layer->out, y, x, c)] = (int8_t)cqtf_clamp(out, q->act_min, q->act_max);
            }
        }
    }
    return CQTF_OK;
}
