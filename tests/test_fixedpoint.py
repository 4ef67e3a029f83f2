"""Requantization: vectorized numpy == plain-integer oracle == the firmware's C, on random and edge values."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cqtf.fixedpoint import INT32_MAX, INT32_MIN, quantize_multiplier, requantize, requantize_scalar
from cqtf.native import requantize_library

int32s = st.integers(INT32_MIN, INT32_MAX)
multipliers = st.one_of(st.just(0), st.integers(2**30, INT32_MAX))
shifts = st.integers(-31, 30)


@given(acc=int32s, multiplier=multipliers, shift=shifts)
@settings(max_examples=2000, deadline=None)
def test_vectorized_equals_integer_oracle(acc, multiplier, shift):
    assert int(requantize(np.array([acc]), multiplier, shift)[0]) == requantize_scalar(acc, multiplier, shift)


def test_c_requantize_equals_host(native_cache):
    c_requantize = requantize_library(native_cache)
    rng = np.random.default_rng(1)
    edges = [0, 1, -1, 2**30, -(2**30), INT32_MAX, INT32_MIN, INT32_MIN + 1, 12345, -12345]
    accs = np.concatenate([edges, rng.integers(INT32_MIN, INT32_MAX, 3000, endpoint=True),
                           rng.integers(-(2**16), 2**16, 3000)])
    mults = rng.integers(2**30, INT32_MAX, len(accs), endpoint=True)
    mults[:3] = [0, 2**30, INT32_MAX]
    shifts = rng.integers(-31, 30, len(accs), endpoint=True)
    host = requantize(accs, mults, shifts)
    device = [c_requantize(int(a), int(m), int(s)) for a, m, s in zip(accs, mults, shifts)]
    assert np.array_equal(host, device)


def test_ties_round_twice_like_tflm():
    # 3 * 2^30 / 2^31 = 1.5 rounds (away) to 2 in the high multiply; 2 / 2 = 1 (tie) rounds to 1.
    # Exact single rounding of 3 * 0.5 * 0.5 = 0.75 would also give 1, so take a case where they part:
    # acc=5, M=2^30 (0.5), shift=-1: high = round(2.5) = 3, then 3 / 2 = 1.5 -> 2; single rounding: 1.25 -> 1.
    assert requantize_scalar(5, 2**30, -1) == 2
    # Negative: gemmlowp's nudge (1 - 2^30) makes the high multiply round -2.5 toward zero, to -2;
    # then -2 / 2 = -1 exactly. Single rounding of -1.25 would give -1 as well; 7 parts them:
    assert requantize_scalar(-5, 2**30, -1) == -1
    # acc=-7: high = round(-3.5) -> -3 (toward zero), then -3 / 2 = -1.5 -> -2 (away); single: -1.75 -> -2.
    assert requantize_scalar(-7, 2**30, -1) == -2


@given(st.floats(min_value=1e-9, max_value=1e9, allow_nan=False))
def test_quantize_multiplier_is_close_and_normalized(real):
    m, shift = quantize_multiplier(real)
    if m == 0:
        assert real < 2.0**-31
        return
    assert 2**30 <= m <= INT32_MAX and -31 <= shift <= 30
    if shift < 30:
        assert math.isclose(m * 2.0 ** (shift - 31), real, rel_tol=2**-30)


def test_quantize_multiplier_rejects_negative():
    with pytest.raises(ValueError):
        quantize_multiplier(-0.5)
