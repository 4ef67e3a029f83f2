"""Renode where it is absent (this machine): every entry point says so clearly, and the Renode files are
checked as far as possible without it (monitor commands, the Robot suite's dry run, the process
supervision against a stand-in `renode`)."""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest
import serial

from cli_helpers import assert_clean_error, run_cli
from cqtf.errors import ToolchainError
from cqtf.renode import PLATFORMS, RenodeDevice, RenodePlatform, monitor_commands, renode_command

REPO = Path(__file__).resolve().parent.parent
ROBOT_SUITE = REPO / "renode" / "cqtf_stm32f4.robot"
PLATFORM_SCRIPT = REPO / "renode" / "cqtf_stm32f4.resc"


def _path_without(*tools: str) -> str:
    """PATH minus every directory holding one of `tools`."""
    dirs = [d for d in os.environ["PATH"].split(os.pathsep) if not any((Path(d) / t).exists() for t in tools)]
    return os.pathsep.join([str(Path(sys.executable).parent), *dirs])


def _fake_tool(tmp_path: Path, name: str, script: str) -> str:
    """A stand-in executable named `name`; returns a PATH that finds it first."""
    bindir = tmp_path / "fakebin"
    bindir.mkdir(exist_ok=True)
    exe = bindir / name
    exe.write_text(f"#!{sys.executable}\n{script}\n")
    exe.chmod(0o755)
    return f"{bindir}{os.pathsep}{os.environ['PATH']}"


# --- the skip and error paths -----------------------------------------------------------------


def test_hil_renode_suite_skips_and_says_why(tmp_path):
    env = {**os.environ, "PATH": _path_without("renode-test", "renode")}
    proc = subprocess.run([sys.executable, "-m", "pytest", "hil_tests/test_renode.py", "-rs", "-p", "no:cacheprovider",
                           "--basetemp", str(tmp_path / "t")], cwd=REPO, env=env, capture_output=True, text=True,
                          timeout=300)
    assert proc.returncode == 0, proc.stdout + proc.stderr
    assert re.search(r"SKIPPED \[1\] .*renode-test not found on PATH: Renode is not installed here", proc.stdout)
    assert "1 skipped" in proc.stdout and "releases" in proc.stdout


def test_emulate_on_renode_without_renode_is_a_clean_error(tmp_path):
    proc = run_cli("emulate", "--emulator", "renode", "--model-dir", tmp_path, "--board", "mps2-an386",
                   env={"PATH": _path_without("renode")})
    assert_clean_error(proc, "renode not found on PATH", "github.com/renode/renode/releases")


def test_emulate_on_renode_for_a_board_renode_does_not_model(tmp_path):
    path = _fake_tool(tmp_path, "renode", "import sys; sys.exit(3)")
    proc = run_cli("emulate", "--emulator", "renode", "--model-dir", tmp_path, "--board", "mps2-an386",
                   env={"PATH": path})
    assert_clean_error(proc, "board mps2-an386 has no Renode platform", "--emulator qemu")


def test_emulator_choice_is_validated(tmp_path):
    proc = run_cli("emulate", "--emulator", "bochs", "--model-dir", tmp_path)
    assert proc.returncode == 2 and "Invalid value for '--emulator'" in proc.stderr
    assert "Traceback" not in proc.stderr


# --- Renode's command line and monitor script ---------------------------------------------------


def test_monitor_commands_follow_renode_conventions(tmp_path):
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF")
    platform = PLATFORMS["netduinoplus2"]
    assert monitor_commands(platform, elf, 4444) == [
        f"set bin @{elf.resolve()}",
        f"include @{PLATFORM_SCRIPT}",
        'emulation CreateServerSocketTerminal 4444 "cqtf-link" false',
        "connector Connect sysbus.usart1 cqtf-link",
        "start",
    ]
    cmd = renode_command(platform, elf, 4444, 5555)
    assert cmd[:5] == ["renode", "--disable-xwt", "--plain", "--port", "5555"]
    assert cmd[5::2] == ["-e"] * 5


def test_paths_with_spaces_are_refused(tmp_path):
    elf = tmp_path / "with space" / "firmware.elf"
    with pytest.raises(ToolchainError, match="path with spaces"):
        monitor_commands(PLATFORMS["netduinoplus2"], elf, 4444)


def test_platform_script_loads_renodes_stm32f4_and_the_elf_from_bin():
    text = PLATFORM_SCRIPT.read_text()
    assert "machine LoadPlatformDescription @platforms/cpus/stm32f4.repl" in text
    assert re.search(r'macro reset\n"""\n\s+sysbus LoadELF \$bin\n"""\nrunMacro \$reset', text)
    assert "$bin?=" not in text  # the caller must say which firmware


# --- the Robot suite ----------------------------------------------------------------------------


