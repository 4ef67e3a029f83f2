"""The on-target kernel tests (test/, `pio test`) on each target, through cqtf's own test runner."""
from __future__ import annotations

import re
import subprocess

import pytest

from cqtf.pio_offline import repo_root
from hil_tests.targets import pio_command, pio_env

pytestmark = pytest.mark.device

_SUMMARY = re.compile(r"(\d+) test cases: (?:(\d+) failed, )?(\d+) succeeded")


def test_pio_test_passes_on_target(hil_target, hil, record_property, tmp_path):
    cmd = [*pio_command(), "test", "-d", str(repo_root()), "-e", hil_target]
    if hil.port:
        cmd += ["--test-port", hil.port]
        if hil.upload_port:
            cmd += ["--upload-port", hil.upload_port]
    # its own build dir: a test build must not replace the firmware that `pio run` left in the default one
    proc = subprocess.run(cmd, env=pio_env(PLATFORMIO_BUILD_DIR=str(tmp_path / "pio")), capture_output=True,
                          text=True, timeout=900)
    output = proc.stdout + proc.stderr
    summary = _SUMMARY.search(output)
    record_property("target", hil_target)
    record_property("on_target_cases", int(summary[1]) if summary else 0)
    assert proc.returncode == 0, output[-4000:]
    assert summary and not summary[2], output[-4000:]
    assert "cqtf-test: end" in output  # the firmware's own report came through
