/* cqtf_fully_connected_s8.c - reference int8 fully connected layer, per-channel requantization. */
#include "cqtf_fixed.h"
#include "cqtf_kernels.h"
#include "cqtf_requant.h"

static int fully_connected_layer_ok(const cqtf_layer_t *layer)
{
    const uint32_t features = cqtf_shape_size(layer->in);

    if (layer->op != CQTF_OP_FULLY_CONNECTED || features == 0 || features > CQTF_MAX_PRODUCTS) {
        return 0;
    }
    if (layer->out.h != 1 || layer->out.w != 1 || layer->out.c == 0) {
        return 0; /* the output is a flat vector {1, 1, N} */
    }
    return cqtf_requant_params_ok(layer);
}

cqtf_status_t cqtf_fully_connected_s8(const cqtf_layer_t *layer, const int8_t *input,
                                      int8_t *output)
{
    const cqtf_quant_t *q = &layer->quant;
    const uint32_t features = cqtf_shape_size(layer->in); /* NHWC order is the flattening order */
    uint32_t o, i;

    if (!fully_connected_layer_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    for (o = 0; o < layer->out.c; ++o) {
        const int8_t *w = &layer->weights[o * features];
        int32_t acc = layer->bias[o];
        int32_t out;

        for (i = 0; i < features; ++i) {
            acc += ((int32_t)input[i] + q->input_offset) * (int32_t)w[i];
        }
        if (cqtf_single_rounding(q)) {
            output[o] = cqtf_requant_single_clamp(q, o, acc);
            continue;
        }
        out = cqtf_requantize(acc, q->multiplier[o], q->shift[o]) + q->output_offset;
        output[o] = (int8_t)cqtf_clamp(out, q->act_min, q->act_max);
    }
    return CQTF_OK;
}
