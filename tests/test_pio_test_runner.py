"""The on-target kernel tests (test/) and cqtf's PlatformIO test runner (test/test_custom_runner.py).

Fast here: the runner's line protocol, its QEMU supervision (with a stand-in QEMU), the golden vectors
being those the host reference gives today, and the test firmware built for the host, passing and
failing. On the emulated board (-m device): `pio test` fails on a deliberately broken golden vector.
The passing `pio test` of every emulated board is in hil_tests/test_on_target.py.
"""
from __future__ import annotations

import importlib.util
import os
import re
import shutil
import subprocess
import sys
import types
from pathlib import Path

import pytest
from hypothesis import given
from hypothesis import strategies as st

from conftest import needs

REPO = Path(__file__).resolve().parent.parent
TEST_DIR = REPO / "test"
SUITE = TEST_DIR / "test_kernels"
FIRMWARE_SRC = REPO / "firmware" / "src"


def _load(name: str, path: Path):
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


runner_mod = _load("cqtf_test_custom_runner", TEST_DIR / "test_custom_runner.py")
golden_mod = _load("cqtf_golden_vectors", TEST_DIR / "golden_vectors.py")
TestOutput, ProtocolError = runner_mod.TestOutput, runner_mod.ProtocolError


def _parse(lines):
    out = TestOutput()
    cases = [c for c in (out.feed(line) for line in lines) if c is not None]
    return out, cases


# --- the line protocol ------------------------------------------------------------------------


def test_a_clean_run_is_parsed_case_by_case():
    out, cases = _parse(["boot banner\n", "cqtf-test: begin kernels 3\n", "cqtf-test: PASS conv\n",
                         "cqtf-test: FAIL pool test/x.c:42 input 0 layer 1 element 3: device 5 host 6\r\n",
                         "cqtf-test: PASS fc\n", "cqtf-test: end 2 passed 1 failed\n"])
    assert out.finished and out.suite == "kernels"
    assert [(c.name, c.passed) for c in cases] == [("conv", True), ("pool", False), ("fc", True)]
    assert (cases[1].file, cases[1].line) == ("test/x.c", 42)
    assert cases[1].message == "input 0 layer 1 element 3: device 5 host 6"


def test_noise_before_the_prefix_is_tolerated():
    out, cases = _parse(["\x00\xffcqtf-test: begin kernels 1", "junk cqtf-test: PASS a", "cqtf-test: end 1 passed 0 failed"])
    assert out.finished and cases[0].passed


@pytest.mark.parametrize("lines, reason", [
    (["cqtf-test: begin k 2", "cqtf-test: PASS a", "cqtf-test: end 2 passed 0 failed"], "received 1 passed"),
    (["cqtf-test: begin k 2", "cqtf-test: PASS a", "cqtf-test: PASS a"], "reported twice"),
    (["cqtf-test: begin k 1", "cqtf-test: begin k 1"], "started twice"),
    (["cqtf-test: PASS a"], "before the begin line"),
    (["cqtf-test: begin k 1", "cqtf-test: PASS a", "cqtf-test: end 1 passed 0 failed", "cqtf-test: PASS b"],
     "after the end line"),
    (["cqtf-test: begin k 1", "cqtf-test: PPASS a"], "garbled"),
    (["cqtf-test: begin k 3", "cqtf-test: PASS a", "cqtf-test: end 1 passed 0 failed"], "of 3 cases"),
])
def test_lost_duplicated_or_garbled_lines_are_errors(lines, reason):
    with pytest.raises(ProtocolError, match=reason):
        _parse(lines)


@given(st.lists(st.tuples(st.from_regex(r"[a-z][a-z0-9_]{0,20}", fullmatch=True), st.booleans()),
                unique_by=lambda c: c[0], max_size=30))
def test_any_report_round_trips(results):
    lines = [f"cqtf-test: begin suite {len(results)}"]
    lines += [f"cqtf-test: PASS {n}" if ok else f"cqtf-test: FAIL {n} t.c:1 differs" for n, ok in results]
    passed = sum(ok for _, ok in results)
    lines.append(f"cqtf-test: end {passed} passed {len(results) - passed} failed")
    out, cases = _parse(lines)
    assert out.finished and [(c.name, c.passed) for c in cases] == results


# --- QEMU supervision, with a stand-in qemu-system-arm ----------------------------------------


