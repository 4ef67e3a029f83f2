"""Requantization: vectorized numpy == plain-integer oracle == the firmware's C, on random and edge values."""
import math

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cqtf.fixedpoint import (INT32_MAX, INT32_MIN, quantize_multiplier, quantize_multipliers, requantize,
                             requantize_scalar)
from cqtf.native import requantize_library

int32s = st.integers(INT32_MIN, INT32_MAX)
multipliers = st.one_of(st.just(0), st.integers(2**30, INT32_MAX))
shifts = st.integers(-31, 30)


@given(acc=int32s, multiplier=multipliers, shift=shifts)
@settings(max_examples=2000, deadline=None)
def test_vectorized_equals_integer_oracle(acc, multiplier, shift):
    assert int(requantize(np.array([acc]), multiplier, shift)[0]) == requantize_scalar(acc, multiplier, shift)


@pytest.mark.parametrize("shift_range", [(-31, 30), (-31, -1), (0, 30), (-3, 3)])
def test_arrays_with_mixed_shifts_equal_the_oracle(shift_range):
    """The training loop's case: a (N, C, H, W) accumulator, per-channel multipliers and shifts
    broadcast; some channels with and some without the final rounding divide."""
    rng = np.random.default_rng(sum(shift_range) + 40)
    acc = rng.integers(-(2**20), 2**20, (3, 6, 4, 5))
    acc[0, 0, 0, :3] = [INT32_MIN, INT32_MAX, 0]
    acc[1, 1, 1, :2] = [2**33, -(2**33)]  # beyond int32: saturated before the multiply
    mult = rng.integers(2**30, INT32_MAX, 6, endpoint=True)
    mult[2] = INT32_MIN  # not a valid multiplier, but requantize defines it as gemmlowp does
    shift = rng.integers(*shift_range, 6, endpoint=True)
    got = requantize(acc, mult.reshape(1, -1, 1, 1), shift.reshape(1, -1, 1, 1))
    want = np.vectorize(requantize_scalar)(acc, mult.reshape(1, -1, 1, 1), shift.reshape(1, -1, 1, 1))
    assert np.array_equal(got, want)


@pytest.mark.parametrize("multiplier", [2**30, 2**30 + 1, 3 * 2**29, INT32_MAX])
def test_every_small_accumulator_equals_the_oracle_ties_included(multiplier):
    """Every accumulator in [-5000, 5000] against shifts 3..-9: with M near 2^30 both roundings meet
    exact ties (h = (acc + 1) / 2, then odd multiples of 2^(r-1)), on both sides of zero."""
    acc = np.arange(-5000, 5001)
    for shift in range(3, -10, -1):
        want = [requantize_scalar(int(a), multiplier, shift) for a in acc]
        assert requantize(acc, multiplier, shift).tolist() == want, shift


@given(st.lists(st.one_of(st.floats(min_value=0, max_value=1e12, allow_nan=False),
                          st.sampled_from([0.0, 2.0**-32, 2.0**-31, 0.5 - 2**-40, 1.0 - 2**-33, 2.0**30, 2.0**31])),
                min_size=1, max_size=20))
def test_vectorized_quantize_multipliers_equal_the_scalar_one(reals):
    multipliers, shifts = quantize_multipliers(reals)
    assert multipliers.dtype == np.int32 and shifts.dtype == np.int32
    assert [(int(m), int(s)) for m, s in zip(multipliers, shifts)] == [quantize_multiplier(r) for r in reals]


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
