"""The optimized fixed-point kernels (im2col + dual 16-bit MACs, exact per block) and the optimized
depthwise kernels (fixed point and int8) give exactly the portable kernels' outputs and the host
reference's, for every fixed-point profile.

Host-native: the engine compiled with -DCQTF_KERNELS_OPTIMIZED=1 (SIMD emulated in C, cqtf_simd.h)
and =0, against cqtf.reference, layer by layer. Blocks of every size the spec allows matter: a group
of 4 products must never straddle a block, and block 1 with a 16-bit accumulator saturates after
every product. On QEMU with the real DSP instructions: `cqtf run` / tests/test_firmware_variants.py.
"""
from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cqtf import reference
from cqtf.fixedpoint import quantize_multiplier
from cqtf.model_ir import IntLayer, IntModel
from cqtf.native import NativeEngine
from cqtf.pack.header import write_header
from cqtf.profile import FIRMWARE_PROFILES, PRESETS, Accumulator, Profile, Rounding, get_profile
from cqtf.train.export import export
from random_models import random_depthwise_network, random_inputs, random_residual_network

FIXED_PRESETS = [name for name in FIRMWARE_PROFILES if get_profile(name).is_fixed]


def _custom(acc_bits: int, block: int, block_rounding: Rounding, out_rounding: Rounding) -> Profile:
    base = PRESETS["fixed8"]
    return replace(base, name="fxopt-test", accumulator=Accumulator(acc_bits, block, block_rounding),
                   requant=replace(base.requant, rounding=out_rounding))


# Blocks below, at and above the group of 4, odd and even, a block larger than any dot product, and
# every rounding mode of the block sums.
CUSTOM = [
    _custom(16, 1, Rounding.HALF_EVEN, Rounding.HALF_AWAY),
    _custom(12, 2, Rounding.FLOOR, Rounding.HALF_UP),
    _custom(10, 3, Rounding.CEIL, Rounding.FLOOR),
    _custom(14, 4, Rounding.HALF_AWAY, Rounding.CEIL),
    _custom(12, 5, Rounding.HALF_UP, Rounding.HALF_EVEN),
    _custom(9, 7, Rounding.HALF_EVEN, Rounding.HALF_UP),
    _custom(8, 8, Rounding.HALF_UP, Rounding.HALF_UP),
    _custom(20, 13, Rounding.FLOOR, Rounding.HALF_AWAY),
    _custom(24, 255, Rounding.CEIL, Rounding.FLOOR),
    _custom(32, 0, Rounding.HALF_AWAY, Rounding.HALF_EVEN),
]


