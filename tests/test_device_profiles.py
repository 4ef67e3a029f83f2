"""The fixed-point firmware on the emulated board: every test sample and every layer bit-exact."""
from __future__ import annotations

import numpy as np
import pytest

from cqtf import reference
from cqtf.emulator import emulate
from cqtf.link.device import connect
from cqtf.pipeline import DEFAULT_BOARD, build_stage, evaluation_split
from cqtf.validate import validate
from conftest import needs

pytestmark = [pytest.mark.device, needs("arm-none-eabi-gcc", "qemu-system-arm")]


@pytest.fixture(scope="module")
def blk32_device(trained_blk32_dir):
    firmware = build_stage(trained_blk32_dir, DEFAULT_BOARD)
    with emulate(DEFAULT_BOARD, firmware) as emulator, connect(emulator.url) as dut:
        yield dut


def test_blk32_device_equals_host_on_every_test_sample(blk32_device, trained_blk32_dir):
    model = trained_blk32_dir.load_model()
    x_test, y_test = evaluation_split(model, "digits")
    result = validate(blk32_device, model, x_test, y_test, progress=False)
    assert result.device_info.profile == "fixed8-blk32"
    assert len(x_test) == 360 and not result.mismatched.any()
    assert np.array_equal(result.device_outputs, reference.run(model, x_test))


def test_blk32_every_layer_output_equals_the_host_reference(blk32_device, trained_blk32_dir):
    model = trained_blk32_dir.load_model()
    x_test, _ = evaluation_split(model, "digits")
    for i in (0, 7, 359):
        for k, expected in enumerate(reference.run_layers(model, x_test[i: i + 1])):
            got = np.frombuffer(blk32_device.infer(x_test[i].tobytes(), layer=k).output, dtype=np.int8)
            assert np.array_equal(got, expected.reshape(-1)), (i, k)
