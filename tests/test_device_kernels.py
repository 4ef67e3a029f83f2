"""The optimized kernels with the real DSP instructions (and the conv's inline-assembly loop) on
emulated Cortex-M4 and M33: every layer of a chain of awkward conv shapes equals the host reference.

The host-native tests (test_kernels_optimized.py) run the same algorithms with the SIMD emulated in
C; only here does the assembly run. The shapes cover K = kh*kw*in_c with every remainder mod 8
(two-group passes, a lone group, the scalar tail), in_c with and without im2col's word path, odd
channel and pixel counts, strides and padding.
"""
from __future__ import annotations

import numpy as np
import pytest

from cqtf import reference
from cqtf.emulator import emulate
from cqtf.firmware_build import build_firmware
from cqtf.link.device import connect
from cqtf.model_ir import IntModel
from cqtf.pack.header import write_header
from conftest import needs
from random_models import random_conv_layer, random_inputs
from test_kernels_optimized import _fc_layer

pytestmark = [pytest.mark.device, needs("arm-none-eabi-gcc", "qemu-system-arm")]

# (in_c, out_c, kernel, stride, pad) of each conv in the chain, starting from 9x7x3:
# K = 27 (3 passes + tail 3), 45 (5 passes, a lone group, tail 1), 7 (lone group + tail 3),
# 16 (2 passes, word path), 81 (10 passes + tail 1); 63 pixels (odd), 7 and 9 channels (odd).
CHAIN = [(3, 5, 3, 1, 1), (5, 7, 3, 2, 1), (7, 4, 1, 1, 0), (4, 9, 2, 1, 0), (9, 3, 3, 1, 1)]


def _chain_model() -> IntModel:
    rng = np.random.default_rng(42)
    h, w, layers = 9, 7, []
    for in_c, out_c, k, s, p in CHAIN:
        layer = random_conv_layer(rng, h, w, in_c, out_c, k, s, p, relu=len(layers) % 2 == 0)
        if layers:
            layer.input_offset = -layers[-1].output_offset
        layers.append(layer)
        h, w, _ = layer.out_shape
    fc = _fc_layer(rng, layers[-1].out_shape, 6)
    fc.input_offset = -layers[-1].output_offset
    layers.append(fc)
    return IntModel("conv_chain", "int8", (9, 7, 3), 0.05, 0, 0.1, 0, 6, layers)


@pytest.fixture(scope="module")
def chain_dir(tmp_path_factory):
    root = tmp_path_factory.mktemp("chain")
    write_header(_chain_model(), root)
    return root


@pytest.mark.parametrize("board", ["mps2-an386", "mps2-an505"])
def test_optimized_kernels_on_the_core_equal_the_reference(board, chain_dir, tmp_path):
    model = _chain_model()
    elf = build_firmware(board, chain_dir, tmp_path / "build")
    x = random_inputs(5, 12, model.input_shape)
    expected = reference.run_layers(model, x)
    with emulate(board, elf) as emulator, connect(emulator.url, timeout=10.0) as dut:
        for k in range(len(model.layers)):
            for i, sample in enumerate(x):
                got = np.frombuffer(dut.infer(sample.tobytes(), layer=k).output, dtype=np.int8)
                assert np.array_equal(got, expected[k][i].reshape(-1)), (board, k, i)
