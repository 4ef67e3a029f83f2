"""Choose the network to ship: the float network deployed as is (what a converter ships), the
calibrated float network (epoch 0: for fixed point, after the per-layer format calibration), or the
network the quantized phase trained.

A candidate replaces the one kept so far only when the scoring samples say it is better beyond
chance: of the samples the two classify differently, it must get so many right that a fair coin would
do as well at most 5 % of the time (a one-sided sign test, as McNemar's). And there are only these
three candidates, two comparisons, fixed in advance: scoring every epoch and keeping the best (21
comparisons) let chance through, an epoch 7-to-1 better on 600 held-out samples (p = 0.035) was 0.4
and 0.5 points worse on the test set (MNIST-1D int8 and fixed8). So cqtf ships the trained network
where training measurably beat deploying the float one, and the float one, unchanged, elsewhere.

The scoring samples are the training split itself by default (TrainConfig.validation_fraction 0), or
a held-out share of it that no phase trains on (data.hold_out); the test set never. On the training
split, where the float network is already 99.9-100 % right, the float one wins the ties, so a trained
network ships only where the device's arithmetic cost the float one measurably (fixed8-blk32, pot4).
A 15 % held-out share used to be the default; it cost more accuracy (every phase trained on 15 % less
data) than its better-informed choice won: over 3 seeds, 9 of the 10 (data set, profile) mean deployed
accuracies of results/comparison_seeds.md rose without it.
"""
from __future__ import annotations

import copy
import math

import numpy as np
import torch
import torch.nn.functional as F

from cqtf.train.model import QuantSequential

AS_IS = "as_is"  # the label of the float network deployed as is in the selection log
SIGNIFICANCE = 0.05  # a candidate must beat the one kept at this level (one-sided sign test)


def sign_test_p(wins: int, losses: int) -> float:
    """P(at least `wins` heads in wins + losses tosses of a fair coin): the chance that a candidate no
    better than the one kept gets this many of the samples they disagree on right."""
    n = wins + losses
    return sum(math.comb(n, k) for k in range(wins, n + 1)) / 2 ** n


class BestState:
    def __init__(self, model: QuantSequential, x: np.ndarray, y: np.ndarray, as_is: QuantSequential | None = None,
                 batch: int = 1024):
        self.model = model
        self.x, self.y = torch.from_numpy(x), torch.from_numpy(y)
        self.batch = batch
        self.best_epoch, self.best_correct, self.best_state = None, None, None
        self.scores: list[dict] = []
        self.as_is = as_is
        if as_is is not None:
            self._offer(AS_IS, *self._evaluate(as_is))
        self.score(0)

    def _evaluate(self, model: QuantSequential) -> tuple[np.ndarray, float]:
        """(which held-out samples the device-exact outputs get right, their mean cross entropy)."""
        model.eval()
        correct, loss = [], 0.0
        unscale = 2.0 ** -model.quant_layers()[-1].act_gain_log2  # undo power-of-two gains
        with torch.no_grad():
            for start in range(0, len(self.x), self.batch):
                x, y = self.x[start: start + self.batch], self.y[start: start + self.batch]
                logits = model(x) * unscale
                correct.append((logits.argmax(1) == y).numpy())
                loss += float(F.cross_entropy(logits, y, reduction="sum"))
        return np.concatenate(correct), loss / len(self.x)

    def _offer(self, epoch, correct: np.ndarray, loss: float) -> bool:
        row = {"epoch": epoch, "heldout_accuracy": round(float(correct.mean()), 5), "heldout_loss": round(loss, 5)}
        self.scores.append(row)
        if self.best_correct is None:
            better = True
        else:  # ties and chance gains go to the earlier candidate, the one nearest the float network
            wins, losses = int((correct & ~self.best_correct).sum()), int((self.best_correct & ~correct).sum())
            row["p_vs_kept"] = round(sign_test_p(wins, losses), 5)
            better = wins > losses and row["p_vs_kept"] <= SIGNIFICANCE
        if better:
            self.best_epoch, self.best_correct = epoch, correct
        return better

    def score(self, epoch: int) -> None:
        if self._offer(epoch, *self._evaluate(self.model)):
            self.best_state = copy.deepcopy(self.model.state_dict())

    def restore(self) -> tuple[QuantSequential, dict]:
        """The winner (the as-is network, or the training model with its best state loaded) and the log."""
        log = {"phase": "select", "epoch": self.best_epoch, "heldout_samples": len(self.x), "scores": self.scores}
        if self.best_epoch == AS_IS:
            return self.as_is, log
        self.model.load_state_dict(self.best_state)
        return self.model, log
