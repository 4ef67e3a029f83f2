"""Link throughput: samples/s of a validation against the bound the wire sets.

The firmware runs in QEMU; a rate-limited TCP proxy (cqtf.link.proxy, full duplex, 10 bits per
byte as 8N1) stands in for a UART at 115200 and 921600 baud, and "raw" is QEMU's socket without
it. Each case runs the whole test set stop-and-wait (window 1) and pipelined (the window the
device's receive buffer allows). The link bound is baud/10 bytes/s divided by the bytes one
sample needs in the busier direction (the request: input tensor + framing):

    python benchmarks/link_throughput.py --model-dir runs/default

writes results/link_throughput.json and .md. A benchmark, not a test: nothing is asserted.
"""
from __future__ import annotations

import argparse
import contextlib
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

from cqtf.emulator import emulate
from cqtf.link.device import INFER, Device
from cqtf.link.frame import Frame, encode
from cqtf.link.transport import open_port
from cqtf.pipeline import DEFAULT_BOARD, ModelDir, build_stage, evaluation_split
from cqtf.validate import check_model

BAUDS = (115200, 921600)


@contextlib.contextmanager
def wire(upstream: str, baud: int):
    """The rate-limited proxy in its own process, so it does not share the host's interpreter."""
    proc = subprocess.Popen([sys.executable, "-m", "cqtf.link.proxy", "--upstream", upstream, "--baud", str(baud)],
                            stdout=subprocess.PIPE, text=True)
    try:
        yield proc.stdout.readline().strip()
    finally:
        proc.terminate()
        proc.wait(10)


def measure(url: str, model, x_test, window: int | None, rounds: int) -> dict:
    port = open_port(url)
    try:
        device = Device(port, timeout=5.0, check=lambda info: check_model(info, model),
                        reopen=lambda: open_port(url))
        device.sync()
        device.info()
        used = window or device.window_for(model.input_size + 1)
        jobs = [(i, x_test[i % len(x_test)].tobytes()) for i in range(rounds * len(x_test))]
        started = time.perf_counter()
        done = sum(1 for _ in device.stream(jobs, window=used))
        seconds = time.perf_counter() - started
    finally:
        port.close()
    return {"window": used, "samples": done, "seconds": round(seconds, 3),
            "samples_per_s": round(done / seconds, 1), "retransmits": device.recovery.retransmits}


def wire_bytes(model) -> tuple[int, int]:
    """Bytes on the wire per sample: request (host to device) and reply (device to host)."""
    request = len(encode(Frame(INFER, 0x55, bytes(1 + model.input_size))))
    reply = len(encode(Frame(INFER | 0x80, 0x55, bytes([0, 1, 1, 1, 1]) + bytes(model.output_size))))
    return request, reply


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, default=Path("runs/default"))
    parser.add_argument("--rounds", type=int, default=1, help="passes over the test set per measurement")
    parser.add_argument("--repeats", type=int, default=3,
                        help="measurements per case; the fastest is kept (other load only slows a run down)")
    parser.add_argument("--out", type=Path, default=Path("results/link_throughput.json"))
    args = parser.parse_args(argv)
    model_dir = ModelDir(args.model_dir)
    model = model_dir.load_model()
    x_test, _ = evaluation_split(model, "digits")
    elf = build_stage(model_dir, DEFAULT_BOARD)
    request, reply = wire_bytes(model)
    cases = []
    with emulate(DEFAULT_BOARD, elf) as emulator:
        upstream = "127.0.0.1:" + emulator.url.rsplit(":", 1)[1]
        for baud in (*BAUDS, None):
            bound = round(baud / 10 / max(request, reply), 1) if baud else None
            for mode, window in (("stop-and-wait", 1), ("pipelined", None)):
                runs = []
                for _ in range(args.repeats):
                    if baud:
                        with wire(upstream, baud) as url:
                            runs.append(measure(url, model, x_test, window, args.rounds))
                    else:
                        runs.append(measure(emulator.url, model, x_test, window, args.rounds))
                figures = max(runs, key=lambda r: r["samples_per_s"])
                figures["all_samples_per_s"] = [r["samples_per_s"] for r in runs]
                ratio = round(figures["samples_per_s"] / bound, 3) if bound else None
                cases.append({"link": f"{baud} baud (proxy)" if baud else "raw QEMU socket", "baud": baud,
                              "mode": mode, **figures, "link_bound_samples_per_s": bound,
                              "fraction_of_bound": ratio})
                print(cases[-1], flush=True)
    result = {"board": DEFAULT_BOARD, "model": model.name, "model_hash": model.hash()[:16],
              "request_wire_bytes": request, "reply_wire_bytes": reply, "bits_per_byte": 10,
              "machine": f"{platform.machine()}, {os.cpu_count()} cores",
              "load_average_1min": round(os.getloadavg()[0], 2), "cases": cases}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    for path, text in ((args.out, json.dumps(result, indent=2) + "\n"), (args.out.with_suffix(".md"), render(result))):
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, path)
    return 0


def render(result: dict) -> str:
    lines = [f"# Link throughput: {result['model']} on {result['board']}", "",
             f"One sample is {result['request_wire_bytes']} bytes to the device and {result['reply_wire_bytes']} back "
             f"(COBS frames, 8N1 = 10 bits a byte); the link bound is baud/10 over the larger. "
             f"Measured by `benchmarks/link_throughput.py` on {result['machine']} (load average "
             f"{result['load_average_1min']}); each figure is the fastest of its repeats.", "",
             "| link | mode | window | samples/s | link bound | of bound |", "|---|---|---|---|---|---|"]
    for c in result["cases"]:
        bound = c["link_bound_samples_per_s"] or "-"
        frac = f"{100 * c['fraction_of_bound']:.1f} %" if c["fraction_of_bound"] else "-"
        lines.append(f"| {c['link']} | {c['mode']} | {c['window']} | {c['samples_per_s']} | {bound} | {frac} |")
    lines += ["", "At 115200 baud the wire is the bottleneck and pipelining fills it; stop-and-wait leaves it idle "
              "while the reply comes back and the device computes. At 921600 baud the bottleneck is QEMU, which "
              "emulates the UART byte by byte (about 20-25 KB/s on an idle machine, less under load): the raw "
              "socket rows are that ceiling. Figures vary with the machine's other load (all repeats are in "
              "the JSON)."]
    return "\n".join(lines) + "\n"


if __name__ == "__main__":
    raise SystemExit(main())
