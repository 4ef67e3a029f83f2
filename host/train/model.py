"""Networks built from cqtf layers, and the model zoo."""
from __future__ import annotations

from typing import Callable

import numpy as np
import torch
from torch import nn

from cqtf.data import InputQuant
from cqtf.errors import DataError
from cqtf.profile import PRESETS, Profile
from cqtf.train.layers import (QAct, QParams, QuantConv1d, QuantConv2d, QuantFlatten, QuantLayer, QuantLinear,
                               QuantMaxPool1d, QuantMaxPool2d)
from cqtf.train.layers import QuantAdd, QuantDepthwiseConv2d, QuantGlobalAvgPool, QuantSave


def input_frac_bits(profile: Profile) -> int:
    """Fraction bits of the model input in a fixed-point profile: the format's own, else total - 2
    (inputs are scaled to [0, 1] or [-1, 1], which then fit without saturation)."""
    fmt = profile.activations
    return fmt.frac_bits if fmt.frac_bits is not None else fmt.total_bits - 2


class QuantSequential(nn.Module):
    """A chain of cqtf layers fed with int8 NHWC inputs, as the device receives them."""

    def __init__(self, name: str, layers: list[nn.Module], input_quant: InputQuant, profile: Profile | None = None):
        super().__init__()
        self.name = name
        self.layers = nn.ModuleList(layers)
        self.data_input_quant = input_quant  # how raw data become the int8 inputs (kept in the IntModel)
        self.float_input_gain = 1.0  # float mode only: inputs scaled by this (see train_in_data_units)
        for before, layer in zip(layers, layers[1:]):
            if isinstance(before, QuantFlatten) and isinstance(layer, QuantLinear):
                layer.flatten_from = before
        self.set_profile(profile or PRESETS["int8"])

    def set_profile(self, profile: Profile) -> None:
        """The device arithmetic of the quantized forward. Fixed point: the int8 input q means q * 2^-f
        with f = input_frac_bits(profile) (zero point 0), whatever the data's own scale."""
        self.profile = profile
        for layer in self.layers:
            if hasattr(layer, "profile"):
                layer.profile = profile
        if profile.is_fixed:
            if self.data_input_quant.zero_point != 0:
                raise ValueError("a fixed-point profile needs inputs with zero point 0 (data.fixed_input_quant)")
            self.input_qparams = QParams(np.float32(2.0 ** -input_frac_bits(profile)), 0)
        else:
            self.input_qparams = QParams(self.data_input_quant.scale, self.data_input_quant.zero_point)

    def train_in_data_units(self) -> None:
        """Float training sees the inputs in the data's own units, as with int8 inputs.

        A fixed-point device reads its int8 input q as q * 2^-f; the data's units are q * scale. The
        function is the same up to a constant on the first layer's weights, but trained from scratch in
        the smaller units the float network ends up worse (MNIST-1D: 90.4 % against 93.7 %). So the
        float phase multiplies the inputs by the ratio, and fold_input_gain() moves it into the weights."""
        if self.profile.is_fixed:
            self.float_input_gain = float(self.data_input_quant.scale) / float(self.input_qparams.scale)

    def fold_input_gain(self) -> None:
        """Moves float_input_gain into the first conv/linear layer's weights; the function is unchanged."""
        if self.float_input_gain != 1.0:
            with torch.no_grad():
                self.quant_layers()[0].inner.weight.mul_(self.float_input_gain)
            self.float_input_gain = 1.0

    def set_gains(self, gains: list[int]) -> None:
        """Per-layer power-of-two weight gains (one per conv/linear layer) and the cumulative bias gains.
        A residual add takes the gain of its running input; the saved input's scale absorbs the difference."""
        total, gains, saved = 0, iter(gains), {}
        for layer in self.layers:
            if isinstance(layer, QuantLayer):
                gain = next(gains, 0)
                total += gain
                layer.gain_log2, layer.act_gain_log2 = gain, total
            elif isinstance(layer, QuantSave):
                layer.act_gain_log2 = saved[layer.tag] = total
            elif isinstance(layer, QuantAdd):
                layer.act_gain_log2, layer.skip_gain_log2 = total, saved[layer.tag]

    def quant_layers(self) -> list[QuantLayer]:
        return [layer for layer in self.layers if isinstance(layer, QuantLayer)]

    def set_quantized(self, quantized: bool) -> None:
        for layer in self.layers:
            layer.quantized = quantized

    def observed_layers(self) -> list[nn.Module]:
        """Layers whose output range is observed (conv, linear, add)."""
        return [layer for layer in self.layers if hasattr(layer, "observer")]

    def set_calibrating(self, calibrating: bool) -> None:
        for layer in self.layers:
            if hasattr(layer, "observer"):
                layer.observer.calibrating = calibrating

    @property
    def quantized(self) -> bool:
        return any(getattr(layer, "quantized", False) for layer in self.layers)

    def input_act(self, x_int8: torch.Tensor) -> QAct:
        q = x_int8.long().permute(0, 3, 1, 2)  # (N, H, W, C) -> (N, C, H, W)
        value = (q.float() - self.input_qparams.zero_point) * float(self.input_qparams.scale)
        if self.float_input_gain != 1.0:
            if self.quantized:
                raise RuntimeError("fold_input_gain() before quantized training or export")
            value = value * self.float_input_gain
        return QAct(value, q if self.quantized else None, self.input_qparams)

    def forward_act(self, x_int8: torch.Tensor) -> QAct:
        act = self.input_act(x_int8)
        saved: dict[str, QAct] = {}
        for layer in self.layers:
            if isinstance(layer, QuantSave):
                saved[layer.tag] = act
            elif isinstance(layer, QuantAdd):
                act = layer(act, saved[layer.tag])
            else:
                act = layer(act)
        return act

    def forward(self, x_int8: torch.Tensor) -> torch.Tensor:
        """Logits (float; in quantized mode the dequantized device outputs)."""
        return self.forward_act(x_int8).value


