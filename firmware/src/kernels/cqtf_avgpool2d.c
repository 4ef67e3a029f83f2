/* cqtf_avgpool2d.c - 2-D average pooling (NHWC) for every profile; padding positions are not counted.
 * Host twin: cqtf.reference.avgpool2d. */
#include "cqtf_fixed.h"
#include "cqtf_kernels.h"

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

    if (!cqtf_pool2d_geometry_ok(layer, CQTF_OP_AVGPOOL2D) ||
        (q->arith != 0 && q->arith->out_rounding > CQTF_ROUND_MAX)) {
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
