"""Golden vectors for the on-target kernel tests (test/test_kernels), generated from the host reference.

    .venv/bin/python test/golden_vectors.py          # rewrites test/test_kernels/golden/

Each case is a small integer model (cqtf.model_ir.IntModel) chosen to reach one corner of the kernels:
padding on every side, strides, non-square kernels, 1x1 convolutions, left shifts, a zero multiplier,
saturation, clamps, the input offset 128, a chain of layers. The case is packed with the real packer
(cqtf.pack.header.render: the model-header contract the firmware compiles) and run through the host
reference (cqtf.reference), whose every layer output becomes the expected bytes. A second table checks
the requantization helper alone on edge values (cqtf.fixedpoint.requantize, cross-checked against the
plain-integer oracle requantize_scalar).

Generated files (do not edit; tests/test_golden_vectors.py fails when they are stale):
  golden/model_NN.h      the packed header of case NN, unchanged from the packer
  golden/model_NN.c      defines that model's data under the name cqtf_golden_model_NN
  golden/cqtf_model.h    the largest case again (tensors and planned arena): the model the test firmware
                         is built with, so the engine's buffers (sized from the compiled-in model) hold
                         every case
  golden/golden_limits.h CQTF_GOLDEN_TENSOR_MAX, checked against the compiled-in model at compile time
  golden/golden_cases.c  inputs, expected per-layer outputs and the case table (golden.h)
"""
from __future__ import annotations

import re
import sys
from pathlib import Path

import numpy as np

from cqtf import reference
from cqtf.fixedpoint import INT32_MAX, INT32_MIN, requantize, requantize_scalar
from cqtf.model_ir import IntLayer, IntModel
from cqtf.pack.header import render

GOLDEN_DIR = Path(__file__).resolve().parent / "test_kernels" / "golden"
SEED = 20250601
INPUTS_PER_CASE = 4  # three random inputs and one at the int8 extremes


