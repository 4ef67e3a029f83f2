"""The Renode suite (renode/cqtf_stm32f4.robot) through renode-test, where Renode is installed.

Renode is not installable on every machine (no Debian or PyPI package): without `renode-test` on
PATH this test is skipped and says so. CI runs the suite with Renode's official action
(.github/workflows/hil.yml).
"""
from __future__ import annotations

import shutil
import subprocess
import sys

import pytest

from cqtf.pio_offline import repo_root
from cqtf.pipeline import build_stage
from hil_tests.matrix import DEFAULT_MODEL, DEFAULT_PROFILE
from hil_tests.targets import build_test_firmware

pytestmark = pytest.mark.device

ROBOT_SUITE = repo_root() / "renode" / "cqtf_stm32f4.robot"
RENODE_TEST = "renode-test"
NOT_INSTALLED = (f"{RENODE_TEST} not found on PATH: Renode is not installed here (no Debian or PyPI package; "
                 "https://github.com/renode/renode/releases). CI runs renode/cqtf_stm32f4.robot with Renode's "
                 "official action (.github/workflows/hil.yml)")


def renode_suite_command(env: str, kernel_elf, model_dir, results_dir) -> list[str]:
    """renode-test with every artifact the suite needs passed as a Robot variable."""
    variables = {"ENV": env, "KERNEL_TESTS_ELF": kernel_elf, "MODEL_DIR": model_dir,
                 "FIRMWARE_ELF": model_dir / "firmware" / env / "pio" / env / "firmware.elf", "PYTHON": sys.executable}
    cmd = [RENODE_TEST, str(ROBOT_SUITE), "-r", str(results_dir)]
    for name, value in variables.items():
        cmd += ["--variable", f"{name}:{value}"]
    return cmd


def test_renode_suite_passes(hil, model_dirs, tmp_path, record_property):
    if shutil.which(RENODE_TEST) is None:
        pytest.skip(NOT_INSTALLED)
    if hil.port:
        pytest.skip("a real board is under test (--port): the Renode suite runs on emulated boards only")
    from cqtf.renode import renode_boards

    envs = renode_boards()
    if not envs:
        pytest.skip("no board of platformio.ini runs on Renode's STM32F4 model (the netduinoplus2 environment)")
    env = envs[0]
    model_dir = model_dirs(DEFAULT_MODEL, DEFAULT_PROFILE)
    build_stage(model_dir, env)
    kernel_elf = build_test_firmware(env, tmp_path / "kernel-tests")
    proc = subprocess.run(renode_suite_command(env, kernel_elf, model_dir.root, tmp_path / "renode-results"),
                          capture_output=True, text=True, timeout=3600)
    record_property("renode_results", str(tmp_path / "renode-results"))
    assert proc.returncode == 0, (proc.stdout + proc.stderr)[-4000:]
