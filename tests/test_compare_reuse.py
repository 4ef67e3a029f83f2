"""compare_frameworks.py --reuse-cqtf: a model trained elsewhere is taken only when its settings match."""
import importlib.util
import json
from dataclasses import asdict
from pathlib import Path

import pytest

SCRIPT = Path(__file__).resolve().parent.parent / "benchmarks" / "compare_frameworks.py"


@pytest.fixture(scope="module")
def compare():
    spec = importlib.util.spec_from_file_location("compare_frameworks", SCRIPT)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def _trained(root: Path, dataset="digits", model="digits_cnn", profile="int8", epochs=(40, 20), with_model=True,
             **settings):
    from cqtf.train.trainer import TrainConfig

    folder = root / dataset / profile
    folder.mkdir(parents=True)
    config = asdict(TrainConfig(model=model, profile=profile, float_epochs=epochs[0], quant_epochs=epochs[1]))
    config.update(settings)
    config = {k: v for k, v in config.items() if v is not None}  # None: a setting the training predates
    (folder / "train.json").write_text(json.dumps({"dataset": dataset, "config": config, "host_accuracy": 0.9}))
    if with_model:
        (folder / "model.npz").write_bytes(b"")
    return folder


def test_a_model_with_the_same_settings_is_reused(compare, tmp_path):
    folder = _trained(tmp_path)
    model_dir, summary = compare._trained_before(tmp_path, "digits", "digits_cnn", "int8", (40, 20))
    assert model_dir.root == folder and summary["host_accuracy"] == 0.9


@pytest.mark.parametrize("change", [dict(epochs=(4, 2)), dict(model="ds_cnn"), dict(with_model=False),
                                    dict(validation_fraction=0.3), dict(validation_fraction=None)])
def test_other_settings_or_no_model_mean_training_again(compare, tmp_path, change):
    _trained(tmp_path, **change)
    assert compare._trained_before(tmp_path, "digits", "digits_cnn", "int8", (40, 20)) is None


def test_no_directory_or_a_corrupt_summary_mean_training_again(compare, tmp_path):
    assert compare._trained_before(None, "digits", "digits_cnn", "int8", (40, 20)) is None
    assert compare._trained_before(tmp_path, "digits", "digits_cnn", "int8", (40, 20)) is None
    folder = _trained(tmp_path)
    (folder / "train.json").write_text("{not json")
    assert compare._trained_before(tmp_path, "digits", "digits_cnn", "int8", (40, 20)) is None
