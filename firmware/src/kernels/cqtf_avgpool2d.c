/* cqtf_avgpool2d.c - 2-D average pooling (NHWC) for every profile; padding positions are not counted.
 * Host twin: cqtf.reference.avgpool2d. */
#include "cqtf_fixed.h"
#include "cqtf_kernels.h"

/* Every window must overlap the input (a mean of nothing is undefined), as for max pooling. */
static int avgpool2d_layer_ok(const cqtf_layer_t *layer)
{
    const cqtf_shape_t in = layer->in;
    const cqtf_shape_t out = layer->out;
    const cqtf_quant_t *q = &layer->quant;

    if (layer->op != CQTF_OP_AVGPOOL2D || layer->kernel_h == 0 || layer->kernel_w == 0 ||
        layer->stride_h == 0 || layer->stride_w == 0) {
        return 0;
    }
    if (cqtf_shape_size(in) == 0 || cqtf_shape_size(out) == 0 || out.c != in.c) {
        return 0;
    }
    if (layer->pad_top >= layer->kernel_h || layer->pad_left >= layer->kernel_w) {
        return 0;
    }
    if ((uint32_t)(out.h - 1u) * layer->stride_h >= (uint32_t)in.h + layer->pad_top ||
        (uint32_t)(out.w - 1u) * layer->stride_w >= (uint32_t)in.w + layer->pad_left) {
        return 0;
    }
    if (q->arith != 0 && q->arith->out_rounding > CQTF_ROUND_MAX) {
        return 0;
    }
    return q->act_min >= -128 && q->act_max <= 127 && q->act_min <= q->act_max;
}

/* TFLM rounds an int8 mean half away from zero; the fixed-point profiles use their output rounding. */
static uint8_t avgpool2d_rounding(const cqtf_quant_t *q)
{
    if (q->arith != 0 && q->arith->requant == CQTF_REQUANT_SHIFT) {
        return q->arith->out_rounding;
    }
    return CQTF_ROUND_HALF_AWAY;
}

cqtf_status_t cqtf_avgpool2d(const cqtf_layer_t *layer, const int8_t *input, int8_t *output)
{
    const cqtf_shape_t in = layer->in;
    const cqtf_quant_t *q = &layer->quant;
    uint8_t rounding;
    uint32_t y, x, c;

    if (!avgpool2d_layer_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    rounding = avgpool2d_rounding(q);
    for (y = 0; y < layer->out.h; ++y) {
        const int32_t y0 = (int32_t)(y * layer->stride_h) - layer->pad_top;
        for (x = 0; x < layer->out.w; ++x) {
            const int32_t x0 = (int32_t)(x * layer->stride_w) - layer->pad_left;
            for (c = 0; c < layer->out.c; ++c) {
                int32_t sum = 0; /* <= 255 * 128 values: fits */
                int32_t count = 0;
                uint32_t ky, kx;
                for (ky = 0; ky < layer->kernel_h; ++ky) {
                    const int32_t iy = y0 + (int32_t)ky;
                    if (iy < 0 || iy >= (int32_t)in.h) {
                        continue;
                    }
                    for (kx = 0; kx < layer->kernel_w; ++kx) {
                        const int32_t ix = x0 + (int32_t)kx;
                        if (ix >= 0 && ix < (int32_t)in.w) {
                            sum += input[cqtf_offset(in, (uint32_t)iy, (uint32_t)ix, c)];
                            ++count;
                        }
                    }
                }
                output[cqtf_offset(layer->out, y, x, c)] =
                    (int8_t)cqtf_clamp(cqtf_round_div(sum, count, rounding), q->act_min, q->act_max);
            }
        }
    }
    return CQTF_OK;
}
