"""Hardware-in-the-loop suite: options, the test matrix, trained models, and the agreement summary.

    pytest hil_tests                         default board (mps2-an386), default model and profile
    pytest hil_tests --target mps2-an385     every zoo model x profile on that emulated board
    pytest hil_tests --target emulated       ... on every emulated board
    pytest hil_tests --target nucleo_f446re --port /dev/ttyACM0     a real board: flash, then validate
    pytest hil_tests --port socket://127.0.0.1:4444 --no-flash --model-dir runs/default
                                             a device that already runs runs/default's model

Every validation reports device-vs-host agreement: as junit properties (record_property), in the
summary printed at the end of the run, and as JSON with --hil-report PATH.
"""
from __future__ import annotations

import json
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pytest

from hil_tests import matrix
from hil_tests.matrix import Combo

QUICK_EPOCHS = (2, 1)  # agreement, not accuracy, is under test: a real but quickly trained network


def _addoption(group, *names, **kwargs) -> None:
    """Adds an option unless another conftest (run in the same session) already defines it."""
    try:
        group.addoption(*names, **kwargs)
    except ValueError:
        pass


def pytest_addoption(parser):
    group = parser.getgroup("cqtf hil", "hardware-in-the-loop tests (hil_tests/)")
    _addoption(group, "--target", action="append", dest="hil_targets", default=[], metavar="BOARD",
               help="board environment of platformio.ini to run on (repeatable; 'emulated' = every emulated "
                    "board). Any --target or --port runs every zoo model x profile; without, the default board "
                    "with the default model and profile.")
    _addoption(group, "--port", dest="hil_port", default=None, metavar="URL",
               help="serial port or pyserial URL of a real board (or of a separately started emulator)")
    _addoption(group, "--upload-port", dest="hil_upload_port", default=None,
               help="passed to `pio run -t upload` when flashing a real board")
    _addoption(group, "--no-flash", dest="hil_no_flash", action="store_true",
               help="with --port: do not flash, the device already runs the model")
    _addoption(group, "--model-dir", dest="hil_model_dir", default=None, metavar="DIR",
               help="validate this model directory (cqtf train/pack output) instead of training the zoo")
    _addoption(group, "--hil-epochs", dest="hil_epochs", nargs=2, type=int, default=list(QUICK_EPOCHS),
               metavar=("FLOAT", "QUANT"), help=f"training epochs of each zoo model (default {QUICK_EPOCHS})")
    _addoption(group, "--hil-report", dest="hil_report", default=None, metavar="PATH",
               help="write the agreement of every validation as JSON")
    _addoption(group, "--baud", dest="hil_baud", type=int, default=115200, help="baud rate of --port")


def _option(config, dest: str, fallback: str, default=None):
    """The value of our option, or of a same-named one another conftest registered first."""
    value = config.getoption(dest, default=None)
    return config.getoption(fallback, default=default) if value is None else value


@dataclass
class HilConfig:
    targets: list[str]
    combos: list[Combo]
    port: str | None
    flash: bool
    upload_port: str | None
    model_dir: Path | None
    epochs: tuple[int, int]
    report: Path | None
    baud: int
    unpacked_profiles: list[str] = field(default_factory=list)
    rows: list[dict] = field(default_factory=list)

    def record(self, row: dict) -> None:
        """Keep a measured row, and rewrite the report with it: a run stopped midway keeps what it measured."""
        self.rows.append(row)
        self.write_report(complete=False)

    def write_report(self, complete: bool) -> None:
        if self.report is None:
            return
        from cqtf.report import write_atomic

        self.report.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(self.report, json.dumps({"results": self.rows, "unpacked_profiles": self.unpacked_profiles,
                                              "complete": complete}, indent=2) + "\n")


_HIL = pytest.StashKey[HilConfig]()


def _resolve_targets(requested: list[str], port: str | None) -> list[str]:
    if not requested:
        return matrix.default_targets()
    targets: list[str] = []
    for name in requested:
        names = matrix.emulated_targets() if name == "emulated" else [name]
        targets += [t for t in names if t not in targets]
    known = matrix.board_envs()
    for target in targets:
        if target not in known:
            raise pytest.UsageError(f"--target {target}: not an environment of platformio.ini ({', '.join(known)})")
        if not port and not matrix.is_emulated(target):
            raise pytest.UsageError(f"--target {target} is a real board: give its serial port with --port")
    return targets


