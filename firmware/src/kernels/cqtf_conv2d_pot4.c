/* cqtf_conv2d_pot4.c - 2-D convolution (NHWC) with packed 4-bit power-of-two weights (profile
 * pot4): every product a shift, accumulated exactly as cqtf_conv2d_fx does (blocks, saturating
 * accumulator, rounding shift; cqtf_types.h).
 * Twin: host/reference_fixed.py conv2d on the decoded weights (order ky, kx, ic; padding = zeros). */
#include "cqtf_kernels.h"
#include "cqtf_pot4.h"

static int8_t conv2d_pot4_output(const cqtf_layer_t *layer, const int8_t *input, uint32_t y,
                                 uint32_t x, uint32_t oc)
{
    const cqtf_shape_t in = layer->in;
    const int32_t y0 = (int32_t)(y * layer->stride_h) - layer->pad_top;
    const int32_t x0 = (int32_t)(x * layer->stride_w) - layer->pad_left;
    const uint8_t *packed = (const uint8_t *)layer->weights;
    uint32_t w = oc * layer->kernel_h * layer->kernel_w * in.c; /* element index of the weight */
    cqtf_fx_acc_t a = {0, 0, 0u};
    uint32_t ky, kx, ic;

    for (ky = 0; ky < layer->kernel_h; ++ky) {
        const int32_t iy = y0 + (int32_t)ky;
        for (kx = 0; kx < layer->kernel_w; ++kx) {
            const int32_t ix = x0 + (int32_t)kx;
            const int inside = iy >= 0 && iy < (int32_t)in.h && ix >= 0 && ix < (int32_t)in.w;
            for (ic = 0; ic < in.c; ++ic, ++w) {
                const int32_t v =
                    inside ? input[cqtf_offset(in, (uint32_t)iy, (uint32_t)ix, ic)] : 0;
                cqtf_fx_add(&a, &layer->quant, cqtf_pot4_product(v, cqtf_pot4_code(packed, w)));
            }
        }
    }
    return cqtf_fx_finish(&a, &layer->quant, layer->bias[oc], oc);
}

cqtf_status_t cqtf_conv2d_pot4(const cqtf_layer_t *layer, const int8_t *input, int8_t *output)
{
    uint32_t y, x, oc;

    if (!cqtf_conv2d_geometry_ok(layer) || !cqtf_pot4_params_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    for (y = 0; y < layer->out.h; ++y) {
        for (x = 0; x < layer->out.w; ++x) {
            for (oc = 0; oc < layer->out.c; ++oc) {
                output[cqtf_offset(layer->out, y, x, oc)] =
                    conv2d_pot4_output(layer, input, y, x, oc);
            }
        }
    }
    return CQTF_OK;
}
