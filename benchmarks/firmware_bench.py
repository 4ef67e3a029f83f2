"""Firmware benchmark: instructions per inference and per MAC, flash and RAM, against TFLite Micro's arena.

    .venv/bin/python benchmarks/firmware_bench.py [--boards mps2-an386 ...] [--out results]

For each model and emulated board it builds the firmware twice in the same run, side by side: the
default build (the DSP/SIMD kernels where the core has them) and the portable kernels
(-DCQTF_KERNELS_OPTIMIZED=0). Each boots in QEMU with -icount (instructions, not cycles); INFER with
layer = k runs layers 0..k, so a layer's count is count(k) - count(k - 1) (the last one includes the
copy of its output into the reply, a few instructions per byte). MACs count whole kernel windows,
padding included. The TFLM arena is the smallest arena_size with which tflite-micro's interpreter runs
the exported .tflite (bisection), measured on this 64-bit host, so its persistent part (pointers)
is larger than on a Cortex-M; the non-persistent part (tensors + scratch) is pointer-free.
Writes OUT/firmware_bench.json and OUT/firmware_bench.md. Performance is measured, never asserted.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import shutil
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from cqtf import oracle
from cqtf.emulator import BOARDS, emulate
from cqtf.firmware_build import build_firmware, firmware_footprint
from cqtf.fixedpoint import effective_scale, quantize_multiplier
from cqtf.link.device import Device
from cqtf.link.transport import open_port
from cqtf.model_ir import IntLayer, IntModel
from cqtf.pack.header import write_header
from cqtf.pipeline import ModelDir, evaluation_split, pack_stage, train_stage
from cqtf.tflite_export import export_tflite

VARIANTS = {"optimized": (), "portable": ("-DCQTF_KERNELS_OPTIMIZED=0",)}
REPEATS = 3  # readings per count: -icount is deterministic to one timer tick


def layer_macs(layer: IntLayer) -> int:
    h, w, c = layer.out_shape
    if layer.kind == "conv2d":
        return h * w * c * layer.kernel[0] * layer.kernel[1] * layer.in_shape[2]
    if layer.kind == "fully_connected":
        return c * int(np.prod(layer.in_shape))
    if layer.kind == "depthwise_conv2d":
        return h * w * c * layer.kernel[0] * layer.kernel[1]
    return 0  # pooling and add: no multiply-accumulates


def _scaled(rng, kind, in_shape, out_shape, kernel=(1, 1), pad=(0, 0), in_scale=0.05, out_scale=0.1,
            zp_in=0, zp_out=-20, relu=True) -> IntLayer:
    """A random layer whose multipliers follow from float32 scales (so it exports to .tflite)."""
    o = out_shape[2]
    weight_scales = rng.uniform(0.002, 0.01, o).astype(np.float32)
    pairs = [quantize_multiplier(effective_scale(np.float32(in_scale), s, np.float32(out_scale)))
             for s in weight_scales]
    w_shape = (o, *kernel, in_shape[2]) if kind == "conv2d" else (o, int(np.prod(in_shape)))
    return IntLayer(kind, in_shape, out_shape, kernel, (1, 1), pad, input_offset=-zp_in, output_offset=zp_out,
                    act_min=max(zp_out, -128) if relu else -128, act_max=127,
                    weights=rng.integers(-127, 128, w_shape).astype(np.int8),
                    bias=rng.integers(-2000, 2000, o).astype(np.int32),
                    multiplier=np.array([m for m, _ in pairs], np.int32),
                    shift=np.array([s for _, s in pairs], np.int32),
                    scales={"input": float(np.float32(in_scale)), "weights": weight_scales.tolist(),
                            "output": float(np.float32(out_scale))})


def conv_bench_model() -> IntModel:
    """A conv-heavy model (about 0.6 M MACs) where per-layer overheads matter less than in digits_cnn."""
    rng = np.random.default_rng(0)
    conv1 = _scaled(rng, "conv2d", (16, 16, 4), (16, 16, 16), (3, 3), (1, 1), zp_in=0, zp_out=-20)
    pool = IntLayer("maxpool2d", (16, 16, 16), (8, 8, 16), (2, 2), (2, 2), (0, 0), input_offset=20,
                    output_offset=-20)
    conv2 = _scaled(rng, "conv2d", (8, 8, 16), (8, 8, 32), (3, 3), (1, 1), in_scale=0.1, out_scale=0.1,
                    zp_in=-20, zp_out=-10)
    fc = _scaled(rng, "fully_connected", (8, 8, 32), (1, 1, 10), in_scale=0.1, out_scale=0.2, zp_in=-10,
                 zp_out=0, relu=False)
    return IntModel("conv_bench", "int8", (16, 16, 4), 0.05, 0, 0.2, 0, 10, [conv1, pool, conv2, fc])


# Zoo models trained on digits, "name" (int8) or "name:profile"; digits_cnn:fixed8-blk32 measures the
# optimized fixed-point kernels (the CQTF block accumulator) against their portable twins.
ZOO_MODELS = ("digits_cnn", "ds_cnn", "resnet_small", "digits_cnn:fixed8-blk32")


def _zoo_spec(spec: str) -> tuple[str, str]:
    """("digits_cnn", "int8") from "digits_cnn", ("digits_cnn", "fixed8-blk32") from "digits_cnn:fixed8-blk32"."""
    name, _, profile = spec.partition(":")
    return name, profile or "int8"


def prepare_models(work: Path, zoo_models=ZOO_MODELS) -> list[tuple[ModelDir, np.ndarray]]:
    """(model directory with a packed header, a few input samples) per benchmarked model."""
    prepared = []
    for spec in zoo_models:
        name, profile = _zoo_spec(spec)
        model_dir = ModelDir(work / (name if profile == "int8" else f"{name}-{profile}"))
        if not model_dir.model.exists():
            train_stage("digits", name, profile, model_dir, (6, 3))  # numerics, not accuracy, matter here
        pack_stage(model_dir)
        prepared.append((model_dir, evaluation_split(model_dir.load_model(), "digits")[0][:REPEATS]))
    bench = ModelDir(work / "conv_bench")
    bench.root.mkdir(parents=True, exist_ok=True)
    model = conv_bench_model()
    model.save(bench.model)
    write_header(model, bench.root)
    x_bench = np.random.default_rng(1).integers(-128, 128, (REPEATS, *model.input_shape)).astype(np.int8)
    return prepared + [(bench, x_bench)]


def _instructions(dut: Device, x: np.ndarray, board: str, layer: int) -> float:
    ticks = [dut.infer(sample.tobytes(), layer=layer).ticks for sample in x]
    return min(ticks) * BOARDS[board].instructions_per_tick


def _stack_region(elf: Path) -> tuple[int, int]:
    """(lowest address, size) of the stack the linker script reserves at the top of RAM."""
    out = subprocess.run([shutil.which("arm-none-eabi-nm") or "arm-none-eabi-nm", str(elf)], capture_output=True,
                         text=True, check=True).stdout
    symbols = {f[2]: int(f[0], 16) for f in (line.split() for line in out.splitlines()) if len(f) == 3}
    return symbols["__stack_limit__"], symbols["__stack_top__"] - symbols["__stack_limit__"]


def _hmp(qmp_path: str, command: str) -> str:
    """One human-monitor command through QEMU's QMP socket."""
    with socket.socket(socket.AF_UNIX) as sock:
        sock.settimeout(10)
        sock.connect(qmp_path)
        stream = sock.makefile("rwb")
        stream.readline()  # greeting
        for request in ({"execute": "qmp_capabilities"},
                        {"execute": "human-monitor-command", "arguments": {"command-line": command}}):
            stream.write(json.dumps(request).encode() + b"\n")
            stream.flush()
            while True:
                reply = json.loads(stream.readline())
                if "event" not in reply:
                    break
        return reply.get("return", "")


