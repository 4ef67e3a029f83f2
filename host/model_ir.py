"""The integer model: what the device executes, layer by layer, in the device's layout.

Training exports it, the packer turns it into C, the host reference runs it. It holds integers only
(plus the float scales, kept for reports and exports; the device never sees them). Field meanings
mirror `cqtf_layer_t` in firmware/src/cqtf_types.h.
"""
from __future__ import annotations

import hashlib
import json
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

from cqtf.errors import DataError

FORMAT_VERSION = 2  # == CQTF_FORMAT_VERSION in firmware/src/cqtf_types.h
LAYER_KINDS = ("conv2d", "maxpool2d", "fully_connected", "depthwise_conv2d", "avgpool2d", "add")
_ARRAYS = {"weights": np.int8, "bias": np.int32, "multiplier": np.int32, "shift": np.int32}


@dataclass
class IntLayer:
    kind: str  # one of LAYER_KINDS
    in_shape: tuple[int, int, int]  # (H, W, C)
    out_shape: tuple[int, int, int]
    kernel: tuple[int, int] = (1, 1)
    stride: tuple[int, int] = (1, 1)
    pad: tuple[int, int] = (0, 0)  # (top, left); bottom/right follow from the shapes
    input_offset: int = 0  # -input zero point
    output_offset: int = 0  # output zero point
    act_min: int = -128
    act_max: int = 127
    weights: np.ndarray | None = None  # conv: (O, KH, KW, I); fc: (O, H*W*C in NHWC order); depthwise: (1, KH, KW, C)
    bias: np.ndarray | None = None  # (O,) int32
    multiplier: np.ndarray | None = None  # (O,) Q31
    shift: np.ndarray | None = None  # (O,) > 0 is a left shift (fixed point: acc frac - out frac = -shift)
    acc_shift: int = 0  # fixed point: product fraction bits - accumulator fraction bits (block rounding)
    scales: dict = field(default_factory=dict)  # float32 input/weight/output scales, for reports
    # Graph edges: the tensors the layer reads, 0 = the model input, i + 1 = layer i's output; None =
    # (index,), the previous layer's output. add reads two, of the same shape (in_shape).
    inputs: tuple[int, ...] | None = None
    input_b_offset: int = 0  # add: minus the second input's zero point (input_offset is the first's)
    # add: multiplier (3,) Q31 and shift (3,) rescale input 0, input 1 and the sum (TFLM ADD); fixed
    # point: shift (3,) = left shifts of input 0 and 1 to a common format, then the sum's shift.


# Fields added after format 2: they enter the hash only when set, so older models keep their hash.
_OPTIONAL_FIELDS = {"inputs": None, "input_b_offset": 0}


@dataclass
class IntModel:
    name: str
    profile: str
    input_shape: tuple[int, int, int]  # (H, W, C)
    input_scale: float
    input_zero_point: int
    output_scale: float
    output_zero_point: int
    num_classes: int
    layers: list[IntLayer]
    arithmetic: dict | None = None  # the profile's parameters (cqtf.profile.Profile.to_dict); None: the preset

    def __post_init__(self):
        from cqtf.profile import get_profile

        if self.arithmetic is None:
            self.arithmetic = get_profile(self.profile).to_dict()

    @property
    def arithmetic_profile(self):
        """The cqtf.profile.Profile this model's integers were computed for."""
        from cqtf.profile import Profile

        return Profile.from_dict(self.arithmetic)

    @property
    def input_size(self) -> int:
        return int(np.prod(self.input_shape))

    @property
    def output_size(self) -> int:
        return int(np.prod(self.layers[-1].out_shape))

    def layer_inputs(self, index: int) -> tuple[int, ...]:
        """The tensors layer `index` reads (0 = the model input, i + 1 = layer i's output)."""
        inputs = self.layers[index].inputs
        return tuple(inputs) if inputs is not None else (index,)

    @property
    def tensor_max(self) -> int:
        return max([self.input_size] + [int(np.prod(layer.out_shape)) for layer in self.layers])

    def hash(self) -> str:
        """SHA-256 (hex) of everything that determines the device's integer outputs."""
        digest = hashlib.sha256()
        digest.update(json.dumps(self._canonical_meta(), sort_keys=True).encode())
        for layer in self.layers:
            for key, dtype in _ARRAYS.items():
                array = getattr(layer, key)
                if array is not None:
                    digest.update(np.ascontiguousarray(array, dtype=np.dtype(dtype).newbyteorder("<")).tobytes())
        return digest.hexdigest()

    def _canonical_meta(self) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "profile": self.profile,
            "arithmetic": self.arithmetic,
            "input_shape": list(self.input_shape),
            "input_zero_point": self.input_zero_point,
            "input_scale": float(np.float32(self.input_scale)),
            "layers": [
                {k: (list(v) if isinstance(v, tuple) else v) for k, v in asdict(layer).items()
                 if k not in _ARRAYS and k != "scales" and not (k in _OPTIONAL_FIELDS and v == _OPTIONAL_FIELDS[k])}
                for layer in self.layers
            ],
        }

    def save(self, path: Path) -> None:
        meta = {
            "format_version": FORMAT_VERSION,
            "hash": self.hash(),
            **{k: v for k, v in asdict(self).items() if k != "layers"},
            "layers": [{k: v for k, v in asdict(layer).items() if k not in _ARRAYS} for layer in self.layers],
        }
        arrays = {"meta": np.frombuffer(json.dumps(meta, default=_json_default).encode(), dtype=np.uint8)}
        for i, layer in enumerate(self.layers):
            for key in _ARRAYS:
                if getattr(layer, key) is not None:
                    arrays[f"l{i}_{key}"] = getattr(layer, key)
        np.savez(path, **arrays)

    @staticmethod
    def load(path: Path) -> "IntModel":
        try:
            with np.load(path, allow_pickle=False) as f:
                meta = json.loads(f["meta"].tobytes())
                arrays = {k: f[k] for k in f.files if k != "meta"}
        except FileNotFoundError:
            raise DataError(f"model file not found: {path}", "run `cqtf train` first, or give --model DIR") from None
        except Exception as e:
            raise DataError(f"cannot read model {path}: {e}", "the file is corrupt; re-run `cqtf train`") from None
        if meta.get("format_version") != FORMAT_VERSION:
            raise DataError(f"{path} has model format {meta.get('format_version')}, this cqtf reads {FORMAT_VERSION}",
                            "re-run `cqtf train` with this version")
        layers = []
        for i, lm in enumerate(meta.pop("layers")):
            for key in ("in_shape", "out_shape", "kernel", "stride", "pad"):
                lm[key] = tuple(lm[key])
            if lm.get("inputs") is not None:
                lm["inputs"] = tuple(lm["inputs"])
            for key, dtype in _ARRAYS.items():
                lm[key] = arrays[f"l{i}_{key}"].astype(dtype) if f"l{i}_{key}" in arrays else None
            layers.append(IntLayer(**lm))
        expected_hash = meta.pop("hash")
        meta.pop("format_version")
        meta["input_shape"] = tuple(meta["input_shape"])
        model = IntModel(layers=layers, **meta)
        if model.hash() != expected_hash:
            raise DataError(f"model {path} does not match its recorded hash", "the file is corrupt; re-run `cqtf train`")
        return model


def _json_default(value):
    if isinstance(value, (np.floating, np.integer)):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    raise TypeError(f"cannot serialize {type(value)}")
