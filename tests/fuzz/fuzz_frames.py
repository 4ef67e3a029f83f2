"""Fuzz the firmware's receive path: frames made here, mostly damaged, fed through the firmware's
own C (COBS decoder, frame parser, server, engine) built for the host with AddressSanitizer and
UndefinedBehaviorSanitizer (fuzz_server.c). A crash, a sanitizer report, a broken response or a
hang (no exit within the time limit) fails the run.

    python tests/fuzz/fuzz_frames.py --model-dir runs/default --frames 1000000 --out results/fuzz_frames.json

The test suite runs a short version (tests/test_fuzz_server.py).
"""
from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import struct
import subprocess
import sys
import time
from pathlib import Path

from cqtf.errors import ToolchainError
from cqtf.link.frame import Frame, encode
from cqtf.model_ir import IntModel
from cqtf.native import ENGINE_SOURCES, FIRMWARE_SRC

HERE = Path(__file__).resolve().parent
SOURCES = ENGINE_SOURCES + [FIRMWARE_SRC / "server.c", *sorted((FIRMWARE_SRC / "link").glob("*.c")),
                            HERE / "fuzz_server.c"]
SANITIZE = ["-fsanitize=address,undefined", "-fno-sanitize-recover=all", "-fno-omit-frame-pointer"]
TYPES = (0x01, 0x02, 0x03)


def build(model_dir: Path, out_dir: Path) -> Path:
    compiler = shutil.which("gcc")
    if compiler is None:
        raise ToolchainError("gcc not found", "apt-get install gcc")
    exe = Path(out_dir) / "fuzz_server"
    includes = [f"-I{d}" for d in (FIRMWARE_SRC, FIRMWARE_SRC / "kernels", Path(model_dir))]
    cmd = [compiler, "-std=c99", "-O1", "-g", "-Wall", "-Wextra", "-Werror", *SANITIZE, *includes,
           *map(str, SOURCES), "-o", str(exe)]
    proc = subprocess.run(cmd, capture_output=True, text=True)
    if proc.returncode != 0:
        raise ToolchainError(f"fuzz harness build failed:\n{proc.stderr[-3000:]}", "fix the C sources")
    return exe


class FrameMaker:
    """Requests of every kind, right and wrong, then damaged the ways a wire damages them."""

    def __init__(self, input_size: int, num_layers: int, seed: int):
        self.rng = random.Random(seed)
        self.input_size = input_size
        self.num_layers = num_layers

    def _payload(self, kind: int) -> bytes:
        r = self.rng
        if kind == 0x01:
            return r.choice((b"", os.urandom(4), os.urandom(r.randrange(1, 8))))
        if kind == 0x02:
            layer = r.choice((0xFF, r.randrange(self.num_layers + 3), r.randrange(256)))
            size = self.input_size if r.random() < 0.8 else r.randrange(0, self.input_size + 300)
            return bytes((layer,)) + os.urandom(size)
        return os.urandom(r.choice((r.randrange(0, 300), r.randrange(0, 3000))))

    def frame(self) -> bytes:
        r = self.rng
        kind = r.choice(TYPES) if r.random() < 0.9 else r.randrange(256)
        wire = bytearray(encode(Frame(kind, r.randrange(256), self._payload(kind))))
        roll = r.random()
        if roll < 0.3:
            return bytes(wire)  # intact: exercises every handler and error reply
        if roll < 0.95:
            body = wire[:-1]  # keep the delimiter for last, damage the body
            for _ in range(r.randrange(1, 4)):
                if not body:
                    break
                at = r.randrange(len(body))
                action = r.randrange(5)
                if action == 0:
                    body[at] ^= 1 << r.randrange(8)
                elif action == 1:
                    del body[at]
                elif action == 2:
                    body.insert(at, r.randrange(256))
                elif action == 3:
                    del body[at:]
                else:
                    body[at] = 0  # a delimiter in the middle: two frames of garbage
            return bytes(body) + b"\x00"
        return os.urandom(r.randrange(0, 600)).replace(b"\x00", b"") + b"\x00"  # noise


def run(exe: Path, model: IntModel, frames: int, seed: int = 0, time_limit: float = 600.0) -> dict:
    """Feeds `frames` frames; returns the harness's counts plus what was sent and how long it took."""
    maker = FrameMaker(model.input_size, len(model.layers), seed)
    env = {**os.environ, "ASAN_OPTIONS": "abort_on_error=1:detect_leaks=0", "UBSAN_OPTIONS": "print_stacktrace=1"}
    started = time.monotonic()
    proc = subprocess.Popen([str(exe)], stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            env=env)
    try:
        sent = 0
        while sent < frames:
            batch = min(4096, frames - sent)
            proc.stdin.write(b"".join(maker.frame() for _ in range(batch)))
            sent += batch
            if time.monotonic() - started > time_limit:
                raise TimeoutError
        proc.stdin.close()
        proc.wait(timeout=max(1.0, time_limit - (time.monotonic() - started)))
        out, err = proc.stdout.read(), proc.stderr.read()
    except (TimeoutError, subprocess.TimeoutExpired):
        proc.kill()
        proc.communicate()
        raise AssertionError(f"fuzz harness hung: no exit within {time_limit:g} s") from None
    except BrokenPipeError:  # the harness stopped reading: it failed, its stderr says why
        proc.wait(timeout=30)
        out, err = proc.stdout.read(), proc.stderr.read()
    if proc.returncode != 0:
        raise AssertionError(f"fuzz harness failed (exit {proc.returncode}): {err.decode(errors='replace')[-3000:]}")
    stats = json.loads(out)
    stats.update(frames_sent=frames, seed=seed, seconds=round(time.monotonic() - started, 1))
    return stats


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--model-dir", type=Path, required=True, help="a model directory with cqtf_model.h")
    parser.add_argument("--frames", type=int, default=1_000_000)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=None, help="write the figures here as JSON")
    args = parser.parse_args(argv)
    build_dir = args.model_dir / "fuzz"
    build_dir.mkdir(exist_ok=True)
    exe = build(args.model_dir, build_dir)
    stats = run(exe, IntModel.load(args.model_dir / "model.npz"), args.frames, args.seed, time_limit=3600)
    stats.update(harness="tests/fuzz/fuzz_server.c", sanitizers="address,undefined", crashes=0, hangs=0,
                 model_hash=IntModel.load(args.model_dir / "model.npz").hash()[:16])
    text = json.dumps(stats, indent=2) + "\n"
    print(text, end="")
    if args.out:
        args.out.parent.mkdir(parents=True, exist_ok=True)
        tmp = args.out.with_name(args.out.name + ".tmp")
        tmp.write_text(text)
        os.replace(tmp, args.out)
    return 0


if __name__ == "__main__":
    sys.exit(main())