def _fixed_layer(rng, profile, kind, in_shape, out_c, k=1, stride=1, pad=0, hot=False) -> IntLayer:
    """A fixed-point conv2d / fully_connected layer whose shifts suit the profile's accumulator (most
    outputs neither 0 nor clamped). hot: full-range weights and shifts 3 bits too small, so block
    sums, the running accumulator and the outputs saturate often."""
    h, w, c = in_shape
    if kind == "conv2d":
        out_shape = ((h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1, out_c)
        wshape = (out_c, k, k, c)
    elif kind == "depthwise_conv2d":  # channel multiplier 1: out_c is in_c
        out_c = c
        out_shape = ((h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1, c)
        wshape = (1, k, k, c)
    else:
        out_shape, wshape = (1, 1, out_c), (out_c, h * w * c)
    products = k * k if kind == "depthwise_conv2d" else int(np.prod(wshape[1:]))
    acc = profile.accumulator
    block = min(acc.block or products, products)
    limit = 128 if hot else int(rng.integers(16, 128))
    block_bits = np.log2(np.sqrt(block) * 50 * limit / 1.7)  # of a typical block sum
    acc_shift = int(np.clip(round(block_bits) - (acc.bits - 4) - (3 if hot else 0), -3 if hot else 0, 31))
    if hot and rng.integers(0, 2):
        acc_shift = 0  # exact products into a narrow accumulator (block 1: its unrounded fast path)
    acc_log = min(block_bits - acc_shift + 0.5 * np.log2(-(-products // block)), acc.bits - 1)
    shift = -round(acc_log) + 6 + rng.integers(-1, 2, out_c) + (3 if hot else 0)
    bias_max = int(2 ** min(acc_log - 1, acc.bits - 2))
    relu = bool(rng.integers(0, 2))
    return IntLayer(kind, in_shape, out_shape, (k, k), (stride, stride), (pad, pad),
                    act_min=0 if relu else -128, act_max=127,
                    weights=rng.integers(-limit, limit, wshape).astype(np.int8),
                    bias=rng.integers(-bias_max, bias_max + 1, out_c).astype(np.int32),
                    shift=np.clip(shift, -31, 30).astype(np.int32), acc_shift=acc_shift)


def _chain(rng, profile, input_shape, specs, hot_every=2) -> list[IntLayer]:
    """Layers from (kind, out_c, k, stride, pad) specs, each reading the previous one's output."""
    layers, shape = [], tuple(input_shape)
    for i, (kind, out_c, k, stride, pad) in enumerate(specs):
        layers.append(_fixed_layer(rng, profile, kind, shape, out_c, k, stride, pad, hot=(i % hot_every == 1)))
        shape = layers[-1].out_shape
    return layers


def _model(profile: Profile, layers: list[IntLayer]) -> IntModel:
    return IntModel("fxopt", profile.name, layers[0].in_shape, 0.125, 0, 0.125, 0, layers[-1].out_shape[2], layers,
                    arithmetic=profile.to_dict())


def _check(model: IntModel, x: np.ndarray, model_dir, native_cache) -> None:
    """Optimized and portable engines both equal the host reference, layer by layer, bit for bit."""
    write_header(model, model_dir)
    expected = reference.run_layers(model, x)
    for optimized in (True, False):
        engine = NativeEngine(model_dir, native_cache, optimized=optimized)
        for k in range(len(model.layers)):
            got = np.stack([engine.run(sample, last_layer=k) for sample in x])
            assert np.array_equal(got, expected[k].reshape(len(x), -1)), (optimized, k, model.layers[k].kind)


# in_c 3 (im2col value by value, K % 4 = 3), 5 and 7 channels, in_c 8 (word path), 1x1 and 2x2
# kernels, strides 1 and 2, padding 0 to 2, odd pixel counts, fully connected with odd feature counts;
# depthwise on 5 channels (a group of 4 and one alone) and on 8 with windows mostly in the padding.
SPECS = [("conv2d", 5, 3, 1, 1), ("depthwise_conv2d", 5, 3, 1, 1), ("conv2d", 8, 2, 2, 0),
         ("depthwise_conv2d", 8, 3, 2, 2), ("conv2d", 7, 3, 1, 2), ("conv2d", 4, 1, 1, 0),
         ("conv2d", 3, 5, 2, 2), ("fully_connected", 13, 1, 1, 0), ("fully_connected", 6, 1, 1, 0)]


# pot4's conv / fully connected layers run the shift kernels (4-bit codes); its depthwise: below.
@pytest.mark.parametrize("profile", [get_profile(n) for n in FIXED_PRESETS if n != "pot4"] + CUSTOM,
                         ids=lambda p: f"{p.name}-{p.accumulator.bits}-{p.accumulator.block}")
def test_optimized_fx_layers_equal_reference(profile, tmp_path, native_cache):
    rng = np.random.default_rng(sum(map(ord, profile.name)) + profile.accumulator.block)
    model = _model(profile, _chain(rng, profile, (9, 7, 3), SPECS))
    _check(model, random_inputs(profile.accumulator.block + 7, 12, (9, 7, 3)), tmp_path, native_cache)


@st.composite
def _depthwise_geometry(draw):
    k = draw(st.integers(1, 5))
    pad = draw(st.integers(0, k - 1))
    h, w = draw(st.integers(1, 7)), draw(st.integers(1, 7))
    stride = draw(st.integers(1, 3))
    h, w = max(h, k - 2 * pad), max(w, k - 2 * pad)
    return (h, w, draw(st.integers(1, 10))), k, stride, pad


@given(geometry=_depthwise_geometry(), acc_bits=st.integers(8, 32),
       block=st.sampled_from([0, 1, 2, 3, 4, 5, 7, 9, 25]), block_rounding=st.sampled_from(list(Rounding)),
       hot=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=6, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_optimized_depthwise_random_geometry(geometry, acc_bits, block, block_rounding, hot, seed,
                                            tmp_path_factory, native_cache):
    """Fixed-point depthwise (blocks across the window, padding included) and int8 depthwise."""
    (h, w, c), k, stride, pad = geometry
    rng = np.random.default_rng(seed)
    profile = _custom(acc_bits, block, block_rounding, Rounding.HALF_UP)
    dw = _fixed_layer(rng, profile, "depthwise_conv2d", (h, w, c), c, k, stride, pad, hot=hot)
    _check(_model(profile, [dw]), random_inputs(seed, 6, (h, w, c)), tmp_path_factory.mktemp("fxdw"),
           native_cache)
    int8 = _int8_depthwise(rng, (h, w, c), k, stride, pad, single=bool(seed % 2))
    model = IntModel("dw8", int8[1], (h, w, c), 0.05, 0, 0.1, 0, c, [int8[0]])
    _check(model, random_inputs(seed + 1, 6, (h, w, c)), tmp_path_factory.mktemp("dw8"), native_cache)


def _int8_depthwise(rng, in_shape, k, stride, pad, single):
    """An int8 affine depthwise layer (TFLM double or single rounding) and its profile name."""
    h, w, c = in_shape
    pairs = [quantize_multiplier(float(s)) for s in rng.uniform(1e-3, 0.2, c)]
    zp_out = int(rng.integers(-128, 128))
    layer = IntLayer("depthwise_conv2d", in_shape, ((h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1, c),
                     (k, k), (stride, stride), (pad, pad), input_offset=int(rng.integers(-127, 129)),
                     output_offset=zp_out, act_min=max(zp_out, -128) if rng.integers(0, 2) else -128, act_max=127,
                     weights=rng.integers(-128, 128, (1, k, k, c)).astype(np.int8),
                     bias=rng.integers(-(2**12), 2**12, c).astype(np.int32),
                     multiplier=np.array([m for m, _ in pairs], np.int32), shift=np.array([s for _, s in pairs], np.int32))
    return layer, "int8-single" if single else "int8"


@st.composite
def _geometry(draw):
    k = draw(st.integers(1, 4))
    pad = draw(st.integers(0, k - 1))
    h, w = draw(st.integers(k, 7)), draw(st.integers(k, 7))
    return ((h, w, draw(st.integers(1, 9))), draw(st.integers(1, 6)), k, draw(st.integers(1, 2)), pad)


@given(geometry=_geometry(), acc_bits=st.integers(8, 32), block=st.sampled_from([0, 1, 2, 3, 4, 5, 6, 8, 9, 12, 32]),
       block_rounding=st.sampled_from(list(Rounding)), out_rounding=st.sampled_from(list(Rounding)),
       hot=st.booleans(), seed=st.integers(0, 2**16))
@settings(max_examples=8, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
def test_optimized_fx_random_geometry(geometry, acc_bits, block, block_rounding, out_rounding, hot, seed,
                                      tmp_path_factory, native_cache):
    (h, w, c), out_c, k, stride, pad = geometry
    rng = np.random.default_rng(seed)
    profile = _custom(acc_bits, block, block_rounding, out_rounding)
    conv = _fixed_layer(rng, profile, "conv2d", (h, w, c), out_c, k, stride, pad, hot=hot)
    fc = _fixed_layer(rng, profile, "fully_connected", conv.out_shape, 1 + seed % 5, hot=not hot)
    model = _model(profile, [conv, fc])
    _check(model, random_inputs(seed, 6, (h, w, c)), tmp_path_factory.mktemp("fxgeom"), native_cache)


@pytest.mark.parametrize("profile_name", FIXED_PRESETS)
def test_optimized_fx_networks_equal_reference(profile_name, tmp_path, native_cache):
    """Trained-layer exports (depthwise-separable, residual) of every fixed-point preset, one of the two
    with weights scaled 30 times (saturation everywhere), which one alternating by profile."""
    profile = get_profile(profile_name)
    seed = FIXED_PRESETS.index(profile_name)
    dw_scale, res_scale = (30.0, 1.0) if seed % 2 == 0 else (1.0, 30.0)
    dw = random_depthwise_network(seed, (9, 7, 3), 1 + seed % 2, 1, 3, profile, weight_scale=dw_scale)
    _check(export(dw, (9, 7, 3), 5), random_inputs(seed, 16, (9, 7, 3)), tmp_path / "dw", native_cache)
    res = random_residual_network(seed, (5, 5, 3), profile, weight_scale=res_scale)
    _check(export(res, (5, 5, 3), 4), random_inputs(seed + 1, 16, (5, 5, 3)), tmp_path / "res", native_cache)
