"""Device profiles: every rounding mode, accumulator width and block size, exact end to end.

Three independent computations must agree on the integers of a fixed-point profile: a plain-Python
element-by-element reading of the spec (below), the numpy host reference (cqtf.reference_fixed) and
the training forward pass (cqtf.train.layers, torch); the firmware C is checked against the reference
in test_native_profiles.py.
"""
from dataclasses import replace

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cqtf import reference
from cqtf.data import InputQuant
from cqtf.errors import DataError
from cqtf.fixedpoint import round_shift, round_shift_scalar
from cqtf.model_ir import IntLayer, IntModel
from cqtf.profile import FIRMWARE_PROFILES, PRESETS, Accumulator, Profile, Rounding, get_profile
from cqtf.train.export import export
from cqtf.train.layers import QuantConv2d, QuantFlatten, QuantLinear, QuantMaxPool2d
from cqtf.train.model import QuantSequential, logits_int8
from random_models import calibrated_quantized, random_inputs

MODES = list(Rounding)


@settings(max_examples=300, deadline=None)
@given(st.integers(-(2**40), 2**40), st.integers(-8, 40), st.sampled_from(MODES))
def test_round_shift_matches_the_exact_fraction_oracle(x, e, mode):
    assert int(round_shift(np.int64(x), e, mode)) == round_shift_scalar(x, e, mode)


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), mode=st.sampled_from(MODES), shifts=st.sampled_from(["right", "mixed", "left"]),
       magnitude=st.sampled_from([2**10, 2**40, 2**61]))
def test_round_shift_of_arrays_matches_the_oracle(seed, mode, shifts, magnitude):
    """Arrays with per-channel shifts (as int8 single rounding and the host reference pass them), ties
    included, on the fast right-shift path (every e > 0) and the general one (mixed signs)."""
    rng = np.random.default_rng(seed)
    low = {"right": 1, "mixed": -4, "left": -4}[shifts]
    high = {"right": 40, "mixed": 40, "left": 1}[shifts]
    e = rng.integers(low, high, (1, 6))
    if shifts != "right":
        magnitude = min(magnitude, 2**56)  # a left shift by up to 4 stays inside int64
    x = rng.integers(-magnitude, magnitude, (5, 6))
    x[0] = (2 * rng.integers(-1000, 1000, 6) + 1) << np.maximum(e[0] - 1, 0)  # odd multiples of 2^(e-1): ties
    got = round_shift(x, e, mode)
    assert got.shape == x.shape
    expect = [[round_shift_scalar(int(x[i, j]), int(e[0, j]), mode) for j in range(6)] for i in range(5)]
    assert got.tolist() == expect


def test_round_shift_ties():
    x = np.array([5, -5, 6, -6, 7, -7])  # / 2: 2.5, -2.5, 3, -3, 3.5, -3.5
    expect = {
        Rounding.HALF_UP: [3, -2, 3, -3, 4, -3], Rounding.HALF_AWAY: [3, -3, 3, -3, 4, -4],
        Rounding.HALF_EVEN: [2, -2, 3, -3, 4, -4], Rounding.FLOOR: [2, -3, 3, -3, 3, -4],
        Rounding.CEIL: [3, -2, 3, -3, 4, -3],
    }
    for mode, values in expect.items():
        assert round_shift(x, 1, mode).tolist() == values, mode


# ---- the spec, read element by element (plain Python ints) ----

def _sat(v, bits):
    return max(-(1 << (bits - 1)), min((1 << (bits - 1)) - 1, v))


def naive_dot(products, bias, acc_shift, shift, act_min, act_max, profile):
    acc_spec = profile.accumulator
    block = acc_spec.block or max(len(products), 1)
    acc = 0
    for start in range(0, len(products), block):
        s = round_shift_scalar(sum(products[start: start + block]), acc_shift, acc_spec.block_rounding)
        acc = _sat(acc + _sat(s, acc_spec.bits), acc_spec.bits)
    acc = _sat(acc + bias, acc_spec.bits)
    return max(act_min, min(act_max, round_shift_scalar(acc, -shift, profile.requant.rounding)))


