"""The compiled training steps (cqtf.train.native_forward) equal their numpy reference bit for bit:
an int8 layer's integers from float parameters, and requantize / clamp / masks / observer range after
the accumulator (int8) or the dot product (fixed point), on random values, ties, saturation, every
rounding and the layouts the training forward produces."""
import dataclasses
import os
import platform
import shutil

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cqtf.fixedpoint import round_shift
from cqtf.profile import PRESETS, ROUNDING_CODES, Accumulator, Requant, Requantizer, Rounding, get_profile
from cqtf.reference_fixed import accumulate
from cqtf.train import native_forward
from cqtf.train.layers import (FixedParams, IntegerParams, QAct, QParams, QuantConv1d, QuantConv2d,
                               QuantDepthwiseConv2d, QuantLinear)

# Where gcc is present the library must build (a build error fails here instead of skipping every test).
pytestmark = pytest.mark.skipif(shutil.which("gcc") is None, reason="no C compiler for the compiled training steps")


def test_library_builds_and_is_used():
    assert native_forward.enabled()


def _layer(relu: bool, profile, out_range=(-3.0, 5.0), conv=True):
    layer = QuantConv2d(3, 4, 3, relu=relu) if conv else QuantLinear(12, 4, relu=relu)
    layer.profile = profile
    layer.observer.observe_range(*out_range)
    return layer


def _native_post(layer, dot: torch.Tensor, p: IntegerParams, channel_scales: np.ndarray):
    """What the layer's native forward does after the convolution, with p's multipliers and shifts:
    the same tuple as _requantize_numpy, and whether the SIMD pass computed it."""
    table = torch.zeros((len(p.multiplier), native_forward.CHANNEL_FIELDS), dtype=torch.int64)
    table[:, native_forward.MULTIPLIER] = torch.from_numpy(p.multiplier.astype(np.int64))
    table[:, native_forward.SHIFT] = torch.from_numpy(p.shift.astype(np.int64))
    table.numpy().view(np.float64)[:, native_forward.SCALE] = channel_scales
    params = native_forward.Int8Params(None, None, None, 0, table)
    layout = native_forward.runs_layout(dot)
    assert layout is not None
    r = native_forward.int8_post(dot, layout, params, layer._native_mode(), p.out_qparams.zero_point, p.act_min,
                              p.act_max, p.out_qparams.scale)
    masks, n_saturated = layer._native_masks(r)
    return (r.q, r.exact, *masks, n_saturated, (r.acc_low, r.acc_high)), r.vectorized


def _native_and_numpy_posts(dot: torch.Tensor, relu: bool, profile, linear: bool, multiplier, shift, scales):
    """The compiled and numpy post steps of accumulator `dot` with these multipliers and shifts (as
    _requantize_numpy returns them), and whether the SIMD pass ran, for an output quantization with
    zero point -7 (-128 after a ReLU) clamped to [zero point or -128, 100]."""
    layer = _layer(relu, profile, conv=not linear)
    if linear:
        layer.channel_view = (1, -1)
    out_qparams = QParams(np.float32(0.0371), -7 if not relu else -128)
    p = IntegerParams(None, None, None, multiplier, shift, out_qparams, out_qparams.zero_point if relu else -128, 100)
    got, vectorized = _native_post(layer, dot, p, scales)
    return got, layer._requantize_numpy(dot.long().numpy(), p, scales), vectorized


def _single_rounding(mode: Rounding):
    return dataclasses.replace(get_profile("int8-single"), requant=Requantizer(Requant.SINGLE, mode))


def _profiles():
    yield "double", PRESETS["int8"]
    for mode in Rounding:
        yield f"single-{mode.value}", _single_rounding(mode)


