/*
 * cqtf_types.h - the contract between the host packer (host/pack/) and the firmware.
 *
 * The packer writes a header `cqtf_model.h` that fills these structures; the firmware only
 * executes them. Every float-to-integer conversion (scales, multipliers, shifts) happens on the
 * host: the firmware sees integers only.
 *
 * Tensors are 8-bit (int8 affine or signed Q-format fixed point, see cqtf_arith_t), batch 1,
 * laid out NHWC (height, width, channels; channels fastest).
 * A flat vector of N features is the shape {h=1, w=1, c=N}.
 */
#ifndef CQTF_TYPES_H
#define CQTF_TYPES_H

#include <stdint.h>

/* Bumped whenever the meaning of a field below changes; the packer writes the same number. */
#define CQTF_FORMAT_VERSION 2u

typedef enum {
    CQTF_OK = 0,
    CQTF_ERR_BAD_LAYER = 1,   /* unknown op or inconsistent shapes in the layer table */
    CQTF_ERR_BAD_REQUEST = 2  /* e.g. a layer index past the end of the model */
} cqtf_status_t;

typedef enum {
    CQTF_OP_CONV2D = 1,          /* weights [out_c][kernel_h][kernel_w][in_c], bias [out_c] */
    CQTF_OP_MAXPOOL2D = 2,       /* no weights; output quantization equals input quantization */
    CQTF_OP_FULLY_CONNECTED = 3, /* weights [out_c][in_h*in_w*in_c] (input flattened NHWC), bias [out_c] */
    CQTF_OP_DEPTHWISE_CONV2D = 4, /* channel multiplier 1: weights [1][kernel_h][kernel_w][c], bias [c], out.c == in.c */
    CQTF_OP_AVGPOOL2D = 5,       /* no weights; mean of the in-range positions; quantization unchanged */
    CQTF_OP_ADD = 6              /* two inputs of shape `in` (input_at[0], input_at[1]), out == in */
} cqtf_op_t;

typedef struct {
    uint16_t h;
    uint16_t w;
    uint16_t c;
} cqtf_shape_t;

/*
 * The device arithmetic of a model (host/cqtf/profile.py, one profile): how a conv / fully connected
 * output is accumulated, requantized and rounded. Codes equal cqtf.profile's REQUANT_CODES and
 * ROUNDING_CODES. The packer writes them as CQTF_MODEL_ARITH_* constants and this struct.
 */
typedef enum {
    CQTF_REQUANT_TFLM_DOUBLE = 0, /* int8 affine: Q31 multiplier + shift, TFLM double rounding */
    CQTF_REQUANT_SINGLE = 1,      /* int8 affine: round(acc * multiplier * 2^(shift-31)) once */
    CQTF_REQUANT_SHIFT = 2        /* fixed point: blocks, narrow accumulator, rounding shift */
} cqtf_requant_kind_t;
#define CQTF_REQUANT_KIND_MAX 2u

typedef enum {
    CQTF_ROUND_HALF_UP = 0,   /* floor(x / 2^e + 1/2) */
    CQTF_ROUND_HALF_AWAY = 1, /* ties away from zero */
    CQTF_ROUND_HALF_EVEN = 2, /* ties to even */
    CQTF_ROUND_FLOOR = 3,     /* toward -infinity (arithmetic shift) */
    CQTF_ROUND_CEIL = 4       /* toward +infinity */
} cqtf_rounding_t;
#define CQTF_ROUND_MAX 4u

/*
 * How cqtf_layer_t.weights is stored (cqtf_arith_t.weight_kind; cqtf.profile.WEIGHT_KIND_CODES).
 * CQTF_WEIGHTS_POT4 (profile pot4, n-BQ-NN): every weight is 0 or +-2^e, e in [0, 6], held as a
 * 4-bit code, two codes a byte, in the same element order as the int8 weights: element 2i in bits
 * 0-3, element 2i + 1 in bits 4-7 (an odd count leaves the last high nibble 0). A code is
 *   bit 3     sign (1 = negative)
 *   bits 0-2  m: m = 0 is the weight 0, m in 1..7 is 2^(m - 1)   (0x8, a negative zero, reads as 0)
 * so the weight values are {0, +-1, +-2, ..., +-64}; the product in * w is (in << (m - 1)), negated
 * for the sign: no multiplies. `weights` then points at these bytes (cast to const int8_t *).
 * Accumulation, bias and requantization are those of CQTF_REQUANT_SHIFT.
 */
typedef enum {
    CQTF_WEIGHTS_INT8 = 0, /* one int8 value a weight (every profile before pot4) */
    CQTF_WEIGHTS_POT4 = 1  /* packed 4-bit power-of-two codes, see above */
} cqtf_weight_kind_t;
#define CQTF_WEIGHT_KIND_MAX 1u

/* Activation bits and accumulator widths this firmware implements (checked by cqtf_model.h). */
#define CQTF_ARITH_ACT_BITS 8u
#define CQTF_ARITH_ACC_BITS_MIN 8u
#define CQTF_ARITH_ACC_BITS_MAX 32u

typedef struct {
    uint8_t requant;        /* cqtf_requant_kind_t */
    uint8_t act_bits;       /* bits of every tensor: 8 */
    uint8_t acc_bits;       /* REQUANT_SHIFT: the running accumulator saturates to this many bits */
    uint8_t block;          /* REQUANT_SHIFT: products per exactly summed block; 0 = all in one */
    uint8_t block_rounding; /* REQUANT_SHIFT: cqtf_rounding_t of each block sum by acc_shift */
    uint8_t out_rounding;   /* SINGLE and SHIFT: cqtf_rounding_t of the requantization */
    uint8_t weight_kind;    /* cqtf_weight_kind_t; a header that omits it (0) means int8 weights */
} cqtf_arith_t;

