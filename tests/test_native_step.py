"""The C output step of the training forward (cqtf.train.native_step) equals the numpy path it replaces.

Element by element against cqtf.fixedpoint (requantize, requantize_single, saturate, round_shift) on
random accumulators, multipliers, shifts and every rounding mode; then whole trainings with the C step
and with CQTF_NATIVE_STEP=0 give the same model, bit for bit.
"""
from __future__ import annotations

import dataclasses

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cqtf.pipeline import dataset_for_profile
from cqtf.fixedpoint import quantize_multiplier, requantize, requantize_single, round_shift, saturate
from cqtf.profile import ROUNDING_CODES, Rounding
from cqtf.train import native_step
from cqtf.train.trainer import TrainConfig, train

pytestmark = pytest.mark.skipif(native_step.library() is None, reason="no host C compiler for the native step")

MODES = list(ROUNDING_CODES)


def _scaled_range(acc, scales):
    per_channel = acc.reshape(acc.shape[0], acc.shape[1], -1)
    lo, hi = per_channel.min(axis=(0, 2)), per_channel.max(axis=(0, 2))
    return float((lo * scales).min()), float((hi * scales).max())


@st.composite
def int8_layers(draw):
    rng = np.random.default_rng(draw(st.integers(0, 2**32 - 1)))
    n, channels, inner = draw(st.integers(1, 4)), draw(st.integers(1, 6)), draw(st.integers(1, 9))
    bound = draw(st.sampled_from([2**8, 2**16, 2**24 - 1]))
    acc = rng.integers(-bound, bound + 1, size=(n, channels, inner)).astype(np.float32)
    reals = np.exp(rng.uniform(np.log(1e-7), np.log(4.0), size=channels))
    pairs = [quantize_multiplier(float(r)) for r in reals]
    multiplier = np.array([m for m, _ in pairs], np.int32)
    shift = np.array([s for _, s in pairs], np.int32)
    zero_point = draw(st.integers(-128, 127))
    act_min = draw(st.integers(-128, 127))
    act_max = draw(st.integers(act_min, 127))
    return acc, multiplier, shift, zero_point, act_min, act_max


@given(layer=int8_layers(), single=st.booleans(), mode=st.sampled_from(MODES),
       scale=st.floats(2.0 ** -14, 1.0, width=32))
@settings(max_examples=400, deadline=None)
def test_int8_step_equals_numpy(layer, single, mode, scale):
    acc, multiplier, shift, zero_point, act_min, act_max = layer
    channel_scales = np.linspace(0.5, 2.0, acc.shape[1])
    out = native_step.outputs_s8(acc, multiplier, shift, single, ROUNDING_CODES[mode], zero_point, act_min, act_max,
                                 np.float32(scale), channel_scales)
    view = (1, -1, 1)
    acc64 = acc.astype(np.int64)
    pre = (requantize_single(acc64, multiplier.reshape(view), shift.reshape(view), mode) if single
           else requantize(acc64, multiplier.reshape(view), shift.reshape(view))) + zero_point
    q = np.clip(pre, act_min, act_max)
    np.testing.assert_array_equal(out.q.numpy(), q)
    exact = (torch.from_numpy(q).float() - zero_point) * float(np.float32(scale))
    assert torch.equal(out.exact, exact)
    np.testing.assert_array_equal(out.high.numpy(), pre > act_max)
    np.testing.assert_array_equal(out.low.numpy(), pre < act_min)
    np.testing.assert_array_equal(out.inside.numpy(), pre == q)
    assert (out.pre_min, out.pre_max) == (pre.min(), pre.max())
    assert (out.acc_min, out.acc_max) == (acc64.min(), acc64.max())
    assert out.observed == _scaled_range(acc64, channel_scales)


@given(seed=st.integers(0, 2**32 - 1), acc_bits=st.integers(12, 32), shift=st.integers(-6, 24),
       mode=st.sampled_from(MODES), relu=st.booleans(), shape=st.tuples(st.integers(1, 3), st.integers(1, 5),
                                                                           st.integers(1, 7)))
@settings(max_examples=400, deadline=None)
def test_fixed_step_equals_numpy(seed, acc_bits, shift, mode, relu, shape):
    rng = np.random.default_rng(seed)
    reach = 1 << acc_bits  # past the accumulator's range both ways: saturation happens
    acc = rng.integers(-reach, reach, size=shape, dtype=np.int64)
    acc.flat[0] = reach  # the extremes saturate for sure
    bias = rng.integers(-reach // 4, reach // 4 + 1, size=shape[1], dtype=np.int64)
    act_min, act_max = (0, 127) if relu else (-127, 127)
    scale = np.float32(2.0 ** -5)
    out = native_step.outputs_fx(acc, bias, acc_bits, shift, ROUNDING_CODES[mode], act_min, act_max, scale, relu,
                                 2.0 ** -9)
    biased = acc + bias[None, :, None]
    sat = saturate(biased, acc_bits)
    pre = round_shift(sat, shift, mode)
    q = np.clip(pre, act_min, act_max)
    hi, lo = (1 << (acc_bits - 1)) - 1, -(1 << (acc_bits - 1))
    np.testing.assert_array_equal(out.q.numpy(), q)
    assert torch.equal(out.exact, torch.from_numpy(q).float() * float(scale))
    high, low, negative = (pre > act_max) | (sat == hi), (pre < act_min) | (sat == lo), pre < 0
    np.testing.assert_array_equal(out.high.numpy(), high)
    np.testing.assert_array_equal(out.low.numpy(), low)
    np.testing.assert_array_equal(out.negative.numpy(), negative)
    np.testing.assert_array_equal(out.inside.numpy(), ~(high | (negative if relu else low)))
    assert (out.pre_min, out.pre_max, out.acc_min, out.acc_max) == (pre.min(), pre.max(), sat.min(), sat.max())
    assert out.observed == _scaled_range(biased, np.full(shape[1], 2.0 ** -9))


def test_half_way_ties_of_every_mode():
    """acc * M / 2^31 exactly half way (M = 2^30, shift -1: acc / 4): each mode's tie rule shows."""
    acc = np.array([[[2, 6, -2, -6, 3, -3]]], np.float32)  # 0.5, 1.5, -0.5, -1.5, 0.75, -0.75
    expected = {Rounding.HALF_UP: [1, 2, 0, -1, 1, -1], Rounding.HALF_AWAY: [1, 2, -1, -2, 1, -1],
                Rounding.HALF_EVEN: [0, 2, 0, -2, 1, -1], Rounding.FLOOR: [0, 1, -1, -2, 0, -1],
                Rounding.CEIL: [1, 2, 0, -1, 1, 0]}
    for mode, values in expected.items():
        out = native_step.outputs_s8(acc, np.array([2**30], np.int32), np.array([-1], np.int32), True,
                                     ROUNDING_CODES[mode], 0, -128, 127, np.float32(1.0), [1.0])
        assert out.q.numpy().ravel().tolist() == values, mode


@pytest.mark.parametrize("profile", ["int8", "int8-single", "fixed8", "fixed8-acc16", "fixed8-blk32", "pot4"])
def test_training_with_the_native_step_gives_the_same_model(profile, monkeypatch):
    data = dataset_for_profile("digits", profile)
    data = dataclasses.replace(data, x_train=data.x_train[:600], y_train=data.y_train[:600])  # quick, still a training
    config = TrainConfig(profile=profile, float_epochs=1, quant_epochs=2, seed=3)
    native = train(data, config).int_model.hash()
    monkeypatch.setenv("CQTF_NATIVE_STEP", "0")
    assert native_step.library() is None
    assert train(data, config).int_model.hash() == native
