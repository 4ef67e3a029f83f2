/*
 * cqtf_conv2d_opt.h - the im2col and the 2 x 2 dual-MAC dot product shared by the optimized conv
 * kernels (cqtf_conv2d_s8_opt.c, int8; cqtf_conv2d_fx_opt.c, fixed point).
 *
 * For a pair of output pixels a and b, im2col copies both receptive fields into the scratch as
 * int16 values v = input + input_offset (0 for padding), K = kernel_h * kernel_w * in_c values each.
 * Per group of 4 values, one word of 4 int8 weights is split by SXTB16 into lanes (w0, w2) and
 * (w1, w3), so the columns store each full group in the matching order v0, v2, v1, v3 and two SMLADs
 * take the 4 products. The two columns are interleaved group by group (a's 4 values, then b's 4),
 * so one pointer walks both: group g of pixel a starts at slot 8g, of pixel b at 8g + 4.
 * The K % 4 last values stay in natural order (still interleaved).
 */
#ifndef CQTF_CONV2D_OPT_H
#define CQTF_CONV2D_OPT_H

#include <stdint.h>

#include "cqtf_kernels.h"
#include "cqtf_simd.h"

/* 1 when ctx holds word-aligned scratch of the size cqtf_conv2d_s8_scratch_size() asks for. */
static inline int cqtf_conv2d_opt_scratch_ok(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer)
{
    return ctx != 0 && ctx->scratch != 0 && ctx->scratch_size >= cqtf_conv2d_s8_scratch_size(layer) &&
           ((uintptr_t)ctx->scratch & 3u) == 0u;
}

/* Position of value k of pixel a's column in the interleaved scratch (pixel b's: + 4): 8 slots per
 * group of 4, the middle two swapped in full groups (k < k_full = K & ~3). */
static inline uint32_t cqtf_column_slot(uint32_t k, uint32_t k_full)
{
    const uint32_t in_group = (k < k_full) ? (((k & 1u) << 1) | ((k >> 1) & 1u)) : (k & 3u);
    return 2u * (k & ~3u) + in_group;
}

/* Fills one column (col = scratch + 0 for pixel a, + 4 for pixel b) for output pixel (y, x).
 * Fast path: when in_c is a multiple of 4, every (ky, kx) starts a group, and 4 inputs become two
 * reordered int16 pairs with two SXTAB16. */
static inline void cqtf_im2col_s16(const cqtf_layer_t *layer, const int8_t *input, uint32_t y,
                                   uint32_t x, int16_t *col)
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

            if ((in.c & 3u) == 0u) { /* a group's two words per 4 inputs, 8 slots apart */
                int16_t *dst = &col[2u * k];
                if (inside) {
                    for (c = 0; c < in.c; c += 4u, dst += 8) {
                        const uint32_t four = cqtf_read_s8x4(src + c);
                        cqtf_write_s16x2(dst, cqtf_sxtab16(offset2, four));
                        cqtf_write_s16x2(dst + 2, cqtf_sxtab16_ror8(offset2, four));
                    }
                } else {
                    for (c = 0; c < in.c; c += 4u, dst += 8) {
                        cqtf_write_s16x2(dst, 0u);
                        cqtf_write_s16x2(dst + 2, 0u);
                    }
                }
                k += in.c;
            } else {
                for (c = 0; c < in.c; ++c, ++k) {
                    cqtf_store_s16(&col[cqtf_column_slot(k, k_full)], inside ? src[c] + offset : 0);
                }
            }
        }
    }
}

#if CQTF_SIMD_NATIVE
/* One group (4 values of each column, 4 weights of each row: 16 MACs) in 16 instructions: both
 * columns' words in two LDRDs (a's with the pointer step, b's 8 bytes behind it), each weight word
 * split once. GCC's own schedule of the C below spilled registers and split the column loads; here
 * the loop's 14 values (4 sums, 3 pointers or counters, 6 temporaries) fill the core's registers. */
#define CQTF_GROUP_ASM                                  \
    "ldrd   %[xa], %[ya], [%[c]], #16\n\t"              \
    "ldrd   %[xb], %[yb], [%[c], #-8]\n\t"              \
    "ldr    %[we], [%[w0]], #4\n\t"                     \
    "sxtb16 %[wo], %[we], ror #8\n\t"                   \
    "sxtb16 %[we], %[we]\n\t"                           \
    "smlad  %[a0], %[xa], %[we], %[a0]\n\t"             \
    "smlad  %[a0], %[ya], %[wo], %[a0]\n\t"             \
    "smlad  %[b0], %[xb], %[we], %[b0]\n\t"             \
    "smlad  %[b0], %[yb], %[wo], %[b0]\n\t"             \
    "ldr    %[we], [%[w1]], #4\n\t"                     \
    "sxtb16 %[wo], %[we], ror #8\n\t"                   \
    "sxtb16 %[we], %[we]\n\t"                           \
    "smlad  %[a1], %[xa], %[we], %[a1]\n\t"             \
    "smlad  %[a1], %[ya], %[wo], %[a1]\n\t"             \
    "smlad  %[b1], %[xb], %[we], %[b1]\n\t"             \
    "smlad  %[b1], %[yb], %[wo], %[b1]\n\t"

#define CQTF_GROUP_OPERANDS                                                                     \
    [a0] "+r"(a0), [b0] "+r"(b0), [a1] "+r"(a1), [b1] "+r"(b1), [c] "+r"(col), [w0] "+r"(w0), \
        [w1] "+r"(w1), [xa] "=&r"(xa), [ya] "=&r"(ya), [xb] "=&r"(xb), [yb] "=&r"(yb),         \
        [we] "=&r"(we), [wo] "=&r"(wo)
#endif

/* `groups` full groups of the interleaved columns (col at a group's first slot) against weight rows
 * w0 and w1 (at the same group; w1 may equal w0): acc[0] += a.w0, acc[1] += b.w0, acc[2] += a.w1,
 * acc[3] += b.w1. Sums are exact: the callers bound them (CQTF_MAX_PRODUCTS). */
static inline void cqtf_dot_2x2_groups(const int16_t *col, const int8_t *w0, const int8_t *w1,
                                       uint32_t groups, int32_t acc[4])
{
    int32_t a0 = acc[0], b0 = acc[1], a1 = acc[2], b1 = acc[3];
#if CQTF_SIMD_NATIVE
    /* Two groups per pass (the column is word-aligned scratch: LDRD may load it). */
    uint32_t pairs = groups / 2u, xa, ya, xb, yb, we, wo;

    if (pairs != 0u) {
        __asm volatile("1:\n\t" CQTF_GROUP_ASM CQTF_GROUP_ASM
                       "subs   %[n], %[n], #1\n\t"
                       "bne    1b\n\t"
                       : CQTF_GROUP_OPERANDS, [n] "+r"(pairs)
                       :
                       : "cc", "memory");
    }
    if ((groups & 1u) != 0u) {
        __asm volatile(CQTF_GROUP_ASM : CQTF_GROUP_OPERANDS : : "memory");
    }
#else
    const int16_t *const col_end = col + 8u * groups;

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
    acc[0] = a0;
    acc[1] = b0;
    acc[2] = a1;
    acc[3] = b1;
}

#endif /* CQTF_CONV2D_OPT_H */