def _conv(rng, in_shape, out_c, kernel, stride=(1, 1), pad=(0, 0), relu=False, shift=(-10, -7),
          input_offset=None, output_offset=None):
    h, w, c = in_shape
    (kh, kw), (sh, sw), (pt, pl) = kernel, stride, pad
    out_shape = ((h + 2 * pt - kh) // sh + 1, (w + 2 * pl - kw) // sw + 1, out_c)
    zp_out = int(rng.integers(-40, 40)) if output_offset is None else output_offset
    return IntLayer(
        kind="conv2d", in_shape=in_shape, out_shape=out_shape, kernel=kernel, stride=stride, pad=pad,
        input_offset=int(rng.integers(-127, 129)) if input_offset is None else input_offset,
        output_offset=zp_out, act_min=zp_out if relu else -128, act_max=127,
        weights=rng.integers(-127, 128, (out_c, kh, kw, c)).astype(np.int8),
        bias=rng.integers(-4000, 4000, out_c).astype(np.int32),
        multiplier=rng.integers(1 << 30, 1 << 31, out_c).astype(np.int32),
        shift=rng.integers(shift[0], shift[1] + 1, out_c).astype(np.int32))


def _pool(rng, in_shape, kernel, stride, pad=(0, 0), act_min=-128, act_max=127):
    h, w, c = in_shape
    (kh, kw), (sh, sw), (pt, pl) = kernel, stride, pad
    out_shape = ((h + 2 * pt - kh) // sh + 1, (w + 2 * pl - kw) // sw + 1, c)
    return IntLayer(kind="maxpool2d", in_shape=in_shape, out_shape=out_shape, kernel=kernel, stride=stride,
                    pad=pad, act_min=act_min, act_max=act_max)


def _fc(rng, in_shape, out_c, shift=(-12, -8), input_offset=None, relu=False):
    features = int(np.prod(in_shape))
    zp_out = int(rng.integers(-20, 20))
    return IntLayer(
        kind="fully_connected", in_shape=in_shape, out_shape=(1, 1, out_c),
        input_offset=int(rng.integers(-127, 129)) if input_offset is None else input_offset,
        output_offset=zp_out, act_min=zp_out if relu else -128, act_max=127,
        weights=rng.integers(-127, 128, (out_c, features)).astype(np.int8),
        bias=rng.integers(-20000, 20000, out_c).astype(np.int32),
        multiplier=rng.integers(1 << 30, 1 << 31, out_c).astype(np.int32),
        shift=rng.integers(shift[0], shift[1] + 1, out_c).astype(np.int32))


def _depthwise(rng, in_shape, kernel, stride=(1, 1), pad=(0, 0), relu=False, shift=(-8, -5)):
    h, w, c = in_shape
    (kh, kw), (sh, sw), (pt, pl) = kernel, stride, pad
    out_shape = ((h + 2 * pt - kh) // sh + 1, (w + 2 * pl - kw) // sw + 1, c)
    zp_out = int(rng.integers(-40, 40))
    return IntLayer(
        kind="depthwise_conv2d", in_shape=in_shape, out_shape=out_shape, kernel=kernel, stride=stride, pad=pad,
        input_offset=int(rng.integers(-127, 129)), output_offset=zp_out, act_min=zp_out if relu else -128,
        act_max=127, weights=rng.integers(-127, 128, (1, kh, kw, c)).astype(np.int8),
        bias=rng.integers(-4000, 4000, c).astype(np.int32),
        multiplier=rng.integers(1 << 30, 1 << 31, c).astype(np.int32),
        shift=rng.integers(shift[0], shift[1] + 1, c).astype(np.int32))


def _add(rng, shape, inputs, offsets, relu=False):
    """An int8 ADD of two tensors (layer inputs = tensor indices): input rescales below one, the sum's by 2^-15..-19."""
    zp_out = int(rng.integers(-40, 40))
    return IntLayer(kind="add", in_shape=shape, out_shape=shape, inputs=inputs, input_offset=offsets[0],
                    input_b_offset=offsets[1], output_offset=zp_out, act_min=zp_out if relu else -128, act_max=127,
                    multiplier=rng.integers(1 << 30, 1 << 31, 3).astype(np.int32),
                    shift=np.array([rng.integers(-3, 0), rng.integers(-3, 0), rng.integers(-19, -14)], np.int32))


def _avgpool(in_shape, kernel, stride, pad=(0, 0)):
    h, w, c = in_shape
    (kh, kw), (sh, sw), (pt, pl) = kernel, stride, pad
    out_shape = ((h + 2 * pt - kh) // sh + 1, (w + 2 * pl - kw) // sw + 1, c)
    return IntLayer(kind="avgpool2d", in_shape=in_shape, out_shape=out_shape, kernel=kernel, stride=stride, pad=pad)


def _model(name: str, layers: list[IntLayer]) -> IntModel:
    return IntModel(name=name, profile="int8", input_shape=tuple(layers[0].in_shape), input_scale=1.0,
                    input_zero_point=0, output_scale=1.0, output_zero_point=0,
                    num_classes=int(np.prod(layers[-1].out_shape)), layers=layers)


def build_cases() -> list[IntModel]:
    """The golden models, deterministic for SEED."""
    rng = np.random.default_rng(SEED)
    cases = [
        _model("conv3x3_same_relu", [_conv(rng, (6, 6, 3), 4, (3, 3), pad=(1, 1), relu=True)]),
        _model("conv3x3_stride2_odd", [_conv(rng, (7, 7, 2), 5, (3, 3), stride=(2, 2), pad=(1, 1))]),
        _model("conv1x1_pointwise", [_conv(rng, (5, 5, 8), 6, (1, 1), shift=(-9, -6))]),
        _model("conv5x3_rect_strides", [_conv(rng, (6, 8, 2), 3, (5, 3), stride=(1, 2), pad=(2, 1))]),
        _model("conv_input_offset_128", [_conv(rng, (4, 4, 4), 4, (3, 3), pad=(1, 1), input_offset=128,
                                               relu=True, output_offset=-128)]),
        _model("maxpool2x2_stride2", [_pool(rng, (6, 6, 3), (2, 2), (2, 2))]),
        _model("maxpool3x3_pad_clamped", [_pool(rng, (7, 7, 2), (3, 3), (2, 2), pad=(1, 1), act_min=-20,
                                                act_max=90)]),
        _model("fc_saturating", [_fc(rng, (1, 1, 48), 10, shift=(-6, -3), input_offset=128)]),
    ]
    # Every shift the format allows, a zero multiplier and the largest one, in one layer.
    edge = _fc(rng, (1, 1, 12), 16, shift=(-10, -10))
    edge.shift[:] = [-31, -30, -20, -12, -8, -4, -1, 0, 1, 2, 4, 8, 16, 29, 30, -5]
    edge.multiplier[3] = 0
    edge.multiplier[4] = INT32_MAX
    edge.multiplier[5] = 1 << 30
    edge.bias[:4] = [INT32_MAX // 2, INT32_MIN // 2, 0, -1]
    cases.append(_model("fc_shift_and_multiplier_edges", [edge]))
    # A chain through the engine's ping-pong buffers: conv, pool, conv, dense.
    conv1 = _conv(rng, (8, 8, 1), 4, (3, 3), pad=(1, 1), relu=True)
    pool = _pool(rng, conv1.out_shape, (2, 2), (2, 2), act_min=conv1.act_min)
    conv2 = _conv(rng, pool.out_shape, 6, (3, 3), pad=(1, 1), relu=True, input_offset=-conv1.output_offset)
    dense = _fc(rng, conv2.out_shape, 10, input_offset=-conv2.output_offset)
    cases.append(_model("network_conv_pool_conv_dense", [conv1, pool, conv2, dense]))
    # Appended last so that the cases above keep their random draws.
    cases.append(_model("depthwise3x3_stride2_pad", [_depthwise(rng, (7, 6, 5), (3, 3), (2, 2), (1, 1),
                                                                relu=True)]))
    # A residual block: conv, conv, add of the first conv's output (tensor 1) and the second's (tensor 2),
    # then an average pool whose padded windows count fewer inputs, and a global one.
    conv_a = _conv(rng, (4, 4, 3), 3, (3, 3), pad=(1, 1), relu=True)
    conv_b = _conv(rng, conv_a.out_shape, 3, (3, 3), pad=(1, 1), input_offset=-conv_a.output_offset)
    add = _add(rng, conv_b.out_shape, (2, 1), (-conv_b.output_offset, -conv_a.output_offset), relu=True)
    pool = _avgpool(add.out_shape, (3, 3), (2, 2), (1, 1))
    cases.append(_model("residual_add_avgpool", [conv_a, conv_b, add, pool, _avgpool(pool.out_shape, (2, 2), (2, 2))]))
    return cases


def case_inputs(model: IntModel, rng: np.random.Generator) -> np.ndarray:
    x = rng.integers(-128, 128, (INPUTS_PER_CASE, *model.input_shape)).astype(np.int8)
    x[-1] = np.where(np.indices(model.input_shape).sum(axis=0) % 2 == 0, 127, -128)  # the extremes
    return x


def requant_vectors(rng: np.random.Generator) -> np.ndarray:
    """Rows (acc, multiplier, shift, expected): edges of every step, then random values."""
    edges = []
    for acc in (0, 1, -1, 2, -2, 3, -3, 1000, -1000, INT32_MAX, INT32_MIN, INT32_MIN + 1, 1 << 30, -(1 << 30)):
        for multiplier in (0, 1 << 30, (1 << 30) + 1, INT32_MAX, 1518500250):
            for shift in (-31, -17, -1, 0, 1, 30):
                edges.append((acc, multiplier, shift))
    # Ties of the final rounding: acc * M / 2^31 lands on x.5 exactly.
    for k in range(-8, 8):
        edges.append((2 * k + 1, 1 << 30, -1))
    randoms = np.stack([rng.integers(INT32_MIN, INT32_MAX, 200, endpoint=True),
                        rng.integers(1 << 30, 1 << 31, 200), rng.integers(-31, 31, 200)], axis=1)
    rows = np.concatenate([np.array(edges, dtype=np.int64), randoms.astype(np.int64)])
    expected = requantize(rows[:, 0], rows[:, 1], rows[:, 2])
    for (acc, multiplier, shift), want in zip(rows.tolist(), expected.tolist()):
        assert requantize_scalar(acc, multiplier, shift) == want, (acc, multiplier, shift)
    # The device stores int32: keep the rows whose result is one (the others are out of contract).
    keep = (expected >= INT32_MIN) & (expected <= INT32_MAX)
    return np.concatenate([rows[keep], expected[keep, None]], axis=1)


def _c_array(ctype: str, name: str, values, per_line: int = 16) -> str:
    flat = [str(int(v)) for v in np.asarray(values).reshape(-1)]
    if ctype == "int32_t":  # INT32_MIN has no literal of type int32_t
        flat = [f"({INT32_MIN + 1} - 1)" if v == str(INT32_MIN) else v for v in flat]
    rows = [", ".join(flat[i: i + per_line]) for i in range(0, len(flat), per_line)]
    return f"static const {ctype} {name}[{len(flat)}] = {{\n    " + ",\n    ".join(rows) + "\n};\n"


def render_cases(cases: list[IntModel], rng: np.random.Generator) -> str:
    parts = ["/* golden_cases.c - generated by test/golden_vectors.py from the host reference. Do not edit. */\n",
             '#include "golden.h"\n\n']
    table = []
    for i, model in enumerate(cases):
        x = case_inputs(model, rng)
        layer_outputs = reference.run_layers(model, x)  # per layer: (N, H, W, C)
        expected = np.concatenate([np.concatenate([out[n].reshape(-1) for out in layer_outputs])
                                   for n in range(len(x))])
        sizes = [int(np.prod(layer.out_shape)) for layer in model.layers]
        parts.append(f"/* case {i}: {model.name}, model hash {model.hash()[:16]} */\n")
        parts.append(f"extern const cqtf_model_t cqtf_golden_model_{i:02d};\n")
        parts.append(_c_array("int8_t", f"case{i:02d}_inputs", x))
        parts.append(_c_array("uint16_t", f"case{i:02d}_layer_sizes", sizes))
        parts.append(_c_array("int8_t", f"case{i:02d}_expected", expected))
        parts.append("\n")
        table.append(f"    {{\"{model.name}\", &cqtf_golden_model_{i:02d}, {len(x)}u, {model.input_size}u, "
                     f"{len(sizes)}u, case{i:02d}_inputs, case{i:02d}_layer_sizes, case{i:02d}_expected}}")
    parts.append("const cqtf_golden_case_t cqtf_golden_cases[] = {\n" + ",\n".join(table) + "\n};\n")
    parts.append(f"const uint32_t cqtf_golden_num_cases = {len(table)}u;\n\n")
    vectors = requant_vectors(rng)
    parts.append(_c_array("int32_t", "requant_rows", vectors, per_line=4))
    parts.append("const int32_t *const cqtf_golden_requant = requant_rows;\n")
    parts.append(f"const uint32_t cqtf_golden_num_requant = {len(vectors)}u;\n")
    return "".join(parts)


def render_model_source(i: int) -> str:
    return (f"/* model_{i:02d}.c - generated by test/golden_vectors.py. Do not edit. */\n"
            "/* The packed header defines `cqtf_model`; each case gets its own name and translation unit. */\n"
            "#define CQTF_MODEL_IMPLEMENTATION\n"
            f"#define cqtf_model cqtf_golden_model_{i:02d}\n"
            f'#include "model_{i:02d}.h"\n')


def _macro(header: str, name: str) -> int:
    """The value of `#define NAME 123u` in a packed header; 0 when the packer does not write it."""
    match = re.search(rf"^#define {name} (\d+)u?", header, re.M)
    return int(match[1]) if match else 0


def _sizing_case(headers: list[str]) -> int:
    """The case the test firmware is built with: the engine sizes its buffers (tensors, and the arena
    where the packer plans one) from the compiled-in model, so it must be the largest in each."""
    sizes = [(_macro(h, "CQTF_MODEL_TENSOR_MAX"), _macro(h, "CQTF_MODEL_ARENA_SIZE")) for h in headers]
    most = tuple(max(column) for column in zip(*sizes))
    for i, size in enumerate(sizes):
        if size == most:
            return i
    raise ValueError(f"no golden case is the largest in both tensor and arena size {sizes}: "
                     "make the network case bigger")


def generate() -> dict[str, str]:
    """File name -> content of every generated file."""
    cases = build_cases()
    rng = np.random.default_rng(SEED + 1)
    files = {f"model_{i:02d}.h": render(model) for i, model in enumerate(cases)}
    files.update({f"model_{i:02d}.c": render_model_source(i) for i in range(len(cases))})
    headers = [files[f"model_{i:02d}.h"] for i in range(len(cases))]
    # the test firmware runs every case's model, whatever its ops: it links every kernel (engine.c)
    files["cqtf_model.h"] = ("/* The engine links every kernel: the golden cases use ops this model does not. */\n"
                             "#define CQTF_ENGINE_ALL_KERNELS 1\n" + headers[_sizing_case(headers)])
    files["golden_limits.h"] = (
        "/* golden_limits.h - generated by test/golden_vectors.py. Do not edit. */\n"
        "/* Bytes of the largest tensor of any case: the compiled-in model's buffers must hold it. */\n"
        f"#define CQTF_GOLDEN_TENSOR_MAX {max(_macro(h, 'CQTF_MODEL_TENSOR_MAX') for h in headers)}u\n")
    files["golden_cases.c"] = render_cases(cases, rng)
    return files


def write(out_dir: Path = GOLDEN_DIR) -> list[Path]:
    out_dir.mkdir(parents=True, exist_ok=True)
    for stale in out_dir.glob("model_*"):
        stale.unlink()
    paths = []
    for name, text in generate().items():
        (out_dir / name).write_text(text)
        paths.append(out_dir / name)
    return paths


if __name__ == "__main__":
    for path in write(Path(sys.argv[1]) if len(sys.argv) > 1 else GOLDEN_DIR):
        print(path)
