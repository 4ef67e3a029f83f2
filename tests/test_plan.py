"""The static memory plan: valid on any graph, tight on chains, used by the engine, and enforced against board budgets."""
from __future__ import annotations

import re

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from cqtf.firmware_build import ModelTooLargeError, board_budget, build_firmware, check_model_fits
from cqtf.model_ir import IntLayer, IntModel
from cqtf.native import NativeEngine
from cqtf.pack.header import param_bytes, write_header
from cqtf.pack.plan import ALIGN, EXTERNAL, NONE, Buffer, plan_layers, plan_model
from cli_helpers import assert_clean_error, run_cli
from conftest import needs
from random_models import random_conv_layer, random_inputs


def _assert_valid(plan):
    by_name = {b.name: b for b in plan.buffers}
    for a in plan.buffers:
        start = plan.offsets[a.name]
        assert start % ALIGN == 0 and start + a.size <= plan.arena_size, a
        for b in plan.buffers:
            if a.name < b.name and a.size and b.size and a.first <= b.last and b.first <= a.last:
                other = plan.offsets[b.name]
                assert start + a.size <= other or other + b.size <= start, (a, b, plan.offsets)
    assert plan.arena_size >= plan.peak_live_bytes
    assert set(by_name) == set(plan.offsets)


@st.composite
def graphs(draw):
    """Random DAGs: each layer reads one or two earlier tensors (0 = the model input)."""
    n = draw(st.integers(1, 12))
    sizes = draw(st.lists(st.integers(0, 5000), min_size=n, max_size=n))
    scratch = draw(st.lists(st.sampled_from([0, 0, 16, 48, 288, 1000]), min_size=n, max_size=n))
    inputs = []
    for i in range(n):
        first = draw(st.integers(0, i))
        inputs.append((first,) if draw(st.booleans()) else (first, draw(st.integers(0, i))))
    return sizes, scratch, inputs


@given(graphs())
@settings(max_examples=300, deadline=None)
def test_plan_never_overlaps_buffers_alive_together(graph):
    sizes, scratch, inputs = graph
    plan = plan_layers(sizes, scratch, inputs)
    _assert_valid(plan)
    for i, (slots, ins) in enumerate(zip(plan.layers, inputs)):
        expected = [EXTERNAL if t == 0 else plan.offsets[f"t{t}"] for t in ins]
        assert list(slots.input_at[:len(ins)]) == expected and all(a == NONE for a in slots.input_at[len(ins):])
        assert slots.output_at == plan.offsets[f"t{i + 1}"] and slots.scratch_size == scratch[i]


def test_digits_cnn_chain_needs_only_its_busiest_step():
    # conv 8x8x8 (+48 B im2col), pool 4x4x8, conv 4x4x16 (+288 B im2col), fc 10; input external.
    # Busiest step: the second conv, 128 in + 256 out + 288 scratch = 672 bytes.
    plan = plan_layers([512, 128, 256, 10], [48, 0, 288, 0])
    _assert_valid(plan)
    assert plan.peak_live_bytes == 672 and plan.arena_size == 672
    assert plan.arena_size < 512 + 128 + 256 + 10 + 48 + 288  # buffers really are reused


def test_skip_connection_keeps_its_tensor_alive():
    # t1 = conv(input); t2 = conv(t1); t3 = add(t1, t2): t1 must survive layer 1.
    plan = plan_layers([100, 100, 100], [0, 0, 0], [(0,), (1,), (1, 2)])
    _assert_valid(plan)
    t1 = next(b for b in plan.buffers if b.name == "t1")
    assert t1.last == 2 and plan.arena_size == 300
    assert plan.layers[2].input_at == (plan.offsets["t1"], plan.offsets["t2"])


def test_bad_graphs_are_refused():
    with pytest.raises(ValueError, match="not written before"):
        plan_layers([10, 10], [0, 0], [(0,), (2,)])
    with pytest.raises(ValueError, match="reads 3 tensors"):
        plan_layers([10], [0], [(0, 0, 0)])


def _conv_model(h, w, c, couts, seed=0, name="big") -> IntModel:
    rng = np.random.default_rng(seed)
    layers, shape = [], (h, w, c)
    for cout in couts:
        layer = random_conv_layer(rng, shape[0], shape[1], shape[2], cout, 1, 1, 0, relu=False)
        layers.append(layer)
        shape = layer.out_shape
    return IntModel(name, "int8", (h, w, c), 0.05, 0, 0.1, 0, shape[2], layers)


