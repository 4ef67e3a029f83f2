"""The same architecture as a cqtf zoo model, in plain torch.nn modules, for other frameworks to train."""
from __future__ import annotations

from torch import nn

from cqtf.train.layers import QuantConv2d, QuantFlatten, QuantLinear, QuantMaxPool2d
from cqtf.train.model import QuantSequential


def plain_layers(model: QuantSequential) -> list[nn.Module]:
    """nn.Conv2d / nn.ReLU / nn.MaxPool2d / nn.Flatten / nn.Linear, in the order of the cqtf layers.

    Conv and linear layers start from the cqtf model's parameters: with the same seed every framework
    starts from the same initial network, so the comparison measures training, not initialization.
    """
    layers: list[nn.Module] = []
    for layer in model.layers:
        if isinstance(layer, QuantConv2d):
            conv = layer.inner
            layers.append(nn.Conv2d(conv.in_channels, conv.out_channels, conv.kernel_size, conv.stride, conv.padding))
            layers[-1].load_state_dict(conv.state_dict())
        elif isinstance(layer, QuantLinear):
            layers.append(nn.Linear(layer.inner.in_features, layer.inner.out_features))
            layers[-1].load_state_dict(layer.inner.state_dict())
        elif isinstance(layer, QuantMaxPool2d):
            layers.append(nn.MaxPool2d(layer.kernel_size, layer.stride, layer.padding))
        elif isinstance(layer, QuantFlatten):
            layers.append(nn.Flatten())
        else:
            raise TypeError(f"no plain equivalent for {type(layer).__name__}")
        if getattr(layer, "relu", False):
            layers.append(nn.ReLU())
    return layers