def naive_conv_fixed(x, layer, profile):
    (kh, kw), (sh, sw), (pt, pl) = layer.kernel, layer.stride, layer.pad
    out = np.zeros(layer.out_shape, np.int8)
    in_h, in_w, in_c = layer.in_shape
    for y in range(layer.out_shape[0]):
        for x_ in range(layer.out_shape[1]):
            for oc in range(layer.out_shape[2]):
                products = []
                for ky in range(kh):
                    for kx in range(kw):
                        for ic in range(in_c):
                            iy, ix = y * sh - pt + ky, x_ * sw - pl + kx
                            inside = 0 <= iy < in_h and 0 <= ix < in_w
                            products.append(int(x[iy, ix, ic]) * int(layer.weights[oc, ky, kx, ic]) if inside else 0)
                out[y, x_, oc] = naive_dot(products, int(layer.bias[oc]), layer.acc_shift, int(layer.shift[oc]),
                                           layer.act_min, layer.act_max, profile)
    return out


def _profile(acc_bits, block, block_rounding, out_rounding, acc_frac=None) -> Profile:
    base = PRESETS["fixed8"]
    return replace(base, name="test", accumulator=Accumulator(acc_bits, block, block_rounding, acc_frac),
                   requant=replace(base.requant, rounding=out_rounding))


