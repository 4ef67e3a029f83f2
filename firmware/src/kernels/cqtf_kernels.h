/*
 * cqtf_kernels.h - int8 reference kernels (slow and obvious, named indices).
 *
 * Every kernel executes one entry of the packed layer table (cqtf_types.h) with the same shape:
 *   cqtf_status_t cqtf_<op>_s8(const cqtf_layer_t *layer, const int8_t *input, int8_t *output);
 *   layer   the layer description; its `op` must match the kernel.
 *   input   int8 tensor of layer->in, NHWC, in.h * in.w * in.c bytes.
 *   output  int8 tensor of layer->out, NHWC, out.h * out.w * out.c bytes; must not overlap input.
 * Returns CQTF_OK, or CQTF_ERR_BAD_LAYER (nothing written) when the layer is inconsistent.
 * No allocation, no scratch: the caller owns both tensors.
 *
 * Bit-exact to TFLite Micro's reference int8 kernels (per-channel quantization, double rounding);
 * with quant.arith->requant == CQTF_REQUANT_SINGLE the s8 kernels round once instead.
 * The fixed-point profiles (CQTF_REQUANT_SHIFT) run the cqtf_*_fx kernels; max pooling is shared.
 */
#ifndef CQTF_KERNELS_H
#define CQTF_KERNELS_H

#include <stdint.h>

#include "cqtf_types.h"

/* Optimized kernels (cqtf_*_opt) are used when the core has the DSP extension (Cortex-M4/M7/M33);
 * build with -DCQTF_KERNELS_OPTIMIZED=0 for the portable reference path everywhere, or =1 to use the
 * optimized algorithms on any compiler (the SIMD instructions are then emulated in C: cqtf_simd.h).
 * Both paths give identical outputs. */
#ifndef CQTF_KERNELS_OPTIMIZED
#if defined(__ARM_FEATURE_DSP) && __ARM_FEATURE_DSP
#define CQTF_KERNELS_OPTIMIZED 1
#else
#define CQTF_KERNELS_OPTIMIZED 0
#endif
#endif

/* What the engine hands a kernel besides its tensors: scratch memory from the memory plan. */
typedef struct {
    void *scratch;          /* word-aligned; alive during this layer only */
    uint32_t scratch_size;  /* bytes */
} cqtf_ctx_t;

/* Products per output above which the int32 accumulator could overflow: every product
 * (in + input_offset) * w is at most 255 * 128 = 32640 < 2^15 in magnitude, so fewer than 2^16 of
 * them sum to less than 2^31 (the bias adds to that: the packer keeps it small). */
#define CQTF_MAX_PRODUCTS 65535u

/* Bytes of a tensor of this shape (32-bit: three uint16 extents may exceed 16 bits). */
static inline uint32_t cqtf_shape_size(cqtf_shape_t s)
{
    return (uint32_t)s.h * (uint32_t)s.w * (uint32_t)s.c;
}

/* Shared geometry check of a conv2d layer (every conv kernel's first check): the op, non-zero
 * kernel and strides, non-empty tensors, and at most CQTF_MAX_PRODUCTS products per output, so
 * neither the int32 accumulator nor an exact fixed-point block sum can overflow. 1 when usable. */
static inline int cqtf_conv2d_geometry_ok(const cqtf_layer_t *layer)
{
    if (layer->op != CQTF_OP_CONV2D || layer->kernel_h == 0 || layer->kernel_w == 0 ||
        layer->stride_h == 0 || layer->stride_w == 0) {
        return 0;
    }
    if (cqtf_shape_size(layer->in) == 0 || cqtf_shape_size(layer->out) == 0) {
        return 0;
    }
    return (uint32_t)layer->kernel_h * layer->kernel_w * layer->in.c <= CQTF_MAX_PRODUCTS;
}

/* Clamps v to [lo, hi]. */
static inline int32_t cqtf_clamp(int32_t v, int32_t lo, int32_t hi)
{
    return (v < lo) ? lo : ((v > hi) ? hi : v);
}

/* Index of element (y, x, c) in an NHWC tensor of shape s (batch 1). */
static inline uint32_t cqtf_offset(cqtf_shape_t s, uint32_t y, uint32_t x, uint32_t c)
{
    return ((y * s.w) + x) * s.c + c;
}

/* Shared sanity check of a requantizing layer (conv, fully connected): parameters present,
 * every shift in [-31, 30] (cqtf_requantize is undefined outside), input_offset in range, and
 * a non-empty int8 clamp range.
 * Returns 1 when usable. O(out.c): cheap next to the MACs. */
