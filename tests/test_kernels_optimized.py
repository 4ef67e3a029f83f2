"""The optimized int8 kernels (im2col + dual 16-bit MACs) give exactly the portable kernels' outputs.

Host-native: the optimized algorithms compiled for the host with their SIMD instructions emulated in
C (cqtf_simd.h), against the numpy reference. On QEMU, with the real DSP instructions: see
tests/test_firmware_variants.py.
"""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cqtf import reference
from cqtf.data import InputQuant, load_dataset
from cqtf.fixedpoint import INT32_MAX, INT32_MIN, quantize_multiplier
from cqtf.model_ir import IntLayer, IntModel
from cqtf.native import NativeEngine, requantize_library
from cqtf.pack.header import write_header
from random_models import random_conv_layer, random_inputs


# The optimized kernels' requantizers: the general one and the per-channel one of the conv kernel.
OPTIMIZED_REQUANTIZERS = ("cqtf_requantize_opt_fn", "cqtf_requantize_channel_fn")


@pytest.fixture(scope="module", params=OPTIMIZED_REQUANTIZERS)
def requantizers(native_cache, request):
    return requantize_library(native_cache), requantize_library(native_cache, request.param)


@given(acc=st.integers(INT32_MIN, INT32_MAX), multiplier=st.one_of(st.just(0), st.integers(2**30, INT32_MAX)),
       shift=st.integers(-31, 30))
@settings(max_examples=3000, deadline=None)
def test_optimized_requantize_equals_reference(requantizers, acc, multiplier, shift):
    ref, opt = requantizers
    assert opt(acc, multiplier, shift) == ref(acc, multiplier, shift)


def test_optimized_requantize_on_ties_and_extremes(requantizers):
    ref, opt = requantizers
    accs = [0, 1, -1, 2, -2, 3, -3, 2**30, -(2**30), INT32_MAX, INT32_MIN, INT32_MIN + 1, 5, -5, 12345, -12345,
            INT32_MAX - 1, 2**31 - 2**29, -(2**31 - 2**29)]
    for acc in accs:
        for multiplier in (0, 2**30, 2**30 + 1, 3 * 2**29, INT32_MAX):
            for shift in (-31, -30, -24, -17, -2, -1, 0, 1, 2, 30):
                assert opt(acc, multiplier, shift) == ref(acc, multiplier, shift), (acc, multiplier, shift)


def _fc_layer(rng, in_shape, out_c, relu=False) -> IntLayer:
    zp_out = int(rng.integers(-128, 128))
    pairs = [quantize_multiplier(float(s)) for s in rng.uniform(1e-4, 0.02, out_c)]
    features = int(np.prod(in_shape))
    return IntLayer(
        "fully_connected", tuple(in_shape), (1, 1, out_c), input_offset=int(rng.integers(-127, 129)),
        output_offset=zp_out, act_min=zp_out if relu else -128, act_max=127,
        weights=rng.integers(-127, 128, (out_c, features)).astype(np.int8),
        bias=rng.integers(-(2**15), 2**15, out_c).astype(np.int32),
        multiplier=np.array([m for m, _ in pairs], np.int32), shift=np.array([s for _, s in pairs], np.int32))


def _model(layers: list[IntLayer], name: str) -> IntModel:
    return IntModel(name, "int8", layers[0].in_shape, 0.05, 0, 0.1, 0, layers[-1].out_shape[2], layers)


# (input shape, conv out channels, kernel, stride, pad, second conv out channels, fc outputs):
# channel counts multiple of 4 take im2col's word path, others the value-by-value path; odd
# channel and pixel counts take the kernels' pairing tails; K % 4 != 0 the scalar dot tail.
SHAPES = [
    ((8, 8, 1), 8, 3, 1, 1, 16, 10),
    ((7, 5, 4), 5, 3, 2, 1, 7, 3),
    ((6, 6, 8), 4, 1, 1, 0, 12, 5),
    ((9, 7, 3), 3, 5, 2, 2, 4, 1),
    ((5, 5, 12), 9, 2, 1, 0, 2, 7),
]


@pytest.mark.parametrize("index", range(len(SHAPES)))
def test_optimized_engine_equals_reference_on_random_layers(index, tmp_path, native_cache):
    (h, w, c), c1, k, s, p, c2, classes = SHAPES[index]
    rng = np.random.default_rng(100 + index)
    conv1 = random_conv_layer(rng, h, w, c, c1, k, s, p, relu=True)
    oh, ow, _ = conv1.out_shape
    conv2 = random_conv_layer(rng, oh, ow, c1, c2, 3, 1, 1, relu=bool(index % 2))
    model = _model([conv1, conv2, _fc_layer(rng, conv2.out_shape, classes)], f"random{index}")
    write_header(model, tmp_path)
    x = random_inputs(index, 40, (h, w, c))
    expected = reference.run_layers(model, x)
    for optimized in (False, True):
        engine = NativeEngine(tmp_path, native_cache, optimized=optimized)
        for layer in range(len(model.layers)):
            got = np.stack([engine.run(sample, last_layer=layer) for sample in x])
            assert np.array_equal(got, expected[layer].reshape(len(x), -1)), (optimized, layer)


def test_optimized_engine_on_every_digits_test_sample(trained_dir, native_cache):
    model = trained_dir.load_model()
    data = load_dataset("digits", InputQuant(model.input_scale, model.input_zero_point))
    engine = NativeEngine(trained_dir.root, native_cache, optimized=True)
    got = np.stack([engine.run(x) for x in data.x_test])
    assert np.array_equal(got, reference.run(model, data.x_test))
