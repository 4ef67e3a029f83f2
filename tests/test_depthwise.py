"""Depthwise convolution (depthwise_conv2d, channel multiplier 1) on every firmware profile: the training
forward pass equals the host reference, the host reference equals a plain-Python reading of the spec,
and the firmware's C (compiled for the host) equals the host reference."""
import itertools

import numpy as np
import pytest

from cqtf import reference
from cqtf.fixedpoint import requantize_scalar
from cqtf.model_ir import IntLayer
from cqtf.native import NativeEngine
from cqtf.pack.header import write_header
from cqtf.profile import FIRMWARE_PROFILES, get_profile
from cqtf.train.export import export
from cqtf.train.model import logits_int8
from random_models import random_depthwise_network, random_inputs
from test_profiles import ACC_CASES, _profile, naive_dot

SHAPE = (9, 7, 3)
GEOMETRIES = [(0, 1, 1, 3), (1, 2, 1, 3), (2, 1, 0, 3), (3, 2, 2, 5), (4, 1, 0, 1)]
PROFILES = [get_profile(n) for n in FIRMWARE_PROFILES] + [
    _profile(bits, block, br, orr) for bits, block, br, orr, _, _ in ACC_CASES[3:6]]


def naive_depthwise(x, layer, profile):
    (kh, kw), (sh, sw), (pt, pl) = layer.kernel, layer.stride, layer.pad
    in_h, in_w, _ = layer.in_shape
    out = np.zeros(layer.out_shape, np.int8)
    for y, x_, c in itertools.product(*map(range, layer.out_shape)):
        products, acc = [], int(layer.bias[c])
        for ky, kx in itertools.product(range(kh), range(kw)):
            iy, ix = y * sh - pt + ky, x_ * sw - pl + kx
            inside = 0 <= iy < in_h and 0 <= ix < in_w
            w = int(layer.weights[0, ky, kx, c])
            products.append(int(x[iy, ix, c]) * w if inside else 0)
            acc += (int(x[iy, ix, c]) + layer.input_offset) * w if inside else 0
        if profile.is_fixed:
            out[y, x_, c] = naive_dot(products, int(layer.bias[c]), layer.acc_shift, int(layer.shift[c]),
                                      layer.act_min, layer.act_max, profile)
        else:
            v = requantize_scalar(acc, int(layer.multiplier[c]), int(layer.shift[c])) + layer.output_offset
            out[y, x_, c] = min(max(v, layer.act_min), layer.act_max)
    return out


@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: f"{p.name}-{p.accumulator.bits}-{p.accumulator.block}")
@pytest.mark.parametrize("seed,stride,padding,kernel", GEOMETRIES)
def test_training_forward_equals_reference(profile, seed, stride, padding, kernel):
    network = random_depthwise_network(seed, SHAPE, stride, padding, kernel, profile,
                                       weight_scale=(1.0, 8.0, 30.0)[seed % 3] if profile.is_fixed else 1.0)
    x = random_inputs(seed + 100, 48, SHAPE)
    model = export(network, SHAPE, 5)
    assert [l.kind for l in model.layers][1] == "depthwise_conv2d"
    assert model.layers[1].weights.shape == (1, kernel, kernel, 6)
    assert np.array_equal(logits_int8(network, x), reference.run(model, x))
    dw = model.layers[1]
    x_dw = reference.run_layers(model, x[:2])[0]
    if profile.name != "int8-single":  # naive_depthwise reads TFLM double rounding for int8
        for n in range(2):
            assert np.array_equal(reference.depthwise_conv2d(x_dw[n:n + 1], dw, model.arithmetic_profile)[0],
                                  naive_depthwise(x_dw[n], dw, model.arithmetic_profile))


def test_saturation_edges_int8():
    """Huge gains: the depthwise outputs clip at both ends, still equal to the plain reading."""
    rng = np.random.default_rng(3)
    layer = IntLayer("depthwise_conv2d", (5, 5, 4), (5, 5, 4), (3, 3), (1, 1), (1, 1), input_offset=128,
                     output_offset=-3, act_min=-128, act_max=127,
                     weights=rng.integers(-127, 128, (1, 3, 3, 4)).astype(np.int8),
                     bias=rng.integers(-5000, 5000, 4).astype(np.int32),
                     multiplier=np.full(4, 2**31 - 1, np.int32), shift=np.full(4, 3, np.int32))
    x = rng.integers(-128, 128, (1, 5, 5, 4)).astype(np.int8)
    got = reference.depthwise_conv2d(x, layer, get_profile("int8"))
    assert (got == 127).any() and (got == -128).any()
    assert np.array_equal(got[0], naive_depthwise(x[0], layer, get_profile("int8")))


@pytest.mark.parametrize("optimized", [False, True], ids=["reference", "optimized"])
@pytest.mark.parametrize("profile", PROFILES, ids=lambda p: f"{p.name}-{p.accumulator.bits}-{p.accumulator.block}")
def test_native_engine_equals_reference(profile, optimized, tmp_path, native_cache):
    seed = PROFILES.index(profile)
    _, stride, padding, kernel = GEOMETRIES[seed % len(GEOMETRIES)]
    network = random_depthwise_network(seed, SHAPE, stride, padding, kernel, profile,
                                       weight_scale=(1.0, 8.0, 30.0)[seed % 3] if profile.is_fixed else 1.0)
    model = export(network, SHAPE, 5)
    write_header(model, tmp_path)
    engine = NativeEngine(tmp_path, native_cache, optimized=optimized)
    x = random_inputs(seed, 30, SHAPE)
    expected = reference.run_layers(model, x)
    for n in range(len(x)):
        for k in range(len(model.layers)):
            assert np.array_equal(engine.run(x[n], last_layer=k), expected[k][n].reshape(-1)), f"sample {n} layer {k}"


