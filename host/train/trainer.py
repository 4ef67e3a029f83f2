"""Training: a float phase (the float baseline), calibration, then training with the device's exact forward pass.

The float accuracy reported is the float phase's network on the same int8 test inputs; the host
accuracy is the exported integer model run by the host reference (host/reference.py), which is
checked here to equal the training forward pass output for output.
"""
from __future__ import annotations

import copy
import logging
import time
from dataclasses import asdict, dataclass, field

import numpy as np
import torch
import torch.nn.functional as F

from cqtf import reference
from cqtf.data import Dataset, hold_out
from cqtf.model_ir import IntModel
from cqtf.profile import TRAINING, PowerOfTwo, Profile, get_profile
from cqtf.train.export import export
from cqtf.train.health import GradientMonitor
from cqtf.train.layers import QuantAdd
from cqtf.train.model import QuantSequential, build_model, logits_int8
from cqtf.train.pot_blend import PotBlend
from cqtf.train.selection import BestState

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
    warmup_epochs: int = 2  # quantized phase: the learning rate rises linearly over these epochs
    calibrate_formats: bool = True  # fixed point: per-layer fraction bits / gains chosen on training data
    # gradients that push a saturated value back inside still pass (layers.SaturatingSTE); False: the
    # clamp's own gradient, zero wherever saturated. Equal results on digits and MNIST-1D since a ReLU's
    # zero stopped counting as saturation (layers._fixed_forward).
    saturation_aware: bool = True
    # a stratified share of the training split no phase trains on, to choose the shipped network on
    # (train/selection.py); 0: every phase trains on the whole split and the choice is made on it. 0 by
    # default: over 3 seeds x 5 profiles x 2 data sets, holding out 15 % cost more (less data to train
    # on) than a better-informed choice gained: 9 of 10 mean deployed accuracies rose, by 0.2-1.2 points
    # (results/comparison_seeds.md; the float phase then trains on the data the other frameworks do).
    validation_fraction: float = 0.0


@dataclass
class TrainResult:
    float_accuracy: float
    host_accuracy: float
    float_deployed_accuracy: float  # the float network deployed as is on the profile's arithmetic
    int_model: IntModel
    seconds: float
    history: list[dict] = field(default_factory=list)
    config: TrainConfig = field(default_factory=TrainConfig)

    def summary(self, dataset: str) -> dict:
        return {
            "float_accuracy": self.float_accuracy,
            "host_accuracy": self.host_accuracy,
            "float_deployed_accuracy": self.float_deployed_accuracy,
            "profile": self.config.profile,
            "arithmetic": self.int_model.arithmetic,
            "dataset": dataset,
            "model": self.config.model,
            "model_hash": self.int_model.hash(),
            "train_seconds": round(self.seconds, 2),
            "config": asdict(self.config),
            "history": self.history,
        }


