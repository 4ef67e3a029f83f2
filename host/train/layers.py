"""Layers whose quantized forward pass computes the device's integers exactly.

Each layer runs in one of two modes:
- float: ordinary PyTorch, used for the float baseline and to pre-train;
- quantized: the forward value is the device's int8 output (int8 weights, int32 accumulation in
  exact float64, TFLM double-rounding requantization, saturation), while gradients are those of a
  float "shadow" of the same computation (straight-through, zeroed where the output saturates),
  computed by the op's backward alone (ExactWithShadowGradient): the shadow's forward never runs.

Activations travel as `QAct`: the float value that carries gradients, the exact integer tensor, and
its quantization. `integer_params()` is the single source of the integers: the forward pass and the
exporter (train/export.py) both call it, so what trains is what ships.
"""
from __future__ import annotations

import functools

from dataclasses import dataclass
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from cqtf.fixedpoint import (add_fixed, add_int8, add_multipliers, quantize_multipliers, requantize,
                             requantize_single, round_div, round_shift, saturate)
from cqtf import pow2
from cqtf.profile import (PRESETS, ROUNDING_CODES, FixedPoint, PowerOfTwo, Profile, Requant, add_single_rounding,
                          average_rounding)
from cqtf.train import native_forward

INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
WEIGHT_QMAX = 127  # symmetric int8 weights in [-127, 127], as TFLite requires
ACTIVATIONS = (None, "relu", "relu6", "hardtanh")  # fused activations (QuantLayer.set_act)
BOUND_GROUP = 16  # products per group of the partial-sum bounds (QuantLayer._exact_partial_sums)


@dataclass(frozen=True)
class QParams:
    """int8 affine quantization of an activation: real = (q - zero_point) * scale."""

    scale: np.float32
    zero_point: int

    @staticmethod
    def from_range(lo: float, hi: float) -> "QParams":
        lo, hi = min(lo, 0.0), max(hi, 0.0)
        scale = np.float32(max(hi - lo, 1e-8) / 255.0)
        zero_point = min(max(round(-128 - lo / float(scale)), -128), 127)
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


@dataclass
class FixedParams:
    """One conv/linear layer of a fixed-point profile, as the device will hold it."""

    weights: torch.Tensor  # int values (float dtype), torch layout
    weight_frac: int
    bias: torch.Tensor  # (O,) int values (int64), accumulator format
    acc_frac: int
    acc_shift: int  # product fraction bits - accumulator fraction bits
    shift: int  # out fraction bits - accumulator fraction bits (positive = left)
    out_qparams: QParams  # scale 2^-out_frac, zero point 0
    act_min: int
    act_max: int
    largest_weight: int | None = None  # max |weights| and max |bias|, where known
    largest_bias: int | None = None


def frac_bits_of(qparams: QParams) -> int:
    """Fraction bits of a fixed-point activation (scale 2^-f, zero point 0)."""
    f = int(round(-np.log2(float(qparams.scale))))
    assert qparams.zero_point == 0 and float(qparams.scale) == 2.0 ** -f, qparams
    return f


def fitting_frac_bits(max_abs: float, qmax: int, lo: int = 0, hi: int = 20) -> int:
    """The most fraction bits with max_abs * 2^f <= qmax (no saturation), within [lo, hi]."""
    if max_abs <= 0:
        return hi
    return int(np.clip(np.floor(np.log2(qmax / max_abs)), lo, hi))


class SaturatingSTE(torch.autograd.Function):
    """Saturation-aware straight-through gradient: inside the range the gradient passes; where the
    output saturated, only the part that pushes the value back inside passes (a descent step on a
    positive gradient lowers a value stuck at the top), so saturated units are not dead for good."""

    @staticmethod
    def forward(ctx, x, inside, high, low):
        ctx.save_for_backward(inside, high, low)
        return x.clone()

    @staticmethod
    def backward(ctx, grad):
        inside, high, low = ctx.saved_tensors
        keep = inside | (high & (grad > 0)) | (low & (grad < 0))
        return grad * keep, None, None, None


class ExactWithShadowGradient(torch.autograd.Function):
    """Forward: the device's exact output. Backward: the gradient a float "shadow" op(x, weight, bias)
    would get (straight-through on weight rounding), masked as SaturatingSTE masks it, computed by the
    op's own backward (QuantLayer.op_backward) without ever running the shadow forward.

    high / low may be None where nothing saturated that way (or, below a ReLU's zero, where no
    gradient should pass): the mask then costs nothing; inside may be None where every output is
    inside (then high and low are None too)."""

    @staticmethod
    def forward(ctx, shadow, x, weight, bias, inside, high, low, layer):
        """shadow: [exact] or [exact, weight_values]. exact: a tensor made for this output alone (in a
        list, autograd does not see it as an input, so it is returned as is instead of copied).
        weight_values: the shadow's weights where they differ from `weight` by a constant (straight-
        through: weight's gradient is theirs), so no autograd op has to add the two."""
        exact, weight_values = shadow[0], (shadow[1] if len(shadow) > 1 else weight)
        ctx.save_for_backward(x, weight_values, inside, high, low)
        ctx.layer, ctx.has_bias = layer, bias is not None
        return exact

    @staticmethod
    def backward(ctx, grad):
        x, weight, inside, high, low = ctx.saved_tensors
        keep = inside
        if ctx.layer.saturation_aware:  # the gradient that moves a saturated value back inside passes
            if high is not None:
                keep = keep | (high & (grad > 0))
            if low is not None:
                keep = keep | (low & (grad < 0))
        needs = (ctx.needs_input_grad[1], ctx.needs_input_grad[2], ctx.needs_input_grad[3] and ctx.has_bias)
        gx, gw, gb = ctx.layer.op_backward(grad if keep is None else grad * keep, x, weight, needs)
        return None, gx, gw, gb, None, None, None, None


class _ObserverMirror:
    """RangeObserver's float state: plain attributes (an nn.Module attribute write costs a microsecond
    or more, and the training loop writes these once per layer and step)."""

    __slots__ = ("range", "buffers_stale", "qparams")

    def __init__(self):
        self.range: tuple[float, float] | None = None  # (lo, hi) as float32 values; None: not initialized
        self.buffers_stale = False
        self.qparams: tuple[tuple[float, float], QParams] | None = None  # (for range, qparams)


class RangeObserver(nn.Module):
    """Tracks an activation's range: exact min/max while calibrating, an EMA while training.

    The buffers (lo, hi, initialized) are the saved state. The training loop works on a float mirror of
    them (no tensor read or write per layer and step); the buffers follow when a state dict is taken,
    and the mirror when one is loaded."""

    def __init__(self, momentum: float = 0.05):
        super().__init__()
        self.momentum = momentum
        self.calibrating = False
        self.register_buffer("lo", torch.tensor(0.0))
        self.register_buffer("hi", torch.tensor(0.0))
        self.register_buffer("initialized", torch.tensor(False))
        self._mirror = _ObserverMirror()

    def _load_from_state_dict(self, *args, **kwargs):
        super()._load_from_state_dict(*args, **kwargs)
        self._mirror.range = (float(self.lo), float(self.hi)) if bool(self.initialized) else None
        self._mirror.buffers_stale = False

    def _save_to_state_dict(self, destination, prefix, keep_vars):
        mirror = self._mirror
        if mirror.buffers_stale:
            with torch.no_grad():
                self.initialized.fill_(mirror.range is not None)
                if mirror.range is not None:
                    self.lo.fill_(mirror.range[0])
                    self.hi.fill_(mirror.range[1])
            mirror.buffers_stale = False
        super()._save_to_state_dict(destination, prefix, keep_vars)

    def reset(self) -> None:
        self._mirror.range = None
        self._mirror.buffers_stale = True

    @torch.no_grad()
    def observe(self, x: torch.Tensor) -> None:
        lo, hi = torch.aminmax(x.detach())
        self.observe_range(float(lo), float(hi))

    def observe_range(self, lo: float, hi: float) -> None:
        """One observation whose extremes are lo and hi."""
        mirror = self._mirror
        if mirror.range is None:
            new = (lo, hi)
        elif self.calibrating:
            new = (min(mirror.range[0], lo), max(mirror.range[1], hi))
        else:
            m = self.momentum
            new = tuple(old + m * (v - old) for old, v in zip(mirror.range, (lo, hi)))
        mirror.range = (float(np.float32(new[0])), float(np.float32(new[1])))
        mirror.buffers_stale = True

    def range(self) -> tuple[float, float]:
        if self._mirror.range is None:
            raise RuntimeError("observer has seen no data: calibrate before quantized training or export")
        return self._mirror.range

    def qparams(self) -> QParams:
        mirror = self._mirror
        current = self.range()
        if mirror.qparams is None or mirror.qparams[0] != current:
            mirror.qparams = (current, QParams.from_range(*current))
        return mirror.qparams[1]


