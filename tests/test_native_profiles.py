"""The firmware's C for every profile, compiled for the host, against the host reference."""
import json

import numpy as np
import pytest

from cqtf import reference
from cqtf.errors import ToolchainError
from cqtf.native import ENGINE_SOURCES, NativeEngine, build_library
from cqtf.pack.header import render, write_header
from cqtf.pipeline import evaluation_split
from cqtf.profile import PRESETS, Rounding, get_profile
from cqtf.train.export import export
from test_profiles import ACC_CASES, _inputs, _profile, fixed_network

NATIVE_PROFILES = [PRESETS[name] for name in ("fixed8", "fixed8-acc16", "fixed8-floor", "fixed8-blk32")] + [
    _profile(acc_bits, block, br, orr) for acc_bits, block, br, orr, _, _ in ACC_CASES[3:6]
] + [PRESETS["pot4"]]


@pytest.mark.parametrize("optimized", [False, True], ids=["reference", "optimized"])
@pytest.mark.parametrize("profile,seed,weight_scale", [(p, i, (1.0, 8.0, 30.0)[i % 3])
                                                       for i, p in enumerate(NATIVE_PROFILES)],
                         ids=lambda v: getattr(v, "name", str(v)))
def test_fixed_networks_match(profile, seed, weight_scale, optimized, tmp_path, native_cache):
    network = fixed_network(seed, profile, stride=1 + seed % 2, padding=seed % 3, kernel=3, weight_scale=weight_scale)
    model = export(network, (9, 7, 2), 5)
    write_header(model, tmp_path)
    engine = NativeEngine(tmp_path, native_cache, optimized=optimized)
    x = _inputs(seed, 40)
    expected = reference.run_layers(model, x)
    for n in range(len(x)):
        for k in range(len(model.layers)):
            got = engine.run(x[n], last_layer=k)
            assert np.array_equal(got, expected[k][n].reshape(-1)), f"sample {n} layer {k}"


@pytest.mark.parametrize("optimized", [False, True], ids=["reference", "optimized"])
def test_int8_single_rounding_network_matches(optimized, tmp_path, native_cache):
    from random_models import random_network

    network = random_network(5, stride=2, padding=1, kernel=3)
    network.set_profile(get_profile("int8-single"))
    model = export(network, (9, 7, 2), 5)
    write_header(model, tmp_path)
    engine = NativeEngine(tmp_path, native_cache, optimized=optimized)
    x = _inputs(21, 200)
    assert np.array_equal(np.stack([engine.run(s) for s in x]), reference.run(model, x))


def test_trained_blk32_model_matches_on_every_test_sample(trained_blk32_dir, native_cache):
    model = trained_blk32_dir.load_model()
    summary = json.loads(trained_blk32_dir.train_json.read_text())
    for key in ("float_accuracy", "host_accuracy", "float_deployed_accuracy", "profile", "dataset", "model"):
        assert key in summary
    assert summary["profile"] == "fixed8-blk32" and summary["host_accuracy"] > 0.8
    health = [h for h in summary["history"] if h["phase"] == "quantized"][-1]["gradient_health"]
    assert len(health) == 3 and all("saturated_share" in row and "grad_zero_share" in row for row in health)
    x, _ = evaluation_split(model, "digits")
    expected = reference.run(model, x)
    for optimized in (False, True):
        engine = NativeEngine(trained_blk32_dir.root, native_cache, optimized=optimized)
        assert np.array_equal(np.stack([engine.run(s) for s in x]), expected)


def test_header_carries_the_arithmetic(trained_blk32_dir):
    header = trained_blk32_dir.header.read_text()
    for line in ("#define CQTF_MODEL_ARITH_REQUANT 2u", "#define CQTF_MODEL_ARITH_ACC_BITS 8u",
                 "#define CQTF_MODEL_ARITH_BLOCK 32u", "#define CQTF_MODEL_ARITH_BLOCK_ROUNDING 0u",
                 '#define CQTF_MODEL_PROFILE "fixed8-blk32"'):
        assert line in header


def test_firmware_refuses_a_model_for_other_arithmetic(trained_blk32_dir, tmp_path, native_cache):
    """A firmware built for int8 only (-DCQTF_FIRMWARE_REQUANT=0) does not compile a fixed-point model;
    a header whose arithmetic this firmware lacks does not compile either."""
    with pytest.raises(ToolchainError, match="built for another requantization"):
        build_library(ENGINE_SOURCES, [trained_blk32_dir.root], native_cache, ("CQTF_FIRMWARE_REQUANT=0",))
    header = render(trained_blk32_dir.load_model()).replace("#define CQTF_MODEL_ARITH_ACC_BITS 8u",
                                                            "#define CQTF_MODEL_ARITH_ACC_BITS 40u")
    (tmp_path / "cqtf_model.h").write_text(header)
    with pytest.raises(ToolchainError, match="this firmware does not implement"):
        build_library(ENGINE_SOURCES, [tmp_path], native_cache)
