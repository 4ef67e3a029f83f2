"""The host reference of the firmware: runs an IntModel in int64 numpy, batch-wise, NHWC.

Each function mirrors one C kernel in firmware/src/kernels/ and must match it bit for bit:
it is the "host simulation" that validation compares the device against.
"""
from __future__ import annotations

import numpy as np

from cqtf import reference_fixed
from cqtf.fixedpoint import add_fixed, add_int8, requantize, requantize_single, round_div
from cqtf.model_ir import IntLayer, IntModel
from cqtf.profile import PRESETS, Profile, Requant, add_single_rounding, average_rounding


def _padded(x: np.ndarray, layer: IntLayer, fill: int) -> np.ndarray:
    """Pad (N, H, W, C) so every window of the layer lies inside; bottom/right follow from out_shape."""
    (kh, kw), (sh, sw), (top, left) = layer.kernel, layer.stride, layer.pad
    out_h, out_w, _ = layer.out_shape
    need_h = (out_h - 1) * sh + kh
    need_w = (out_w - 1) * sw + kw
    bottom = max(need_h - top - x.shape[1], 0)
    right = max(need_w - left - x.shape[2], 0)
    return np.pad(x, ((0, 0), (top, bottom), (left, right), (0, 0)), constant_values=fill)


def _windows(x: np.ndarray, layer: IntLayer):
    """Yield (ky, kx, view of shape (N, out_h, out_w, C)) for every kernel position."""
    (kh, kw), (sh, sw) = layer.kernel, layer.stride
    out_h, out_w, _ = layer.out_shape
    for ky in range(kh):
        for kx in range(kw):
            yield ky, kx, x[:, ky: ky + (out_h - 1) * sh + 1: sh, kx: kx + (out_w - 1) * sw + 1: sw, :]


def _requantize_clamp(acc: np.ndarray, layer: IntLayer, profile: Profile | None = None) -> np.ndarray:
    if profile is not None and profile.requant.kind == Requant.SINGLE:
        out = requantize_single(acc, layer.multiplier, layer.shift, profile.requant.rounding)
    else:
        out = requantize(acc, layer.multiplier, layer.shift)
    out = out + layer.output_offset
    return np.clip(out, layer.act_min, layer.act_max).astype(np.int8)


def conv2d(x: np.ndarray, layer: IntLayer, profile: Profile | None = None) -> np.ndarray:
    if profile is not None and profile.is_fixed:
        return reference_fixed.conv2d(x, layer, profile, _padded)
    # Padding positions are skipped on the device; adding the offset first and padding with 0 is the same.
    shifted = _padded(x.astype(np.int64) + layer.input_offset, layer, fill=0)
    weights = layer.weights.astype(np.int64)  # (O, KH, KW, I)
    acc = np.zeros((x.shape[0],) + tuple(layer.out_shape), dtype=np.int64)
    for ky, kx, window in _windows(shifted, layer):
        acc += window @ weights[:, ky, kx, :].T
    return _requantize_clamp(acc + layer.bias.astype(np.int64), layer, profile)


def maxpool2d(x: np.ndarray, layer: IntLayer, profile: Profile | None = None) -> np.ndarray:
    padded = _padded(x.astype(np.int64), layer, fill=np.iinfo(np.int64).min)
    out = np.full((x.shape[0],) + tuple(layer.out_shape), np.iinfo(np.int64).min, dtype=np.int64)
    for _, _, window in _windows(padded, layer):
        out = np.maximum(out, window)
    return np.clip(out, layer.act_min, layer.act_max).astype(np.int8)


def fully_connected(x: np.ndarray, layer: IntLayer, profile: Profile | None = None) -> np.ndarray:
    if profile is not None and profile.is_fixed:
        return reference_fixed.fully_connected(x, layer, profile)
    flat = x.reshape(x.shape[0], -1).astype(np.int64) + layer.input_offset  # NHWC order
    acc = flat @ layer.weights.astype(np.int64).T + layer.bias.astype(np.int64)
    return _requantize_clamp(acc, layer, profile).reshape((x.shape[0],) + tuple(layer.out_shape))


