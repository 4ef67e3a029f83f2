"""Brevitas quantization-aware training (PyPI `brevitas`, extra `.[brevitas]`), deployed on cqtf's device.

What a Brevitas user does for an int8 microcontroller: the same float network (the same 40 float
epochs as the torch.ao rows, from cqtf's initial weights), then the layers swapped for Brevitas'
quantized ones, as close to TFLite Micro's int8 as Brevitas' quantizers allow:
  - weights: `Int8WeightPerChannelFloat` (symmetric, per output channel, narrow range [-127, 127], float scale),
  - biases: `Int32Bias` (int32, scale = input scale x weight scale, as TFLite),
  - activations: `Uint8ActPerTensorFloat` after each ReLU (an unsigned byte, zero point 0, which is int8
    with zero point -128), `Int8ActPerTensorFloat` for the logits (signed, zero point 0),
  - the input: the data set's own int8 quantization, fixed (an IntQuantTensor of the device's bytes).
Brevitas computes its quantized forward in float (fake quantization) and rounds half to even with a
float scale; the device requantizes with a Q31 multiplier and TFLM's double rounding. So the
converted model has exactly Brevitas' integer weights, biases and accumulators, and its outputs may
differ from Brevitas' by one LSB where the real requantized value lies within about 2^-shift of a
rounding tie (tests/test_compare_brevitas.py checks both statements).
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
from torch import nn

from cqtf.compare.framework_model import FrameworkModel
from cqtf.compare.torch_ao import _float_inputs, _predict, _prepared, _train
from cqtf.data import Dataset
from cqtf.fixedpoint import quantize_multiplier
from cqtf.model_ir import IntLayer, IntModel

UINT8_TO_INT8 = 128  # q_int8 = q_uint8 - 128, zero points alike; scales unchanged


def available() -> str | None:
    """None when Brevitas can be imported, else why not (a note for reports and test skips)."""
    try:
        import brevitas  # noqa: F401
    except ImportError as e:
        return f"brevitas is not installed ({e.name}); pip install -e '.[brevitas]'"
    return None


def version() -> str | None:
    try:
        import brevitas
    except ImportError:
        return None
    return brevitas.__version__


class BrevitasNetwork(nn.Module):
    """The zoo architecture in Brevitas layers; input: the dequantized int8 device inputs, NCHW."""

    def __init__(self, plain: list[nn.Module], data: Dataset):
        super().__init__()
        import brevitas.nn as qnn
        from brevitas.quant import Int8ActPerTensorFloat, Int8WeightPerChannelFloat, Int32Bias, Uint8ActPerTensorFloat

        self.input_scale = torch.tensor(float(data.input_quant.scale), dtype=torch.float32)
        self.input_zero_point = torch.tensor(float(data.input_quant.zero_point))
        quant = dict(weight_quant=Int8WeightPerChannelFloat, bias_quant=Int32Bias, return_quant_tensor=False)
        body: list[nn.Module] = []
        for i, module in enumerate(plain):
            if isinstance(module, nn.Conv2d):
                layer = qnn.QuantConv2d(module.in_channels, module.out_channels, module.kernel_size, module.stride,
                                        module.padding, **quant)
            elif isinstance(module, nn.Linear):
                layer = qnn.QuantLinear(module.in_features, module.out_features, True, **quant)
            elif isinstance(module, nn.ReLU):
                body.append(qnn.QuantReLU(act_quant=Uint8ActPerTensorFloat, return_quant_tensor=True))
                continue
            else:  # max pooling and flatten work on Brevitas' quantized tensors as they are
                body.append(module)
                continue
            layer.weight.data.copy_(module.weight.data)
            layer.bias.data.copy_(module.bias.data)
            body.append(layer)
            if not (i + 1 < len(plain) and isinstance(plain[i + 1], nn.ReLU)):  # no ReLU: signed int8 output
                body.append(qnn.QuantIdentity(act_quant=Int8ActPerTensorFloat, return_quant_tensor=True))
        self.body = nn.Sequential(*body)

    def quant_input(self, x: torch.Tensor):
        """The device's int8 input bytes as Brevitas' quantized tensor: value = (q - zero point) * scale."""
        from brevitas.quant_tensor import IntQuantTensor

        return IntQuantTensor(x, self.input_scale, self.input_zero_point, torch.tensor(8.0), True, self.training)

    def forward_quant(self, x: torch.Tensor):
        """The output as Brevitas' quantized tensor (its `.int()` are the int8 logits)."""
        return self.body(self.quant_input(x))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.forward_quant(x).value


def _quiet():
    """Brevitas warns on every forward that it cannot give an accumulator with a zero point a zero point
    (the int8 input has one); the layer's output quantizer makes the quantized tensor instead."""
    context = warnings.catch_warnings()
    context.__enter__()
    warnings.filterwarnings("ignore", message="Computing zero point of output accumulator")
    return context


def train_brevitas_qat(data: Dataset, model_name: str, float_epochs: int = 40, qat_epochs: int = 20,
                       seed: int = 0, batch: int = 32) -> FrameworkModel:
    """Float training (the torch.ao rows' network), then Brevitas int8 QAT; the training-time figure is
    Brevitas' quantized network in eval mode, which is also its own int8 model on the host."""
    x_train, y_train = _float_inputs(data, data.x_train), torch.from_numpy(data.y_train)
    x_test = _float_inputs(data, data.x_test)
    name, float_network = _prepared(data, model_name, seed, x_train, y_train, float_epochs, batch)
    context = _quiet()
    try:
        network = BrevitasNetwork(list(float_network.body), data)
        _train(network, x_train, y_train, qat_epochs, 5e-4, batch, seed + 1)
        predictions = _predict(network, x_test)
        int_model = to_int_model(network, name, data)
    finally:
        context.__exit__(None, None, None)
    params = [{"weight": m.weight.detach().clone(), "bias": m.bias.detach().clone()}
              for m in network.body if _is_weighted(m)]
    accuracy = float((predictions == data.y_test).mean())
    return FrameworkModel("Brevitas QAT", accuracy, predictions, int_model, accuracy, params)


