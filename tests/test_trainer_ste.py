"""The straight-through gradient of the device-exact forward pass: where it passes, where it stops."""
import numpy as np
import torch

from cqtf.profile import PRESETS
from test_profiles import _inputs, fixed_network


def _grads(network, x, saturation_aware: bool):
    for layer in network.quant_layers():
        layer.saturation_aware = saturation_aware
        layer.health = {}
    network.zero_grad()
    network.train()
    out = network(torch.from_numpy(x))
    (-out.sum()).backward()  # every output "wants" to rise: SaturatingSTE would pass it at a low bound
    return [p.grad.clone() for p in network.parameters()]


def test_a_relu_zero_is_not_a_saturation():
    """Fixed point, a ReLU layer: outputs at the ReLU's zero get no gradient in either STE mode, and the
    health counters do not count them as saturated (they used to: MNIST-1D showed ~55 % 'saturated')."""
    network = fixed_network(1, PRESETS["fixed8"])  # odd seed: the conv has a ReLU
    conv = network.quant_layers()[0]
    assert conv.relu
    x = _inputs(2, 32)
    captured = {}
    handle = conv.register_forward_hook(lambda m, i, o: captured.update(q=o.q))
    plain = _grads(network, x, saturation_aware=False)
    handle.remove()
    assert (captured["q"] == 0).float().mean() > 0.2  # many outputs sit at the ReLU's zero
    assert conv.health["saturated"] == 0  # calibrated on these inputs: nothing reaches the top
    aware = _grads(network, x, saturation_aware=True)
    for a, b in zip(plain, aware):
        assert torch.equal(a, b)

