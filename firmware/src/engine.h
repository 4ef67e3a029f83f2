/*
 * engine.h - runs a packed model (cqtf_types.h) layer after layer.
 */
#ifndef CQTF_ENGINE_H
#define CQTF_ENGINE_H

#include <stdint.h>

#include "cqtf_types.h"

/* Runs layers 0..last_layer of `model` (last_layer = CQTF_ENGINE_ALL_LAYERS: every layer) on
 * `input` (model->input_size bytes) and copies the last computed tensor to `output`, which must
 * hold CQTF_MODEL_TENSOR_MAX bytes; *output_size gets its size in bytes.
 * Returns CQTF_ERR_BAD_REQUEST for last_layer >= num_layers (other than 0xFF), and
 * CQTF_ERR_BAD_LAYER when the layer table is inconsistent (a planned buffer outside the arena or
 * misaligned, an unknown op, or a kernel's own check). Not reentrant: the intermediate tensors
 * live in one static arena of CQTF_MODEL_ARENA_SIZE bytes, laid out by the packer's memory plan. */
cqtf_status_t cqtf_engine_run(const cqtf_model_t *model, const int8_t *input, uint8_t last_layer,
                              int8_t *output, uint16_t *output_size);

/* The same without the copy: *output points at the tensor where the last layer left it in the
 * arena, valid until the next run (the server sends it from there: no tensor-sized buffer). */
cqtf_status_t cqtf_engine_run_in_place(const cqtf_model_t *model, const int8_t *input, uint8_t last_layer,
                                       const int8_t **output, uint16_t *output_size);

#define CQTF_ENGINE_ALL_LAYERS 0xFFu

#endif /* CQTF_ENGINE_H */
