/*
 * cqtf_conv2d_s8_opt.c - int8 2-D convolution for cores with dual 16-bit MACs (Cortex-M4/M7/M33).
 * Same contract and, bit for bit, the same outputs as cqtf_conv2d_s8.c (integer sums are exact in
 * any order; the requantization is cqtf_requantize_opt, equal to cqtf_requantize).
 *
 * For each pair of output pixels a and b, im2col copies both receptive fields into the scratch as
 * int16 values v = input + input_offset (0 for padding), K = kernel_h * kernel_w * in_c values each.
 * Then every pair of output channels is a 2 x 2 block of dot products over K: per group of 4 values,
 * one word of 4 int8 weights is split by SXTB16 into lanes (w0, w2) and (w1, w3), so the columns
 * store each group in the matching order v0, v2, v1, v3 and two SMLADs take the 4 products.
 * The two columns are interleaved group by group (a's 4 values, then b's 4), so one pointer walks
 * both and the loop fits the core's registers: per 16 MACs, 4 column loads, 2 weight loads,
 * 4 SXTB16, 8 SMLAD and 4 of loop upkeep.
 * The K % 4 last values stay in natural order (still interleaved) and are summed one by one.
 */
#include "cqtf_fixed.h"
#include "cqtf_kernels.h"
#include "cqtf_requant_opt.h"
#include "cqtf_simd.h"

/* Same consistency checks as the reference kernel, plus the scratch size. */
static int conv2d_opt_layer_ok(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer)
{
    if (!cqtf_conv2d_geometry_ok(layer)) {
        return 0;
    }
    if (ctx == 0 || ctx->scratch == 0 || ctx->scratch_size < cqtf_conv2d_s8_scratch_size(layer) ||
        ((uintptr_t)ctx->scratch & 3u) != 0u) {
        return 0;
    }
    return cqtf_requant_params_ok(layer);
}

/* Position of value k of a column in the interleaved scratch (col: the column's first slot, 0 for
 * pixel a, 4 for pixel b): 8 slots per group of 4, the middle two swapped in full groups. */
static inline uint32_t column_slot(uint32_t k, uint32_t k_full)
{
    const uint32_t in_group = (k < k_full) ? (((k & 1u) << 1) | ((k >> 1) & 1u)) : (k & 3u);
    return 2u * (k & ~3u) + in_group;
}

/* Fills one column (col = scratch + 0 for pixel a, + 4 for pixel b) for output pixel (y, x).
 * Fast path: when in_c is a multiple of 4, every (ky, kx) starts a group, and 4 inputs become two
 * reordered int16 pairs with two SXTAB16. */
static void im2col(const cqtf_layer_t *layer, const int8_t *input, uint32_t y, uint32_t x,
                   int16_t *col)
{
    const cqtf_shape_t in = layer->in;
    const int32_t offset = layer->quant.input_offset;
    const uint32_t offset2 = cqtf_dup_s16(offset);
    const uint32_t k_all = (uint32_t)layer->kernel_h * layer->kernel_w * in.c;
    const uint32_t k_full = k_all & ~3u;
    const int32_t y0 = (int32_t)(y * layer->stride_h) - layer->pad_top;
    const int32_t x0 = (int32_t)(x * layer->stride_w) - layer->pad_left;
    uint32_t ky, kx, c, k = 0;

    for (ky = 0; ky < layer->kernel_h; ++ky) {
        const int32_t iy = y0 + (int32_t)ky;
        for (kx = 0; kx < layer->kernel_w; ++kx) {
            const int32_t ix = x0 + (int32_t)kx;
            const int inside = iy >= 0 && iy < (int32_t)in.h && ix >= 0 && ix < (int32_t)in.w;
            const int8_t *src = inside ? &input[cqtf_offset(in, (uint32_t)iy, (uint32_t)ix, 0)] : 0;

            if ((in.c & 3u) == 0u) {
                for (c = 0; c < in.c; c += 4u, k += 4u) {
                    uint32_t even = 0, odd = 0;
                    if (inside) {
                        const uint32_t four = cqtf_read_s8x4(src + c);
                        even = cqtf_sxtab16(offset2, four);
                        odd = cqtf_sxtab16_ror8(offset2, four);
                    }
                    cqtf_write_s16x2(&col[2u * k], even);
                    cqtf_write_s16x2(&col[2u * k + 2u], odd);
                }
            } else {
                for (c = 0; c < in.c; ++c, ++k) {
                    cqtf_store_s16(&col[column_slot(k, k_full)], inside ? src[c] + offset : 0);
                }
            }
        }
    }
}

