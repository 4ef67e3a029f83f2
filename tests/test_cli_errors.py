"""Bad input gets a clear one-line error and a non-zero exit, never a traceback (no device needed)."""
import contextlib
import socket
import threading

import numpy as np
import pytest

from cli_helpers import assert_clean_error, run_cli


def test_unknown_serial_port(trained_dir):
    proc = run_cli("validate", "--port", "/dev/ttyNOPE0", "--model", trained_dir.root)
    assert_clean_error(proc, "cannot open serial port /dev/ttyNOPE0")


def test_nothing_listening_on_socket(trained_dir):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again below: nothing listens there
    proc = run_cli("validate", "--port", f"socket://127.0.0.1:{port}", "--model", trained_dir.root)
    assert_clean_error(proc, f"127.0.0.1:{port}")


@contextlib.contextmanager
def _tcp_peer(reply):
    """A TCP peer on loopback that reads every request and sends back reply(request) (b"": nothing)."""
    server = socket.socket()
    server.bind(("127.0.0.1", 0))
    server.listen(1)
    stop = threading.Event()

    def serve():
        server.settimeout(0.2)
        while not stop.is_set():
            try:
                conn, _ = server.accept()
            except OSError:
                continue
            with conn:
                conn.settimeout(0.2)
                while not stop.is_set():
                    try:
                        data = conn.recv(4096)
                    except OSError:
                        continue
                    if not data:
                        break
                    if reply(data):
                        conn.sendall(reply(data))

    thread = threading.Thread(target=serve, daemon=True)
    thread.start()
    try:
        yield f"socket://127.0.0.1:{server.getsockname()[1]}"
    finally:
        stop.set()
        thread.join()
        server.close()


@pytest.fixture
def silent_device():
    """Accepts and reads, but never answers: a hung device."""
    with _tcp_peer(lambda data: b"") as url:
        yield url


def test_silent_device_times_out(trained_dir, silent_device, tmp_path):
    proc = run_cli("validate", "--port", silent_device, "--model", trained_dir.root, "--timeout", "0.3",
                   "--out", tmp_path)
    assert_clean_error(proc, "did not answer INFO")
    assert not (tmp_path / "report.json").exists()


def test_corrupt_data_file(trained_dir, silent_device, tmp_path):
    bad = tmp_path / "bad.npz"
    bad.write_bytes(b"PK\x03\x04 truncated zip")
    proc = run_cli("validate", "--port", silent_device, "--model", trained_dir.root, "--data", bad)
    assert_clean_error(proc, "cannot read", "bad.npz")


def test_data_of_the_wrong_shape(trained_dir, silent_device, tmp_path):
    path = tmp_path / "wrong.npz"
    rng = np.random.default_rng(0)
    np.savez(path, x_train=rng.random((10, 5, 5)), y_train=np.arange(10) % 3,
             x_test=rng.random((4, 5, 5)), y_test=np.arange(4) % 3)
    proc = run_cli("validate", "--port", silent_device, "--model", trained_dir.root, "--data", path)
    assert_clean_error(proc, "shape (5, 5, 1)", "(8, 8, 1)")


def test_missing_model_directory(tmp_path):
    proc = run_cli("pack", "--model-dir", tmp_path / "nothing")
    assert_clean_error(proc, "model file not found", "cqtf train")


def test_unknown_dataset(tmp_path):
    proc = run_cli("train", "--dataset", "imagenet", "--out", tmp_path)
    assert_clean_error(proc, "unknown data set 'imagenet'")


def test_unknown_model(tmp_path):
    proc = run_cli("train", "--model", "resnet152", "--out", tmp_path)
    assert_clean_error(proc, "unknown model 'resnet152'", "digits_cnn")


def test_data_too_small_to_hold_out_names_the_way_out(tmp_path):
    rng = np.random.default_rng(0)
    path = tmp_path / "tiny.npz"
    y = np.array([0, 0, 0, 0, 1])  # class 1 has one training sample: nothing of it can be held out
    np.savez(path, x_train=rng.normal(size=(5, 8, 8)).astype(np.float32), y_train=y,
             x_test=rng.normal(size=(2, 8, 8)).astype(np.float32), y_test=np.array([0, 1]))
    proc = run_cli("train", "--dataset", path, "--epochs", "1", "1", "--validation-fraction", "0.15",
                   "--out", tmp_path / "out")
    assert_clean_error(proc, "cannot hold out 15%", "--validation-fraction 0")


@pytest.fixture
def noisy_device():
    """Answers every request with bytes that never form a frame (never a 0x00 delimiter): a board at
    another baud rate looks like this."""
    with _tcp_peer(lambda data: bytes((0xF0 | (b & 0x0E)) for b in data)) as url:
        yield url


def test_wrong_baud_rate_is_named(trained_dir, noisy_device, tmp_path):
    proc = run_cli("validate", "--port", noisy_device, "--model", trained_dir.root, "--timeout", "0.3",
                   "--out", tmp_path)
    assert_clean_error(proc, "did not answer INFO", "no valid frame", "--baud")
    assert not list(tmp_path.iterdir())  # neither a report nor a progress file


def test_port_in_use(trained_dir, tmp_path):
    import os

    import serial

    controller, device = os.openpty()
    path = os.ttyname(device)
    holder = serial.Serial(path, exclusive=True)  # another program has the port
    try:
        proc = run_cli("validate", "--port", path, "--model", trained_dir.root, "--out", tmp_path)
    finally:
        holder.close()
        os.close(controller)
        os.close(device)
    assert_clean_error(proc, f"serial port {path} is in use")
    assert not list(tmp_path.iterdir())


def test_corrupt_progress_file_on_resume(trained_dir, silent_device, tmp_path):
    (tmp_path / "progress.jsonl").write_text('{"kind": "cqtf-progress"\n{"i": 0, "out"\n')
    proc = run_cli("validate", "--port", silent_device, "--model", trained_dir.root, "--out", tmp_path, "--resume")
    assert_clean_error(proc, "progress.jsonl")
    assert not (tmp_path / "report.json").exists()


def test_ports_lists_without_error():
    proc = run_cli("ports")
    assert proc.returncode == 0, proc.stderr
    assert "Traceback" not in proc.stderr
