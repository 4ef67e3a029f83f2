"""The training forward pass computes exactly the integers the host reference (and so the device) computes."""
import json

import numpy as np
import pytest
import torch

from cqtf import reference
from cqtf.train.export import export
from cqtf.train.model import logits_int8
from random_models import random_inputs, random_network


@pytest.mark.parametrize("seed,stride,padding,kernel", [
    (0, 1, 1, 3), (1, 2, 1, 3), (2, 1, 0, 3), (3, 2, 2, 5), (4, 1, 0, 1), (5, 1, 1, 3), (6, 2, 0, 2),
])
def test_quantized_forward_equals_reference(seed, stride, padding, kernel):
    network = random_network(seed, stride=stride, padding=padding, kernel=kernel)
    x = random_inputs(seed + 100, 64, (9, 7, 2))
    model = export(network, (9, 7, 2), 5)
    assert np.array_equal(logits_int8(network, x), reference.run(model, x))


def test_forward_stays_exact_while_training():
    """Scales move every step; after each step the forward must still equal a fresh export."""
    network = random_network(7)
    x = random_inputs(8, 32, (9, 7, 2))
    y = torch.from_numpy(np.arange(32) % 5)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    for _ in range(5):
        network.train()
        loss = torch.nn.functional.cross_entropy(network(torch.from_numpy(x)), y)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        assert np.array_equal(logits_int8(network, x), reference.run(export(network, (9, 7, 2), 5), x))


def test_gradients_reach_every_layer():
    network = random_network(3)
    network.train()
    x = random_inputs(4, 16, (9, 7, 2))
    loss = network(torch.from_numpy(x)).square().sum()
    loss.backward()
    for name, parameter in network.named_parameters():
        assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name


def test_trained_digits_model(trained_dir):
    summary = json.loads(trained_dir.train_json.read_text())
    for key in ("float_accuracy", "host_accuracy", "profile", "dataset", "model"):
        assert key in summary
    assert summary["host_accuracy"] > 0.85  # 10 classes: chance is 0.1; a short budget still learns
    assert summary["model_hash"] == trained_dir.load_model().hash()


@pytest.mark.parametrize("fan_in", [8, 300, 1040, 4096])  # bounds below and above 2^24 (float32 / float64 path)
def test_exact_accumulator_equals_int64_on_both_sides_of_the_float32_bound(fan_in):
    from cqtf.train.layers import QuantLinear

    rng = np.random.default_rng(fan_in)
    layer = QuantLinear(fan_in, 6)
    x = rng.integers(-255, 256, size=(5, fan_in))
    w = rng.integers(-127, 128, size=(6, fan_in))
    x[0], w[0] = 255, 127  # the extremes, so the largest sums are reached
    x[1], w[1] = -255, 127
    bias = rng.integers(-2 ** 31, 2 ** 31, size=6)
    got = layer._exact_dot(torch.from_numpy(x), torch.from_numpy(w), torch.from_numpy(bias))
    assert got.dtype == torch.int64
    assert np.array_equal(got.numpy(), x @ w.T + bias)