@pytest.mark.parametrize("name,profile", list(_profiles()))
@pytest.mark.parametrize("layout", ["nchw", "channels_last", "permuted", "linear"])
@pytest.mark.parametrize("relu", [False, True])
def test_post_equals_numpy(name, profile, layout, relu):
    rng = np.random.default_rng(abs(hash((name, layout, relu))) % 2**32)
    channels = 5
    shape = (3, channels) if layout == "linear" else (3, channels, 4, 6)
    acc = rng.integers(-(2**24) + 1, 2**24, shape)
    acc.reshape(-1)[:4] = [2**24 - 1, -(2**24) + 1, 0, -1]
    # multipliers that make ties common (2^30: a half), and shifts both ways, the left ones saturating
    multiplier = np.array([2**30, 2**30 + 1, 3 * 2**29, 2**31 - 1, 0][:channels], dtype=np.int32)
    shift = np.array([-1, -7, 2, -20, 0][:channels], dtype=np.int32)
    # half the elements where the output lands near the clamp's range, or ties and clamps hide each other
    real = multiplier.astype(np.float64) * 2.0 ** (shift.astype(np.float64) - 31)
    view = (1, -1) + (1,) * (len(shape) - 2)
    near = np.round(rng.uniform(-150, 150, shape) / np.maximum(real, 1e-9).reshape(view))
    near += rng.integers(-2, 3, shape)  # and their neighbours, where ties fall
    acc = np.where(rng.random(shape) < 0.5, np.clip(near, -(2**24) + 1, 2**24 - 1).astype(np.int64), acc)
    dot = torch.from_numpy(acc.astype(np.float32))
    if layout == "channels_last":
        dot = dot.contiguous(memory_format=torch.channels_last)
    if layout == "permuted":  # storage (N, H, C, W): runs of W elements per channel
        dot = dot.permute(0, 2, 1, 3).contiguous().permute(0, 2, 1, 3)
    scales = rng.uniform(1e-4, 1e-2, channels)
    got, want, _ = _native_and_numpy_posts(dot, relu, profile, layout == "linear", multiplier, shift, scales)
    q, exact = got[0], got[1]
    assert q.stride() == dot.stride() and exact.stride() == dot.stride()  # gradients follow the layout
    assert torch.equal(q, want[0])
    assert torch.equal(exact, want[1])
    for mine, theirs in zip(got[2:5], want[2:5]):  # inside, high, low: built exactly where numpy builds them
        assert (mine is None) == (theirs is None)
        if mine is not None:
            assert torch.equal(mine, theirs)
    assert got[5] == want[5]  # saturated count
    assert got[6] == want[6]  # the observer's range, float64 for float64


@pytest.mark.parametrize("name,profile", list(_profiles()))
@pytest.mark.parametrize("layout", ["channels_last", "linear", "nchw"])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("channels", [37, 8])
def test_post_simd_pass_equals_numpy(name, profile, layout, relu, channels):
    """The SIMD pass (channels last, every multiplier below 1, any rounding but half to even) == numpy:
    37 channels (not a multiple of a vector) or 8 (parameters repeated over 8 positions, the last
    repeat partial), ties forced by multipliers of 2^30, outputs around the clamp, accumulators at
    +-(2^24 - 1), right shifts from 31 to 60; it runs exactly where it applies."""
    rng = np.random.default_rng(abs(hash(("simd", name, layout, relu, channels))) % 2**32)
    shape = (4, channels) if layout == "linear" else (3, channels, 2, 5)
    multiplier = rng.integers(2**30, 2**31, channels).astype(np.int32)
    multiplier[::3] = 2**30  # a half: ties wherever the accumulator is odd
    multiplier[1] = 0
    multiplier[2] = 2**30 + 1  # with shift -1 and an accumulator of -1: p = -2^30 - 1, the first p whose
    shift = rng.integers(-29, 1, channels).astype(np.int32)  # double rounding subtracts low_step
    shift[:3] = [0, -29, -1]  # multipliers below 1: right shifts 31..60
    real = multiplier.astype(np.float64) * 2.0 ** (shift.astype(np.float64) - 31)
    view = (1, -1) + (1,) * (len(shape) - 2)
    near = np.round(rng.uniform(-150, 150, shape) / np.maximum(real, 1e-9).reshape(view)) + rng.integers(-2, 3, shape)
    acc = np.where(rng.random(shape) < 0.6, np.clip(near, -(2**24) + 1, 2**24 - 1),
                   rng.integers(-(2**24) + 1, 2**24, shape)).astype(np.int64)
    acc.reshape(-1)[:4] = [2**24 - 1, -(2**24) + 1, 0, -1]
    acc[(0, 2) + (0,) * (len(shape) - 2)] = -1
    dot = torch.from_numpy(acc.astype(np.float32))
    if layout == "channels_last":
        dot = dot.contiguous(memory_format=torch.channels_last)
    scales = rng.uniform(1e-4, 1e-2, channels)
    got, want, vectorized = _native_and_numpy_posts(dot, relu, profile, layout == "linear", multiplier, shift, scales)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    for mine, theirs in zip(got[2:5], want[2:5]):
        assert (mine is None) == (theirs is None) and (mine is None or torch.equal(mine, theirs))
    assert got[5:] == want[5:]
    assert want[5] > 0  # the clamp saturated somewhere
    assert vectorized == (layout != "nchw" and name != "single-half_even")


