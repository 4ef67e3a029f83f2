"""cqtf's PlatformIO test runner (`test_framework = custom`): on-target tests on QEMU or on a real board.

PlatformIO's own Unity runner downloads Unity from its registry; this one needs nothing from it.
The test firmware (test/test_*/) prints one line per event (see test/test_kernels/test_kernels.c):

    cqtf-test: begin <suite> <number of cases>
    cqtf-test: PASS <case>
    cqtf-test: FAIL <case> <file>:<line> <what differs>
    cqtf-test: end <passed> passed <failed> failed

Emulated environments (upload_protocol = qemu and the board JSON's qemu.machine): the runner builds
the test firmware, boots it in qemu-system-arm with UART0 on a pipe and semihosting on, reads the
lines, and checks that QEMU exits with the status the firmware reports (0 = every case passed).
Other environments go PlatformIO's usual way: `upload` flashes the board (pyocd, openocd, ...) and
the lines are read from the test port (`--test-port`, `test_port`, or the detected serial port).

A case fails on a FAIL line; the suite errors when the firmware stops, hangs past
`custom_test_timeout` seconds (platformio.ini, default 120), or reports counts that do not match
the lines received (a lost or duplicated line is a link or firmware bug, never ignored).
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
import threading

import click
from platformio.public import TestCase, TestCaseSource, TestRunnerBase, TestStatus
from platformio.test.exception import UnitTestSuiteError

PREFIX = "cqtf-test: "
_EVENT = re.compile(
    r"cqtf-test: (?:"
    r"begin (?P<suite>\S+) (?P<expected>\d+)"
    r"|PASS (?P<passed>\S+)"
    r"|FAIL (?P<failed>\S+) (?P<file>[^\s:]+):(?P<line>\d+) ?(?P<message>.*)"
    r"|end (?P<n_pass>\d+) passed (?P<n_fail>\d+) failed)\s*$"
)
QEMU = "qemu-system-arm"
DEFAULT_TIMEOUT_S = 120.0
EXIT_GRACE_S = 5.0  # after the end line, the firmware ends QEMU through semihosting


class CaseResult:
    """One case as the firmware reported it."""

    def __init__(self, name: str, passed: bool, message: str = "", file: str | None = None,
                 line: int | None = None, text: str = ""):
        self.name, self.passed, self.message, self.file, self.line = name, passed, message, file, line
        self.text = text  # the line as received

    def __repr__(self) -> str:
        return f"CaseResult({self.name!r}, passed={self.passed}, message={self.message!r})"


class ProtocolError(Exception):
    """The device's output breaks the line protocol (lost, duplicated or garbled lines)."""


class TestOutput:
    """Parses the firmware's test lines; knows nothing about PlatformIO (unit-tested on its own).

    (Plain classes, no dataclasses: PlatformIO loads this file without registering it as a module.)
    """

    __test__ = False  # not a pytest class

    def __init__(self):
        self.suite: str | None = None
        self.expected: int | None = None
        self.cases: list[CaseResult] = []
        self.finished = False

    def feed(self, line: str) -> CaseResult | None:
        """One line of output; returns the case it completes, if any. Raises ProtocolError."""
        start = line.find(PREFIX)
        if start < 0:
            return None  # the firmware's other output (boot messages, ...)
        text = line[start:].rstrip("\r\n")
        match = _EVENT.match(text)
        if match is None:
            raise ProtocolError(f"garbled test line: {text!r}")
        if self.finished:
            raise ProtocolError(f"output after the end line: {text!r}")
        if match["suite"] is not None:
            if self.suite is not None:
                raise ProtocolError("the firmware started twice (a reset during the test?)")
            self.suite, self.expected = match["suite"], int(match["expected"])
            return None
        if self.suite is None:
            raise ProtocolError(f"a result before the begin line: {text!r}")
        if match["n_pass"] is not None:
            self._check_end(int(match["n_pass"]), int(match["n_fail"]))
            self.finished = True
            return None
        if match["passed"] is not None:
            case = CaseResult(match["passed"], True, text=text)
        else:
            case = CaseResult(match["failed"], False, match["message"], match["file"], int(match["line"]), text)
        if any(c.name == case.name for c in self.cases):
            raise ProtocolError(f"case {case.name} reported twice")
        self.cases.append(case)
        return case

    def _check_end(self, n_pass: int, n_fail: int) -> None:
        seen_pass = sum(c.passed for c in self.cases)
        seen_fail = len(self.cases) - seen_pass
        if (n_pass, n_fail) != (seen_pass, seen_fail) or n_pass + n_fail != self.expected:
            raise ProtocolError(
                f"the firmware reports {n_pass} passed and {n_fail} failed of {self.expected} cases, "
                f"the runner received {seen_pass} passed and {seen_fail} failed")


def qemu_command(machine: str, elf: str) -> list[str]:
    """UART0 on stdio (a pipe here), semihosting for the exit status, deterministic instruction timing."""
    return [QEMU, "-M", machine, "-kernel", elf, "-display", "none", "-monitor", "none",
            "-serial", "stdio", "-semihosting-config", "enable=on,target=native", "-icount", "shift=0"]


