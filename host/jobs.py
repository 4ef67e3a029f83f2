"""Whole jobs: validate a device on a port, and the one-command run (train to report)."""
from __future__ import annotations

import contextlib
import logging
from pathlib import Path

from cqtf import oracle
from cqtf.campaign import PROGRESS_NAME, ProgressFile, data_digest
from cqtf.errors import DeviceError, Interrupted
from cqtf.firmware_build import firmware_footprint
from cqtf.link.device import Device
from cqtf.link.transport import open_port
from cqtf.pipeline import ModelDir, build_stage, pack_stage, evaluation_split, train_stage
from cqtf.report import build_report, write_report
from cqtf.validate import validate

log = logging.getLogger(__name__)


def validate_on_port(url: str | list[str], model_dir: ModelDir, data: str | None, out: Path, *, baud: int = 115200,
                     timeout: float = 5.0, instructions_per_tick: float | None = None, resume: bool = False,
                     window: int | None = None, retries: int = 3, reset: str | None = None,
                     progress: bool = True, footprint: dict | None = None) -> dict:
    """Validate the device(s) behind `url` (one URL or several, sharing the samples) against the
    model directory; writes and returns the report. Results are saved to OUT/progress.jsonl as
    they arrive and `resume` continues from there; the report appears whole, at the end, or not.
    `footprint` (cqtf.firmware_build.firmware_footprint of the flashed ELF) adds flash and RAM."""
    urls = [url] if isinstance(url, str) else list(url)
    model = model_dir.load_model()
    training = model_dir.load_training()
    data = data or training.get("dataset", "digits")
    x_test, y_test = evaluation_split(model, data)
    out = Path(out)
    store = ProgressFile(out / PROGRESS_NAME, {"model_hash": model.hash(), "data": data_digest(x_test, y_test),
                                               "samples": len(x_test)}, resume=resume)
    devices = []
    try:
        for u in urls:
            port = open_port(u, baudrate=baud, reset=reset)
            device = Device(port, timeout=timeout, retries=retries,
                            reopen=lambda u=u: open_port(u, baudrate=baud))
            devices.append(device)
            device.sync()
        result = validate(devices, model, x_test, y_test, store=store, window=window, names=urls,
                          progress=progress)
    except KeyboardInterrupt:
        raise Interrupted(f"interrupted: {len(store.done)} of {len(x_test)} samples done, saved in {store.path}",
                          "run the same command with --resume to continue") from None
    finally:
        store.close()
        for device in devices:
            device.port.close()
    if instructions_per_tick is None:
        instructions_per_tick = _instructions_per_tick(result.device_info.board)
    report = build_report(
        result, model_hash=model.hash(), dataset=data, model_name=model.name, profile=model.profile,
        num_classes=model.num_classes, float_accuracy=training.get("float_accuracy"),
        training_host_accuracy=training.get("host_accuracy"), instructions_per_tick=instructions_per_tick,
        output_scale=model.output_scale, output_zero_point=model.output_zero_point)
    report["campaign"]["duplicated_results"] = store.duplicates
    # TFLite Micro's interpreter on the same samples: an oracle outside cqtf (writes out/model.tflite)
    out.mkdir(parents=True, exist_ok=True)
    report.update(oracle.report_keys(model, x_test, result.device_outputs, out))
    footprint = footprint or {}
    report.update(flash_bytes=footprint.get("flash_bytes"), ram_bytes=footprint.get("ram_bytes"),
                  footprint=footprint or None)
    write_report(report, out)
    store.remove()
    return report


def _instructions_per_tick(board: str) -> float | None:
    """Only an emulated board's timer counts instructions (QEMU -icount); a real board's counts time."""
    from cqtf.emulator import BOARDS

    spec = BOARDS.get(board)
    return getattr(spec, "instructions_per_tick", None) if spec else None


def run_all(out: Path, dataset: str, model_name: str, profile: str, board: str, epochs=None,
            progress=lambda *a: None, jobs: int = 1, validation_fraction: float | None = None,
            seed: int | None = None) -> dict:
    from cqtf.emulator import emulate, get_board, require_qemu
    from cqtf.pio_offline import default_core_dir, prepare

    get_board(board)  # every missing piece is reported before minutes of training
    require_qemu()
    prepare(default_core_dir())
    model_dir = ModelDir(Path(out))
    log.info("training")
    train_stage(dataset, model_name, profile, model_dir, epochs, progress, validation_fraction, seed)
    pack_stage(model_dir)
    elf = build_stage(model_dir, board)
    footprint = firmware_footprint(elf, model_dir.root)
    with contextlib.ExitStack() as stack:
        emulators = [stack.enter_context(emulate(board, elf)) for _ in range(max(1, jobs))]
        try:
            return validate_on_port([e.url for e in emulators], model_dir, dataset, model_dir.root,
                                    footprint=footprint)
        except DeviceError as e:
            e.message += f" (emulator log: {', '.join(str(em.log_path) for em in emulators)})"
            raise