def _observed_frac(observer: RangeObserver, qmax: int) -> int:
    """The most fraction bits that hold the observed range without saturating."""
    lo, hi = observer.range()
    return fitting_frac_bits(max(abs(lo), abs(hi)), qmax)


def _channel_range(acc: np.ndarray, channel_scales) -> tuple[float, float]:
    """The least and largest value of acc (N, C, ...) times its channel's scale (one scale or C): the
    float pre-activation's range the observer sees (the activation is monotonic and the scales
    positive, so the per-channel extremes of acc give it)."""
    per_channel = acc.reshape(acc.shape[0], acc.shape[1], -1)
    lows = per_channel.min(axis=0).min(axis=1)  # batch axis first: contiguous
    highs = per_channel.max(axis=0).max(axis=1)
    scales = np.broadcast_to(np.asarray(channel_scales, dtype=np.float64), lows.shape)
    return float((lows * scales).min()), float((highs * scales).max())


def _round_half_away(x: np.ndarray) -> np.ndarray:
    return np.sign(x) * np.floor(np.abs(x) + 0.5)


def _pad_blocks(t: torch.Tensor, dim: int, block: int) -> torch.Tensor:
    """Zero products appended along `dim` up to a multiple of `block` (a zero adds nothing to a block sum)."""
    extra = -t.shape[dim] % block
    if extra == 0:
        return t
    shape = list(t.shape)
    shape[dim] = extra
    return torch.cat([t, t.new_zeros(shape)], dim=dim)


def _saturating_accumulate(sums: np.ndarray, acc_shift: int, acc_spec) -> tuple[np.ndarray, np.ndarray]:
    """The device's accumulator over block sums (J, ...): each rounded by acc_shift and saturated, the
    running sum saturated after every block. Returns (accumulator, where anything saturated). Where no
    prefix sum leaves the range, saturating after each block is the plain sum (one cumsum); only the
    outputs whose prefix sums leave it are walked block by block."""
    s = round_shift(sums, acc_shift, acc_spec.block_rounding) if acc_shift != 0 else sums
    lo, hi = acc_spec.min, acc_spec.max
    s_sat = np.clip(s, lo, hi)
    saturated = (s_sat != s).any(axis=0)
    prefix = np.cumsum(s_sat, axis=0)
    acc = prefix[-1].copy()
    outside = (prefix < lo) | (prefix > hi)
    leaves = outside.any(axis=0)
    if leaves.any():
        walked = s_sat[:, leaves]  # (J, M): only the M outputs that need it
        first = int(outside[:, leaves].any(axis=1).argmax())  # before it, the running sum is the prefix
        running = prefix[first - 1, leaves] if first else np.zeros(walked.shape[1], dtype=np.int64)
        acc[leaves], clipped = _saturating_walk(walked[first:], running, lo, hi)
        saturated[leaves] |= clipped
    return acc, saturated


def _saturating_walk(steps: np.ndarray, running: np.ndarray, lo: int, hi: int) -> tuple[np.ndarray, np.ndarray]:
    """running <- clip(running + step, lo, hi) for each row of steps (J, M) in turn, with running and the
    steps inside [lo, hi]; returns (the final running sums, where any step clipped). In log2(J) whole-array
    passes, not J: a step is the map v -> clip(v + a, l, h), which leaves v + a unclipped for v in
    [nl, nh], and two maps in a row are one of the same kind,
        clip(clip(v + a1, l1, h1) + a2, l2, h2) = clip(v + a1 + a2, clip(l1 + a2, l2, h2), clip(h1 + a2, l2, h2)),
    unclipped for v in [max(nl1, nl2 - a1), min(nh1, nh2 - a1)]. Neighbouring maps merge pairwise (a zero
    step, the identity on [lo, hi], pads an odd count) until one is left; it is applied to the running sums."""
    a = np.asarray(steps, dtype=np.int64)
    if len(a) % 2:
        a = np.concatenate([a, np.zeros((1, a.shape[1]), dtype=np.int64)])
    if len(a) == 0:
        return running.copy(), np.zeros(running.shape, dtype=bool)
    # the first merge, of single steps (l = lo, h = hi, nl = lo - a, nh = hi - a), with scalar bounds
    a1, a2 = a[0::2], a[1::2]
    low, high = np.clip(lo + a2, lo, hi), np.clip(hi + a2, lo, hi)
    a = a1 + a2
    free_low, free_high = np.maximum(lo - a1, lo - a), np.minimum(hi - a1, hi - a)
    while len(a) > 1:
        if len(a) % 2:  # the identity map: a 0, l lo, h hi, nl lo, nh hi
            a, low, high = _append_row(a, 0), _append_row(low, lo), _append_row(high, hi)
            free_low, free_high = _append_row(free_low, lo), _append_row(free_high, hi)
        a1, a2 = a[0::2], a[1::2]
        low2, high2 = low[1::2], high[1::2]
        low = np.minimum(np.maximum(low[0::2] + a2, low2), high2)
        high = np.minimum(np.maximum(high[0::2] + a2, low2), high2)
        free_low = np.maximum(free_low[0::2], free_low[1::2] - a1)
        free_high = np.minimum(free_high[0::2], free_high[1::2] - a1)
        a = a1 + a2
    final = np.minimum(np.maximum(running + a[0], low[0]), high[0])
    return final, (running < free_low[0]) | (running > free_high[0])


def _append_row(t: np.ndarray, value: int) -> np.ndarray:
    return np.concatenate([t, np.full((1, t.shape[1]), value, dtype=np.int64)])


