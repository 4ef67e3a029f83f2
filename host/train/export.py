"""Turn a trained cqtf network into the IntModel the device runs (device layout, NHWC)."""
from __future__ import annotations

import numpy as np

from cqtf.model_ir import IntLayer, IntModel
from cqtf.train.layers import (QParams, QuantAdd, QuantAvgPool2d, QuantConv2d, QuantDepthwiseConv2d, QuantFlatten,
                               QuantGlobalAvgPool, QuantLinear, QuantMaxPool2d, QuantSave)
from cqtf.train.model import QuantSequential


def _conv_out(size: int, kernel: int, stride: int, pad: int) -> int:
    return (size + 2 * pad - kernel) // stride + 1


def _requant_fields(p, in_qp: QParams) -> dict:
    return dict(
        input_offset=-in_qp.zero_point, output_offset=p.out_qparams.zero_point,
        act_min=p.act_min, act_max=p.act_max,
        bias=p.bias.numpy().astype(np.int32), multiplier=p.multiplier, shift=p.shift,
        scales={"input": float(in_qp.scale), "weights": p.weight_scales.tolist(), "output": float(p.out_qparams.scale)},
    )


def _fixed_fields(layer, in_qp: QParams):
    p = layer.fixed_params(in_qp)
    out_c = p.weights.shape[0]
    return p, dict(
        input_offset=0, output_offset=0, act_min=p.act_min, act_max=p.act_max,
        bias=p.bias.numpy().astype(np.int32), multiplier=None, shift=np.full(out_c, p.shift, np.int32),
        acc_shift=p.acc_shift,
        scales={"input": float(in_qp.scale), "weights": [2.0 ** -p.weight_frac] * out_c,
                "output": float(p.out_qparams.scale)},
    )


def _layer_fields(layer, qp: QParams):
    """(params with .weights and .out_qparams, IntLayer keyword fields) for the model's profile."""
    if layer.profile.is_fixed:
        return _fixed_fields(layer, qp)
    p = layer.integer_params(qp)
    return p, _requant_fields(p, qp)


def export(model: QuantSequential, input_shape, num_classes: int, profile: str | None = None) -> IntModel:
    shape = tuple(input_shape)  # (H, W, C)
    qp = model.input_qparams
    flattened_from = None  # the (H, W, C) shape a QuantFlatten flattened in NCHW order
    layers: list[IntLayer] = []
    saved: dict[str, tuple[int, tuple, QParams]] = {}  # QuantSave tag -> (tensor index, shape, quantization)
    for layer in model.layers:
        if isinstance(layer, QuantSave):
            saved[layer.tag] = (len(layers), shape, qp)  # tensor 0 = the model input, i + 1 = layer i's output
        elif isinstance(layer, QuantAdd):
            tensor, skip_shape, skip_qp = saved[layer.tag]
            if tuple(skip_shape) != tuple(shape):
                raise ValueError(f"residual add '{layer.tag}' adds shapes {skip_shape} and {shape}")
            p = layer.add_params(qp, skip_qp)
            out_qp = p.pop("out_qparams")
            layers.append(IntLayer("add", shape, shape, inputs=(len(layers), tensor), **p))
            qp = out_qp
        elif isinstance(layer, QuantAvgPool2d):
            if isinstance(layer, QuantGlobalAvgPool):
                (kh, kw), (sh, sw), (ph, pw) = shape[:2], shape[:2], (0, 0)
            else:
                (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
            out = (_conv_out(shape[0], kh, sh, ph), _conv_out(shape[1], kw, sw, pw), shape[2])
            layers.append(IntLayer("avgpool2d", shape, out, (kh, kw), (sh, sw), (ph, pw),
                                   input_offset=-qp.zero_point, output_offset=qp.zero_point,
                                   scales={"input": float(qp.scale), "output": float(qp.scale)}))
            shape = out
        elif isinstance(layer, QuantConv2d):
            p, fields = _layer_fields(layer, qp)
            conv = layer.inner
            (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
            out = (_conv_out(shape[0], kh, sh, ph), _conv_out(shape[1], kw, sw, pw), conv.out_channels)
            weights = p.weights.numpy().astype(np.int8).transpose(0, 2, 3, 1)  # OIHW -> OHWI
            layers.append(IntLayer("conv2d", shape, out, (kh, kw), (sh, sw), (ph, pw),
                                   weights=np.ascontiguousarray(weights), **fields))
            shape, qp = out, p.out_qparams
        elif isinstance(layer, QuantMaxPool2d):
            (kh, kw), (sh, sw), (ph, pw) = layer.kernel_size, layer.stride, layer.padding
            out = (_conv_out(shape[0], kh, sh, ph), _conv_out(shape[1], kw, sw, pw), shape[2])
            layers.append(IntLayer("maxpool2d", shape, out, (kh, kw), (sh, sw), (ph, pw),
                                   input_offset=-qp.zero_point, output_offset=qp.zero_point))
            shape = out
        elif isinstance(layer, QuantFlatten):
            flattened_from = shape
        elif isinstance(layer, QuantLinear):
            p, fields = _layer_fields(layer, qp)
            weights = p.weights.numpy().astype(np.int8)  # (O, features in PyTorch's flatten order)
            if flattened_from is not None:  # reorder C,H,W columns to the device's H,W,C
                h, w, c = flattened_from
                weights = weights.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weights.shape[0], -1)
                flattened_from = None
            out = (1, 1, layer.inner.out_features)
            layers.append(IntLayer("fully_connected", shape, out,
                                   weights=np.ascontiguousarray(weights), **fields))
            shape, qp = out, p.out_qparams
        elif isinstance(layer, QuantDepthwiseConv2d):
            p, fields = _layer_fields(layer, qp)
            conv = layer.inner
            (kh, kw), (sh, sw), (ph, pw) = conv.kernel_size, conv.stride, conv.padding
            out = (_conv_out(shape[0], kh, sh, ph), _conv_out(shape[1], kw, sw, pw), conv.out_channels)
            weights = p.weights.numpy().astype(np.int8).transpose(1, 2, 3, 0)  # (C, 1, KH, KW) -> (1, KH, KW, C)
            layers.append(IntLayer("depthwise_conv2d", shape, out, (kh, kw), (sh, sw), (ph, pw),
                                   weights=np.ascontiguousarray(weights), **fields))
            shape, qp = out, p.out_qparams
        else:
            raise TypeError(f"cannot export layer {type(layer).__name__}")
    profile = profile or model.profile.name
    if profile != model.profile.name:
        raise ValueError(f"network trained for profile {model.profile.name}, export asked for {profile}")
    return IntModel(
        name=model.name, profile=profile, input_shape=tuple(input_shape),
        input_scale=float(model.data_input_quant.scale), input_zero_point=model.data_input_quant.zero_point,
        output_scale=float(qp.scale), output_zero_point=qp.zero_point, num_classes=num_classes, layers=layers,
        arithmetic=model.profile.to_dict(),
    )
