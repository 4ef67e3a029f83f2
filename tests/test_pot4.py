"""Profile pot4 (n-BQ-NN power-of-two weights): codes, packing, training forward == reference ==
firmware C, the gradual blend, and the trained model on the emulated board.

The kernels' host reference is cqtf.reference_fixed on the decoded integer weights (the fixed-point
reference needs nothing of its own: a power-of-two weight is an int8 value); the firmware reads the
packed 4-bit codes and shifts (kernels/cqtf_conv2d_pot4.c, cqtf_fully_connected_pot4.c).
"""
from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from cqtf import pow2, reference
from cqtf.errors import ToolchainError
from cqtf.model_ir import IntLayer, IntModel
from cqtf.native import ENGINE_SOURCES, NativeEngine, build_library
from cqtf.pack.header import param_bytes, render, write_header
from cqtf.pipeline import ModelDir, evaluation_split, pack_stage, train_stage
from cqtf.profile import PRESETS, PowerOfTwo, Profile, firmware_constants
from cqtf.train.export import export
from cqtf.train.model import logits_int8
from cqtf.train.pot_blend import PotBlend
from conftest import needs
from test_profiles import _inputs, fixed_network, naive_conv_fixed

POT4 = PRESETS["pot4"]
VALUES = [0] + [s * (1 << e) for e in range(7) for s in (1, -1)]


# ---- codes and packing ----

@settings(max_examples=200, deadline=None)
@given(st.lists(st.sampled_from(VALUES), min_size=1, max_size=67))
def test_encode_decode_pack_unpack_round_trip(values):
    v = np.array(values, np.int64)
    codes = pow2.encode(v)
    assert codes.max() <= 0xF and not (codes == 0x8).any()  # the negative zero is never written
    assert np.array_equal(pow2.decode(codes), v)
    packed = pow2.pack_nibbles(codes)
    assert packed.size == (v.size + 1) // 2  # two weights a byte
    assert np.array_equal(pow2.unpack_nibbles(packed, v.size), codes)


def test_every_code_decodes_and_the_nibble_order_is_low_first():
    codes = np.arange(16)
    values = pow2.decode(codes)
    assert values.tolist() == [0, 1, 2, 4, 8, 16, 32, 64, 0, -1, -2, -4, -8, -16, -32, -64]
    assert np.array_equal(pow2.encode(values[codes != 8]), codes[codes != 8])
    assert pow2.pack_nibbles(np.array([0x1, 0xA, 0x7])).tolist() == [0xA1, 0x07]
    with pytest.raises(ValueError):
        pow2.encode(np.array([3]))
    with pytest.raises(ValueError):
        pow2.encode(np.array([128]))


@settings(max_examples=300, deadline=None)
@given(st.floats(-200.0, 200.0, allow_nan=False))
def test_quantizer_picks_the_nearest_power_of_two_ties_up(v):
    q = float(pow2.quantize(torch.tensor([v], dtype=torch.float64), 6)[0])
    assert q in VALUES
    magnitudes = np.array(sorted({abs(x) for x in VALUES}), float)
    dist = np.abs(magnitudes - abs(v))
    best = magnitudes[dist == dist.min()].max()  # the nearest; a tie goes to the larger magnitude
    assert abs(q) == best and (q == 0 or np.sign(q) == np.sign(v))


def test_quantizer_exact_thresholds():
    v = torch.tensor([0.49, 0.5, 1.49, 1.5, 2.99, 3.0, 47.9, 48.0, 1000.0, -0.5, -3.0], dtype=torch.float64)
    assert pow2.quantize(v, 6).tolist() == [0, 1, 1, 2, 2, 4, 32, 64, 64, -1, -4]


def test_profile_round_trips_and_maps_to_firmware_constants():
    assert "pot4" in list(PRESETS)[6:]  # appended after the six earlier presets, whose order stays
    assert Profile.from_dict(POT4.to_dict()).to_dict() == POT4.to_dict() and isinstance(POT4.weights, PowerOfTwo)
    assert POT4.weights.qmax == 64 and POT4.weights.max_exp == 6
    assert firmware_constants(POT4)["WEIGHT_KIND"] == 1
    assert "WEIGHT_KIND" not in firmware_constants(PRESETS["fixed8"])  # other headers are unchanged


# ---- training forward == host reference == spec ----