def depthwise_conv2d(x: np.ndarray, layer: IntLayer, profile: Profile | None = None) -> np.ndarray:
    """Depthwise conv, channel multiplier 1: weights (1, KH, KW, C); padding skipped (int8) or zero products."""
    if profile is not None and profile.is_fixed:
        return reference_fixed.depthwise_conv2d(x, layer, profile, _padded)
    shifted = _padded(x.astype(np.int64) + layer.input_offset, layer, fill=0)
    weights = layer.weights.astype(np.int64)[0]  # (KH, KW, C)
    acc = np.zeros((x.shape[0],) + tuple(layer.out_shape), dtype=np.int64)
    for ky, kx, window in _windows(shifted, layer):
        acc += window * weights[ky, kx, :]
    return _requantize_clamp(acc + layer.bias.astype(np.int64), layer, profile)


def avgpool2d(x: np.ndarray, layer: IntLayer, profile: Profile | None = None) -> np.ndarray:
    """Mean of each window's in-range positions (padding is not counted), rounded as the profile's
    device does (cqtf.profile.average_rounding), clamped. Output quantization = input quantization."""
    total = np.zeros((x.shape[0],) + tuple(layer.out_shape), dtype=np.int64)
    count = np.zeros((1,) + tuple(layer.out_shape), dtype=np.int64)
    values = _padded(x.astype(np.int64), layer, fill=0)
    inside = _padded(np.ones((1,) + x.shape[1:], dtype=np.int64), layer, fill=0)
    for (_, _, window), (_, _, ones) in zip(_windows(values, layer), _windows(inside, layer)):
        total += window
        count += ones
    mean = round_div(total, np.maximum(count, 1), average_rounding(profile or PRESETS["int8"]))
    return np.clip(mean, layer.act_min, layer.act_max).astype(np.int8)


def add(a: np.ndarray, b: np.ndarray, layer: IntLayer, profile: Profile | None = None) -> np.ndarray:
    """Elementwise sum of two tensors of the same shape, each with its own quantization."""
    profile = profile or PRESETS["int8"]
    if profile.is_fixed:
        out = add_fixed(a, b, layer.shift, profile.requant.rounding, layer.act_min, layer.act_max)
    else:
        out = add_int8(a, b, (layer.input_offset, layer.input_b_offset), layer.multiplier, layer.shift,
                       layer.output_offset, layer.act_min, layer.act_max, add_single_rounding(profile))
    return out.astype(np.int8)


KERNELS = {"conv2d": conv2d, "maxpool2d": maxpool2d, "fully_connected": fully_connected,
           "depthwise_conv2d": depthwise_conv2d, "avgpool2d": avgpool2d}


def run_layers(model: IntModel, x: np.ndarray) -> list[np.ndarray]:
    """Every layer's int8 output for a batch x of shape (N, H, W, C) int8."""
    if x.ndim == 3:
        x = x[None]
    tensors = [x]  # 0: the model input, i + 1: layer i's output
    profile = model.arithmetic_profile
    for i, layer in enumerate(model.layers):
        inputs = [tensors[t] for t in model.layer_inputs(i)]
        if layer.kind == "add":
            out = add(inputs[0], inputs[1], layer, profile)
        else:
            out = KERNELS[layer.kind](inputs[0], layer, profile)
        tensors.append(out)
    return tensors[1:]


def run(model: IntModel, x: np.ndarray) -> np.ndarray:
    """Final int8 outputs, flattened: (N, output_size)."""
    return run_layers(model, x)[-1].reshape(x.shape[0] if x.ndim == 4 else 1, -1)


def predict(outputs: np.ndarray) -> np.ndarray:
    """Class = index of the largest int8 output; ties go to the lowest index (as numpy.argmax)."""
    return np.argmax(outputs.astype(np.int32), axis=1)