def _is_weighted(module: nn.Module) -> bool:
    import brevitas.nn as qnn

    return isinstance(module, (qnn.QuantConv2d, qnn.QuantLinear))


def layer_io(network: BrevitasNetwork, x: torch.Tensor) -> list[tuple[nn.Module, object, object]]:
    """(module, quantized input, quantized output) of each body module, for a batch x (eval mode)."""
    records = []
    hooks = [m.register_forward_hook(lambda m, args, out: records.append((m, args[0], out))) for m in network.body]
    network.eval()
    try:
        with torch.no_grad():
            network.forward_quant(x)
    finally:
        for h in hooks:
            h.remove()
    return records


def _zero_point_int8(qt) -> int:
    """Brevitas' zero point (value = (q - zp) * scale) in int8 terms; unsigned bytes shift by 128."""
    zp = int(torch.as_tensor(qt.zero_point).reshape(-1)[0].round())
    return zp if bool(qt.signed) else zp - UINT8_TO_INT8


def integer_parameters(module: nn.Module, quant_input) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Brevitas' own int8 weights (O, ...), their per-channel scales and its int32 biases."""
    weight = module.quant_weight(quant_input)
    bias = module.bias_quant(module.bias, quant_input, weight)
    scales = weight.scale.detach().reshape(-1).double().numpy()
    return (weight.int().detach().numpy().astype(np.int8), scales,
            bias.int().detach().numpy().astype(np.int64).astype(np.int32))


def to_int_model(network: BrevitasNetwork, name: str, data: Dataset) -> IntModel:
    """Brevitas' integers as the device's layer table (NHWC, int8 activations, TFLM requantization)."""
    x = _float_inputs(data, data.x_train[:2])
    records = layer_io(network, x)
    shape = data.input_shape
    scale, zp = float(network.input_scale), int(network.input_zero_point)
    layers: list[IntLayer] = []
    flattened_from = None
    for k, (module, quant_input, _) in enumerate(records):
        if _is_weighted(module):
            weights, w_scales, bias = integer_parameters(module, quant_input)
            activation = records[k + 1][2]  # the QuantReLU or QuantIdentity after it
            relu = type(records[k + 1][0]).__name__ == "QuantReLU"
            out_scale = float(torch.as_tensor(activation.scale).reshape(-1)[0])
            out_zp = _zero_point_int8(activation)
            if weights.ndim == 4:
                (kh, kw), (sh, sw), (ph, pw) = module.kernel_size, module.stride, module.padding
                out = ((shape[0] + 2 * ph - kh) // sh + 1, (shape[1] + 2 * pw - kw) // sw + 1, weights.shape[0])
                kind, geometry = "conv2d", dict(kernel=(kh, kw), stride=(sh, sw), pad=(ph, pw))
                weights = weights.transpose(0, 2, 3, 1)  # (O, I, KH, KW) -> (O, KH, KW, I)
            else:
                if flattened_from is not None:  # PyTorch flattens C,H,W; the device holds H,W,C
                    h, w, c = flattened_from
                    weights = weights.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weights.shape[0], -1)
                    flattened_from = None
                out, kind, geometry = (1, 1, weights.shape[0]), "fully_connected", {}
            pairs = [quantize_multiplier(scale * s / out_scale) for s in w_scales]
            layers.append(IntLayer(
                kind, tuple(shape), out, **geometry, input_offset=-zp, output_offset=out_zp,
                act_min=max(out_zp, -128) if relu else -128, act_max=127, weights=np.ascontiguousarray(weights),
                bias=bias, multiplier=np.array([m for m, _ in pairs], np.int32),
                shift=np.array([s for _, s in pairs], np.int32),
                scales={"input": scale, "weights": w_scales.tolist(), "output": out_scale}))
            shape, scale, zp = out, out_scale, out_zp
        elif isinstance(module, nn.MaxPool2d):
            from torch.nn.modules.utils import _pair

            kk, s, p = (_pair(v) for v in (module.kernel_size, module.stride, module.padding))
            out = ((shape[0] + 2 * p[0] - kk[0]) // s[0] + 1, (shape[1] + 2 * p[1] - kk[1]) // s[1] + 1, shape[2])
            layers.append(IntLayer("maxpool2d", tuple(shape), out, kk, s, p, input_offset=-zp, output_offset=zp))
            shape = out
        elif isinstance(module, nn.Flatten):
            flattened_from = shape
        elif type(module).__name__ in ("QuantReLU", "QuantIdentity"):
            continue  # folded into the layer before (its output quantization)
        else:
            raise TypeError(f"cannot deploy Brevitas module {type(module).__name__}")
    return IntModel(name=name, profile="int8", input_shape=tuple(data.input_shape),
                    input_scale=float(data.input_quant.scale), input_zero_point=data.input_quant.zero_point,
                    output_scale=scale, output_zero_point=zp, num_classes=data.num_classes, layers=layers)