class _Suite:
    env_name, test_name = "fake", "test_kernels"

    def __init__(self):
        self.cases, self.finished = [], False

    def add_case(self, case):
        self.cases.append(case)

    def on_finish(self):
        self.finished = True

    def is_finished(self):
        return self.finished


def _runner(timeout: float = 10.0):
    """A CustomTestRunner without a PlatformIO project: only what run_in_qemu touches."""
    runner = object.__new__(runner_mod.CustomTestRunner)
    runner.output = TestOutput()
    runner.test_suite = _Suite()
    runner.options = types.SimpleNamespace(verbose=0, without_testing=False)
    runner._testing_output_buffer = ""
    runner.timeout = lambda: timeout
    return runner


def _fake_qemu(tmp_path: Path, monkeypatch, script: str) -> None:
    exe = tmp_path / "bin" / "qemu-system-arm"
    exe.parent.mkdir()
    exe.write_text(f"#!{sys.executable}\nimport sys, time\n{script}\n")
    exe.chmod(0o755)
    monkeypatch.setenv("PATH", f"{exe.parent}{os.pathsep}{os.environ['PATH']}")


_REPORT = ("print('cqtf-test: begin kernels 2'); print('cqtf-test: PASS a'); {second}; "
           "print('cqtf-test: end {p} passed {f} failed'); sys.stdout.flush(); sys.exit({status})")


def test_qemu_run_passes_when_the_firmware_and_the_exit_status_agree(tmp_path, monkeypatch, capsys):
    _fake_qemu(tmp_path, monkeypatch, _REPORT.format(second="print('cqtf-test: PASS b')", p=2, f=0, status=0))
    runner = _runner()
    runner.run_in_qemu("mps2-an386", "firmware.elf")
    assert [c.status.name for c in runner.test_suite.cases] == ["PASSED", "PASSED"]
    assert runner.test_suite.finished and "cqtf-test: PASS b" in capsys.readouterr().out


def test_a_failed_case_is_reported_with_its_line(tmp_path, monkeypatch):
    second = "print('cqtf-test: FAIL b t.c:9 element 3: device 1 host 2')"
    _fake_qemu(tmp_path, monkeypatch, _REPORT.format(second=second, p=1, f=1, status=1))
    runner = _runner()
    runner.run_in_qemu("mps2-an386", "firmware.elf")
    failed = runner.test_suite.cases[1]
    assert failed.status.name == "FAILED" and failed.source.line == 9 and "device 1 host 2" in failed.stdout


@pytest.mark.parametrize("script, reason", [
    (_REPORT.format(second="print('cqtf-test: PASS b')", p=2, f=0, status=1), "disagrees"),
    ("print('cqtf-test: begin kernels 2'); print('cqtf-test: PASS a'); sys.exit(1)", "before the firmware"),
    ("print('cqtf-test: begin kernels 2', flush=True); time.sleep(60)", "no end line within 3 s"),
])
def test_a_crash_a_hang_or_a_wrong_exit_status_is_an_error(tmp_path, monkeypatch, script, reason):
    _fake_qemu(tmp_path, monkeypatch, script)
    with pytest.raises(runner_mod.UnitTestSuiteError, match=reason):
        # 3 s: long enough for the stand-in's Python to start on a loaded machine, short for a hang
        _runner(timeout=3.0).run_in_qemu("mps2-an386", "firmware.elf")


def test_the_qemu_command_has_semihosting_and_uart_on_stdio():
    cmd = runner_mod.qemu_command("mps2-an500", "/x/firmware.elf")
    assert cmd[:5] == ["qemu-system-arm", "-M", "mps2-an500", "-kernel", "/x/firmware.elf"]
    assert "stdio" in cmd and "enable=on,target=native" in cmd


# --- the golden vectors -----------------------------------------------------------------------


def test_committed_golden_vectors_are_what_the_host_reference_gives_today():
    """A change of the reference, the packer or the generator must come with regenerated vectors."""
    for name, text in golden_mod.generate().items():
        assert (SUITE / "golden" / name).read_text() == text, f"stale {name}: run test/golden_vectors.py"
    committed = {p.name for p in (SUITE / "golden").iterdir()}
    assert committed == set(golden_mod.generate()), "stray or missing files in test/test_kernels/golden"


def test_golden_cases_cover_every_layer_kind():
    kinds = {layer.kind for model in golden_mod.build_cases() for layer in model.layers}
    from cqtf.model_ir import LAYER_KINDS
    assert kinds == set(LAYER_KINDS)