@given(data=st.data())
@settings(max_examples=200, deadline=None)
def test_post_random_parameters(data):
    """Random multipliers and shifts as quantize_multiplier makes them, random clamps and zero points."""
    channels = data.draw(st.integers(1, 6))
    multiplier = np.array(data.draw(st.lists(st.one_of(st.just(0), st.integers(2**30, 2**31 - 1)),
                                             min_size=channels, max_size=channels)), dtype=np.int32)
    shift = np.array(data.draw(st.lists(st.integers(-31, 30), min_size=channels, max_size=channels)), dtype=np.int32)
    seed = data.draw(st.integers(0, 2**31))
    magnitude = data.draw(st.sampled_from([2**6, 2**14, 2**24 - 1]))
    acc = np.random.default_rng(seed).integers(-magnitude, magnitude + 1, (2, channels, 3, 2))
    zero_point = data.draw(st.integers(-128, 127))
    act_min = data.draw(st.integers(-128, 127))
    act_max = data.draw(st.integers(act_min, 127))
    name, profile = data.draw(st.sampled_from(list(_profiles())))
    relu = data.draw(st.booleans())
    layer = _layer(relu, profile)
    p = IntegerParams(None, None, None, multiplier, shift, QParams(np.float32(0.05), zero_point), act_min, act_max)
    dot = torch.from_numpy(acc.astype(np.float32)).contiguous(memory_format=torch.channels_last)
    scales = np.full(channels, 0.001)
    got, _ = _native_post(layer, dot, p, scales)
    want = layer._requantize_numpy(acc, p, scales)
    assert torch.equal(got[0], want[0]) and torch.equal(got[1], want[1])
    for mine, theirs in zip(got[2:5], want[2:5]):
        assert (mine is None) == (theirs is None) and (mine is None or torch.equal(mine, theirs))
    assert got[5:] == want[5:]


def test_runs_layout():
    x = torch.zeros(2, 3, 4, 5)
    assert native_forward.runs_layout(x) == (2, 3, 20)
    assert native_forward.runs_layout(x.contiguous(memory_format=torch.channels_last)) == (40, 3, 1)
    assert native_forward.runs_layout(torch.zeros(7, 3)) == (7, 3, 1)
    assert native_forward.runs_layout(x[:, :, ::2]) is None  # not dense
    assert native_forward.runs_layout(x.permute(0, 2, 1, 3)) == (6, 4, 5)  # storage (N, C, H, W): runs of W
    assert native_forward.runs_layout(torch.zeros(2, 1, 3)) == (6, 1, 1)  # one channel: any order


@pytest.mark.parametrize("conv", [True, False])
@pytest.mark.parametrize("seed", range(6))
def test_params_equal_integer_params(conv, seed):
    """int8_params == QuantLayer.integer_params (weights, scales, bias, multipliers) and the shadow's
    weight offset == (weights * scale - weight), on random weights with an all-zero channel, weights
    that are exact ties of the rounding and biases past int32."""
    torch.manual_seed(seed)
    out_range = (0.0, float(np.random.default_rng(seed).uniform(1, 9)))
    layer = _layer(relu=True, profile=PRESETS["int8"], out_range=out_range, conv=conv)
    weight = layer.weight.detach().clone() * (10.0 ** (seed - 3))
    weight[1] = 0.0  # scale 1e-12: the floor of the weight scale
    scale = np.float32(1.0) / np.float32(127)  # channel 2's weight scale once its largest weight is 1
    weight[2].view(-1)[:3] = torch.tensor([1.0, 0.5 * scale, -0.5 * scale])  # w / scale = +-0.5: ties
    bias = torch.randn(4) * 10.0 ** (seed - 2)
    bias[3] = 1e9 if seed % 2 else -1e9  # past int32 at small scales: clipped
    in_qparams = QParams(np.float32(0.0123 * (seed + 1)), 3)
    want = layer.integer_params(in_qparams, weight, bias)
    got = native_forward.int8_params(weight, bias, in_qparams.scale, layer.observer.qparams().scale)
    assert torch.equal(got.weights, want.weights)
    assert got.column(native_forward.WEIGHT_SCALE, np.float64).astype(np.float32).tobytes() == \
        want.weight_scales.tobytes()
    assert np.array_equal(got.column(native_forward.BIAS, np.int64), want.bias.numpy())
    assert got.bias_bound == int(want.bias.abs().max())
    assert torch.equal(got.bias_float, want.bias.float())
    assert np.array_equal(got.column(native_forward.MULTIPLIER, np.int64), want.multiplier)
    assert np.array_equal(got.column(native_forward.SHIFT, np.int64), want.shift)
    w_scales = torch.from_numpy(want.weight_scales).reshape((-1,) + (1,) * (weight.dim() - 1))
    assert torch.equal(got.weight_fake, weight + (want.weights * w_scales - weight))
    assert np.array_equal(got.column(native_forward.SCALE, np.float64),
                          want.weight_scales.astype(np.float64) * float(in_qparams.scale))


