"""TensorFlow Model Optimization QAT (extra `.[tf]`): Keras 2 (tf-keras), `quantize_model`, a full-int8
.tflite from TFLiteConverter, run by TFLite Micro's own interpreter, and converted for cqtf's device.

What a TensorFlow user does for an int8 microcontroller: the same architecture in tf.keras (NHWC,
starting from cqtf's initial weights), 40 float epochs, `tfmot.quantization.keras.quantize_model`
(fake quantization: per-channel conv weights, per-tensor dense weights, asymmetric int8 activations),
20 QAT epochs, then TFLiteConverter with int8 input and output. The framework's own int8 deployment
is that .tflite on the tflite-micro interpreter (TFLM's reference kernels). For cqtf's firmware the
.tflite's own integers (OHWI weights, int32 biases, zero points, scales) become an IntModel whose
multipliers are derived from the float32 scales exactly as TFLM derives them at Prepare, so cqtf's
host reference equals TFLM on every output byte (tests/test_compare_tf.py).

The QAT model's input quantizer is pinned to the data set's own int8 quantization (the bytes the
device receives), so the .tflite's input tensor has the data's scale and zero point.
"""
from __future__ import annotations

import os

import numpy as np

from cqtf.compare.framework_model import FrameworkModel
from cqtf.compare.plain import plain_layers
from cqtf.data import Dataset
from cqtf.model_ir import IntLayer, IntModel
from cqtf.tflite_export import tflm_multipliers
from cqtf.train.model import build_model


def available() -> str | None:
    """None when TensorFlow, tf-keras and tfmot import, else why not (a note for reports and test skips)."""
    try:
        _modules()
    except ImportError as e:
        return f"{e.name} is not installed; pip install -e '.[tf]'"
    return None


def _modules():
    """(tensorflow, tf_keras, tfmot); tfmot needs Keras 2, which TF_USE_LEGACY_KERAS selects."""
    os.environ.setdefault("TF_USE_LEGACY_KERAS", "1")
    os.environ.setdefault("TF_CPP_MIN_LOG_LEVEL", "2")
    import tensorflow as tf
    import tensorflow_model_optimization as tfmot
    import tf_keras as keras

    return tf, keras, tfmot


def version() -> str | None:
    try:
        tf, keras, tfmot = _modules()
    except ImportError:
        return None
    return f"tensorflow {tf.__version__}, tf-keras {keras.__version__}, tfmot {tfmot.__version__}"


