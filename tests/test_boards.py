"""Every emulated board: the real cross-compiled firmware on QEMU, over pyserial, bit-exact on the full test set.

By default the boards added beside the original mps2-an386 run (mps2-an505, netduinoplus2) with the
session's quickly trained model. CQTF_BOARD_MATRIX=1 adds every emulated board and the whole
`cqtf run --board B` job (training included) on each.
"""
from __future__ import annotations

import configparser
import contextlib
import json
import os
import struct

import numpy as np
import pytest

from cqtf import reference
from cqtf.emulator import BOARDS, emulate
from cqtf.firmware_build import boards as pio_boards
from cqtf.jobs import validate_on_port
from cqtf.link.device import connect
from cqtf.pio_offline import repo_root
from cqtf.pipeline import build_stage, evaluation_split
from cli_helpers import run_cli
from conftest import needs

pytestmark = [pytest.mark.device, needs("arm-none-eabi-gcc", "qemu-system-arm")]

FULL_MATRIX = os.environ.get("CQTF_BOARD_MATRIX") == "1"
NEW_BOARDS = ["mps2-an505", "netduinoplus2"]
EMULATED = NEW_BOARDS + ([b for b in sorted(BOARDS) if b not in NEW_BOARDS] if FULL_MATRIX else [])
matrix_only = pytest.mark.skipif(not FULL_MATRIX, reason="full board matrix: set CQTF_BOARD_MATRIX=1")


@contextlib.contextmanager
def running(board: str, elf):
    with emulate(board, elf) as emulator, connect(emulator.url, timeout=10.0) as dut:
        yield dut, emulator


@pytest.fixture(scope="module")
def firmwares(trained_dir):
    cache = {}

    def get(board: str):
        if board not in cache:
            cache[board] = build_stage(trained_dir, board)
        return cache[board]

    return get


def test_every_emulated_board_has_an_environment_and_a_board_file():
    envs = set(pio_boards())
    board_dir = repo_root() / "firmware" / "boards"
    for name, board in BOARDS.items():
        assert name in envs, name
        spec = json.loads((board_dir / f"{name}.json").read_text())
        assert spec["qemu"]["machine"] == board.machine
        assert spec["build"]["cpu"] == board.cpu
    # the real-hardware board builds from the same sources but has no emulator entry
    assert "nucleo_f446re" in envs and "nucleo_f446re" not in BOARDS


def test_each_environment_compiles_only_its_own_board_folder():
    parser = configparser.ConfigParser(interpolation=None)
    parser.read(repo_root() / "platformio.ini")
    for env in pio_boards():
        section = parser[f"env:{env}"]
        src_filter = section.get("build_src_filter", parser["env"]["build_src_filter"])
        folders = [part[len("+<boards/"):-2] for part in src_filter.split() if part.startswith("+<boards/")]
        assert len(folders) == 1, (env, src_filter)
        assert (repo_root() / "firmware" / "src" / "boards" / folders[0]).is_dir()


@pytest.mark.parametrize("board", EMULATED)
def test_board_is_bit_exact_on_the_whole_test_set(board, firmwares, trained_dir, tmp_path):
    model = trained_dir.load_model()
    x_test, _ = evaluation_split(model, "digits")
    with emulate(board, firmwares(board)) as emulator:
        with connect(emulator.url, timeout=10.0) as dut:  # closed before validating: one client at a time
            info = dut.info()
            assert info.board == board
            payload = bytes(np.random.default_rng(1).integers(0, 256, info.max_payload, dtype=np.uint8))
            assert dut.echo(payload) == payload and dut.echo(b"") == b""
            for k, expected in enumerate(reference.run_layers(model, x_test[:1])):
                got = np.frombuffer(dut.infer(x_test[0].tobytes(), layer=k).output, dtype=np.int8)
                assert np.array_equal(got, expected.reshape(-1)), k
        report = validate_on_port(emulator.url, trained_dir, "digits", tmp_path)
    assert report["board"] == board and report["samples"] == 360
    assert report["mismatched_samples"] == 0 and report["link_errors"] == 0
    assert report["instructions_per_inference"] > 10_000


def _instructions(board: str, elf, x: bytes) -> float:
    with running(board, elf) as (dut, _):
        ticks = [dut.infer(x).ticks for _ in range(3)]
    # -icount makes the instruction count deterministic; where a tick starts relative to the
    # inference's first instruction varies, hence one tick of jitter
    assert max(ticks) - min(ticks) <= 1, ticks
    return min(ticks) * BOARDS[board].instructions_per_tick


def test_instructions_per_tick_calibration(firmwares, trained_dir):
    """netduinoplus2 runs the same Cortex-M4 machine code as mps2-an386, whose tick was measured to be
    40 instructions: their counts must agree to within a tick of each (the boards' own tick-reading
    code differs by a few instructions). The Cortex-M33 build is other code: within 10 %."""
    x = evaluation_split(trained_dir.load_model(), "digits")[0][3].tobytes()
    reference_count = _instructions("mps2-an386", firmwares("mps2-an386"), x)
    stm32 = _instructions("netduinoplus2", firmwares("netduinoplus2"), x)
    assert abs(stm32 - reference_count) <= 40 + 6 + 16, (stm32, reference_count)  # a tick each, 16 of code
    m33 = _instructions("mps2-an505", firmwares("mps2-an505"), x)
    assert abs(m33 - reference_count) <= 0.1 * reference_count, (m33, reference_count)


def test_real_nucleo_board_builds_for_its_flash_and_usart(firmwares):
    from cqtf.firmware_build import firmware_size

    elf = firmwares("nucleo_f446re")
    size = firmware_size(elf)
    assert 0 < size["flash"] <= 512 * 1024 and size["ram"] < 128 * 1024
    code = elf.with_name("firmware.bin").read_bytes()
    assert struct.unpack_from("<I", code, 4)[0] & ~1 >= 0x08000000  # reset vector in flash
    # Which USART the link uses shows in the vector table: only its IRQ has a handler of its own,
    # the other stays on Default_Handler (the compiler may form the peripheral address from any base).
    entry = lambda index: struct.unpack_from("<I", code, 4 * index)[0]  # noqa: E731
    default_handler = entry(2)  # NMI is aliased to Default_Handler
    usart1, usart2 = entry(16 + 37), entry(16 + 38)  # RM0390: USART1 is IRQ 37, USART2 IRQ 38
    assert usart2 != default_handler  # USART2: the ST-LINK virtual COM port
    assert usart1 == default_handler  # not the emulator's USART1


@matrix_only
@pytest.mark.parametrize("board", sorted(BOARDS))
def test_cqtf_run_on_every_board(board, tmp_path):
    proc = run_cli("run", "--board", board, "--out", tmp_path, timeout=1800)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    report = json.loads((tmp_path / "report.json").read_text())
    assert report["board"] == board and report["samples"] == 360 and report["mismatched_samples"] == 0
