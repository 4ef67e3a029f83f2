"""The .tflite export run by TFLite Micro's own interpreter (tflite-micro, reference kernels) gives
exactly cqtf's host reference: on the digits test set, on random trained networks and on layers
built to hit the numerics' edges (left shifts, saturation, rounding ties, padding, strides)."""
from __future__ import annotations

import numpy as np
import pytest

from cqtf import reference
from cqtf.fixedpoint import effective_scale, quantize_multiplier
from cqtf.model_ir import IntLayer, IntModel
from cqtf.pipeline import evaluation_split
from random_models import random_inputs, random_network

pytest.importorskip("tflite_micro", reason="the oracle needs the `oracle` extra: pip install -e '.[oracle]'")

from cqtf import oracle  # noqa: E402
from cqtf.tflite_export import ExportError, export_tflite, overflow_risks, schema  # noqa: E402
from cqtf.train.export import export  # noqa: E402


def _ops(model_bytes: bytes) -> list[str]:
    fb = schema()
    m = fb.ModelT.InitFromPackedBuf(bytearray(model_bytes), 0)
    names = {v: k for k, v in vars(fb.BuiltinOperator).items() if not k.startswith("_")}
    return [names[m.operatorCodes[op.opcodeIndex].builtinCode] for op in m.subgraphs[0].operators]


def test_digits_model_equals_host_reference_on_every_test_sample(trained_dir):
    model = trained_dir.load_model()
    x, _ = evaluation_split(model, "digits")
    model_bytes = export_tflite(model)
    assert model_bytes[4:8] == b"TFL3"
    assert _ops(model_bytes) == ["CONV_2D", "MAX_POOL_2D", "CONV_2D", "FULLY_CONNECTED"]
    result = oracle.compare(model, x, model_bytes)
    assert len(x) == 360
    assert result.host_mismatched.sum() == 0, result.mismatches
    assert np.array_equal(result.tflm_outputs, reference.run(model, x))


def test_a_difference_is_localized_to_sample_layer_and_element(trained_dir):
    """Export, then change one bias on the host side: the oracle must point at that layer and channel."""
    model = trained_dir.load_model()
    x, _ = evaluation_split(model, "digits")
    model_bytes = export_tflite(model)
    model.layers[2].bias[11] += 5000
    result = oracle.compare(model, x[:20], model_bytes)
    assert result.host_mismatched.all()
    first = result.mismatches[0]
    assert (first.sample, first.layer, first.layer_kind) == (0, 2, "conv2d")
    assert first.element[2] == 11 and first.tflm_value != first.host_value


# (input shape, conv stride, conv padding, kernel): SAME and VALID, odd and even sizes, strides
# that do not divide the input; maxpool 3x3 stride 2 pad 1 after each (sizes where that is SAME).
NETWORKS = [((9, 7, 2), 1, 1, 3), ((9, 9, 2), 2, 1, 3), ((9, 7, 2), 1, 0, 3), ((8, 8, 3), 2, 0, 3),
            ((11, 7, 1), 1, 2, 5)]


@pytest.mark.parametrize("seed", range(len(NETWORKS)))
def test_random_trained_networks_equal_host_reference(seed):
    shape, stride, padding, kernel = NETWORKS[seed]
    network = random_network(seed, shape, stride=stride, padding=padding, kernel=kernel)
    model = export(network, shape, 5)
    x = random_inputs(100 + seed, 200, shape)
    result = oracle.compare(model, x)
    assert result.host_mismatched.sum() == 0, result.mismatches