static inline int8_t requant_clamp(const cqtf_quant_t *q, uint32_t oc, int32_t acc)
{
    if (cqtf_single_rounding(q)) {
        return cqtf_requant_single_clamp(q, oc, acc);
    }
    const int32_t out = cqtf_requantize_opt(acc, q->multiplier[oc], q->shift[oc]) + q->output_offset;
    return (int8_t)cqtf_clamp(out, q->act_min, q->act_max);
}

#if CQTF_SIMD_NATIVE
/* One group (4 values of each column, 4 weights of each row: 16 MACs) in 17 instructions. GCC's
 * own schedule of the C below spilled registers and split the column loads; here each column's
 * two words come in one LDRD and pixel a's are loaded twice, so 4 temporaries suffice. */
#define CQTF_GROUP_ASM                                  \
    "ldr    %[we], [%[w0]], #4\n\t"                     \
    "sxtb16 %[wo], %[we], ror #8\n\t"                   \
    "sxtb16 %[we], %[we]\n\t"                           \
    "ldrd   %[x], %[y], [%[c]]\n\t"                     \
    "smlad  %[a0], %[x], %[we], %[a0]\n\t"              \
    "smlad  %[a0], %[y], %[wo], %[a0]\n\t"              \
    "ldrd   %[x], %[y], [%[c], #8]\n\t"                 \
    "smlad  %[b0], %[x], %[we], %[b0]\n\t"              \
    "smlad  %[b0], %[y], %[wo], %[b0]\n\t"              \
    "ldr    %[we], [%[w1]], #4\n\t"                     \
    "sxtb16 %[wo], %[we], ror #8\n\t"                   \
    "sxtb16 %[we], %[we]\n\t"                           \
    "smlad  %[b1], %[x], %[we], %[b1]\n\t"              \
    "smlad  %[b1], %[y], %[wo], %[b1]\n\t"              \
    "ldrd   %[x], %[y], [%[c]], #16\n\t"                \
    "smlad  %[a1], %[x], %[we], %[a1]\n\t"              \
    "smlad  %[a1], %[y], %[wo], %[a1]\n\t"

#define CQTF_GROUP_OPERANDS                                                                     \
    [a0] "+r"(a0), [b0] "+r"(b0), [a1] "+r"(a1), [b1] "+r"(b1), [c] "+r"(col), [w0] "+r"(w0), \
        [w1] "+r"(w1), [x] "=&r"(x), [y] "=&r"(y), [we] "=&r"(we), [wo] "=&r"(wo)
#endif

/* Dot products of the interleaved columns a and b with weight rows w0 and w1 (w1 may equal w0):
 * acc[0] += a.w0, acc[1] += b.w0, acc[2] += a.w1, acc[3] += b.w1. */
