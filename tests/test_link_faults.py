"""Campaigns that field engineers can trust, on the real firmware in QEMU through pyserial: a wire
that drops bytes, flips bits, stalls, is cut, and a board reset half way lose no sample and change no
result; several boards share a test set; an interrupted run resumes."""
from __future__ import annotations

import json
import random
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cqtf.campaign import PROGRESS_NAME
from cqtf.emulator import emulate
from cqtf.jobs import validate_on_port
from cqtf.link.proxy import DOWN, UP, Fault, LinkProxy
from cqtf.pipeline import DEFAULT_BOARD, build_stage
from cli_helpers import run_cli
from conftest import needs

pytestmark = [pytest.mark.device, needs("arm-none-eabi-gcc", "qemu-system-arm")]

RESULT_KEYS = ("samples", "mismatched_samples", "device_accuracy", "host_accuracy", "per_class_accuracy",
               "confusion_matrix", "metrics", "model_hash", "device_model_hash")


@pytest.fixture(scope="module")
def firmware(trained_dir):
    return build_stage(trained_dir, DEFAULT_BOARD)


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _qemu_port(url: str) -> int:
    return int(url.rsplit(":", 1)[1])


FAULT_RATE = 0.01  # of the bytes each way: half dropped, half with a bit flipped


def _fault_plan(reset, clean_bytes: dict) -> list[Fault]:
    """1 % of the bytes a clean run sends each way are dropped or flipped (offsets spread over the
    clean run's traffic, so every one is reached), plus stalls, a cut of the connection early and the
    reset in the middle. Seeded, so a failure can be replayed."""
    rng = random.Random(2026)
    up, down = clean_bytes[UP], clean_bytes[DOWN]
    plan = [Fault(DOWN, down // 3, "cut"), Fault(UP, up // 2, "call", call=reset)]
    for direction, total in ((UP, up), (DOWN, down)):
        for i, at in enumerate(sorted(rng.sample(range(200, total - 200), int(total * FAULT_RATE)))):
            plan.append(Fault(direction, at, "drop", size=1) if i % 2 else Fault(direction, at, "flip",
                                                                                 size=rng.randrange(8)))
    plan += [Fault(DOWN, rng.randrange(200, down - 200), "delay", seconds=0.3) for _ in range(5)]
    return plan


def test_faulty_link_and_a_reset_lose_nothing_and_change_nothing(firmware, trained_dir, tmp_path):
    monitor_port = _free_port()
    monitor_args = ("-monitor", f"tcp:127.0.0.1:{monitor_port},server=on,wait=off")
    with emulate(DEFAULT_BOARD, firmware, extra_args=monitor_args) as emulator:
        upstream = ("127.0.0.1", _qemu_port(emulator.url))
        with LinkProxy(upstream) as proxy:  # the same path, without faults: the reference run
            clean = validate_on_port(proxy.url, trained_dir, "digits", tmp_path / "clean", progress=False)
        assert clean["link_recovery"] == {"retransmits": 0, "resets": 0, "reconnects": 0}
        clean_bytes = dict(proxy.stats.bytes)

        monitor = socket.create_connection(("127.0.0.1", monitor_port))
        plan = _fault_plan(lambda: monitor.sendall(b"system_reset\n"), clean_bytes)
        with LinkProxy(upstream, faults=plan) as proxy:
            faulty = validate_on_port(proxy.url, trained_dir, "digits", tmp_path / "faulty", timeout=0.5,
                                      retries=12, progress=False)  # a 50-byte reply survives 1 % only 60 % of the time
        monitor.close()
    applied = proxy.stats.applied
    expected = {kind: sum(f.kind == kind for f in plan) for kind in ("drop", "flip", "delay", "cut", "call")}
    assert applied == expected, (applied, expected)  # every fault hit
    damaged = applied["drop"] + applied["flip"]
    assert damaged >= FAULT_RATE * (clean_bytes[UP] + clean_bytes[DOWN]) - 2, (damaged, clean_bytes)
    recovery = faulty["link_recovery"]
    assert recovery["resets"] == 1 and recovery["reconnects"] == 1 and recovery["retransmits"] > 0, recovery
    assert faulty["link_errors"] > 0  # the damaged frames were seen and dropped, not passed on
    campaign = faulty["campaign"]
    assert campaign["duplicated_results"] == 0 and campaign["lost_samples"] == 0
    assert sum(s["samples"] for s in campaign["shards"]) == 360
    assert {k: faulty[k] for k in RESULT_KEYS} == {k: clean[k] for k in RESULT_KEYS}
    assert faulty["samples"] == 360 and faulty["mismatched_samples"] == 0
    assert not (tmp_path / "faulty" / PROGRESS_NAME).exists()  # done with once the report is whole


def test_two_boards_share_the_test_set(firmware, trained_dir, tmp_path):
    with emulate(DEFAULT_BOARD, firmware) as a, emulate(DEFAULT_BOARD, firmware) as b:
        urls = [a.url, b.url]
        proc = run_cli("validate", "--port", urls[0], "--port", urls[1], "--model", trained_dir.root, "--out", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    shards = report["campaign"]["shards"]
    assert report["campaign"]["devices"] == 2 and [s["name"] for s in shards] == urls
    assert all(s["samples"] > 0 for s in shards) and sum(s["samples"] for s in shards) == 360
    assert report["campaign"]["duplicated_results"] == 0
    assert report["samples"] == 360 and report["mismatched_samples"] == 0


def _progress_lines(path: Path) -> int:
    return path.read_text().count("\n") if path.exists() else 0


def test_interrupted_run_resumes_where_it_stopped(firmware, trained_dir, tmp_path):
    progress = tmp_path / PROGRESS_NAME
    with emulate(DEFAULT_BOARD, firmware) as emulator:
        # a 115200-baud wire makes the run last about 3 s: time to interrupt it half way
        with LinkProxy(("127.0.0.1", _qemu_port(emulator.url)), baud=115200) as proxy:
            proc = subprocess.Popen([sys.executable, "-m", "cqtf.cli", "validate", "--port", proxy.url,
                                     "--model", str(trained_dir.root), "--out", str(tmp_path)],
                                    stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                                    # a background job of a non-interactive shell (a CI runner's) ignores
                                    # SIGINT, and so would its children: a user's Ctrl-C has the default
                                    preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
            deadline = time.monotonic() + 60
            while _progress_lines(progress) < 101 and time.monotonic() < deadline and proc.poll() is None:
                time.sleep(0.02)
            seen, exited = _progress_lines(progress), proc.poll()  # the header and 100 samples, at least
            proc.send_signal(signal.SIGINT)  # Ctrl-C
            _, err = proc.communicate(timeout=30)
        assert proc.returncode == 130, (seen, exited, err[-400:])
        assert "--resume" in err and "Traceback" not in err, err
        assert not (tmp_path / "report.json").exists() and not (tmp_path / "report.md").exists()
        saved = _progress_lines(progress) - 1  # the header line
        assert 100 <= saved < 360, (saved, seen, exited, err)

        resumed = run_cli("validate", "--port", emulator.url, "--model", trained_dir.root, "--out", tmp_path,
                          "--resume")
    assert resumed.returncode == 0, resumed.stdout + resumed.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["campaign"]["resumed_samples"] == saved
    assert report["campaign"]["shards"][0]["samples"] == 360 - saved
    assert report["samples"] == 360 and report["mismatched_samples"] == 0
    assert not progress.exists()


def test_validates_over_a_pty(firmware, trained_dir, tmp_path):
    """A pty is what a USB serial board looks like to the host: a /dev path opened by pyserial."""
    import re

    from cqtf.emulator import get_board

    board = get_board(DEFAULT_BOARD)
    qemu = subprocess.Popen(["qemu-system-arm", "-M", board.machine, "-kernel", str(firmware), "-display", "none",
                             "-monitor", "none", "-serial", "pty", "-icount", "shift=0"],
                            stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = qemu.stdout.readline()
        found = re.search(r"(/dev/pts/\d+)", line)
        assert found, line
        proc = run_cli("validate", "--port", found.group(1), "--model", trained_dir.root, "--out", tmp_path)
    finally:
        qemu.terminate()
        qemu.wait(10)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["samples"] == 360 and report["mismatched_samples"] == 0 and report["link_errors"] == 0


class _Rfc2217Server:
    """An RFC 2217 (telnet COM port control) server in front of the emulated board's socket, as a
    terminal server in a lab would stand in front of a real UART; pyserial's PortManager speaks
    the protocol, this class only moves bytes."""

    def __init__(self, board_url: str):
        import serial

        self.board = serial.serial_for_url(board_url, timeout=0.05)
        self.server = socket.socket()
        self.server.bind(("127.0.0.1", 0))
        self.server.listen(1)
        self.url = f"rfc2217://127.0.0.1:{self.server.getsockname()[1]}"
        self.stop = False
        import threading

        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        import threading

        import serial
        from serial.rfc2217 import PortManager

        conn, _ = self.server.accept()
        conn.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        class Connection:  # PortManager writes its telnet negotiation through .write()
            def write(self, data):
                conn.sendall(data)

        manager = PortManager(self.board, Connection())

        def to_client():
            try:
                while not self.stop:
                    data = self.board.read(4096)
                    if data:
                        conn.sendall(b"".join(manager.escape(data)))
            except (serial.SerialException, OSError, AttributeError):  # pyserial, once closed: no socket
                pass  # the board or the client went away: the test is over

        threading.Thread(target=to_client, daemon=True).start()
        conn.settimeout(0.2)
        while not self.stop:
            try:
                data = conn.recv(4096)
            except socket.timeout:
                continue
            except OSError:
                break
            if not data:
                break
            self.board.write(b"".join(manager.filter(data)))
        conn.close()

    def close(self) -> None:
        self.stop = True
        self.thread.join(5)
        self.server.close()
        self.board.close()


def test_validates_over_rfc2217(firmware, trained_dir, tmp_path):
    with emulate(DEFAULT_BOARD, firmware) as emulator:
        server = _Rfc2217Server(emulator.url)
        try:
            proc = run_cli("validate", "--port", server.url, "--model", trained_dir.root, "--out", tmp_path)
        finally:
            server.close()
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["samples"] == 360 and report["mismatched_samples"] == 0 and report["link_errors"] == 0
