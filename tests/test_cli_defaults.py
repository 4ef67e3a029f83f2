"""Which model and data set the CLI picks when one of them is not given."""
import pytest

from cqtf.cli import _dataset_and_model


@pytest.mark.parametrize("dataset, model, expected", [
    (None, None, ("digits", "digits_cnn")),
    ("mnist1d", None, ("mnist1d", "mnist1d_cnn")),  # the data set's own model, not digits_cnn (1x40 inputs)
    ("digits", None, ("digits", "digits_cnn")),
    (None, "mnist1d_cnn", ("mnist1d", "mnist1d_cnn")),
    (None, "ds_cnn", ("digits", "ds_cnn")),
    ("data/mine.npz", None, ("data/mine.npz", "digits_cnn")),
    ("mnist1d", "digits_cnn", ("mnist1d", "digits_cnn")),  # both given: as given (the model then says what is wrong)
])
def test_the_missing_one_follows_the_other(dataset, model, expected):
    assert _dataset_and_model(dataset, model) == expected


def test_train_seed_reaches_the_training(tmp_path):
    import json

    from cli_helpers import run_cli

    proc = run_cli("train", "--dataset", "digits", "--epochs", "1", "1", "--seed", "5", "--out", tmp_path)
    assert proc.returncode == 0, proc.stderr
    summary = json.loads((tmp_path / "train.json").read_text())
    assert summary["config"]["seed"] == 5 and summary["model"] == "digits_cnn"
    assert summary["config"]["validation_fraction"] == 0.0
