"""PyTorch's own quantization (torch.ao eager mode, x86 default configs): QAT and post-training static.

This is what a PyTorch user does today: train in float, fuse conv+ReLU, `prepare_qat` (fake
quantization with observers), fine-tune, `convert` to PyTorch's int8 modules. The framework's
training-time accuracy is the fake-quantized network's; its own predictions are the converted
int8 model's (PyTorch's x86 kernels). For the device, the converted model's int8 weights, scales and
zero points become an IntModel (uint8 activations shift by 128 to int8 with the same scale), and the
device requantizes with its own arithmetic, as it would after any converter.
"""
from __future__ import annotations

import warnings

import numpy as np
import torch
import torch.ao.nn.intrinsic.quantized as nniq
import torch.ao.nn.quantized as nnq
import torch.ao.quantization as tq
import torch.nn.functional as F
from torch import nn
from torch.nn.modules.utils import _pair

from cqtf.compare.framework_model import FrameworkModel
from cqtf.compare.plain import plain_layers
from cqtf.data import Dataset
from cqtf.fixedpoint import quantize_multiplier
from cqtf.model_ir import IntLayer, IntModel
from cqtf.train.model import build_model

ENGINE = "x86"
UINT8_TO_INT8 = 128  # q_int8 = q_uint8 - 128, zero points alike; scales unchanged


class _Network(nn.Module):
    def __init__(self, layers: list[nn.Module]):
        super().__init__()
        self.quant = tq.QuantStub()
        self.body = nn.Sequential(*layers)
        self.dequant = tq.DeQuantStub()

    def forward(self, x):
        return self.dequant(self.body(self.quant(x)))


def _float_inputs(data: Dataset, x: np.ndarray) -> torch.Tensor:
    """The int8 device inputs, dequantized, NCHW: the values every framework trains on."""
    quant = data.input_quant
    return torch.from_numpy(quant.dequantize(x)).permute(0, 3, 1, 2).contiguous()


def _fuse_pairs(network: _Network) -> list[list[str]]:
    body = list(network.body)
    return [[f"body.{i}", f"body.{i + 1}"] for i in range(len(body) - 1)
            if isinstance(body[i], (nn.Conv2d, nn.Linear)) and isinstance(body[i + 1], nn.ReLU)]


def _input_qconfig(data: Dataset) -> tq.QConfig:
    """The input's quantization is the data set's (the device receives those int8 bytes): fixed, not observed."""
    observer = tq.FixedQParamsObserver.with_args(
        scale=float(data.input_quant.scale), zero_point=data.input_quant.zero_point + UINT8_TO_INT8,
        dtype=torch.quint8, quant_min=0, quant_max=255)
    fake = tq.FixedQParamsFakeQuantize.with_args(observer=observer)
    return tq.QConfig(activation=fake, weight=tq.default_weight_fake_quant)


def _train(network: nn.Module, x: torch.Tensor, y: torch.Tensor, epochs: int, lr: float, batch: int, seed: int):
    optimizer = torch.optim.Adam(network.parameters(), lr=lr, weight_decay=1e-4)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    generator = torch.Generator().manual_seed(seed)
    for _ in range(epochs):
        network.train()
        order = torch.randperm(len(x), generator=generator)
        for start in range(0, len(x), batch):
            idx = order[start: start + batch]
            loss = F.cross_entropy(network(x[idx]), y[idx])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
        schedule.step()


def _predict(network: nn.Module, x: torch.Tensor) -> np.ndarray:
    network.eval()
    with torch.no_grad():
        return network(x).argmax(1).numpy()


def _prepared(data: Dataset, model_name: str, seed: int, x_train, y_train, float_epochs: int, batch: int):
    """The zoo architecture in plain modules, trained in float, fused, with the x86 default qconfig."""
    torch.manual_seed(seed)
    zoo_model = build_model(model_name, data.input_shape, data.num_classes, data.input_quant)
    network = _Network(plain_layers(zoo_model))
    _train(network, x_train, y_train, float_epochs, 3e-3, batch, seed)
    return zoo_model.name, network


def _fuse_and_configure(network: _Network, data: Dataset, qat: bool) -> _Network:
    network.train(qat)
    fuse = tq.fuse_modules_qat if qat else tq.fuse_modules
    network = fuse(network, _fuse_pairs(network))
    network.qconfig = (tq.get_default_qat_qconfig if qat else tq.get_default_qconfig)(ENGINE)
    network.quant.qconfig = _input_qconfig(data)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # torch.ao's deprecation notice for eager mode
        (tq.prepare_qat if qat else tq.prepare)(network, inplace=True)
    return network


def _float_params(network: nn.Module) -> list[dict]:
    """Weight and bias of each conv/linear in order (QAT modules keep their float weights too)."""
    return [{"weight": m.weight.detach().clone(), "bias": m.bias.detach().clone()}
            for m in network.body.modules() if isinstance(m, (nn.Conv2d, nn.Linear))]


def _converted(network: _Network, name: str, data: Dataset, x_test) -> tuple[float, IntModel]:
    torch.backends.quantized.engine = ENGINE
    network.eval()
    converted = tq.convert(network)
    accuracy = float((_predict(converted, x_test) == data.y_test).mean())
    return accuracy, to_int_model(converted, name, data)


def train_torch_ao_qat(data: Dataset, model_name: str, float_epochs: int = 40, qat_epochs: int = 20,
                       seed: int = 0, batch: int = 32) -> FrameworkModel:
    """Float training, then QAT fine-tuning; the training-time figure is the fake-quantized network's."""
    x_train, y_train = _float_inputs(data, data.x_train), torch.from_numpy(data.y_train)
    x_test = _float_inputs(data, data.x_test)
    name, network = _prepared(data, model_name, seed, x_train, y_train, float_epochs, batch)
    network = _fuse_and_configure(network, data, qat=True)
    _train(network, x_train, y_train, qat_epochs, 5e-4, batch, seed + 1)
    predictions = _predict(network, x_test)
    params = _float_params(network)
    int8_accuracy, int_model = _converted(network, name, data, x_test)
    return FrameworkModel("torch.ao QAT", float((predictions == data.y_test).mean()), predictions, int_model,
                          int8_accuracy, params)