def stack_high_water(qmp_path: str, elf: Path, scratch: Path) -> int | None:
    """Bytes of stack ever used: QEMU starts RAM zeroed and nothing paints the stack, so the lowest
    non-zero word of the stack region marks the deepest point reached (a pushed zero there could
    hide a word or two)."""
    limit, size = _stack_region(elf)
    dump = scratch / "stack.bin"
    _hmp(qmp_path, f'memsave {limit:#x} {size} "{dump}"')
    data = np.frombuffer(dump.read_bytes(), dtype="<u4") if dump.exists() else np.zeros(0, "<u4")
    if len(data) * 4 != size:
        return None
    used = np.flatnonzero(data)
    # memsave reads through the CPU's view (pmemsave's physical view read mps2-an505's secure-alias
    # RAM as zeros); all zeros still means the dump did not see the stack
    return int(size - 4 * used[0]) if len(used) else None


def measure(board: str, elf: Path, model: IntModel, x: np.ndarray) -> dict:
    """Whole-inference and per-layer instruction counts of one firmware on its emulated board, and
    the stack it used."""
    with tempfile.TemporaryDirectory(prefix="cqtf-qmp-") as scratch:
        qmp = str(Path(scratch) / "qmp.sock")
        with emulate(board, elf, extra_args=("-qmp", f"unix:{qmp},server=on,wait=off")) as emulator:
            port = open_port(emulator.url)
            try:
                dut = Device(port, timeout=20.0)
                dut.sync()
                cumulative = [_instructions(dut, x, board, k) for k in range(len(model.layers))]
                total = _instructions(dut, x, board, 255)
                stack = stack_high_water(qmp, elf, Path(scratch))
            finally:
                port.close()
    per_layer = [cumulative[0]] + [b - a for a, b in zip(cumulative, cumulative[1:])]
    return {"instructions": round(total), "layer_instructions": [round(v) for v in per_layer],
            "stack_used_bytes": stack}


