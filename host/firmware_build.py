"""Build the firmware for one board and one packed model with PlatformIO, offline.

build_firmware("mps2-an386", model_dir, build_root) runs `pio run -e mps2-an386` in the checkout
(platformio.ini) with
  CQTF_MODEL_DIR=model_dir             the directory holding cqtf_model.h
  PLATFORMIO_BUILD_DIR=build_root/pio  PlatformIO's build dir: the firmware is pio/<board>/firmware.elf
and the environment of cqtf.pio_offline.prepare(); the log is build_root/<board>.log.
Different models build side by side when given different build roots; rebuilding into the same
root is incremental. PlatformIO deletes its build dir whole when platformio.ini changes, so
nothing else is kept under build_root/pio.
"""

from __future__ import annotations

import collections
import configparser
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from cqtf.errors import ToolchainError
from cqtf.pio_offline import default_core_dir, prepare, repo_root

_TAIL_LINES = 40


def boards() -> list[str]:
    """The board environments declared in platformio.ini."""
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(repo_root() / "platformio.ini")
    return [s[4:] for s in parser.sections() if s.startswith("env:")]


def _pio_command() -> list[str]:
    exe = Path(sys.executable).with_name("platformio")
    if exe.is_file() and os.access(exe, os.X_OK):
        return [str(exe)]
    try:
        import platformio  # noqa: F401, PLC0415  # pylint: disable=import-outside-toplevel,unused-import
    except ImportError as exc:
        raise ToolchainError(
            "PlatformIO is not installed in this Python", "pip install platformio==6.2.0"
        ) from exc
    return [sys.executable, "-m", "platformio"]


def build_firmware(
    board: str,
    model_dir: Path,
    build_root: Path,
    *,
    core_dir: Path | None = None,
    echo: Callable[[str], None] | None = None,
) -> Path:
    """Build firmware.elf for `board` with the model in `model_dir`; return the ELF's path.

    The ELF is build_root/pio/<board>/firmware.elf (firmware.bin and firmware.map beside it).
    The whole log goes to build_root/<board>.log; `echo` (e.g. print) also receives each line.
    Raises ToolchainError, with the last lines of the log, when the build fails.
    """
    root = repo_root()
    known = boards()
    if board not in known:
        raise ToolchainError(f"unknown board `{board}`", "one of: " + ", ".join(known))
    model_dir = Path(model_dir).resolve()
    if not (model_dir / "cqtf_model.h").is_file():
        raise ToolchainError(
            f"no cqtf_model.h in {model_dir}", "run `cqtf pack` to write the model header"
        )
    build_root = Path(build_root).resolve()
    build_root.mkdir(parents=True, exist_ok=True)

    env = dict(os.environ)
    env.update(prepare(core_dir if core_dir is not None else default_core_dir()))
    env["CQTF_MODEL_DIR"] = str(model_dir)
    pio_build_dir = build_root / "pio"
    env["PLATFORMIO_BUILD_DIR"] = str(pio_build_dir)
    env.pop("PLATFORMIO_DEFAULT_ENVS", None)
    env["PYTHONUNBUFFERED"] = "1"

    cmd = [*_pio_command(), "run", "--project-dir", str(root), "--environment", board]
    log_path = build_root / f"{board}.log"
    tail: collections.deque[str] = collections.deque(maxlen=_TAIL_LINES)
    with open(log_path, "w", encoding="utf-8") as log:
        log.write("$ " + " ".join(cmd) + "\n")
        log.write(f"# CQTF_MODEL_DIR={model_dir} PLATFORMIO_BUILD_DIR={pio_build_dir}\n")
        try:
            proc = subprocess.Popen(
                cmd,
                cwd=root,
                env=env,
                stdin=subprocess.DEVNULL,
                stdout=subprocess.PIPE,
                stderr=subprocess.STDOUT,
                text=True,
                encoding="utf-8",
                errors="replace",
            )
        except OSError as exc:
            raise ToolchainError(f"cannot run PlatformIO: {exc}", "pip install platformio==6.2.0") from exc
        assert proc.stdout is not None
        with proc:
            for line in proc.stdout:
                log.write(line)
                tail.append(line.rstrip("\n"))
                if echo is not None:
                    echo(line.rstrip("\n"))
        returncode = proc.wait()

    elf = pio_build_dir / board / "firmware.elf"
    if returncode != 0 or not elf.is_file():
        last = "\n".join(_interesting_tail(tail))
        raise ToolchainError(
            f"firmware build for {board} failed (pio exit code {returncode}):\n{last}",
            f"full log: {log_path}",
        )
    return elf


def _interesting_tail(lines) -> list[str]:
    """The log's last lines, without PlatformIO's closing summary table."""
    lines = list(lines)
    for i, line in enumerate(lines):
        if line.startswith("Environment ") or re.match(r"^=+ \[(FAILED|ERROR)\]", line):
            lines = lines[:i]
            break
    return [line for line in lines if line.strip()][-15:] or ["(no output)"]


def firmware_size(elf: Path) -> dict[str, int]:
    """text/data/bss of an ELF (arm-none-eabi-size, Berkeley format), plus flash and ram totals."""
    size_tool = shutil.which("arm-none-eabi-size")
    if not size_tool:
        raise ToolchainError(
            "arm-none-eabi-size not found", "apt-get install binutils-arm-none-eabi"
        )
    try:
        out = subprocess.run(
            [size_tool, "-B", "-d", str(elf)], capture_output=True, text=True, check=True, timeout=30
        ).stdout
    except subprocess.CalledProcessError as exc:
        raise ToolchainError(f"arm-none-eabi-size failed on {elf}: {exc.stderr.strip()}") from exc
    lines = out.strip().splitlines()
    if len(lines) < 2:
        raise ToolchainError(f"unexpected arm-none-eabi-size output for {elf}: {out!r}")
    text, data, bss = (int(v) for v in lines[1].split()[:3])
    return {"text": text, "data": data, "bss": bss, "flash": text + data, "ram": data + bss}
