"""PyTorch's own int8 models, converted to the device's layer table for the framework comparison."""
import warnings

import numpy as np
import pytest
import torch

from cqtf import reference
from cqtf.compare import torch_ao
from cqtf.data import load_dataset


@pytest.fixture(scope="module")
def converted_qat():
    """A quickly trained QAT model: PyTorch's converted network and the IntModel made from it."""
    data = load_dataset("digits")
    captured = {}
    original = torch_ao.to_int_model

    def capture(converted, name, dataset):
        captured["network"] = converted
        return original(converted, name, dataset)

    torch_ao.to_int_model = capture
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            framework = torch_ao.train_torch_ao_qat(data, "digits_cnn", float_epochs=2, qat_epochs=1)
    finally:
        torch_ao.to_int_model = original
    return data, captured["network"], framework


def _torch_layer_outputs(network, x: torch.Tensor) -> list[np.ndarray]:
    """PyTorch's int8 tensor after each body module, shifted to int8 and NHWC."""
    outputs = []
    with torch.no_grad():
        q = network.quant(x)
        for module in network.body:
            q = module(q)
            if isinstance(module, torch.nn.Identity):
                continue
            values = q.int_repr().numpy().astype(np.int64) - torch_ao.UINT8_TO_INT8
            outputs.append(values.transpose(0, 2, 3, 1) if values.ndim == 4 else values)
    return outputs


def test_the_device_receives_the_bytes_pytorch_quantizes(converted_qat):
    data, network, _ = converted_qat
    with torch.no_grad():
        q = network.quant(torch_ao._float_inputs(data, data.x_test)).int_repr().numpy().astype(np.int64)
    assert np.array_equal(q.transpose(0, 2, 3, 1) - 128, data.x_test)


def test_each_converted_layer_matches_pytorch_to_one_lsb(converted_qat):
    """Each layer fed PyTorch's own input: outputs differ only where the two requantizations round apart."""
    data, network, framework = converted_qat
    torch_layers = [o for o in _torch_layer_outputs(network, torch_ao._float_inputs(data, data.x_test))
                    if o.ndim != 2 or o.shape[1] == framework.int_model.output_size]  # flatten is no device layer
    assert len(torch_layers) == len(framework.int_model.layers)
    layer_input = data.x_test
    for layer, torch_out in zip(framework.int_model.layers, torch_layers):
        host_out = reference.KERNELS[layer.kind](layer_input, layer).reshape(torch_out.shape).astype(np.int64)
        assert np.abs(torch_out - host_out).max() <= 1, layer.kind  # a mapping error is off by far more
        assert (torch_out != host_out).mean() < 0.05, layer.kind
        layer_input = torch_out.reshape((len(torch_out),) + tuple(layer.out_shape)).astype(np.int8)


def test_converted_model_predicts_like_pytorch(converted_qat):
    data, _, framework = converted_qat
    host = reference.predict(reference.run(framework.int_model, data.x_test))
    host_accuracy = float((host == data.y_test).mean())
    assert abs(host_accuracy - framework.framework_int8_accuracy) <= 0.02
    assert host_accuracy > 0.5


def test_every_framework_starts_from_cqtfs_initial_network():
    from cqtf.compare.plain import plain_layers
    from cqtf.train.model import build_model

    data = load_dataset("digits")
    model = build_model("digits_cnn", data.input_shape, data.num_classes, data.input_quant)
    plain = plain_layers(model)
    cqtf_params = [p for layer in model.layers if hasattr(layer, "inner") for p in layer.inner.parameters()]
    plain_params = [p for module in plain for p in module.parameters()]
    assert len(cqtf_params) == len(plain_params) == 6
    assert all(torch.equal(a, b) for a, b in zip(cqtf_params, plain_params))
    plain[0].weight.data.add_(1.0)  # a copy, not shared storage: training one leaves the other alone
    assert not torch.equal(plain[0].weight, model.layers[0].inner.weight)


def test_float_weights_deploy_on_a_fixed_point_device_without_losing_the_function(converted_qat):
    """With an exact 32-bit accumulator, fixed8 keeps the network's accuracy; the input ratio is folded in."""
    from cqtf.compare.to_profile import deploy_float_params
    from cqtf.pipeline import evaluation_split

    _, _, framework = converted_qat
    model = deploy_float_params(framework.float_params, "digits_cnn", "digits", "fixed8")
    assert model.profile == "fixed8"
    x_test, y_test = evaluation_split(model, "digits")
    accuracy = float((reference.predict(reference.run(model, x_test)) == y_test).mean())
    assert accuracy >= framework.training_accuracy - 0.05, (accuracy, framework.training_accuracy)


def test_float_weights_deploy_on_pot4_as_power_of_two_weights(converted_qat):
    """pot4: the converter's weights are all 0 or +-2^e (e <= 6) and the network still classifies."""
    from cqtf import pow2
    from cqtf.compare.to_profile import deploy_float_params
    from cqtf.pipeline import evaluation_split

    _, _, framework = converted_qat
    model = deploy_float_params(framework.float_params, "digits_cnn", "digits", "pot4")
    assert model.profile == "pot4"
    weights = [layer.weights for layer in model.layers if layer.weights is not None]
    assert len(weights) == 3 and all(pow2.is_power_of_two(w, 6).all() for w in weights)
    x_test, y_test = evaluation_split(model, "digits")
    accuracy = float((reference.predict(reference.run(model, x_test)) == y_test).mean())
    assert accuracy >= framework.training_accuracy - 0.10, (accuracy, framework.training_accuracy)
