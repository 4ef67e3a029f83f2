"""Brevitas QAT converted to the device's layer table: Brevitas' integers, its predictions."""
import numpy as np
import pytest

from cqtf.compare import brevitas_qat

pytestmark = pytest.mark.skipif(brevitas_qat.available() is not None, reason=str(brevitas_qat.available()))


def test_converted_model_predicts_like_brevitas():
    from cqtf import reference
    from cqtf.data import load_dataset

    data = load_dataset("digits")
    framework = brevitas_qat.train_brevitas_qat(data, "digits_cnn", float_epochs=2, qat_epochs=1)
    host = reference.predict(reference.run(framework.int_model, data.x_test))
    # Brevitas rounds half to even with float scales, the device TFLM's double rounding: a few ties apart
    assert float((host != framework.predictions).mean()) <= 0.02
    assert float((host == data.y_test).mean()) > 0.5