def _scaled_layer(rng, kind, in_shape, out_shape, in_scale, weight_scales, out_scale, zp_in, zp_out, *,
                  kernel=(1, 1), stride=(1, 1), pad=(0, 0), relu=False, weight_max=127, bias_max=2**15) -> IntLayer:
    """A layer whose multipliers come from float32 scales the way the trainer derives them."""
    weight_scales = np.asarray(weight_scales, np.float32)
    pairs = [quantize_multiplier(effective_scale(np.float32(in_scale), s, np.float32(out_scale)))
             for s in weight_scales]
    o = out_shape[2]
    w_shape = (o, *kernel, in_shape[2]) if kind == "conv2d" else (o, int(np.prod(in_shape)))
    return IntLayer(
        kind, in_shape, out_shape, kernel, stride, pad, input_offset=-zp_in, output_offset=zp_out,
        act_min=max(zp_out, -128) if relu else -128, act_max=127,
        weights=rng.integers(-weight_max, weight_max + 1, w_shape).astype(np.int8),
        bias=rng.integers(-bias_max, bias_max + 1, o).astype(np.int32),
        multiplier=np.array([m for m, _ in pairs], np.int32), shift=np.array([s for _, s in pairs], np.int32),
        scales={"input": float(np.float32(in_scale)), "weights": [float(s) for s in weight_scales],
                "output": float(np.float32(out_scale))})


def _edge_model(case: str, rng) -> IntModel:
    if case == "left_shift":  # effective scales 1..4: shifts 1..2, sums small enough to spread the outputs
        conv = _scaled_layer(rng, "conv2d", (6, 6, 2), (6, 6, 4), 0.5, rng.uniform(1, 1.9, 4), 0.5, 3, -7,
                             weight_max=1, bias_max=20)
        fc = _scaled_layer(rng, "fully_connected", (6, 6, 4), (1, 1, 5), 0.5, rng.uniform(1, 2, 5), 0.25,
                           -7, 2, weight_max=1, bias_max=50)
    elif case == "saturation":  # large sums: outputs clamp at both ends, acc << shift still fits int32
        conv = _scaled_layer(rng, "conv2d", (5, 5, 3), (3, 3, 6), 1.0, rng.uniform(0.5, 1, 6), 2**-4, 0, 0,
                             kernel=(3, 3), stride=(2, 2), pad=(1, 1), bias_max=2**20, relu=True)
        fc = _scaled_layer(rng, "fully_connected", (3, 3, 6), (1, 1, 7), 2**-4, rng.uniform(0.5, 1, 7), 2**-8,
                           0, -128, bias_max=2**24)
    elif case == "ties":  # power-of-two scales: multiplier 2^30, so both roundings meet exact halves
        conv = _scaled_layer(rng, "conv2d", (7, 7, 1), (3, 3, 3), 0.25, [1.0, 0.5, 2.0], 8.0, -1, 0,
                             kernel=(3, 3), stride=(2, 2), weight_max=3, bias_max=7)
        fc = _scaled_layer(rng, "fully_connected", (3, 3, 3), (1, 1, 1), 8.0, [0.25], 4.0, 0, 1, weight_max=3)
    else:
        raise ValueError(case)
    pool = IntLayer("maxpool2d", conv.out_shape, conv.out_shape, (3, 3), (1, 1), (1, 1),
                    input_offset=-conv.output_offset, output_offset=conv.output_offset)
    fc.in_shape = pool.out_shape
    layers = [conv, pool, fc]
    return IntModel(case, "int8", conv.in_shape, conv.scales["input"], -conv.input_offset,
                    fc.scales["output"], fc.output_offset, fc.out_shape[2], layers)


@pytest.mark.parametrize("case", ["left_shift", "saturation", "ties"])
def test_numeric_edge_cases_equal_host_reference(case):
    rng = np.random.default_rng(7)
    model = _edge_model(case, rng)
    x = random_inputs(3, 300, model.input_shape)
    host = reference.run_layers(model, x)
    if case == "left_shift":
        assert all((layer.shift > 0).all() for layer in model.layers if layer.shift is not None)
        assert len(np.unique(host[0])) > 20  # not all saturated: the rounding is exercised
    if case == "saturation":
        assert {-128, 127} <= set(np.unique(host[0]).tolist()) | set(np.unique(host[-1]).tolist())
    assert overflow_risks(model) == []
    result = oracle.compare(model, x)
    assert result.host_mismatched.sum() == 0, result.mismatches


