"""Integer requantization exactly as the device does it (int8 affine, TFLite Micro compatible).

The C twin is firmware/src/kernels/cqtf_requant.h; tests check the two agree bit for bit.
All array math is in int64 numpy, where every intermediate below fits (|acc * M| < 2^62).
"""
from __future__ import annotations

import math

import numpy as np

INT32_MIN = -(2**31)
INT32_MAX = 2**31 - 1


def quantize_multiplier(real_multiplier: float) -> tuple[int, int]:
    """Split a positive real multiplier into a Q31 mantissa and a power-of-two shift (TFLM's QuantizeMultiplier).

    Returns (multiplier, shift) with real ~= multiplier * 2^(shift - 31); shift > 0 is a left shift.
    """
    if real_multiplier < 0:
        raise ValueError(f"multiplier must be >= 0, got {real_multiplier}")
    if real_multiplier == 0.0:
        return 0, 0
    mantissa, shift = math.frexp(real_multiplier)  # mantissa in [0.5, 1)
    q_fixed = int(math.floor(mantissa * 2**31 + 0.5))  # round half away from zero (mantissa > 0)
    if q_fixed == 2**31:
        q_fixed //= 2
        shift += 1
    if shift < -31:
        return 0, 0
    if shift > 30:
        return INT32_MAX, 30
    return q_fixed, shift


def quantize_multipliers(real_multipliers) -> tuple[np.ndarray, np.ndarray]:
    """quantize_multiplier of each element: (int32 multipliers, int32 shifts). A plain loop: layers
    have tens of channels, where it beats numpy's per-call overhead, and it is the scalar code itself."""
    real = np.asarray(real_multipliers, dtype=np.float64)
    pairs = [quantize_multiplier(r) for r in real.ravel().tolist()]
    multipliers = np.array([m for m, _ in pairs], dtype=np.int32).reshape(real.shape)
    return multipliers, np.array([sh for _, sh in pairs], dtype=np.int32).reshape(real.shape)


def effective_scale(input_scale: np.float32, weight_scale: np.float32, output_scale: np.float32) -> float:
    """The real multiplier of a layer, computed as TFLM does: double products of float32 scales."""
    return float(input_scale) * float(weight_scale) / float(output_scale)


def _trunc_div_pow2(x: np.ndarray, bits: int) -> np.ndarray:
    """x / 2^bits rounded toward zero, like C integer division."""
    return np.sign(x) * (np.abs(x) >> bits)


def requantize(acc, multiplier, shift) -> np.ndarray:
    """TFLM MultiplyByQuantizedMultiplier with double rounding, elementwise and broadcasting.

    1. x = acc * 2^max(shift, 0), saturated to int32 (cqtf's defined behaviour where C would overflow);
    2. SaturatingRoundingDoublingHighMul(x, multiplier): round(x * M / 2^31); gemmlowp's nudge rounds
       positive ties up and negative ties toward zero;
    3. RoundingDivideByPOT(max(-shift, 0)): round to nearest, ties away from zero.
    Step 2 then 3 round twice, which is what makes TFLM differ from TFLite's single rounding.

    Both steps in floor arithmetic, with as few whole-array passes as the training loop can afford:
    step 2's truncating (p + nudge) / 2^31 is floor((p + 2^30) / 2^31) for either sign of p, and
    step 3's tie-away rounding is floor((h + 2^(r-1) - [h < 0]) / 2^r) for r > 0.
    """
    m = np.asarray(multiplier, dtype=np.int64)
    s = np.asarray(shift, dtype=np.int64)
    x = np.asarray(acc, dtype=np.int64)
    if (s > 0).any():
        x = np.clip(x << np.maximum(s, 0), INT32_MIN, INT32_MAX)
    elif x.size and (x.min() < INT32_MIN or x.max() > INT32_MAX):
        x = np.clip(x, INT32_MIN, INT32_MAX)
    high = x * m
    high += np.int64(1 << 30)
    high >>= 31
    if (m == INT32_MIN).any():  # the one product that overflows int32: gemmlowp saturates it
        high = np.where((x == INT32_MIN) & (m == INT32_MIN), INT32_MAX, high)
    right = np.maximum(-s, 0)
    rounds = right > 0
    half = np.where(rounds, np.int64(1) << np.maximum(right - 1, 0), 0)
    if rounds.all():
        return (high + half - (high < 0)) >> right
    return (high + half - ((high < 0) & rounds)) >> right


