"""TF-MOT's full-int8 .tflite converted to the device's layer table: cqtf's host reference equals TFLM."""
import numpy as np
import pytest

from cqtf.compare import tf_qat

pytestmark = pytest.mark.skipif(tf_qat.available() is not None, reason=str(tf_qat.available()))


@pytest.fixture(scope="module", params=["digits", "mnist1d"])
def trained(request):
    from cqtf.data import load_dataset

    data = load_dataset(request.param)
    model = {"digits": "digits_cnn", "mnist1d": "mnist1d_cnn"}[request.param]
    return data, tf_qat.train_tf_qat(data, model, float_epochs=2, qat_epochs=1)


def test_tflite_input_is_the_data_sets_quantization(trained):
    data, framework = trained
    assert framework.int_model.input_scale == float(data.input_quant.scale)
    assert framework.int_model.input_zero_point == data.input_quant.zero_point


def test_host_reference_equals_tflm_on_every_test_sample(trained):
    from cqtf import reference
    from cqtf.oracle import run_tflm

    data, framework = trained
    host = reference.run(framework.int_model, data.x_test)
    tflm = run_tflm(framework.tflite, data.x_test)
    assert int(np.any(host != tflm, axis=1).sum()) == 0
    accuracy = float((reference.predict(host) == data.y_test).mean())
    assert accuracy == framework.framework_int8_accuracy
