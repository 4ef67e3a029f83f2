"""Gradient health of the quantized layers: detects vanishing gradients, epoch by epoch.

Saturation (outputs or accumulators at a bound) and rounding (weights quantized to zero, products
below one LSB of the accumulator) are where a device-exact forward pass kills gradients. Each
quantized layer counts, per epoch:
  saturated_share      outputs that sit at a bound of the activation or accumulator format
  acc_saturated_share  outputs whose accumulator (a block or the running sum) saturated on the way
  weights_zero_share   weights that quantize to 0
  grad_zero_share      weight-gradient entries that are exactly 0 (mean over the batches)
  grad_norm            mean L2 norm of the layer's weight gradient
A layer is flagged `vanishing` when most of its gradient is zero or its gradient norm fell below
VANISHING_RATIO of the norm it had in the float phase.
"""
from __future__ import annotations

import torch

VANISHING_ZERO_SHARE = 0.5
VANISHING_RATIO = 0.05


class GradientMonitor:
    def __init__(self, layers):
        self.layers = list(layers)
        self.reset()
        self.float_norms: list[float] | None = None

    def reset(self) -> None:
        self.batches = 0
        self.zero = [0.0] * len(self.layers)
        self.norm = [0.0] * len(self.layers)
        for layer in self.layers:
            layer.health = {}

    @torch.no_grad()
    def after_backward(self) -> None:
        self.batches += 1
        for i, layer in enumerate(self.layers):
            grad = layer.inner.weight.grad
            if grad is not None:
                self.zero[i] += float((grad == 0).float().mean())
                self.norm[i] += float(grad.norm())

    def epoch_report(self) -> list[dict]:
        n = max(self.batches, 1)
        report = []
        for i, layer in enumerate(self.layers):
            h = layer.health
            outputs = max(h.get("outputs", 0), 1)
            norm = self.norm[i] / n
            entry = {
                "layer": i,
                "saturated_share": round(h.get("saturated", 0) / outputs, 5),
                "acc_saturated_share": round(h.get("acc_saturated", 0) / outputs, 5),
                "weights_zero_share": round(_zero_share(h.get("weights")), 5),
                "grad_zero_share": round(self.zero[i] / n, 5),
                "grad_norm": round(norm, 6),
            }
            ratio_low = self.float_norms is not None and norm < VANISHING_RATIO * self.float_norms[i]
            entry["vanishing"] = bool(entry["grad_zero_share"] > VANISHING_ZERO_SHARE or ratio_low)
            report.append(entry)
        return report


def _zero_share(weights: torch.Tensor | None) -> float:
    """The share of zeros among the integer weights of a layer's last training forward (0 if none)."""
    return 0.0 if weights is None else float((weights == 0).float().mean())
