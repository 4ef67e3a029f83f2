"""Run the cqtf firmware on Renode instead of QEMU, for the boards Renode models.

Renode (https://renode.io) is not packaged for Debian or PyPI: users install a release
(https://github.com/renode/renode/releases) or use Renode's GitHub action. Where `renode` is not on
PATH, everything here fails early with a one-line ToolchainError saying so.

The same firmware ELF as QEMU's: today the STM32F4 of the `netduinoplus2` environment (Renode's
platforms/cpus/stm32f4.repl, link on USART1). The UART is served on a TCP socket, raw (telnet mode
off), so pyserial opens it as `socket://127.0.0.1:PORT`, exactly like an emulated QEMU board:

    with emulate("netduinoplus2", elf) as dev:
        validate_on_port(dev.url, ...)

Renode's SysTick runs at its own modelled clock: instruction counts are QEMU's (-icount), not Renode's.
"""
from __future__ import annotations

import contextlib
import os
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Iterator

from cqtf.errors import ToolchainError

RENODE = "renode"
SCRIPTS_DIR = Path(__file__).resolve().parent.parent / "renode"
INSTALL_HINT = ("install Renode from https://github.com/renode/renode/releases (no Debian or PyPI package), "
                "or use the default emulator: --emulator qemu")


@dataclass(frozen=True)
class RenodePlatform:
    """How Renode runs a board: the platform script (renode/) and the UART the firmware links on."""

    script: str
    uart: str


# Keyed by the QEMU machine of cqtf.emulator.BOARDS: a board environment runs on Renode when its
# firmware is built for one of these chips.
PLATFORMS: dict[str, RenodePlatform] = {
    "netduinoplus2": RenodePlatform("cqtf_stm32f4.resc", "sysbus.usart1"),
}
_LINK_TERMINAL = "cqtf-link"


def require_renode() -> str:
    path = shutil.which(RENODE)
    if path is None:
        raise ToolchainError(f"{RENODE} not found on PATH", INSTALL_HINT)
    return path


def renode_boards() -> list[str]:
    """The emulated boards Renode can run."""
    from cqtf.emulator import BOARDS

    return [name for name, board in BOARDS.items() if board.machine in PLATFORMS]


def platform_for(board: str) -> RenodePlatform:
    from cqtf.emulator import get_board

    machine = get_board(board).machine
    if machine not in PLATFORMS:
        supported = ", ".join(renode_boards()) or "none in this checkout"
        raise ToolchainError(f"board {board} has no Renode platform", f"Renode runs: {supported}; or use --emulator qemu")
    return PLATFORMS[machine]


def _renode_path(path: Path) -> str:
    text = str(Path(path).resolve())
    if any(c.isspace() for c in text):  # Renode's @path tokens end at whitespace
        raise ToolchainError(f"Renode cannot load a path with spaces: {text}", "move the checkout or model directory")
    return "@" + text


def monitor_commands(platform: RenodePlatform, elf: Path, port: int) -> list[str]:
    """Monitor commands: the machine with the firmware, its UART on a raw TCP socket, then start."""
    return [
        f"set bin {_renode_path(elf)}",
        f"include {_renode_path(SCRIPTS_DIR / platform.script)}",
        f'emulation CreateServerSocketTerminal {port} "{_LINK_TERMINAL}" false',  # false: raw bytes, no telnet
        f"connector Connect {platform.uart} {_LINK_TERMINAL}",
        "start",
    ]


def renode_command(platform: RenodePlatform, elf: Path, port: int, monitor_port: int) -> list[str]:
    """Headless Renode: no GUI, monitor on a telnet port (it keeps Renode up), commands from -e."""
    cmd = [RENODE, "--disable-xwt", "--plain", "--port", str(monitor_port)]
    for command in monitor_commands(platform, elf, port):
        cmd += ["-e", command]
    return cmd


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


class RenodeDevice:
    """One Renode process running one firmware image; a context manager that always stops it."""

    def __init__(self, board: str, *, platform: RenodePlatform | None = None, port: int | None = None,
                 log_path: str | Path | None = None, start_timeout: float = 60.0):
        self.board = board
        self.platform = platform
        self.requested_port = port
        self.log_path = Path(log_path) if log_path else None
        self.start_timeout = start_timeout  # Renode (.NET) takes seconds to start
        self.port: int | None = None
        self._proc: subprocess.Popen | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise ToolchainError("Renode is not running", "call start(elf_path) first")
        return f"socket://127.0.0.1:{self.port}"

    def start(self, elf_path: str | Path) -> str:
        require_renode()
        platform = self.platform or platform_for(self.board)
        if not Path(elf_path).is_file():
            raise ToolchainError(f"firmware image not found: {elf_path}", "build the firmware first")
        if self.log_path is None:
            fd, name = tempfile.mkstemp(prefix=f"cqtf-renode-{self.board}-", suffix=".log")
            os.close(fd)
            self.log_path = Path(name)
        port = self.requested_port or _free_port()
        cmd = renode_command(platform, Path(elf_path), port, _free_port())
        with open(self.log_path, "wb") as log:
            self._proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                          start_new_session=True)
        try:
            self._wait_listening(port)
        except BaseException:
            self.stop()
            raise
        self.port = port
        return self.url

    def _wait_listening(self, port: int) -> None:
        """Renode serves the UART socket once the script ran; a connection that opens means ready."""
        deadline = time.monotonic() + self.start_timeout
        while True:
            if self._proc.poll() is not None:
                raise self._error(f"exited with code {self._proc.returncode}")
            with contextlib.suppress(OSError), socket.create_connection(("127.0.0.1", port), timeout=0.5):
                return
            if time.monotonic() > deadline:
                raise self._error(f"did not open its UART socket within {self.start_timeout:g} s")
            time.sleep(0.2)

    def _error(self, reason: str) -> ToolchainError:
        tail = ""
        if self.log_path and self.log_path.exists():
            lines = self.log_path.read_text(errors="replace").strip().splitlines()
            tail = " | ".join(line.strip() for line in lines[-3:])
        return ToolchainError(f"Renode {reason}: {tail or '(no output)'}", f"full log: {self.log_path}")

    def is_running(self) -> bool:
        return self._proc is not None and self._proc.poll() is None

    def stop(self) -> None:
        """SIGINT (Renode's own test runner stops it so), then SIGKILL; idempotent."""
        proc, self._proc, self.port = self._proc, None, None
        if proc is None or proc.poll() is not None:
            return
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGINT)
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(proc.pid, signal.SIGKILL)
            proc.wait()

    def __enter__(self) -> "RenodeDevice":
        return self

    def __exit__(self, *exc_info) -> None:
        self.stop()


@contextlib.contextmanager
def emulate(board: str, elf_path: str | Path, **kwargs) -> Iterator[RenodeDevice]:
    """`with emulate("netduinoplus2", elf) as dev:` boots the firmware in Renode; it stops on leaving."""
    with RenodeDevice(board, **kwargs) as dev:
        dev.start(elf_path)
        yield dev
