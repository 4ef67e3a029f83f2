/*
 * cqtf_conv2d_fx_opt.c - fixed-point 2-D convolution (REQUANT_SHIFT profiles) for cores with dual
 * 16-bit MACs. Same contract and, bit for bit, the same outputs as cqtf_conv2d_fx.c.
 *
 * The im2col and 2 x 2 dot product of the int8 kernel (cqtf_conv2d_opt.h; input_offset is 0 here),
 * cut at block boundaries: each block [k0, k1) of the ky, kx, ic order is summed exactly (its full
 * groups of 4 with SMLAD, the values before the first and after the last group one by one), then
 * flushed with the reference's rounding and saturation (cqtf_fx_opt.h). A group never straddles a
 * block: blocks that are multiples of 4 (and block 0) run on groups only; others, down to block 1,
 * stay exact through the scalar edges; block 1 has a loop of its own (products in order, each
 * flushed). Padding positions are zeros in the column: they keep their
 * place in the block.
 */
#include "cqtf_conv2d_opt.h"
#include "cqtf_fixed.h"
#include "cqtf_fx_opt.h"
#include "cqtf_kernels.h"

static int conv2d_fx_opt_layer_ok(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer)
{
    return cqtf_conv2d_geometry_ok(layer) && cqtf_conv2d_opt_scratch_ok(ctx, layer) &&
           cqtf_fx_params_ok(layer);
}

/* s[] += the products of values [k0, k1) one by one (k_full = K & ~3: where natural order starts). */
static inline void scalar_sums(const int16_t *col, const int8_t *w0, const int8_t *w1, uint32_t k0,
                               uint32_t k1, uint32_t k_full, int32_t s[4])
{
    uint32_t k;

    for (k = k0; k < k1; ++k) {
        const uint32_t slot = cqtf_column_slot(k, k_full);
        const int32_t va = cqtf_load_s16(&col[slot]), vb = cqtf_load_s16(&col[slot + 4u]);
        s[0] += va * w0[k];
        s[1] += vb * w0[k];
        s[2] += va * w1[k];
        s[3] += vb * w1[k];
    }
}

/* Exact sums of block [k0, k1): scalar head up to a group boundary, full groups, scalar tail. */
static inline void block_sums(const int16_t *col, const int8_t *w0, const int8_t *w1, uint32_t k0,
                              uint32_t k1, uint32_t k_full, int32_t s[4])
{
    const uint32_t head = (((k0 + 3u) & ~3u) < k1) ? ((k0 + 3u) & ~3u) : k1;
    const uint32_t body = k1 & ~3u; /* end of the last full group inside the block */

    scalar_sums(col, w0, w1, k0, head, k_full, s);
    if (body > head) { /* head is then a group boundary */
        cqtf_dot_2x2_groups(col + 2u * head, w0 + head, w1 + head, (body - head) / 4u, s);
        scalar_sums(col, w0, w1, body, k1, k_full, s);
    } else {
        scalar_sums(col, w0, w1, head, k1, k_full, s);
    }
}

static inline void flush_4(const cqtf_fx_opt_t *p, const int32_t s[4], int32_t acc[4])
{
    uint32_t i;

    for (i = 0; i < 4u; ++i) {
        acc[i] = cqtf_fx_opt_flush(p, acc[i], s[i]);
    }
}

/* Blocks that are multiples of 4 (or one block of all K): every block but the last is whole
 * groups; the last one may end with the K % 4 natural-order values. Few live values, no slot maths. */
static void dot_2x2_fx_aligned(const cqtf_fx_opt_t *p, const int16_t *col, const int8_t *w0,
                               const int8_t *w1, uint32_t k_all, int32_t acc[4])
{
    const uint32_t k_full = k_all & ~3u;
    uint32_t k0 = 0, k;
    int32_t s[4];

    for (; k0 + p->block <= k_full; k0 += p->block) {
        s[0] = s[1] = s[2] = s[3] = 0;
        cqtf_dot_2x2_groups(col + 2u * k0, w0 + k0, w1 + k0, p->block / 4u, s);
        flush_4(p, s, acc);
    }
    if (k0 < k_all) { /* the last, shorter block */
        s[0] = s[1] = s[2] = s[3] = 0;
        cqtf_dot_2x2_groups(col + 2u * k0, w0 + k0, w1 + k0, (k_full - k0) / 4u, s);
        for (k = k_full; k < k_all; ++k) {
            const int32_t va = cqtf_load_s16(&col[k_full + k]), vb = cqtf_load_s16(&col[k_full + k + 4u]);
            s[0] += va * w0[k];
            s[1] += vb * w0[k];
            s[2] += va * w1[k];
            s[3] += vb * w1[k];
        }
        flush_4(p, s, acc);
    }
}

/* Products of pixels a and b with rows w0 and w1 at one k, each its own block, in order. */
static inline void step_block1(const cqtf_fx_opt_t *p, int32_t va, int32_t vb, int32_t wa, int32_t wb,
                               int32_t acc[4], int exact)
{
    acc[0] = cqtf_fx_opt_flush1(p, acc[0], va * wa, exact);
    acc[1] = cqtf_fx_opt_flush1(p, acc[1], vb * wa, exact);
    acc[2] = cqtf_fx_opt_flush1(p, acc[2], va * wb, exact);
    acc[3] = cqtf_fx_opt_flush1(p, acc[3], vb * wb, exact);
}

