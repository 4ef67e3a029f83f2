"""Layers whose quantized forward pass computes the device's integers exactly.

Each layer runs in one of two modes:
- float: ordinary PyTorch, used for the float baseline and to pre-train;
- quantized: the forward value is the device's int8 output (int8 weights, int32 accumulation in
  exact float64, TFLM double-rounding requantization, saturation), while gradients flow through a
  float "shadow" of the same computation (straight-through, zeroed where the output saturates).

Activations travel as `QAct`: the float value that carries gradients, the exact integer tensor, and
its quantization. `integer_params()` is the single source of the integers: the forward pass and the
exporter (train/export.py) both call it, so what trains is what ships.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from cqtf.fixedpoint import effective_scale, quantize_multiplier, requantize

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
WEIGHT_QMAX = 127  # symmetric int8 weights in [-127, 127], as TFLite requires


@dataclass(frozen=True)
class QParams:
    """int8 affine quantization of an activation: real = (q - zero_point) * scale."""

    scale: np.float32
    zero_point: int

    @staticmethod
    def from_range(lo: float, hi: float) -> "QParams":
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = np.float32(max(hi - lo, 1e-8) / 255.0)
        zero_point = int(np.clip(round(-128 - lo / float(scale)), -128, 127))
        return QParams(scale, zero_point)


class QAct(NamedTuple):
    value: torch.Tensor  # float, carries gradients; equals (q - zp) * scale in quantized mode
    q: torch.Tensor | None  # int64 device integers, None in float mode
    qparams: QParams | None


@dataclass
class IntegerParams:
    """Everything the device needs for one conv/linear layer, as the device will hold it."""

    weights: torch.Tensor  # int values (float dtype), torch layout
    weight_scales: np.ndarray  # (O,) float32
    bias: torch.Tensor  # (O,) int32 values (int64 dtype)
    multiplier: np.ndarray  # (O,) int32
    shift: np.ndarray  # (O,) int32
    out_qparams: QParams
    act_min: int
    act_max: int


class RangeObserver(nn.Module):
    """Tracks an activation's range: exact min/max while calibrating, an EMA while training."""

    def __init__(self, momentum: float = 0.05):
        super().__init__()
        self.momentum = momentum
        self.calibrating = False
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        lo, hi = x.min().float(), x.max().float()
        if self.calibrating:
            self.lo.copy_(torch.minimum(self.lo, lo) if self.initialized else lo)
            self.hi.copy_(torch.maximum(self.hi, hi) if self.initialized else hi)
        elif self.initialized:
            self.lo.lerp_(lo, self.momentum)
            self.hi.lerp_(hi, self.momentum)
        else:
            self.lo.copy_(lo)
            self.hi.copy_(hi)
        self.initialized.fill_(True)

    def qparams(self) -> QParams:
        if not bool(self.initialized):
            raise RuntimeError("observer has seen no data: calibrate before quantized training or export")
        return QParams.from_range(float(self.lo), float(self.hi))


