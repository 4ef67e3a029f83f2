"""The firmware's C engine, compiled for the host, against the host reference on every digits test sample."""
import numpy as np
import pytest

from cqtf import reference
from cqtf.data import InputQuant, load_dataset
from cqtf.native import NativeEngine
from cqtf.pack.header import write_header
from cqtf.train.export import export
from random_models import random_inputs, random_network


def test_engine_matches_reference_on_every_test_sample(trained_dir, native_cache):
    model = trained_dir.load_model()
    engine = NativeEngine(trained_dir.root, native_cache)
    data = load_dataset("digits", InputQuant(model.input_scale, model.input_zero_point))
    expected = reference.run(model, data.x_test)
    got = np.stack([engine.run(x) for x in data.x_test])
    assert np.array_equal(got, expected)


def test_every_layer_output_matches(trained_dir, native_cache):
    model = trained_dir.load_model()
    engine = NativeEngine(trained_dir.root, native_cache)
    x = random_inputs(1, 4, model.input_shape)
    for n in range(len(x)):
        host_layers = reference.run_layers(model, x[n: n + 1])
        for k in range(len(model.layers)):
            assert np.array_equal(engine.run(x[n], last_layer=k), host_layers[k].reshape(-1)), f"layer {k}"


@pytest.mark.parametrize("seed,stride,padding,kernel", [(11, 2, 1, 3), (12, 1, 0, 3), (13, 2, 2, 5), (14, 1, 0, 1)])
def test_random_networks_match(seed, stride, padding, kernel, tmp_path, native_cache):
    model = export(random_network(seed, stride=stride, padding=padding, kernel=kernel), (9, 7, 2), 5)
    write_header(model, tmp_path)
    engine = NativeEngine(tmp_path, native_cache)
    x = random_inputs(seed, 50, (9, 7, 2))
    assert np.array_equal(np.stack([engine.run(s) for s in x]), reference.run(model, x))


def test_bad_layer_index_is_refused(trained_dir, native_cache):
    engine = NativeEngine(trained_dir.root, native_cache)
    with pytest.raises(RuntimeError, match="status 2"):
        engine.run(np.zeros(64, np.int8), last_layer=len(trained_dir.load_model().layers))
