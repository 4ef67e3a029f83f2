"""Run any IntModel on an emulated board: pack, build, boot QEMU, stream the test set, compare."""
from __future__ import annotations

from pathlib import Path

import numpy as np

from cqtf.link.device import connect
from cqtf.model_ir import IntModel
from cqtf.pipeline import ModelDir, build_stage, pack_stage
from cqtf.validate import ValidationResult, validate


def deploy_and_validate(model: IntModel, x_test: np.ndarray, y_test: np.ndarray, board: str,
                        workdir: Path) -> ValidationResult:
    """The device's outputs for every test sample, checked against the host reference of `model`."""
    from cqtf.emulator import emulate

    model_dir = ModelDir(Path(workdir))
    model_dir.root.mkdir(parents=True, exist_ok=True)
    model.save(model_dir.model)
    pack_stage(model_dir)
    elf = build_stage(model_dir, board)
    with emulate(board, elf) as emulated, connect(emulated.url) as device:
        return validate(device, model, x_test, y_test, progress=False)
