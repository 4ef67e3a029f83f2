/* engine.c - layer sequencing with two static ping-pong activation buffers. */
#include "engine.h"

#include <string.h>

#include "cqtf_model.h" /* CQTF_MODEL_TENSOR_MAX only: the data is in model_data.c */
#include "kernels/cqtf_kernels.h"

/* Layer i reads buffer (i + 1) % 2 (layer 0 reads the caller's input) and writes buffer i % 2,
 * so two tensors of the largest size are all the activation memory needed. */
static int8_t engine_buf[2][CQTF_MODEL_TENSOR_MAX];

static int same_shape(cqtf_shape_t a, cqtf_shape_t b)
{
    return a.h == b.h && a.w == b.w && a.c == b.c;
}

static cqtf_status_t run_layer(const cqtf_layer_t *layer, const int8_t *in, int8_t *out)
{
    switch (layer->op) {
    case CQTF_OP_CONV2D:
        return cqtf_conv2d_s8(layer, in, out);
    case CQTF_OP_MAXPOOL2D:
        return cqtf_maxpool2d_s8(layer, in, out);
    case CQTF_OP_FULLY_CONNECTED:
        return cqtf_fully_connected_s8(layer, in, out);
    default:
        return CQTF_ERR_BAD_LAYER;
    }
}

cqtf_status_t cqtf_engine_run(const cqtf_model_t *model, const int8_t *input, uint8_t last_layer,
                              int8_t *output, uint16_t *output_size)
{
    const int8_t *in = input;
    uint32_t prev_size = 0;
    cqtf_shape_t prev_out = {0, 0, 0};
    uint32_t n_run, i;

    if (model->num_layers == 0 || model->layers == 0) {
        return CQTF_ERR_BAD_LAYER;
    }
    if (last_layer == CQTF_ENGINE_ALL_LAYERS) {
        n_run = model->num_layers;
    } else if (last_layer < model->num_layers) {
        n_run = (uint32_t)last_layer + 1u;
    } else {
        return CQTF_ERR_BAD_REQUEST;
    }
    if (cqtf_shape_size(model->layers[0].in) != model->input_size) {
        return CQTF_ERR_BAD_LAYER;
    }
    for (i = 0; i < n_run; ++i) {
        const cqtf_layer_t *layer = &model->layers[i];
        cqtf_status_t status;

        /* Each layer consumes exactly what the previous one produced, within the buffers. */
        if ((i > 0 && !same_shape(layer->in, prev_out)) ||
            cqtf_shape_size(layer->out) > CQTF_MODEL_TENSOR_MAX) {
            return CQTF_ERR_BAD_LAYER;
        }
        status = run_layer(layer, in, engine_buf[i % 2u]);
        if (status != CQTF_OK) {
            return status;
        }
        in = engine_buf[i % 2u];
        prev_out = layer->out;
        prev_size = cqtf_shape_size(layer->out);
    }
    memcpy(output, in, prev_size);
    *output_size = (uint16_t)prev_size; /* <= CQTF_MODEL_TENSOR_MAX, a uint16 in the header */
    return CQTF_OK;
}
