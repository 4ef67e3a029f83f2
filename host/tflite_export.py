"""Export an int8 IntModel as a .tflite flatbuffer that TFLite Micro runs to the same integers.

TFLM does not read multipliers or shifts from a model: it derives them, at Prepare, from the float
scales of the tensors (input * weight / output in double, then QuantizeMultiplier). So the export
stores the float32 scales kept in IntLayer.scales and first checks that TFLM's derivation gives
back, channel by channel, exactly the multiplier and shift cqtf packed; if not, it refuses.
Padding becomes SAME or VALID, whichever reproduces the layer's output shape and (top, left) pad.

Written with the schema object API that the tflite-micro package ships; needs no TensorFlow.
"""
from __future__ import annotations

import numpy as np

from cqtf.errors import DataError
from cqtf.fixedpoint import INT32_MAX, add_multipliers, quantize_multiplier
from cqtf.model_ir import IntLayer, IntModel

TFLITE_NAME = "model.tflite"


class ExportError(DataError):
    """The model cannot be written as a .tflite that TFLM would run to the same integers."""


def schema():
    """The TFLite schema module (object API) of the tflite-micro package; ExportError without it."""
    try:
        from tflite_micro.tensorflow.lite.micro.python import schema_py_generated as fb
        import flatbuffers  # noqa: F401
    except ImportError:
        raise ExportError("the .tflite export needs the packages tflite-micro and flatbuffers",
                          "pip install -e '.[oracle]'") from None
    return fb


def _f32(value: float, what: str) -> float:
    """A scale as the float32 the flatbuffer will hold; refuse one that float32 would change."""
    if float(np.float32(value)) != float(value) or not value > 0:
        raise ExportError(f"{what} = {value!r} is not a positive float32", "re-export the model with `cqtf train`")
    return float(value)


def tflm_multipliers(kind: str, in_scale: float, weight_scales: list[float], out_scale: float) -> list[tuple[int, int]]:
    """(multiplier, shift) per channel as TFLM's Prepare derives them from the tensors' scales.

    Per-channel (several weight scales): double(in) * double(w) / double(out), as
    PopulateConvolutionQuantizationParams and the per-channel FULLY_CONNECTED do. One weight scale
    on a FULLY_CONNECTED takes TFLM's per-tensor path, which multiplies in float32 first.
    """
    if kind == "fully_connected" and len(weight_scales) == 1:
        product = float(np.float32(in_scale) * np.float32(weight_scales[0]))
        return [quantize_multiplier(product / float(out_scale))]
    return [quantize_multiplier(float(in_scale) * float(w) / float(out_scale)) for w in weight_scales]


def _check_multipliers(i: int, layer: IntLayer, in_scale: float, out_scale: float) -> list[float]:
    weight_scales = [_f32(w, f"layer {i} weight scale") for w in layer.scales.get("weights", [])]
    if len(weight_scales) != layer.out_shape[2]:
        raise ExportError(f"layer {i} ({layer.kind}) has {len(weight_scales)} weight scales for "
                          f"{layer.out_shape[2]} channels", "re-export the model with `cqtf train`")
    derived = tflm_multipliers(layer.kind, in_scale, weight_scales, out_scale)
    for c, ((m, s), packed_m, packed_s) in enumerate(zip(derived, layer.multiplier, layer.shift)):
        if (m, s) != (int(packed_m), int(packed_s)):
            raise ExportError(
                f"layer {i} ({layer.kind}) channel {c}: TFLM would derive multiplier {m} shift {s} from the "
                f"scales (input {in_scale!r}, weight {weight_scales[c]!r}, output {out_scale!r}), cqtf packed "
                f"{int(packed_m)} shift {int(packed_s)}", "the scales do not match the integers; re-run `cqtf train`")
    return weight_scales


def _padding(fb, i: int, layer: IntLayer) -> int:
    """SAME or VALID: the one whose TFLM output size and (top, left) padding equal the layer's."""
    def tflm(size, k, s, mode):
        out = (size + s - 1) // s if mode == "SAME" else (size + s - k) // s
        return out, max((out - 1) * s + k - size, 0) // 2

    for mode in ("VALID", "SAME"):
        got = [tflm(layer.in_shape[d], layer.kernel[d], layer.stride[d], mode) for d in (0, 1)]
        if all(got[d] == (layer.out_shape[d], layer.pad[d]) for d in (0, 1)):
            return getattr(fb.Padding, mode)
    raise ExportError(f"layer {i} ({layer.kind}): padding (top, left) {tuple(layer.pad)} with output "
                      f"{layer.out_shape[:2]} is neither TFLite SAME nor VALID",
                      "use padding k // 2 with stride 1, or no padding")