/*
 * Integer requantization of one layer (int8 affine, TFLite Micro compatible):
 *   acc  = bias[oc] + sum (in + input_offset) * weight          (int32, cannot overflow for int8
 *                                                                  operands and < 2^16 products)
 *   out  = requantize(acc, multiplier[oc], shift[oc]) + output_offset
 *   out  = clamp(out, act_min, act_max)                         (a fused ReLU is act_min = zero point)
 * requantize() is TFLite Micro's MultiplyByQuantizedMultiplier with double rounding, see
 * kernels/cqtf_requant.h; a positive shift is a left shift.
 * With arith->requant == CQTF_REQUANT_SINGLE the requantization rounds once instead (see
 * kernels/cqtf_fixed.h). With CQTF_REQUANT_SHIFT (fixed point; offsets 0, multiplier NULL):
 *   per block of arith->block products (padding positions count as zero products):
 *     s   = sat(round_shift(exact block sum, acc_shift, block_rounding), acc_bits)
 *     acc = sat(acc + s, acc_bits)
 *   acc = sat(acc + bias[oc], acc_bits)
 *   out = clamp(round_shift(acc, -shift[oc], out_rounding), act_min, act_max)
 * For MAXPOOL2D only act_min/act_max are used.
 * AVGPOOL2D: out = clamp(round_div(sum of the window's in-range inputs, their count), act_min,
 *   act_max), rounded half away from zero (TFLM) for the int8 profiles, by arith->out_rounding for
 *   CQTF_REQUANT_SHIFT (host: cqtf.profile.average_rounding).
 * ADD (inputs a = input_at[0], b = input_at[1]; multiplier[3], shift[3]):
 *   int8 (TFLM's ADD): a' = requant((a + input_offset) * 2^20, multiplier[0], shift[0]), b' likewise
 *   with input_b_offset and index 1, out = requant(a' + b', multiplier[2], shift[2]) + output_offset,
 *   requant = TFLM double rounding, or with CQTF_REQUANT_SINGLE one rounding by out_rounding;
 *   fixed point (multiplier NULL, offsets 0): s = (a << shift[0]) + (b << shift[1]),
 *   out = round_shift(s, -shift[2], out_rounding); then clamp(out, act_min, act_max).
 */
typedef struct {
    int32_t input_offset;      /* minus the input zero point, in [-127, 128] */
    int32_t output_offset;     /* the output zero point, in [-128, 127] */
    int32_t act_min;           /* in [-128, 127], act_min <= act_max */
    int32_t act_max;
    const int32_t *multiplier; /* [out_c], Q31 in [2^30, 2^31) or 0 */
    const int32_t *shift;      /* [out_c], in [-31, 30] */
    int32_t acc_shift;         /* REQUANT_SHIFT: product frac bits - accumulator frac bits, [-31, 31] */
    const cqtf_arith_t *arith; /* the model's arithmetic; NULL = CQTF_REQUANT_TFLM_DOUBLE */
    int32_t input_b_offset;    /* ADD: minus the second input's zero point (a header may omit it: 0) */
} cqtf_quant_t;

/* Arena offsets with a meaning of their own (cqtf_layer_t.input_at). */
#define CQTF_ARENA_EXTERNAL 0xFFFFFFFFu /* the model input, read where the caller holds it */
#define CQTF_ARENA_NONE 0xFFFFFFFEu     /* an unused input slot */
#define CQTF_MAX_LAYER_INPUTS 2u        /* an elementwise add reads two tensors */

typedef struct {
    uint8_t op;          /* cqtf_op_t */
    uint8_t kernel_h;    /* conv, pool */
    uint8_t kernel_w;
    uint8_t stride_h;
    uint8_t stride_w;
    uint8_t pad_top;     /* conv, pool: rows/cols of implicit padding before the first input */
    uint8_t pad_left;    /* (padding contributes nothing to a conv sum and is skipped by a pool) */
    cqtf_shape_t in;
    cqtf_shape_t out;
    const int8_t *weights;  /* NULL for MAXPOOL2D; packed 4-bit codes with CQTF_WEIGHTS_POT4 */
    const int32_t *bias;    /* NULL for MAXPOOL2D */
    cqtf_quant_t quant;
    /* Static memory plan (host/pack/plan.py), byte offsets into the engine's arena, each a
     * multiple of 4. Input 0 has shape `in`; the output must not overlap any input. */
    uint32_t input_at[CQTF_MAX_LAYER_INPUTS]; /* CQTF_ARENA_EXTERNAL / CQTF_ARENA_NONE allowed */
    uint32_t output_at;
    uint32_t scratch_at;    /* kernel scratch, alive during this layer only */
    uint32_t scratch_size;  /* bytes; >= what the kernel asks for (cqtf_kernels.h) */
} cqtf_layer_t;

typedef struct {
    uint8_t format_version;     /* CQTF_FORMAT_VERSION of the packer that wrote it */
    uint8_t hash[8];            /* first 8 bytes of the host model's SHA-256 (host/pack) */
    const char *name;           /* e.g. "digits_cnn" */
    const char *profile;        /* device profile, e.g. "int8" */
    uint16_t input_size;        /* bytes of the input tensor */
    uint16_t output_size;       /* bytes of the final output tensor */
    uint16_t tensor_max;        /* bytes of the largest tensor (input included) */
    uint16_t num_layers;
    const cqtf_layer_t *layers;
    uint32_t arena_size;        /* bytes of activation memory the plan needs (CQTF_MODEL_ARENA_SIZE) */
    const cqtf_arith_t *arith;  /* the arithmetic every layer was packed for (NULL: int8 TFLM) */
} cqtf_model_t;

#endif /* CQTF_TYPES_H */
