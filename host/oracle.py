"""TFLite Micro as an external oracle: its own interpreter (the tflite-micro package, TFLM's reference
kernels compiled for the host) runs the exported .tflite, and every output is compared with cqtf's.

Where outputs differ, the sample is run again with every tensor kept, and the first layer whose
tensor differs from the host reference is named with its first differing (h, w, c) element.
"""
from __future__ import annotations

import contextlib
import os
import re
import tempfile
from dataclasses import asdict, dataclass, field

import numpy as np

from cqtf import reference
from cqtf.model_ir import IntModel
from cqtf.tflite_export import export_tflite, layer_output_tensors

# Generous for the models cqtf targets; minimum_arena_size() finds the real need.
DEFAULT_ARENA = 1 << 20


def available() -> str | None:
    """None when the tflite-micro interpreter can run, else why not (a note for reports)."""
    try:
        from tflite_micro import runtime  # noqa: F401
        import flatbuffers  # noqa: F401
    except ImportError as e:
        return f"tflite-micro is not installed ({e.name}); pip install -e '.[oracle]'"
    return None


def version() -> str | None:
    try:
        import tflite_micro
    except ImportError:
        return None
    return tflite_micro.__version__


def interpreter(model_bytes: bytes, arena_size: int = DEFAULT_ARENA, keep_tensors: bool = False):
    from tflite_micro import runtime

    config = runtime.InterpreterConfig.kPreserveAllTensors if keep_tensors else \
        runtime.InterpreterConfig.kAllocationRecording
    return runtime.Interpreter.from_bytes(model_bytes, arena_size=arena_size, intrepreter_config=config)


def run_tflm(model_bytes: bytes, x: np.ndarray, arena_size: int = DEFAULT_ARENA) -> np.ndarray:
    """TFLM's int8 outputs (N, outputs) for inputs x (N, H, W, C) int8."""
    interp = interpreter(model_bytes, arena_size)
    outputs = []
    for sample in x:
        interp.set_input(sample[None].astype(np.int8), 0)
        interp.invoke()
        outputs.append(np.asarray(interp.get_output(0), dtype=np.int8).reshape(-1))
    return np.stack(outputs)


@dataclass(frozen=True)
class OracleMismatch:
    """Where TFLM first departs from the host reference on one sample."""

    sample: int
    layer: int  # -1: every layer tensor agreed (the difference is in the output alone)
    layer_kind: str
    element: tuple[int, ...]  # (h, w, c) of the layer's NHWC output
    tflm_value: int
    host_value: int
    differing_elements: int


@dataclass
class OracleResult:
    tflm_outputs: np.ndarray  # (N, outputs) int8
    host_outputs: np.ndarray  # (N, outputs) int8, cqtf's host reference
    mismatches: list[OracleMismatch] = field(default_factory=list)  # the first few, localized

    @property
    def host_mismatched(self) -> np.ndarray:
        return np.any(self.tflm_outputs != self.host_outputs, axis=1)

    def mismatched_against(self, outputs: np.ndarray) -> np.ndarray:
        """Per sample: does `outputs` (e.g. the device's) differ from TFLM in any byte?"""
        return np.any(np.asarray(outputs, np.int8).reshape(self.tflm_outputs.shape) != self.tflm_outputs, axis=1)


def localize(model: IntModel, model_bytes: bytes, sample: int, x: np.ndarray) -> OracleMismatch:
    """Run one sample with every tensor kept; the first layer whose tensor differs from the host's."""
    interp = interpreter(model_bytes, keep_tensors=True)
    interp.set_input(x[None].astype(np.int8), 0)
    interp.invoke()
    host_layers = reference.run_layers(model, x[None])
    for k, (tensor, host) in enumerate(zip(layer_output_tensors(model), host_layers)):
        got = np.asarray(interp.GetTensor(tensor, 0)["tensor_data"], np.int8).reshape(model.layers[k].out_shape)
        want = host.reshape(model.layers[k].out_shape)
        diff = np.argwhere(got != want)
        if len(diff):
            where = tuple(int(v) for v in diff[0])
            return OracleMismatch(sample, k, model.layers[k].kind, where, int(got[where]), int(want[where]), len(diff))
    return OracleMismatch(sample, -1, "", (), 0, 0, 0)