@pytest.mark.parametrize("seed,stride,padding,kernel", [(0, 1, 1, 3), (1, 2, 0, 3), (2, 1, 2, 5), (3, 1, 0, 1)])
def test_int8_depthwise_equals_tflite_micro(seed, stride, padding, kernel):
    pytest.importorskip("tflite_micro")
    from cqtf import oracle
    from cqtf.tflite_export import export_tflite
    from test_tflite_oracle import _ops

    shape = (9, 9, 3) if stride == 2 else SHAPE
    model = export(random_depthwise_network(seed, shape, stride, padding, kernel), shape, 5)
    model_bytes = export_tflite(model)
    assert "DEPTHWISE_CONV_2D" in _ops(model_bytes)
    result = oracle.compare(model, random_inputs(200 + seed, 200, shape), model_bytes)
    assert result.host_mismatched.sum() == 0, result.mismatches


def _act_network(seed, profile, act):
    import torch
    from cqtf.data import InputQuant
    from cqtf.train.layers import QuantConv2d, QuantDepthwiseConv2d, QuantFlatten, QuantLinear
    from cqtf.train.model import QuantSequential
    from random_models import calibrated_quantized

    torch.manual_seed(seed)
    quant = InputQuant(np.float32(0.1), 0) if profile.is_fixed else InputQuant(np.float32(0.08), -5)
    layers = [QuantConv2d(3, 6, 3, padding=1, act=act), QuantDepthwiseConv2d(6, 3, padding=1, act=act),
              QuantFlatten(), QuantLinear(6 * 9 * 7, 8, act=act), QuantLinear(8, 5)]
    network = QuantSequential("act", layers, quant, profile)
    with torch.no_grad():  # large enough outputs that the upper clamp is reached
        for layer in network.quant_layers():
            layer.inner.weight.mul_(4.0)
    return calibrated_quantized(network, random_inputs(seed, 32, SHAPE))


@pytest.mark.parametrize("act", ["relu6", "hardtanh"])
@pytest.mark.parametrize("name", FIRMWARE_PROFILES)
def test_fused_clamps_are_exact(name, act):
    network = _act_network(1, get_profile(name), act)
    model = export(network, SHAPE, 5)
    x = random_inputs(7, 48, SHAPE)
    assert np.array_equal(logits_int8(network, x), reference.run(model, x))
    first = model.layers[0]
    scale = first.scales["output"]
    lo, hi = (0.0, 6.0) if act == "relu6" else (-1.0, 1.0)
    assert first.act_min == max(-128 if not get_profile(name).is_fixed else -127,
                                first.output_offset + round(lo / scale))
    assert first.act_max == min(127, first.output_offset + round(hi / scale))
    if name == "int8":
        pytest.importorskip("tflite_micro")
        from cqtf import oracle

        result = oracle.compare(model, x)
        assert result.host_mismatched.sum() == 0, result.mismatches


def test_relu_flag_unchanged():
    from cqtf.train.layers import QuantConv2d

    layer = QuantConv2d(1, 2, 3, relu=True)
    assert layer.relu and layer.act == "relu"
    assert QuantConv2d(1, 2, 3, act="relu6").relu and not QuantConv2d(1, 2, 3, act="hardtanh").relu


def _bn_network(seed, profile):
    import torch
    from cqtf.data import InputQuant
    from cqtf.train.layers import QuantConv2d, QuantDepthwiseConv2d, QuantFlatten, QuantLinear
    from cqtf.train.model import QuantSequential

    torch.manual_seed(seed)
    quant = InputQuant(np.float32(0.1), 0) if profile.is_fixed else InputQuant(np.float32(0.08), -5)
    layers = [QuantConv2d(3, 6, 3, padding=1, relu=True, bn=True),
              QuantDepthwiseConv2d(6, 3, padding=1, relu=True, bn=True),
              QuantConv2d(6, 4, 1, act="relu6", bn=True), QuantFlatten(), QuantLinear(4 * 9 * 7, 5)]
    return QuantSequential("bn", layers, quant, profile)


@pytest.mark.parametrize("name", FIRMWARE_PROFILES)
def test_batch_norm_folds_and_stays_exact(name):
    """Float training moves the running statistics; eval folds them: conv+BN == the folded conv; the
    quantized forward (trained a few steps with batch statistics) equals the export of the folded layers."""
    import torch
    from random_models import calibrated_quantized

    network = _bn_network(2, get_profile(name))
    x = random_inputs(3, 64, SHAPE)
    y = torch.from_numpy(np.arange(64) % 5)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    for _ in range(3):  # float steps: batch statistics, running averages updated
        network.train()
        loss = torch.nn.functional.cross_entropy(network(torch.from_numpy(x)), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
    conv = network.layers[0]
    assert int(conv.bn.num_batches_tracked) == 3
    with torch.no_grad():  # eval: the folded conv is conv followed by BN with running statistics
        inp = torch.randn(2, 3, 9, 7)
        conv.bn.eval()
        want = conv.bn(conv.op(inp, conv.inner.weight, conv.inner.bias))
        assert torch.allclose(conv.op(inp, conv.weight, conv.bias), want, atol=1e-5)
    network = calibrated_quantized(network, x)
    for _ in range(2):
        network.train()
        loss = torch.nn.functional.cross_entropy(network(torch.from_numpy(x)), y)
        optimizer.zero_grad(); loss.backward(); optimizer.step()
        assert conv.inner.weight.grad.abs().sum() > 0 and conv.bn.weight.grad.abs().sum() > 0
        model = export(network, SHAPE, 5)
        assert np.array_equal(logits_int8(network, x), reference.run(model, x))
