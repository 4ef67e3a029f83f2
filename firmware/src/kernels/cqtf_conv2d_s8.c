/* cqtf_conv2d_s8.c - reference int8 2-D convolution (NHWC, per-channel requantization). */
#include "cqtf_fixed.h"
#include "cqtf_kernels.h"
#include "cqtf_requant.h"

/* Cheap consistency checks; the engine has already checked that the tensors fit its buffers. */
static int conv2d_layer_ok(const cqtf_layer_t *layer)
{
    return cqtf_conv2d_geometry_ok(layer) && cqtf_requant_params_ok(layer);
}

/* acc = bias + sum over the in-range window positions of (in + input_offset) * w. */
static int32_t conv2d_accumulate(const cqtf_layer_t *layer, const int8_t *input, uint32_t y,
                                 uint32_t x, uint32_t oc)
{
    const cqtf_shape_t in = layer->in;
    const int32_t input_offset = layer->quant.input_offset;
    const int32_t y0 = (int32_t)(y * layer->stride_h) - layer->pad_top;
    const int32_t x0 = (int32_t)(x * layer->stride_w) - layer->pad_left;
    int32_t acc = layer->bias[oc];
    uint32_t ky, kx, ic;

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
            for (ic = 0; ic < in.c; ++ic) {
                const int32_t in_val = input[cqtf_offset(in, (uint32_t)iy, (uint32_t)ix, ic)];
                const uint32_t w_idx =
                    ((oc * layer->kernel_h + ky) * layer->kernel_w + kx) * in.c + ic;
                acc += (in_val + input_offset) * (int32_t)layer->weights[w_idx];
            }
        }
    }
    return acc;
}

cqtf_status_t cqtf_conv2d_s8(const cqtf_layer_t *layer, const int8_t *input, int8_t *output)
{
    const cqtf_quant_t *q = &layer->quant;
    uint32_t y, x, oc;

    if (!conv2d_layer_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    for (y = 0; y < layer->out.h; ++y) {
        for (x = 0; x < layer->out.w; ++x) {
            for (oc = 0; oc < layer->out.c; ++oc) {
                const int32_t acc = conv2d_accumulate(layer, input, y, x, oc);
                int32_t out;
                if (cqtf_single_rounding(q)) {
                    output[cqtf_offset(layer->out, y, x, oc)] = cqtf_requant_single_clamp(q, oc, acc);
                    continue;
                }
                out = cqtf_requantize(acc, q->multiplier[oc], q->shift[oc]) + q->output_offset;
                output[cqtf_offset(layer->out, y, x, oc)] =
                    (int8_t)cqtf_clamp(out, q->act_min, q->act_max);
            }
        }
    }
    return CQTF_OK;
}
