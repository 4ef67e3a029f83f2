"""1-D models: MNIST-1D made in code, Conv1d/MaxPool1d as height-1 conv2d/maxpool2d, exact against the reference."""
import numpy as np
import pytest
import torch

from cqtf import reference
from cqtf.data import InputQuant, load_dataset
from cqtf.errors import DataError
from cqtf.train.export import export
from cqtf.train.layers import QuantConv1d, QuantFlatten, QuantLinear, QuantMaxPool1d
from cqtf.train.model import QuantSequential, build_model, logits_int8
from random_models import calibrated_quantized, random_inputs


def test_mnist1d_is_generated_in_code_with_a_fixed_split():
    first, second = load_dataset("mnist1d"), load_dataset("mnist1d")
    assert first.x_train.shape == (4000, 1, 40, 1) and first.x_test.shape == (1000, 1, 40, 1)
    assert first.x_train.dtype == np.int8 and first.num_classes == 10
    assert np.array_equal(first.x_test, second.x_test) and np.array_equal(first.y_test, second.y_test)
    assert len(np.unique(first.x_train)) > 100  # the int8 range is used, not a handful of levels


def _sequence_network(seed: int, length: int, channels: int, kernel: int, stride: int, padding: int):
    torch.manual_seed(seed)
    quant = InputQuant(np.float32(0.03 + 0.01 * (seed % 5)), seed % 40 - 20)
    out_len = (length + 2 * padding - kernel) // stride + 1
    pooled = (out_len + 2 * 1 - 3) // 2 + 1
    layers = [QuantConv1d(channels, 6, kernel, stride, padding, relu=bool(seed % 2)), QuantMaxPool1d(3, 2, 1),
              QuantFlatten(), QuantLinear(6 * pooled, 4)]
    return calibrated_quantized(QuantSequential("seq", layers, quant), random_inputs(seed, 32, (1, length, channels)))


@pytest.mark.parametrize("seed,length,channels,kernel,stride,padding", [
    (0, 40, 1, 5, 1, 2), (1, 17, 3, 3, 2, 1), (2, 12, 2, 7, 1, 0), (3, 9, 4, 1, 1, 0),
])
def test_conv1d_forward_equals_reference(seed, length, channels, kernel, stride, padding):
    network = _sequence_network(seed, length, channels, kernel, stride, padding)
    model = export(network, (1, length, channels), 4)
    conv = model.layers[0]
    assert conv.kind == "conv2d" and conv.kernel == (1, kernel) and conv.in_shape == (1, length, channels)
    x = random_inputs(seed + 50, 64, (1, length, channels))
    assert np.array_equal(logits_int8(network, x), reference.run(model, x))


def test_mnist1d_cnn_refuses_two_dimensional_inputs():
    with pytest.raises(DataError, match="sequences"):
        build_model("mnist1d_cnn", (8, 8, 1), 10, InputQuant(np.float32(0.1), 0))