def digits_cnn(input_shape: tuple[int, int, int], num_classes: int, input_quant: InputQuant,
               profile: Profile | None = None) -> QuantSequential:
    """conv3x3(8)+ReLU, maxpool 2, conv3x3(16)+ReLU, dense: about 25 k MACs for 8x8x1."""
    h, w, c = input_shape
    if h % 2 or w % 2:
        raise DataError(f"digits_cnn needs even input height and width, got {h}x{w}", "pick another model")
    layers = [
        QuantConv2d(c, 8, 3, padding=1, relu=True),
        QuantMaxPool2d(2),
        QuantConv2d(8, 16, 3, padding=1, relu=True),
        QuantFlatten(),
        QuantLinear(16 * (h // 2) * (w // 2), num_classes),
    ]
    return QuantSequential("digits_cnn", layers, input_quant, profile)


def mnist1d_cnn(input_shape: tuple[int, int, int], num_classes: int, input_quant: InputQuant,
                profile: Profile | None = None) -> QuantSequential:
    """A 1-D CNN for sequences (1, L, C): conv5(16)+ReLU, pool 2, conv3(32)+ReLU, pool 2, conv3(32)+ReLU, dense.

    About 70 k MACs for MNIST-1D's length-40 sequences.
    """
    h, length, c = input_shape
    if h != 1 or length % 4:
        raise DataError(f"mnist1d_cnn takes sequences (1, L, C) with L a multiple of 4, got {input_shape}",
                        "give 1-D data, e.g. --dataset mnist1d or an .npz with x of shape (N, L)")
    layers = [
        QuantConv1d(c, 16, 5, padding=2, relu=True),
        QuantMaxPool1d(2),
        QuantConv1d(16, 32, 3, padding=1, relu=True),
        QuantMaxPool1d(2),
        QuantConv1d(32, 32, 3, padding=1, relu=True),
        QuantFlatten(),
        QuantLinear(32 * (length // 4), num_classes),
    ]
    return QuantSequential("mnist1d_cnn", layers, input_quant, profile)


def ds_cnn(input_shape: tuple[int, int, int], num_classes: int, input_quant: InputQuant,
           profile: Profile | None = None) -> QuantSequential:
    """Keyword-spotting-style depthwise-separable CNN for 8x8 images: conv3x3(16)+BN+ReLU, then three blocks
    of depthwise3x3+BN+ReLU and pointwise1x1+BN+ReLU (16->32, pool 2, 32->32, 32->32), pool 2, dense.
    About 100 k MACs and 2 KB of activations for 8x8x1."""
    h, w, c = input_shape
    if h % 4 or w % 4:
        raise DataError(f"ds_cnn needs input height and width multiples of 4, got {h}x{w}", "pick another model")
    layers = [
        QuantConv2d(c, 16, 3, padding=1, relu=True, bn=True),
        QuantDepthwiseConv2d(16, 3, padding=1, relu=True, bn=True), QuantConv2d(16, 32, 1, relu=True, bn=True),
        QuantMaxPool2d(2),
        QuantDepthwiseConv2d(32, 3, padding=1, relu=True, bn=True), QuantConv2d(32, 32, 1, relu=True, bn=True),
        QuantDepthwiseConv2d(32, 3, padding=1, relu=True, bn=True), QuantConv2d(32, 32, 1, relu=True, bn=True),
        QuantMaxPool2d(2),
        QuantFlatten(),
        QuantLinear(32 * (h // 4) * (w // 4), num_classes),
    ]
    return QuantSequential("ds_cnn", layers, input_quant, profile)


def _residual_block(tag: str, channels: int) -> list[nn.Module]:
    """x -> relu(x + bn(conv3x3(relu(bn(conv3x3(x)))))), the basic block of a ResNet."""
    return [QuantSave(tag),
            QuantConv2d(channels, channels, 3, padding=1, relu=True, bn=True),
            QuantConv2d(channels, channels, 3, padding=1, bn=True),
            QuantAdd(tag, relu=True)]


def resnet_small(input_shape: tuple[int, int, int], num_classes: int, input_quant: InputQuant,
                 profile: Profile | None = None) -> QuantSequential:
    """A small residual network for 8x8 images: conv3x3(16)+BN+ReLU, a basic residual block (16), max pool 2,
    conv1x1(32)+BN+ReLU, a basic residual block (32), global average pool, dense. About 260 k MACs for 8x8x1."""
    h, w, c = input_shape
    if h % 2 or w % 2:
        raise DataError(f"resnet_small needs even input height and width, got {h}x{w}", "pick another model")
    layers = [
        QuantConv2d(c, 16, 3, padding=1, relu=True, bn=True),
        *_residual_block("block1", 16),
        QuantMaxPool2d(2),
        QuantConv2d(16, 32, 1, relu=True, bn=True),
        *_residual_block("block2", 32),
        QuantGlobalAvgPool(),
        QuantFlatten(),
        QuantLinear(32, num_classes),
    ]
    return QuantSequential("resnet_small", layers, input_quant, profile)


ZOO: dict[str, Callable[..., QuantSequential]] = {"digits_cnn": digits_cnn, "mnist1d_cnn": mnist1d_cnn,
                                                  "ds_cnn": ds_cnn, "resnet_small": resnet_small}
ZOO_DATASETS: dict[str, str] = {"digits_cnn": "digits", "mnist1d_cnn": "mnist1d",
                                "ds_cnn": "digits", "resnet_small": "digits"}  # what each model is made for


def build_model(name: str, input_shape, num_classes: int, input_quant: InputQuant,
                profile: Profile | None = None) -> QuantSequential:
    if name not in ZOO:
        raise DataError(f"unknown model '{name}'", f"choose one of: {', '.join(sorted(ZOO))}")
    return ZOO[name](tuple(input_shape), num_classes, input_quant, profile)


def logits_int8(model: QuantSequential, x_int8: np.ndarray) -> np.ndarray:
    """The quantized model's int8 outputs (N, classes), computed by the training forward pass."""
    model.eval()
    with torch.no_grad():
        act = model.forward_act(torch.from_numpy(x_int8))
    return act.q.numpy().astype(np.int8)
