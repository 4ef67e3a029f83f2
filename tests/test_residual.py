"""Average pooling, global average pooling and residual add on every firmware profile: the integer
steps equal plain-Python readings of TFLM and of cqtf_types.h, the training forward pass equals the
host reference (with power-of-two gains too), the firmware's C (compiled for the host) equals the host
reference, and for int8 the tflite-micro interpreter does too."""
import itertools
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cqtf import reference
from cqtf.fixedpoint import (ADD_LEFT_SHIFT, add_fixed, add_int8, add_multipliers, requantize_scalar, round_div,
                             round_shift_scalar, tflm_average)
from cqtf.model_ir import IntModel
from cqtf.native import NativeEngine
from cqtf.pack.header import write_header
from cqtf.profile import FIRMWARE_PROFILES, Rounding, average_rounding, get_profile
from cqtf.train.export import export
from cqtf.train.model import logits_int8
from random_models import random_inputs, random_residual_network

SHAPE = (5, 5, 3)
PROFILES = list(FIRMWARE_PROFILES)
MODES = [m.value for m in Rounding]


def fraction_round(v: Fraction, mode: str) -> int:
    """Round an exact rational by mode: the definition round_div must follow."""
    f = v.numerator // v.denominator
    frac = v - f
    if mode == "floor":
        return f
    if mode == "ceil":
        return f + (frac > 0)
    if frac != Fraction(1, 2):
        return f + (frac > Fraction(1, 2))
    return {"half_up": f + 1, "half_away": f + 1 if v >= 0 else f, "half_even": f + (f % 2)}[mode]


@settings(max_examples=300, deadline=None)
@given(st.integers(-40000, 40000), st.integers(1, 300), st.sampled_from(MODES))
def test_round_div_rounds_the_exact_quotient(x, d, mode):
    assert int(round_div(x, d, mode)) == fraction_round(Fraction(x, d), mode)


@settings(max_examples=300, deadline=None)
@given(st.integers(-128 * 64, 127 * 64), st.integers(1, 64))
def test_half_away_is_tflms_average(total, count):
    assert int(round_div(total, count, "half_away")) == tflm_average(total, count)


def naive_add_int8(a, b, layer, single_rounding):
    """TFLM's AddElementwise, one element at a time in Python integers."""
    def rescale(x, k):
        m, s = int(layer.multiplier[k]), int(layer.shift[k])
        if single_rounding is None:
            return requantize_scalar(x, m, s)
        return round_shift_scalar(x * m, 31 - s, single_rounding)

    sa = rescale((a + layer.input_offset) * (1 << ADD_LEFT_SHIFT), 0)
    sb = rescale((b + layer.input_b_offset) * (1 << ADD_LEFT_SHIFT), 1)
    return min(max(rescale(sa + sb, 2) + layer.output_offset, layer.act_min), layer.act_max)


def naive_avgpool(x, layer, mode):
    (kh, kw), (sh, sw), (pt, pl) = layer.kernel, layer.stride, layer.pad
    in_h, in_w, _ = layer.in_shape
    out = np.zeros(layer.out_shape, np.int64)
    for y, x_, c in itertools.product(*map(range, layer.out_shape)):
        values = [int(x[iy, ix, c]) for iy in range(y * sh - pt, y * sh - pt + kh)
                  for ix in range(x_ * sw - pl, x_ * sw - pl + kw) if 0 <= iy < in_h and 0 <= ix < in_w]
        out[y, x_, c] = min(max(fraction_round(Fraction(sum(values), len(values)), mode), layer.act_min),
                            layer.act_max)
    return out


@pytest.mark.parametrize("profile_name", PROFILES)
@pytest.mark.parametrize("seed", [1, 2, 3])
def test_training_forward_equals_reference(profile_name, seed):
    profile = get_profile(profile_name)
    gains = [1, -1, 2, 0] if profile.is_fixed and seed == 3 else None
    network = random_residual_network(seed, SHAPE, profile, gains, weight_scale=(1.0, 4.0, 1.0)[seed - 1])
    model = export(network, SHAPE, 4)
    assert [layer.kind for layer in model.layers] == ["conv2d", "conv2d", "conv2d", "add", "avgpool2d", "avgpool2d",
                                                       "fully_connected"]
    assert model.layers[3].inputs == (3, 1)  # the running tensor (layer 2's output) and the saved one (layer 0's)
    x = random_inputs(seed + 100, 48, SHAPE)
    assert np.array_equal(logits_int8(network, x), reference.run(model, x))