def test_robot_suite_passes_a_dry_run_against_renodes_keyword_signatures(tmp_path):
    """Robot Framework checks every keyword name and argument, as renode-test would load the suite."""
    robot = pytest.importorskip("robot")
    from robot.running.builder import TestSuiteBuilder

    suite = TestSuiteBuilder().build(str(ROBOT_SUITE))
    suite.resource.imports.create(type="Library", name=str(Path(__file__).with_name("renode_keywords_stub.py")))
    suite.setup.config(name="Setup")  # renode-test's defaults
    suite.teardown.config(name="Teardown")
    for test in suite.tests:
        test.setup.config(name="Reset Emulation")
        test.teardown.config(name="Test Teardown")
    result = suite.run(dryrun=True, output=None, log=None, report=None, console="none",
                       variable=["SKIP_RUNNING_SERVER:True"])
    failures = [f"{t.name}: {t.message}" for t in result.suite.all_tests if t.status != "PASS"]
    assert not failures, failures
    assert [t.name for t in suite.tests] == ["Kernel Tests Should Pass On The STM32F4",
                                             "Model Firmware Should Be Bit Exact With The Host"]
    assert robot.version.VERSION


def test_robot_suite_checks_the_runner_protocol_and_validate():
    text = ROBOT_SUITE.read_text()
    assert "cqtf-test: end (\\\\d+) passed (\\\\d+) failed" in text  # the line test/test_custom_runner.py parses
    assert "Should Be Equal As Integers    ${end.groups[1]}    0" in text
    assert re.search(r"Run Process\s+\$\{PYTHON\}\s+-m\s+cqtf\.cli\s+validate", text)
    assert "Should Be Equal As Integers    ${result.rc}    0" in text


def test_renode_suite_command_sets_every_path_variable(tmp_path):
    from hil_tests.test_renode import renode_suite_command

    cmd = renode_suite_command("netduinoplus2", tmp_path / "k.elf", tmp_path / "model", tmp_path / "results")
    passed = dict(arg.split(":", 1) for arg in cmd[cmd.index("--variable"):][1::2])
    declared = set(re.findall(r"^\$\{(\w+)\}", ROBOT_SUITE.read_text(), re.M))
    assert set(passed) <= declared
    assert {"KERNEL_TESTS_ELF", "MODEL_DIR", "FIRMWARE_ELF", "PYTHON"} <= set(passed)
    assert passed["FIRMWARE_ELF"].endswith("model/firmware/netduinoplus2/pio/netduinoplus2/firmware.elf")


# --- supervising a Renode process (a stand-in that serves the UART socket as an echo) -----------

_FAKE_RENODE = r"""
import re, signal, socket, sys
args = sys.argv[1:]
commands = [args[i + 1] for i, a in enumerate(args) if a == "-e"]
port = int(next(re.search(r"CreateServerSocketTerminal (\d+)", c)[1] for c in commands if "CreateServer" in c))
print("fake renode:", commands, flush=True)
signal.signal(signal.SIGINT, lambda *a: sys.exit(0))
server = socket.create_server(("127.0.0.1", port))
while True:
    conn, _ = server.accept()
    with conn:
        while data := conn.recv(4096):
            conn.sendall(data)
"""


def test_renode_device_serves_the_uart_and_stops(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_tool(tmp_path, "renode", _FAKE_RENODE))
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF")
    device = RenodeDevice("stm32f4", platform=RenodePlatform("cqtf_stm32f4.resc", "sysbus.usart1"),
                          log_path=tmp_path / "renode.log")
    with device:
        url = device.start(elf)
        port = serial.serial_for_url(url, timeout=2)
        port.write(b"\x00frame\x00")
        assert port.read(7) == b"\x00frame\x00"
        port.close()
        pid = device._proc.pid
    assert not device.is_running()
    with pytest.raises(ProcessLookupError):
        os.kill(pid, 0)
    assert "CreateServerSocketTerminal" in (tmp_path / "renode.log").read_text()


def test_a_renode_that_dies_at_start_is_a_clean_error(tmp_path, monkeypatch):
    monkeypatch.setenv("PATH", _fake_tool(tmp_path, "renode", "print('Could not load platform'); raise SystemExit(1)"))
    elf = tmp_path / "firmware.elf"
    elf.write_bytes(b"\x7fELF")
    device = RenodeDevice("stm32f4", platform=PLATFORMS["netduinoplus2"], log_path=tmp_path / "renode.log")
    with pytest.raises(ToolchainError, match="Renode exited with code 1: Could not load platform"):
        device.start(elf)
    assert not device.is_running()


# --- the CI workflow ----------------------------------------------------------------------------


def test_ci_workflow_runs_the_suites_with_the_robot_suites_default_paths():
    """The workflow builds exactly where renode/cqtf_stm32f4.robot looks by default, and runs what docs/hil.md says."""
    workflow = (REPO / ".github" / "workflows" / "hil.yml").read_text()
    robot = ROBOT_SUITE.read_text()
    assert "pytest hil_tests --target ${{ matrix.board }}" in workflow
    assert "uses: antmicro/renode-test-action@" in workflow and "tests-to-run: renode/cqtf_stm32f4.robot" in workflow
    assert "renode-revision: ${{ env.RENODE_REVISION }}" in workflow
    assert "cqtf build --model-dir runs/renode --board netduinoplus2" in workflow
    assert "${MODEL_DIR}            ${CURDIR}/../runs/renode" in robot
    assert "PLATFORMIO_BUILD_DIR=$PWD/.cqtf-build/renode-tests" in workflow
    assert "${CURDIR}/../.cqtf-build/renode-tests/${ENV}/firmware.elf" in robot
    assert "--variable PYTHON:" in workflow
    assert "torch==2.13.0 --index-url https://download.pytorch.org/whl/cpu" in workflow  # never the CUDA wheel