def test_header_carries_the_plan_and_the_engine_follows_it(tmp_path, native_cache):
    model = _conv_model(6, 5, 4, [8, 3, 8])
    plan = plan_model(model)
    text = write_header(model, tmp_path).read_text()
    assert f"#define CQTF_MODEL_ARENA_SIZE {plan.arena_size}u" in text
    assert f"#define CQTF_MODEL_PARAM_BYTES {param_bytes(model)}u" in text
    x = random_inputs(3, 5, (6, 5, 4))
    from cqtf import reference

    engine = NativeEngine(tmp_path, native_cache)
    assert np.array_equal(np.stack([engine.run(s) for s in x]), reference.run(model, x))


def test_engine_refuses_a_plan_that_writes_over_its_input(tmp_path, native_cache):
    model = _conv_model(6, 5, 4, [8, 8])
    path = write_header(model, tmp_path)
    slots = plan_model(model).layers[1]
    text = path.read_text()
    planned = f"{{0x{slots.input_at[0]:08X}u, 0x{NONE:08X}u}}, {slots.output_at}u,"
    assert planned in text
    path.write_text(text.replace(planned, f"{{0x{slots.input_at[0]:08X}u, 0x{NONE:08X}u}}, "
                                          f"{slots.input_at[0]}u,"))
    engine = NativeEngine(tmp_path, native_cache)
    engine.run(np.zeros(6 * 5 * 4, np.int8), last_layer=0)  # layer 0 is still fine
    with pytest.raises(RuntimeError, match="status 1"):
        engine.run(np.zeros(6 * 5 * 4, np.int8))


def test_model_with_too_large_activations_is_refused_before_compiling(tmp_path):
    model = _conv_model(64, 64, 3, [32])  # a 128 KiB output tensor
    write_header(model, tmp_path)
    budget = board_budget("nucleo_f446re")["ram"]
    with pytest.raises(ModelTooLargeError) as err:
        check_model_fits(tmp_path, "nucleo_f446re")
    assert str(plan_model(model).arena_size) in err.value.message and str(budget) in err.value.message
    check_model_fits(tmp_path, "mps2-an386")  # 4 MiB of RAM: fits


def test_model_with_too_many_weights_is_refused(tmp_path):
    rng = np.random.default_rng(0)
    layer = IntLayer("fully_connected", (1, 1, 1100), (1, 1, 500), input_offset=0, output_offset=0,
                     weights=rng.integers(-127, 128, (500, 1100)).astype(np.int8),
                     bias=np.zeros(500, np.int32), multiplier=np.full(500, 2**30, np.int32),
                     shift=np.full(500, -8, np.int32))
    write_header(IntModel("wide", "int8", (1, 1, 1100), 0.1, 0, 0.1, 0, 500, [layer]), tmp_path)
    with pytest.raises(ModelTooLargeError, match=r"weights take 556000 bytes of flash, the board has 524288"):
        check_model_fits(tmp_path, "nucleo_f446re")


@pytest.mark.device
@needs("arm-none-eabi-gcc")
@pytest.mark.parametrize("side, channels, by_bytes", [
    (110, 5, True),   # two 60500-byte tensors and a 12100-byte request buffer: .bss overflows the RAM region
    (100, 6, False),  # two 60000-byte tensors: .bss fits, the stack reserve does not (the linker script's ASSERT)
])
def test_linker_overflow_is_reported_with_sizes(tmp_path, side, channels, by_bytes):
    """Arena alone fits, but with the serial buffers and the stack it does not: the link fails and
    the user gets the sizes, not the linker's output."""
    model = _conv_model(side, side, 1, [channels, channels])
    write_header(model, tmp_path)
    check_model_fits(tmp_path, "nucleo_f446re")
    with pytest.raises(ModelTooLargeError) as err:
        build_firmware("nucleo_f446re", tmp_path, tmp_path / "build")
    arena = plan_model(model).arena_size  # 2 tensors + im2col scratch
    short = r" by \d+ bytes" if by_bytes else ""
    assert re.search(rf"RAM short{short} \(arena {arena} \+ link buffers \+ stack, board 131072\)",
                     err.value.message), err.value.message


def test_cli_build_refuses_with_a_clean_error(tmp_path):
    model = _conv_model(64, 64, 3, [32])
    model.save(tmp_path / "model.npz")
    proc = run_cli("build", "--model-dir", tmp_path, "--board", "nucleo_f446re")
    assert_clean_error(proc, "does not fit nucleo_f446re", "131072")