def test_left_shift_overflow_is_where_cqtf_and_tflm_part():
    """cqtf saturates acc * 2^shift to int32 (firmware/src/kernels/cqtf_requant.h); TFLM's conv
    multiplies in int32 and wraps. The export warns, and the oracle finds and localizes it."""
    rng = np.random.default_rng(7)
    conv = _scaled_layer(rng, "conv2d", (5, 5, 3), (3, 3, 6), 1.0, rng.uniform(0.5, 1, 6), 2**-12, 0, 0,
                         kernel=(3, 3), stride=(2, 2), pad=(1, 1), bias_max=2**20, relu=True)
    model = IntModel("wrap", "int8", (5, 5, 3), 1.0, 0, 2**-12, 0, 6, [conv])
    risks = overflow_risks(model)
    assert len(risks) == 1 and risks[0].startswith("layer 0 (conv2d)")
    result = oracle.compare(model, random_inputs(3, 50, model.input_shape))
    assert result.host_mismatched.sum() > 0
    first = result.mismatches[0]
    assert first.layer == 0 and first.host_value in (0, 127) and first.tflm_value != first.host_value


def test_refuses_padding_tflite_cannot_express():
    """8x8, 3x3 stride 2 pad 1 gives 4x4 in PyTorch, but TFLite's SAME pads 0 on top there."""
    rng = np.random.default_rng(1)
    conv = _scaled_layer(rng, "conv2d", (8, 8, 1), (4, 4, 2), 0.125, [0.01, 0.02], 0.0625, 0, 0,
                         kernel=(3, 3), stride=(2, 2), pad=(1, 1))
    model = IntModel("pad", "int8", (8, 8, 1), 0.125, 0, 0.0625, 0, 2, [conv])
    with pytest.raises(ExportError, match="layer 0 .* neither TFLite SAME nor VALID"):
        export_tflite(model)


def test_refuses_scales_that_do_not_give_the_packed_multiplier():
    rng = np.random.default_rng(2)
    fc = _scaled_layer(rng, "fully_connected", (1, 1, 4), (1, 1, 3), 0.125, [0.01, 0.02, 0.03], 0.0625, 0, 0)
    fc.multiplier[1] += 1
    model = IntModel("bad", "int8", (1, 1, 4), 0.125, 0, 0.0625, 0, 3, [fc])
    with pytest.raises(ExportError, match="layer 0 .*channel 1: TFLM would derive multiplier"):
        export_tflite(model)


def test_arena_queries(trained_dir):
    model = trained_dir.load_model()
    x, _ = evaluation_split(model, "digits")
    model_bytes = export_tflite(model)
    usage = oracle.arena_usage(model_bytes, x[0])
    assert usage["total"] == usage["head"] + usage["tail"] and usage["head"] > 0
    smallest = oracle.minimum_arena_size(model_bytes, x[0])
    assert usage["total"] <= smallest < usage["total"] + 256  # alignment slack only
    assert not oracle._works(model_bytes, x[0], smallest - 1)


def test_report_keys_without_tflite_micro_are_null_with_a_note(trained_dir, monkeypatch, tmp_path):
    import sys

    model = trained_dir.load_model()
    x, _ = evaluation_split(model, "digits")
    monkeypatch.setitem(sys.modules, "tflite_micro", None)  # import fails as if not installed
    keys = oracle.report_keys(model, x[:3], reference.run(model, x[:3]), tmp_path)
    assert keys["tflm_mismatched_samples"] is None and "pip install" in keys["tflm_note"]
    assert not (tmp_path / "model.tflite").exists()


def test_report_keys_count_device_outputs_that_differ_from_tflm(trained_dir, tmp_path):
    model = trained_dir.load_model()
    x, _ = evaluation_split(model, "digits")
    device = reference.run(model, x[:30])
    device[[4, 9], 0] ^= 1  # two samples with one flipped bit
    keys = oracle.report_keys(model, x[:30], device, tmp_path)
    assert keys["tflm_mismatched_samples"] == 2 and keys["tflm_host_mismatched_samples"] == 0
    assert keys["tflm_note"] is None and (tmp_path / "model.tflite").stat().st_size > 4000