def _activation(fb, i: int, layer: IntLayer, zero_point: int) -> int:
    """The fused activation whose TFLM clamp range is (act_min, act_max)."""
    if (layer.act_min, layer.act_max) == (-128, 127):
        return fb.ActivationFunctionType.NONE
    if (layer.act_min, layer.act_max) == (max(zero_point, -128), 127):
        return fb.ActivationFunctionType.RELU
    scale = np.float32(layer.scales.get("output", 0.0) or 1.0)
    quantize = lambda f: zero_point + int(np.sign(v := np.float32(f) / scale) * np.floor(abs(v) + 0.5))  # noqa: E731
    if (layer.act_min, layer.act_max) == (max(quantize(0.0), -128), min(quantize(6.0), 127)):
        return fb.ActivationFunctionType.RELU6
    if (layer.act_min, layer.act_max) == (max(quantize(-1.0), -128), min(quantize(1.0), 127)):
        return fb.ActivationFunctionType.RELU_N1_TO_1
    raise ExportError(f"layer {i} ({layer.kind}) clamps to [{layer.act_min}, {layer.act_max}], which is "
                      f"neither no activation nor ReLU for output zero point {zero_point}")


class _Graph:
    """Tensors and buffers of one subgraph; buffer 0 stays empty, as TFLite requires."""

    def __init__(self, fb):
        self.fb = fb
        self.tensors, self.buffers, self.operators, self.opcodes = [], [fb.BufferT()], [], []

    def tensor(self, name, shape, dtype, scales, zero_points, data=None, axis=0) -> int:
        fb = self.fb
        t = fb.TensorT()
        t.name, t.shape, t.type = name, list(shape), dtype
        q = fb.QuantizationParametersT()
        q.scale, q.zeroPoint, q.quantizedDimension = list(scales), [int(z) for z in zero_points], axis
        t.quantization = q
        t.buffer = 0
        if data is not None:
            buf = fb.BufferT()
            buf.data = np.frombuffer(np.ascontiguousarray(data).astype(data.dtype.newbyteorder("<")).tobytes(),
                                     dtype=np.uint8)
            self.buffers.append(buf)
            t.buffer = len(self.buffers) - 1
        self.tensors.append(t)
        return len(self.tensors) - 1

    def op(self, code, inputs, outputs, options_type, options):
        fb = self.fb
        if code not in self.opcodes:
            self.opcodes.append(code)
        o = fb.OperatorT()
        o.opcodeIndex, o.inputs, o.outputs = self.opcodes.index(code), list(inputs), list(outputs)
        o.builtinOptionsType, o.builtinOptions = options_type, options
        self.operators.append(o)


def _add(fb, g: _Graph, i: int, layer: IntLayer, a: tuple, b: tuple) -> tuple:
    """An ADD of the tensors a and b, each (TFLite tensor, scale, zero point): TFLM derives its
    multipliers from the three scales, which must give the layer's own."""
    (ta, scale_a, zp_a), (tb, scale_b, zp_b) = a, b
    if layer.input_b_offset != -zp_b:
        raise ExportError(f"layer {i} (add) takes second input offset {layer.input_b_offset}, its input's "
                          f"zero point is {zp_b}")
    if _f32(layer.scales.get("input_b", 0.0), f"layer {i} second input scale") != scale_b:
        raise ExportError(f"layer {i} (add) rescales its second input, which TFLite cannot",
                          "residual adds export to TFLite only without power-of-two gains (int8 profiles)")
    out_scale = _f32(layer.scales.get("output", 0.0), f"layer {i} output scale")
    multiplier, shift = add_multipliers(scale_a, scale_b, out_scale)
    if list(layer.multiplier) != multiplier or list(layer.shift) != shift:
        raise ExportError(f"layer {i} (add): TFLM would derive multipliers {multiplier} shifts {shift} from the "
                          f"scales, the layer has {list(layer.multiplier)} {list(layer.shift)}")
    zero_point = int(layer.output_offset)
    out = g.tensor(f"l{i}_add", (1, *layer.out_shape), fb.TensorType.INT8, [out_scale], [zero_point])
    opts = fb.AddOptionsT()
    opts.fusedActivationFunction = _activation(fb, i, layer, zero_point)
    g.op(fb.BuiltinOperator.ADD, [ta, tb], [out], fb.BuiltinOptions.AddOptions, opts)
    return out, out_scale, zero_point


