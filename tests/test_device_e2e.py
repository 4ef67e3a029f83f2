"""End to end on the emulated board: the real cross-compiled firmware in QEMU, spoken to through pyserial."""
from __future__ import annotations

import json
import re
import socket
import subprocess
import sys

import numpy as np
import pytest

from cqtf import reference
from cqtf.emulator import emulate
from cqtf.link.device import connect
from cqtf.pipeline import DEFAULT_BOARD, ModelDir, build_stage, evaluation_split
from cqtf.validate import locate_mismatch
from cli_helpers import assert_clean_error, run_cli
from conftest import needs

pytestmark = [pytest.mark.device, needs("arm-none-eabi-gcc", "qemu-system-arm")]


@pytest.fixture(scope="module")
def firmware(trained_dir):
    return build_stage(trained_dir, DEFAULT_BOARD)


@pytest.fixture(scope="module")
def device(firmware):
    with emulate(DEFAULT_BOARD, firmware) as emulator, connect(emulator.url) as dut:
        yield dut


def test_default_run_is_bit_exact(tmp_path):
    """The README's main job: train, pack, build, boot, validate all 360 samples, report."""
    proc = run_cli("run", "--out", tmp_path)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["samples"] == 360
    assert report["mismatched_samples"] == 0 and report["link_errors"] == 0
    assert report["device_accuracy"] == report["host_accuracy"] == report["training_host_accuracy"]
    assert report["host_accuracy"] >= 0.95
    assert report["board"] == DEFAULT_BOARD
    assert report["model_hash"] == ModelDir(tmp_path).load_model().hash()
    assert 0 <= report["float_accuracy"] <= 1
    assert report["instructions_per_inference"] > 10_000  # ~25 k MACs cannot take fewer
    # TFLite Micro's own interpreter on the exported .tflite agrees with the firmware on every sample
    assert report["tflm_mismatched_samples"] == 0 and report["tflm_host_mismatched_samples"] == 0, report["tflm_note"]
    assert (tmp_path / "model.tflite").read_bytes()[4:8] == b"TFL3"
    assert 4000 < report["flash_bytes"] < 64 * 1024  # the 4 kB of weights and the code around them
    assert report["footprint"]["arena_bytes"] < report["ram_bytes"]
    assert (tmp_path / "report.md").read_text().count("bit-exact") == 1
    assert (tmp_path / "confusion.png").stat().st_size > 1000


def test_info_describes_the_compiled_in_model(device, trained_dir):
    info = device.info()
    model = trained_dir.load_model()
    assert info.model_hash == model.hash()[:16]
    assert (info.input_size, info.output_size, info.num_layers) == (64, 10, len(model.layers))
    assert info.board == DEFAULT_BOARD and info.profile == "int8" and info.model_name == "digits_cnn"


def test_echo_is_exact_for_every_length_and_byte(device):
    """Catches a UART driver or compiler that duplicates, drops or alters bytes (see the toolchain notes)."""
    rng = np.random.default_rng(0)
    max_payload = device.info().max_payload
    assert max_payload >= 256
    for length in list(range(0, 40)) + [253, 254, 255, 256, max_payload - 1, max_payload]:
        payload = bytes(rng.integers(0, 256, length, dtype=np.uint8))
        assert device.echo(payload) == payload, length
    assert device.echo(bytes(range(256))[:max_payload]) == bytes(range(256))[:max_payload]
    assert device.echo(b"\x00" * 64) == b"\x00" * 64
    assert device.link_stats.errors == 0, device.link_stats


def test_oversized_frame_is_dropped_and_the_link_recovers(device):
    """A frame longer than the device's buffer must not overflow it nor wedge the decoder."""
    from cqtf.link.frame import Frame, encode

    device.port.write(encode(Frame(0x03, 0, b"\x55" * (device.info().max_payload + 100))))
    assert device.echo(b"still here") == b"still here"


def test_every_layer_output_equals_the_host_reference(device, trained_dir):
    model = trained_dir.load_model()
    x_test, _ = evaluation_split(model, "digits")
    for i in (0, 1, 359):
        host_layers = reference.run_layers(model, x_test[i: i + 1])
        for k, expected in enumerate(host_layers):
            got = np.frombuffer(device.infer(x_test[i].tobytes(), layer=k).output, dtype=np.int8)
            assert np.array_equal(got, expected.reshape(-1)), (i, k)


def test_mismatch_is_localized_to_layer_and_element(device, trained_dir):
    """Perturb one multiplier of layer 2 on the host side: the tool must point at that layer."""
    model = trained_dir.load_model()
    x_test, _ = evaluation_split(model, "digits")
    model.layers[2].multiplier[5] += 2**24
    found = locate_mismatch(device, model, 0, x_test[0])
    assert found.layer == 2 and found.layer_kind == "conv2d"
    assert found.element[2] == 5  # the channel whose multiplier changed
    assert found.device_value != found.host_value


def test_instruction_count_is_deterministic(device, trained_dir):
    x = evaluation_split(trained_dir.load_model(), "digits")[0][7].tobytes()
    counts = [device.infer(x).ticks for _ in range(5)]
    # SysTick's phase at the start depends on when the request's bytes arrived (real time), so a
    # reading can straddle one more tick edge: the count is exact to one tick (40 instructions).
    assert min(counts) > 0 and max(counts) - min(counts) <= 1, counts


def test_refuses_a_device_with_another_model(firmware, trained_dir, tmp_path):
    model = trained_dir.load_model()
    model.layers[0].bias[0] += 1
    other = ModelDir(tmp_path / "other")
    other.root.mkdir()
    model.save(other.model)
    with emulate(DEFAULT_BOARD, firmware) as emulator:
        proc = run_cli("validate", "--port", emulator.url, "--model", other.root)
    assert_clean_error(proc, "the device runs model", "cqtf build")
    assert not (other.root / "report.json").exists()


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def test_field_engineer_validates_a_separately_started_device(trained_dir, firmware, tmp_path):
    port = _free_port()
    emulator = subprocess.Popen([sys.executable, "-m", "cqtf.cli", "emulate", "--model-dir", trained_dir.root,
                                 "--serial", f"tcp:{port}"], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    try:
        line = emulator.stdout.readline()
        assert re.search(r"serial at socket://127\.0\.0\.1:\d+", line), line
        proc = run_cli("validate", "--port", f"socket://127.0.0.1:{port}", "--model", trained_dir.root,
                       "--out", tmp_path)
        assert proc.returncode == 0, proc.stdout + proc.stderr
        report = json.loads((tmp_path / "report.json").read_text())
        assert report["mismatched_samples"] == 0 and report["samples"] == 360
    finally:
        emulator.terminate()
        emulator.wait(timeout=10)