static void dot_2x2(const int16_t *col, const int8_t *w0, const int8_t *w1, uint32_t k_all,
                    int32_t acc[4])
{
    int32_t a0 = acc[0], b0 = acc[1], a1 = acc[2], b1 = acc[3];
    uint32_t k;
#if CQTF_SIMD_NATIVE
    /* Two groups per pass (the column is word-aligned scratch: LDRD may load it). */
    uint32_t pairs = k_all / 8u, x, y, we, wo;

    if (pairs != 0u) {
        __asm volatile("1:\n\t" CQTF_GROUP_ASM CQTF_GROUP_ASM
                       "subs   %[n], %[n], #1\n\t"
                       "bne    1b\n\t"
                       : CQTF_GROUP_OPERANDS, [n] "+r"(pairs)
                       :
                       : "cc", "memory");
    }
    if ((k_all & 4u) != 0u) {
        __asm volatile(CQTF_GROUP_ASM : CQTF_GROUP_OPERANDS : : "memory");
    }
#else
    const int16_t *const col_end = col + 2u * (k_all & ~3u);

    /* 4 sums, 3 walking pointers and the end leave 6 registers for the 6 values in flight. */
    while (col != col_end) {
        const uint32_t ae = cqtf_read_s16x2(col), ao = cqtf_read_s16x2(col + 2);
        const uint32_t be = cqtf_read_s16x2(col + 4), bo = cqtf_read_s16x2(col + 6);
        uint32_t we = cqtf_read_s8x4(w0), wo = cqtf_sxtb16_ror8(we);

        we = cqtf_sxtb16(we);
        a0 = cqtf_smlad(ae, we, a0);
        a0 = cqtf_smlad(ao, wo, a0);
        b0 = cqtf_smlad(be, we, b0);
        b0 = cqtf_smlad(bo, wo, b0);
        we = cqtf_read_s8x4(w1);
        wo = cqtf_sxtb16_ror8(we);
        we = cqtf_sxtb16(we);
        a1 = cqtf_smlad(ae, we, a1);
        a1 = cqtf_smlad(ao, wo, a1);
        b1 = cqtf_smlad(be, we, b1);
        b1 = cqtf_smlad(bo, wo, b1);
        col += 8;
        w0 += 4;
        w1 += 4;
    }
#endif
    for (k = 0; k < k_all % 4u; ++k) {
        const int32_t va = cqtf_load_s16(&col[k]), vb = cqtf_load_s16(&col[4u + k]);
        a0 += va * w0[k];
        b0 += vb * w0[k];
        a1 += va * w1[k];
        b1 += vb * w1[k];
    }
    acc[0] = a0;
    acc[1] = b0;
    acc[2] = a1;
    acc[3] = b1;
}

cqtf_status_t cqtf_conv2d_s8_opt(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer,
                                 const int8_t *input, int8_t *output)
{
    const cqtf_quant_t *q = &layer->quant;
    const uint32_t out_c = layer->out.c;
    const uint32_t pixels = (uint32_t)layer->out.h * layer->out.w;
    const uint32_t k_all = (uint32_t)layer->kernel_h * layer->kernel_w * layer->in.c;
    int16_t *const col = (int16_t *)ctx->scratch; /* pixel a's slots from 0, pixel b's from 4 */
    uint32_t p, oc;

    if (!conv2d_opt_layer_ok(ctx, layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    for (p = 0; p < pixels; p += 2u) {
        const int two = (p + 1u < pixels); /* a lone last pixel leaves b's results unused */
        int8_t *const out_a = &output[p * out_c];
        int8_t *const out_b = out_a + out_c;

        im2col(layer, input, p / layer->out.w, p % layer->out.w, col);
        im2col(layer, input, (p + (uint32_t)two) / layer->out.w, (p + (uint32_t)two) % layer->out.w,
               col + 4);
        for (oc = 0; oc < out_c; oc += 2u) {
            const uint32_t oc_2 = (oc + 1u < out_c) ? oc + 1u : oc; /* an odd last channel too */
            const int8_t *w0 = &layer->weights[oc * k_all];
            const int8_t *w1 = &layer->weights[oc_2 * k_all];
            int32_t acc[4];

            acc[0] = acc[1] = layer->bias[oc];
            acc[2] = acc[3] = layer->bias[oc_2];
            dot_2x2(col, w0, w1, k_all, acc);
            out_a[oc] = requant_clamp(q, oc, acc[0]);
            out_a[oc_2] = requant_clamp(q, oc_2, acc[2]);
            if (two) {
                out_b[oc] = requant_clamp(q, oc, acc[1]);
                out_b[oc_2] = requant_clamp(q, oc_2, acc[3]);
            }
        }
    }
    return CQTF_OK;
}
