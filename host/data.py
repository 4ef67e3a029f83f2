"""Data sets, split and quantized exactly as the device receives them.

Every sample goes to the device as int8 (NHWC). Training and the float baseline see the
dequantized values of those same int8 inputs, so all three accuracies are measured on identical data.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from cqtf.errors import DataError

DIGITS_TEST_SAMPLES = 360
SPLIT_SEED = 0


@dataclass(frozen=True)
class InputQuant:
    """int8 affine quantization of the model input: real = (q - zero_point) * scale."""

    scale: np.float32
    zero_point: int

    @staticmethod
    def from_range(lo: float, hi: float) -> "InputQuant":
        lo, hi = min(lo, 0.0), max(hi, 0.0)  # zero must be representable exactly
        scale = np.float32((hi - lo) / 255.0) if hi > lo else np.float32(1.0)
        zero_point = int(np.clip(round(-128 - lo / float(scale)), -128, 127))
        return InputQuant(scale, zero_point)

    def quantize(self, x: np.ndarray) -> np.ndarray:
        q = np.round(x.astype(np.float64) / float(self.scale)) + self.zero_point
        return np.clip(q, -128, 127).astype(np.int8)

    def dequantize(self, q: np.ndarray) -> np.ndarray:
        return ((q.astype(np.float32) - self.zero_point) * self.scale).astype(np.float32)


def fixed_input_quant(raw: InputQuant, frac_bits: int) -> InputQuant:
    """Inputs for a fixed-point profile: zero point 0, the data's largest magnitude mapped to 2^frac_bits
    (the value 1.0 in Q.frac_bits), from the affine quantization `raw` of the same data."""
    lo = (-128 - raw.zero_point) * float(raw.scale)
    hi = (127 - raw.zero_point) * float(raw.scale)
    return InputQuant(np.float32(max(abs(lo), abs(hi)) / 2.0 ** frac_bits), 0)


@dataclass
class Dataset:
    """A classification data set; inputs int8 NHWC as sent to the device, shape (N, H, W, C)."""

    name: str
    x_train: np.ndarray  # (N, H, W, C) int8
    y_train: np.ndarray  # (N,) int64
    x_test: np.ndarray  # (M, H, W, C) int8
    y_test: np.ndarray  # (M,) int64
    input_quant: InputQuant
    num_classes: int

    @property
    def input_shape(self) -> tuple[int, int, int]:
        return tuple(self.x_train.shape[1:])  # (H, W, C)


def hold_out(data: Dataset, fraction: float, seed: int) -> tuple[Dataset, np.ndarray, np.ndarray]:
    """(data without its held-out part, held-out inputs, held-out labels): a stratified share of the
    training split that training never sees, for choosing among trained states. fraction 0 holds
    out nothing (the held-out arrays are then the training split itself)."""
    if fraction <= 0:
        return data, data.x_train, data.y_train
    from sklearn.model_selection import train_test_split

    try:
        x_fit, x_held, y_fit, y_held = train_test_split(
            data.x_train, data.y_train, test_size=fraction, random_state=seed, stratify=data.y_train)
    except ValueError as e:  # too few samples of a class to stratify
        raise DataError(f"cannot hold out {fraction:.0%} of the training data: {e}",
                        "give more training samples per class, or --validation-fraction 0") from None
    fit = Dataset(data.name, x_fit, y_fit, data.x_test, data.y_test, data.input_quant, data.num_classes)
    return fit, x_held, y_held


def _quantize_split(name, x_train, y_train, x_test, y_test, input_quant: InputQuant | None = None) -> Dataset:
    """Quantize float splits; the input quantization comes from the training inputs unless given."""
    input_quant = input_quant or InputQuant.from_range(float(x_train.min()), float(x_train.max()))
    return Dataset(
        name=name,
        x_train=input_quant.quantize(x_train),
        y_train=y_train.astype(np.int64),
        x_test=input_quant.quantize(x_test),
        y_test=y_test.astype(np.int64),
        input_quant=input_quant,
        num_classes=int(max(y_train.max(), y_test.max()) + 1),
    )


def _digits_floats():
    from sklearn.datasets import load_digits as sk_load_digits
    from sklearn.model_selection import train_test_split

    bunch = sk_load_digits()
    x = bunch.images.astype(np.float32)[..., None]  # (1797, 8, 8, 1), values 0..16
    x_train, x_test, y_train, y_test = train_test_split(
        x, bunch.target, test_size=DIGITS_TEST_SAMPLES, random_state=SPLIT_SEED, stratify=bunch.target
    )
    return x_train, y_train, x_test, y_test


def _mnist1d_floats():
    """MNIST-1D generated from its templates in code (the package's make_dataset; nothing downloaded).

    4000 training and 1000 test sequences of length 40, the package's default arguments and seed.
    """
    try:
        from mnist1d.data import get_dataset_args, make_dataset
    except ImportError:
        raise DataError("the mnist1d package is not installed", "pip install mnist1d (a cqtf dependency)") from None
    data = make_dataset(get_dataset_args())
    to_nhwc = lambda x: np.asarray(x, dtype=np.float32)[:, None, :, None]  # noqa: E731  (N, L) -> (N, 1, L, 1)
    return to_nhwc(data["x"]), np.asarray(data["y"]), to_nhwc(data["x_test"]), np.asarray(data["y_test"])


def _npz_floats(path: Path):
    try:
        with np.load(path, allow_pickle=False) as f:
            arrays = {k: f[k] for k in ("x_train", "y_train", "x_test", "y_test")}
    except FileNotFoundError:
        raise DataError(f"data file not found: {path}", "give the path of an .npz file") from None
    except KeyError as e:
        raise DataError(f"{path} lacks array {e}", "it needs x_train, y_train, x_test, y_test") from None
    except Exception as e:  # zip/pickle/format errors from a corrupt file
        raise DataError(f"cannot read {path}: {e}", "is it an .npz written by numpy.savez?") from None
    for key in ("x_train", "x_test"):
        x = arrays[key]
        if x.ndim == 2:
            x = x[:, None, :, None]  # (N, L) -> (N, 1, L, 1)
        elif x.ndim == 3:
            x = x[..., None]
        if x.ndim != 4:
            raise DataError(f"{path}: {key} has shape {arrays[key].shape}", "use (N, H, W, C), (N, H, W) or (N, L)")
        arrays[key] = x.astype(np.float32)
    for x_key, y_key in (("x_train", "y_train"), ("x_test", "y_test")):
        if len(arrays[x_key]) != len(arrays[y_key]):
            raise DataError(f"{path}: {x_key} and {y_key} differ in length", "one label per sample")
    if arrays["x_train"].shape[1:] != arrays["x_test"].shape[1:]:
        raise DataError(f"{path}: x_train and x_test sample shapes differ", "both need the same (H, W, C)")
    return arrays["x_train"], arrays["y_train"], arrays["x_test"], arrays["y_test"]


def load_dataset(name: str, input_quant: InputQuant | None = None) -> Dataset:
    """'digits', 'mnist1d' or a path to an .npz (x_train, y_train, x_test, y_test; x as (N,H,W,C), (N,H,W) or (N,L)).

    Pass the model's `input_quant` when validating, so the test inputs are the bytes the model expects.
    """
    if name == "digits":
        return _quantize_split("digits", *_digits_floats(), input_quant=input_quant)
    if name == "mnist1d":
        return _quantize_split("mnist1d", *_mnist1d_floats(), input_quant=input_quant)
    if name.endswith(".npz"):
        return _quantize_split(Path(name).stem, *_npz_floats(Path(name)), input_quant=input_quant)
    raise DataError(f"unknown data set '{name}'", "use 'digits', 'mnist1d' or the path of an .npz file")
