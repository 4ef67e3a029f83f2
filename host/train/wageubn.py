"""WAGEUBN training (Yang et al., Neural Networks 125, 2020) as an option of the cqtf trainer.

The forward pass stays the device's exact fixed-point arithmetic (A: activations are already the
device's 8-bit integers). On top, the backward pass and the update are quantized as in the paper:

  W  weights 8-bit on the device (the profile); the trained copy is kept on a 24-bit grid
  G  weight gradients: divided by the power of two nearest max|g| (shift normalization), scaled by
     2^(k-1), stochastically rounded to k = 8 bits, clipped, scaled back
  E  errors (gradients w.r.t. activations between layers): 8-bit after the same power-of-two
     normalization, round to nearest (ErrorQuant, an identity in the forward pass)
  U  updates: lr * momentum buffer, with lr a power of two
  M  momentum SGD: momentum a power of two (1/2), buffer quantized to 13 bits
  BN 16-bit mean, std, gamma and beta, shift-quantized before folding (BatchNormFold.bn_quantizer)

As in the authors' code, the first conv and the last dense layer keep full-precision gradients.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch

from cqtf.train.model import QuantSequential


@dataclass(frozen=True)
class WageConfig:
    weight_bits: int = 24  # the trained weight copy
    gradient_bits: int = 8  # G
    error_bits: int = 8  # E
    momentum_bits: int = 13  # the momentum buffer
    bn_bits: int = 16  # BN mean, std, gamma, beta
    momentum: float = 0.5  # a power of two
    lr: float = 2.0 ** -6  # a power of two
    full_precision_ends: bool = True  # first conv and last dense keep float gradients


def shift_scale(x: torch.Tensor) -> float:
    """The power of two nearest max|x| in log2, 2^round(log2 max|x|); 1 for an all-zero or non-finite
    tensor. Exact, from the binary exponent: with max|x| = f 2^e, f in [1/2, 1), the nearest power is
    2^e where log2 f >= -1/2, i.e. f >= sqrt(1/2) (never equal: sqrt(1/2) is irrational), else
    2^(e-1). (It was torch.round(torch.log2(m)): six tensor ops a call, about twenty calls a training
    step; and a float32 log2 cannot tell apart the m within a few dozen float32 steps of 2^(k+1/2): it
    returns the half-integer, and round-half-even then picks the even power, the farther one for half
    of them.)"""
    m = float(x.detach().abs().max())
    if m == 0 or not math.isfinite(m):
        return 1.0
    fraction, exponent = math.frexp(m)
    return math.ldexp(1.0, exponent if fraction >= _SQRT_HALF else exponent - 1)


_SQRT_HALF = math.sqrt(0.5)  # a float32 max's fraction (24 bits) is never within its rounding error


def direct_quantize(x: torch.Tensor, k: int) -> torch.Tensor:
    """Q(x, k) = round(x * 2^(k-1)) / 2^(k-1), saturated to +-(1 - 2^-(k-1))."""
    step = 2.0 ** (k - 1)
    return torch.clamp(torch.round(x * step), -(step - 1), step - 1) / step


def stochastic_round(x: torch.Tensor, generator: torch.Generator | None = None) -> torch.Tensor:
    """floor(x) + 1 with probability frac(x): unbiased, E[stochastic_round(x)] = x."""
    low = torch.floor(x)
    u = torch.rand(x.shape, generator=generator, dtype=x.dtype)
    return low + (u < (x - low)).to(x.dtype)


def quantize_shifted(x: torch.Tensor, k: int) -> torch.Tensor:
    """Shift quantization: normalize by the nearest power of two of max|x|, Q(., k), scale back."""
    s = shift_scale(x)
    return direct_quantize(x / s, k) * s


def quantize_gradient(g: torch.Tensor, k: int = 8, generator: torch.Generator | None = None) -> torch.Tensor:
    """G: power-of-two normalization, constant scaling by 2^(k-1), stochastic rounding to k bits."""
    s = shift_scale(g)
    step = 2.0 ** (k - 1)
    q = torch.clamp(stochastic_round(g / s * step, generator), -(step - 1), step - 1)
    return q / step * s


def quantize_error(e: torch.Tensor, k: int = 8) -> torch.Tensor:
    """E: k bits after power-of-two normalization."""
    return quantize_shifted(e, k)


def quantize_covering(x: torch.Tensor, k: int) -> torch.Tensor:
    """x on the k-bit grid of the smallest power of two >= max|x|: for BN, whose largest std or gamma
    must not be clipped as the nearest-power normalization of errors and gradients would clip it."""
    m = x.detach().abs().max()
    if m == 0 or not torch.isfinite(m):
        return x.detach().clone()
    scale = torch.pow(torch.tensor(2.0, dtype=x.dtype), torch.ceil(torch.log2(m)))
    return direct_quantize(x / scale, k) * scale


def quantize_bn_statistics(mean: torch.Tensor, std: torch.Tensor, k: int = 16) -> tuple[torch.Tensor, torch.Tensor]:
    """BN: mean and std on k-bit power-of-two-scaled grids."""
    return quantize_covering(mean, k), quantize_covering(std, k)


def _straight_through(x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
    """q in the forward pass, x's gradient in the backward pass."""
    return x + (q - x).detach()


