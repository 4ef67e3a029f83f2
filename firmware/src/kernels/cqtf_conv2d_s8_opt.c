/*
 * cqtf_conv2d_s8_opt.c - int8 2-D convolution for cores with dual 16-bit MACs (Cortex-M4/M7/M33).
 * Same contract and, bit for bit, the same outputs as cqtf_conv2d_s8.c (integer sums are exact in
 * any order; the requantization is cqtf_requantize_opt, equal to cqtf_requantize).
 *
 * im2col (cqtf_conv2d_opt.h) copies the receptive fields of two output pixels into the scratch as
 * int16 values v = input + input_offset (0 for padding), K = kernel_h * kernel_w * in_c values each.
 * Then every pair of output channels is a 2 x 2 block of dot products over K: per group of 4 values,
 * one word of 4 int8 weights is split by SXTB16 into lanes (w0, w2) and (w1, w3), so the columns
 * store each group in the matching order v0, v2, v1, v3 and two SMLADs take the 4 products.
 * The two columns are interleaved group by group (a's 4 values, then b's 4), so one pointer walks
 * both and the loop fits the core's registers: per 16 MACs, 2 column LDRDs, 2 weight loads,
 * 4 SXTB16, 8 SMLAD and 1 of loop upkeep. The requantization constants of a channel pair are
 * loaded once per pixel pair (cqtf_requant_channel) where the layer allows it.
 * The K % 4 last values stay in natural order (still interleaved) and are summed one by one.
 */
#include "cqtf_fixed.h"
#include "cqtf_conv2d_opt.h"
#include "cqtf_kernels.h"
#include "cqtf_requant_opt.h"
#include "cqtf_simd.h"

/* Same consistency checks as the reference kernel, plus the scratch size. */
static int conv2d_opt_layer_ok(const cqtf_ctx_t *ctx, const cqtf_layer_t *layer)
{
    if (!cqtf_conv2d_geometry_ok(layer)) {
        return 0;
    }
    if (!cqtf_conv2d_opt_scratch_ok(ctx, layer)) {
        return 0;
    }
    return cqtf_requant_params_ok(layer);
}

/* Dot products of the interleaved columns a and b with weight rows w0 and w1 (w1 may equal w0):
 * acc[0] += a.w0, acc[1] += b.w0, acc[2] += a.w1, acc[3] += b.w1. */
static void dot_2x2(const int16_t *col, const int8_t *w0, const int8_t *w1, uint32_t k_all,
                    int32_t acc[4])
{
    int32_t a0 = acc[0], b0 = acc[1], a1 = acc[2], b1 = acc[3];
    uint32_t k;
#if CQTF_SIMD_NATIVE
    /* Two groups per pass (the column is word-aligned scratch: LDRD may load it). */
    uint32_t pairs = k_all / 8u, xa, ya, xb, yb, we, wo;

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
    /* Portable build (host tests): the shared C loop; the native path above keeps its sums in
     * registers through the tail, which measurably beats passing them through an array. */
    const uint32_t k_full = k_all & ~3u;
    int32_t s[4];

    s[0] = a0;
    s[1] = b0;
    s[2] = a1;
    s[3] = b1;
    cqtf_dot_2x2_groups(col, w0, w1, k_full / 4u, s);
    a0 = s[0];
    b0 = s[1];
    a1 = s[2];
    b1 = s[3];
    col += 2u * k_full;
    w0 += k_full;
    w1 += k_full;
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
    int channel_requant;

    if (!conv2d_opt_layer_ok(ctx, layer)) {
        return CQTF_ERR_BAD_LAYER;
    }
    channel_requant = cqtf_requant_channels_ok(q, out_c);
    for (p = 0; p < pixels; p += 2u) {
        const int two = (p + 1u < pixels); /* a lone last pixel leaves b's results unused */
        int8_t *const out_a = &output[p * out_c];
        int8_t *const out_b = out_a + out_c;

        cqtf_im2col_s16(layer, input, p / layer->out.w, p % layer->out.w, col);
        cqtf_im2col_s16(layer, input, (p + (uint32_t)two) / layer->out.w, (p + (uint32_t)two) % layer->out.w,
               col + 4);
        for (oc = 0; oc < out_c; oc += 2u) {
            const uint32_t oc_2 = (oc + 1u < out_c) ? oc + 1u : oc; /* an odd last channel too */
            const int8_t *w0 = &layer->weights[oc * k_all];
            const int8_t *w1 = &layer->weights[oc_2 * k_all];
            int32_t acc[4];

            acc[0] = acc[1] = layer->bias[oc];
            acc[2] = acc[3] = layer->bias[oc_2];
            dot_2x2(col, w0, w1, k_all, acc);
            if (channel_requant) { /* the two channels' constants serve both pixels */
                const cqtf_requant_channel_t r0 = cqtf_requant_channel(q->multiplier[oc], q->shift[oc]);
                const cqtf_requant_channel_t r1 = cqtf_requant_channel(q->multiplier[oc_2], q->shift[oc_2]);

                out_a[oc] = cqtf_offset_clamp(q, cqtf_requant_channel_apply(&r0, acc[0]));
                out_a[oc_2] = cqtf_offset_clamp(q, cqtf_requant_channel_apply(&r1, acc[2]));
                if (two) {
                    out_b[oc] = cqtf_offset_clamp(q, cqtf_requant_channel_apply(&r0, acc[1]));
                    out_b[oc_2] = cqtf_offset_clamp(q, cqtf_requant_channel_apply(&r1, acc[3]));
                }
                continue;
            }
            out_a[oc] = cqtf_requant_clamp_opt(q, oc, acc[0]);
            out_a[oc_2] = cqtf_requant_clamp_opt(q, oc_2, acc[2]);
            if (two) {
                out_b[oc] = cqtf_requant_clamp_opt(q, oc, acc[1]);
                out_b[oc_2] = cqtf_requant_clamp_opt(q, oc_2, acc[3]);
            }
        }
    }
    return CQTF_OK;
}