static inline int cqtf_requant_params_ok(const cqtf_layer_t *layer)
{
    const cqtf_quant_t *q = &layer->quant;
    uint32_t oc;

    if (layer->weights == 0 || layer->bias == 0 || q->multiplier == 0 || q->shift == 0) {
        return 0;
    }
    if (q->act_min < -128 || q->act_max > 127 || q->act_min > q->act_max) {
        return 0;
    }
    if (q->input_offset < -127 || q->input_offset > 128) {
        return 0; /* CQTF_MAX_PRODUCTS relies on |in + input_offset| <= 255 */
    }
    for (oc = 0; oc < layer->out.c; ++oc) {
        if (q->shift[oc] < -31 || q->shift[oc] > 30) {
            return 0;
        }
    }
    return 1;
}

/* CONV2D: weights [out.c][kernel_h][kernel_w][in.c], bias [out.c], per-channel requantization.
 * Out-of-range (padding) positions are skipped. */
cqtf_status_t cqtf_conv2d_s8(const cqtf_layer_t *layer, const int8_t *input, int8_t *output);

/* Shared check of a pooling layer (MAXPOOL2D, AVGPOOL2D): the op, non-zero kernel and strides,
 * non-empty tensors, out.c == in.c, a valid int8 clamp, and every window overlapping the input, so
 * that its max or mean is of real input values (as in PyTorch, whose pool padding is at most half the
 * kernel). 1 when usable. */
static inline int cqtf_pool2d_geometry_ok(const cqtf_layer_t *layer, uint8_t op)
{
    const cqtf_shape_t in = layer->in;
    const cqtf_shape_t out = layer->out;
    const cqtf_quant_t *q = &layer->quant;

    if (layer->op != op || layer->kernel_h == 0 || layer->kernel_w == 0 || layer->stride_h == 0 ||
        layer->stride_w == 0) {
        return 0;
    }
    if (cqtf_shape_size(in) == 0 || cqtf_shape_size(out) == 0 || out.c != in.c) {
        return 0;
    }
    if (layer->pad_top >= layer->kernel_h || layer->pad_left >= layer->kernel_w) {
        return 0; /* the first window would lie in the padding */
    }
    if ((uint32_t)(out.h - 1u) * layer->stride_h >= (uint32_t)in.h + layer->pad_top ||
        (uint32_t)(out.w - 1u) * layer->stride_w >= (uint32_t)in.w + layer->pad_left) {
        return 0; /* the last window would start past the input */
    }
    return q->act_min >= -128 && q->act_max <= 127 && q->act_min <= q->act_max;
}

/* MAXPOOL2D: max over the in-range positions of each window, clamped to act_min/act_max;
 * out.c == in.c, and every window must overlap the input. */
cqtf_status_t cqtf_maxpool2d_s8(const cqtf_layer_t *layer, const int8_t *input, int8_t *output);

/* FULLY_CONNECTED: input flattened (NHWC order) to in.h * in.w * in.c features;
 * weights [out.c][in features], bias [out.c]; out = {1, 1, out.c}. */
cqtf_status_t cqtf_fully_connected_s8(const cqtf_layer_t *layer, const int8_t *input,
                                      int8_t *output);

/* Fixed-point CONV2D / FULLY_CONNECTED (quant.arith->requant == CQTF_REQUANT_SHIFT): same tensor
 * contract as the s8 kernels; blocks, accumulator and rounding as in cqtf_types.h. */
cqtf_status_t cqtf_conv2d_fx(const cqtf_layer_t *layer, const int8_t *input, int8_t *output);
cqtf_status_t cqtf_fully_connected_fx(const cqtf_layer_t *layer, const int8_t *input,
                                      int8_t *output);

/* Optimized CONV2D (same contract and outputs as cqtf_conv2d_s8): im2col of two output pixels
 * at a time into ctx->scratch as int16 with the input offset added, then 2 pixels x 2 channels per
 * pass with dual 16-bit multiply-accumulates. Needs ctx->scratch_size >=
 * cqtf_conv2d_s8_scratch_size(layer), else returns CQTF_ERR_BAD_LAYER. */
cqtf_status_t cqtf_conv2d_s8_opt(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer,
                                 const int8_t *input, int8_t *output);

/* Two int16 im2col columns, each padded to a multiple of 4 values (host/pack/plan.py mirrors it). */
static inline uint32_t cqtf_conv2d_s8_scratch_size(const cqtf_layer_t *layer)
{
    const uint32_t k = (uint32_t)layer->kernel_h * layer->kernel_w * layer->in.c;
    return 2u * 2u * ((k + 3u) & ~3u);
}

