"""Writes cqtf_model.h beside this file: a tiny fixed model that the firmware build and tests use.

    python firmware/test_model/make_test_model.py

8x8x1 input -> conv2d 3x3/1 pad 1 + ReLU (8x8x4) -> maxpool 3x3/2 pad 1 (4x4x4)
            -> fully connected 64 -> 10.
Parameters are random (fixed seed) but chosen to reach the edge cases of the format: input_offset
128, a fused ReLU clamp, a pool window over padding, a zero multiplier, a positive (left) shift.
Standard library only, so tests can `import` it for the layer table: see `build()`.
The hash is SHA-256 over this script's integer arrays (a fixture, not host/model_ir's canonical form).
"""

from __future__ import annotations

import hashlib
import random
import struct
import sys
from pathlib import Path

SEED = 20240601
CONV, MAXPOOL, FC = 1, 2, 3  # cqtf_op_t
OP_NAMES = {CONV: "CQTF_OP_CONV2D", MAXPOOL: "CQTF_OP_MAXPOOL2D", FC: "CQTF_OP_FULLY_CONNECTED"}
FORMAT_VERSION = 2


def _ints(rng: random.Random, n: int, lo: int, hi: int) -> list[int]:
    return [rng.randint(lo, hi) for _ in range(n)]


def build() -> dict:
    """The model as plain Python: a dict of header fields and a list of layer dicts (NHWC shapes)."""
    rng = random.Random(SEED)
    conv = dict(
        op=CONV, kernel=(3, 3), stride=(1, 1), pad=(1, 1), in_shape=(8, 8, 1), out_shape=(8, 8, 4),
        weights=_ints(rng, 4 * 3 * 3 * 1, -127, 127),  # [oc][ky][kx][ic]
        bias=_ints(rng, 4, -3000, 3000),
        multiplier=_ints(rng, 4, 1 << 30, (1 << 31) - 1),
        shift=[-9, -8, -8, -7],
        input_offset=128, output_offset=-20, act_min=-20, act_max=127,  # ReLU: act_min = zero point
    )
    pool = dict(
        op=MAXPOOL, kernel=(3, 3), stride=(2, 2), pad=(1, 1), in_shape=(8, 8, 4), out_shape=(4, 4, 4),
        weights=None, bias=None, multiplier=None, shift=None,
        input_offset=0, output_offset=0, act_min=-20, act_max=127,
    )
    fc_mult = _ints(rng, 10, 1 << 30, (1 << 31) - 1)
    fc_mult[3] = 0  # allowed by the contract: the output is the clamped zero point
    fc_shift = [-10] * 10
    fc_shift[7] = 1  # a left shift: saturates toward the clamp
    fc = dict(
        op=FC, kernel=(0, 0), stride=(0, 0), pad=(0, 0), in_shape=(4, 4, 4), out_shape=(1, 1, 10),
        weights=_ints(rng, 10 * 64, -127, 127),  # [o][flattened NHWC input]
        bias=_ints(rng, 10, -5000, 5000),
        multiplier=fc_mult, shift=fc_shift,
        input_offset=20, output_offset=5, act_min=-128, act_max=127,
    )
    layers = [conv, pool, fc]
    sizes = [8 * 8 * 1] + [h * w * c for (h, w, c) in (l["out_shape"] for l in layers)]
    return dict(
        name="cqtf_test_model", profile="int8", layers=layers,
        input_size=sizes[0], output_size=sizes[-1], tensor_max=max(sizes),
        hash=_hash(layers),
    )


def _hash(layers: list[dict]) -> bytes:
    h = hashlib.sha256()
    for layer in layers:
        scalars = [layer["op"], *layer["kernel"], *layer["stride"], *layer["pad"], *layer["in_shape"],
                   *layer["out_shape"], layer["input_offset"], layer["output_offset"],
                   layer["act_min"], layer["act_max"]]
        h.update(struct.pack(f"<{len(scalars)}i", *scalars))
        for key in ("weights", "bias", "multiplier", "shift"):
            values = layer[key] or []
            h.update(struct.pack(f"<{len(values)}q", *values))
    return h.digest()[:8]


def _c_array(ctype: str, name: str, values: list[int]) -> str:
    rows = [", ".join(str(v) for v in values[i:i + 12]) for i in range(0, len(values), 12)]
    body = ",\n    ".join(rows)
    return f"static const {ctype} {name}[] = {{\n    {body}\n}};\n"


def _plan(layers: list[dict]):
    """The packer's memory plan (host/pack/plan.py, pure Python) for this layer list."""
    try:
        from cqtf.pack.plan import plan_layers, scratch_bytes
    except ImportError:  # run as a script outside the venv: the checkout's host/ is the package
        import importlib.util
        spec = importlib.util.spec_from_file_location(
            "cqtf_plan", Path(__file__).resolve().parents[2] / "host" / "pack" / "plan.py")
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        plan_layers, scratch_bytes = module.plan_layers, module.scratch_bytes
    kinds = {CONV: "conv2d", MAXPOOL: "maxpool2d", FC: "fully_connected"}
    sizes = [h * w * c for (h, w, c) in (layer["out_shape"] for layer in layers)]
    scratch = [scratch_bytes(kinds[layer["op"]], layer["kernel"], layer["in_shape"]) for layer in layers]
    return plan_layers(sizes, scratch)


