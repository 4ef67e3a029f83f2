"""Host reference of the fixed-point profiles' conv / fully connected kernels (int64 numpy, NHWC).

Independent of the trainer: it walks the products in the device's order, block by block, exactly as
the C twins do (firmware/src/kernels/cqtf_conv2d_fx.c, cqtf_fully_connected_fx.c):

    for each block j of B products (B = 0: all products in one block; padding counts as zeros):
        s   = saturate(round_shift(exact sum of the block, acc_shift, block_rounding), acc_bits)
        acc = saturate(acc + s, acc_bits)
    acc = saturate(acc + bias, acc_bits)
    out = clamp(round_shift(acc, -shift, requant rounding), act_min, act_max)
"""
from __future__ import annotations

import numpy as np

from cqtf.fixedpoint import round_shift, saturate
from cqtf.model_ir import IntLayer
from cqtf.profile import Profile


def accumulate(products: np.ndarray, bias: np.ndarray, acc_shift: int, profile: Profile) -> np.ndarray:
    """products (..., O, K) int64 in device order -> accumulators (..., O)."""
    acc_spec = profile.accumulator
    k = products.shape[-1]
    block = acc_spec.block or max(k, 1)
    acc = np.zeros(products.shape[:-1], dtype=np.int64)
    for start in range(0, k, block):
        s = products[..., start: start + block].sum(axis=-1)
        s = saturate(round_shift(s, acc_shift, acc_spec.block_rounding), acc_spec.bits)
        acc = saturate(acc + s, acc_spec.bits)
    return saturate(acc + bias.astype(np.int64), acc_spec.bits)


def output(acc: np.ndarray, layer: IntLayer, profile: Profile) -> np.ndarray:
    out = round_shift(acc, -layer.shift.astype(np.int64), profile.requant.rounding)
    return np.clip(out, layer.act_min, layer.act_max).astype(np.int8)


def conv2d(x: np.ndarray, layer: IntLayer, profile: Profile, padded) -> np.ndarray:
    """x (N, H, W, C) int8; padded: reference._padded (zero fill)."""
    xp = padded(x.astype(np.int64), layer, fill=0)
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    out_h, out_w, out_c = layer.out_shape
    n, c = x.shape[0], x.shape[3]
    # columns (N, out_h, out_w, KH*KW*C) in the device order ky, kx, ic
    cols = np.empty((n, out_h, out_w, kh, kw, c), dtype=np.int64)
    for ky in range(kh):
        for kx in range(kw):
            cols[:, :, :, ky, kx, :] = xp[:, ky: ky + (out_h - 1) * sh + 1: sh, kx: kx + (out_w - 1) * sw + 1: sw, :]
    cols = cols.reshape(n, out_h, out_w, 1, -1)
    weights = layer.weights.astype(np.int64).reshape(out_c, -1)  # (O, K), OHWI
    acc = accumulate(cols * weights, layer.bias, layer.acc_shift, profile)  # (N, oh, ow, O)
    return output(acc, layer, profile)


def fully_connected(x: np.ndarray, layer: IntLayer, profile: Profile) -> np.ndarray:
    flat = x.reshape(x.shape[0], 1, -1).astype(np.int64)  # (N, 1, K), NHWC order
    acc = accumulate(flat * layer.weights.astype(np.int64), layer.bias, layer.acc_shift, profile)
    return output(acc, layer, profile).reshape((x.shape[0],) + tuple(layer.out_shape))


def depthwise_conv2d(x: np.ndarray, layer: IntLayer, profile: Profile, padded) -> np.ndarray:
    """Depthwise conv (weights (1, KH, KW, C)): per channel, products in the device order ky, kx;
    padding counts as zero products (twin: firmware/src/kernels/cqtf_depthwise_conv2d_fx.c)."""
    xp = padded(x.astype(np.int64), layer, fill=0)
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    out_h, out_w, out_c = layer.out_shape
    n = x.shape[0]
    cols = np.empty((n, out_h, out_w, out_c, kh, kw), dtype=np.int64)  # (..., C, K) in order ky, kx
    for ky in range(kh):
        for kx in range(kw):
            cols[..., ky, kx] = xp[:, ky: ky + (out_h - 1) * sh + 1: sh, kx: kx + (out_w - 1) * sw + 1: sw, :]
    weights = layer.weights.astype(np.int64)[0].transpose(2, 0, 1).reshape(out_c, -1)  # (C, KH*KW)
    acc = accumulate(cols.reshape(n, out_h, out_w, out_c, -1) * weights, layer.bias, layer.acc_shift, profile)
    return output(acc, layer, profile)