def train_torch_ao_ptq(data: Dataset, model_name: str, float_epochs: int = 40, seed: int = 0,
                       batch: int = 32, calibration_samples: int = 512) -> FrameworkModel:
    """Float training, then post-training static quantization; the training-time figure is the float one."""
    x_train, y_train = _float_inputs(data, data.x_train), torch.from_numpy(data.y_train)
    x_test = _float_inputs(data, data.x_test)
    name, network = _prepared(data, model_name, seed, x_train, y_train, float_epochs, batch)
    predictions = _predict(network, x_test)
    params = _float_params(network)
    network = _fuse_and_configure(network, data, qat=False)
    with torch.no_grad():
        network(x_train[:calibration_samples])  # observers see the calibration set
    int8_accuracy, int_model = _converted(network, name, data, x_test)
    return FrameworkModel("float + torch.ao PTQ", float((predictions == data.y_test).mean()), predictions,
                          int_model, int8_accuracy, params)


def _weights_and_scales(module) -> tuple[np.ndarray, np.ndarray]:
    w = module.weight()
    if w.qscheme() in (torch.per_channel_symmetric, torch.per_channel_affine):
        scales = w.q_per_channel_scales().numpy().astype(np.float64)
    else:
        scales = np.full(w.shape[0], w.q_scale(), dtype=np.float64)
    return w.int_repr().numpy().astype(np.int8), scales


def _requant_layer(kind, module, in_shape, out_shape, in_scale, in_zp, relu, weights, scales, geometry) -> IntLayer:
    out_scale, out_zp = float(module.scale), int(module.zero_point) - UINT8_TO_INT8
    bias = module.bias()
    bias = np.zeros(len(scales)) if bias is None else bias.detach().numpy().astype(np.float64)
    bias_q = np.clip(np.round(bias / (in_scale * scales)), -(2**31), 2**31 - 1).astype(np.int32)
    pairs = [quantize_multiplier(in_scale * s / out_scale) for s in scales]
    return IntLayer(
        kind, in_shape, out_shape, **geometry, input_offset=-in_zp, output_offset=out_zp,
        act_min=max(out_zp, -128) if relu else -128, act_max=127, weights=np.ascontiguousarray(weights),
        bias=bias_q, multiplier=np.array([m for m, _ in pairs], np.int32),
        shift=np.array([s for _, s in pairs], np.int32),
        scales={"input": in_scale, "weights": scales.tolist(), "output": out_scale})


def to_int_model(converted: _Network, name: str, data: Dataset) -> IntModel:
    """PyTorch's int8 modules as the device's layer table (NHWC, int8 activations)."""
    shape = data.input_shape
    scale, zp = float(converted.quant.scale), int(converted.quant.zero_point) - UINT8_TO_INT8
    flattened_from = None
    layers: list[IntLayer] = []
    for module in converted.body:
        if isinstance(module, (nniq.ConvReLU2d, nnq.Conv2d)):
            weights, scales = _weights_and_scales(module)
            (kh, kw), (sh, sw), (ph, pw) = module.kernel_size, module.stride, module.padding
            out = ((shape[0] + 2 * ph - kh) // sh + 1, (shape[1] + 2 * pw - kw) // sw + 1, weights.shape[0])
            geometry = dict(kernel=(kh, kw), stride=(sh, sw), pad=(ph, pw))
            layers.append(_requant_layer("conv2d", module, shape, out, scale, zp, isinstance(module, nniq.ConvReLU2d),
                                         weights.transpose(0, 2, 3, 1), scales, geometry))
        elif isinstance(module, (nniq.LinearReLU, nnq.Linear)):
            weights, scales = _weights_and_scales(module)
            if flattened_from is not None:  # PyTorch flattens C,H,W; the device holds H,W,C
                h, w, c = flattened_from
                weights = weights.reshape(-1, c, h, w).transpose(0, 2, 3, 1).reshape(weights.shape[0], -1)
                flattened_from = None
            out = (1, 1, weights.shape[0])
            layers.append(_requant_layer("fully_connected", module, shape, out, scale, zp,
                                         isinstance(module, nniq.LinearReLU), weights, scales, {}))
        elif isinstance(module, nn.MaxPool2d):
            k, s, p = (_pair(v) for v in (module.kernel_size, module.stride, module.padding))
            out = ((shape[0] + 2 * p[0] - k[0]) // s[0] + 1, (shape[1] + 2 * p[1] - k[1]) // s[1] + 1, shape[2])
            layers.append(IntLayer("maxpool2d", shape, out, k, s, p, input_offset=-zp, output_offset=zp))
        elif isinstance(module, nn.Flatten):
            flattened_from = shape
            continue
        elif isinstance(module, nn.Identity):  # a ReLU fused into the layer before
            continue
        else:
            raise TypeError(f"cannot deploy PyTorch module {type(module).__name__}")
        shape = layers[-1].out_shape
        if layers[-1].kind != "maxpool2d":
            scale, zp = float(module.scale), int(module.zero_point) - UINT8_TO_INT8
    return IntModel(name=name, profile="int8", input_shape=tuple(data.input_shape),
                    input_scale=float(data.input_quant.scale), input_zero_point=data.input_quant.zero_point,
                    output_scale=scale, output_zero_point=zp, num_classes=data.num_classes, layers=layers)