def _epochs(model: QuantSequential, data: Dataset, epochs: int, lr: float, config: TrainConfig, phase: str,
            history: list[dict], progress, monitor: GradientMonitor | None = None, warmup: int = 0,
            after_epoch=None, wage=None) -> None:
    if wage is not None:  # WAGEUBN (train/wageubn.py): quantized momentum SGD, its own power-of-two lr
        optimizer = wage.optimizer(model.parameters())
    else:
        optimizer = torch.optim.Adam(model.parameters(), lr=lr, weight_decay=config.weight_decay)
    cosine = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=max(epochs - warmup, 1))
    if warmup > 0 and epochs > warmup:
        ramp = torch.optim.lr_scheduler.LinearLR(optimizer, start_factor=1.0 / (warmup + 1), total_iters=warmup)
        schedule = torch.optim.lr_scheduler.SequentialLR(optimizer, [ramp, cosine], milestones=[warmup])
    else:
        schedule = cosine
    x = torch.from_numpy(data.x_train)
    y = torch.from_numpy(data.y_train)
    generator = torch.Generator().manual_seed(config.seed)
    for epoch in range(epochs):
        model.train()
        order = torch.randperm(len(x), generator=generator)
        total = 0.0
        if monitor is not None:
            monitor.reset()
        for start in range(0, len(x), config.batch_size):
            batch = order[start: start + config.batch_size]
            # the loss of the logits with the power-of-two gains undone (as selection scores them): the gains
            # are a reparametrization and must not act as a softmax temperature
            unscale = 2.0 ** -model.quant_layers()[-1].act_gain_log2
            loss = F.cross_entropy(model(x[batch]) * unscale, y[batch])
            optimizer.zero_grad()
            loss.backward()
            if monitor is not None:
                monitor.after_backward()
            if wage is not None:
                wage.after_backward()  # G: weight gradients quantized
            optimizer.step()
            total += float(loss.detach()) * len(batch)
        schedule.step()
        entry = {"phase": phase, "epoch": epoch + 1, "loss": round(total / len(x), 5)}
        if monitor is not None:
            entry["gradient_health"] = monitor.epoch_report()
        history.append(entry)
        progress(phase, epoch + 1, epochs, total / len(x))
        if after_epoch is not None:
            after_epoch(epoch + 1)


def _float_accuracy(model: QuantSequential, data: Dataset) -> float:
    model.eval()
    with torch.no_grad():
        logits = model(torch.from_numpy(data.x_test))
    return float((logits.argmax(1).numpy() == data.y_test).mean())


def _calibrate(model: QuantSequential, data: Dataset) -> None:
    """Exact activation ranges of the float network on the training inputs (observers restarted)."""
    quantized = model.quantized
    model.set_quantized(False)
    model.eval()
    for layer in model.observed_layers():
        layer.observer.reset()
    model.set_calibrating(True)
    with torch.no_grad():
        model(torch.from_numpy(data.x_train))
    model.set_calibrating(False)
    model.set_quantized(quantized)


def deploy_as_is(model: QuantSequential, data: Dataset) -> IntModel:
    """A float-trained network on its profile's arithmetic, with no device-simulated training: ranges
    calibrated on the training inputs, then exported (what a converter does after float training)."""
    _calibrate(model, data)
    model.set_quantized(True)
    return export(model, data.input_shape, data.num_classes)


def _host_accuracy(int_model: IntModel, data: Dataset) -> float:
    return float((reference.predict(reference.run(int_model, data.x_test)) == data.y_test).mean())


def _quantized_loss(model: QuantSequential, x: torch.Tensor, y: torch.Tensor) -> float:
    """Cross entropy of the device-exact outputs, with the power-of-two gains undone (comparable)."""
    model.eval()
    with torch.no_grad():
        logits = model(x) * 2.0 ** -model.quant_layers()[-1].act_gain_log2
    return float(F.cross_entropy(logits, y))


def _format_candidates(profile: Profile) -> list[tuple[int, int, int]]:
    """(gain, weight fraction-bit drop, output fraction-bit drop) to try per layer."""
    if profile.weights.frac_bits is not None:  # fixed formats: only a power-of-two gain can move values
        return [(g, 0, 0) for g in range(-2, 4)]
    return [(0, dw, da) for dw in range(4) for da in range(3)]