def _fixed_conv(rng, in_shape, out_c, k, stride, pad, relu, acc_shift, shift, bias_range):
    h, w, c = in_shape
    out_shape = ((h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1, out_c)
    return IntLayer("conv2d", in_shape, out_shape, (k, k), (stride, stride), (pad, pad),
                    act_min=0 if relu else -127, act_max=127,
                    weights=rng.integers(-127, 128, (out_c, k, k, c)).astype(np.int8),
                    bias=rng.integers(-bias_range, bias_range + 1, out_c).astype(np.int32),
                    shift=np.full(out_c, shift, np.int32), acc_shift=acc_shift)


ACC_CASES = [  # acc bits, block, block rounding, output rounding, acc_shift, shift
    (32, 0, Rounding.HALF_UP, Rounding.HALF_UP, 0, -9),
    (16, 1, Rounding.HALF_UP, Rounding.HALF_EVEN, 0, -6),  # saturates after nearly every product
    (8, 32, Rounding.HALF_UP, Rounding.HALF_UP, 5, 0),  # the CQTF block accumulator
    (8, 3, Rounding.FLOOR, Rounding.CEIL, 6, 1),  # left shift on the output
    (12, 5, Rounding.HALF_AWAY, Rounding.FLOOR, 4, -2),
    (10, 7, Rounding.CEIL, Rounding.HALF_AWAY, 8, -1),
    (24, 0, Rounding.HALF_EVEN, Rounding.HALF_EVEN, 3, -5),
]


@pytest.mark.parametrize("acc_bits,block,block_rounding,out_rounding,acc_shift,shift", ACC_CASES)
def test_fixed_reference_matches_the_spec(acc_bits, block, block_rounding, out_rounding, acc_shift, shift):
    rng = np.random.default_rng(acc_bits * 100 + block)
    profile = _profile(acc_bits, block, block_rounding, out_rounding)
    layer = _fixed_conv(rng, (6, 5, 3), 4, 3, 1 + block % 2, 1, bool(block % 2), acc_shift, shift,
                        min(1 << (acc_bits - 2), 20000))
    x = rng.integers(-128, 128, (2, 6, 5, 3)).astype(np.int8)
    got = reference.conv2d(x, layer, profile)
    saturated = 0
    for n in range(2):
        assert np.array_equal(got[n], naive_conv_fixed(x[n], layer, profile))
        saturated += int(np.isin(got[n], (layer.act_min, layer.act_max)).sum())
    assert 0 < saturated < got.size  # the case reaches the clamp, but not everywhere


def fixed_network(seed: int, profile: Profile, input_shape=(9, 7, 2), stride=1, padding=1, kernel=3,
                  weight_scale=1.0) -> QuantSequential:
    """A random network in quantized mode for a fixed-point profile, calibrated on random inputs."""
    torch.manual_seed(seed)
    h, w, c = input_shape
    conv = QuantConv2d(c, 4, kernel, stride=stride, padding=padding, relu=bool(seed % 2))
    oh, ow = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    ph, pw = (oh + 2 * 1 - 3) // 2 + 1, (ow + 2 * 1 - 3) // 2 + 1
    layers = [conv, QuantMaxPool2d(3, 2, 1), QuantFlatten(), QuantLinear(4 * ph * pw, 5)]
    network = QuantSequential("random", layers, InputQuant(np.float32(0.1), 0), profile)
    with torch.no_grad():
        for layer in network.quant_layers():
            layer.inner.weight.mul_(weight_scale)
    return calibrated_quantized(network, random_inputs(seed, 32, input_shape))


def _inputs(seed, n, shape=(9, 7, 2)):
    return random_inputs(seed, n, shape)


TRAIN_PROFILES = [PRESETS[name] for name in ("fixed8", "fixed8-acc16", "fixed8-floor", "fixed8-blk32")] + [
    _profile(acc_bits, block, br, orr, acc_frac=None) for acc_bits, block, br, orr, _, _ in ACC_CASES[3:]
] + [PRESETS["pot4"]]


@pytest.mark.parametrize("profile", TRAIN_PROFILES, ids=lambda p: f"{p.name}-{p.accumulator.bits}-{p.accumulator.block}")
@pytest.mark.parametrize("seed,stride,padding,kernel,weight_scale", [(0, 1, 1, 3, 1.0), (1, 2, 2, 5, 8.0),
                                                                      (2, 1, 0, 1, 30.0)])
def test_training_forward_equals_reference(profile, seed, stride, padding, kernel, weight_scale):
    network = fixed_network(seed, profile, stride=stride, padding=padding, kernel=kernel, weight_scale=weight_scale)
    x = _inputs(seed + 100, 48)
    model = export(network, (9, 7, 2), 5)
    assert model.arithmetic == profile.to_dict()
    assert np.array_equal(logits_int8(network, x), reference.run(model, x))


def test_large_weights_saturate_the_narrow_accumulator():
    """fixed8-blk32 with big weights: blocks and the running accumulator saturate, still exact."""
    network = fixed_network(3, PRESETS["fixed8-blk32"], weight_scale=40.0)
    x = _inputs(5, 32)
    model = export(network, (9, 7, 2), 5)
    out = reference.run_layers(model, x)[0]
    assert (out == 127).mean() > 0.2
    assert np.array_equal(logits_int8(network, x), reference.run(model, x))


@pytest.mark.parametrize("name", ["int8", "int8-single"])
def test_int8_profiles_forward_equals_reference(name):
    from random_models import random_network

    network = random_network(4)
    network.set_profile(get_profile(name))
    x = _inputs(9, 64)
    model = export(network, (9, 7, 2), 5)
    assert model.profile == name
    assert np.array_equal(logits_int8(network, x), reference.run(model, x))


def test_single_and_double_rounding_differ_somewhere():
    from random_models import random_network

    network = random_network(5)
    x = _inputs(10, 256)
    double = export(network, (9, 7, 2), 5)
    network.set_profile(get_profile("int8-single"))
    single = export(network, (9, 7, 2), 5)
    assert [l.multiplier.tolist() for l in double.layers if l.multiplier is not None] == \
        [l.multiplier.tolist() for l in single.layers if l.multiplier is not None]
    a, b = reference.run(double, x), reference.run(single, x)
    assert not np.array_equal(a, b) and np.abs(a.astype(int) - b.astype(int)).max() <= 2


def test_fixed_training_stays_exact_and_gradients_flow():
    network = fixed_network(7, PRESETS["fixed8-blk32"], weight_scale=4.0)
    x = _inputs(8, 32)
    y = torch.from_numpy(np.arange(32) % 5)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    for _ in range(3):
        network.train()
        loss = torch.nn.functional.cross_entropy(network(torch.from_numpy(x)), y)
        optimizer.zero_grad()
        loss.backward()
        for name, parameter in network.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        optimizer.step()
        assert np.array_equal(logits_int8(network, x), reference.run(export(network, (9, 7, 2), 5), x))


def test_profile_round_trips_and_is_hashed(tmp_path):
    for name, profile in PRESETS.items():
        assert Profile.from_dict(profile.to_dict()).to_dict() == profile.to_dict(), name
    network = fixed_network(0, PRESETS["fixed8-acc16"])
    model = export(network, (9, 7, 2), 5)
    model.save(tmp_path / "m.npz")
    loaded = IntModel.load(tmp_path / "m.npz")
    assert loaded.arithmetic == model.arithmetic and loaded.hash() == model.hash()
    other = IntModel(**{**model.__dict__, "arithmetic": _profile(12, 5, Rounding.FLOOR, Rounding.CEIL).to_dict()})
    assert other.hash() != model.hash()


def test_presets_are_firmware_profiles_and_unknown_names_are_refused():
    assert list(PRESETS)[:5] == ["int8", "int8-single", "fixed8", "fixed8-acc16", "fixed8-blk32"]
    assert set(FIRMWARE_PROFILES) <= set(PRESETS)
    with pytest.raises(DataError) as e:
        get_profile("pot2")
    assert "fixed8-blk32" in e.value.hint


def test_profile_fields_are_validated():
    from cqtf.profile import FixedPoint

    with pytest.raises(ValueError):
        FixedPoint(total_bits=3)
    with pytest.raises(ValueError):
        Accumulator(bits=40)


@settings(max_examples=80, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), risky=st.sampled_from(["none", "one", "many", "swing", "drift"]),
       block=st.sampled_from([1, 2, 3, 32]), k=st.sampled_from([20, 40, 77]))
