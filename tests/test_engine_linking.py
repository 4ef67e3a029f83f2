"""A model's firmware links only the kernels its ops and arithmetic need (CQTF_MODEL_OPS and the
model's arithmetic in cqtf_model.h; engine.c's constant-false branches, --gc-sections)."""
from __future__ import annotations

import re
import subprocess
from pathlib import Path

import numpy as np
import pytest

from conftest import needs
from cqtf.firmware_build import build_firmware
from cqtf.model_ir import IntModel
from cqtf.pack.header import _OP_CODES, _OPS, ops_mask, write_header
from random_models import random_conv_layer

TYPES_H = Path(__file__).resolve().parent.parent / "firmware" / "src" / "cqtf_types.h"


def test_op_codes_are_the_firmware_enum():
    enum = dict(re.findall(r"(CQTF_OP_\w+) = (\d+)", TYPES_H.read_text()))
    assert {_OPS[kind]: str(code) for kind, code in _OP_CODES.items()} == enum


def _conv_only(tmp_path: Path) -> Path:
    rng = np.random.default_rng(1)
    layer = random_conv_layer(rng, 6, 6, 4, 8, 3, 1, 1, relu=True)
    model = IntModel("conv_only", "int8", (6, 6, 4), 0.05, 0, 0.1, 0, 8 * 36, [layer])
    assert ops_mask(model) == 1 << 1
    write_header(model, tmp_path)
    return tmp_path


def _symbols(elf: Path) -> set[str]:
    out = subprocess.run(["arm-none-eabi-nm", str(elf)], capture_output=True, text=True, check=True).stdout
    return {line.split()[-1] for line in out.splitlines() if line.strip()}


@pytest.mark.device
@needs("arm-none-eabi-gcc", "arm-none-eabi-nm")
def test_an_int8_conv_model_links_no_other_kernel(tmp_path):
    symbols = _symbols(build_firmware("mps2-an386", _conv_only(tmp_path / "model"), tmp_path / "build"))
    assert "cqtf_conv2d_s8_opt" in symbols
    assert not symbols & {"cqtf_conv2d_fx_opt", "cqtf_conv2d_pot4", "cqtf_fully_connected_s8_opt", "cqtf_add",
                          "cqtf_avgpool2d", "cqtf_maxpool2d_s8", "cqtf_depthwise_conv2d_s8_opt"}


@pytest.mark.device
@needs("arm-none-eabi-gcc", "arm-none-eabi-nm")
def test_a_fixed_point_model_links_no_int8_kernel(trained_blk32_dir, tmp_path):
    symbols = _symbols(build_firmware("mps2-an386", trained_blk32_dir.root, tmp_path / "build"))
    assert {"cqtf_conv2d_fx_opt", "cqtf_fully_connected_fx_opt", "cqtf_maxpool2d_s8"} <= symbols
    assert not symbols & {"cqtf_conv2d_s8_opt", "cqtf_fully_connected_s8_opt", "cqtf_conv2d_pot4", "cqtf_add"}