def keras_model(data: Dataset, model_name: str):
    """The zoo architecture in tf.keras (NHWC), with cqtf's initial weights moved to Keras' layouts."""
    _, keras, _ = _modules()
    from torch import nn

    zoo_model = build_model(model_name, data.input_shape, data.num_classes, data.input_quant)
    plain = plain_layers(zoo_model)
    layers, weights = [keras.Input(data.input_shape)], []
    shape = data.input_shape  # (H, W, C) of the current tensor
    flattened_from = None
    for i, module in enumerate(plain):
        relu = i + 1 < len(plain) and isinstance(plain[i + 1], nn.ReLU)
        if isinstance(module, nn.Conv2d):
            (kh, kw), stride, pad = module.kernel_size, module.stride, module.padding
            if tuple(stride) != (1, 1) or tuple(pad) not in ((kh // 2, kw // 2), (0, 0)):
                raise ValueError(f"conv with stride {stride}, padding {pad} has no Keras SAME/VALID equivalent")
            same = tuple(pad) != (0, 0)
            layers.append(keras.layers.Conv2D(module.out_channels, (kh, kw), padding="same" if same else "valid",
                                              activation="relu" if relu else None))
            weights.append([module.weight.detach().numpy().transpose(2, 3, 1, 0), module.bias.detach().numpy()])
            shape = (shape[0] - (0 if same else kh - 1), shape[1] - (0 if same else kw - 1), module.out_channels)
        elif isinstance(module, nn.MaxPool2d):
            k = module.kernel_size if isinstance(module.kernel_size, tuple) else (module.kernel_size,) * 2
            s = module.stride if isinstance(module.stride, tuple) else (module.stride,) * 2
            layers.append(keras.layers.MaxPool2D(k, s, padding="valid"))
            weights.append(None)
            shape = ((shape[0] - k[0]) // s[0] + 1, (shape[1] - k[1]) // s[1] + 1, shape[2])
        elif isinstance(module, nn.Flatten):
            layers.append(keras.layers.Flatten())
            weights.append(None)
            flattened_from = shape
        elif isinstance(module, nn.Linear):
            w = module.weight.detach().numpy()
            if flattened_from is not None:  # torch's columns are C,H,W; Keras flattens H,W,C
                h, wd, c = flattened_from
                w = w.reshape(-1, c, h, wd).transpose(0, 2, 3, 1).reshape(w.shape[0], -1)
                flattened_from = None
            layers.append(keras.layers.Dense(module.out_features, activation="relu" if relu else None))
            weights.append([w.T, module.bias.detach().numpy()])
        elif isinstance(module, nn.ReLU):
            continue
        else:
            raise TypeError(f"no Keras equivalent for {type(module).__name__}")
    model = keras.Sequential(layers, name=zoo_model.name)
    for layer, w in zip(model.layers, weights):
        if w is not None:
            layer.set_weights(w)
    return zoo_model.name, model


def _fit(model, x, y, epochs: int, lr: float, batch: int):
    _, keras, _ = _modules()
    steps = max(epochs, 1) * -(-len(x) // batch)
    optimizer = keras.optimizers.Adam(keras.optimizers.schedules.CosineDecay(lr, steps))
    model.compile(optimizer, keras.losses.SparseCategoricalCrossentropy(from_logits=True), metrics=["accuracy"])
    if epochs:
        model.fit(x, y, batch_size=batch, epochs=epochs, shuffle=True, verbose=0)


def _predict(model, x) -> np.ndarray:
    return np.argmax(model.predict(x, batch_size=256, verbose=0), axis=1)


def _pin_input_range(qat_model, data: Dataset) -> None:
    """The input quantizer's min/max set to the data's int8 range: TF then derives the data's scale and zero point."""
    quant = data.input_quant
    lo = (-128 - quant.zero_point) * float(quant.scale)
    hi = (127 - quant.zero_point) * float(quant.scale)
    layer = qat_model.layers[0]
    for var in layer.weights:
        if var.name.endswith("_min:0"):
            var.assign(lo)
        elif var.name.endswith("_max:0"):
            var.assign(hi)


def _float_params(qat_model) -> list[dict]:
    """Each conv/dense layer's float weight and bias in torch's layout (OIHW; dense columns C,H,W)."""
    import torch

    params, shape = [], None
    for wrapper in qat_model.layers:
        layer = getattr(wrapper, "layer", wrapper)
        kind = type(layer).__name__
        if kind == "Flatten":
            shape = tuple(layer.input_shape[1:])
        if kind not in ("Conv2D", "Dense"):
            continue
        # the wrapper's trainable variables: tfmot swaps layer.kernel for its fake-quantized tensor
        named = {v.name.split("/")[-1].split(":")[0]: v.numpy() for v in wrapper.trainable_weights}
        kernel, bias = named["kernel"], named["bias"]
        if kind == "Conv2D":
            w = kernel.transpose(3, 2, 0, 1)  # HWIO -> OIHW
        else:
            w = kernel.T
            if shape is not None:  # Keras columns are H,W,C; torch's C,H,W
                h, wd, c = shape
                w = w.reshape(-1, h, wd, c).transpose(0, 3, 1, 2).reshape(w.shape[0], -1)
                shape = None
        params.append({"weight": torch.from_numpy(np.ascontiguousarray(w)), "bias": torch.from_numpy(bias.copy())})
    return params


def tflite_bytes(qat_model) -> bytes:
    """Full-int8 .tflite (int8 input and output) from the QAT model, as the TF documentation does it."""
    tf, _, _ = _modules()
    import warnings

    converter = tf.lite.TFLiteConverter.from_keras_model(qat_model)
    converter.optimizations = [tf.lite.Optimize.DEFAULT]
    converter.inference_input_type = tf.int8
    converter.inference_output_type = tf.int8
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        return bytes(converter.convert())


def run_tflm_float(model_bytes: bytes, x_float: np.ndarray) -> np.ndarray:
    """The framework's own deployment: float inputs quantized with the .tflite's input parameters, then
    TFLM's interpreter; int8 outputs (N, classes)."""
    from cqtf.oracle import run_tflm

    graph = TfliteGraph(model_bytes)
    scale, zp = graph.quantization(graph.input)
    q = np.clip(np.round(x_float / scale) + zp, -128, 127).astype(np.int8)
    return run_tflm(model_bytes, q)


def train_tf_qat(data: Dataset, model_name: str, float_epochs: int = 40, qat_epochs: int = 20,
                 seed: int = 0, batch: int = 32) -> FrameworkModel:
    """Float training, then tfmot QAT; training-time figure: the fake-quantized Keras model; own int8: TFLM."""
    tf, keras, tfmot = _modules()
    keras.utils.set_random_seed(seed)
    x_train, x_test = data.input_quant.dequantize(data.x_train), data.input_quant.dequantize(data.x_test)
    name, model = keras_model(data, model_name)
    _fit(model, x_train, data.y_train, float_epochs, 3e-3, batch)
    qat = tfmot.quantization.keras.quantize_model(model)
    _pin_input_range(qat, data)
    _fit(qat, x_train, data.y_train, qat_epochs, 5e-4, batch)
    _pin_input_range(qat, data)
    predictions = _predict(qat, x_test)
    model_bytes = tflite_bytes(qat)
    tflm_outputs = run_tflm_float(model_bytes, x_test)
    int8_accuracy = float((np.argmax(tflm_outputs.astype(np.int32), axis=1) == data.y_test).mean())
    framework = FrameworkModel("TF-MOT QAT", float((predictions == data.y_test).mean()), predictions,
                               to_int_model(model_bytes, name, data.num_classes), int8_accuracy, _float_params(qat))
    framework.tflite = model_bytes  # the framework's own artifact, for checks against TFLM
    return framework


class TfliteGraph:
    """The first subgraph of a .tflite, read with the schema the tflite-micro package ships."""

    def __init__(self, model_bytes: bytes):
        from cqtf.tflite_export import schema

        self.fb = fb = schema()
        self.model = fb.ModelT.InitFromPackedBuf(model_bytes, 0)
        if len(self.model.subgraphs) != 1:
            raise ValueError(f"{len(self.model.subgraphs)} subgraphs; one expected")
        self.graph = self.model.subgraphs[0]
        (self.input,), (self.output,) = self.graph.inputs, self.graph.outputs
        codes = self.model.operatorCodes
        self.ops = [(max(codes[op.opcodeIndex].builtinCode, codes[op.opcodeIndex].deprecatedBuiltinCode), op)
                    for op in self.graph.operators]

    def tensor(self, index: int):
        return self.graph.tensors[index]

    def shape(self, index: int) -> tuple[int, ...]:
        return tuple(int(v) for v in self.tensor(index).shape)

    def quantization(self, index: int) -> tuple[float, int]:
        q = self.tensor(index).quantization
        if len(q.scale) != 1:
            raise ValueError(f"tensor {index} has {len(q.scale)} scales; one expected for an activation")
        return float(q.scale[0]), int(q.zeroPoint[0])

    def data(self, index: int, dtype) -> np.ndarray:
        t = self.tensor(index)
        raw = np.asarray(self.model.buffers[t.buffer].data, dtype=np.uint8)
        return raw.view(np.dtype(dtype).newbyteorder("<")).astype(dtype).reshape(self.shape(index))


def _pad(fb, padding: int, size: int, k: int, s: int, out: int) -> int:
    """(top or left) padding of TFLite's SAME / VALID."""
    if padding == fb.Padding.VALID:
        return 0
    return max((out - 1) * s + k - size, 0) // 2


def _act_range(fb, activation: int, zp: int, what: str) -> tuple[int, int]:
    if activation == fb.ActivationFunctionType.NONE:
        return -128, 127
    if activation == fb.ActivationFunctionType.RELU:
        return max(-128, zp), 127
    raise ValueError(f"{what}: fused activation {activation} is not deployable (NONE or RELU)")


def _weighted_layer(graph: TfliteGraph, kind: str, op, in_shape, out_shape, geometry, activation) -> IntLayer:
    fb = graph.fb
    x, w, b = op.inputs
    in_scale, in_zp = graph.quantization(x)
    out_scale, out_zp = graph.quantization(op.outputs[0])
    wq = graph.tensor(w).quantization
    if any(int(z) != 0 for z in wq.zeroPoint):
        raise ValueError(f"{kind} weights with zero points {list(wq.zeroPoint)[:4]}: TFLite int8 weights are symmetric")
    weight_scales = [float(v) for v in wq.scale]
    channels = out_shape[2]
    pairs = tflm_multipliers(kind, in_scale, weight_scales, out_scale)  # TFLM's Prepare, per tensor or channel
    if len(pairs) == 1:
        pairs, weight_scales = pairs * channels, weight_scales * channels
    act_min, act_max = _act_range(fb, activation, out_zp, kind)
    bias = graph.data(b, np.int32) if b >= 0 else np.zeros(channels, np.int32)
    return IntLayer(kind, tuple(in_shape), tuple(out_shape), **geometry, input_offset=-in_zp, output_offset=out_zp,
                    act_min=act_min, act_max=act_max, weights=np.ascontiguousarray(graph.data(w, np.int8)),
                    bias=bias, multiplier=np.array([m for m, _ in pairs], np.int32),
                    shift=np.array([s for _, s in pairs], np.int32),
                    scales={"input": in_scale, "weights": weight_scales, "output": out_scale})


def to_int_model(model_bytes: bytes, name: str, num_classes: int) -> IntModel:
    """A full-int8 .tflite (CONV_2D, MAX_POOL_2D, RESHAPE, FULLY_CONNECTED) as the device's layer table.

    Layouts already agree: TFLite conv weights are OHWI, cqtf's (O, KH, KW, I); FULLY_CONNECTED reads its
    input flattened in NHWC order, cqtf's column order; RESHAPE (Flatten) moves no data."""
    graph = TfliteGraph(model_bytes)
    fb, op_names = graph.fb, graph.fb.BuiltinOperator
    shape = graph.shape(graph.input)[1:]
    if len(shape) != 3:
        raise ValueError(f"input of shape {graph.shape(graph.input)}; (1, H, W, C) expected")
    input_scale, input_zp = graph.quantization(graph.input)
    layers: list[IntLayer] = []
    current = graph.input
    for code, op in graph.ops:
        if op.inputs[0] != current:
            raise ValueError(f"operator {code} does not read the previous operator's output: not a chain")
        out_full = graph.shape(op.outputs[0])
        if code == op_names.CONV_2D:
            o = op.builtinOptions
            if (o.dilationHFactor, o.dilationWFactor) != (1, 1):
                raise ValueError("dilated convolutions are not deployable")
            out = out_full[1:]
            kh, kw = graph.shape(op.inputs[1])[1:3]
            pad = (_pad(fb, o.padding, shape[0], kh, o.strideH, out[0]), _pad(fb, o.padding, shape[1], kw, o.strideW, out[1]))
            geometry = dict(kernel=(kh, kw), stride=(o.strideH, o.strideW), pad=pad)
            layers.append(_weighted_layer(graph, "conv2d", op, shape, out, geometry, o.fusedActivationFunction))
        elif code == op_names.MAX_POOL_2D:
            o = op.builtinOptions
            out = out_full[1:]
            in_zp, out_zp = graph.quantization(op.inputs[0])[1], graph.quantization(op.outputs[0])[1]
            if graph.quantization(op.inputs[0]) != graph.quantization(op.outputs[0]):
                raise ValueError("MAX_POOL_2D changes the quantization, which the device's pooling does not")
            k, s = (o.filterHeight, o.filterWidth), (o.strideH, o.strideW)
            pad = (_pad(fb, o.padding, shape[0], k[0], s[0], out[0]), _pad(fb, o.padding, shape[1], k[1], s[1], out[1]))
            act_min, act_max = _act_range(fb, o.fusedActivationFunction, out_zp, "MAX_POOL_2D")
            layers.append(IntLayer("maxpool2d", tuple(shape), tuple(out), k, s, pad, input_offset=-in_zp,
                                   output_offset=out_zp, act_min=act_min, act_max=act_max))
        elif code == op_names.RESHAPE:
            if graph.quantization(op.inputs[0]) != graph.quantization(op.outputs[0]):
                raise ValueError("RESHAPE changes the quantization")
            current = op.outputs[0]
            continue  # the device's tensors are flat NHWC already
        elif code == op_names.FULLY_CONNECTED:
            out = (1, 1, out_full[-1])
            layers.append(_weighted_layer(graph, "fully_connected", op, shape, out, {},
                                          op.builtinOptions.fusedActivationFunction))
        else:
            raise ValueError(f"TFLite operator {code} is not deployable on cqtf's firmware")
        shape, current = layers[-1].out_shape, op.outputs[0]
    if current != graph.output:
        raise ValueError("the last operator does not write the graph's output")
    out_scale, out_zp = graph.quantization(graph.output)
    return IntModel(name=name, profile="int8", input_shape=tuple(graph.shape(graph.input)[1:]),
                    input_scale=input_scale, input_zero_point=input_zp, output_scale=out_scale,
                    output_zero_point=out_zp, num_classes=num_classes, layers=layers)