/* Optimized FULLY_CONNECTED (same contract and outputs as cqtf_fully_connected_s8), no scratch. */
cqtf_status_t cqtf_fully_connected_s8_opt(const cqtf_layer_t *layer, const int8_t *input,
                                          int8_t *output);

/* Optimized fixed-point CONV2D / FULLY_CONNECTED (same contract and outputs as cqtf_conv2d_fx and
 * cqtf_fully_connected_fx): the int8 kernels' im2col and dual 16-bit MACs, each block of products
 * summed exactly and flushed as the reference does. The conv needs the int8 conv's scratch
 * (ctx->scratch_size >= cqtf_conv2d_s8_scratch_size(layer)), the fully connected layer none. */
cqtf_status_t cqtf_conv2d_fx_opt(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer,
                                 const int8_t *input, int8_t *output);
cqtf_status_t cqtf_fully_connected_fx_opt(const cqtf_layer_t *layer, const int8_t *input,
                                          int8_t *output);

/* Power-of-two CONV2D / FULLY_CONNECTED (quant.arith->weight_kind == CQTF_WEIGHTS_POT4, requant
 * CQTF_REQUANT_SHIFT): weights are packed 4-bit codes (cqtf_types.h), each product a shift and a
 * negation; accumulation, bias and requantization exactly as the cqtf_*_fx kernels. */
cqtf_status_t cqtf_conv2d_pot4(const cqtf_layer_t *layer, const int8_t *input, int8_t *output);
cqtf_status_t cqtf_fully_connected_pot4(const cqtf_layer_t *layer, const int8_t *input,
                                        int8_t *output);

/* DEPTHWISE_CONV2D (channel multiplier 1): out.c == in.c, weights [1][kernel_h][kernel_w][c],
 * bias [c], per-channel requantization; int8 skips padding positions, the fixed-point kernel counts
 * them as zero products in the order ky, kx of each channel. Same tensor contract as the s8 kernels. */
cqtf_status_t cqtf_depthwise_conv2d_s8(const cqtf_layer_t *layer, const int8_t *input, int8_t *output);
cqtf_status_t cqtf_depthwise_conv2d_fx(const cqtf_layer_t *layer, const int8_t *input, int8_t *output);

/* Optimized DEPTHWISE_CONV2D (same contract and outputs as the two above), no scratch: the window's
 * in-range part once per output pixel, 4 channels per kernel position with 16-bit MACs. */
cqtf_status_t cqtf_depthwise_conv2d_s8_opt(const cqtf_layer_t *layer, const int8_t *input,
                                           int8_t *output);
cqtf_status_t cqtf_depthwise_conv2d_fx_opt(const cqtf_layer_t *layer, const int8_t *input,
                                           int8_t *output);

/* AVGPOOL2D: mean of the in-range positions of each window (padding is not counted), rounded as
 * cqtf_types.h says, clamped to act_min/act_max; out.c == in.c, every window overlaps the input.
 * Portable, shared by every profile. Host twin: cqtf.reference.avgpool2d. */
cqtf_status_t cqtf_avgpool2d(const cqtf_layer_t *layer, const int8_t *input, int8_t *output);

/* ADD: elementwise sum of two tensors of shape layer->in (int8 affine or fixed point, cqtf_types.h).
 * output may not overlap either input. Host twin: cqtf.reference.add. */
cqtf_status_t cqtf_add(const cqtf_layer_t *layer, const int8_t *input_a, const int8_t *input_b,
                       int8_t *output);

/* Shared geometry check of a depthwise layer: op, non-zero kernel and strides, non-empty tensors,
 * out.c == in.c and at most CQTF_MAX_PRODUCTS products per output. 1 when usable. */
static inline int cqtf_depthwise_geometry_ok(const cqtf_layer_t *layer)
{
    if (layer->op != CQTF_OP_DEPTHWISE_CONV2D || layer->kernel_h == 0 || layer->kernel_w == 0 ||
        layer->stride_h == 0 || layer->stride_w == 0) {
        return 0;
    }
    if (cqtf_shape_size(layer->in) == 0 || cqtf_shape_size(layer->out) == 0 || layer->in.c != layer->out.c) {
        return 0;
    }
    return (uint32_t)layer->kernel_h * layer->kernel_w <= CQTF_MAX_PRODUCTS;
}

#endif /* CQTF_KERNELS_H */