@pytest.mark.parametrize("preset", ["int8", "int8-single", "fixed8", "pot4", "fixed8-acc16", "fixed8-blk32"])
def test_training_step_equals_numpy_steps(monkeypatch, preset):
    """A few quantized training steps of a zoo model give the same parameters and observer state with
    and without the compiled steps (compared bit for bit)."""
    from cqtf.pipeline import dataset_for_profile
    from cqtf.train.model import build_model
    from cqtf.train.trainer import _calibrate
    import torch.nn.functional as F

    data = dataset_for_profile("digits", preset)
    results = []
    for native in ("1", "0"):
        monkeypatch.setenv("CQTF_NATIVE_TRAINING", native)
        torch.manual_seed(0)
        model = build_model("digits_cnn", data.input_shape, data.num_classes, data.input_quant, get_profile(preset))
        _calibrate(model, data)
        for layer in model.quant_layers():  # ranges a third too narrow: outputs saturate, masks matter
            lo, hi = layer.observer.range()
            layer.observer.reset()
            layer.observer.observe_range(lo / 3, hi / 3)
        model.set_quantized(True)
        opt = torch.optim.SGD(model.parameters(), lr=0.05)
        for step in range(4):
            x = torch.from_numpy(data.x_train[32 * step: 32 * step + 32])
            y = torch.from_numpy(data.y_train[32 * step: 32 * step + 32])
            model.train()
            loss = F.cross_entropy(model(x), y)
            opt.zero_grad()
            loss.backward()
            opt.step()
        results.append([t.detach().clone() for t in model.state_dict().values() if torch.is_tensor(t)])
    assert len(results[0]) == len(results[1]) and all(torch.equal(a, b) for a, b in zip(*results))


