/* cqtf_requant.c - addressable copies of the requantize functions for host tests through ctypes. */
#include "cqtf_requant.h"
#include "cqtf_requant_opt.h"

int32_t cqtf_requantize_fn(int32_t acc, int32_t multiplier, int32_t shift)
{
    return cqtf_requantize(acc, multiplier, shift);
}

int32_t cqtf_requantize_opt_fn(int32_t acc, int32_t multiplier, int32_t shift)
{
    return cqtf_requantize_opt(acc, multiplier, shift);
}

int32_t cqtf_requantize_channel_fn(int32_t acc, int32_t multiplier, int32_t shift)
{
    cqtf_requant_channel_t ch;

    if (shift > 0) {
        return cqtf_requantize_opt(acc, multiplier, shift);
    }
    ch = cqtf_requant_channel(multiplier, shift);
    return cqtf_requant_channel_apply(&ch, acc);
}
