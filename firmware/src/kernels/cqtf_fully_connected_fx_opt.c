/*
 * cqtf_fully_connected_fx_opt.c - fixed-point fully connected layer (REQUANT_SHIFT profiles) for
 * cores with dual 16-bit MACs. Same contract and outputs as cqtf_fully_connected_fx.c; no scratch.
 *
 * Two output rows share each group of 4 inputs: SXTB16 splits inputs and weights into lanes
 * (x0, x2), (x1, x3), and two SMLADs per row take the 4 products (input_offset is 0 here). Each
 * block [k0, k1) is summed exactly (full groups with SMLAD, the edges one by one, so no group
 * straddles a block boundary), then flushed as the reference does (cqtf_fx_opt.h).
 */
#include "cqtf_fixed.h"
#include "cqtf_fx_opt.h"
#include "cqtf_kernels.h"
#include "cqtf_simd.h"

static int fully_connected_fx_opt_layer_ok(const cqtf_layer_t *layer)
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

/* s[0] += x . w0, s[1] += x . w1 over [k0, k1), one product at a time. */
static inline void scalar_sums(const int8_t *x, const int8_t *w0, const int8_t *w1, uint32_t k0,
                               uint32_t k1, int32_t s[2])
{
    uint32_t k;

    for (k = k0; k < k1; ++k) {
        s[0] += (int32_t)x[k] * w0[k];
        s[1] += (int32_t)x[k] * w1[k];
    }
}

/* The same over [k0, k1) with k0 and k1 multiples of 4, 4 products per row with two SMLADs. */
static inline void group_sums(const int8_t *x, const int8_t *w0, const int8_t *w1, uint32_t k0,
                              uint32_t k1, int32_t s[2])
{
    int32_t s0 = s[0], s1 = s[1];
    uint32_t k;

    for (k = k0; k < k1; k += 4u) {
        const uint32_t x4 = cqtf_read_s8x4(&x[k]);
        const uint32_t xe = cqtf_sxtb16(x4), xo = cqtf_sxtb16_ror8(x4);
        const uint32_t w0x4 = cqtf_read_s8x4(&w0[k]), w1x4 = cqtf_read_s8x4(&w1[k]);

        s0 = cqtf_smlad(xe, cqtf_sxtb16(w0x4), s0);
        s0 = cqtf_smlad(xo, cqtf_sxtb16_ror8(w0x4), s0);
        s1 = cqtf_smlad(xe, cqtf_sxtb16(w1x4), s1);
        s1 = cqtf_smlad(xo, cqtf_sxtb16_ror8(w1x4), s1);
    }
    s[0] = s0;
    s[1] = s1;
}

/* Exact sums of block [k0, k1): scalar head up to a group boundary, full groups, scalar tail. */
static inline void block_sums(const int8_t *x, const int8_t *w0, const int8_t *w1, uint32_t k0,
                              uint32_t k1, int32_t s[2])
{
    const uint32_t head = (((k0 + 3u) & ~3u) < k1) ? ((k0 + 3u) & ~3u) : k1;
    const uint32_t body = k1 & ~3u; /* end of the last full group inside the block */

    scalar_sums(x, w0, w1, k0, head, s);
    if (body > head) { /* head is then a group boundary */
        group_sums(x, w0, w1, head, body, s);
        scalar_sums(x, w0, w1, body, k1, s);
    } else {
        scalar_sums(x, w0, w1, head, k1, s);
    }
}

/* Block 1: every product is its own block, flushed in order (exact: p->exact1, folded per call). */
static inline void dot_2rows_block1(const cqtf_fx_opt_t *p, const int8_t *x, const int8_t *w0,
                                    const int8_t *w1, uint32_t features, int32_t acc[2], int exact)
{
    int32_t a0 = acc[0], a1 = acc[1];
    uint32_t k;

    for (k = 0; k < features; ++k) {
        a0 = cqtf_fx_opt_flush1(p, a0, (int32_t)x[k] * w0[k], exact);
        a1 = cqtf_fx_opt_flush1(p, a1, (int32_t)x[k] * w1[k], exact);
    }
    acc[0] = a0;
    acc[1] = a1;
}

/* Rows w0 and w1 (w1 may equal w0) against x, block by block, into acc[0] and acc[1]. Blocks that
 * are multiples of 4 (or one block) start on group boundaries: only the last one has a scalar tail. */
static void dot_2rows_fx(const cqtf_fx_opt_t *p, const int8_t *x, const int8_t *w0, const int8_t *w1,
                         uint32_t features, int32_t acc[2])
{
    const int aligned = (p->block & 3u) == 0u || p->block == features;
    uint32_t k0;

    if (p->block == 1u && !aligned) {
        if (p->exact1) {
            dot_2rows_block1(p, x, w0, w1, features, acc, 1);
        } else {
            dot_2rows_block1(p, x, w0, w1, features, acc, 0);
        }
        return;
    }

    for (k0 = 0; k0 < features; k0 += p->block) {
        const uint32_t k1 = (features - k0 > p->block) ? k0 + p->block : features;
        int32_t s[2] = {0, 0};

        if (aligned) {
            group_sums(x, w0, w1, k0, k1 & ~3u, s);
            scalar_sums(x, w0, w1, k1 & ~3u, k1, s);
        } else {
            block_sums(x, w0, w1, k0, k1, s);
        }
        acc[0] = cqtf_fx_opt_flush(p, acc[0], s[0]);
        acc[1] = cqtf_fx_opt_flush(p, acc[1], s[1]);
    }
}

cqtf_status_t cqtf_fully_connected_fx_opt(const cqtf_layer_t *layer, const int8_t *input,
                                          int8_t *output)
{
    const cqtf_quant_t *q = &layer->quant;
    const uint32_t features = cqtf_shape_size(layer->in);
    cqtf_fx_opt_t p;
    uint32_t o;

    if (!fully_connected_fx_opt_layer_ok(layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    cqtf_fx_opt_init(&p, q, features);
    for (o = 0; o < layer->out.c; o += 2u) {
        const uint32_t o2 = (o + 1u < layer->out.c) ? o + 1u : o; /* an odd last row pairs with itself */
        int32_t acc[2] = {0, 0};

        dot_2rows_fx(&p, input, &layer->weights[o * features], &layer->weights[o2 * features], features,
                     acc);
        output[o] = cqtf_fx_opt_output(&p, q, acc[0], layer->bias[o], o);
        output[o2] = cqtf_fx_opt_output(&p, q, acc[1], layer->bias[o2], o2);
    }
    return CQTF_OK;
}
