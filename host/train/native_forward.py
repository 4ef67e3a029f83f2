"""The training forward's integer steps, compiled (csrc/forward_steps.c): an int8 layer's integers
from its float parameters, everything after the dot product in one pass (int8 and the fixed-point
profiles), and the block-wise saturating accumulators of fixed8-acc16 and fixed8-blk32 (their input
columns built from the codes, the block sums, rounding and saturation in SIMD loops).

A training step of a small network is dozens of tiny array operations, each costing about its
call overhead in numpy; one C call each does the same IEEE and integer operations in the same
order. The numpy steps of QuantLayer stay the reference and the fallback: these run only where gcc
is available (the post steps only where the dot product is float32, exact below 2^24, and dense; the
accumulators only where their int32 arithmetic holds, block_fits);
tests/test_train_native.py checks both agree bit for bit. CQTF_NATIVE_TRAINING=0 trains with the
numpy steps only.

Everything crossing into C is a torch tensor (data_ptr() costs 0.1 us; numpy's .ctypes 1 us).
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

SOURCE = Path(__file__).resolve().parent / "csrc" / "forward_steps.c"
DOUBLE_ROUNDING = -1  # the C mode of TFLM's double rounding; otherwise profile.ROUNDING_CODES
# cqtf_channel_t, 8-byte fields: scale, weight_scale (float64), bias, multiplier, shift, then the post
# step's left, right, nudge, low_step, acc_min, acc_max (int64)
CHANNEL_FIELDS = 11
SCALE, WEIGHT_SCALE, BIAS, MULTIPLIER, SHIFT = range(5)


class Int8Params(NamedTuple):
    weights: torch.Tensor  # float32 integers, the weight's shape
    weight_fake: torch.Tensor  # weight + (weights * scale - weight) (float32): the straight-through shadow's weights
    bias_float: torch.Tensor  # (O,) the int32-clipped bias as float32
    bias_bound: int  # the largest |bias|
    channels: torch.Tensor  # (O, CHANNEL_FIELDS) int64: the C channel table (see column views below)

    def column(self, field: int, dtype) -> np.ndarray:
        """One field of the channel table as numpy (for tests)."""
        table = self.channels.numpy()
        return (table.view(np.float64) if dtype == np.float64 else table)[:, field].astype(dtype)


class PostResult(NamedTuple):
    q: torch.Tensor  # int64, clamped, zero point included
    exact: torch.Tensor  # float32 (q - zero point) * scale
    inside: torch.Tensor  # bool: the clamp left the value as it was
    high: torch.Tensor  # bool: above act_max before the clamp
    low: torch.Tensor  # bool: below act_min before the clamp
    acc_low: float  # the least / largest accumulator value of a channel times its scale (real units)
    acc_high: float
    n_high: int  # how many requantized values were above act_max / below act_min before the clamp
    n_low: int
    vectorized: bool = False  # the SIMD pass computed it (channels last, a multiplier below 1, not half to even)


class FixedPostResult(NamedTuple):
    q: torch.Tensor  # int64, clamped
    exact: torch.Tensor  # float32 q * scale
    inside: torch.Tensor  # bool: none of high, low (negative after a ReLU)
    high: torch.Tensor  # bool: above act_max, or the accumulator at its top
    low: torch.Tensor  # bool: below act_min, or the accumulator at its bottom
    any_high: bool
    any_low: bool
    any_negative: bool  # some output below zero (a ReLU's dead zone)
    n_high: int
    n_high_or_low: int
    acc_low: float  # the least / largest dot product + bias in real units
    acc_high: float
    vectorized: bool = False  # the SIMD pass computed it (channels last)


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
            warnings.warn(f"the compiled training steps are unavailable, training with the numpy steps "
                          f"(same results, slower): {exc}")
            _library = False
            return _library
        i64, i32, f32, ptr = ctypes.c_int64, ctypes.c_int32, ctypes.c_float, ctypes.c_void_p
        lib.cqtf_int8_params.restype = i64
        lib.cqtf_int8_params.argtypes = [i64, i64, f32, f32] + [ptr] * 6
        lib.cqtf_int8_post.restype = None
        lib.cqtf_int8_post.argtypes = [i64, i64, i64, i32, i32, i32, i32, f32] + [ptr] * 9
        lib.cqtf_fixed_params.restype = None
        lib.cqtf_fixed_params.argtypes = [i64, ptr, ctypes.c_double, i32, ctypes.c_double, i64, i64, ptr,
                                          ctypes.c_double, i64, i64, ptr, ptr, ptr]
        lib.cqtf_fixed_post.restype = None
        lib.cqtf_fixed_post.argtypes = [i64, i64, i64, ptr, i32, ptr, i32, i64, i64, i32, i32, i32, i32, i32, f32,
                                        ctypes.c_double] + [ptr] * 8
        lib.cqtf_block_accumulate.restype = i64
        lib.cqtf_block_accumulate.argtypes = [i64, i64, i64, i64, i32, ptr, ptr, i64, i64, i32, i32, i32, i32,
                                              i64, i64, i64, ptr]
        lib.cqtf_accumulator_columns.restype = None
        lib.cqtf_accumulator_columns.argtypes = [ptr, ptr, ptr, ptr, i32, i64, ptr, i32]
        if hasattr(lib, "cqtf_has_avx2"):  # x86-64 only
            lib.cqtf_has_avx2.restype = i32
            lib.cqtf_has_avx2.argtypes = []
            lib.cqtf_saturating_accumulate16.restype = i64
            lib.cqtf_saturating_accumulate16.argtypes = [i64, i64, i64, i64, i32, ptr, ptr, i64, i64, i64, i64, ptr]
        _library = lib
    return _library


def enabled() -> bool:
    """Whether the compiled steps run (built on first use; False without a C compiler)."""
    return os.environ.get("CQTF_NATIVE_TRAINING", "1") != "0" and bool(_load())


def int8_params(weight: torch.Tensor, bias: torch.Tensor, in_scale: np.float32, out_scale: np.float32) -> Int8Params:
    """QuantLayer.integer_params' integers (and the shadow's weights) from float32 weight (O, ...) and
    bias (O,)."""
    w = weight.detach().float().contiguous()  # no-ops on the float32 parameters of training
    b = bias.detach().float().contiguous()
    out_channels = w.shape[0]
    weights, fake = torch.empty_like(w), torch.empty_like(w)
    bias_float = torch.empty(out_channels, dtype=torch.float32)
    channels = torch.empty((out_channels, CHANNEL_FIELDS), dtype=torch.int64)
    bias_bound = _load().cqtf_int8_params(out_channels, w.numel() // max(out_channels, 1), in_scale, out_scale,
                                          w.data_ptr(), b.data_ptr(), weights.data_ptr(), fake.data_ptr(),
                                          bias_float.data_ptr(), channels.data_ptr())
    return Int8Params(weights, fake, bias_float, bias_bound, channels)


def runs_layout(t: torch.Tensor) -> tuple[int, int, int] | None:
    """(outer, channels, inner) when t (channels on dim 1) is dense, so that every channel's elements
    lie in runs of `inner` consecutive storage elements; None otherwise."""
    dims = sorted((st, sz) for st, sz in zip(t.stride(), t.shape) if sz > 1)
    expected = 1
    for stride, size in dims:
        if stride != expected:
            return None
        expected *= size
    channels = t.shape[1]
    inner = t.stride(1) if channels > 1 else 1
    return t.numel() // (channels * inner), channels, inner


def int8_post(acc: torch.Tensor, layout: tuple[int, int, int], params: Int8Params, mode: int, zero_point: int,
              act_min: int, act_max: int, out_scale: np.float32) -> PostResult:
    """Requantize (mode: DOUBLE_ROUNDING or a single rounding's code), clamp, masks and extremes of a
    float32 accumulator of exact integers below 2^24, with the layout runs_layout(acc) gave and the
    channel table of int8_params."""
    outer, channels, inner = layout
    shape, strides = acc.shape, acc.stride()
    q = torch.empty_strided(shape, strides, dtype=torch.int64)
    exact = torch.empty_strided(shape, strides, dtype=torch.float32)
    inside, high, low = (torch.empty_strided(shape, strides, dtype=torch.bool) for _ in range(3))
    stats = torch.empty(3, dtype=torch.int64)
    acc_range = torch.empty(2, dtype=torch.float64)
    _load().cqtf_int8_post(outer, channels, inner, mode, zero_point, act_min, act_max, out_scale,
                           params.channels.data_ptr(), acc.data_ptr(), q.data_ptr(), exact.data_ptr(),
                           inside.data_ptr(), high.data_ptr(), low.data_ptr(), stats.data_ptr(), acc_range.data_ptr())
    n_high, n_low, vectorized = stats.tolist()
    return PostResult(q, exact, inside, high, low, *acc_range.tolist(), n_high, n_low, bool(vectorized))


def fixed_post(dot: torch.Tensor, layout: tuple[int, int, int], bias: torch.Tensor, fits: bool, acc_min: int,
               acc_max: int, out_shift: int, mode: int, relu: bool, act_min: int, act_max: int, out_scale: np.float32,
               acc_scale: float) -> FixedPostResult:
    """A fixed-point profile's forward after the dot product (exact float32 integers below 2^24, or the
    int64 accumulator a block-wise sum left; without the bias; the layout runs_layout(dot) gave): the
    bias (int64 per channel) added and saturated to [acc_min, acc_max] unless `fits`, rounded by `mode`
    to the output format (out_shift > 0: a right shift), clamped; masks and extremes as
    QuantLayer._fixed_post_numpy builds them."""
    outer, channels, inner = layout
    shape, strides = dot.shape, dot.stride()
    q = torch.empty_strided(shape, strides, dtype=torch.int64)
    exact = torch.empty_strided(shape, strides, dtype=torch.float32)
    inside, high, low, negative = (torch.empty_strided(shape, strides, dtype=torch.bool) for _ in range(4))
    stats = torch.empty(6, dtype=torch.int64)
    acc_range = torch.empty(2, dtype=torch.float64)
    _load().cqtf_fixed_post(outer, channels, inner, dot.data_ptr(), int(dot.dtype == torch.int64), bias.data_ptr(),
                            int(fits), acc_min, acc_max, out_shift, mode, int(relu), act_min, act_max, out_scale,
                            acc_scale, q.data_ptr(), exact.data_ptr(), inside.data_ptr(), high.data_ptr(),
                            low.data_ptr(), negative.data_ptr(), stats.data_ptr(), acc_range.data_ptr())
    any_high, any_low, any_negative, n_high, n_high_or_low, vectorized = stats.tolist()
    return FixedPostResult(q, exact, inside, high, low, bool(any_high), bool(any_low), bool(any_negative), n_high,
                           n_high_or_low, *acc_range.tolist(), bool(vectorized))


def fixed_params(weight: torch.Tensor, bias: torch.Tensor, w_scale: float, pot_max_exp: int, alpha: float, qmax: int,
                 acc_scale: float, acc_min: int, acc_max: int) -> tuple[torch.Tensor, torch.Tensor, int, int]:
    """QuantLayer._fixed_arrays: integer weights (float32, weight's shape) of weight * w_scale (fixed point
    clipped to +-qmax, or power of two up to 2^pot_max_exp when pot_max_exp >= 0, blended by alpha), the
    bias * acc_scale rounded and clipped to [acc_min, acc_max] (int64), the largest |weight| and |bias|."""
    w, b = weight.detach().float().contiguous(), bias.detach().float().contiguous()
    weights = torch.empty_like(w)
    bias_int = torch.empty(b.numel(), dtype=torch.int64)
    bounds = torch.empty(2, dtype=torch.int64)
    _load().cqtf_fixed_params(w.numel(), w.data_ptr(), w_scale, pot_max_exp, alpha, qmax, b.numel(), b.data_ptr(),
                              acc_scale, acc_min, acc_max, weights.data_ptr(), bias_int.data_ptr(), bounds.data_ptr())
    largest_weight, largest_bias = bounds.tolist()
    return weights, bias_int, largest_weight, largest_bias


ACC_TILE = 64  # forward_steps.c: outputs per tile; the columns' padded length is a multiple of it
BLOCK_SUM_LIMIT = 2 ** 31  # |block sum| + 2^acc_shift below it: the block sums and their rounding stay int32
SATURATING16 = (-(1 << 15), (1 << 15) - 1)  # the accumulator cqtf_saturating_accumulate16 computes


def accumulator_columns(cols: torch.Tensor, dtype=torch.int32) -> torch.Tensor:
    """(N, K, L) or grouped (N, G, K, L) input columns (exact integers) as the C accumulators read
    them: `dtype` (G, K, m_pad), column m = n * L + l, zero past N * L up to a multiple of ACC_TILE.
    From QuantLayer.device_columns: the reference of columns_from_codes (tests use it)."""
    grouped = cols.dim() == 4
    n, length = cols.shape[0], cols.shape[-1]
    k = cols.shape[-2]
    g = cols.shape[1] if grouped else 1
    outputs = n * length
    m_pad = -(-outputs // ACC_TILE) * ACC_TILE
    out = torch.empty((g, k, m_pad), dtype=dtype)
    out[..., outputs:] = 0
    by_channel = cols.permute(1, 2, 0, 3) if grouped else cols.permute(1, 0, 2)[None]  # (G, K, N, L)
    out[..., :outputs].unflatten(-1, (n, length)).copy_(by_channel)
    return out


def columns_from_codes(q: torch.Tensor, geometry: tuple[int, ...], grouped: bool,
                       wide: bool) -> tuple[torch.Tensor, int]:
    """accumulator_columns(device columns of q) without the unfold and its copies: the int64 codes q
    (N, C, H, W), any strides, read in C with the kernel geometry (KH, KW, SH, SW, PH, PW); int32
    columns where wide, else int16 (codes of at most 16 bits). Also returns the outputs per sample
    (L = OH * OW)."""
    n, c, h, w = q.shape
    kh, kw, sh, sw, ph, pw = geometry
    length = ((h + 2 * ph - kh) // sh + 1) * ((w + 2 * pw - kw) // sw + 1)
    outputs = n * length
    m_pad = -(-outputs // ACC_TILE) * ACC_TILE
    shape = (c, kh * kw, m_pad) if grouped else (1, kh * kw * c, m_pad)
    cols = torch.empty(shape, dtype=torch.int32 if wide else torch.int16)
    q = q if q.dtype == torch.int64 else q.long()
    meta = torch.tensor([*q.stride(), n, c, h, w, *geometry], dtype=torch.int64)  # strides, dims, geometry
    _load().cqtf_accumulator_columns(q.data_ptr(), meta.data_ptr(), meta.data_ptr() + 32, meta.data_ptr() + 64,
                                     int(grouped), m_pad, cols.data_ptr(), int(wide))
    return cols, length


def saturating16(block: int, acc_shift: int, acc_min: int, acc_max: int, largest_product: int) -> bool:
    """Whether block_accumulate takes the 16-bit AVX2 loop (so its columns are int16): blocks of one
    product, no shift, a 16-bit accumulator, every |weight x input| below 2^15, and a CPU with AVX2."""
    return (block, acc_shift, acc_min, acc_max) == (1, 0, *SATURATING16) and largest_product < 2 ** 15 and _avx2()


def block_accumulate(weights: torch.Tensor, columns: torch.Tensor, batch: int, length: int, block: int,
                     acc_shift: int, mode: int, acc_min: int, acc_max: int, strides: tuple[int, int, int],
                     saturating: bool = False) -> tuple[torch.Tensor, int]:
    """The device's block-wise accumulator before the bias (QuantLayer._fixed_accumulator's twin):
    weights (O, K) exact integers in device order, columns (G, K, m_pad) from columns_from_codes or
    accumulator_columns (G = O: a depthwise layer), each block of `block` products summed exactly,
    rounded by acc_shift (`mode`: a ROUNDING_CODES value), saturated to [acc_min, acc_max], the running
    sum saturated after each block. saturating: saturating16 said yes (int16 columns). Returns the
    (N, O, L) int64 accumulator, laid out in memory by `strides` (elements: n, o, l), and how many
    outputs saturated somewhere. The caller checks the bounds (block_fits)."""
    out_channels, fan_in = weights.shape
    grouped = int(columns.shape[0] > 1)
    w = weights.to(torch.int32).contiguous()
    acc = torch.empty_strided((batch, out_channels, length), strides, dtype=torch.int64)
    if saturating:
        n_clipped = _load().cqtf_saturating_accumulate16(out_channels, fan_in, batch, length, grouped, w.data_ptr(),
                                                         columns.data_ptr(), columns.shape[-1], *strides,
                                                         acc.data_ptr())
    else:
        n_clipped = _load().cqtf_block_accumulate(out_channels, fan_in, batch, length, grouped, w.data_ptr(),
                                                  columns.data_ptr(), columns.shape[-1], block, acc_shift, mode,
                                                  acc_min, acc_max, *strides, acc.data_ptr())
    return acc, n_clipped


_has_avx2 = None


def _avx2() -> bool:
    """Whether the 16-bit saturating accumulator can run (x86-64 with AVX2; CQTF_NATIVE_AVX2=0: never)."""
    global _has_avx2
    if _has_avx2 is None:
        lib = _load()
        _has_avx2 = hasattr(lib, "cqtf_has_avx2") and bool(lib.cqtf_has_avx2())
    return _has_avx2 and os.environ.get("CQTF_NATIVE_AVX2", "1") != "0"


def block_fits(block: int, fan_in: int, largest_weight: int, largest_input: int, acc_shift: int, acc_bits: int) -> bool:
    """Whether cqtf_block_accumulate's int32 arithmetic holds the layer: block sums and their rounding
    below 2^31, a right shift of 0..30, an accumulator of at most 31 bits."""
    block_bound = min(block, fan_in) * largest_weight * largest_input
    return 0 <= acc_shift <= 30 and acc_bits <= 31 and block_bound + (1 << acc_shift) < BLOCK_SUM_LIMIT