def compare(model: IntModel, x: np.ndarray, model_bytes: bytes | None = None, localize_first: int = 10) -> OracleResult:
    """TFLM against cqtf's host reference on every sample of x; the first differing samples localized."""
    model_bytes = model_bytes if model_bytes is not None else export_tflite(model)
    result = OracleResult(run_tflm(model_bytes, x), reference.run(model, x))
    for sample in np.flatnonzero(result.host_mismatched)[:localize_first]:
        result.mismatches.append(localize(model, model_bytes, int(sample), x[sample]))
    return result


@contextlib.contextmanager
def _captured_stderr():
    """The C++ side prints to file descriptor 2: capture it there, not in sys.stderr."""
    with tempfile.TemporaryFile(mode="w+b") as tmp:
        saved = os.dup(2)
        os.dup2(tmp.fileno(), 2)
        text = []
        try:
            yield text
        finally:
            os.dup2(saved, 2)
            os.close(saved)
            tmp.seek(0)
            text.append(tmp.read().decode(errors="replace"))


def _works(model_bytes: bytes, x: np.ndarray, arena_size: int) -> bool:
    try:
        with _captured_stderr():  # a too-small arena makes TFLM print its allocation failure
            interp = interpreter(model_bytes, arena_size)
            interp.set_input(x[None].astype(np.int8), 0)
            interp.invoke()
    except (RuntimeError, ValueError):
        return False
    return True


def minimum_arena_size(model_bytes: bytes, x: np.ndarray, hi: int = DEFAULT_ARENA) -> int:
    """The smallest arena_size (bytes) with which the interpreter allocates and invokes, by bisection.

    Measured on this host: TFLM's persistent structures hold pointers, so on a 32-bit Cortex-M
    the same model needs somewhat less (see arena_usage for the split)."""
    lo = 0  # fails
    if not _works(model_bytes, x, hi):
        raise RuntimeError(f"the TFLM interpreter does not run this model even with a {hi}-byte arena")
    while hi - lo > 1:
        mid = (lo + hi) // 2
        lo, hi = (lo, mid) if _works(model_bytes, x, mid) else (mid, hi)
    return hi


_ALLOCATION = re.compile(r"Arena allocation (total|head|tail) (\d+) bytes")


def arena_usage(model_bytes: bytes, x: np.ndarray, arena_size: int = DEFAULT_ARENA) -> dict[str, int]:
    """TFLM's RecordingMicroAllocator figures after one invoke: total, head (the planned tensors and
    scratch: the non-persistent part) and tail (persistent: tensor and node structs, quantization
    arrays) in bytes."""
    interp = interpreter(model_bytes, arena_size)
    interp.set_input(x[None].astype(np.int8), 0)
    interp.invoke()
    with _captured_stderr() as text:
        interp.print_allocations()
    return {key: int(value) for key, value in _ALLOCATION.findall(text[0] if text else "")}


def report_keys(model: IntModel, x: np.ndarray, device_outputs: np.ndarray, out_dir) -> dict:
    """The report's TFLM keys; writes out_dir/model.tflite. Without tflite-micro, or for a model that
    has no faithful .tflite, the counts are None and `tflm_note` says why (never an exception)."""
    from pathlib import Path

    from cqtf.tflite_export import TFLITE_NAME, ExportError, overflow_risks

    keys = {"tflm_mismatched_samples": None, "tflm_host_mismatched_samples": None, "tflm_mismatches": [],
            "tflm_overflow_risks": [], "tflm_version": version(), "tflm_note": None}
    if model.profile != "int8":
        keys["tflm_note"] = f"profile {model.profile} has no TFLite Micro equivalent"
        return keys
    keys["tflm_note"] = available()
    if keys["tflm_note"]:
        return keys
    try:
        model_bytes = export_tflite(model)
    except ExportError as e:
        keys["tflm_note"] = f"not exported to .tflite: {e.message}"
        return keys
    (Path(out_dir) / TFLITE_NAME).write_bytes(model_bytes)
    result = compare(model, x, model_bytes)
    keys.update(
        tflm_mismatched_samples=int(result.mismatched_against(device_outputs).sum()),
        tflm_host_mismatched_samples=int(result.host_mismatched.sum()),
        tflm_mismatches=[asdict(m) for m in result.mismatches],
        tflm_overflow_risks=overflow_risks(model))
    return keys
