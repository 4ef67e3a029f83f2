"""Stream a test set through a device and compare every output byte with the host simulation.

A mismatching sample is localized: the device is asked for each layer's output in turn until the
first layer whose tensor differs from the host reference, and the first differing element is named.
"""
from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
from tqdm import tqdm

from cqtf import reference
from cqtf.campaign import CampaignStats, ProgressFile, run_campaign
from cqtf.errors import DeviceError, ModelMismatchError
from cqtf.link.device import Device, DeviceInfo, Recovery
from cqtf.link.frame import LinkStats
from cqtf.model_ir import IntModel


@dataclass(frozen=True)
class LayerMismatch:
    """Where a device output first departs from the host simulation."""

    sample: int
    layer: int  # index in the layer table; -1 if every layer agreed when re-asked
    layer_kind: str
    element: tuple[int, int, int]  # (h, w, c) in the layer's NHWC output
    device_value: int
    host_value: int
    differing_elements: int  # in that layer's tensor


@dataclass
class ValidationResult:
    device_info: DeviceInfo
    labels: np.ndarray  # (N,)
    device_outputs: np.ndarray  # (N, outputs) int8
    host_outputs: np.ndarray  # (N, outputs) int8
    ticks: np.ndarray  # (N,) the board's timer ticks per inference
    seconds: float
    link: LinkStats
    mismatches: list[LayerMismatch] = field(default_factory=list)
    recovery: Recovery = field(default_factory=Recovery)
    campaign: CampaignStats | None = None
    samples_timed: int | None = None  # samples inferred in `seconds` (fewer than all when resumed)

    @property
    def samples(self) -> int:
        return len(self.labels)

    @property
    def mismatched(self) -> np.ndarray:
        return np.any(self.device_outputs != self.host_outputs, axis=1)

    @property
    def device_predictions(self) -> np.ndarray:
        return reference.predict(self.device_outputs)

    @property
    def host_predictions(self) -> np.ndarray:
        return reference.predict(self.host_outputs)

    @property
    def device_accuracy(self) -> float:
        return float((self.device_predictions == self.labels).mean())

    @property
    def host_accuracy(self) -> float:
        return float((self.host_predictions == self.labels).mean())


def check_model(info: DeviceInfo, model: IntModel) -> None:
    """Refuse to validate a device that carries another model than the host's."""
    expected = model.hash()[:16]
    if info.model_hash != expected:
        raise ModelMismatchError(
            f"the device runs model {info.model_hash} ({info.model_name}), the host model is {expected} ({model.name})",
            "rebuild and flash the firmware for this model (`cqtf build`), or point --model at the matching directory")
    if info.profile != model.profile:
        raise ModelMismatchError(f"the device computes with profile {info.profile!r}, the host model uses "
                                 f"{model.profile!r}", "rebuild the firmware with `cqtf build`")
    if (info.input_size, info.output_size, info.num_layers) != (model.input_size, model.output_size, len(model.layers)):
        raise ModelMismatchError(
            f"device model shape (in {info.input_size}, out {info.output_size}, {info.num_layers} layers) differs "
            f"from the host model's", "rebuild the firmware with `cqtf build`")


def locate_mismatch(device: Device, model: IntModel, sample: int, x: np.ndarray) -> LayerMismatch:
    host_layers = reference.run_layers(model, x[None])
    for k, layer in enumerate(model.layers):
        device_tensor = np.frombuffer(device.infer(x.tobytes(), layer=k).output, dtype=np.int8)
        host_tensor = host_layers[k].reshape(-1)
        differs = np.flatnonzero(device_tensor != host_tensor) if device_tensor.size == host_tensor.size else [0]
        if len(differs):
            flat = int(differs[0])
            h, w, c = layer.out_shape
            element = (flat // (w * c), (flat // c) % w, flat % c)
            device_value = int(device_tensor[flat]) if flat < device_tensor.size else 0
            return LayerMismatch(sample, k, layer.kind, element, device_value, int(host_tensor[flat]), len(differs))
    return LayerMismatch(sample, -1, "", (0, 0, 0), 0, 0, 0)


def validate(device: Device | list[Device], model: IntModel, x_test: np.ndarray, y_test: np.ndarray,
             progress: bool = True, max_localized: int = 10, store: ProgressFile | None = None,
             window: int | None = None, names: list[str] | None = None) -> ValidationResult:
    """Run every sample on the device(s); x_test is int8 (N, H, W, C) as the model expects.

    Several devices share the samples (a campaign); `store` keeps each result as it arrives and
    holds those of an interrupted run when resuming. Requests are pipelined up to `window` (by
    default what the device's receive buffer holds)."""
    devices = device if isinstance(device, list) else [device]
    for dut in devices:
        dut.check = lambda info: check_model(info, model)
        dut.info()  # handshake and model check on every device before any sample
    host_outputs = reference.run(model, x_test)
    store = store or ProgressFile(None, {}, resume=False)
    started = time.perf_counter()
    resumed_before = len(store.done)
    campaign = run_campaign(devices, x_test, store, names=names, window=window, progress=progress)
    seconds = time.perf_counter() - started
    device_outputs = np.zeros_like(host_outputs)
    ticks = np.zeros(len(x_test), dtype=np.int64)
    for i, (output, tick) in store.done.items():
        if len(output) != model.output_size:
            raise DeviceError(f"sample {i}: device sent {len(output)} output bytes, the model has "
                              f"{model.output_size}", "rebuild the firmware with `cqtf build`")
        device_outputs[i] = np.frombuffer(output, dtype=np.int8)
        ticks[i] = tick
    link, recovery = LinkStats(), Recovery()
    for dut in devices:
        for name in vars(link):
            setattr(link, name, getattr(link, name) + getattr(dut.link_stats, name))
        for name in vars(recovery):
            setattr(recovery, name, getattr(recovery, name) + getattr(dut.recovery, name))
    # the rate of this run only: samples done before a resume took no time here
    done_now = len(x_test) - resumed_before
    result = ValidationResult(devices[0].last_info, y_test, device_outputs, host_outputs, ticks, seconds, link,
                              recovery=recovery, campaign=campaign)
    result.samples_timed = done_now
    for i in np.flatnonzero(result.mismatched)[:max_localized]:
        result.mismatches.append(locate_mismatch(devices[0], model, int(i), x_test[i]))
    return result
