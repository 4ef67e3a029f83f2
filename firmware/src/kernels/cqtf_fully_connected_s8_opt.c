/*
 * cqtf_fully_connected_s8_opt.c - int8 fully connected layer for cores with dual 16-bit MACs.
 * Same contract and outputs as cqtf_fully_connected_s8.c; no scratch.
 *
 * Two output rows at a time share each group of 4 inputs: SXTAB16 adds the input offset while
 * splitting the inputs into lanes (x0, x2) and (x1, x3); SXTB16 splits each row's 4 weights the
 * same way; two SMLADs per row take the 4 products. Per 8 MACs: 3 loads, 2 SXTAB16, 4 SXTB16,
 * 4 SMLAD. The features % 4 last products are summed one by one.
 */
#include "cqtf_fixed.h"
#include "cqtf_kernels.h"
#include "cqtf_requant_opt.h"
#include "cqtf_simd.h"

static int fully_connected_opt_layer_ok(const cqtf_layer_t *layer)
{
    const uint32_t features = cqtf_shape_size(layer->in);

    if (layer->op != CQTF_OP_FULLY_CONNECTED || features == 0 || features > CQTF_MAX_PRODUCTS) {
        return 0;
    }
    if (layer->out.h != 1 || layer->out.w != 1 || layer->out.c == 0) {
        return 0;
    }
    return cqtf_requant_params_ok(layer);
}

/* acc[0] += (x + offset) . w0, acc[1] += (x + offset) . w1 over `features` values. */
static void dot_2rows(const int8_t *x, int32_t offset, const int8_t *w0, const int8_t *w1,
                     uint32_t features, int32_t acc[2])
{
    const uint32_t offset2 = cqtf_dup_s16(offset);
    const uint32_t full = features & ~3u;
    int32_t s0 = acc[0], s1 = acc[1];
    uint32_t i;

    for (i = 0; i < full; i += 4u) {
        const uint32_t x4 = cqtf_read_s8x4(&x[i]);
        const uint32_t xe = cqtf_sxtab16(offset2, x4), xo = cqtf_sxtab16_ror8(offset2, x4);
        const uint32_t w0x4 = cqtf_read_s8x4(&w0[i]), w1x4 = cqtf_read_s8x4(&w1[i]);

        s0 = cqtf_smlad(xe, cqtf_sxtb16(w0x4), s0);
        s0 = cqtf_smlad(xo, cqtf_sxtb16_ror8(w0x4), s0);
        s1 = cqtf_smlad(xe, cqtf_sxtb16(w1x4), s1);
        s1 = cqtf_smlad(xo, cqtf_sxtb16_ror8(w1x4), s1);
    }
    for (; i < features; ++i) {
        const int32_t v = (int32_t)x[i] + offset;
        s0 += v * w0[i];
        s1 += v * w1[i];
    }
    acc[0] = s0;
    acc[1] = s1;
}

cqtf_status_t cqtf_fully_connected_s8_opt(const cqtf_layer_t *layer, const int8_t *input,
                                          int8_t *output)
{
    const cqtf_quant_t *q = &layer->quant;
    const uint32_t features = cqtf_shape_size(layer->in);
    uint32_t o;

    if (!fully_connected_opt_layer_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    for (o = 0; o < layer->out.c; o += 2u) {
        const uint32_t o2 = (o + 1u < layer->out.c) ? o + 1u : o; /* an odd last row pairs with itself */
        int32_t acc[2];
        uint32_t r;

        acc[0] = layer->bias[o];
        acc[1] = layer->bias[o2];
        dot_2rows(input, q->input_offset, &layer->weights[o * features], &layer->weights[o2 * features],
                  features, acc);
        for (r = 0; r < 2u; ++r) {
            const uint32_t row = r ? o2 : o;
            output[row] = cqtf_requant_clamp_opt(q, row, acc[r]);
        }
    }
    return CQTF_OK;
}
