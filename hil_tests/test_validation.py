"""Every test sample through the device; every output byte compared with the host simulation."""
from __future__ import annotations

import pytest

from cqtf.jobs import validate_on_port
from hil_tests import matrix
from hil_tests.targets import running_device

pytestmark = pytest.mark.device

AGREEMENT_KEYS = ("samples", "mismatched_samples", "prediction_disagreements", "device_accuracy", "host_accuracy",
                  "float_accuracy", "link_errors", "instructions_per_inference", "throughput_samples_per_s",
                  "model_hash", "board")


def test_device_agrees_with_host_bit_for_bit(combo, hil, model_dirs, record_property, tmp_path):
    model_dir = model_dirs(combo.model, combo.profile)
    model = model_dir.load_model()
    data = model_dir.load_training().get("dataset") or matrix.dataset_for(combo.model)
    with running_device(combo.target, model_dir, port=hil.port, flash_first=hil.flash,
                        upload_port=hil.upload_port) as url:
        report = validate_on_port(url, model_dir, data, tmp_path / "report", baud=hil.baud)

    agreement = 1 - report["mismatched_samples"] / report["samples"]
    row = {"target": combo.target, "model": combo.model, "profile": combo.profile, "agreement": agreement,
           **{key: report.get(key) for key in AGREEMENT_KEYS}}
    hil.record(row)
    for key, value in row.items():
        record_property(key, value)

    assert report["samples"] > 0
    assert report["model_hash"] == model.hash()
    if not hil.port:  # an emulator's link is lossless; a real wire may need (counted) retries
        assert report["board"] == combo.target  # the firmware names the board it was built for
        assert report["link_errors"] == 0, report["link_stats"]
    assert report["mismatched_samples"] == 0, report["mismatches"][:5]
    assert report["device_accuracy"] == report["host_accuracy"]