def _param_bytes(layers: list[dict]) -> int:
    sizes = {"weights": 1, "bias": 4, "multiplier": 4, "shift": 4}
    return sum(len(layer[key]) * size for layer in layers for key, size in sizes.items() if layer[key])


def _c_layer(i: int, layer: dict, slots) -> str:
    def ptr(key: str) -> str:
        return f"cqtf_l{i}_{key}" if layer[key] is not None else "0"

    (kh, kw), (sh, sw), (pt, pl) = layer["kernel"], layer["stride"], layer["pad"]
    return (
        f"    {{ /* layer {i} */\n"
        f"        .op = {OP_NAMES[layer['op']]}, .kernel_h = {kh}, .kernel_w = {kw}, .stride_h = {sh}, "
        f".stride_w = {sw},\n"
        f"        .pad_top = {pt}, .pad_left = {pl},\n"
        f"        .in = {{{', '.join(map(str, layer['in_shape']))}}}, "
        f".out = {{{', '.join(map(str, layer['out_shape']))}}},\n"
        f"        .weights = {ptr('weights')}, .bias = {ptr('bias')},\n"
        f"        .quant = {{ .input_offset = {layer['input_offset']}, "
        f".output_offset = {layer['output_offset']},\n"
        f"                   .act_min = {layer['act_min']}, .act_max = {layer['act_max']},\n"
        f"                   .multiplier = {ptr('multiplier')}, .shift = {ptr('shift')} }},\n"
        f"        .input_at = {{{', '.join(f'0x{at:08X}u' for at in slots.input_at)}}}, "
        f".output_at = {slots.output_at}u,\n"
        f"        .scratch_at = {slots.scratch_at}u, .scratch_size = {slots.scratch_size}u,\n"
        f"    }},\n"
    )


def render_header(model: dict) -> str:
    layers = model["layers"]
    plan = _plan(layers)
    out = [
        "/* cqtf_model.h - generated by firmware/test_model/make_test_model.py: do not edit. */\n",
        "#ifndef CQTF_MODEL_H\n#define CQTF_MODEL_H\n\n#include \"cqtf_types.h\"\n\n",
        f"#define CQTF_MODEL_FORMAT_VERSION {FORMAT_VERSION}u\n",
        f"#define CQTF_MODEL_NAME \"{model['name']}\"\n",
        f"#define CQTF_MODEL_PROFILE \"{model['profile']}\"\n",
        f"#define CQTF_MODEL_INPUT_SIZE {model['input_size']}u\n",
        f"#define CQTF_MODEL_OUTPUT_SIZE {model['output_size']}u\n",
        f"#define CQTF_MODEL_TENSOR_MAX {model['tensor_max']}u\n",
        f"#define CQTF_MODEL_NUM_LAYERS {len(layers)}u\n",
        f"#define CQTF_MODEL_HASH_HEX \"{model['hash'].hex()}\"\n",
        f"#define CQTF_MODEL_ARENA_SIZE {plan.arena_size}u\n",
        f"#define CQTF_MODEL_PARAM_BYTES {_param_bytes(layers)}u\n",
        "extern const cqtf_model_t cqtf_model;\n\n#endif /* CQTF_MODEL_H */\n\n",
        "#ifdef CQTF_MODEL_IMPLEMENTATION\n",
    ]
    for i, layer in enumerate(layers):
        for key, ctype in (("weights", "int8_t"), ("bias", "int32_t"),
                           ("multiplier", "int32_t"), ("shift", "int32_t")):
            if layer[key] is not None:
                out.append(_c_array(ctype, f"cqtf_l{i}_{key}", layer[key]))
    out.append("\nstatic const cqtf_layer_t cqtf_model_layers[CQTF_MODEL_NUM_LAYERS] = {\n")
    out.extend(_c_layer(i, layer, slots) for i, (layer, slots) in enumerate(zip(layers, plan.layers)))
    out.append("};\n\n")
    hash_bytes = ", ".join(f"0x{b:02x}" for b in model["hash"])
    out.append(
        "const cqtf_model_t cqtf_model = {\n"
        "    .format_version = CQTF_MODEL_FORMAT_VERSION,\n"
        f"    .hash = {{{hash_bytes}}},\n"
        "    .name = CQTF_MODEL_NAME,\n"
        "    .profile = CQTF_MODEL_PROFILE,\n"
        "    .input_size = CQTF_MODEL_INPUT_SIZE,\n"
        "    .output_size = CQTF_MODEL_OUTPUT_SIZE,\n"
        "    .tensor_max = CQTF_MODEL_TENSOR_MAX,\n"
        "    .num_layers = CQTF_MODEL_NUM_LAYERS,\n"
        "    .layers = cqtf_model_layers,\n"
        "    .arena_size = CQTF_MODEL_ARENA_SIZE,\n"
        "};\n#endif /* CQTF_MODEL_IMPLEMENTATION */\n"
    )
    return "".join(out)


def main() -> None:
    path = Path(__file__).with_name("cqtf_model.h")
    path.write_text(render_header(build()))
    print(f"wrote {path}")


if __name__ == "__main__":
    main()