def requantize_scalar(acc: int, multiplier: int, shift: int) -> int:
    """The same as `requantize` in plain Python integers: an independent oracle for tests."""
    left, right = max(shift, 0), max(-shift, 0)
    x = min(max(acc * (1 << left), INT32_MIN), INT32_MAX)
    if x == INT32_MIN and multiplier == INT32_MIN:
        high = INT32_MAX
    else:
        product = x * multiplier
        nudge = (1 << 30) if product >= 0 else 1 - (1 << 30)
        total = product + nudge
        high = abs(total) // (1 << 31) * (1 if total >= 0 else -1)
    if right == 0:
        return high
    quotient = high // (1 << right)  # floor division, like an arithmetic shift
    remainder = high - quotient * (1 << right)
    half = 1 << (right - 1)
    # round half away from zero: a positive tie rounds up, a negative tie rounds down (toward -inf is floor)
    if remainder > half or (remainder == half and high >= 0):
        quotient += 1
    return quotient


# ---- Fixed-point steps of the other profiles (cqtf.profile). C twins: kernels/cqtf_fixed.h ----

# Rounding right shifts (e > 0) in floor arithmetic, two to four whole-array passes (|x| < 2^62):
# ceil(x / 2^e) = -floor(-x / 2^e); half up: floor((x + 2^(e-1)) / 2^e); half away from zero: the same,
# less one where x < 0, so a negative tie rounds down.
_RIGHT_SHIFTS = {
    "floor": lambda x, e: x >> e,
    "ceil": lambda x, e: -((-x) >> e),
    "half_up": lambda x, e: (x + (np.int64(1) << (e - 1))) >> e,
    "half_away": lambda x, e: (x + ((np.int64(1) << (e - 1)) - (x < 0))) >> e,
}


def round_shift(x, e, mode) -> np.ndarray:
    """x / 2^e rounded by `mode` (a cqtf.profile.Rounding or its value) for e > 0; x * 2^-e for e <= 0
    (a left shift, exact: saturate afterwards). Elementwise int64, e broadcasts."""
    mode = getattr(mode, "value", mode)
    x = np.asarray(x, dtype=np.int64)
    e = np.asarray(e, dtype=np.int64)
    if e.ndim == 0 and e <= 0:
        return x << -e
    if mode in _RIGHT_SHIFTS and (e > 0).all():
        return _RIGHT_SHIFTS[mode](x, e)
    right = np.maximum(e, 0)
    left = np.maximum(-e, 0)
    floor = x >> right
    rem = x - (floor << right)  # in [0, 2^right)
    half = np.where(right > 0, np.int64(1) << np.maximum(right - 1, 0), 0)
    if mode == "floor":
        up = np.zeros_like(floor, dtype=bool)
    elif mode == "ceil":
        up = rem > 0
    elif mode == "half_up":
        up = (right > 0) & (rem >= half)
    elif mode == "half_away":
        up = (right > 0) & ((rem > half) | ((rem == half) & (x >= 0)))
    elif mode == "half_even":
        up = (right > 0) & ((rem > half) | ((rem == half) & ((floor & 1) == 1)))
    else:
        raise ValueError(f"unknown rounding mode {mode}")
    return (floor + up) << left


def round_shift_scalar(x: int, e: int, mode) -> int:
    """The same in plain Python integers via exact fractions: the oracle for tests."""
    from fractions import Fraction
    import math as _math

    mode = getattr(mode, "value", mode)
    if e <= 0:
        return x << -e
    v = Fraction(x, 1 << e)
    f = _math.floor(v)
    frac = v - f
    if mode == "floor":
        return f
    if mode == "ceil":
        return _math.ceil(v)
    if frac != Fraction(1, 2):
        return f + (frac > Fraction(1, 2))
    return {"half_up": f + 1, "half_away": f + 1 if x >= 0 else f, "half_even": f + (f % 2)}[mode]


def saturate(x, bits: int) -> np.ndarray:
    """Clamp to the signed range of `bits` bits."""
    return np.clip(np.asarray(x, dtype=np.int64), -(1 << (bits - 1)), (1 << (bits - 1)) - 1)