/* Block 1: the running accumulator saturates after every product, so products go in k order; a
 * full group holds v0, v2, v1, v3 in its slots 0-3 (pixel b: 4-7). */
static inline void dot_2x2_fx_block1(const cqtf_fx_opt_t *p, const int16_t *col, const int8_t *w0,
                                     const int8_t *w1, uint32_t k_all, int32_t acc[4], int exact)
{
    const uint32_t k_full = k_all & ~3u;
    int32_t s[4];
    uint32_t k;

    s[0] = acc[0];
    s[1] = acc[1];
    s[2] = acc[2];
    s[3] = acc[3];
    for (k = 0; k < k_full; k += 4u) {
        const int16_t *const c = col + 2u * k;
        step_block1(p, cqtf_load_s16(&c[0]), cqtf_load_s16(&c[4]), w0[k], w1[k], s, exact);
        step_block1(p, cqtf_load_s16(&c[2]), cqtf_load_s16(&c[6]), w0[k + 1u], w1[k + 1u], s, exact);
        step_block1(p, cqtf_load_s16(&c[1]), cqtf_load_s16(&c[5]), w0[k + 2u], w1[k + 2u], s, exact);
        step_block1(p, cqtf_load_s16(&c[3]), cqtf_load_s16(&c[7]), w0[k + 3u], w1[k + 3u], s, exact);
    }
    for (; k < k_all; ++k) { /* natural order after the full groups */
        step_block1(p, cqtf_load_s16(&col[k_full + k]), cqtf_load_s16(&col[k_full + k + 4u]), w0[k], w1[k], s,
                    exact);
    }
    acc[0] = s[0];
    acc[1] = s[1];
    acc[2] = s[2];
    acc[3] = s[3];
}

/* Any other block (1, 2, 3, 5, ...): groups where a block holds them, the edges one by one. */
static void dot_2x2_fx_any(const cqtf_fx_opt_t *p, const int16_t *col, const int8_t *w0,
                           const int8_t *w1, uint32_t k_all, int32_t acc[4])
{
    const uint32_t k_full = k_all & ~3u;
    uint32_t k0;

    for (k0 = 0; k0 < k_all; k0 += p->block) {
        const uint32_t k1 = (k_all - k0 > p->block) ? k0 + p->block : k_all;
        int32_t s[4] = {0, 0, 0, 0};

        block_sums(col, w0, w1, k0, k1, k_full, s);
        flush_4(p, s, acc);
    }
}

/* The 4 accumulators (a.w0, b.w0, a.w1, b.w1) of two pixels and two channels, block by block. */
static void dot_2x2_fx(const cqtf_fx_opt_t *p, const int16_t *col, const int8_t *w0, const int8_t *w1,
                       uint32_t k_all, int32_t acc[4])
{
    if ((p->block & 3u) == 0u || p->block == k_all) {
        dot_2x2_fx_aligned(p, col, w0, w1, k_all, acc);
    } else if (p->block == 1u && p->exact1) {
        dot_2x2_fx_block1(p, col, w0, w1, k_all, acc, 1);
    } else if (p->block == 1u) {
        dot_2x2_fx_block1(p, col, w0, w1, k_all, acc, 0);
    } else {
        dot_2x2_fx_any(p, col, w0, w1, k_all, acc);
    }
}

cqtf_status_t cqtf_conv2d_fx_opt(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer,
                                 const int8_t *input, int8_t *output)
{
    const cqtf_quant_t *q = &layer->quant;
    const uint32_t out_c = layer->out.c, out_w = layer->out.w;
    const uint32_t pixels = (uint32_t)layer->out.h * out_w;
    const uint32_t k_all = (uint32_t)layer->kernel_h * layer->kernel_w * layer->in.c;
    int16_t *col;
    cqtf_fx_opt_t p;
    uint32_t px, oc;

    if (!conv2d_fx_opt_layer_ok(ctx, layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    col = (int16_t *)ctx->scratch; /* pixel a's slots from 0, pixel b's from 4 */
    cqtf_fx_opt_init(&p, q, k_all);
    for (px = 0; px < pixels; px += 2u) {
        const uint32_t pb = (px + 1u < pixels) ? px + 1u : px; /* a lone last pixel pairs with itself */
        int8_t *const out_a = &output[px * out_c];
        int8_t *const out_b = &output[pb * out_c];

        cqtf_im2col_s16(layer, input, px / out_w, px % out_w, col);
        cqtf_im2col_s16(layer, input, pb / out_w, pb % out_w, col + 4);
        for (oc = 0; oc < out_c; oc += 2u) {
            const uint32_t oc_2 = (oc + 1u < out_c) ? oc + 1u : oc; /* an odd last channel too */
            int32_t acc[4] = {0, 0, 0, 0};

            dot_2x2_fx(&p, col, &layer->weights[oc * k_all], &layer->weights[oc_2 * k_all], k_all, acc);
            out_a[oc] = cqtf_fx_opt_output(&p, q, acc[0], layer->bias[oc], oc);
            out_a[oc_2] = cqtf_fx_opt_output(&p, q, acc[2], layer->bias[oc_2], oc_2);
            out_b[oc] = cqtf_fx_opt_output(&p, q, acc[1], layer->bias[oc], oc);
            out_b[oc_2] = cqtf_fx_opt_output(&p, q, acc[3], layer->bias[oc_2], oc_2);
        }
    }
    return CQTF_OK;
}
