/* cqtf_add.c - elementwise add of two tensors (residual connections), int8 affine (TFLM's ADD) and
 * fixed point. Host twin: cqtf.reference.add (cqtf.fixedpoint.add_int8, add_fixed). */
#include "cqtf_fixed.h"
#include "cqtf_kernels.h"
#include "cqtf_requant.h"

#define ADD_LEFT_SHIFT 20 /* TFLM: (q + offset) * 2^20 leaves room to rescale both inputs exactly */

static int add_layer_ok(const cqtf_layer_t *layer)
{
    const cqtf_quant_t *q = &layer->quant;
    const int fixed = q->arith != 0 && q->arith->requant == CQTF_REQUANT_SHIFT;
    uint32_t k;

    if (layer->op != CQTF_OP_ADD || cqtf_shape_size(layer->in) == 0 || q->shift == 0 ||
        layer->in.h != layer->out.h || layer->in.w != layer->out.w || layer->in.c != layer->out.c) {
        return 0;
    }
    if (q->act_min < -128 || q->act_max > 127 || q->act_min > q->act_max) {
        return 0;
    }
    if (fixed) { /* both inputs shifted left into an int32 sum; the sum's shift in [-31, 31] */
        return q->shift[0] >= 0 && q->shift[0] <= 23 && q->shift[1] >= 0 && q->shift[1] <= 23 &&
               q->shift[2] >= -31 && q->shift[2] <= 31 && q->arith->out_rounding <= CQTF_ROUND_MAX;
    }
    if (q->multiplier == 0 || q->input_offset < -127 || q->input_offset > 128 ||
        q->input_b_offset < -127 || q->input_b_offset > 128) {
        return 0;
    }
    for (k = 0; k < 3u; ++k) { /* every rescale is by a factor below one, as TFLM requires */
        if (q->shift[k] < -31 || q->shift[k] > 0) {
            return 0;
        }
    }
    return 1;
}

/* x * multiplier * 2^(shift - 31): TFLM double rounding, or one rounding (CQTF_REQUANT_SINGLE). */
static int64_t add_rescale(const cqtf_quant_t *q, int32_t x, uint32_t k)
{
    if (cqtf_single_rounding(q)) {
        return cqtf_round_shift((int64_t)x * q->multiplier[k], 31 - q->shift[k], q->arith->out_rounding);
    }
    return cqtf_requantize(x, q->multiplier[k], q->shift[k]);
}

static int8_t add_int8(const cqtf_quant_t *q, int32_t a, int32_t b)
{
    const int32_t sa = (int32_t)add_rescale(q, (a + q->input_offset) * (1 << ADD_LEFT_SHIFT), 0u);
    const int32_t sb = (int32_t)add_rescale(q, (b + q->input_b_offset) * (1 << ADD_LEFT_SHIFT), 1u);
    const int64_t out = add_rescale(q, sa + sb, 2u) + q->output_offset;
    return (int8_t)cqtf_clamp64(out, q->act_min, q->act_max);
}

static int8_t add_fixed(const cqtf_quant_t *q, int32_t a, int32_t b)
{
    const int64_t sum = (int64_t)a * ((int64_t)1 << q->shift[0]) + (int64_t)b * ((int64_t)1 << q->shift[1]);
    return (int8_t)cqtf_clamp64(cqtf_round_shift(sum, -q->shift[2], q->arith->out_rounding), q->act_min,
                                q->act_max);
}

cqtf_status_t cqtf_add(const cqtf_layer_t *layer, const int8_t *input_a, const int8_t *input_b,
                       int8_t *output)
{
    const cqtf_quant_t *q = &layer->quant;
    const uint32_t n = cqtf_shape_size(layer->in);
    uint32_t i;

    if (!add_layer_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    if (q->arith != 0 && q->arith->requant == CQTF_REQUANT_SHIFT) {
        for (i = 0; i < n; ++i) {
            output[i] = add_fixed(q, input_a[i], input_b[i]);
        }
    } else {
        for (i = 0; i < n; ++i) {
            output[i] = add_int8(q, input_a[i], input_b[i]);
        }
    }
    return CQTF_OK;
}
