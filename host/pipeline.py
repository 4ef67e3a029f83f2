"""The stages of a cqtf job, each reading the previous stage's files from a model directory.

A model directory holds: model.npz (the integer model), train.json (training figures),
cqtf_model.h (the packed header), firmware/<board>/ (builds), report.json/.md, confusion.png.
"""
from __future__ import annotations

import json
import logging
from dataclasses import dataclass
from pathlib import Path

from cqtf.data import InputQuant, fixed_input_quant, load_dataset
from cqtf.errors import DataError
from cqtf.model_ir import IntModel
from cqtf.pack.header import HEADER_NAME, write_header
from cqtf.profile import get_profile

log = logging.getLogger(__name__)
DEFAULT_BOARD = "mps2-an386"


@dataclass(frozen=True)
class ModelDir:
    root: Path

    @property
    def model(self) -> Path:
        return self.root / "model.npz"

    @property
    def train_json(self) -> Path:
        return self.root / "train.json"

    @property
    def header(self) -> Path:
        return self.root / HEADER_NAME

    def build_root(self, board: str) -> Path:
        return self.root / "firmware" / board

    def load_model(self) -> IntModel:
        return IntModel.load(self.model)

    def load_training(self) -> dict:
        if not self.train_json.exists():
            return {}
        try:
            return json.loads(self.train_json.read_text())
        except json.JSONDecodeError as e:
            raise DataError(f"{self.train_json} is corrupt ({e})", "re-run `cqtf train`") from None


def dataset_for_profile(dataset: str, profile: str):
    """The data set with its inputs quantized as a device of that profile receives them."""
    from cqtf.train.model import input_frac_bits

    arithmetic = get_profile(profile)  # unknown profiles: a clear error listing the presets
    data = load_dataset(dataset)
    if arithmetic.is_fixed:  # fixed point: inputs scaled to [-1, 1] in the profile's input format
        data = load_dataset(dataset, input_quant=fixed_input_quant(data.input_quant, input_frac_bits(arithmetic)))
    return data


def _train_config(model: str, profile: str, epochs: tuple[int, int] | None, validation_fraction: float | None,
                  seed: int | None = None):
    from cqtf.train.trainer import TrainConfig  # torch is slow to import: only when training

    config = TrainConfig(model=model, profile=profile)
    if seed is not None:
        config.seed = seed
    if epochs:
        config.float_epochs, config.quant_epochs = epochs
    if validation_fraction is not None:
        config.validation_fraction = validation_fraction
    return config


def train_stage(dataset: str, model: str, profile: str, out: ModelDir, epochs: tuple[int, int] | None = None,
                progress=lambda *a: None, validation_fraction: float | None = None, seed: int | None = None) -> dict:
    from cqtf.train.trainer import train

    data = dataset_for_profile(dataset, profile)
    result = train(data, _train_config(model, profile, epochs, validation_fraction, seed), progress)
    out.root.mkdir(parents=True, exist_ok=True)
    result.int_model.save(out.model)
    summary = result.summary(dataset)
    out.train_json.write_text(json.dumps(summary, indent=2) + "\n")
    return summary


def finished_training(out: ModelDir, dataset: str, model: str, profile: str,
                      epochs: tuple[int, int] | None = None, validation_fraction: float | None = None,
                      seed: int | None = None) -> dict | None:
    """The train.json of a training already in `out` with the settings train_stage would use now
    (epochs None: the default budget), for runs that resume or reuse; None when there is none, it is
    unreadable or any setting differs (a training from before a new setting existed included)."""
    from dataclasses import asdict

    try:
        summary = json.loads(out.train_json.read_text())
        same = summary["dataset"] == dataset and summary["config"] == asdict(_train_config(model, profile, epochs, validation_fraction, seed))
    except (OSError, ValueError, KeyError, TypeError):
        return None
    return summary if same and out.model.exists() else None


def pack_stage(model_dir: ModelDir) -> Path:
    return write_header(model_dir.load_model(), model_dir.root)


def build_stage(model_dir: ModelDir, board: str) -> Path:
    from cqtf.firmware_build import build_firmware

    if not model_dir.header.exists():
        pack_stage(model_dir)
    return build_firmware(board, model_dir.root.resolve(), model_dir.build_root(board).resolve())


def evaluation_split(model: IntModel, data: str):
    """The test inputs as the model expects them (its own input quantization) and their labels."""
    quant = InputQuant(model.input_scale, model.input_zero_point)
    dataset = load_dataset(data, input_quant=quant)
    if dataset.input_shape != tuple(model.input_shape):
        raise DataError(f"data '{data}' has samples of shape {dataset.input_shape}, the model takes "
                        f"{tuple(model.input_shape)}", "validate with the data set the model was trained on")
    return dataset.x_test, dataset.y_test