def tflm_arena(model: IntModel, x: np.ndarray) -> dict:
    if model.arithmetic_profile.is_fixed:
        return {"note": f"profile {model.profile} has no TFLite Micro equivalent"}
    if oracle.available():
        return {"note": oracle.available()}
    model_bytes = export_tflite(model)
    usage = oracle.arena_usage(model_bytes, x[0])
    return {"arena_size_min": oracle.minimum_arena_size(model_bytes, x[0]), "arena_used": usage.get("total"),
            "nonpersistent": usage.get("head"), "persistent": usage.get("tail"), "version": oracle.version()}


def run(boards: list[str], work: Path, log=print, zoo_models=ZOO_MODELS) -> dict:
    results = {"generated": time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime()), "repeats": REPEATS,
               "models": []}
    for model_dir, x in prepare_models(work, zoo_models):
        model = model_dir.load_model()
        macs = [layer_macs(layer) for layer in model.layers]
        entry = {"model": model.name, "profile": model.profile, "macs": sum(macs), "layer_macs": macs,
                 "layers": [layer.kind for layer in model.layers], "cqtf_arena_bytes": None,
                 "tflm": tflm_arena(model, x), "boards": {}}
        for board in boards:
            row = {}
            for variant, flags in VARIANTS.items():
                log(f"{model.name} ({model.profile}) on {board}, {variant}: build")
                elf = build_firmware(board, model_dir.root, work / "build" / model_dir.root.name / variant,
                                     extra_flags=flags)
                footprint = firmware_footprint(elf, model_dir.root)
                counts = measure(board, elf, model, x)
                peak = footprint["static_ram_bytes"] + counts["stack_used_bytes"] \
                    if counts["stack_used_bytes"] is not None else None
                row[variant] = {**counts, **footprint, "peak_ram_bytes": peak,
                                "instructions_per_mac": round(counts["instructions"] / sum(macs), 3),
                                "layer_instructions_per_mac": [round(i / m, 3) if m else None for i, m in
                                                               zip(counts["layer_instructions"], macs)]}
                entry["cqtf_arena_bytes"] = footprint["arena_bytes"]
            row["portable_over_optimized"] = round(row["portable"]["instructions"] /
                                                   row["optimized"]["instructions"], 3)
            entry["boards"][board] = row
        results["models"].append(entry)
    return results


