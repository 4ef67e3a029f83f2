"""Random small integer models and networks for property tests."""
from __future__ import annotations

import numpy as np
import torch

from cqtf.data import InputQuant
from cqtf.fixedpoint import quantize_multiplier
from cqtf.model_ir import IntLayer
from cqtf.train.layers import QuantConv2d, QuantFlatten, QuantLinear, QuantMaxPool2d
from cqtf.train.model import QuantSequential


def random_conv_layer(rng, h, w, cin, cout, k, stride, pad, relu) -> IntLayer:
    out_h, out_w = (h + 2 * pad - k) // stride + 1, (w + 2 * pad - k) // stride + 1
    zp_out = int(rng.integers(-128, 128))
    pairs = [quantize_multiplier(float(s)) for s in rng.uniform(1e-4, 0.05, cout)]
    return IntLayer(
        "conv2d", (h, w, cin), (out_h, out_w, cout), (k, k), (stride, stride), (pad, pad),
        input_offset=int(rng.integers(-127, 129)), output_offset=zp_out,
        act_min=max(zp_out, -128) if relu else -128, act_max=127,
        weights=rng.integers(-127, 128, (cout, k, k, cin)).astype(np.int8),
        bias=rng.integers(-(2**15), 2**15, cout).astype(np.int32),
        multiplier=np.array([m for m, _ in pairs], np.int32), shift=np.array([s for _, s in pairs], np.int32),
    )


def random_network(seed: int, input_shape=(9, 7, 2), stride=1, padding=1, kernel=3) -> QuantSequential:
    """A randomly initialized network, calibrated on random inputs, in quantized mode."""
    torch.manual_seed(seed)
    h, w, c = input_shape
    quant = InputQuant(np.float32(0.05 + seed % 7 * 0.01), int(seed % 50) - 25)
    conv = QuantConv2d(c, 4, kernel, stride=stride, padding=padding, relu=bool(seed % 2))
    oh, ow = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    ph, pw = (oh + 2 * 1 - 3) // 2 + 1, (ow + 2 * 1 - 3) // 2 + 1
    layers = [conv, QuantMaxPool2d(3, 2, 1), QuantFlatten(), QuantLinear(4 * ph * pw, 5)]
    return calibrated_quantized(QuantSequential("random", layers, quant), random_inputs(seed, 32, input_shape))


def calibrated_quantized(network: QuantSequential, x: np.ndarray) -> QuantSequential:
    """Calibrate the network's activation ranges on x, then switch it to the device's forward pass."""
    network.eval()
    network.set_calibrating(True)
    with torch.no_grad():
        network(torch.from_numpy(x))
    network.set_calibrating(False)
    network.set_quantized(True)
    return network


def random_inputs(seed: int, n: int, shape) -> np.ndarray:
    return np.random.default_rng(seed).integers(-128, 128, (n,) + tuple(shape)).astype(np.int8)


def random_depthwise_network(seed: int, input_shape=(9, 7, 3), stride=1, padding=1, kernel=3,
                             profile=None, weight_scale=1.0) -> QuantSequential:
    """conv 1x1 -> depthwise kxk -> pointwise 1x1 -> dense: a randomly initialized depthwise-separable
    network, calibrated on random inputs, in quantized mode (profile None: int8)."""
    from cqtf.train.layers import QuantDepthwiseConv2d

    torch.manual_seed(seed)
    h, w, c = input_shape
    fixed = profile is not None and profile.is_fixed
    quant = InputQuant(np.float32(0.1), 0) if fixed else InputQuant(np.float32(0.05 + seed % 7 * 0.01), int(seed % 50) - 25)
    oh, ow = (h + 2 * padding - kernel) // stride + 1, (w + 2 * padding - kernel) // stride + 1
    layers = [QuantConv2d(c, 6, 1, relu=True),
              QuantDepthwiseConv2d(6, kernel, stride=stride, padding=padding, relu=bool(seed % 2)),
              QuantConv2d(6, 4, 1, relu=True), QuantFlatten(), QuantLinear(4 * oh * ow, 5)]
    network = QuantSequential("random_dw", layers, quant, profile)
    with torch.no_grad():
        for layer in network.quant_layers():
            layer.inner.weight.mul_(weight_scale)
    return calibrated_quantized(network, random_inputs(seed, 32, input_shape))


def random_residual_network(seed: int, input_shape=(5, 5, 3), profile=None, gains=None,
                            weight_scale=1.0) -> "QuantSequential":
    """conv -> [save, conv, conv, add(+relu)] -> avgpool 3/2 pad 1 -> global average pool -> dense:
    a randomly initialized residual network, calibrated on random inputs, in quantized mode. gains:
    per-conv/linear power-of-two gains (QuantSequential.set_gains), to test their exactness."""
    from cqtf.train.layers import QuantAdd, QuantAvgPool2d, QuantGlobalAvgPool, QuantSave

    torch.manual_seed(seed)
    c = input_shape[2]
    fixed = profile is not None and profile.is_fixed
    quant = InputQuant(np.float32(0.1), 0) if fixed else InputQuant(np.float32(0.05 + seed % 7 * 0.01), int(seed % 50) - 25)
    layers = [QuantConv2d(c, 5, 3, padding=1, relu=True), QuantSave("skip"),
              QuantConv2d(5, 5, 3, padding=1, relu=True), QuantConv2d(5, 5, 1), QuantAdd("skip", relu=bool(seed % 2)),
              QuantAvgPool2d(3, 2, 1), QuantGlobalAvgPool(), QuantFlatten(), QuantLinear(5, 4)]
    network = QuantSequential("random_res", layers, quant, profile)
    with torch.no_grad():
        for layer in network.quant_layers():
            layer.inner.weight.mul_(weight_scale)
    if gains is not None:
        network.set_gains(gains)
    return calibrated_quantized(network, random_inputs(seed, 32, input_shape))
