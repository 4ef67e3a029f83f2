"""The int8 training forward's integer steps, compiled (csrc/int8_forward.c): a layer's integers
from its float parameters, and everything after the accumulator in one pass.

A training step of a small network is dozens of tiny array operations, each costing about its
call overhead in numpy; one C call each does the same IEEE and integer operations in the same
order. The numpy steps of QuantLayer stay the reference and the fallback: these run only where gcc
is available (the post step only where the accumulator is float32, exact below 2^24, and dense);
tests/test_train_native.py checks both agree bit for bit. CQTF_NATIVE_TRAINING=0 trains with the
numpy steps only.
"""
from __future__ import annotations

import ctypes
import os
import warnings
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch

from cqtf.errors import ToolchainError
from cqtf.native import build_library

SOURCE = Path(__file__).resolve().parent / "csrc" / "int8_forward.c"


class _Params(ctypes.Structure):
    _fields_ = [("outer", ctypes.c_int64), ("channels", ctypes.c_int64), ("inner", ctypes.c_int64),
                ("multiplier", ctypes.c_void_p), ("shift", ctypes.c_void_p), ("mode", ctypes.c_int32),
                ("zero_point", ctypes.c_int32), ("act_min", ctypes.c_int32), ("act_max", ctypes.c_int32),
                ("out_scale", ctypes.c_float)]


class _Shape(ctypes.Structure):
    _fields_ = [("out_channels", ctypes.c_int64), ("fan_in", ctypes.c_int64), ("in_scale", ctypes.c_float),
                ("out_scale", ctypes.c_float)]


class Int8Params(NamedTuple):
    weights: torch.Tensor  # float32 integers, the weight's shape
    weight_delta: torch.Tensor  # weights * scale - weight (float32): the shadow's straight-through offset
    weight_scales: np.ndarray  # (O,) float32
    channel_scales: np.ndarray  # (O,) float64: weight scale * input scale, the accumulator's real unit
    bias: torch.Tensor  # (O,) int64, clipped to int32
    bias_float: torch.Tensor  # the same as float32
    multiplier: np.ndarray  # (O,) int32
    shift: np.ndarray  # (O,) int32


class PostResult(NamedTuple):
    q: torch.Tensor  # int64, clamped, zero point included
    exact: torch.Tensor  # float32 (q - zero point) * scale
    inside: torch.Tensor  # bool: the clamp left the value as it was
    high: torch.Tensor  # bool: above act_max before the clamp
    low: torch.Tensor  # bool: below act_min before the clamp
    acc_low: float  # min / max over channels of the accumulator's extremes times channel_scales
    acc_high: float
    lowest: int  # extremes of the requantized values before the clamp
    highest: int
    n_high: int
    n_low: int


def _cache_dir() -> Path:
    base = os.environ.get("XDG_CACHE_HOME") or str(Path.home() / ".cache")
    return Path(base) / "cqtf" / "native-train"


_library = None  # the loaded library, False when it cannot be built


def _load():
    global _library
    if _library is None:
        try:
            lib = ctypes.CDLL(str(build_library([SOURCE], [], _cache_dir())))
        except (ToolchainError, OSError) as exc:
            warnings.warn(f"the compiled int8 training steps are unavailable, training with the numpy steps "
                          f"(same results, slower): {exc}")
            _library = False
            return _library
        lib.cqtf_int8_post.restype = lib.cqtf_int8_params.restype = None
        lib.cqtf_int8_post.argtypes = [ctypes.POINTER(_Params)] + [ctypes.c_void_p] * 10
        lib.cqtf_int8_params.argtypes = [ctypes.POINTER(_Shape)] + [ctypes.c_void_p] * 10
        _library = lib
    return _library


def enabled() -> bool:
    """Whether the compiled steps run (built on first use; False without a C compiler)."""
    return os.environ.get("CQTF_NATIVE_TRAINING", "1") != "0" and bool(_load())