def render_markdown(results: dict) -> str:
    lines = ["# cqtf firmware benchmark", "",
             f"Generated {results['generated']} by `benchmarks/firmware_bench.py`: QEMU `-icount` instruction "
             "counts (not cycles), both kernel builds side by side in one run.", ""]
    for entry in results["models"]:
        tflm = entry["tflm"]
        lines += [f"## {entry['model']} ({entry.get('profile', 'int8')}): {entry['macs']} MACs "
                  f"({', '.join(entry['layers'])})", "",
                  f"cqtf arena (activations + scratch, planned): {entry['cqtf_arena_bytes']} bytes. "
                  + (f"TFLite Micro interpreter, same .tflite: smallest working arena_size "
                     f"{tflm['arena_size_min']} bytes (non-persistent {tflm['nonpersistent']}, persistent "
                     f"{tflm['persistent']}; measured on a 64-bit host, tflite-micro {tflm['version']})."
                     if "arena_size_min" in tflm else f"TFLM: {tflm['note']}"), "",
                  "| board | instr/inference opt | instr/MAC opt | portable | instr/MAC portable | portable / opt "
                  "| conv / depthwise layers instr/MAC opt (portable) | flash bytes | peak RAM bytes (static + stack used) "
                  "| RAM reserved (static + stack) |",
                  "|---|---|---|---|---|---|---|---|---|---|"]
        for board, row in entry["boards"].items():
            opt, port = row["optimized"], row["portable"]
            convs = [f"{v:.2f} ({p:.2f})" for v, p, kind in zip(opt["layer_instructions_per_mac"],
                                                                 port["layer_instructions_per_mac"], entry["layers"])
                     if kind in ("conv2d", "depthwise_conv2d")]
            lines.append(f"| {board} | {opt['instructions']} | {opt['instructions_per_mac']:.2f} | "
                         f"{port['instructions']} | {port['instructions_per_mac']:.2f} | "
                         f"{row['portable_over_optimized']:.2f} | {', '.join(convs)} | {opt['flash_bytes']} | "
                         f"{opt['peak_ram_bytes']} ({opt['static_ram_bytes']} + {opt['stack_used_bytes']}) | "
                         f"{opt['ram_bytes']} |")
        lines.append("")
    lines += ["Per-layer counts are differences of INFER runs that stop after layer k; a Cortex-M3 has no "
              "DSP extension, so both of its builds run the portable kernels. Static RAM holds the arena, the "
              "link's frame buffers and the rest of .data/.bss; the stack used is the deepest non-zero word "
              "of the reserved stack after the run (QEMU starts RAM zeroed). A TFLM firmware would need its "
              "stack, link buffers and interpreter state on top of its arena.", ""]
    return "\n".join(lines)


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--boards", nargs="+", default=sorted(BOARDS), choices=sorted(BOARDS))
    parser.add_argument("--out", type=Path, default=Path(__file__).resolve().parent.parent / "results")
    parser.add_argument("--work", type=Path, default=None, help="build directory (default: a temporary one)")
    parser.add_argument("--models", nargs="*", default=list(ZOO_MODELS), choices=list(ZOO_MODELS),
                        help="zoo models to benchmark (digits; name or name:profile) besides the synthetic "
                             "conv_bench")
    args = parser.parse_args(argv)
    with contextlib.ExitStack() as stack:
        work = args.work or Path(stack.enter_context(tempfile.TemporaryDirectory(prefix="cqtf-bench-")))
        results = run(args.boards, work, log=lambda m: print(m, file=sys.stderr), zoo_models=args.models)
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "firmware_bench.json").write_text(json.dumps(results, indent=2) + "\n")
    (args.out / "firmware_bench.md").write_text(render_markdown(results))
    print(render_markdown(results))
    return 0


if __name__ == "__main__":
    sys.exit(main())