def _round_half_away(x: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.floor(x.abs() + 0.5)


class QuantLayer(nn.Module):
    """Shared machinery of conv and linear: weight/bias quantization, requantization, STE."""

    def __init__(self, relu: bool):
        super().__init__()
        self.relu = relu
        self.quantized = False
        self.observer = RangeObserver()

    # subclasses: the float op, and the axis layout of per-channel parameters in its output
    def op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    channel_view: tuple[int, ...] = (1, -1)

    @property
    def weight(self) -> torch.Tensor:
        return self.inner.weight

    @property
    def bias(self) -> torch.Tensor:
        return self.inner.bias

    def integer_params(self, in_qparams: QParams) -> IntegerParams:
        w = self.weight.detach()
        per_channel_max = w.abs().reshape(w.shape[0], -1).amax(dim=1)
        weight_scales = (per_channel_max / WEIGHT_QMAX).clamp(min=1e-12).float().numpy().astype(np.float32)
        w_scale_t = torch.from_numpy(weight_scales).reshape((-1,) + (1,) * (w.dim() - 1))
        weights = torch.clamp(_round_half_away(w / w_scale_t), -WEIGHT_QMAX, WEIGHT_QMAX)
        bias_scales = torch.from_numpy(weight_scales.astype(np.float64) * float(in_qparams.scale))
        bias = torch.clamp(_round_half_away(self.bias.detach().double() / bias_scales), INT32_MIN, INT32_MAX).long()
        out_qparams = self.observer.qparams()
        pairs = [quantize_multiplier(effective_scale(in_qparams.scale, s, out_qparams.scale)) for s in weight_scales]
        multiplier = np.array([m for m, _ in pairs], dtype=np.int32)
        shift = np.array([s for _, s in pairs], dtype=np.int32)
        act_min = max(-128, out_qparams.zero_point) if self.relu else -128
        return IntegerParams(weights, weight_scales, bias, multiplier, shift, out_qparams, act_min, 127)

    def forward(self, x: QAct) -> QAct:
        if not self.quantized:
            y = self.op(x.value, self.weight, self.bias)
            y = F.relu(y) if self.relu else y
            if self.training or self.observer.calibrating:
                self.observer.observe(y)
            return QAct(y, None, None)
        return self._quantized_forward(x)

    def _quantized_forward(self, x: QAct) -> QAct:
        p = self.integer_params(x.qparams)
        # Exact integer accumulator: int operands in float64 are exact while |acc| < 2^53,
        # far above the int32 the device accumulates in.
        acc = self.op((x.q - x.qparams.zero_point).double(), p.weights.double(), p.bias.double())
        view = self.channel_view
        requantized = requantize(acc.round().long().numpy(), p.multiplier.reshape(view), p.shift.reshape(view))
        requantized = torch.from_numpy(requantized) + p.out_qparams.zero_point
        q = requantized.clamp(p.act_min, p.act_max)
        exact = (q.float() - p.out_qparams.zero_point) * float(p.out_qparams.scale)

        # Float shadow for the gradient: straight-through on weight rounding, zero where saturated.
        w_scales = torch.from_numpy(p.weight_scales).reshape((-1,) + (1,) * (self.weight.dim() - 1))
        w_fake = self.weight + (p.weights * w_scales - self.weight).detach()
        shadow = self.op(x.value, w_fake, self.bias)
        if self.training:
            self.observer.observe(F.relu(shadow) if self.relu else shadow)
        passes = ((requantized >= p.act_min) & (requantized <= p.act_max)).float()
        shadow = shadow * passes
        value = shadow + (exact - shadow).detach()
        return QAct(value, q, p.out_qparams)


class QuantConv2d(QuantLayer):
    channel_view = (1, -1, 1, 1)  # NCHW

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0, relu: bool = False):
        super().__init__(relu)
        self.inner = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)

    def op(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.inner.stride, self.inner.padding)


class QuantConv1d(QuantConv2d):
    """A 1-D convolution over (N, C, 1, L): a conv2d of height 1, so the device runs its conv2d kernel.

    Sequences travel as NHWC (1, L, C) on the device, the layout `cqtf.data` gives (N, L) inputs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, relu: bool = False):
        super().__init__(in_channels, out_channels, (1, kernel_size), (1, stride), (0, padding), relu)


class QuantLinear(QuantLayer):
    channel_view = (1, -1)

    def __init__(self, in_features: int, out_features: int, relu: bool = False):
        super().__init__(relu)
        self.inner = nn.Linear(in_features, out_features)

    def op(self, x, weight, bias):
        return F.linear(x, weight, bias)


class QuantMaxPool2d(nn.Module):
    """Max pooling commutes with a positive-scale affine map, so int and float paths agree trivially."""

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.kernel_size, self.padding = _pair(kernel_size), _pair(padding)
        self.stride = _pair(stride) if stride is not None else self.kernel_size
        self.quantized = False

    def forward(self, x: QAct) -> QAct:
        pool = lambda t: F.max_pool2d(t, self.kernel_size, self.stride, self.padding)  # noqa: E731
        y = pool(x.value)
        q = None if x.q is None else pool(x.q.double()).long()
        return QAct(y, q, x.qparams)


class QuantMaxPool1d(QuantMaxPool2d):
    """Max pooling along a sequence held as (N, C, 1, L)."""

    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0):
        super().__init__((1, kernel_size), (1, stride or kernel_size), (0, padding))


class QuantFlatten(nn.Module):
    """Flattens (N, C, H, W) in PyTorch's order; the exporter reorders the next layer's weights to NHWC."""

    quantized = False

    def forward(self, x: QAct) -> QAct:
        return QAct(x.value.flatten(1), None if x.q is None else x.q.flatten(1), x.qparams)