def int8_params(weight: torch.Tensor, bias: torch.Tensor, in_scale: np.float32, out_scale: np.float32) -> Int8Params:
    """QuantLayer.integer_params' integers (and the shadow's weight offset) from float32 weight (O, ...)
    and bias (O,)."""
    w = weight.detach().contiguous()
    out_channels = w.shape[0]
    b = np.ascontiguousarray(bias.detach().numpy(), dtype=np.float64)
    weights, delta = torch.empty_like(w), torch.empty_like(w)
    weight_scales = np.empty(out_channels, dtype=np.float32)
    channel_scales = np.empty(out_channels, dtype=np.float64)
    bias_int = torch.empty(out_channels, dtype=torch.int64)
    bias_float = torch.empty(out_channels, dtype=torch.float32)
    mult_shift = np.empty((2, out_channels), dtype=np.int32)
    shape = _Shape(out_channels, w.numel() // max(out_channels, 1), in_scale, out_scale)
    _load().cqtf_int8_params(ctypes.byref(shape), w.data_ptr(), b.ctypes.data, weights.data_ptr(), delta.data_ptr(),
                              weight_scales.ctypes.data, channel_scales.ctypes.data, bias_int.data_ptr(),
                              bias_float.data_ptr(), mult_shift[0].ctypes.data, mult_shift[1].ctypes.data)
    return Int8Params(weights, delta, weight_scales, channel_scales, bias_int, bias_float, mult_shift[0],
                      mult_shift[1])


def runs_layout(t: torch.Tensor) -> tuple[int, int, int] | None:
    """(outer, channels, inner) when t (channels on dim 1) is dense and every channel's elements lie
    in runs of `inner` consecutive storage elements; None otherwise."""
    dims = sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz > 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return None
        expected *= size
    channels = t.shape[1]
    inner = t.stride(1) if channels > 1 else 1
    return t.numel() // (channels * inner), channels, inner


DOUBLE_ROUNDING = -1  # the C mode of TFLM's double rounding; otherwise profile.ROUNDING_CODES
CHANNEL_FIELDS = 6  # int64 fields of the C channel_t: multiplier, left, right, half, acc_min, acc_max


def int8_post(acc: torch.Tensor, layout: tuple[int, int, int], multiplier: np.ndarray, shift: np.ndarray,
              mode: int, zero_point: int, act_min: int, act_max: int, out_scale: np.float32,
              channel_scales: np.ndarray) -> PostResult:
    """Requantize (mode: DOUBLE_ROUNDING or a single rounding's code), clamp, masks and extremes of a
    float32 accumulator of exact integers below 2^24, with the layout runs_layout(acc) gave;
    channel_scales (float64 per channel) turn the accumulator's extremes into real units."""
    outer, channels, inner = layout
    mult = np.ascontiguousarray(multiplier, dtype=np.int32)
    sh = np.ascontiguousarray(shift, dtype=np.int32)
    scales = np.ascontiguousarray(channel_scales, dtype=np.float64)
    params = _Params(outer, channels, inner, mult.ctypes.data, sh.ctypes.data, mode, zero_point, act_min, act_max,
                     out_scale)
    shape, strides = acc.shape, acc.stride()
    q = torch.empty_strided(shape, strides, dtype=torch.int64)
    exact = torch.empty_strided(shape, strides, dtype=torch.float32)
    masks = [torch.empty_strided(shape, strides, dtype=torch.bool) for _ in range(3)]
    scratch = np.empty((channels, CHANNEL_FIELDS), dtype=np.int64)
    stats = np.empty(4, dtype=np.int64)
    acc_range = np.empty(2, dtype=np.float64)
    _load().cqtf_int8_post(ctypes.byref(params), acc.data_ptr(), q.data_ptr(), exact.data_ptr(),
                            *(m.data_ptr() for m in masks), scratch.ctypes.data, scales.ctypes.data,
                            stats.ctypes.data, acc_range.ctypes.data)
    lowest, highest, n_high, n_low = stats.tolist()
    return PostResult(q, exact, *masks, *acc_range.tolist(), lowest, highest, n_high, n_low)
