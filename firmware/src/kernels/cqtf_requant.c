/* cqtf_requant.c - an addressable copy of cqtf_requantize() for host tests through ctypes. */
#include "cqtf_requant.h"

int32_t cqtf_requantize_fn(int32_t acc, int32_t multiplier, int32_t shift)
{
    return cqtf_requantize(acc, multiplier, shift);
}