def export_tflite(model: IntModel) -> bytes:
    """The model as .tflite bytes (CONV_2D, DEPTHWISE_CONV_2D, MAX_POOL_2D, AVERAGE_POOL_2D, ADD,
    FULLY_CONNECTED); ExportError if TFLM could
    not reproduce its integers (other multipliers, unrepresentable padding or clamp)."""
    fb = schema()
    import flatbuffers

    if model.profile != "int8":
        raise ExportError(f"profile '{model.profile}' has no TFLite equivalent", "only int8 exports")
    g = _Graph(fb)
    i8, i32 = fb.TensorType.INT8, fb.TensorType.INT32
    scale = float(np.float32(model.input_scale))  # the model hash holds it as float32 too
    zero_point = int(model.input_zero_point)
    produced = [(g.tensor("input", (1, *model.input_shape), i8, [scale], [zero_point]), scale, zero_point)]
    for i, layer in enumerate(model.layers):  # produced[t]: (TFLite tensor, scale, zero point) of cqtf tensor t
        current, scale, zero_point = produced[model.layer_inputs(i)[0]]
        if layer.input_offset != -zero_point:
            raise ExportError(f"layer {i} ({layer.kind}) takes input offset {layer.input_offset}, its input's "
                              f"zero point is {zero_point}")
        if layer.kind in ("maxpool2d", "avgpool2d"):
            if layer.output_offset != zero_point:
                raise ExportError(f"layer {i} ({layer.kind}) changes the zero point, which TFLite cannot")
            out = g.tensor(f"l{i}_{layer.kind}", (1, *layer.out_shape), i8, [scale], [zero_point])
            opts = fb.Pool2DOptionsT()
            opts.padding = _padding(fb, i, layer)
            opts.strideH, opts.strideW = layer.stride
            opts.filterHeight, opts.filterWidth = layer.kernel
            opts.fusedActivationFunction = _activation(fb, i, layer, zero_point)
            code = fb.BuiltinOperator.MAX_POOL_2D if layer.kind == "maxpool2d" else fb.BuiltinOperator.AVERAGE_POOL_2D
            g.op(code, [current], [out], fb.BuiltinOptions.Pool2DOptions, opts)
            produced.append((out, scale, zero_point))
            continue
        if layer.kind == "add":
            produced.append(_add(fb, g, i, layer, *(produced[t] for t in model.layer_inputs(i))))
            continue
        if layer.kind not in ("conv2d", "fully_connected", "depthwise_conv2d"):
            raise ExportError(f"layer {i}: kind {layer.kind} has no TFLite export")
        in_scale = _f32(layer.scales.get("input", 0.0), f"layer {i} input scale")
        if in_scale != scale:
            raise ExportError(f"layer {i} ({layer.kind}) was quantized for input scale {in_scale!r}, its input "
                              f"tensor has scale {scale!r}")
        out_scale = _f32(layer.scales.get("output", 0.0), f"layer {i} output scale")
        weight_scales = _check_multipliers(i, layer, in_scale, out_scale)
        channels = layer.out_shape[2]
        bias_scales = [float(np.float32(in_scale) * np.float32(w)) for w in weight_scales]
        axis = 3 if layer.kind == "depthwise_conv2d" else 0  # TFLite's depthwise filter (1, KH, KW, C): per-channel on C
        w = g.tensor(f"l{i}_weights", layer.weights.shape, i8, weight_scales, [0] * channels, layer.weights, axis)
        b = g.tensor(f"l{i}_bias", (channels,), i32, bias_scales, [0] * channels, layer.bias.astype(np.int32))
        zero_point, scale = int(layer.output_offset), out_scale
        if layer.kind == "conv2d":
            out = g.tensor(f"l{i}_conv", (1, *layer.out_shape), i8, [scale], [zero_point])
            opts = fb.Conv2DOptionsT()
            opts.padding = _padding(fb, i, layer)
            opts.strideH, opts.strideW = layer.stride
            opts.dilationHFactor = opts.dilationWFactor = 1
            opts.fusedActivationFunction = _activation(fb, i, layer, zero_point)
            g.op(fb.BuiltinOperator.CONV_2D, [current, w, b], [out], fb.BuiltinOptions.Conv2DOptions, opts)
        elif layer.kind == "depthwise_conv2d":
            out = g.tensor(f"l{i}_dwconv", (1, *layer.out_shape), i8, [scale], [zero_point])
            opts = fb.DepthwiseConv2DOptionsT()
            opts.padding = _padding(fb, i, layer)
            opts.strideH, opts.strideW = layer.stride
            opts.depthMultiplier = 1
            opts.dilationHFactor = opts.dilationWFactor = 1
            opts.fusedActivationFunction = _activation(fb, i, layer, zero_point)
            g.op(fb.BuiltinOperator.DEPTHWISE_CONV_2D, [current, w, b], [out],
                 fb.BuiltinOptions.DepthwiseConv2DOptions, opts)
        else:
            # FULLY_CONNECTED flattens its input in NHWC order, the order of cqtf's weight columns
            out = g.tensor(f"l{i}_fc", (1, channels), i8, [scale], [zero_point])
            opts = fb.FullyConnectedOptionsT()
            opts.fusedActivationFunction = _activation(fb, i, layer, zero_point)
            g.op(fb.BuiltinOperator.FULLY_CONNECTED, [current, w, b], [out],
                 fb.BuiltinOptions.FullyConnectedOptions, opts)
        produced.append((out, scale, zero_point))

    sub = fb.SubGraphT()
    sub.tensors, sub.operators, sub.inputs, sub.outputs = g.tensors, g.operators, [0], [produced[-1][0]]
    sub.name = model.name
    root = fb.ModelT()
    root.version = 3
    root.description = f"cqtf {model.name} ({model.profile}), model hash {model.hash()[:16]}"
    root.buffers, root.subgraphs = g.buffers, [sub]
    root.operatorCodes = []
    for code in g.opcodes:
        oc = fb.OperatorCodeT()
        oc.builtinCode, oc.deprecatedBuiltinCode, oc.version = code, min(code, 127), 1
        root.operatorCodes.append(oc)
    builder = flatbuffers.Builder(1024)
    builder.Finish(root.Pack(builder), file_identifier=b"TFL3")
    return bytes(builder.Output())