@pytest.mark.parametrize("profile_name", PROFILES)
def test_add_and_avgpool_follow_the_spec(profile_name):
    profile = get_profile(profile_name)
    network = random_residual_network(2, SHAPE, profile)
    model = export(network, SHAPE, 4)
    layers = reference.run_layers(model, random_inputs(7, 3, SHAPE))
    add, pool, gap = model.layers[3], model.layers[4], model.layers[5]
    for n in range(3):
        a, b = layers[2][n].astype(int), layers[0][n].astype(int)
        if profile.is_fixed:
            s = add.shift
            want = [min(max(round_shift_scalar((int(p) << int(s[0])) + (int(q) << int(s[1])), -int(s[2]),
                                               profile.requant.rounding), add.act_min), add.act_max)
                    for p, q in zip(a.ravel(), b.ravel())]
        else:
            single = None if profile.requant.kind.value == "tflm_double" else profile.requant.rounding
            want = [naive_add_int8(int(p), int(q), add, single) for p, q in zip(a.ravel(), b.ravel())]
        assert layers[3][n].ravel().tolist() == want
        mode = average_rounding(profile).value
        assert np.array_equal(layers[4][n], naive_avgpool(layers[3][n], pool, mode))
        assert gap.kernel == tuple(pool.out_shape[:2]) and gap.out_shape[:2] == (1, 1)
        assert np.array_equal(layers[5][n], naive_avgpool(layers[4][n], gap, mode))


def test_gains_leave_the_float_function_unchanged():
    """Power-of-two gains on a residual network scale its float output by 2^(total gain), exactly:
    the add rescales the saved input by the gain difference."""
    profile = get_profile("fixed8")
    plain = random_residual_network(4, SHAPE, profile)
    gained = random_residual_network(4, SHAPE, profile, gains=[2, -1, 1, 0])
    for net in (plain, gained):
        net.set_quantized(False)
        net.eval()
    x = torch.from_numpy(random_inputs(5, 16, SHAPE))
    with torch.no_grad():
        assert torch.allclose(gained(x) * 2.0 ** -2, plain(x), rtol=1e-5, atol=1e-6)


def test_add_multipliers_rescale_below_one():
    multiplier, shift = add_multipliers(np.float32(0.02), np.float32(0.05), np.float32(0.06))
    assert all(2**30 <= m < 2**31 for m in multiplier) and all(s <= 0 for s in shift)
    # input b has the larger scale: its factor is exactly 1/2, a Q31 of 2^30 shifted by 0
    assert (multiplier[1], shift[1]) == (2**30, 0)


def test_fixed_add_aligns_formats():
    a, b = np.array([5, -7, 127]), np.array([3, 3, -128])
    # a in Q.4, b in Q.3: b shifted left once; the sum (Q.4) to Q.3 rounds once by half_up
    assert add_fixed(a, b, [0, 1, -1], "half_up", -127, 127).tolist() == [6, 0, -64]  # 11/2, -1/2, -129/2
    assert add_int8(np.array([0]), np.array([0]), (0, 0), [2**30] * 3, [0, 0, -20], 0, -128, 127).tolist() == [0]


@pytest.mark.parametrize("profile_name", PROFILES)
def test_firmware_c_equals_reference(profile_name, tmp_path, native_cache):
    profile = get_profile(profile_name)
    network = random_residual_network(5, SHAPE, profile, gains=[1, 0, -1, 0] if profile.is_fixed else None)
    model = export(network, SHAPE, 4)
    write_header(model, tmp_path)
    engine = NativeEngine(tmp_path, native_cache)
    x = random_inputs(9, 40, SHAPE)
    host_layers = reference.run_layers(model, x[:2])
    for k in range(len(model.layers)):  # every layer's tensor, as the device's instrumentation returns it
        assert np.array_equal(engine.run(x[0], last_layer=k), host_layers[k][0].reshape(-1)), f"layer {k}"
    assert np.array_equal(np.stack([engine.run(s) for s in x]), reference.run(model, x))


def test_model_with_inputs_round_trips(tmp_path):
    model = export(random_residual_network(1, SHAPE), SHAPE, 4)
    model.save(tmp_path / "m.npz")
    loaded = IntModel.load(tmp_path / "m.npz")
    assert loaded.layers[3].inputs == (3, 1) and loaded.hash() == model.hash()
    assert "inputs" not in model._canonical_meta()["layers"][0]  # a chain layer hashes as before the field


def test_tflm_interpreter_equals_reference():
    pytest.importorskip("tflite_micro")
    from cqtf import oracle

    for seed in (1, 2):
        model = export(random_residual_network(seed, SHAPE), SHAPE, 4)
        result = oracle.compare(model, random_inputs(seed + 20, 60, SHAPE))
        assert not result.host_mismatched.any()