SHAPES = [  # seed, stride, padding, kernel, weight scale
    (0, 1, 1, 3, 1.0), (1, 2, 2, 5, 8.0), (2, 1, 0, 1, 30.0), (3, 2, 1, 3, 0.3), (4, 1, 2, 2, 3.0),
]


@pytest.mark.parametrize("alpha", [1.0, 0.7])
@pytest.mark.parametrize("seed,stride,padding,kernel,weight_scale", SHAPES)
def test_training_forward_equals_reference(seed, stride, padding, kernel, weight_scale, alpha):
    network = fixed_network(seed, POT4, stride=stride, padding=padding, kernel=kernel, weight_scale=weight_scale)
    for layer in network.quant_layers():
        layer.pot_blend = alpha
    x = _inputs(seed + 100, 48)
    model = export(network, (9, 7, 2), 5)
    assert np.array_equal(logits_int8(network, x), reference.run(model, x))
    weights = [layer.weights for layer in model.layers if layer.weights is not None]
    assert all(pow2.is_power_of_two(w, 6).all() for w in weights) == (alpha == 1.0)
    if alpha == 1.0:  # the fixed-point reference equals the spec read element by element
        assert np.array_equal(reference.run_layers(model, x[:2])[0][1],
                              naive_conv_fixed(x[1], model.layers[0], POT4))


def test_training_stays_exact_and_gradients_flow():
    network = fixed_network(7, POT4, weight_scale=4.0)
    x = _inputs(8, 32)
    y = torch.from_numpy(np.arange(32) % 5)
    optimizer = torch.optim.Adam(network.parameters(), lr=1e-2)
    for alpha in (0.5, 0.8, 1.0):
        for layer in network.quant_layers():
            layer.pot_blend = alpha
        network.train()
        loss = torch.nn.functional.cross_entropy(network(torch.from_numpy(x)), y)
        optimizer.zero_grad()
        loss.backward()
        for name, parameter in network.named_parameters():
            assert parameter.grad is not None and parameter.grad.abs().sum() > 0, name
        optimizer.step()
        assert np.array_equal(logits_int8(network, x), reference.run(export(network, (9, 7, 2), 5), x))


def test_blend_rises_from_half_to_one_and_scores_only_device_states():
    network = fixed_network(0, POT4)
    blend = PotBlend(network, 20)
    scored = []
    after_epoch = blend.wrap(scored.append)
    assert network.quant_layers()[0].pot_blend == 0.5
    for epoch in range(1, 21):
        after_epoch(epoch)
    assert blend.alphas[0] == 0.5 and blend.alphas[-1] == 1.0 and blend.alphas == sorted(blend.alphas)
    assert scored == [e for e, a in zip(range(1, 21), blend.alphas) if a == 1.0] and scored[-1] == 20
    assert blend.finish()["phase"] == "pot_blend" and network.quant_layers()[0].pot_blend == 1.0


# ---- packer and firmware C (host-native) ----

def _pot_model(seed: int, conv_in=(5, 6, 3), out_c=3, kernel=3, stride=1, pad=1) -> IntModel:
    """A random pot4 model of one conv and one dense layer with random power-of-two weights
    (odd element counts: the last high nibble is padding)."""
    rng = np.random.default_rng(seed)
    h, w, c = conv_in
    oh, ow = (h + 2 * pad - kernel) // stride + 1, (w + 2 * pad - kernel) // stride + 1
    conv = IntLayer("conv2d", conv_in, (oh, ow, out_c), (kernel, kernel), (stride, stride), (pad, pad),
                    act_min=0, act_max=127,
                    weights=rng.choice(VALUES, (out_c, kernel, kernel, c)).astype(np.int8),
                    bias=rng.integers(-3000, 3000, out_c).astype(np.int32),
                    shift=np.full(out_c, -int(rng.integers(5, 9)), np.int32))
    fc = IntLayer("fully_connected", (oh, ow, out_c), (1, 1, 5), act_min=-127, act_max=127,
                  weights=rng.choice(VALUES, (5, oh * ow * out_c)).astype(np.int8),
                  bias=rng.integers(-3000, 3000, 5).astype(np.int32), shift=np.full(5, -7, np.int32))
    return IntModel("pot", "pot4", conv_in, 2.0 ** -6, 0, 2.0 ** -4, 0, 5, [conv, fc])


