"""Putting a model's firmware on a target and handing back a serial URL to talk to it.

Emulated target, no --port: build with PlatformIO, boot in QEMU, yield its socket:// URL.
--port URL: the board behind URL; unless --no-flash, the firmware is first flashed with the
target environment's own upload (`pio run -e TARGET -t upload`: pyocd, openocd, ... as platformio.ini
says). With --no-flash, or for an emulated target (an emulator started separately, e.g. by
`cqtf emulate`), the device must already run the model: validation checks its hash first.
"""
from __future__ import annotations

import contextlib
import os
import subprocess
import sys
from pathlib import Path
from typing import Iterator

from cqtf.errors import ToolchainError
from cqtf.pipeline import ModelDir, build_stage
from cqtf.pio_offline import default_core_dir, prepare, repo_root


def pio_command() -> list[str]:
    exe = Path(sys.executable).with_name("pio")
    return [str(exe)] if exe.is_file() else [sys.executable, "-m", "platformio"]


def pio_env(**extra: str) -> dict[str, str]:
    env = {**os.environ, **prepare(default_core_dir()), **extra}
    env.pop("PLATFORMIO_DEFAULT_ENVS", None)
    return env


def flash(target: str, model_dir: ModelDir, upload_port: str | None) -> None:
    """Builds and flashes the model's firmware with the target environment's upload protocol."""
    cmd = [*pio_command(), "run", "-d", str(repo_root()), "-e", target, "-t", "upload"]
    if upload_port:
        cmd += ["--upload-port", upload_port]
    env = pio_env(CQTF_MODEL_DIR=str(model_dir.root.resolve()),
                  PLATFORMIO_BUILD_DIR=str(model_dir.build_root(target).resolve() / "pio"))
    proc = subprocess.run(cmd, env=env, capture_output=True, text=True)
    if proc.returncode != 0:
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ToolchainError(f"flashing {target} failed:\n{tail}", "check the probe and upload_protocol of the env")


@contextlib.contextmanager
def running_device(target: str, model_dir: ModelDir, *, port: str | None, flash_first: bool,
                   upload_port: str | None = None) -> Iterator[str]:
    """Yields the serial URL of `target` running `model_dir`'s firmware; stops what it started."""
    from cqtf.emulator import BOARDS, emulate

    if port:
        if flash_first and target not in BOARDS:  # an emulator behind --port was started with its firmware
            flash(target, model_dir, upload_port)
        yield port
        return
    elf = build_stage(model_dir, target)
    with emulate(target, elf) as emulator:
        yield emulator.url


def build_test_firmware(target: str, build_dir: Path) -> Path:
    """The on-target test firmware (test/test_kernels) of `target`, built but neither flashed nor run."""
    cmd = [*pio_command(), "test", "-d", str(repo_root()), "-e", target, "--without-uploading", "--without-testing"]
    proc = subprocess.run(cmd, env=pio_env(PLATFORMIO_BUILD_DIR=str(build_dir)), capture_output=True, text=True)
    elf = build_dir / target / "firmware.elf"
    if proc.returncode != 0 or not elf.is_file():
        tail = "\n".join((proc.stdout + proc.stderr).strip().splitlines()[-15:])
        raise ToolchainError(f"building the test firmware for {target} failed:\n{tail}")
    return elf
