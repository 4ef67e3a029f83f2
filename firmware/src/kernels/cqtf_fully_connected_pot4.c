/* cqtf_fully_connected_pot4.c - fully connected layer with packed 4-bit power-of-two weights
 * (profile pot4): shifts instead of multiplies, accumulated as cqtf_fully_connected_fx does.
 * Twin: host/reference_fixed.py fully_connected on the decoded weights (features in NHWC order). */
#include "cqtf_kernels.h"
#include "cqtf_pot4.h"

cqtf_status_t cqtf_fully_connected_pot4(const cqtf_layer_t *layer, const int8_t *input,
                                        int8_t *output)
{
    const uint32_t features = cqtf_shape_size(layer->in);
    const uint8_t *packed = (const uint8_t *)layer->weights;
    uint32_t o, i;

    if (layer->op != CQTF_OP_FULLY_CONNECTED || features == 0 || features > CQTF_MAX_PRODUCTS ||
        layer->out.h != 1 || layer->out.w != 1 || layer->out.c == 0 || !cqtf_pot4_params_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    for (o = 0; o < layer->out.c; ++o) {
        const uint32_t row = o * features;
        cqtf_fx_acc_t a = {0, 0, 0u};

        for (i = 0; i < features; ++i) {
            cqtf_fx_add(&a, &layer->quant, cqtf_pot4_product(input[i], cqtf_pot4_code(packed, row + i)));
        }
        output[o] = cqtf_fx_finish(&a, &layer->quant, layer->bias[o], o);
    }
    return CQTF_OK;
}