# --- the test firmware, built for the host ----------------------------------------------------

_HOST_BOARD = r"""
#include <stdio.h>
#include "board.h"
void board_init(void) {}
void board_uart_write(const uint8_t *data, uint32_t len) { fwrite(data, 1, len, stdout); fflush(stdout); }
uint8_t board_uart_read_byte(void) { return 0; }
uint32_t board_ticks(void) { return 0; }
const char *board_name(void) { return "host"; }
"""


def _build_host_test(tmp_path: Path, golden: Path) -> Path:
    (tmp_path / "board_host.c").write_text(_HOST_BOARD)
    sources = [SUITE / "test_kernels.c", *sorted(golden.glob("*.c")), *sorted((FIRMWARE_SRC / "kernels").glob("*.c")),
               FIRMWARE_SRC / "engine.c", tmp_path / "board_host.c"]
    exe = tmp_path / "test_kernels"
    cmd = ["gcc", "-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", f"-I{golden}", f"-I{SUITE}", f"-I{FIRMWARE_SRC}",
           *map(str, sources), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr
    return exe


def _run_host_test(exe: Path):
    proc = subprocess.run([str(exe)], capture_output=True, text=True, timeout=60)
    out, cases = _parse(proc.stdout.splitlines(keepends=True))
    return proc.returncode, out, cases


@needs("gcc")
def test_host_build_of_the_test_firmware_passes(tmp_path):
    code, out, cases = _run_host_test(_build_host_test(tmp_path, SUITE / "golden"))
    assert out.finished and code == 0
    assert len(cases) == len(golden_mod.build_cases()) + 1 and all(c.passed for c in cases)


def _break_one_vector(golden: Path, case: int) -> tuple[int, int]:
    """Changes the first expected byte of a case by one; returns (old, new)."""
    path = golden / "golden_cases.c"
    text = path.read_text()
    start = text.index("{", text.index(f"case{case:02d}_expected[")) + 1
    number = re.compile(r"-?\d+").search(text, start)
    old = int(number.group())
    new = old + 1 if old < 127 else old - 1
    path.write_text(text[:number.start()] + str(new) + text[number.end():])
    return old, new


@needs("gcc")
def test_a_broken_golden_vector_fails_its_case_and_only_it(tmp_path):
    golden = tmp_path / "golden"
    shutil.copytree(SUITE / "golden", golden)
    old, new = _break_one_vector(golden, 3)
    code, out, cases = _run_host_test(_build_host_test(tmp_path, golden))
    name = golden_mod.build_cases()[3].name
    assert code == 1 and out.finished
    assert [c.name for c in cases if not c.passed] == [name]
    assert f"device {old} host {new}" in next(c for c in cases if not c.passed).message


# --- on the emulated board --------------------------------------------------------------------


@pytest.mark.device
@needs("arm-none-eabi-gcc", "qemu-system-arm")
def test_pio_test_fails_on_a_broken_golden_vector(tmp_path):
    """The real runner, the real test firmware, on QEMU: one wrong expected byte makes `pio test` fail."""
    from cqtf.pio_offline import default_core_dir, prepare

    project = tmp_path / "project"
    project.mkdir()
    shutil.copy(REPO / "platformio.ini", project)
    shutil.copytree(REPO / "firmware", project / "firmware", ignore=shutil.ignore_patterns("__pycache__"))
    shutil.copytree(REPO / "test", project / "test", ignore=shutil.ignore_patterns("__pycache__"))
    _break_one_vector(project / "test" / "test_kernels" / "golden", 5)
    env = {**os.environ, **prepare(default_core_dir()), "PLATFORMIO_BUILD_DIR": str(tmp_path / "build")}
    env.pop("CQTF_MODEL_DIR", None)
    pio = Path(sys.executable).with_name("pio")
    proc = subprocess.run([str(pio), "test", "-e", "mps2-an386", "-d", str(project)], capture_output=True,
                          text=True, env=env, timeout=600)
    name = golden_mod.build_cases()[5].name
    assert proc.returncode == 1, proc.stdout + proc.stderr
    assert re.search(rf"cqtf-test: FAIL {name} \S+:\d+ input 0 layer 0 element 0", proc.stdout), proc.stdout
    summary = proc.stderr  # PlatformIO prints a failed summary on stderr
    total = len(golden_mod.build_cases()) + 1
    assert f"{total} test cases: 1 failed, {total - 1} succeeded" in summary, summary
