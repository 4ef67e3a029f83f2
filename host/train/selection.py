"""Keep the quantized-phase state whose device-exact network does best on the training data.

Device-simulated training can wander off: on MNIST-1D with Q formats, the straight-through steps
raised the device-exact training loss epoch after epoch (0.17 -> 1.6). Scoring each epoch's exact
integer network on the training set (never the test set) and restoring the best one, the network
calibrated from the float weights included as epoch 0, means the quantized phase never ships a model
worse, on training data, than the float network deployed as is. A later epoch replaces an earlier
one only when it gets more training samples right.
"""
from __future__ import annotations

import copy

import torch
import torch.nn.functional as F

from cqtf.data import Dataset
from cqtf.train.model import QuantSequential


class BestState:
    def __init__(self, model: QuantSequential, data: Dataset, batch: int = 1024):
        self.model = model
        self.x = torch.from_numpy(data.x_train)
        self.y = torch.from_numpy(data.y_train)
        self.batch = batch
        self.best_epoch, self.best_score, self.best_state = -1, None, None
        self.scores: list[dict] = []
        self.score(0)

    def _evaluate(self) -> tuple[float, float]:
        """(accuracy, cross entropy) of the device-exact outputs on the training set."""
        self.model.eval()
        correct, loss = 0, 0.0
        unscale = 2.0 ** -self.model.quant_layers()[-1].act_gain_log2  # undo power-of-two gains
        with torch.no_grad():
            for start in range(0, len(self.x), self.batch):
                x, y = self.x[start: start + self.batch], self.y[start: start + self.batch]
                logits = self.model(x) * unscale
                correct += int((logits.argmax(1) == y).sum())
                loss += float(F.cross_entropy(logits, y, reduction="sum"))
        return correct / len(self.x), loss / len(self.x)

    def score(self, epoch: int) -> None:
        accuracy, loss = self._evaluate()
        self.scores.append({"epoch": epoch, "train_accuracy": round(accuracy, 5), "train_loss": round(loss, 5)})
        # Ties go to the earlier state, the one nearest the float network: once every training sample is
        # right (digits: from epoch 0 on), a lower training loss only measures memorization, and choosing
        # by it picked later epochs that did worse on held-out data (fixed8-floor: 96.67 % against 97.50 %).
        if self.best_score is None or accuracy > self.best_score:
            self.best_epoch, self.best_score = epoch, accuracy
            self.best_state = copy.deepcopy(self.model.state_dict())

    def restore(self) -> dict:
        self.model.load_state_dict(self.best_state)
        return {"phase": "select", "epoch": self.best_epoch, "scores": self.scores}
