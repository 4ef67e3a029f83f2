"""Gradual quantization of power-of-two weights (profile pot4): w_used = w - a (w - Q(w)).

a rises linearly from `start` (0.5) at the first quantized epoch to 1 at epoch `ramp` (half the
quantized phase) and stays 1 after it, so the last epochs train with exactly the device's weights.
While a < 1 the blended weights are integers in the same fixed-point units (cqtf.pow2.blend): the
forward pass is still exact integer arithmetic, just not yet shifts. Only states trained with a = 1
are scored for the best-state selection (train/selection.py), and export always uses a = 1: what is
selected is what the device computes, and the trainer's forward == reference check holds.
"""
from __future__ import annotations

from cqtf.train.layers import fitting_frac_bits
from cqtf.train.model import QuantSequential


class PotBlend:
    def __init__(self, model: QuantSequential, epochs: int, start: float = 0.5, ramp_share: float = 0.5):
        self.layers = model.quant_layers()
        self.start = start
        self.ramp = max(1, round(epochs * ramp_share))
        self.alphas: list[float] = []

    def alpha(self, epoch: int) -> float:
        """a of quantized epoch `epoch` (1-based)."""
        if epoch >= self.ramp:
            return 1.0
        return self.start + (1.0 - self.start) * (epoch - 1) / (self.ramp - 1)

    def set(self, epoch: int) -> None:
        for layer in self.layers:
            layer.pot_blend = self.alpha(epoch)

    def wrap(self, score):
        """after_epoch for trainer._epochs: score the state only when it was trained with a = 1, then
        set a for the next epoch. Sets a for epoch 1 now, and freezes each layer's weight fraction
        bits at their calibrated value: a weight that grows saturates instead of coarsening the
        grid of all the others (the format is chosen once, as for the activations)."""
        self.set(1)
        for layer in self.layers:
            if layer.weight_frac is None and layer.profile.weights.frac_bits is None:
                layer.weight_frac = fitting_frac_bits(float(layer.weight.detach().abs().max()),
                                                      layer.profile.weights.qmax) - layer.weight_frac_drop

        def after_epoch(epoch: int) -> None:
            self.alphas.append(round(self.alpha(epoch), 4))
            if self.alpha(epoch) >= 1.0:
                score(epoch)
            self.set(epoch + 1)

        return after_epoch

    def finish(self) -> dict:
        for layer in self.layers:
            layer.pot_blend = 1.0
        return {"phase": "pot_blend", "alpha_per_epoch": self.alphas}
