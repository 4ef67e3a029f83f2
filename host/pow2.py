"""Power-of-two weights (profile `pot4`, cqtf.profile.PowerOfTwo): quantizer, codes, nibble packing.

    value  0 or +-2^e, e in [0, max_exp]            (4 bits: max_exp = 6, values -64 .. 64)
    code   sign << (bits - 1) | m                   m = 0: zero; m = e + 1 otherwise; sign 1 = negative
    pack   two 4-bit codes a byte: element 2i in the low nibble, 2i + 1 in the high nibble;
           an odd count leaves the last high nibble 0 (firmware/src/cqtf_types.h, CQTF_WEIGHTS_POT4)

The quantizer rounds |v| to the nearest of {0, 1, 2, 4, ..., 2^max_exp} in the linear domain, ties
upward (|v| = 0.5 -> 1, |v| = 1.5 * 2^k -> 2^(k+1)), and saturates above 2^max_exp. Its thresholds are
exact binary fractions, so float64 comparisons decide exactly. The trainer (train/layers.py) quantizes
with it, the packer (pack/header.py) encodes what it gave.
"""
from __future__ import annotations

import numpy as np
import torch


def quantize(v: torch.Tensor, max_exp: int) -> torch.Tensor:
    """v (float64, in weight units) -> the nearest power-of-two value (float64 holding integers)."""
    a = v.abs()
    level = torch.zeros_like(a)
    for k in range(max_exp):  # level = the number of thresholds 1.5 * 2^k that |v| reaches
        level = level + (a >= 1.5 * 2.0 ** k).to(a.dtype)
    magnitude = torch.where(a >= 0.5, torch.pow(2.0, level), torch.zeros_like(a))
    return torch.sign(v) * magnitude


def blend(v: torch.Tensor, max_exp: int, alpha: float) -> torch.Tensor:
    """The gradual quantization v - alpha * (v - Q(v)), rounded half away to integers (|.| <= 127):
    alpha = 1 is Q(v) itself, the device's weights; alpha < 1 is an integer fixed-point weight on the
    way there, so even a blended forward pass is exact integer arithmetic (only not yet shifts)."""
    q = quantize(v, max_exp)
    if alpha >= 1.0:
        return q
    mixed = v - alpha * (v - q)
    return torch.clamp(torch.sign(mixed) * torch.floor(mixed.abs() + 0.5), -127, 127)


def is_power_of_two(values: np.ndarray, max_exp: int) -> np.ndarray:
    a = np.abs(np.asarray(values, dtype=np.int64))
    return (a == 0) | ((a & (a - 1)) == 0) & (a <= (1 << max_exp))


def encode(values: np.ndarray, bits: int = 4) -> np.ndarray:
    """Integer weight values (each 0 or +-2^e) -> codes (uint8). ValueError for any other value."""
    max_exp = (1 << (bits - 1)) - 2
    v = np.asarray(values, dtype=np.int64)
    if not is_power_of_two(v, max_exp).all():
        bad = v[~is_power_of_two(v, max_exp)].reshape(-1)[0]
        raise ValueError(f"weight {bad} is not 0 or +-2^e with e <= {max_exp}")
    a = np.abs(v)
    m = np.where(a == 0, 0, np.log2(np.maximum(a, 1)).round().astype(np.int64) + 1)
    return ((np.where(v < 0, 1, 0) << (bits - 1)) | m).astype(np.uint8)


def decode(codes: np.ndarray, bits: int = 4) -> np.ndarray:
    """Codes -> integer values (int64); the unused negative zero decodes to 0, as on the device."""
    c = np.asarray(codes, dtype=np.int64)
    m = c & ((1 << (bits - 1)) - 1)
    magnitude = np.where(m == 0, 0, np.left_shift(1, np.maximum(m - 1, 0)))
    return np.where((c >> (bits - 1)) & 1, -magnitude, magnitude)


def pack_nibbles(codes: np.ndarray) -> np.ndarray:
    """4-bit codes (flat, device order) -> bytes: code 2i in bits 0-3, code 2i + 1 in bits 4-7."""
    c = np.asarray(codes, dtype=np.uint8).reshape(-1)
    if c.size and int(c.max()) > 0xF:
        raise ValueError("a 4-bit code exceeds 15")
    if c.size % 2:
        c = np.append(c, np.uint8(0))
    return (c[0::2] | (c[1::2] << 4)).astype(np.uint8)


def unpack_nibbles(packed: np.ndarray, count: int) -> np.ndarray:
    p = np.asarray(packed, dtype=np.uint8)
    codes = np.empty(p.size * 2, dtype=np.uint8)
    codes[0::2], codes[1::2] = p & 0xF, p >> 4
    return codes[:count]


def packed_weights(values: np.ndarray) -> np.ndarray:
    """A layer's int8 weights (any shape, C order = device order) as the packed bytes the device reads."""
    return pack_nibbles(encode(np.asarray(values).reshape(-1), 4))