class CustomTestRunner(TestRunnerBase):
    def __init__(self, *args, **kwargs):
        super().__init__(*args, **kwargs)
        self.output = TestOutput()

    # --- what kind of target -------------------------------------------------------------------

    def _env_option(self, name: str, default=None):
        return self.project_config.get(f"env:{self.test_suite.env_name}", name, default)

    def qemu_machine(self) -> str | None:
        """The QEMU machine when this environment's board is emulated, else None."""
        board = self.platform.board_config(self._env_option("board"))
        protocol = self._env_option("upload_protocol") or board.get("upload.protocol", "")
        machine = board.get("qemu.machine", "")
        return machine if protocol == "qemu" and machine else None

    def configure_build_env(self, env):
        """Called inside the test build (SCons), with the project's build environment.

        - The suite brings its own main(): firmware/src/main.c is left out (the source filter is
          read from the main environment).
        - A suite may carry the model it is built with: test/<suite>/golden/cqtf_model.h goes first
          on the include path, ahead of $CQTF_MODEL_DIR (test_kernels needs it: the engine's buffers
          are sized from the compiled-in model and must hold every golden case).
        - Only an emulated board may end the run by semihosting: on a real board without a debugger
          attached, the BKPT would fault.
        """
        from SCons.Script import DefaultEnvironment  # pylint: disable=import-error,import-outside-toplevel

        DefaultEnvironment().Append(SRC_FILTER=["-<main.c>"])
        golden = os.path.join(env.subst("$PROJECT_TEST_DIR"), self.test_suite.test_name, "golden")
        if self.test_suite.test_name != "*" and os.path.isfile(os.path.join(golden, "cqtf_model.h")):
            env.Prepend(CPPPATH=[golden])
        if self.qemu_machine():
            env.Append(CPPDEFINES=["CQTF_TEST_SEMIHOSTING"])
        return env

    # --- stages --------------------------------------------------------------------------------

    def stage_building(self):
        if self.qemu_machine() is None or self.options.without_building:
            return super().stage_building()
        click.secho("Building...", bold=True)
        try:
            return self.run_project_targets(["__test", "checkprogsize"])
        except Exception as exc:  # ReturnErrorCode and friends: PlatformIO printed the compiler's words
            raise UnitTestSuiteError("Building stage has failed, see errors above.") from exc

    def stage_uploading(self):
        if self.qemu_machine() is None:
            return super().stage_uploading()
        return None  # QEMU loads firmware.elf itself in the testing stage

    def stage_testing(self):
        if self.options.without_testing:
            return None
        machine = self.qemu_machine()
        if machine is None:
            result = super().stage_testing()  # serial port of a real board
            self._finish_check()
            return result
        click.secho(f"Testing on QEMU {machine}...", bold=True)
        self.run_in_qemu(machine, self.program_path())
        return None

    # --- QEMU ----------------------------------------------------------------------------------

    def program_path(self) -> str:
        build_dir = self.project_config.get("platformio", "build_dir")
        elf = os.path.join(build_dir, self.test_suite.env_name, "firmware.elf")
        if not os.path.isfile(elf):
            raise UnitTestSuiteError(f"test firmware not found: {elf} (build it without --without-building)")
        return elf

    def timeout(self) -> float:
        return float(self._env_option("custom_test_timeout", DEFAULT_TIMEOUT_S) or DEFAULT_TIMEOUT_S)

    def run_in_qemu(self, machine: str, elf: str) -> None:
        if shutil.which(QEMU) is None:
            raise UnitTestSuiteError(f"{QEMU} not found (Debian: apt-get install qemu-system-arm)")
        cmd = qemu_command(machine, elf)
        if self.options.verbose:
            click.echo(" ".join(cmd))
        proc = subprocess.Popen(cmd, stdin=subprocess.DEVNULL, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        timed_out = threading.Event()

        def kill_hung() -> None:  # a hung firmware must not hang CI
            timed_out.set()
            proc.kill()

        timer = threading.Timer(self.timeout(), kill_hung)
        timer.start()
        try:
            for data in iter(lambda: proc.stdout.read1(4096), b""):
                self.on_testing_data_output(data)
                if self.output.finished:
                    break
            status = self._wait_exit(proc)
        finally:
            timer.cancel()
            if proc.poll() is None:
                proc.kill()
                proc.wait()
            proc.stdout.close()
        self._check_qemu_exit(status, timed_out.is_set())

    @staticmethod
    def _wait_exit(proc: subprocess.Popen) -> int | None:
        try:
            return proc.wait(timeout=EXIT_GRACE_S)
        except subprocess.TimeoutExpired:
            return None

    def _check_qemu_exit(self, status: int | None, timed_out: bool) -> None:
        if not self.output.finished:
            if timed_out:
                raise UnitTestSuiteError(f"no end line within {self.timeout():g} s (custom_test_timeout): "
                                         "the firmware hangs or is too slow")
            raise UnitTestSuiteError(f"QEMU exited with status {status} before the firmware reported "
                                     "every case (a crash, a fault or a reset)")
        failed = any(not c.passed for c in self.output.cases)
        if status != int(failed):
            raise UnitTestSuiteError(f"QEMU exit status {status} disagrees with the firmware's report "
                                     f"({'failures' if failed else 'all passed'})")

    def _finish_check(self) -> None:
        if not self.output.finished and not self.test_suite.is_finished():
            raise UnitTestSuiteError("the board stopped sending before the end line")

    # --- lines ---------------------------------------------------------------------------------

    def on_testing_line_output(self, line):
        click.echo(line, nl=False)
        try:
            case = self.output.feed(line)
        except ProtocolError as exc:
            raise UnitTestSuiteError(str(exc)) from exc
        if case is not None:
            self.test_suite.add_case(TestCase(
                name=case.name,
                status=TestStatus.PASSED if case.passed else TestStatus.FAILED,
                message=case.message or None,
                source=TestCaseSource(case.file, case.line) if case.file else None,
                stdout=None if case.passed else case.text,  # PlatformIO's summary prints it for failures
            ))
        if self.output.finished:
            self.test_suite.on_finish()  # also stops PlatformIO's serial reader
