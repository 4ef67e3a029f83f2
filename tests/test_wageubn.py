"""WAGEUBN quantizers and optimizer (cqtf.train.wageubn): grids, power-of-two scales, unbiased rounding,
and a training step that keeps the forward pass device-exact."""
import numpy as np
import torch

from cqtf import reference
from cqtf.data import InputQuant
from cqtf.profile import FIRMWARE_PROFILES, PRESETS, TRAINING, firmware_constants
from cqtf.train.export import export
from cqtf.train.model import logits_int8
from cqtf.train.wageubn import (ErrorQuant, WageConfig, WageMomentum, Wageubn, direct_quantize,
                                quantize_error, quantize_gradient, quantize_shifted, shift_scale, stochastic_round)
from random_models import calibrated_quantized, random_inputs
from test_profiles import fixed_network


def _log2_is_int(v: float) -> bool:
    return float(np.log2(v)).is_integer()


def test_shift_scale_is_a_power_of_two_near_the_max():
    g = torch.Generator().manual_seed(0)
    for _ in range(50):
        x = torch.randn(100, generator=g, dtype=torch.float64) * 10 ** torch.empty(1).uniform_(-6, 3, generator=g)
        s = float(shift_scale(x))
        assert _log2_is_int(s)
        assert s / np.sqrt(2) <= float(x.abs().max()) <= s * np.sqrt(2) + 1e-12
    assert float(shift_scale(torch.zeros(3))) == 1.0


def test_direct_quantize_is_on_the_grid_and_saturates():
    x = torch.linspace(-3, 3, 1001, dtype=torch.float64)
    q = direct_quantize(x, 8)
    assert torch.equal(q * 128, torch.round(q * 128))
    assert float(q.abs().max()) == 1 - 2 ** -7
    inside = x.abs() < 1 - 2 ** -7
    assert float((q - x)[inside].abs().max()) <= 2 ** -8 + 1e-12


def test_error_and_gradient_quantizers_use_eight_bits_of_a_power_of_two():
    g = torch.Generator().manual_seed(1)
    x = torch.randn(4, 8, 5, generator=g, dtype=torch.float64) * 1e-3
    for q in (quantize_error(x), quantize_gradient(x, generator=g), quantize_shifted(x, 8)):
        levels = q / shift_scale(x) * 128
        assert torch.equal(levels, torch.round(levels)) and float(levels.abs().max()) <= 127
    assert (quantize_error(x) - x).abs().max() <= float(shift_scale(x)) * 2 ** -8 * 1.001 + 1e-18


def test_stochastic_rounding_is_unbiased():
    g = torch.Generator().manual_seed(2)
    x = torch.tensor([0.1, 0.5, -0.3, 2.75, -7.9], dtype=torch.float64)
    samples = torch.stack([stochastic_round(x, g) for _ in range(20000)])
    assert torch.equal(samples, torch.round(samples))
    assert ((samples - torch.floor(x)).abs() <= 1).all()
    assert torch.allclose(samples.mean(0), x, atol=0.02)
    grad = torch.full((20000,), 0.3 / 128, dtype=torch.float64)
    grad[0] = 1.0  # sets the scale: levels 0.3 apart from the grid
    assert abs(float(quantize_gradient(grad, generator=g)[1:].mean()) - 0.3 / 128) < 0.02 / 128


def test_error_quant_is_identity_forward_and_quantizes_backward():
    x = torch.randn(6, 7, dtype=torch.float64, requires_grad=True)
    y = ErrorQuant.apply(x, 8)
    assert torch.equal(y, x)
    upstream = torch.randn(6, 7, dtype=torch.float64)
    y.backward(upstream)
    assert torch.equal(x.grad, quantize_error(upstream))


def test_momentum_optimizer_quantizes_buffer_and_weights():
    w = torch.nn.Parameter(torch.randn(20, dtype=torch.float64))
    opt = WageMomentum([w], WageConfig(lr=2.0 ** -4, momentum=0.5))
    for _ in range(3):
        w.grad = torch.randn(20, dtype=torch.float64)
        opt.step()
        buf = opt.state[w]["momentum"]
        levels = buf / shift_scale(buf) * 2 ** 12
        assert torch.equal(levels, torch.round(levels))
        wl = w.detach() / shift_scale(w) * 2 ** 23
        assert torch.equal(wl, torch.round(wl))
    try:
        WageMomentum([w], WageConfig(momentum=0.9))
    except ValueError:
        pass
    else:
        raise AssertionError("a momentum that is not a power of two must be refused")


def test_wageubn8_is_a_firmware_profile_with_fixed8_arithmetic():
    assert list(PRESETS)[-1] == "wageubn8" and "wageubn8" in FIRMWARE_PROFILES
    assert TRAINING["wageubn8"] == "wageubn"
    wage, fixed = PRESETS["wageubn8"].to_dict(), PRESETS["fixed8"].to_dict()
    assert {**wage, "name": "fixed8"} == fixed
    assert firmware_constants(PRESETS["wageubn8"]) == firmware_constants(PRESETS["fixed8"])


def test_wageubn_step_keeps_the_forward_exact_and_quantizes_gradients():
    network = fixed_network(7, PRESETS["wageubn8"], weight_scale=4.0)
    # a middle layer so that one gradient is quantized (the ends keep full precision)
    wage = Wageubn(network, WageConfig(full_precision_ends=False))
    optimizer = wage.optimizer(network.parameters())
    x = random_inputs(8, 32, (9, 7, 2))
    y = torch.from_numpy(np.arange(32) % 5)
    for _ in range(3):
        network.train()
        loss = torch.nn.functional.cross_entropy(network(torch.from_numpy(x)), y)
        optimizer.zero_grad()
        loss.backward()
        wage.after_backward()
        for w in wage.quantized_grads:
            levels = w.grad / shift_scale(w.grad) * 128
            assert torch.equal(levels, torch.round(levels)) and w.grad.abs().sum() > 0
        optimizer.step()
        assert np.array_equal(logits_int8(network, x), reference.run(export(network, (9, 7, 2), 5), x))
    wage.remove()