def _fixed_case(seed: int, relu: bool, mode: Rounding, conv: bool, channels_last: bool, acc_bits: int):
    rng = np.random.default_rng(seed)
    profile = dataclasses.replace(get_profile("fixed8"), requant=Requantizer(Requant.SHIFT, mode),
                                  accumulator=Accumulator(acc_bits))
    layer = QuantConv2d(3, 4, 3, padding=1, relu=relu) if conv else QuantLinear(12, 4, relu=relu)
    layer.profile = profile
    shape = (5, 3, 4, 6) if conv else (5, 12)
    xq = torch.from_numpy(rng.integers(-128, 128, shape))
    if channels_last:
        xq = xq.contiguous(memory_format=torch.channels_last)
    # small weights: every dot product fits a 16-bit accumulator, so the native step takes the case
    weights = torch.from_numpy(rng.integers(-6, 7, (4, 3, 3, 3) if conv else (4, 12)).astype(np.float32))
    acc_max = (1 << (acc_bits - 1)) - 1
    bias = torch.from_numpy(rng.integers(-acc_max // 2, acc_max // 2 + 1, 4))
    bias[0], bias[1] = acc_max, -acc_max - 1  # a narrow accumulator saturates: at its top, at its bottom
    shift = [-9, -3, 1][seed % 3]  # output fraction bits minus the accumulator's: -9 keeps a saturated acc16 in range
    act_min = 0 if relu else -127
    p = FixedParams(weights, 3, bias, 5, 0, shift, QParams(np.float32(2.0 ** -4), 0), act_min, 127)
    return layer, QAct(None, xq, QParams(np.float32(2.0 ** -2), 0)), p, profile.accumulator


@pytest.mark.parametrize("mode", list(Rounding))
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("conv,channels_last", [(True, False), (True, True), (False, False)])
@pytest.mark.parametrize("acc_bits", [16, 32])
def test_fixed_post_equals_numpy(mode, relu, conv, channels_last, acc_bits):
    """The fixed-point forward after the dot product, compiled == numpy: the bias added and saturated,
    the rounding shift of every mode, clamps, masks (saturated accumulator, saturated output, a ReLU's
    dead zone) and the observer's range."""
    for seed in range(3):
        _assert_fixed_posts_equal(*_fixed_case(seed, relu, mode, conv, channels_last, acc_bits))


def _assert_fixed_posts_equal(layer, x, p, acc_spec):
    dot_bound = layer._dot_bound(p.weights)
    got = layer._fixed_post_native(x, p, acc_spec, dot_bound)
    assert got is not None
    want = layer._fixed_post_numpy(x, p, acc_spec, dot_bound)
    assert got[0].stride() == want[0].stride() and torch.equal(got[0], want[0])
    assert torch.equal(got[1], want[1])
    for mine, theirs in zip(got[2], want[2]):
        assert (mine is None) == (theirs is None)
        assert mine is None or (mine.stride() == theirs.stride() and torch.equal(mine, theirs))
    assert got[3:] == want[3:]


@pytest.mark.parametrize("block,acc_shift", [(4, 0), (8, 0), (4, 2), (8, 3)])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("conv,channels_last", [(True, False), (True, True), (False, False)])
def test_fixed_post_after_blockwise_accumulator_equals_numpy(block, acc_shift, relu, conv, channels_last):
    """Accumulators summed block by block (fixed8-acc16, fixed8-blk32): numpy sums the blocks, the
    compiled pass does the rest from the int64 accumulator, and the two agree with numpy alone; block
    sums saturate (n_block_saturated compared too)."""
    for seed in range(3):
        layer, x, p, _ = _fixed_case(seed, relu, Rounding.HALF_UP, conv, channels_last, 16)
        p = dataclasses.replace(p, weights=p.weights * 20, acc_shift=acc_shift)  # block sums past 16 bits
        acc_spec = Accumulator(16, block=block, block_rounding=Rounding.HALF_UP)
        _assert_fixed_posts_equal(layer, x, p, acc_spec)


@pytest.mark.parametrize("mode", list(Rounding))
@pytest.mark.parametrize("shift", [-12, -3, 0, 3, 31])  # output fraction bits minus the accumulator's
@pytest.mark.parametrize("int64_acc", [False, True])
def test_fixed_post_simd_pass(mode, shift, int64_acc):
    """The fixed-point post step's SIMD pass (channels last) == the scalar loop (NCHW storage of the
    same values), for every rounding, right shifts up to 12 and left ones up to 31, float32 or int64
    accumulators, 5 channels (parameters repeated over 13 positions), a saturating 16-bit accumulator
    and a ReLU's dead zone; it runs exactly on channels-last storage."""
    rng = np.random.default_rng(abs(hash((mode.value, shift, int64_acc))) % 2**32)
    values = rng.integers(-(2**17), 2**17, (7, 5, 3, 4))
    values.reshape(-1)[:6] = [2**23 - 1, -(2**23) + 1, 0, -1, 1, 2**15]
    bias = rng.integers(-(2**14), 2**14, 5)
    # ties of the rounding shift, both signs, odd and even quotients: dot + bias = k 2^(e-1)
    values[:, :, 0, 0] = (rng.integers(-7, 8, (7, 5)) << max(-shift - 1, 0)) - bias
    dot = torch.from_numpy(values).to(torch.int64 if int64_acc else torch.float32)
    bias = torch.from_numpy(bias)
    outs = []
    for storage in (dot.contiguous(), dot.contiguous(memory_format=torch.channels_last)):
        r = native_forward.fixed_post(storage, native_forward.runs_layout(storage), bias, False, -(2**15), 2**15 - 1,
                                      -shift, ROUNDING_CODES[mode], True, 0, 127, np.float32(2.0 ** -4), 2.0 ** -9)
        outs.append(r)
    scalar, simd = outs
    assert not scalar.vectorized and simd.vectorized
    for a, b in zip(scalar[:5], simd[:5]):
        assert torch.equal(a, b)
    assert scalar[5:-1] == simd[5:-1] and scalar.n_high > 0 and scalar.any_negative


def test_fixed_post_declines_what_it_does_not_compute():
    """A one-block dot product that may pass 2^24: the numpy steps compute it in float64."""
    layer, x, p, acc_spec = _fixed_case(0, False, Rounding.HALF_UP, True, False, 32)
    assert layer._fixed_post_native(x, p, acc_spec, 2 ** 24) is None
    assert layer._fixed_post_native(x, p, acc_spec, 2 ** 24 - 1) is not None


@pytest.mark.parametrize("preset", ["fixed8", "pot4"])
@pytest.mark.parametrize("alpha", [1.0, 0.5, 0.3])  # 0.5: -3 blends with its -4 into a tie, -3.5
@pytest.mark.parametrize("seed", range(4))
def test_fixed_params_equal_numpy(preset, alpha, seed):
    """The compiled fixed-point weights and bias == QuantLayer._fixed_arrays (numpy, and torch for the
    power-of-two blend): ties of the rounding, weights past the format's range, each power-of-two
    threshold, biases past the accumulator."""
    rng = np.random.default_rng(seed)
    layer = QuantConv2d(3, 4, 3)
    layer.profile = get_profile(preset)
    layer.pot_blend = alpha
    w_frac, acc_frac = int(rng.integers(2, 8)), int(rng.integers(6, 14))
    unit = 2.0 ** -w_frac
    weight = torch.from_numpy(rng.normal(0, 40 * unit, (4, 3, 3, 3)).astype(np.float32))
    flat = weight.view(-1)
    ties = [0.5, -0.5, 2.5, -3.5, 1.5, 3.0, -3.0, 6.0, 12.0, 24.0, 48.0, 96.0, 200.0, -200.0]  # and pot thresholds
    flat[:len(ties)] = torch.tensor(ties) * unit
    bias = torch.from_numpy(rng.normal(0, 2.0 ** (20 - acc_frac), 4).astype(np.float32))
    bias[0] = 0.5 * 2.0 ** -acc_frac  # a tie
    bias[1] = -(2.0 ** 40) * 2.0 ** -acc_frac  # past the accumulator's bottom
    acc = layer.profile.accumulator
    wfmt = layer.profile.weights
    want = layer._fixed_arrays(weight, bias, w_frac, acc_frac)
    got = native_forward.fixed_params(weight, bias, 2.0 ** w_frac, wfmt.max_exp if preset == "pot4" else -1, alpha,
                                      wfmt.qmax, 2.0 ** acc_frac, acc.min, acc.max)
    assert torch.equal(got[0], want[0]) and got[0].shape == weight.shape
    assert torch.equal(got[1], want[1])
    assert got[2:] == want[2:]  # the largest |weight| and |bias|


# ---- Block-wise accumulators (native_forward.block_accumulate; numpy twin QuantLayer._fixed_accumulator) ----

def _walk(products: np.ndarray, block: int, acc_shift: int, mode: Rounding, bits: int):
    """The device's accumulator over products (..., K), block by block as the profile documents it,
    and whether any block sum or running sum saturated: an independent loop for the tests."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    acc = np.zeros(products.shape[:-1], dtype=np.int64)
    clipped = np.zeros(acc.shape, dtype=bool)
    for start in range(0, products.shape[-1], block):
        s = round_shift(products[..., start: start + block].sum(-1), acc_shift, mode)
        s_sat = np.clip(s, lo, hi)
        running = np.clip(acc + s_sat, lo, hi)
        clipped |= (s_sat != s) | (running != acc + s_sat)
        acc = running
    return acc, clipped


def _accumulate_case(rng, grouped: bool, bits: int, acc_shift: int):
    """Random weights (O, K) with zeros and columns (N, K, L), or grouped (N, O, K, L); N * L is not a
    multiple of the C tile (64), and past one tile. Operands up to 8 bits, so narrow accumulators saturate."""
    n, out_channels, fan_in, length = int(rng.integers(1, 6)), int(rng.integers(1, 7)), int(rng.integers(1, 40)), \
        int(rng.integers(1, 50))
    largest = int(rng.integers(1, 128))
    weights = rng.integers(-largest, largest + 1, (out_channels, fan_in))
    weights[rng.random(weights.shape) < 0.3] = 0  # zero weights are skipped by the C loops
    cols_shape = (n, out_channels, fan_in, length) if grouped else (n, fan_in, length)
    cols = rng.integers(-128, 128, cols_shape)
    if grouped:
        products = np.einsum("nokl,ok->nolk", cols, weights)
    else:
        products = np.einsum("nkl,ok->nolk", cols, weights)
    return weights, cols, products


def _block_accumulate(weights, cols, block, acc_shift, mode, bits, strides, largest_product=127 * 128):
    """native_forward.block_accumulate of columns cols (N, K, L) or (N, O, K, L), in the loop it chooses."""
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    saturating = native_forward.saturating16(block, acc_shift, lo, hi, largest_product)
    cols = torch.as_tensor(cols)
    columns = native_forward.accumulator_columns(cols, torch.int16 if saturating else torch.int32)
    return native_forward.block_accumulate(torch.as_tensor(weights), columns, cols.shape[0], cols.shape[-1], block,
                                           acc_shift, ROUNDING_CODES[mode], lo, hi, strides, saturating)


@pytest.mark.parametrize("mode", list(Rounding))
@pytest.mark.parametrize("block", [1, 3, 8, 200])  # 200: one block of the whole dot product
@pytest.mark.parametrize("acc_shift", [0, 1, 3])
@pytest.mark.parametrize("avx2", ["1", "0"])  # 16-bit, blocks of one, no shift: the AVX2 loop where there is one
def test_block_accumulate_equals_walk(monkeypatch, mode, block, acc_shift, avx2):
    """Block sums rounded by acc_shift in every mode, saturated, running sums saturated: the compiled
    accumulator equals an independent walk, and the firmware twin's value (reference_fixed.accumulate),
    grouped (depthwise) or not, for 8-, 16- and 31-bit accumulators; the saturation count too, and the
    requested memory order."""
    monkeypatch.setenv("CQTF_NATIVE_AVX2", avx2)
    rng = np.random.default_rng(hash((mode.value, block, acc_shift)) % 2 ** 32)
    for grouped in (False, True):
        for bits in (8, 16, 31):
            weights, cols, products = _accumulate_case(rng, grouped, bits, acc_shift)
            n, out_channels, length = products.shape[:3]
            strides = [(out_channels * length, length, 1), (length * out_channels, 1, out_channels)][bits % 2]
            assert native_forward.block_fits(block, weights.shape[1], 127, 128, acc_shift, bits)
            acc, n_clipped = _block_accumulate(weights, cols, block, acc_shift, mode, bits, strides)
            want, clipped = _walk(products, block, acc_shift, mode, bits)
            assert acc.stride() == strides
            np.testing.assert_array_equal(acc.numpy(), want)
            assert n_clipped == int(clipped.sum())
            profile = dataclasses.replace(get_profile("fixed8"),
                                          accumulator=Accumulator(bits, block=block, block_rounding=mode))
            firmware = accumulate(products.transpose(0, 2, 1, 3), np.zeros(out_channels), acc_shift, profile)
            np.testing.assert_array_equal(acc.numpy(), firmware.transpose(0, 2, 1))  # (N, L, O) -> (N, O, L)


@pytest.mark.parametrize("avx2", ["1", "0"])
def test_block_accumulate_golden(monkeypatch, avx2):
    """Hand-worked accumulators. 8 bits, blocks of one: 100, 100 (127, clipped), -100, -100, -100 (-128,
    clipped), 28 -> -100, saturated; 50, -50, 20, 0, 0, 0 -> 20, not saturated. Blocks of two, shift 1
    half up: (3 + 2) / 2 -> 3 (2.5 up), (-3 - 2) / 2 -> -2 (-2.5 up), (1 + 0) / 2 -> 1: 2. 16 bits,
    blocks of one: 16000, 16000, 16000 (32767, clipped), -16000, 0, 0 -> 16767; 16000, 16000, 15875
    (32767, clipped), -15875, 0, -128 -> 16764; -16384, -16384 (-32768 exactly, not clipped), 16256,
    16256, 0, 0 -> -256; -16384, -16384, 16129 x 3, (-128) x (-128) -> 32003, not clipped."""
    monkeypatch.setenv("CQTF_NATIVE_AVX2", avx2)
    weights = [[1, 1, 1, 1, 1, 1]]
    cols = [[[100, 50], [100, -50], [-100, 20], [-100, 0], [-100, 0], [28, 0]]]  # (1, K, L)
    acc, n_clipped = _block_accumulate(weights, cols, 1, 0, Rounding.HALF_UP, 8, (2, 2, 1))
    assert acc.tolist() == [[[-100, 20]]] and n_clipped == 1
    acc, n_clipped = _block_accumulate(weights, [[[3], [2], [-3], [-2], [1], [0]]], 2, 1, Rounding.HALF_UP, 8,
                                       (1, 1, 1))
    assert acc.tolist() == [[[2]]] and n_clipped == 0
    weights = [[125, 125, 125, -125, 0, 1], [-128, -128, 127, 127, 127, -128]]
    cols = [[[128, 128], [128, 128], [128, 127], [128, 127], [0, 127], [0, -128]]]
    acc, n_clipped = _block_accumulate(weights, cols, 1, 0, Rounding.HALF_UP, 16, (4, 2, 1), 2 ** 14)
    assert acc.tolist() == [[[16767, 16764], [-256, 32003]]] and n_clipped == 2


def test_avx2_accumulator_runs_where_the_cpu_has_it():
    """On an x86-64 CPU with AVX2, fixed8-acc16's accumulator takes the 16-bit AVX2 loop."""
    flags = open("/proc/cpuinfo").read() if os.path.exists("/proc/cpuinfo") else ""
    if platform.machine() not in ("x86_64", "AMD64") or " avx2" not in flags:
        pytest.skip("no AVX2 here")
    assert native_forward._avx2()


def test_block_fits_bounds():
    """int32 arithmetic holds: |block sum| + 2^acc_shift below 2^31, a right shift of 0..30, at most 31 bits."""
    assert native_forward.block_fits(1, 10, 1, 2 ** 31 - 1 - 8, 3, 16)  # block sum bound + 2^3 = 2^31 - 1
    assert not native_forward.block_fits(1, 10, 1, 2 ** 31 - 8, 3, 16)  # = 2^31
    assert native_forward.block_fits(64, 10, 2 ** 24, 2 ** 3, 0, 16)  # the block is the fan-in (10), not 64
    assert not native_forward.block_fits(64, 16, 2 ** 24, 2 ** 3, 0, 16)
    assert not native_forward.block_fits(1, 10, 1, 1, 0, 32)
    assert not native_forward.block_fits(1, 10, 1, 1, 31, 16)
    assert not native_forward.block_fits(1, 10, 1, 1, -1, 16)


def _memory_order(t: torch.Tensor) -> tuple[int, ...]:
    """The strides of t's dimensions longer than one (the others' strides place nothing)."""
    return tuple(st for st, size in zip(t.stride(), t.shape) if size > 1)


@pytest.mark.parametrize("kind", ["conv", "conv1d", "depthwise", "linear"])
@pytest.mark.parametrize("preset", ["fixed8-acc16", "fixed8-blk32"])
@pytest.mark.parametrize("acc_shift", [0, 2, 5])
def test_layer_accumulator_native_equals_numpy(kind, preset, acc_shift):
    """A layer's compiled accumulator (QuantLayer._native_accumulator) equals the numpy one
    (_fixed_accumulator): values, saturation count and memory order (the gradient's float sums follow
    it), with padding and stride; and declines 16-bit operands whose block sums pass int32."""
    torch.manual_seed(acc_shift)
    layer, shape = {
        "conv": (QuantConv2d(4, 8, 3, 2, 1), (3, 4, 9, 7)),
        "conv1d": (QuantConv1d(5, 6, 7, 2, 3), (4, 5, 1, 37)),
        "depthwise": (QuantDepthwiseConv2d(6, 3, 1, 1), (2, 6, 9, 8)),
        "linear": (QuantLinear(70, 7), (5, 70)),
    }[kind]
    layer.profile = get_profile(preset)
    acc_spec = layer.profile.accumulator
    fan_in = layer.inner.weight.shape[1:].numel()
    saturated = 0
    for largest in (3, 40, 127, None):  # None: every product 127 * 127, the sums run to the top
        w = torch.randint(-largest, largest + 1, layer.inner.weight.shape).float() if largest else \
            torch.full(layer.inner.weight.shape, 127.0)
        xq = torch.randint(-128, 128, shape) if largest else torch.full(shape, 127)
        largest = largest or 127
        p = FixedParams(w, 5, torch.zeros(w.shape[0], dtype=torch.int64), 5, acc_shift, 0, QParams(1.0, 0), -127,
                        127, largest, 0)
        want, clipped = layer._fixed_accumulator(xq, p, acc_spec, layer._dot_bound(w, largest))
        got = layer._native_accumulator(xq, p, acc_spec, fan_in)
        assert got is not None
        assert _memory_order(got[0]) == _memory_order(torch.from_numpy(want))
        np.testing.assert_array_equal(got[0].numpy(), want)
        assert got[1] == int(clipped.sum())
        saturated += got[1]
    assert saturated > 0 or fan_in * 127 * 127 >> acc_shift <= acc_spec.max  # saturates wherever it can
    wide = dataclasses.replace(layer.profile, activations=dataclasses.replace(layer.profile.activations, total_bits=16))
    layer.profile = dataclasses.replace(wide, accumulator=Accumulator(31, block=fan_in))
    p = dataclasses.replace(p, weights=torch.full_like(w, 2 ** 15 - 1), largest_weight=2 ** 15 - 1)
    assert layer._native_accumulator(xq, p, layer.profile.accumulator, fan_in) is None


@pytest.mark.parametrize("kind", ["conv", "conv_strided", "conv1d", "depthwise", "linear", "linear_after_flatten"])
@pytest.mark.parametrize("channels_last", [False, True])
@pytest.mark.parametrize("wide", [False, True])
def test_columns_from_codes_equal_device_columns(kind, channels_last, wide):
    """The C im2col (columns_from_codes) lays out exactly what device_columns' unfold gives, in the
    device's order (ky, kx, ic; depthwise per channel; a linear layer after a flatten in NHWC order),
    zero padding included, from codes in any memory order, as int16 or int32."""
    from cqtf.train.layers import QuantFlatten

    torch.manual_seed(len(kind))
    layer, shape = {
        "conv": (QuantConv2d(3, 5, 3, 1, 1), (2, 3, 6, 5)),
        "conv_strided": (QuantConv2d(4, 5, (3, 2), (2, 3), (1, 2)), (3, 4, 9, 11)),
        "conv1d": (QuantConv1d(5, 6, 7, 2, 3), (4, 5, 1, 37)),
        "depthwise": (QuantDepthwiseConv2d(6, 3, 2, 1), (2, 6, 9, 8)),
        "linear": (QuantLinear(30, 7), (5, 30)),
        "linear_after_flatten": (QuantLinear(24, 7), (5, 24)),
    }[kind]
    if kind == "linear_after_flatten":
        layer.flatten_from = QuantFlatten()
        layer.flatten_from.last_shape = (4, 3, 2)  # (C, H, W): the device reads features as NHWC
    q = torch.randint(-2 ** 15 if wide else -128, 2 ** 15 if wide else 128, shape)
    if channels_last and q.dim() == 4:
        q = q.contiguous(memory_format=torch.channels_last)
    codes, geometry, grouped = layer.column_geometry(q)
    got, length = native_forward.columns_from_codes(codes, geometry, grouped, wide)
    device_columns = layer.device_columns(q)
    want = native_forward.accumulator_columns(device_columns, torch.int32 if wide else torch.int16)
    assert got.dtype == want.dtype and torch.equal(got, want) and length == device_columns.shape[-1]
