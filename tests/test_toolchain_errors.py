"""A missing cross compiler or emulator, or a busy port, is one clear line and a non-zero exit."""
import os
import pty
from pathlib import Path

import pytest
import serial

from cli_helpers import assert_clean_error, run_cli


def path_without(tmp_path: Path, *hidden_prefixes: str) -> str:
    """A PATH that has every program of the current PATH except those starting with a hidden prefix."""
    shim = tmp_path / "bin"
    shim.mkdir()
    for folder in os.environ["PATH"].split(os.pathsep):
        if not os.path.isdir(folder):
            continue
        for name in os.listdir(folder):
            target = shim / name
            if name.startswith(hidden_prefixes) or target.exists():
                continue
            target.symlink_to(os.path.join(folder, name))
    return str(shim)


def test_missing_cross_compiler(trained_dir, tmp_path):
    proc = run_cli("build", "--model-dir", trained_dir.root, env={"PATH": path_without(tmp_path, "arm-none-eabi-")})
    assert_clean_error(proc, "arm-none-eabi-gcc not found", "apt-get install gcc-arm-none-eabi")
    assert len(proc.stderr.strip().splitlines()) <= 2  # error + hint


def test_run_without_qemu_fails_before_training(tmp_path):
    proc = run_cli("run", "--out", tmp_path / "run", env={"PATH": path_without(tmp_path, "qemu-system-")},
                   timeout=60)
    assert_clean_error(proc, "qemu-system-arm not found", "apt-get install qemu-system-arm")
    assert not (tmp_path / "run" / "model.npz").exists()  # nothing was trained in vain


def test_emulate_without_qemu(trained_dir, tmp_path):
    proc = run_cli("emulate", "--model-dir", trained_dir.root,
                   env={"PATH": path_without(tmp_path, "qemu-system-")})
    assert_clean_error(proc, "qemu-system-arm not found")


def test_busy_serial_port(trained_dir):
    """A real (pty) serial port another program holds exclusively, as a serial monitor would."""
    controller, device_fd = pty.openpty()
    name = os.ttyname(device_fd)
    try:
        with serial.Serial(name, exclusive=True):
            proc = run_cli("validate", "--port", name, "--model", trained_dir.root)
        assert_clean_error(proc, f"serial port {name} is in use")
    finally:
        os.close(controller)
        os.close(device_fd)


@pytest.mark.parametrize("spec", ["9000", "tcp:", "udp:9000"])
def test_malformed_serial_spec(trained_dir, spec):
    proc = run_cli("emulate", "--model-dir", trained_dir.root, "--serial", spec)
    assert proc.returncode == 2 and "tcp:PORT" in proc.stderr and "Traceback" not in proc.stderr