def overflow_risks(model: IntModel) -> list[str]:
    """Layers where cqtf and TFLM may part: a conv or dense layer with a left shift whose sum, at worst,
    overflows int32 once shifted. cqtf saturates acc * 2^shift (firmware/src/kernels/cqtf_requant.h);
    TFLM multiplies in int32, which wraps. The oracle's comparison shows whether the data reach it."""
    risks = []
    for i, layer in enumerate(model.layers):
        if layer.weights is None or not (layer.shift > 0).any():
            continue
        worst_input = max(abs(-128 + layer.input_offset), abs(127 + layer.input_offset))
        weights = np.abs(layer.weights.astype(np.int64)).reshape(layer.weights.shape[0], -1)
        if layer.kind == "depthwise_conv2d":  # (1, KH, KW, C): a channel's weights are a column
            weights = np.abs(layer.weights.astype(np.int64)).reshape(-1, layer.weights.shape[-1]).T
        worst = np.abs(layer.bias.astype(np.int64)) + weights.sum(axis=1) * worst_input
        shifted = worst << np.maximum(layer.shift.astype(np.int64), 0)
        channels = np.flatnonzero((layer.shift > 0) & (shifted > INT32_MAX))
        if len(channels):
            risks.append(f"layer {i} ({layer.kind}) channels {channels.tolist()[:8]}: |acc| up to "
                         f"{int(worst[channels[0]])} << {int(layer.shift[channels[0]])} can exceed int32")
    return risks


def layer_output_tensors(model: IntModel) -> list[int]:
    """Index of each layer's output tensor in the exported subgraph (for localizing a difference)."""
    indices, next_index = [], 1
    for layer in model.layers:
        next_index += 0 if layer.weights is None else 2  # weights and bias come first
        indices.append(next_index)
        next_index += 1
    return indices