def requantize_single(acc, multiplier, shift, mode) -> np.ndarray:
    """int8 single rounding: round(acc * multiplier / 2^(31 - shift)) once (|acc * M| < 2^62 in int64)."""
    acc = np.asarray(acc, dtype=np.int64)
    return round_shift(acc * np.asarray(multiplier, dtype=np.int64), 31 - np.asarray(shift, dtype=np.int64), mode)


# ---- Average pooling and elementwise add (C twins: kernels/cqtf_avgpool2d.c, cqtf_add.c) ----

def round_div(x, d, mode) -> np.ndarray:
    """x / d for d > 0, rounded by `mode` (a cqtf.profile.Rounding or its value). Elementwise int64."""
    mode = getattr(mode, "value", mode)
    x = np.asarray(x, dtype=np.int64)
    d = np.asarray(d, dtype=np.int64)
    floor = x // d
    rem = x - floor * d  # in [0, d)
    if mode == "floor":
        return floor
    if mode == "ceil":
        return floor + (rem > 0)
    twice = 2 * rem
    if mode == "half_up":
        up = twice >= d
    elif mode == "half_away":
        up = (twice > d) | ((twice == d) & (x >= 0))
    elif mode == "half_even":
        up = (twice > d) | ((twice == d) & ((floor & 1) == 1))
    else:
        raise ValueError(f"unknown rounding mode {mode}")
    return floor + up


def tflm_average(total: int, count: int) -> int:
    """TFLite Micro's int8 average-pool rounding, transcribed (C division truncates toward zero):
    total > 0 ? (total + count / 2) / count : (total - count / 2) / count. The oracle of round_div's
    half_away mode in tests."""
    def c_div(a: int, b: int) -> int:
        q = abs(a) // abs(b)
        return q if (a >= 0) == (b > 0) else -q

    return c_div(total + count // 2, count) if total > 0 else c_div(total - count // 2, count)


ADD_LEFT_SHIFT = 20  # TFLM's int8 ADD: inputs are scaled up by 2^20 before rescaling to a common scale


def add_multipliers(scale_a: float, scale_b: float, scale_out: float) -> tuple[list[int], list[int]]:
    """TFLM's int8 ADD parameters (PrepareGeneralAdd) from float32 scales: ([m_a, m_b, m_out], [s_a, s_b, s_out])."""
    twice_max = 2.0 * max(float(np.float32(scale_a)), float(np.float32(scale_b)))
    reals = (float(np.float32(scale_a)) / twice_max, float(np.float32(scale_b)) / twice_max,
             twice_max / ((1 << ADD_LEFT_SHIFT) * float(np.float32(scale_out))))
    pairs = [quantize_multiplier(r) for r in reals]
    return [m for m, _ in pairs], [s for _, s in pairs]


def add_int8(a, b, offsets: tuple[int, int], multiplier, shift, output_offset: int, act_min: int, act_max: int,
             single_rounding=None) -> np.ndarray:
    """int8 affine ADD as TFLM computes it (reference_integer_ops::Add): each input (q + offset) * 2^20
    rescaled by its multiplier, the sum rescaled to the output; double rounding, or with
    single_rounding (a rounding mode) each rescale rounded once as requantize_single does."""
    def rescale(x, k):
        if single_rounding is None:
            return requantize(x, multiplier[k], shift[k])
        return requantize_single(x, multiplier[k], shift[k], single_rounding)

    sa = rescale((np.asarray(a, np.int64) + offsets[0]) << ADD_LEFT_SHIFT, 0)
    sb = rescale((np.asarray(b, np.int64) + offsets[1]) << ADD_LEFT_SHIFT, 1)
    out = rescale(sa + sb, 2) + output_offset
    return np.clip(out, act_min, act_max)


def add_fixed(a, b, shift, rounding, act_min: int, act_max: int) -> np.ndarray:
    """Fixed-point ADD: a << shift[0] plus b << shift[1] (both to the finer input format, exact in
    int32), then round_shift(sum, -shift[2], rounding) to the output format, clamped."""
    total = (np.asarray(a, np.int64) << int(shift[0])) + (np.asarray(b, np.int64) << int(shift[1]))
    return np.clip(round_shift(total, -int(shift[2]), rounding), act_min, act_max)
