"""Another framework's trained float weights, deployed on any cqtf device profile as a converter would.

Frameworks that know only int8 (or only float) leave the user to convert for a fixed-point or
narrow-accumulator device: calibrate the ranges on training data, pick the formats, export. This does
exactly that with cqtf's own export, so the device's integers are right for that arithmetic; only the
training did not see it.
"""
from __future__ import annotations

import torch

from cqtf.model_ir import IntModel
from cqtf.pipeline import dataset_for_profile
from cqtf.profile import get_profile
from cqtf.train.model import build_model
from cqtf.train.trainer import deploy_as_is


def deploy_float_params(params: list[dict], model_name: str, dataset: str, profile: str) -> IntModel:
    data = dataset_for_profile(dataset, profile)
    model = build_model(model_name, data.input_shape, data.num_classes, data.input_quant, get_profile(profile))
    layers = model.quant_layers()
    if len(layers) != len(params):
        raise ValueError(f"{len(params)} trained conv/linear layers for a model with {len(layers)}")
    # A fixed-point device reads its int8 input q as q * 2^-f, not in the data's units (q * scale):
    # the converter folds that ratio into the first layer's weights.
    input_ratio = float(model.data_input_quant.scale) / float(model.input_qparams.scale)
    with torch.no_grad():
        for i, (layer, p) in enumerate(zip(layers, params)):
            layer.inner.weight.copy_(p["weight"] * (input_ratio if i == 0 else 1.0))
            layer.inner.bias.copy_(p["bias"])
    return deploy_as_is(model, data)
