/*
 * engine.c - runs the layer table over one static arena laid out by the packer's memory plan
 * (host/pack/plan.py): every tensor and scratch buffer sits at the offset the plan gave it.
 *
 * Ops are dispatched through one table; a new op is a kernel file plus one row below.
 */
#include "engine.h"

#include <string.h>

#include "cqtf_model.h" /* CQTF_MODEL_ARENA_SIZE only: the data is in model_data.c */
#include "kernels/cqtf_kernels.h"

#ifndef CQTF_MODEL_ARENA_SIZE
#error "cqtf_model.h has no memory plan (CQTF_MODEL_ARENA_SIZE): re-run `cqtf pack` with this firmware"
#endif

/* Words, so that every planned offset (a multiple of 4) is word-aligned for the optimized kernels. */
static uint32_t engine_arena[(CQTF_MODEL_ARENA_SIZE + 3u) / 4u + 1u];

/* Kernel families and ops this build links: the compiled-in model's (the packer's CQTF_MODEL_OPS and
 * arithmetic; branches for the others are constant-false, so the linker's --gc-sections drops their
 * kernels), or all of them for a firmware that runs models of any kind (CQTF_ENGINE_ALL_KERNELS, the
 * golden-vector tests) or a header from before CQTF_MODEL_OPS. */
#ifndef CQTF_MODEL_ARITH_WEIGHT_KIND
#define CQTF_MODEL_ARITH_WEIGHT_KIND 0u
#endif
#if defined(CQTF_ENGINE_ALL_KERNELS) || !defined(CQTF_MODEL_OPS)
#define ENGINE_OPS 0xffffffffu
#define ENGINE_FIXED 1
#define ENGINE_INT8 1
#define ENGINE_POT4 1
#else
#define ENGINE_OPS CQTF_MODEL_OPS
#define ENGINE_FIXED (CQTF_MODEL_ARITH_REQUANT == CQTF_REQUANT_SHIFT)
#define ENGINE_INT8 (!ENGINE_FIXED)
#define ENGINE_POT4 (CQTF_MODEL_ARITH_WEIGHT_KIND == CQTF_WEIGHTS_POT4)
#endif
#define ENGINE_USES(op) (((ENGINE_OPS >> (op)) & 1u) != 0u)

typedef cqtf_status_t (*engine_op_fn)(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer,
                                      const int8_t *const *inputs, int8_t *output);

/* 1 when the layer runs the fixed-point kernels (profiles with CQTF_REQUANT_SHIFT). */
static int fixed_point(const cqtf_layer_t *layer)
{
    return ENGINE_FIXED && layer->quant.arith != 0 && layer->quant.arith->requant == CQTF_REQUANT_SHIFT;
}

/* 1 when the layer's weights are packed 4-bit power-of-two codes (profile pot4): shift kernels. */
static int pot4_weights(const cqtf_layer_t *layer)
{
    return ENGINE_POT4 && layer->quant.arith != 0 && layer->quant.arith->weight_kind == CQTF_WEIGHTS_POT4;
}

/* 1 when an int8 layer reaches a build without the int8 kernels (a fixed-point model's firmware). */
static int int8_missing(const cqtf_layer_t *layer)
{
    return !ENGINE_INT8 && !fixed_point(layer);
}

