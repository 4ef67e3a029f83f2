/* cqtf_depthwise_conv2d_fx.c - fixed-point depthwise 2-D convolution (NHWC, channel multiplier 1) of
 * the REQUANT_SHIFT profiles: per channel, the kernel_h * kernel_w products in the order ky, kx go
 * through the same block accumulator as the fx conv (padding = zero products, cqtf_types.h).
 * Twin: host/reference_fixed.py depthwise_conv2d. */
#include "cqtf_fixed.h"
#include "cqtf_kernels.h"

static int8_t depthwise_fx_output(const cqtf_layer_t *layer, const int8_t *input, uint32_t y,
                                  uint32_t x, uint32_t c)
{
    const cqtf_shape_t in = layer->in;
    const int32_t y0 = (int32_t)(y * layer->stride_h) - layer->pad_top;
    const int32_t x0 = (int32_t)(x * layer->stride_w) - layer->pad_left;
    cqtf_fx_acc_t a = {0, 0, 0u};
    uint32_t ky, kx;

    for (ky = 0; ky < layer->kernel_h; ++ky) {
        const int32_t iy = y0 + (int32_t)ky;
        for (kx = 0; kx < layer->kernel_w; ++kx) {
            const int32_t ix = x0 + (int32_t)kx;
            const int inside = iy >= 0 && iy < (int32_t)in.h && ix >= 0 && ix < (int32_t)in.w;
            const int32_t v = inside ? input[cqtf_offset(in, (uint32_t)iy, (uint32_t)ix, c)] : 0;
            cqtf_fx_add(&a, &layer->quant, v * (int32_t)layer->weights[(ky * layer->kernel_w + kx) * in.c + c]);
        }
    }
    return cqtf_fx_finish(&a, &layer->quant, layer->bias[c], c);
}

cqtf_status_t cqtf_depthwise_conv2d_fx(const cqtf_layer_t *layer, const int8_t *input, int8_t *output)
{
    uint32_t y, x, c;

    if (!cqtf_depthwise_geometry_ok(layer) || !cqtf_fx_params_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    for (y = 0; y < layer->out.h; ++y) {
        for (x = 0; x < layer->out.w; ++x) {
            for (c = 0; c < layer->out.c; ++c) {
                output[cqtf_offset(layer->out, y, x, c)] = depthwise_fx_output(layer, input, y, x, c);
            }
        }
    }
    return CQTF_OK;
}
