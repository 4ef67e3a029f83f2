"""Training: a float phase (the float baseline), calibration, then training with the device's exact forward pass.

The float accuracy reported is the float phase's network on the same int8 test inputs; the host
accuracy is the exported integer model run by the host reference (host/reference.py), which is
checked here to equal the training forward pass output for output.
"""
from __future__ import annotations

import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from cqtf import reference
from cqtf.data import Dataset
from cqtf.model_ir import IntModel
from cqtf.train.export import export
from cqtf.train.model import QuantSequential, build_model, logits_int8

log = logging.getLogger(__name__)


@dataclass
class TrainConfig:
    model: str = "digits_cnn"
    profile: str = "int8"
    float_epochs: int = 40  # float pre-training; also the float baseline's whole budget
    quant_epochs: int = 20  # training with the exact device forward pass, from the float weights
    batch_size: int = 32
    float_lr: float = 3e-3
    quant_lr: float = 5e-4
    weight_decay: float = 1e-4
    seed: int = 0


@dataclass
class TrainResult:
    float_accuracy: float
    host_accuracy: float
    int_model: IntModel
    seconds: float
    history: list[dict] = field(default_factory=list)
    config: TrainConfig = field(default_factory=TrainConfig)

    def summary(self, dataset: str) -> dict:
        return {
            "float_accuracy": self.float_accuracy,
            "host_accuracy": self.host_accuracy,
            "profile": self.config.profile,
            "dataset": dataset,
            "model": self.config.model,
            "model_hash": self.int_model.hash(),
            "train_seconds": round(self.seconds, 2),
            "config": asdict(self.config),
            "history": self.history,
        }


def _epochs(model: QuantSequential, data: Dataset, epochs: int, lr: float, config: TrainConfig, phase: str,
            history: list[dict], progress) -> None:
    optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs, 1))
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        for start in range(0, len(x), config.batch_size):
            batch = order[start: start + config.batch_size]
            loss = F.cross_entropy(model(x[batch]), y[batch])
            optimizer.zero_grad()
            loss.backward()
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        schedule.step()
        history.append({"phase": phase, "epoch": epoch + 1, "loss": round(total / len(x), 5)})
        progress(phase, epoch + 1, epochs, total / len(x))


def _float_accuracy(model: QuantSequential, data: Dataset) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x_test))
    return float((logits.argmax(1).numpy() == data.y_test).mean())


def _calibrate(model: QuantSequential, data: Dataset) -> None:
    model.eval()
    model.set_calibrating(True)
    with torch.no_grad():
        model(torch.from_numpy(data.x_train))
    model.set_calibrating(False)


def train(data: Dataset, config: TrainConfig, progress=lambda *a: None) -> TrainResult:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    history: list[dict] = []
    model = build_model(config.model, data.input_shape, data.num_classes, data.input_quant)

    _epochs(model, data, config.float_epochs, config.float_lr, config, "float", history, progress)
    float_accuracy = _float_accuracy(model, data)

    _calibrate(model, data)
    model.set_quantized(True)
    _epochs(model, data, config.quant_epochs, config.quant_lr, config, "quantized", history, progress)

    int_model = export(model, data.input_shape, data.num_classes, config.profile)
    host_outputs = reference.run(int_model, data.x_test)
    training_outputs = logits_int8(model, data.x_test)
    if not np.array_equal(host_outputs, training_outputs):
        bad = np.argwhere(host_outputs != training_outputs)[0]
        raise AssertionError(f"training forward and host reference disagree at sample {bad[0]}, output {bad[1]}")
    host_accuracy = float((reference.predict(host_outputs) == data.y_test).mean())
    return TrainResult(float_accuracy, host_accuracy, int_model, time.perf_counter() - started, history, config)
