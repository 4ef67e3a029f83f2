"""The output step of a conv/linear layer's training forward in C (step_outputs.c): one pass for what
numpy does in about fifteen (requantize, clamp, dequantize, saturation flags, the observer's channel
extremes), with the firmware's own requantizers. Same values as the numpy path (cqtf.fixedpoint), which
stays as the fallback when no C compiler is found and as the oracle of tests/test_native_step.py.

CQTF_NATIVE_STEP=0 in the environment turns it off (the numpy path everywhere).
"""
from __future__ import annotations

import ctypes
import logging
import os
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cqtf.errors import ToolchainError
from cqtf.native import FIRMWARE_SRC, build_library

log = logging.getLogger(__name__)

SOURCE = Path(__file__).with_name("step_outputs.c")

_lib = None
_tried = False
_P = ctypes.c_void_p
_I32 = ctypes.c_int32


def _cache_dir() -> Path:
    return Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache") / "cqtf" / "native"


def library():
    """The compiled step (built once per source version, cached), or None: turned off, or no compiler."""
    global _lib, _tried
    if os.environ.get("CQTF_NATIVE_STEP", "1") == "0":
        return None
    if not _tried:
        _tried = True
        try:
            lib = ctypes.CDLL(str(build_library([SOURCE], [FIRMWARE_SRC / "kernels"], _cache_dir())))
        except (ToolchainError, OSError) as e:
            log.info("training forward: numpy output step (%s)", str(e).splitlines()[0])
            return None
        lib.cqtf_step_outputs_s8.restype = None
        lib.cqtf_step_outputs_s8.argtypes = [_P, _I32, _I32, _I32, _P, _P, _I32, ctypes.c_uint8, _I32, _I32, _I32,
                                             ctypes.c_float, _P, _P, _P, _P, _P, _P, _P, _P]
        lib.cqtf_step_outputs_fx.restype = None
        lib.cqtf_step_outputs_fx.argtypes = [_P, _I32, _I32, _I32, _P, ctypes.c_uint32, _I32, ctypes.c_uint8, _I32,
                                             _I32, ctypes.c_float, _I32, _P, _P, _P, _P, _P, _P, _P, _P, _P]
        _lib = lib
    return _lib


@dataclass
class StepOutputs:
    """One layer's outputs, in the accumulator's (N, C, ...) layout."""
    q: torch.Tensor  # int64, the layer's integers (clamped)
    exact: torch.Tensor  # float32, what the float shadow carries: (q - zero point) * scale
    inside: torch.Tensor  # bool masks: the gradient passes
    high: torch.Tensor  # saturated high
    low: torch.Tensor  # saturated low
    negative: torch.Tensor | None  # below a ReLU's zero (fixed point only)
    pre_min: int  # extremes of the requantized values before the clamp (offset included)
    pre_max: int
    acc_min: int  # int8: of the accumulator; fixed point: of the saturated accumulator
    acc_max: int
    observed: tuple[float, float]  # the observer's range: min and max over channels of extreme * scale


def _run(fn, acc: np.ndarray, params: list, channel_scale, masks: int) -> StepOutputs:
    shape = acc.shape
    q, exact = np.empty(shape, np.int64), np.empty(shape, np.float32)
    flags = [np.empty(shape, np.bool_) for _ in range(masks)]
    stats, observed = np.empty(4, np.int64), np.empty(2, np.float64)
    scales = np.ascontiguousarray(np.broadcast_to(np.asarray(channel_scale, np.float64), (shape[1],)))
    inner = int(np.prod(shape[2:], dtype=np.int64))
    fn(acc.ctypes.data, shape[0], shape[1], inner, *params, scales.ctypes.data, q.ctypes.data,
       exact.ctypes.data, *(f.ctypes.data for f in flags), stats.ctypes.data, observed.ctypes.data)
    masks = [torch.from_numpy(f) for f in flags] + [None] * (4 - masks)
    return StepOutputs(torch.from_numpy(q), torch.from_numpy(exact), *masks, *(int(v) for v in stats),
                       (float(observed[0]), float(observed[1])))


def outputs_s8(acc: np.ndarray, multiplier: np.ndarray, shift: np.ndarray, single: bool, rounding: int,
               zero_point: int, act_min: int, act_max: int, scale: np.float32, channel_scale) -> StepOutputs:
    """int8: acc (N, C, ...) float32, exact integer accumulators (bias included); multiplier, shift (C,) int32;
    rounding: the single rounding's cqtf.profile.ROUNDING_CODES value; channel_scale: the observer's
    real units of one accumulator step per channel."""
    acc = np.ascontiguousarray(acc, dtype=np.float32)
    m = np.ascontiguousarray(multiplier, dtype=np.int32)
    s = np.ascontiguousarray(shift, dtype=np.int32)
    return _run(library().cqtf_step_outputs_s8, acc,
                [m.ctypes.data, s.ctypes.data, int(single), rounding, zero_point, act_min, act_max, float(scale)],
                channel_scale, 3)


def outputs_fx(acc: np.ndarray, bias: np.ndarray, acc_bits: int, shift: int, rounding: int, act_min: int,
               act_max: int, scale: np.float32, relu: bool, channel_scale) -> StepOutputs:
    """Fixed point: acc (N, C, ...) int64 accumulators before the bias; bias (C,) int64; pre =
    round_shift(saturate(acc + bias, acc_bits), shift, rounding)."""
    acc = np.ascontiguousarray(acc, dtype=np.int64)
    b = np.ascontiguousarray(bias, dtype=np.int64)
    return _run(library().cqtf_step_outputs_fx, acc,
                [b.ctypes.data, acc_bits, shift, rounding, act_min, act_max, float(scale), int(relu)],
                channel_scale, 4)