static cqtf_status_t op_conv2d(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer,
                               const int8_t *const *inputs, int8_t *output)
{
    if (pot4_weights(layer)) {
        (void)ctx;
        return cqtf_conv2d_pot4(layer, inputs[0], output);
    }
    if (fixed_point(layer)) {
#if CQTF_KERNELS_OPTIMIZED
        return cqtf_conv2d_fx_opt(ctx, layer, inputs[0], output);
#else
        (void)ctx;
        return cqtf_conv2d_fx(layer, inputs[0], output);
#endif
    }
    if (int8_missing(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
#if CQTF_KERNELS_OPTIMIZED
    return cqtf_conv2d_s8_opt(ctx, layer, inputs[0], output);
#else
    (void)ctx;
    return cqtf_conv2d_s8(layer, inputs[0], output);
#endif
}

static cqtf_status_t op_maxpool2d(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer,
                                  const int8_t *const *inputs, int8_t *output)
{
    (void)ctx;
    return cqtf_maxpool2d_s8(layer, inputs[0], output);
}

static cqtf_status_t op_fully_connected(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer,
                                        const int8_t *const *inputs, int8_t *output)
{
    (void)ctx;
    if (pot4_weights(layer)) {
        return cqtf_fully_connected_pot4(layer, inputs[0], output);
    }
    if (fixed_point(layer)) {
#if CQTF_KERNELS_OPTIMIZED
        return cqtf_fully_connected_fx_opt(layer, inputs[0], output);
#else
        return cqtf_fully_connected_fx(layer, inputs[0], output);
#endif
    }
    if (int8_missing(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
#if CQTF_KERNELS_OPTIMIZED
    return cqtf_fully_connected_s8_opt(layer, inputs[0], output);
#else
    return cqtf_fully_connected_s8(layer, inputs[0], output);
#endif
}

static cqtf_status_t op_depthwise_conv2d(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer,
                                         const int8_t *const *inputs, int8_t *output)
{
    (void)ctx;
    if (int8_missing(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
#if CQTF_KERNELS_OPTIMIZED
    if (fixed_point(layer)) {
        return cqtf_depthwise_conv2d_fx_opt(layer, inputs[0], output);
    }
    return cqtf_depthwise_conv2d_s8_opt(layer, inputs[0], output);
#else
    if (fixed_point(layer)) {
        return cqtf_depthwise_conv2d_fx(layer, inputs[0], output);
    }
    return cqtf_depthwise_conv2d_s8(layer, inputs[0], output);
#endif
}

static cqtf_status_t op_avgpool2d(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer,
                                  const int8_t *const *inputs, int8_t *output)
{
    (void)ctx;
    return cqtf_avgpool2d(layer, inputs[0], output);
}

static cqtf_status_t op_add(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer, const int8_t *const *inputs,
                            int8_t *output)
{
    (void)ctx;
    return cqtf_add(layer, inputs[0], inputs[1], output);
}

static const struct {
    uint8_t op;
    uint8_t num_inputs;
    engine_op_fn run;
} engine_ops[] = {
    {CQTF_OP_CONV2D, 1u, ENGINE_USES(CQTF_OP_CONV2D) ? op_conv2d : 0},
    {CQTF_OP_MAXPOOL2D, 1u, ENGINE_USES(CQTF_OP_MAXPOOL2D) ? op_maxpool2d : 0},
    {CQTF_OP_FULLY_CONNECTED, 1u, ENGINE_USES(CQTF_OP_FULLY_CONNECTED) ? op_fully_connected : 0},
    {CQTF_OP_DEPTHWISE_CONV2D, 1u, ENGINE_USES(CQTF_OP_DEPTHWISE_CONV2D) ? op_depthwise_conv2d : 0},
    {CQTF_OP_AVGPOOL2D, 1u, ENGINE_USES(CQTF_OP_AVGPOOL2D) ? op_avgpool2d : 0},
    {CQTF_OP_ADD, 2u, ENGINE_USES(CQTF_OP_ADD) ? op_add : 0},
};

/* 1 when [at, at + size) lies inside the model's arena (which lies inside engine_arena). */
static int in_arena(const cqtf_model_t *model, uint32_t at, uint32_t size)
{
    return at <= model->arena_size && size <= model->arena_size - at;
}

static int overlaps(uint32_t a, uint32_t a_size, uint32_t b, uint32_t b_size)
{
    return a < b + b_size && b < a + a_size; /* both ranges are inside the arena: no overflow */
}

/* 1 when this firmware implements the arithmetic (NULL: int8 TFLM double rounding). The header's
 * compile-time checks make a mismatch a build error; this catches a layer table built elsewhere. */
static int arith_supported(const cqtf_arith_t *ar)
{
    return ar == 0 || (ar->requant <= CQTF_REQUANT_KIND_MAX && ar->act_bits == CQTF_ARITH_ACT_BITS &&
                       ar->acc_bits >= CQTF_ARITH_ACC_BITS_MIN && ar->acc_bits <= CQTF_ARITH_ACC_BITS_MAX &&
                       ar->block_rounding <= CQTF_ROUND_MAX && ar->out_rounding <= CQTF_ROUND_MAX &&
                       ar->weight_kind <= CQTF_WEIGHT_KIND_MAX);
}

/* Resolves the layer's planned buffers and runs its kernel. */
static cqtf_status_t run_layer(const cqtf_model_t *model, const cqtf_layer_t *layer,
                               const int8_t *input, int8_t **out)
{
    int8_t *const arena = (int8_t *)engine_arena;
    const int8_t *inputs[CQTF_MAX_LAYER_INPUTS];
    cqtf_ctx_t ctx;
    uint32_t k, j;

    for (k = 0; k < sizeof(engine_ops) / sizeof(engine_ops[0]); ++k) {
        if (engine_ops[k].op == layer->op) {
            break;
        }
    }
    if (k == sizeof(engine_ops) / sizeof(engine_ops[0]) || engine_ops[k].run == 0 ||
        layer->quant.arith != model->arith ||
        !arith_supported(layer->quant.arith)) {
        return CQTF_ERR_BAD_LAYER; /* every layer must run the arithmetic the model was packed for */
    }
    for (j = 0; j < CQTF_MAX_LAYER_INPUTS; ++j) {
        const uint32_t at = layer->input_at[j];
        if (j >= engine_ops[k].num_inputs) {
            inputs[j] = 0;
        } else if (at == CQTF_ARENA_EXTERNAL) {
            inputs[j] = input;
        } else if (in_arena(model, at, cqtf_shape_size(layer->in)) && at % 4u == 0u) {
            inputs[j] = arena + at;
        } else {
            return CQTF_ERR_BAD_LAYER;
        }
    }
    if (!in_arena(model, layer->output_at, cqtf_shape_size(layer->out)) ||
        !in_arena(model, layer->scratch_at, layer->scratch_size) || layer->output_at % 4u != 0u ||
        layer->scratch_at % 4u != 0u) {
        return CQTF_ERR_BAD_LAYER;
    }
    for (j = 0; j < engine_ops[k].num_inputs; ++j) { /* kernels never write over what they read */
        if (inputs[j] != input && overlaps(layer->input_at[j], cqtf_shape_size(layer->in),
                                           layer->output_at, cqtf_shape_size(layer->out))) {
            return CQTF_ERR_BAD_LAYER;
        }
    }
    ctx.scratch = arena + layer->scratch_at;
    ctx.scratch_size = layer->scratch_size;
    *out = arena + layer->output_at;
    return engine_ops[k].run(&ctx, layer, inputs, *out);
}

cqtf_status_t cqtf_engine_run_in_place(const cqtf_model_t *model, const int8_t *input, uint8_t last_layer,
                                       const int8_t **output, uint16_t *output_size)
{
    int8_t *out = 0;
    uint32_t n_run, i;

    if (model->num_layers == 0 || model->layers == 0 || model->arena_size > CQTF_MODEL_ARENA_SIZE) {
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
        const cqtf_status_t status = run_layer(model, &model->layers[i], input, &out);
        if (status != CQTF_OK) {
            return status;
        }
    }
    i = cqtf_shape_size(model->layers[n_run - 1u].out);
    if (i > CQTF_MODEL_TENSOR_MAX) {
        return CQTF_ERR_BAD_LAYER;
    }
    *output = out;
    *output_size = (uint16_t)i; /* <= CQTF_MODEL_TENSOR_MAX, a uint16 in the header */
    return CQTF_OK;
}

cqtf_status_t cqtf_engine_run(const cqtf_model_t *model, const int8_t *input, uint8_t last_layer,
                              int8_t *output, uint16_t *output_size)
{
    const int8_t *result = 0;
    const cqtf_status_t status = cqtf_engine_run_in_place(model, input, last_layer, &result, output_size);

    if (status == CQTF_OK) {
        memcpy(output, result, *output_size);
    }
    return status;
}