class QuantLayer(nn.Module):
    """Shared machinery of conv and linear: weight/bias quantization, requantization, STE."""

    def __init__(self, relu: bool):
        super().__init__()
        self.relu = relu
        self.quantized = False
        self.observer = RangeObserver()
        self.profile: Profile = PRESETS["int8"]
        self.saturation_aware = True  # SaturatingSTE; False: zero the gradient wherever saturated
        # Per-layer calibration of the fixed-point formats (trainer._calibrate_formats):
        self.gain_log2 = 0  # weights scaled by 2^gain (ReLU nets are positively homogeneous)
        self.act_gain_log2 = 0  # the sum of the gains up to this layer: the bias' scale
        self.weight_frac_drop = 0  # calibrated formats: fraction bits below the largest that fits
        self.out_frac: int | None = None  # calibrated formats: frozen output fraction bits
        self.out_frac_drop = 0
        self.health: dict[str, float] = {}  # counters of the last epoch, see train/health.py
        self.pot_blend = 1.0  # power-of-two weights: w - a (w - Q(w)), a < 1 only early in training (pow2.blend)
        self.weight_frac: int | None = None  # calibrated weight formats: frozen fraction bits (train/pot_blend.py)
        self.act: str | None = "relu" if relu else None  # fused activation: None, relu, relu6, hardtanh

    def set_act(self, act: str | None) -> None:
        """Fused clamp: relu [0, inf), relu6 [0, 6], hardtanh [-1, 1] (TFLite RELU, RELU6, RELU_N1_TO_1)."""
        if act not in ACTIVATIONS:
            raise ValueError(f"unknown activation {act!r}, choose one of {ACTIVATIONS}")
        if act is not None or not self.relu:
            self.act, self.relu = act, act in ("relu", "relu6")  # relu6's floor is a ReLU's zero

    def float_act(self, y: torch.Tensor) -> torch.Tensor:
        if self.act == "relu6":
            return F.relu6(y)
        if self.act == "hardtanh":
            return F.hardtanh(y)
        return F.relu(y) if self.relu else y

    def _act_bounds(self, scale, zero_point: int, act_min: int, act_max: int) -> tuple[int, int]:
        """The clamp of relu6 / hardtanh inside (act_min, act_max), as TFLM's Quantize(f) computes it:
        zero_point + round_half_away(float32(f) / float32(scale))."""
        limits = {"relu6": (0.0, 6.0), "hardtanh": (-1.0, 1.0)}.get(self.act)
        if limits is None:
            return act_min, act_max
        q = [zero_point + int(np.sign(v) * np.floor(abs(v) + 0.5))
             for v in (np.float32(f) / np.float32(scale) for f in limits)]
        return max(act_min, q[0]), min(act_max, q[1])

    # subclasses: the float op, and the axis layout of per-channel parameters in its output
    def op(self, x: torch.Tensor, weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
        raise NotImplementedError

    channel_view: tuple[int, ...] = (1, -1)

    @property
    def weight(self) -> torch.Tensor:
        w = self.inner.weight
        return w * (2.0 ** self.gain_log2) if self.gain_log2 else w

    @property
    def bias(self) -> torch.Tensor:
        b = self.inner.bias
        return b * (2.0 ** self.act_gain_log2) if self.act_gain_log2 else b

    def fixed_params(self, in_qparams: QParams, weight=None, bias=None) -> FixedParams:
        """The integers of a fixed-point profile; the single source for forward and export. weight and
        bias: the float parameters if the caller has them already (else self.weight, self.bias)."""
        prof = self.profile
        wfmt, afmt, acc = prof.weights, prof.activations, prof.accumulator
        w = (self.weight if weight is None else weight).detach()
        b = (self.bias if bias is None else bias).detach()
        native = native_forward.enabled()
        if wfmt.frac_bits is not None:
            w_frac = wfmt.frac_bits
        elif self.weight_frac is not None:
            w_frac = self.weight_frac
        else:  # the float32 weights' largest magnitude, whichever library finds it
            largest = float(w.abs().max()) if native else float(np.abs(w.double().numpy()).max())
            w_frac = fitting_frac_bits(largest, wfmt.qmax) - self.weight_frac_drop
        in_frac = frac_bits_of(in_qparams)
        product_frac = in_frac + w_frac
        acc_frac = acc.frac_bits if acc.frac_bits is not None else product_frac
        if native:
            weights, bias_int, largest_weight, largest_bias = native_forward.fixed_params(
                w, b, 2.0 ** w_frac, wfmt.max_exp if isinstance(wfmt, PowerOfTwo) else -1, self.pot_blend, wfmt.qmax,
                2.0 ** acc_frac, acc.min, acc.max)
        else:
            weights, bias_int, largest_weight, largest_bias = self._fixed_arrays(w, b, w_frac, acc_frac)
        if afmt.frac_bits is not None:
            out_frac = afmt.frac_bits
        elif self.out_frac is not None:
            out_frac = self.out_frac
        else:
            out_frac = self.observed_out_frac()
        act_min = 0 if self.relu else -afmt.qmax
        act_min, act_max = self._act_bounds(np.float32(2.0 ** -out_frac), 0, act_min, afmt.qmax)
        return FixedParams(weights, w_frac, bias_int, acc_frac, product_frac - acc_frac, out_frac - acc_frac,
                           QParams(np.float32(2.0 ** -out_frac), 0), act_min, act_max, largest_weight, largest_bias)

    def _fixed_arrays(self, w: torch.Tensor, b: torch.Tensor, w_frac: int, acc_frac: int):
        """fixed_params' integer weights (float32), bias (int64), largest |weight| and |bias|, in numpy and
        torch (the reference of native_forward.fixed_params)."""
        wfmt, acc = self.profile.weights, self.profile.accumulator
        if isinstance(wfmt, PowerOfTwo):
            weights = pow2.blend(w.double() * 2.0 ** w_frac, wfmt.max_exp, self.pot_blend).float()
        else:
            w_np = w.double().numpy()  # small arrays: numpy, the same float64 values as torch
            weights = np.clip(_round_half_away(w_np * 2.0 ** w_frac), -wfmt.qmax, wfmt.qmax)
            weights = torch.from_numpy(weights.astype(np.float32))
        b_np = b.double().numpy()
        bias = torch.from_numpy(np.clip(_round_half_away(b_np * 2.0 ** acc_frac), acc.min, acc.max).astype(np.int64))
        return weights, bias, int(np.abs(weights.numpy()).max()), int(np.abs(bias.numpy()).max(initial=0))

    def observed_out_frac(self) -> int:
        return _observed_frac(self.observer, self.profile.activations.qmax) - self.out_frac_drop

    def integer_params(self, in_qparams: QParams, weight=None, bias=None) -> IntegerParams:
        """The integers of an int8 profile; the single source for forward and export (weight, bias: as in
        fixed_params)."""
        # In numpy: these arrays are small (weights, one value per channel), where torch's per-call cost
        # dominates; float32 and float64 IEEE operations, the same values either way.
        w = (self.weight if weight is None else weight).detach().float().numpy()
        per_channel_max = np.abs(w).reshape(w.shape[0], -1).max(axis=1)
        weight_scales = np.maximum(per_channel_max / np.float32(WEIGHT_QMAX), np.float32(1e-12))
        w_scales = weight_scales.reshape((-1,) + (1,) * (w.ndim - 1))
        # no clamp needed: |w| <= max and scale = fl32(max / 127), so |w / scale| < 127 (1 + 2^-22) < 127.5
        weights = torch.from_numpy(_round_half_away(w / w_scales))
        bias_scales = weight_scales.astype(np.float64) * float(in_qparams.scale)
        b = (self.bias if bias is None else bias).detach().double().numpy()
        bias = torch.from_numpy(np.clip(_round_half_away(b / bias_scales), INT32_MIN, INT32_MAX).astype(np.int64))
        out_qparams = self.observer.qparams()
        # effective_scale for every channel: the same float64 products of float32 scales
        reals = float(in_qparams.scale) * weight_scales.astype(np.float64) / float(out_qparams.scale)
        multiplier, shift = quantize_multipliers(reals)
        return IntegerParams(weights, weight_scales, bias, multiplier, shift, out_qparams,
                             *self._int8_clamp(out_qparams))

    def _int8_clamp(self, out_qparams: QParams) -> tuple[int, int]:
        """(act_min, act_max) of the int8 output: the activation's clamp within [-128, 127]."""
        act_min = max(-128, out_qparams.zero_point) if self.relu else -128
        return self._act_bounds(out_qparams.scale, out_qparams.zero_point, act_min, 127)

    def forward(self, x: QAct) -> QAct:
        if not self.quantized:
            y = self.op(x.value, self.weight, self.bias)
            y = self.float_act(y)
            if self.training or self.observer.calibrating:
                self.observer.observe(y)
            return QAct(y, None, None)
        if self.profile.is_fixed:
            return self._fixed_forward(x)
        return self._quantized_forward(x)

    # subclasses: the device-order columns (N, K, L) of an integer input, and the weights as (O, K)
    def device_columns(self, q: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def column_geometry(self, q: torch.Tensor) -> tuple[torch.Tensor, tuple[int, ...], bool]:
        """What native_forward.columns_from_codes needs to build device_columns(q) itself: the codes as
        (N, C, H, W), the kernel geometry (KH, KW, SH, SW, PH, PW), and whether the layer is depthwise."""
        raise NotImplementedError

    def device_weights(self, w: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def output_like(self, flat: torch.Tensor, x: torch.Tensor) -> torch.Tensor:
        """(N, O, L) back to the op's output layout."""
        raise NotImplementedError

    def block_sums(self, cols: torch.Tensor, w_dev: torch.Tensor, block: int) -> torch.Tensor:
        """Exact sums (J, N, O, L) of every block j of `block` products (device order; the last block
        padded with zero products), all in one einsum."""
        cols, w_dev = _pad_blocks(cols, 1, block), _pad_blocks(w_dev, 1, block)
        n, k, length = cols.shape
        return torch.einsum("njbl,ojb->jnol", cols.reshape(n, k // block, block, length),
                            w_dev.reshape(w_dev.shape[0], k // block, block))

    def _exact_partial_sums(self, cols, w_dev, block: int, acc_spec) -> tuple[np.ndarray, np.ndarray]:
        """_saturating_accumulate for unrounded blocks (acc_shift 0), without walking every block. The
        blocks go in groups of about BOUND_GROUP products; each group g has its exact sum S_g and its sum
        of |products| A_g (two batched matmuls). A block sum inside g lies within (S_g -+ A_g) / 2 (the
        sums of g's negative and positive products), and a running sum inside g within E_g + (S_g -+ A_g)
        / 2, E_g the exact sum of the groups before g. Outputs whose bounds stay inside the range in every
        group never saturate: their accumulator is the plain sum. Only the others are walked block by
        block. (One bound over the whole dot product left 9,533 of MNIST-1D conv3's 10,240 outputs to
        walk; groups of 16 products, none.)"""
        group = block * -(-BOUND_GROUP // block)  # whole blocks
        n, k, length = cols.shape
        # float32 where every sum is an exact integer in it (|sum| < 2^24), else float64 (16-bit operands)
        exact32 = k * float(cols.abs().max()) * float(w_dev.abs().max()) < 2 ** 24
        dtype = torch.float32 if exact32 else torch.float64
        # (J, N*L, G) @ (J, G, O): one batched matmul per operand pair
        grouped_cols = _pad_blocks(cols.to(dtype), 1, group).reshape(n, -1, group, length)
        grouped_cols = grouped_cols.permute(1, 0, 3, 2).reshape(-1, n * length, group)
        grouped_w = _pad_blocks(w_dev.to(dtype), 1, group).reshape(w_dev.shape[0], -1, group).permute(1, 2, 0)
        sums = torch.bmm(grouped_cols, grouped_w)  # (J, N*L, O), exact integers
        positive = (sums + torch.bmm(grouped_cols.abs(), grouped_w.abs())) / 2
        negative = sums - positive
        before = sums.cumsum(0) - sums
        as_output = lambda t: t.reshape(n, length, -1).transpose(1, 2)  # (N*L, O) -> (N, O, L)
        upper = as_output(torch.maximum(positive, before + positive).amax(0))
        lower = as_output(torch.minimum(negative, before + negative).amin(0))
        acc = as_output(sums.sum(0)).to(torch.int64).numpy()
        saturated = np.zeros(acc.shape, dtype=bool)
        risky = ((upper > acc_spec.max) | (lower < acc_spec.min)).nonzero(as_tuple=True)
        if len(risky[0]):
            n, o, l = risky
            products = _pad_blocks(cols[n, :, l] * w_dev[o], 1, block)  # (M, K') in device order
            block_sums = products.reshape(len(n), -1, block).sum(-1).T.long().numpy()  # (blocks, M)
            where = tuple(t.numpy() for t in risky)
            acc[where], saturated[where] = _saturating_accumulate(block_sums, 0, acc_spec)
        return acc, saturated

    def _fixed_accumulator(self, xq: torch.Tensor, p: FixedParams, acc_spec,
                           dot_bound: int) -> tuple[np.ndarray, np.ndarray]:
        """The device's accumulator before the bias, (N, O, L), and where a block sum or it saturated
        (dot_bound: self._dot_bound(p.weights)). In the convolution's memory order where it is the plain
        dot product, else in accumulator_strides' order (_native_accumulator's too)."""
        fan_in = p.weights.shape[1:].numel()
        block = acc_spec.block or fan_in
        if block >= fan_in:  # one block, the whole dot product: exact, so in any order; the op computes it
            dot = self._exact_dot(xq, p.weights, dot_bound=dot_bound)
            if p.acc_shift == 0 and dot_bound <= acc_spec.max:  # nothing can saturate
                acc = dot.reshape(dot.shape[0], dot.shape[1], -1).numpy()
                return acc, np.broadcast_to(False, acc.shape)
            return self._in_accumulator_order(*_saturating_accumulate(
                dot.reshape(1, dot.shape[0], dot.shape[1], -1).numpy(), p.acc_shift, acc_spec))
        cols = self.device_columns(xq)  # (N, K, L), exact small integers (depthwise: (N, C, K, L))
        w_dev = self.device_weights(p.weights).double()  # (O, K)
        if p.acc_shift == 0 and type(self).block_sums is QuantLayer.block_sums:
            return self._in_accumulator_order(*self._exact_partial_sums(cols, w_dev, block, acc_spec))
        # exact: |block sum| <= K * 2^30 (16-bit operands) < 2^53
        sums = self.block_sums(cols, w_dev, block).long().numpy()  # exact integers already
        return self._in_accumulator_order(*_saturating_accumulate(sums, p.acc_shift, acc_spec))

    # Block-wise accumulators lie over (N, L, O) memory, channels last as the convolutions' outputs
    # usually are (max pooling over it is 3-5x faster than over NCHW); depthwise layers keep (N, C, L),
    # the order their numpy sums always had (the gradient's float sums follow it: trained models stay
    # as they were).
    accumulator_channels_last = True

    def accumulator_strides(self, out_channels: int, length: int) -> tuple[int, int, int]:
        """The element strides (n, o, l) of a block-wise accumulator (N, O, L)."""
        if self.accumulator_channels_last:
            return length * out_channels, 1, out_channels
        return out_channels * length, length, 1

    def _in_accumulator_order(self, acc: np.ndarray, saturated: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        order = (0, 2, 1) if self.accumulator_channels_last else (0, 1, 2)
        return np.ascontiguousarray(acc.transpose(order)).transpose(order), saturated

    def _fixed_forward(self, x: QAct) -> QAct:
        weight, bias = self.weight, self.bias  # once: with batch norm, each is a fold
        p = self.fixed_params(x.qparams, weight, bias)
        acc_spec = self.profile.accumulator
        dot_bound = self._dot_bound(p.weights, p.largest_weight)
        post = self._fixed_post_native(x, p, acc_spec, dot_bound) if native_forward.enabled() else None
        if post is None:
            post = self._fixed_post_numpy(x, p, acc_spec, dot_bound)
        q, exact, masks, n_saturated, n_block_saturated, acc_range = post
        w_ste = self._weight_ste(p.weight_frac, weight)
        w_fake = w_ste + (p.weights * 2.0 ** -p.weight_frac - w_ste).detach()
        return self._output(x, w_fake, bias, p.weights, p.out_qparams, q, [exact], masks, n_saturated,
                            n_block_saturated, acc_range)

    def _fixed_post_numpy(self, x: QAct, p: FixedParams, acc_spec, dot_bound: int):
        """The fixed-point forward from the dot product on (the reference of _fixed_post_native): q, exact,
        the gradient masks (inside, high, low), how many outputs and block sums saturated, and the
        accumulator's range in real units."""
        acc, block_saturated = self._fixed_accumulator(x.q, p, acc_spec, dot_bound)
        biased = acc + p.bias.numpy()[None, :, None]
        acc = biased if self._accumulator_fits(p, acc_spec, dot_bound) else saturate(biased, acc_spec.bits)
        pre = round_shift(acc, -p.shift, self.profile.requant.rounding)
        out = np.clip(pre, p.act_min, p.act_max)
        q = self.output_like(torch.from_numpy(out), x.q)
        exact = q.float() * float(p.out_qparams.scale)
        # Below a ReLU's zero is no saturation: the ReLU's own zero (relu_zero), whose gradient is zero.
        # (It used to count as low saturation, so SaturatingSTE passed every "raise it" gradient of a
        # dead ReLU unit: a one-sided leak that drove the quantized phase off on MNIST-1D.)
        # The extremes say which masks can be non-empty; only those are built.
        pre_lo, pre_hi, acc_lo, acc_hi = int(pre.min()), int(pre.max()), int(acc.min()), int(acc.max())
        as_output = lambda mask: self.output_like(torch.from_numpy(mask), x.q)
        high = low = None
        if pre_hi > p.act_max or acc_hi == acc_spec.max:
            high = as_output((pre > p.act_max) | (acc == acc_spec.max))
        if not self.relu and (pre_lo < p.act_min or acc_lo == acc_spec.min):
            low = as_output((pre < p.act_min) | (acc == acc_spec.min))
        relu_zero = as_output(pre < 0) if self.relu and pre_lo < 0 else None
        masks = [m for m in (high, low, relu_zero) if m is not None]
        inside = ~functools.reduce(torch.logical_or, masks) if masks else None
        saturated = [m for m in (high, low) if m is not None]
        n_saturated = int(functools.reduce(torch.logical_or, saturated).sum()) if saturated else 0
        return (q, exact, (inside, high, low), n_saturated, int(block_saturated.sum()),
                _channel_range(biased, 2.0 ** -p.acc_frac))

    @staticmethod
    def _accumulator_fits(p: FixedParams, acc_spec, dot_bound: int) -> bool:
        """Whether an unshifted accumulator holds any dot product plus the bias: then the saturation after
        adding the bias is a no-op, and both post steps skip it (a pass fewer)."""
        largest_bias = p.largest_bias if p.largest_bias is not None else int(p.bias.abs().max())
        return p.acc_shift == 0 and dot_bound + largest_bias <= acc_spec.max

    def _fixed_post_native(self, x: QAct, p: FixedParams, acc_spec, dot_bound: int):
        """_fixed_post_numpy in one compiled pass (train/native_forward.py): from the float32 dot product
        where it is one exact block that cannot saturate the accumulator, else from the accumulator
        _fixed_accumulator sums block by block; None where the dot product may pass 2^24 or a layout
        is not dense."""
        fan_in = p.weights.shape[1:].numel()
        one_block = (acc_spec.block or fan_in) >= fan_in and p.acc_shift == 0 and dot_bound <= acc_spec.max
        if one_block:
            if dot_bound >= 2 ** 24:
                return None
            dot = self.op(x.q.float(), p.weights, None)  # exact: every partial sum is an integer below 2^24
            n_block_saturated, as_output = 0, lambda t: t
        else:
            native = self._native_accumulator(x.q, p, acc_spec, fan_in)
            if native is None:
                acc, block_saturated = self._fixed_accumulator(x.q, p, acc_spec, dot_bound)
                native = torch.from_numpy(acc), int(block_saturated.sum())
            dot, n_block_saturated = native  # (N, O, L) int64
            as_output = lambda t: self.output_like(t, x.q)
        layout = native_forward.runs_layout(dot)
        if layout is None:
            return None
        fits = self._accumulator_fits(p, acc_spec, dot_bound)
        r = native_forward.fixed_post(dot, layout, p.bias.contiguous(), fits, acc_spec.min, acc_spec.max, -p.shift,
                                      ROUNDING_CODES[self.profile.requant.rounding], self.relu, p.act_min,
                                      p.act_max, p.out_qparams.scale, 2.0 ** -p.acc_frac)
        high = as_output(r.high) if r.any_high else None
        low = as_output(r.low) if r.any_low and not self.relu else None
        built = high is not None or low is not None or (self.relu and r.any_negative)
        n_saturated = r.n_high if self.relu else r.n_high_or_low
        masks = (as_output(r.inside) if built else None, high, low)
        return (as_output(r.q), as_output(r.exact), masks, n_saturated, n_block_saturated,
                (r.acc_low, r.acc_high))

    def _native_accumulator(self, xq: torch.Tensor, p: FixedParams, acc_spec, fan_in: int):
        """_fixed_accumulator's block-wise sums compiled (native_forward.block_accumulate): the (N, O, L)
        int64 accumulator and how many outputs saturated, or None where its int32 bounds do not hold.
        The accumulator's memory order is the numpy path's (accumulator_strides; the gradient's float
        sums follow it, so the two paths train the same bits)."""
        largest = p.largest_weight if p.largest_weight is not None else int(p.weights.abs().max())
        block = acc_spec.block or fan_in
        if not native_forward.block_fits(block, fan_in, largest, self._input_code_bound(), p.acc_shift,
                                         acc_spec.bits):
            return None
        q, geometry, grouped = self.column_geometry(xq)
        saturating = native_forward.saturating16(block, p.acc_shift, acc_spec.min, acc_spec.max,
                                                 largest * self._input_code_bound())
        columns, length = native_forward.columns_from_codes(q, geometry, grouped, wide=not saturating)
        strides = self.accumulator_strides(p.weights.shape[0], length)
        return native_forward.block_accumulate(
            self.device_weights(p.weights), columns, q.shape[0], length, block, p.acc_shift,
            ROUNDING_CODES[acc_spec.block_rounding], acc_spec.min, acc_spec.max, strides, saturating)

    def _weight_ste(self, w_frac: int, weight: torch.Tensor) -> torch.Tensor:
        """The weights the straight-through gradient reaches. Power-of-two weights: where a weight
        saturated (|w| 2^f past the rounding range of the largest value), only the gradient that
        moves it back passes, so saturated weights do not grow without bound."""
        wfmt = self.profile.weights
        if not isinstance(wfmt, PowerOfTwo):
            return weight
        v = weight.detach() * 2.0 ** w_frac
        limit = 1.5 * wfmt.qmax
        return SaturatingSTE.apply(weight, v.abs() <= limit, v > limit, v < -limit)

    def _count_health(self, outputs: int, saturated: int, acc_saturated: int, weights: torch.Tensor) -> None:
        if not self.training:
            return
        h = self.health
        h["outputs"] = h.get("outputs", 0) + outputs
        h["saturated"] = h.get("saturated", 0) + saturated
        h["acc_saturated"] = h.get("acc_saturated", 0) + acc_saturated
        h["weights"] = weights  # train/health.py counts its zeros once per epoch, not per step

    def _input_code_bound(self) -> int:
        """The largest |input code| the profile allows: int8 minus a zero point, or a fixed-point code."""
        afmt = self.profile.activations
        return 1 << (afmt.total_bits - 1) if isinstance(afmt, FixedPoint) else 255

    def _exact_dot(self, xq: torch.Tensor, weights: torch.Tensor, bias: torch.Tensor | None = None,
                   dot_bound: int | None = None) -> torch.Tensor:
        """op(xq, weights, bias) exactly (int64). In float32, the bias inside the op, when no partial sum
        can pass 2^24 (then every one, in any order the convolution takes, is an exact integer): the
        bound is the fan-in times the largest input code the profile allows and the largest weight, plus
        the largest bias. Otherwise the dot product in float64 (exact below 2^53), the bias added in int64.
        dot_bound: self._dot_bound(weights), if the caller has it."""
        bias_bound = 0 if bias is None else int(np.abs(bias.numpy()).max())
        if dot_bound is None:
            dot_bound = self._dot_bound(weights)
        if dot_bound + bias_bound < 2 ** 24:
            return self.op(xq.float(), weights.float(), None if bias is None else bias.float()).long()
        dot = self.op(xq.double(), weights.double(), None).round().long()
        return dot if bias is None else dot + bias.reshape(self.channel_view)

    def _dot_bound(self, weights: torch.Tensor, largest: int | None = None) -> int:
        """The largest |sum of products| of one output: fan-in x largest input code x largest weight
        (int8 weights: at most 127 by construction, no need to look; largest: max |weights| if known)."""
        if largest is None:
            largest = WEIGHT_QMAX if not self.profile.is_fixed else int(np.abs(weights.numpy()).max())
        return weights.shape[1:].numel() * self._input_code_bound() * largest

    def _quantized_forward(self, x: QAct) -> QAct:
        weight, bias = self.weight, self.bias  # once: with batch norm, each is a fold
        if native_forward.enabled():
            out = self._native_forward(x, weight, bias)
            if out is not None:
                return out
        p = self.integer_params(x.qparams, weight, bias)
        dot = self._exact_dot(x.q - x.qparams.zero_point, p.weights, p.bias)  # the int32 accumulator
        channel_scales = p.weight_scales.astype(np.float64) * float(x.qparams.scale)
        q, exact, inside, high, low, n_saturated, acc_range = self._requantize_numpy(dot.numpy(), p, channel_scales)
        # Gradient of a float shadow: straight-through on weight rounding, zero where saturated.
        w_scales = torch.from_numpy(p.weight_scales).reshape((-1,) + (1,) * (weight.dim() - 1))
        w_fake = weight + (p.weights * w_scales - weight).detach()
        return self._output(x, w_fake, bias, p.weights, p.out_qparams, q, [exact], (inside, high, low),
                            n_saturated, 0, acc_range)

    def _native_forward(self, x: QAct, weight: torch.Tensor, bias: torch.Tensor) -> QAct | None:
        """_quantized_forward with the compiled integer steps (train/native_forward.py); None where they
        do not apply (an accumulator that may pass 2^24, or a layout that is not dense)."""
        out_qparams = self.observer.qparams()
        n = native_forward.int8_params(weight, bias, x.qparams.scale, out_qparams.scale)
        if self._dot_bound(n.weights) + n.bias_bound >= 2 ** 24:
            return None
        dot = self.op((x.q - x.qparams.zero_point).float(), n.weights, n.bias_float)  # exact: see _exact_dot
        layout = native_forward.runs_layout(dot)
        if layout is None:
            return None
        act_min, act_max = self._int8_clamp(out_qparams)
        r = native_forward.int8_post(dot, layout, n, self._native_mode(), out_qparams.zero_point, act_min, act_max,
                                     out_qparams.scale)
        masks, n_saturated = self._native_masks(r)
        return self._output(x, weight, bias, n.weights, out_qparams, r.q, [r.exact, n.weight_fake], masks,
                            n_saturated, 0, (r.acc_low, r.acc_high))

    def _native_mode(self) -> int:
        requant = self.profile.requant
        return ROUNDING_CODES[requant.rounding] if requant.kind == Requant.SINGLE else native_forward.DOUBLE_ROUNDING

    def _native_masks(self, r: "native_forward.PostResult"):
        """(inside, high, low) as _requantize_numpy builds them (None where empty or, below a ReLU's
        zero, where no gradient passes), and how many outputs saturated."""
        high = r.high if r.n_high else None
        low = r.low if r.n_low and not self.relu else None
        inside = r.inside if r.n_low or r.n_high else None
        n_saturated = (r.n_high if high is not None else 0) + (r.n_low if low is not None else 0)
        return (inside, high, low), n_saturated

    def _output(self, x: QAct, w_fake, bias, weights, out_qparams: QParams, q, shadow: list, masks,
                n_saturated: int, n_block_saturated: int, acc_range: tuple[float, float]) -> QAct:
        """A quantized layer's output (int8 and fixed point): exact forward values, the shadow's gradient
        through w_fake (straight-through on weight rounding) masked where saturated; observer and health
        counters updated. shadow: as ExactWithShadowGradient takes it; acc_range: the unsaturated
        accumulator's range in real units (the shadow's pre-activation, equal up to bias rounding)."""
        if self.training:
            self.observer.observe_range(*(self._act_of(v) for v in acc_range))
        self._count_health(q.numel(), n_saturated, n_block_saturated, weights)
        value = ExactWithShadowGradient.apply(shadow, x.value, w_fake, bias, *masks, self)
        return QAct(value, q, out_qparams)

    def _requantize_numpy(self, acc: np.ndarray, p: IntegerParams, channel_scales: np.ndarray):
        """The accumulator's requantization, clamp and gradient masks (the reference of
        native_forward.int8_post and _native_masks): q, exact, inside, high, low, how many saturated,
        and the accumulator's range in real units (channel_scales: each channel's unit)."""
        view = self.channel_view
        if self.profile.requant.kind == Requant.SINGLE:
            requantized = requantize_single(acc, p.multiplier.reshape(view), p.shift.reshape(view),
                                            self.profile.requant.rounding)
        else:
            requantized = requantize(acc, p.multiplier.reshape(view), p.shift.reshape(view))
        requantized = torch.from_numpy(requantized) + p.out_qparams.zero_point
        q = requantized.clamp(p.act_min, p.act_max)
        exact = (q.float() - p.out_qparams.zero_point) * float(p.out_qparams.scale)
        # one pass finds whether anything left the range; the masks only where something did
        lowest, highest = (int(v) for v in torch.aminmax(requantized))
        high = requantized > p.act_max if highest > p.act_max else None
        # below a ReLU's zero: no saturation, a zero gradient (inside is False there)
        low = requantized < p.act_min if lowest < p.act_min and not self.relu else None
        inside = q == requantized if lowest < p.act_min or highest > p.act_max else None
        n_saturated = sum(int(m.sum()) for m in (high, low) if m is not None)
        return q, exact, inside, high, low, n_saturated, _channel_range(acc, channel_scales)

    def _act_of(self, v: float) -> float:
        """float_act of one value."""
        if self.act == "relu6":
            return min(max(v, 0.0), 6.0)
        if self.act == "hardtanh":
            return min(max(v, -1.0), 1.0)
        return max(v, 0.0) if self.relu else v

    def op_backward(self, grad, x, weight, needs):
        """(d/dx, d/dweight, d/dbias) of op(x, weight, bias) for the output gradient `grad`."""
        raise NotImplementedError


class BatchNormFold:
    """Batch norm folded into the preceding convolution (`bn=True`): w' = w * g / sqrt(var + eps),
    b' = (b - mean) * g / sqrt(var + eps) + beta. While training, the batch's statistics (of the
    un-gained input, so power-of-two gains stay a reparametrization) and running averages updated as
    nn.BatchNorm2d does; outside a training forward, the running statistics. The folded w' and b' are
    what `weight` and `bias` give: what is quantized, trained through and exported."""

    # self.bn (nn.BatchNorm2d or None) is set by the subclass' __init__ (a class attribute would hide the module)
    _batch_stats: "tuple[torch.Tensor, torch.Tensor] | None" = None
    # WAGEUBN's BN quantization (train/wageubn.py): (mean, std, gamma, beta) -> their quantized values,
    # applied before folding; None: float batch norm
    bn_quantizer = None

    def _fold(self) -> tuple[torch.Tensor, torch.Tensor]:
        bn = self.bn
        mean, var = self._batch_stats if self._batch_stats is not None else (bn.running_mean, bn.running_var)
        std, gamma, beta = torch.sqrt(var + bn.eps), bn.weight, bn.bias
        if self.bn_quantizer is not None:
            mean, std, gamma, beta = self.bn_quantizer(mean, std, gamma, beta)
        scale = gamma / std
        return scale, (self.inner.bias - mean) * scale + beta

    @property
    def weight(self) -> torch.Tensor:
        w = QuantLayer.weight.fget(self)
        return w if self.bn is None else w * self._fold()[0].reshape(-1, 1, 1, 1)

    @property
    def bias(self) -> torch.Tensor:
        if self.bn is None:
            return QuantLayer.bias.fget(self)
        b = self._fold()[1]
        return b * (2.0 ** self.act_gain_log2) if self.act_gain_log2 else b

    def forward(self, x: QAct) -> QAct:
        if self.bn is None or not self.training or self.observer.calibrating:
            return super().forward(x)
        bn = self.bn
        y = self.op(x.value * 2.0 ** -(self.act_gain_log2 - self.gain_log2), self.inner.weight, self.inner.bias)
        mean, var = y.mean(dim=(0, 2, 3)), y.var(dim=(0, 2, 3), unbiased=False)
        with torch.no_grad():
            n = y.numel() // y.shape[1]
            bn.running_mean.lerp_(mean, bn.momentum)
            bn.running_var.lerp_(var * n / max(n - 1, 1), bn.momentum)
            bn.num_batches_tracked += 1
        self._batch_stats = (mean, var)
        try:
            return super().forward(x)
        finally:
            self._batch_stats = None


class QuantConv2d(BatchNormFold, QuantLayer):
    channel_view = (1, -1, 1, 1)  # NCHW

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int | tuple[int, int],
                 stride: int | tuple[int, int] = 1, padding: int | tuple[int, int] = 0, relu: bool = False,
                 act: str | None = None, bn: bool = False):
        super().__init__(relu)
        self.inner = nn.Conv2d(in_channels, out_channels, kernel_size, stride, padding)
        self.set_act(act)
        self.bn = nn.BatchNorm2d(out_channels) if bn else None

    def op(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.inner.stride, self.inner.padding)

    def op_backward(self, grad, x, weight, needs):
        inner = self.inner
        return torch.ops.aten.convolution_backward(
            grad, x, weight, [weight.shape[0]], list(inner.stride), list(inner.padding), [1, 1], False, [0, 0],
            inner.groups, list(needs))

    def device_columns(self, q):
        n, c = q.shape[:2]
        kh, kw = self.inner.kernel_size
        cols = F.unfold(q.double(), (kh, kw), padding=self.inner.padding, stride=self.inner.stride)  # (N, C*KH*KW, L)
        return cols.reshape(n, c, kh * kw, -1).transpose(1, 2).reshape(n, kh * kw * c, -1)  # ky, kx, ic order

    def column_geometry(self, q):
        return q, (*self.inner.kernel_size, *self.inner.stride, *self.inner.padding), False

    def device_weights(self, w):
        return w.permute(0, 2, 3, 1).reshape(w.shape[0], -1)  # OIHW -> O, (ky, kx, ic)

    def output_like(self, flat, x):
        (kh, kw), (sh, sw), (ph, pw) = self.inner.kernel_size, self.inner.stride, self.inner.padding
        oh, ow = (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1
        return flat.reshape(flat.shape[0], flat.shape[1], oh, ow)


class QuantConv1d(QuantConv2d):
    """A 1-D convolution over (N, C, 1, L): a conv2d of height 1, so the device runs its conv2d kernel.

    Sequences travel as NHWC (1, L, C) on the device, the layout `cqtf.data` gives (N, L) inputs.
    """

    def __init__(self, in_channels: int, out_channels: int, kernel_size: int, stride: int = 1,
                 padding: int = 0, relu: bool = False, act: str | None = None, bn: bool = False):
        super().__init__(in_channels, out_channels, (1, kernel_size), (1, stride), (0, padding), relu, act, bn)


class QuantLinear(QuantLayer):
    channel_view = (1, -1)

    def __init__(self, in_features: int, out_features: int, relu: bool = False, act: str | None = None):
        super().__init__(relu)
        self.inner = nn.Linear(in_features, out_features)
        self.set_act(act)
        self.flatten_from: "QuantFlatten | None" = None  # set by QuantSequential: the device's feature order

    def op(self, x, weight, bias):
        return F.linear(x, weight, bias)

    def op_backward(self, grad, x, weight, needs):
        return (grad @ weight if needs[0] else None, grad.T @ x if needs[1] else None,
                grad.sum(0) if needs[2] else None)

    def _device_order(self, features: int) -> torch.Tensor:
        shape = self.flatten_from.last_shape if self.flatten_from is not None else None
        if shape is None:
            return torch.arange(features)
        c, h, w = shape
        return torch.arange(c * h * w).reshape(c, h, w).permute(1, 2, 0).reshape(-1)  # NCHW index of NHWC k

    def device_columns(self, q):
        return q[:, self._device_order(q.shape[1])].double()[:, :, None]  # (N, K, 1)

    def column_geometry(self, q):
        return q[:, self._device_order(q.shape[1])][:, :, None, None], (1, 1, 1, 1, 0, 0), False

    def device_weights(self, w):
        return w[:, self._device_order(w.shape[1])]

    def output_like(self, flat, x):
        return flat[:, :, 0]


class _Pool2d(nn.Module):
    """Window geometry shared by the pooling layers (stride defaults to the kernel, as in PyTorch)."""

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0):
        super().__init__()
        self.kernel_size, self.padding = _pair(kernel_size), _pair(padding)
        self.stride = _pair(stride) if stride is not None else self.kernel_size
        self.quantized = False


class QuantMaxPool2d(_Pool2d):
    """Max pooling commutes with a positive-scale affine map, so int and float paths agree trivially."""

    def forward(self, x: QAct) -> QAct:
        pool = lambda t: F.max_pool2d(t, self.kernel_size, self.stride, self.padding)  # noqa: E731
        y = pool(x.value)
        q = None if x.q is None else pool(x.q.float()).long()  # int8 and Q values up to 16 bits: exact in float32
        return QAct(y, q, x.qparams)


class QuantMaxPool1d(QuantMaxPool2d):
    """Max pooling along a sequence held as (N, C, 1, L)."""

    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0):
        super().__init__((1, kernel_size), (1, stride or kernel_size), (0, padding))


class QuantFlatten(nn.Module):
    """Flattens (N, C, H, W) in PyTorch's order; the exporter reorders the next layer's weights to NHWC."""

    quantized = False
    last_shape: tuple[int, int, int] | None = None  # (C, H, W) of the last input

    def forward(self, x: QAct) -> QAct:
        self.last_shape = tuple(x.value.shape[1:])
        return QAct(x.value.flatten(1), None if x.q is None else x.q.flatten(1), x.qparams)


class QuantDepthwiseConv2d(BatchNormFold, QuantLayer):
    """Depthwise convolution (groups = channels, channel multiplier 1); the device's depthwise_conv2d.

    Per channel, the device sums the kernel's products in the order ky, kx (fixed point: blocks of them)."""

    channel_view = (1, -1, 1, 1)  # NCHW

    def __init__(self, channels: int, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] = 1,
                 padding: int | tuple[int, int] = 0, relu: bool = False, act: str | None = None,
                 bn: bool = False):
        super().__init__(relu)
        self.inner = nn.Conv2d(channels, channels, kernel_size, stride, padding, groups=channels)
        self.set_act(act)
        self.bn = nn.BatchNorm2d(channels) if bn else None

    def op(self, x, weight, bias):
        return F.conv2d(x, weight, bias, self.inner.stride, self.inner.padding, groups=self.inner.groups)

    op_backward = QuantConv2d.op_backward  # groups included
    accumulator_channels_last = False

    def device_columns(self, q):
        n, c = q.shape[:2]
        kh, kw = self.inner.kernel_size
        cols = F.unfold(q.double(), (kh, kw), padding=self.inner.padding, stride=self.inner.stride)  # (N, C*KH*KW, L)
        return cols.reshape(n, c, kh * kw, -1)  # (N, C, K, L), K in order ky, kx

    def column_geometry(self, q):
        return q, (*self.inner.kernel_size, *self.inner.stride, *self.inner.padding), True

    def device_weights(self, w):
        return w.reshape(w.shape[0], -1)  # (C, 1, KH, KW) -> (C, ky*kx)

    def block_sums(self, cols, w_dev, block):
        cols, w_dev = _pad_blocks(cols, 2, block), _pad_blocks(w_dev, 1, block)
        n, c, k, length = cols.shape
        return torch.einsum("ncjbl,cjb->jncl", cols.reshape(n, c, k // block, block, length),
                            w_dev.reshape(c, k // block, block))

    def output_like(self, flat, x):
        (kh, kw), (sh, sw), (ph, pw) = self.inner.kernel_size, self.inner.stride, self.inner.padding
        oh, ow = (x.shape[2] + 2 * ph - kh) // sh + 1, (x.shape[3] + 2 * pw - kw) // sw + 1
        return flat.reshape(flat.shape[0], flat.shape[1], oh, ow)


class QuantDepthwiseConv1d(QuantDepthwiseConv2d):
    """A depthwise 1-D convolution over (N, C, 1, L): a height-1 depthwise_conv2d on the device."""

    def __init__(self, channels: int, kernel_size: int, stride: int = 1, padding: int = 0, relu: bool = False,
                 act: str | None = None, bn: bool = False):
        super().__init__(channels, (1, kernel_size), (1, stride), (0, padding), relu, act, bn)


class QuantAvgPool2d(_Pool2d):
    """Average pooling; padding positions are not counted. Quantized: the device's integer mean of the
    window (cqtf.profile.average_rounding), output quantization = input quantization (as TFLite)."""

    def __init__(self, kernel_size: int | tuple[int, int], stride: int | tuple[int, int] | None = None,
                 padding: int | tuple[int, int] = 0):
        super().__init__(kernel_size, stride, padding)
        self.profile: Profile = PRESETS["int8"]

    def window(self, x: torch.Tensor) -> tuple[tuple[int, int], tuple[int, int], tuple[int, int]]:
        return self.kernel_size, self.stride, self.padding

    def forward(self, x: QAct) -> QAct:
        k, st, pad = self.window(x.value)
        y = F.avg_pool2d(x.value, k, st, pad, count_include_pad=False)
        if x.q is None:
            return QAct(y, None, x.qparams)
        # Sums of the in-range values (padding adds zeros) and the count of in-range positions, exact in float64.
        total = F.avg_pool2d(x.q.double(), k, st, pad, count_include_pad=True, divisor_override=1)
        count = F.avg_pool2d(torch.ones_like(x.q[:1, :1], dtype=torch.float64), k, st, pad,
                             count_include_pad=True, divisor_override=1)
        mean = round_div(total.round().long().numpy(), count.round().long().numpy(), average_rounding(self.profile))
        q = torch.from_numpy(np.clip(mean, -128, 127))
        exact = (q.float() - x.qparams.zero_point) * float(x.qparams.scale)
        return QAct(y + (exact - y).detach(), q, x.qparams)


class QuantAvgPool1d(QuantAvgPool2d):
    """Average pooling along a sequence held as (N, C, 1, L)."""

    def __init__(self, kernel_size: int, stride: int | None = None, padding: int = 0):
        super().__init__((1, kernel_size), (1, stride or kernel_size), (0, padding))


class QuantGlobalAvgPool(QuantAvgPool2d):
    """Mean over all positions, (N, C, H, W) -> (N, C, 1, 1): on the device an avgpool2d whose window
    is the whole input (TFLite AVERAGE_POOL_2D with filter H x W)."""

    def __init__(self):
        super().__init__(1)

    def window(self, x):
        return tuple(x.shape[2:]), tuple(x.shape[2:]), (0, 0)


class QuantSave(nn.Module):
    """Marks the activation a later QuantAdd with the same tag adds back (a residual connection)."""

    quantized = False

    def __init__(self, tag: str):
        super().__init__()
        self.tag = tag
        self.act_gain_log2 = 0  # the power-of-two gain of the saved activation (QuantSequential.set_gains)

    def forward(self, x: QAct) -> QAct:
        return x


class QuantAdd(nn.Module):
    """Elementwise sum of the running activation and the one saved under `tag`, optionally ReLU.

    int8: TFLM's ADD (both inputs to a common scale with 2^20 headroom, each rescaled by a Q31
    multiplier, the sum rescaled to the output's observed range). Fixed point: both inputs shifted to
    the finer format, the sum shifted to the output format (cqtf.fixedpoint.add_fixed). Power-of-two
    gains (fixed-point format calibration) are exact: the skip input's scale absorbs 2^(gain difference)."""

    def __init__(self, tag: str, relu: bool = False):
        super().__init__()
        self.tag, self.relu = tag, relu
        self.quantized = False
        self.profile: Profile = PRESETS["int8"]
        self.observer = RangeObserver()
        self.saturation_aware = True
        self.out_frac: int | None = None  # fixed point: frozen by the trainer's format calibration
        self.out_frac_drop = 0
        self.act_gain_log2 = 0  # gain of the running (main-path) activation and of the output
        self.skip_gain_log2 = 0  # gain of the saved activation

    def _skip_factor(self) -> float:
        return 2.0 ** (self.act_gain_log2 - self.skip_gain_log2)

    def observed_out_frac(self) -> int:
        return _observed_frac(self.observer, self.profile.activations.qmax) - self.out_frac_drop

    def add_params(self, main_qp: QParams, skip_qp: QParams) -> dict:
        """The device's parameters of this add: the single source for forward and export (IntLayer fields)."""
        if self.profile.is_fixed:
            afmt = self.profile.activations
            e_main = frac_bits_of(main_qp)
            e_skip = frac_bits_of(skip_qp) - (self.act_gain_log2 - self.skip_gain_log2)
            finest = max(e_main, e_skip)
            out_frac = afmt.frac_bits if afmt.frac_bits is not None else (
                self.out_frac if self.out_frac is not None else self.observed_out_frac())
            shift = np.array([finest - e_main, finest - e_skip, out_frac - finest], dtype=np.int32)
            if shift[0] > 23 or shift[1] > 23 or abs(int(shift[2])) > 31:
                raise ValueError(f"add of formats Q.{e_main} and Q.{e_skip} into Q.{out_frac} needs shifts "
                                 f"{shift.tolist()}, beyond what the device's int32 sum holds")
            out_qp = QParams(np.float32(2.0 ** -out_frac), 0)
            return dict(input_offset=0, input_b_offset=0, output_offset=0, multiplier=None, shift=shift,
                        act_min=0 if self.relu else -afmt.qmax, act_max=afmt.qmax, out_qparams=out_qp,
                        scales={"input": float(main_qp.scale), "input_b": float(2.0 ** -e_skip),
                                "output": float(out_qp.scale)})
        out_qp = self.observer.qparams()
        skip_scale = np.float32(float(skip_qp.scale) * self._skip_factor())
        multiplier, shift = add_multipliers(main_qp.scale, skip_scale, out_qp.scale)
        return dict(input_offset=-main_qp.zero_point, input_b_offset=-skip_qp.zero_point,
                    output_offset=out_qp.zero_point, multiplier=np.array(multiplier, np.int32),
                    shift=np.array(shift, np.int32), act_min=max(-128, out_qp.zero_point) if self.relu else -128,
                    act_max=127, out_qparams=out_qp,
                    scales={"input": float(main_qp.scale), "input_b": float(skip_scale), "output": float(out_qp.scale)})

    def _integer_sum(self, main: QAct, skip: QAct, p: dict, lo: int, hi: int) -> np.ndarray:
        a, b = main.q.numpy(), skip.q.numpy()
        if self.profile.is_fixed:
            return add_fixed(a, b, p["shift"], self.profile.requant.rounding, lo, hi)
        return add_int8(a, b, (p["input_offset"], p["input_b_offset"]), p["multiplier"], p["shift"],
                        p["output_offset"], lo, hi, add_single_rounding(self.profile))

    def forward(self, main: QAct, skip: QAct) -> QAct:
        y = main.value + skip.value * self._skip_factor()
        y = F.relu(y) if self.relu else y
        if self.training or self.observer.calibrating:
            self.observer.observe(y)
        if not self.quantized:
            return QAct(y, None, None)
        p = self.add_params(main.qparams, skip.qparams)
        wide = self._integer_sum(main, skip, p, -(2**40), 2**40)  # unclamped, to see what saturates
        q = np.clip(wide, p["act_min"], p["act_max"])
        out_qp = p["out_qparams"]
        exact = (torch.from_numpy(q).float() - out_qp.zero_point) * float(out_qp.scale)
        high = torch.from_numpy(wide > p["act_max"])
        low = torch.from_numpy((wide < p["act_min"]) & (not self.relu))
        relu_zero = torch.from_numpy((wide < p["act_min"]) & self.relu)
        inside = ~(high | low | relu_zero)
        shadow = SaturatingSTE.apply(y, inside, high, low) if self.saturation_aware else y * inside.float()
        return QAct(shadow + (exact - shadow).detach(), torch.from_numpy(q), out_qp)
