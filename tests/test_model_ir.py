"""The integer model file: exact round trip, a hash that sees every integer, clear errors on bad files."""
import numpy as np
import pytest

from cqtf.errors import DataError
from cqtf.model_ir import IntModel


def test_round_trip_preserves_everything(trained_dir, tmp_path):
    model = trained_dir.load_model()
    model.save(tmp_path / "copy.npz")
    again = IntModel.load(tmp_path / "copy.npz")
    assert again.hash() == model.hash()
    for a, b in zip(model.layers, again.layers):
        assert a.kind == b.kind and a.in_shape == b.in_shape and a.out_shape == b.out_shape
        for key in ("weights", "bias", "multiplier", "shift"):
            left, right = getattr(a, key), getattr(b, key)
            assert (left is None and right is None) or (np.array_equal(left, right) and left.dtype == right.dtype)


@pytest.mark.parametrize("field", ["weights", "bias", "multiplier", "shift"])
def test_hash_changes_with_one_integer(trained_dir, field):
    model = trained_dir.load_model()
    before = model.hash()
    getattr(model.layers[0], field).flat[0] += 1
    assert model.hash() != before


def test_hash_changes_with_an_offset(trained_dir):
    model = trained_dir.load_model()
    before = model.hash()
    model.layers[-1].output_offset += 1
    assert model.hash() != before


def test_corrupt_file_is_a_clear_error(tmp_path):
    bad = tmp_path / "model.npz"
    bad.write_bytes(b"not a zip file")
    with pytest.raises(DataError, match="cannot read model"):
        IntModel.load(bad)


def test_tampered_file_fails_its_hash(trained_dir, tmp_path):
    with np.load(trained_dir.model) as f:
        arrays = dict(f)
    arrays["l0_weights"] = arrays["l0_weights"].copy()
    arrays["l0_weights"].flat[0] ^= 1
    np.savez(tmp_path / "model.npz", **arrays)
    with pytest.raises(DataError, match="does not match its recorded hash"):
        IntModel.load(tmp_path / "model.npz")


def test_missing_file_names_the_fix(tmp_path):
    with pytest.raises(DataError, match="cqtf train"):
        IntModel.load(tmp_path / "nope.npz")