@pytest.mark.parametrize("optimized", [False, True], ids=["reference", "optimized"])
@pytest.mark.parametrize("seed,conv_in,kernel,stride,pad", [
    (0, (5, 6, 3), 3, 1, 1), (1, (7, 5, 1), 3, 2, 0), (2, (4, 4, 5), 1, 1, 0), (3, (6, 7, 2), 5, 2, 2),
])
def test_native_kernels_equal_the_reference(seed, conv_in, kernel, stride, pad, optimized, tmp_path, native_cache):
    model = _pot_model(seed, conv_in, 3, kernel, stride, pad)
    text = write_header(model, tmp_path).read_text()
    assert "static const uint8_t cqtf_l0_weights" in text and "(const int8_t *)cqtf_l0_weights" in text
    engine = NativeEngine(tmp_path, native_cache, optimized=optimized)
    x = _inputs(seed, 60, conv_in)
    expected = reference.run_layers(model, x)
    for n in range(len(x)):
        for k in range(len(model.layers)):
            assert np.array_equal(engine.run(x[n], last_layer=k), expected[k][n].reshape(-1)), (n, k)


def test_flash_holds_half_the_weight_bytes():
    model = _pot_model(0)
    weights = sum(layer.weights.size for layer in model.layers)
    others = sum(layer.bias.size * 4 + layer.shift.size * 4 for layer in model.layers)
    assert param_bytes(model) == others + sum((layer.weights.size + 1) // 2 for layer in model.layers)
    assert param_bytes(model) < others + weights


def test_firmware_refuses_an_unknown_weight_kind(tmp_path, native_cache):
    header = render(_pot_model(1)).replace("#define CQTF_MODEL_ARITH_WEIGHT_KIND 1u",
                                           "#define CQTF_MODEL_ARITH_WEIGHT_KIND 2u")
    (tmp_path / "cqtf_model.h").write_text(header)
    with pytest.raises(ToolchainError, match="weights .* this firmware does not implement"):
        build_library(ENGINE_SOURCES, [tmp_path], native_cache)


# ---- a trained model: host-native and the emulated board ----

@pytest.fixture(scope="module")
def trained_pot4_dir(tmp_path_factory) -> ModelDir:
    model_dir = ModelDir(tmp_path_factory.mktemp("model_pot4"))
    train_stage("digits", "digits_cnn", "pot4", model_dir, (4, 4))
    pack_stage(model_dir)
    return model_dir


def test_trained_pot4_model_matches_natively_on_every_test_sample(trained_pot4_dir, native_cache):
    summary = json.loads(trained_pot4_dir.train_json.read_text())
    assert summary["profile"] == "pot4" and summary["host_accuracy"] > 0.8
    assert any(h["phase"] == "pot_blend" and h["alpha_per_epoch"][-1] == 1.0 for h in summary["history"])
    model = trained_pot4_dir.load_model()
    assert all(pow2.is_power_of_two(layer.weights, 6).all() for layer in model.layers if layer.weights is not None)
    x, _ = evaluation_split(model, "digits")
    expected = reference.run(model, x)
    for optimized in (False, True):
        engine = NativeEngine(trained_pot4_dir.root, native_cache, optimized=optimized)
        assert np.array_equal(np.stack([engine.run(s) for s in x]), expected)


@pytest.mark.device
@needs("arm-none-eabi-gcc", "qemu-system-arm")
def test_trained_pot4_device_equals_host_on_every_test_sample(trained_pot4_dir):
    from cqtf.emulator import emulate
    from cqtf.link.device import connect
    from cqtf.pipeline import DEFAULT_BOARD, build_stage
    from cqtf.validate import validate

    model = trained_pot4_dir.load_model()
    x_test, y_test = evaluation_split(model, "digits")
    firmware = build_stage(trained_pot4_dir, DEFAULT_BOARD)
    with emulate(DEFAULT_BOARD, firmware) as emulator, connect(emulator.url) as dut:
        result = validate(dut, model, x_test, y_test, progress=False)
        assert result.device_info.profile == "pot4"
        assert len(x_test) == 360 and not result.mismatched.any()
        for k, expected in enumerate(reference.run_layers(model, x_test[7:8])):
            got = np.frombuffer(dut.infer(x_test[7].tobytes(), layer=k).output, dtype=np.int8)
            assert np.array_equal(got, expected.reshape(-1)), k