def _on_covering_grid(x, k):
    """x on the k-bit grid of the smallest power of two >= max|x| (independent of wageubn.py)."""
    scale = 2.0 ** np.ceil(np.log2(np.abs(x).max()))
    step = 2.0 ** (k - 1)
    return np.clip(np.round(x / scale * step), -(step - 1), step - 1) / step * scale


def test_wageubn_folds_batch_norm_quantized_to_16_bits_and_remove_restores_float():
    from cqtf.train.layers import QuantConv2d, QuantFlatten, QuantLinear
    from cqtf.train.model import QuantSequential

    torch.manual_seed(3)
    network = QuantSequential("bn", [QuantConv2d(2, 4, 3, padding=1, relu=True, bn=True), QuantFlatten(),
                                     QuantLinear(4 * 9 * 7, 5)], InputQuant(np.float32(0.1), 0), PRESETS["wageubn8"])
    conv = network.quant_layers()[0]
    with torch.no_grad():
        conv.bn.running_mean.uniform_(-0.3, 0.3)
        conv.bn.running_var.uniform_(0.2, 3.0)
        conv.bn.weight.uniform_(0.5, 1.5)
        conv.bn.bias.uniform_(-0.2, 0.2)
    network.eval()
    float_weight, float_bias = conv.weight.detach().clone(), conv.bias.detach().clone()
    wage = Wageubn(network)
    bn = conv.bn
    q = {name: torch.from_numpy(_on_covering_grid(t.detach().double().numpy(), 16)).float()
         for name, t in (("mean", bn.running_mean), ("std", torch.sqrt(bn.running_var + bn.eps)),
                         ("gamma", bn.weight), ("beta", bn.bias))}
    scale = q["gamma"] / q["std"]
    assert torch.allclose(conv.weight.detach(), conv.inner.weight.detach() * scale.reshape(-1, 1, 1, 1), atol=1e-6)
    assert torch.allclose(conv.bias.detach(), (conv.inner.bias.detach() - q["mean"]) * scale + q["beta"], atol=1e-6)
    assert not torch.equal(conv.weight.detach(), float_weight)  # the grids moved the fold
    wage.remove()
    assert torch.equal(conv.weight.detach(), float_weight) and torch.equal(conv.bias.detach(), float_bias)


def test_wageubn_trains_a_batch_norm_network_with_an_exact_export():
    from cqtf.train.layers import QuantConv2d, QuantFlatten, QuantLinear
    from cqtf.train.model import QuantSequential

    torch.manual_seed(4)
    layers = [QuantConv2d(2, 4, 3, padding=1, relu=True, bn=True), QuantConv2d(4, 4, 3, padding=1, relu=True, bn=True),
              QuantFlatten(), QuantLinear(4 * 9 * 7, 5)]
    network = QuantSequential("bn", layers, InputQuant(np.float32(0.1), 0), PRESETS["wageubn8"])
    x = random_inputs(6, 32, (9, 7, 2))
    y = torch.from_numpy(np.arange(32) % 5)
    calibrated_quantized(network, x)
    wage = Wageubn(network, WageConfig(full_precision_ends=False))
    optimizer = wage.optimizer(network.parameters())
    for _ in range(3):
        network.train()
        loss = torch.nn.functional.cross_entropy(network(torch.from_numpy(x)), y)
        optimizer.zero_grad()
        loss.backward()
        wage.after_backward()
        optimizer.step()
    assert all(layer.bn.weight.grad is not None and layer.bn.weight.grad.abs().sum() > 0
               for layer in network.quant_layers()[:2])
    network.eval()
    assert np.array_equal(logits_int8(network, x), reference.run(export(network, (9, 7, 2), 5), x))
    wage.remove()


def _nearest_power_in_log2(m: float) -> float:
    """2^j or 2^(j+1) for 2^j <= m < 2^(j+1), whichever is nearer in log2: m^2 against 2^(2j+1), in
    exact rational arithmetic."""
    from fractions import Fraction

    v, j = Fraction(m), 0
    while Fraction(2) ** j > v:
        j -= 1
    while Fraction(2) ** (j + 1) <= v:
        j += 1
    return 2.0 ** j if v * v < Fraction(2) ** (2 * j + 1) else 2.0 ** (j + 1)


def test_shift_scale_is_the_nearest_power_in_log2_next_to_every_boundary():
    """Exhaustively around every 2^(k+1/2) of the float32 range, subnormals included (30 values each
    side), and at the powers of two themselves: shift_scale is the power of two nearest max|x| in log2,
    decided in exact rational arithmetic, for either sign of the max."""
    for k in range(-149, 127):
        boundary = np.float32(2.0 ** (k + 0.5))
        around = [boundary, np.float32(2.0 ** k)]
        up = down = boundary
        for _ in range(30):
            up, down = np.nextafter(up, np.float32(np.inf)), np.nextafter(down, np.float32(0))
            around += [up, down]
        for m in around:
            if not np.isfinite(m) or m == 0:
                continue
            want = _nearest_power_in_log2(float(m))
            for sign in (1, -1):
                assert shift_scale(torch.tensor([0.5 * float(m), sign * float(m)], dtype=torch.float32)) == want
    assert shift_scale(torch.tensor([float("inf")])) == 1.0 and shift_scale(torch.tensor([float("nan")])) == 1.0