def test_bounded_partial_sums_equal_walking_every_block(seed, risky, block, k):
    """The acc_shift-0 shortcut (per-group sign-split bounds, only possibly saturating outputs walked)
    equals summing and saturating every block in plain Python, whether no output, exactly one or many
    may saturate, when one saturates inside a group whose own sum is zero (swing), and when one saturates
    only by the sum of several groups (drift)."""
    rng = np.random.default_rng(seed)
    n, length, o = 2, 3, 4
    scale = {"none": 3, "one": 3, "many": 127, "swing": 3, "drift": 3}[risky]
    cols = torch.from_numpy(rng.integers(-scale, scale + 1, (n, k, length))).double()
    w = torch.from_numpy(rng.integers(-scale, scale + 1, (o, k))).double()
    if risky == "one":  # one output's products all large and of one sign
        cols[1, :, 2] = 127.0
        w[3] = 120.0
    if risky == "swing":  # up past the top, then back down: the sum of all products is small
        cols[1, :, 2] = 0.0
        cols[1, :16, 2] = 127.0
        w[3, :8], w[3, 8:16] = 120.0, -120.0
    if risky == "drift":  # no group of 16 products leaves the range, their running sum does (k > 16)
        cols[1, :, 2] = 127.0
        w[3] = 16.0
    spec = Accumulator(16, block=block)
    layer = QuantLinear(k, o)
    acc, saturated = layer._exact_partial_sums(cols, w, block, spec)
    products = (cols.permute(0, 2, 1)[:, None, :, :] * w[None, :, None, :]).long().numpy()  # (N, O, L, K)
    for index in np.ndindex(acc.shape):
        running, clipped = 0, False
        for start in range(0, k, block):
            block_sum = int(products[index][start: start + block].sum())
            total = running + _sat(block_sum, 16)
            running = _sat(total, 16)
            clipped |= running != total or _sat(block_sum, 16) != block_sum
        assert (acc[index], saturated[index]) == (running, clipped), index
    if risky in ("one", "drift") or (risky == "swing" and block < 8):  # a block of 8 or more sums the swing exactly
        assert saturated.sum() == 1 and saturated[1, 3, 2]


@settings(max_examples=200, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), steps=st.integers(0, 70), bits=st.integers(3, 16), smaller=st.integers(0, 6))
def test_saturating_walk_equals_a_plain_loop(seed, steps, bits, smaller):
    """The pairwise-merged saturating walk equals clipping after every step, and says where any step clipped."""
    from cqtf.train.layers import _saturating_walk

    rng = np.random.default_rng(seed)
    lo, hi = -(1 << (bits - 1)), (1 << (bits - 1)) - 1
    step = hi >> smaller  # small steps: some walks clip once or never
    block_sums = rng.integers(-step, step + 1, (steps, 5))
    running = rng.integers(lo, hi + 1, 5)
    acc, clipped = _saturating_walk(block_sums, running, lo, hi)
    for m in range(5):
        value, any_clip = int(running[m]), False
        for step in block_sums[:, m].tolist():
            total = value + step
            value = min(max(total, lo), hi)
            any_clip |= value != total
        assert (acc[m], clipped[m]) == (value, any_clip)
