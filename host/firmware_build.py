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
import json
import os
import re
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Callable

from cqtf.errors import CqtfError, ToolchainError
from cqtf.pio_offline import default_core_dir, prepare, repo_root


class ModelTooLargeError(CqtfError):
    """The packed model, with the firmware around it, does not fit the board's flash or RAM."""

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
    extra_flags: tuple[str, ...] = (),
) -> Path:
    """Build firmware.elf for `board` with the model in `model_dir`; return the ELF's path.

    extra_flags are compiler flags added to the environment's, e.g. ("-DCQTF_KERNELS_OPTIMIZED=0",)
    for the portable kernels or ("-O1",) for another optimization level: give each variant its own
    build_root. Raises ModelTooLargeError, naming the sizes, when the model cannot fit the board.

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
    check_model_fits(model_dir, board)
    build_root = Path(build_root).resolve()
    build_root.mkdir(parents=True, exist_ok=True)

    env = dict(os.environ)
    env.update(prepare(core_dir if core_dir is not None else default_core_dir()))
    env["CQTF_MODEL_DIR"] = str(model_dir)
    pio_build_dir = build_root / "pio"
    env["PLATFORMIO_BUILD_DIR"] = str(pio_build_dir)
    env.pop("PLATFORMIO_DEFAULT_ENVS", None)
    env["PYTHONUNBUFFERED"] = "1"

    if extra_flags:  # PlatformIO appends these to the environment's build_flags
        env["PLATFORMIO_BUILD_FLAGS"] = " ".join(extra_flags)
    else:
        env.pop("PLATFORMIO_BUILD_FLAGS", None)
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
        _raise_if_overflow(tail, model_dir, board)
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


# ---------------------------------------------------------------------------------------------
# Budgets: a model that does not fit the board is refused with the sizes, before and after linking


def board_spec(board: str) -> dict:
    """The board's JSON (firmware/boards/<board>.json)."""
    return json.loads((repo_root() / "firmware" / "boards" / f"{board}.json").read_text())


def board_budget(board: str) -> dict[str, int]:
    """Flash and RAM of the board in bytes (its linker script's CODE and RAM regions)."""
    upload = board_spec(board).get("upload", {})
    return {"flash": int(upload["maximum_size"]), "ram": int(upload["maximum_ram_size"])}


def header_sizes(model_dir: Path) -> dict[str, int]:
    """CQTF_MODEL_ARENA_SIZE and CQTF_MODEL_PARAM_BYTES from the packed header."""
    text = (Path(model_dir) / "cqtf_model.h").read_text()
    sizes = {}
    for key, macro in (("arena", "CQTF_MODEL_ARENA_SIZE"), ("params", "CQTF_MODEL_PARAM_BYTES")):
        match = re.search(rf"#define {macro} (\d+)u", text)
        if match is None:
            raise ToolchainError(f"{model_dir}/cqtf_model.h has no {macro}",
                                 "re-run `cqtf pack`: the header predates the memory plan")
        sizes[key] = int(match.group(1))
    return sizes


def check_model_fits(model_dir: Path, board: str) -> None:
    """Refuse, before compiling, a model whose weights alone exceed the flash or whose arena alone
    exceeds the RAM; the linker catches the rest (code, buffers, stack), see _raise_if_overflow."""
    need = header_sizes(model_dir)
    budget = board_budget(board)
    if need["params"] > budget["flash"]:
        raise ModelTooLargeError(
            f"model does not fit {board}: its weights take {need['params']} bytes of flash, the board "
            f"has {budget['flash']}", "choose a smaller model or a board with more flash")
    if need["arena"] > budget["ram"]:
        raise ModelTooLargeError(
            f"model does not fit {board}: its activations need a {need['arena']}-byte arena, the board "
            f"has {budget['ram']} bytes of RAM", "choose a model with smaller layers or a board with more RAM")


_OVERFLOW = re.compile(r"region `(\w+)' overflowed by (\d+) bytes|cqtf: RAM too small")


def _raise_if_overflow(log_tail, model_dir: Path, board: str) -> None:
    """Turn the linker's "region overflowed" into a ModelTooLargeError naming the sizes."""
    overflow = {}
    for line in log_tail:
        match = _OVERFLOW.search(line)
        if match:
            region = match.group(1) or "RAM"
            overflow[region] = max(overflow.get(region, 0), int(match.group(2) or 0))
    if not overflow:
        return
    need, budget = header_sizes(model_dir), board_budget(board)
    parts = []
    if "CODE" in overflow:
        parts.append(f"flash short by {overflow['CODE']} bytes (weights {need['params']} + code, board "
                     f"{budget['flash']})")
    if "RAM" in overflow:
        short = f" by {overflow['RAM']} bytes" if overflow["RAM"] else ""
        parts.append(f"RAM short{short} (arena {need['arena']} + link buffers + stack, board "
                     f"{budget['ram']})")
    raise ModelTooLargeError(f"model does not fit {board}: " + "; ".join(parts),
                             "choose a smaller model or a board with more memory")


def _symbol_sizes(elf: Path) -> dict[str, int]:
    """{name: size or value} of the ELF's symbols (arm-none-eabi-nm -S)."""
    nm = shutil.which("arm-none-eabi-nm")
    if not nm:
        raise ToolchainError("arm-none-eabi-nm not found", "apt-get install binutils-arm-none-eabi")
    out = subprocess.run([nm, "-S", str(elf)], capture_output=True, text=True, check=True, timeout=30).stdout
    symbols = {}
    for line in out.splitlines():
        fields = line.split()
        if len(fields) == 4:
            symbols[fields[3]] = int(fields[1], 16)
        elif len(fields) == 3 and fields[1] in "Aa":
            symbols[fields[2]] = int(fields[0], 16)
    return symbols


def firmware_footprint(elf: Path, model_dir: Path | None = None) -> dict[str, int]:
    """Flash and RAM of a built firmware, in bytes.

    flash_bytes = text + data (weights_bytes of them the model's constant arrays, the rest code);
    ram_bytes = data + bss + the stack reserved by the linker script (arena_bytes of them the
    planned activation arena, link_buffer_bytes the serial frame buffers).
    """
    size = firmware_size(elf)
    symbols = _symbol_sizes(elf)
    stack = symbols.get("__stack_size__", 0)
    params = header_sizes(model_dir)["params"] if model_dir else 0
    return {
        "flash_bytes": size["flash"],
        "weights_bytes": params,
        "code_bytes": size["flash"] - params,
        "ram_bytes": size["ram"] + stack,
        "static_ram_bytes": size["ram"],
        "stack_bytes": stack,
        "arena_bytes": symbols.get("engine_arena", 0),
        "link_buffer_bytes": sum(symbols.get(name, 0) for name in ("rx_frame", "tx_frame", "tx_wire")),
    }
