/*
 * cqtf_pot4.h - reading packed 4-bit power-of-two weights (profile pot4; layout in cqtf_types.h,
 * CQTF_WEIGHTS_POT4) and the shift that replaces each multiply. Host twin: host/pow2.py decode.
 */
#ifndef CQTF_POT4_H
#define CQTF_POT4_H

#include <stdint.h>

#include "cqtf_fixed.h"
#include "cqtf_types.h"

/* Code of weight element i: the low nibble of byte i / 2 for even i, the high nibble for odd i. */
static inline uint8_t cqtf_pot4_code(const uint8_t *packed, uint32_t i)
{
    const uint8_t b = packed[i >> 1];
    return (i & 1u) ? (uint8_t)(b >> 4) : (uint8_t)(b & 0x0Fu);
}

/* v * w for the weight of `code`, as a shift and a negation: |v| <= 128 and |w| <= 64, so the
 * magnitude is at most 2^13 (shifted unsigned: no signed-shift undefined behaviour). */
static inline int32_t cqtf_pot4_product(int32_t v, uint8_t code)
{
    const uint32_t m = code & 7u;
    uint32_t magnitude;

    if (m == 0u || v == 0) {
        return 0;
    }
    magnitude = (uint32_t)(v < 0 ? -v : v) << (m - 1u);
    return ((v < 0) != ((code & 8u) != 0u)) ? -(int32_t)magnitude : (int32_t)magnitude;
}

/* A power-of-two layer: the fixed-point checks plus the weight kind. */
static inline int cqtf_pot4_params_ok(const cqtf_layer_t *layer)
{
    return cqtf_fx_params_ok(layer) && layer->quant.arith->weight_kind == CQTF_WEIGHTS_POT4;
}

#endif /* CQTF_POT4_H */
