"""Run the cqtf firmware on an emulated board (QEMU) and tear the emulator down again.

The emulated UART0 is a TCP socket that pyserial opens as `socket://127.0.0.1:PORT`:

    with emulate("mps2-an386", "build/mps2-an386/firmware.elf") as dev:
        port = serial.serial_for_url(dev.url, timeout=2)

QEMU runs with `-icount shift=0`: one guest instruction is 1 ns of virtual time, so timings are
deterministic (instructions, not cycles) and SysTick ticks x `Board.instructions_per_tick` gives
the instruction count of an INFER.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import weakref
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cqtf.errors import ToolchainError

QEMU = "qemu-system-arm"


@dataclass(frozen=True)
class Board:
    """An emulated board the firmware supports (firmware/src/boards/<family>/)."""

    name: str                     # reported by the firmware's INFO, e.g. "mps2-an386"
    machine: str                  # QEMU -M
    cpu: str                      # the core QEMU emulates
    cflags: tuple[str, ...]       # arm-none-eabi-gcc target flags of the firmware build
    instructions_per_tick: float  # under -icount shift=0 (1 ns per instruction): 1e9 / SysTick Hz
    notes: str = ""


_MPS2_NOTES = ("CMSDK UART0 at 0x40004000, code 4 MB at 0x0, RAM 4 MB at 0x20000000; "
               "linker script firmware/src/boards/mps2/mps2.ld")

BOARDS: dict[str, Board] = {
    b.name: b
    for b in (
        Board("mps2-an385", "mps2-an385", "cortex-m3",
              ("-mcpu=cortex-m3", "-mthumb", "-mfloat-abi=soft"), 40, _MPS2_NOTES + "; no FPU"),
        Board("mps2-an386", "mps2-an386", "cortex-m4",
              ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"), 40,
              _MPS2_NOTES + "; single-precision FPU"),
        Board("mps2-an500", "mps2-an500", "cortex-m7",
              ("-mcpu=cortex-m7", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-d16"), 40,
              _MPS2_NOTES + "; double-precision FPU; QEMU models no caches"),
        # SysTick on the 20 MHz main clock: 50 instructions per tick at 1 ns per instruction.
        Board("mps2-an505", "mps2-an505", "cortex-m33",
              ("-mcpu=cortex-m33", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv5-sp-d16"), 50,
              "secure state only; CMSDK UART0 at 0x50200000 (secure alias), code 4 MB at 0x10000000, "
              "RAM 4 MB at 0x38000000; linker script firmware/src/boards/mps2-an505/mps2_an505.ld"),
        # QEMU runs the STM32F405's SysTick at 168 MHz: 1000/168 instructions per tick.
        Board("netduinoplus2", "netduinoplus2", "cortex-m4",
              ("-mcpu=cortex-m4", "-mthumb", "-mfloat-abi=hard", "-mfpu=fpv4-sp-d16"), 1000 / 168,
              "STM32F405, link on USART1 (0x40011000); flash 1 MB at 0x08000000, RAM 128 KB at "
              "0x20000000; board support firmware/src/boards/stm32f4/ (also real Nucleo-F446RE)"),
    )
}

_READY_MARK = "waiting for connection"  # QEMU's stderr line once the serial socket listens
_BIND_FAILED = "Address already in use"  # another process took the port between pick and bind


def get_board(name: str) -> Board:
    try:
        return BOARDS[name]
    except KeyError:
        raise ToolchainError(f"unknown emulated board {name!r}",
                             hint=f"choose one of {', '.join(sorted(BOARDS))}") from None


def require_qemu() -> None:
    """Fails early, before minutes of training, when the emulator is missing."""
    if shutil.which(QEMU) is None:
        raise ToolchainError(f"{QEMU} not found on PATH",
                             hint="install QEMU (Debian: apt-get install qemu-system-arm) or run ./setup.sh")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


_LIBC = ctypes.CDLL(None) if sys.platform.startswith("linux") else None  # loaded before any fork


def _die_with_parent() -> None:
    """Child-side (Linux): QEMU gets SIGTERM if the Python process dies, even by SIGKILL.
    Caveat of PR_SET_PDEATHSIG: it fires when the *thread* that started QEMU exits."""
    _LIBC.prctl(1, signal.SIGTERM)  # 1 = PR_SET_PDEATHSIG


def _terminate(proc: subprocess.Popen) -> None:
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=3)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


class QemuDevice:
    """One QEMU process running one firmware image; a context manager that always stops it.

    `start()` returns once the guest's UART0 socket listens; the guest itself starts running when
    the first client connects (`wait=on`), so nothing it sends can be lost. QEMU's stdout and
    stderr go to `log_path` (a temporary file unless given), which errors quote.
    """

    def __init__(self, board: str | Board, log_path: str | Path | None = None,
                 start_timeout: float = 10.0, extra_args: tuple[str, ...] = (),
                 port: int | None = None):
        self.board = board if isinstance(board, Board) else get_board(board)
        self.log_path = Path(log_path) if log_path else None
        self._temp_log = False  # a log we created is removed on stop() unless an error cites it
        self._log_cited = False
        self.start_timeout = start_timeout
        self.extra_args = tuple(extra_args)
        self.requested_port = port  # None: pick a free one
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None
        self._finalizer: weakref.finalize | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise ToolchainError("QEMU is not running", hint="call start(elf_path) first")
        return f"socket://127.0.0.1:{self.port}"

    def command(self, elf_path: str | Path, port: int) -> list[str]:
        return [
            QEMU, "-M", self.board.machine, "-kernel", str(elf_path),
            "-display", "none", "-monitor", "none",
            # nodelay: without it each small request/response round trip costs ~44 ms
            "-serial", f"tcp:127.0.0.1:{port},server=on,wait=on,nodelay=on",
            "-icount", "shift=0",
            *self.extra_args,
        ]

    def start(self, elf_path: str | Path) -> str:
        """Boots `elf_path`; returns the pyserial URL of UART0."""
        if self._proc is not None:
            raise ToolchainError("QEMU is already running", hint="stop() it first")
        require_qemu()
        if not Path(elf_path).is_file():
            raise ToolchainError(f"firmware image not found: {elf_path}",
                                 hint="build the firmware first")
        with open(elf_path, "rb") as f:
            if f.read(4) != b"\x7fELF":  # QEMU would only notice after the first connection
                raise ToolchainError(f"not an ELF file: {elf_path}",
                                     hint="pass the linked firmware .elf")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"cqtf-qemu-{self.board.name}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
            self._temp_log = True
        for attempt in range(3):  # a port race is the only failure worth retrying
            try:
                return self._launch(elf_path)
            except ToolchainError:
                if _BIND_FAILED in self.log_tail() and self.requested_port is not None:
                    raise ToolchainError(f"TCP port {self.requested_port} is already in use",
                                         hint="choose another --serial tcp:PORT, or stop what holds it") from None
                if attempt == 2 or _BIND_FAILED not in self.log_tail():
                    raise
                self._log_cited = False  # that error is not shown: the retry reuses the log
        raise AssertionError("unreachable")

    def _launch(self, elf_path: str | Path) -> str:
        port = self.requested_port or _free_port()
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(
                self.command(elf_path, port), stdin=subprocess.DEVNULL, stdout=log,
                stderr=subprocess.STDOUT, preexec_fn=_die_with_parent if _LIBC else None)
        self._finalizer = weakref.finalize(self, _terminate, self._proc)  # also runs at exit
        try:
            self._wait_listening()
        except BaseException:  # includes KeyboardInterrupt: never leave QEMU behind
            self.stop()
            raise
        self.port = port
        return self.url

    def _wait_listening(self) -> None:
        deadline = time.monotonic() + self.start_timeout
        while _READY_MARK not in self.log_path.read_text(errors="replace"):
            if self._proc.poll() is not None:
                reason = f"exited with code {self._proc.returncode}"
            elif time.monotonic() > deadline:
                reason = f"did not open its serial port within {self.start_timeout:g} s"
            else:
                time.sleep(0.01)
                continue
            raise self._error(reason)

    @property
    def pid(self) -> int | None:
        return self._proc.pid if self._proc is not None else None

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def check_alive(self) -> None:
        """Raises ToolchainError with QEMU's last words if it has exited (e.g. after a timeout)."""
        if self._proc is not None and self._proc.poll() is not None:
            raise self._error(f"exited with code {self._proc.returncode}")

    def _error(self, reason: str) -> ToolchainError:
        self._log_cited = True  # keep the log the message points to
        return ToolchainError(
            f"QEMU {self.board.machine} {reason}: {self.log_tail() or '(no output)'}",
            hint=f"full log: {self.log_path}")

    def log_tail(self, lines: int = 3) -> str:
        """The last lines QEMU printed, joined on one line."""
        if self.log_path is None or not self.log_path.exists():
            return ""
        text = self.log_path.read_text(errors="replace").strip().splitlines()
        return " | ".join(line.strip() for line in text[-lines:])

    def stop(self) -> None:
        """Stops QEMU (idempotent). A log given by the caller, or cited by an error, stays."""
        if self._finalizer is not None:
            self._finalizer()  # runs _terminate once
            self._finalizer = None
        self._proc = None
        self.port = None
        if self._temp_log and not self._log_cited and self.log_path is not None:
            self.log_path.unlink(missing_ok=True)
            self.log_path = None
            self._temp_log = False

    def __enter__(self) -> "QemuDevice":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


@contextlib.contextmanager
def emulate(board: str | Board, elf_path: str | Path, **kwargs) -> Iterator[QemuDevice]:
    """`with emulate("mps2-an386", elf) as dev:` boots the firmware; QEMU stops on leaving."""
    with QemuDevice(board, **kwargs) as dev:
        dev.start(elf_path)
        yield dev