def _hil_config(config) -> HilConfig:
    requested = list(_option(config, "hil_targets", "target", []) or [])
    port = _option(config, "hil_port", "port")
    model_dir = _option(config, "hil_model_dir", "model_dir")
    if port and len(requested) > 1:
        raise pytest.UsageError("--port names one board: give at most one --target with it")
    targets = _resolve_targets(requested, port)
    unpacked: list[str] = []
    if model_dir:
        from cqtf.pipeline import ModelDir

        model = ModelDir(Path(model_dir)).load_model()
        combos = [Combo(t, model.name, model.profile) for t in targets]
    else:
        full = bool(requested or port)
        combos = matrix.matrix(targets, full)
        if full:
            unpacked = matrix.profiles()[1]
    report = _option(config, "hil_report", "hil_report")
    return HilConfig(
        targets=targets, combos=combos, port=port, flash=not _option(config, "hil_no_flash", "no_flash", False),
        upload_port=_option(config, "hil_upload_port", "upload_port"), model_dir=Path(model_dir) if model_dir else None,
        epochs=tuple(_option(config, "hil_epochs", "hil_epochs", QUICK_EPOCHS)), report=Path(report) if report else None,
        baud=int(_option(config, "hil_baud", "baud", 115200)), unpacked_profiles=unpacked)


def pytest_configure(config):
    config.stash[_HIL] = _hil_config(config)  # a bad option stops the run here, with pytest's usage error


def hil_config(config) -> HilConfig:
    if _HIL not in config.stash:
        config.stash[_HIL] = _hil_config(config)
    return config.stash[_HIL]


def pytest_generate_tests(metafunc):
    hil = hil_config(metafunc.config)
    if "combo" in metafunc.fixturenames:
        metafunc.parametrize("combo", hil.combos, ids=[c.id for c in hil.combos])
    if "hil_target" in metafunc.fixturenames:
        metafunc.parametrize("hil_target", hil.targets)


@pytest.fixture(scope="session")
def hil(request) -> HilConfig:
    return hil_config(request.config)


def pytest_collection_modifyitems(config, items):
    """Emulated runs need the cross compiler and QEMU: without them, skip and say what to install."""
    hil = hil_config(config)
    missing = [] if hil.port else [tool for tool in ("arm-none-eabi-gcc", "qemu-system-arm") if not shutil.which(tool)]
    if missing:
        skip = pytest.mark.skip(reason=f"needs {', '.join(missing)} (run ./setup.sh)")
        for item in items:
            if "hil_tests" in item.nodeid and "device" in item.keywords:
                item.add_marker(skip)


@pytest.fixture(scope="session")
def model_dirs(hil, tmp_path_factory):
    """(model, profile) -> a trained and packed ModelDir, trained once per session."""
    from cqtf.errors import CqtfError
    from cqtf.pipeline import ModelDir, pack_stage, train_stage

    cache: dict[tuple[str, str], "ModelDir | CqtfError"] = {}

    def get(model: str, profile: str) -> ModelDir:
        if hil.model_dir is not None:
            return ModelDir(hil.model_dir)
        if (model, profile) not in cache:
            model_dir = ModelDir(tmp_path_factory.mktemp(f"{model}-{profile}"))
            train_stage(matrix.dataset_for(model), model, profile, model_dir, hil.epochs)
            try:
                pack_stage(model_dir)
            except CqtfError as e:  # e.g. an op the firmware does not implement yet: say so, do not hide it
                cache[(model, profile)] = e
            else:
                cache[(model, profile)] = model_dir
        if isinstance(cache[(model, profile)], CqtfError):
            pytest.skip(f"the packer refuses {model} ({profile}): {cache[(model, profile)]}")
        return cache[(model, profile)]

    return get


def pytest_terminal_summary(terminalreporter, exitstatus, config):
    if _HIL not in config.stash:
        return
    hil = config.stash[_HIL]
    if hil.rows:
        terminalreporter.write_sep("=", "device vs host agreement (hil_tests)")
        header = f"{'target':<16} {'model':<22} {'profile':<14} {'samples':>7} {'mismatched':>10} " \
                 f"{'agreement':>10} {'device acc':>10} {'host acc':>9}"
        terminalreporter.write_line(header)
        for row in hil.rows:
            terminalreporter.write_line(
                f"{row['target']:<16} {row['model']:<22} {row['profile']:<14} {row['samples']:>7} "
                f"{row['mismatched_samples']:>10} {100 * row['agreement']:>9.2f}% "
                f"{100 * row['device_accuracy']:>9.2f}% {100 * row['host_accuracy']:>8.2f}%")
    if hil.unpacked_profiles:
        terminalreporter.write_line(f"profiles registered but not packable yet (not run): "
                                    f"{', '.join(hil.unpacked_profiles)}")
    if hil.report is not None:
        hil.write_report(complete=True)
        terminalreporter.write_line(f"hil report: {hil.report}")