def _calibrate_formats(model: QuantSequential, data: Dataset, samples: int = 768) -> list[dict]:
    """Vanishing-gradient mitigation, part 1: choose per layer, greedily in order, the fixed-point
    formats (or, for formats fixed by the profile, a power-of-two gain on the weights) that minimize
    the device-exact loss on training data: fewer saturated outputs and accumulators, fewer weights
    rounded to zero. The network's float function is unchanged (ReLU nets are positively homogeneous)."""
    x = torch.from_numpy(data.x_train[:samples])
    y = torch.from_numpy(data.y_train[:samples])
    layers = model.quant_layers()
    adds = [layer for layer in model.layers if isinstance(layer, QuantAdd)]  # their output formats freeze too
    choice = [(0, 0, 0)] * len(layers)

    def apply(settings):
        model.set_gains([g for g, _, _ in settings])
        for layer, (_, dw, da) in zip(layers, settings):
            layer.weight_frac_drop, layer.out_frac_drop, layer.out_frac = dw, da, None
        for add in adds:
            add.out_frac = None
        _calibrate(model, data)
        for layer in layers + adds:
            if layer.profile.activations.frac_bits is None:
                layer.out_frac = layer.observed_out_frac()

    log_rows = []
    for i in range(len(layers)):
        scores = []
        for candidate in _format_candidates(model.profile):
            trial = list(choice)
            trial[i] = candidate
            apply(trial)
            scores.append((_quantized_loss(model, x, y), candidate))
        best_loss, best = min(scores)
        choice[i] = best
        log_rows.append({"layer": i, "gain_log2": best[0], "weight_frac_drop": best[1],
                         "out_frac_drop": best[2], "loss": round(best_loss, 5)})
    apply(choice)
    return log_rows


def train(data: Dataset, config: TrainConfig, progress=lambda *a: None) -> TrainResult:
    started = time.perf_counter()
    torch.manual_seed(config.seed)
    data, x_heldout, y_heldout = hold_out(data, config.validation_fraction, config.seed)
    history: list[dict] = []
    profile = get_profile(config.profile)
    model = build_model(config.model, data.input_shape, data.num_classes, data.input_quant, profile)
    monitor = GradientMonitor(model.quant_layers())
    for layer in model.observed_layers():
        layer.saturation_aware = config.saturation_aware

    model.train_in_data_units()
    _epochs(model, data, config.float_epochs, config.float_lr, config, "float", history, progress, monitor)
    float_accuracy = _float_accuracy(model, data)
    model.fold_input_gain()
    monitor.float_norms = [row["grad_norm"] for row in history[-1]["gradient_health"]] if history else None

    float_deployed_accuracy = _host_accuracy(deploy_as_is(model, data), data)
    as_is = copy.deepcopy(model)  # a selection candidate: what a converter would ship
    formats = []
    if profile.is_fixed and config.calibrate_formats:
        formats = _calibrate_formats(model, data)
        history.append({"phase": "calibrate_formats", "layers": formats})
    best = BestState(model, x_heldout, y_heldout, as_is)
    blend = PotBlend(model, config.quant_epochs) if isinstance(profile.weights, PowerOfTwo) else None
    wage = None
    if TRAINING.get(profile.name) == "wageubn":
        from cqtf.train.wageubn import Wageubn

        wage = Wageubn(model, seed=config.seed)
    _epochs(model, data, config.quant_epochs, config.quant_lr, config, "quantized", history, progress, monitor,
            warmup=config.warmup_epochs, after_epoch=blend.wrap(lambda epoch: None) if blend else None, wage=wage)
    if blend:
        history.append(blend.finish())
    if config.quant_epochs > 0:
        best.score(config.quant_epochs)  # the trained network: one comparison, not one per epoch
    model, selected = best.restore()
    history.append(selected)

    int_model = export(model, data.input_shape, data.num_classes, config.profile)
    host_outputs = reference.run(int_model, data.x_test)
    training_outputs = logits_int8(model, data.x_test)
    if wage is not None:  # after the export: the deployed batch norm is WAGEUBN's quantized one
        wage.remove()
    if not np.array_equal(host_outputs, training_outputs):
        bad = np.argwhere(host_outputs != training_outputs)[0]
        raise AssertionError(f"training forward and host reference disagree at sample {bad[0]}, output {bad[1]}")
    host_accuracy = float((reference.predict(host_outputs) == data.y_test).mean())
    return TrainResult(float_accuracy, host_accuracy, float_deployed_accuracy, int_model, time.perf_counter() - started, history, config)
