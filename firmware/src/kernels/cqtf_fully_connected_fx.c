/* cqtf_fully_connected_fx.c - fixed-point fully connected layer of the REQUANT_SHIFT profiles.
 * Twin: host/reference_fixed.py fully_connected (features in NHWC order). */
#include "cqtf_fixed.h"
#include "cqtf_kernels.h"

static int fully_connected_fx_layer_ok(const cqtf_layer_t *layer)
{
    const uint32_t features = cqtf_shape_size(layer->in);

    if (layer->op != CQTF_OP_FULLY_CONNECTED || features == 0 || features > CQTF_MAX_PRODUCTS) {
        return 0;
    }
    if (layer->out.h != 1 || layer->out.w != 1 || layer->out.c == 0) {
        return 0;
    }
    return cqtf_fx_params_ok(layer);
}

cqtf_status_t cqtf_fully_connected_fx(const cqtf_layer_t *layer, const int8_t *input,
                                      int8_t *output)
{
    const uint32_t features = cqtf_shape_size(layer->in);
    uint32_t o, i;

    if (!fully_connected_fx_layer_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    for (o = 0; o < layer->out.c; ++o) {
        const int8_t *w = &layer->weights[o * features];
        cqtf_fx_acc_t a = {0, 0, 0u};

        for (i = 0; i < features; ++i) {
            cqtf_fx_add(&a, &layer->quant, (int32_t)input[i] * (int32_t)w[i]);
        }
        output[o] = cqtf_fx_finish(&a, &layer->quant, layer->bias[o], o);
    }
    return CQTF_OK;
}