def bn_quantizer(k: int):
    """BatchNormFold.bn_quantizer for k bits: mean, std, gamma and beta each on a k-bit grid (quantize_covering)
    before the fold (the U and BN of WAGEUBN), straight-through for the float gradients."""
    def quantize(mean, std, gamma, beta):
        q_mean, q_std = quantize_bn_statistics(mean, std, k)
        return (_straight_through(mean, q_mean), _straight_through(std, q_std),
                _straight_through(gamma, quantize_covering(gamma, k)), _straight_through(beta, quantize_covering(beta, k)))
    return quantize


class ErrorQuant(torch.autograd.Function):
    """Identity forward (the device-exact value passes unchanged); backward quantizes the error."""

    @staticmethod
    def forward(ctx, x, bits):
        ctx.bits = bits
        return x.view_as(x)

    @staticmethod
    def backward(ctx, grad):
        return quantize_error(grad, ctx.bits), None


class WageMomentum(torch.optim.Optimizer):
    """Momentum SGD with a quantized buffer, a power-of-two momentum and learning rate, and weights
    kept on a 24-bit grid (shift-quantized per tensor)."""

    def __init__(self, params, config: WageConfig = WageConfig()):
        for v, what in ((config.momentum, "momentum"), (config.lr, "lr")):
            if v <= 0 or 2.0 ** round(torch.log2(torch.tensor(v)).item()) != v:
                raise ValueError(f"WAGEUBN {what} must be a power of two, got {v}")
        super().__init__(params, {"lr": config.lr, "momentum": config.momentum})
        self.config = config

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                buf = state.get("momentum")
                buf = p.grad.clone() if buf is None else buf.mul_(group["momentum"]).add_(p.grad)
                buf.copy_(quantize_shifted(buf, self.config.momentum_bits))
                state["momentum"] = buf
                p.add_(buf, alpha=-group["lr"])  # U
                p.copy_(quantize_shifted(p, self.config.weight_bits))  # W kept at 24 bits
        return None


class Wageubn:
    """Attach WAGEUBN to a QuantSequential: error quantization between layers (forward hooks), the
    gradient quantizer (call after backward) and the optimizer."""

    def __init__(self, model: QuantSequential, config: WageConfig = WageConfig(), seed: int = 0):
        self.model, self.config = model, config
        self.generator = torch.Generator().manual_seed(seed)
        layers = model.quant_layers()
        ends = {id(layers[0]), id(layers[-1])} if config.full_precision_ends else set()
        self.quantized_grads = [l.inner.weight for l in layers if id(l) not in ends]
        self.handles = [layer.register_forward_hook(self._error_hook) for layer in layers[:-1]]
        self.bn_layers = [l for l in layers if getattr(l, "bn", None) is not None]
        for layer in self.bn_layers:
            layer.bn_quantizer = bn_quantizer(config.bn_bits)

    def _error_hook(self, module, inputs, output):
        if not module.training or not output.value.requires_grad:
            return None
        return output._replace(value=ErrorQuant.apply(output.value, self.config.error_bits))

    @torch.no_grad()
    def after_backward(self) -> None:
        for w in self.quantized_grads:
            if w.grad is not None:
                w.grad.copy_(quantize_gradient(w.grad, self.config.gradient_bits, self.generator))

    def optimizer(self, params) -> WageMomentum:
        return WageMomentum(params, self.config)

    def remove(self) -> None:
        for h in self.handles:
            h.remove()
        for layer in self.bn_layers:
            layer.bn_quantizer = None
