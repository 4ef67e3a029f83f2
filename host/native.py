"""Host-native builds of the firmware's portable C (kernels, engine, model) for fast bit-exactness tests.

This never replaces the emulated device: it checks the C against the host reference in seconds,
on every sample, before the slower cross-compiled run.
"""
from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
from pathlib import Path

import numpy as np

from cqtf.errors import ToolchainError

REPO = Path(__file__).resolve().parent.parent
FIRMWARE_SRC = REPO / "firmware" / "src"
KERNEL_SOURCES = sorted((FIRMWARE_SRC / "kernels").glob("*.c"))
ENGINE_SOURCES = KERNEL_SOURCES + [FIRMWARE_SRC / "engine.c", FIRMWARE_SRC / "model_data.c"]
CFLAGS = ["-std=c99", "-O2", "-Wall", "-Wextra", "-Werror", "-fPIC", "-shared"]


def build_library(sources: list[Path], include_dirs: list[Path], cache_dir: Path,
                  defines: tuple[str, ...] = ()) -> Path:
    """Compile sources into a shared library, cached by the content of sources and headers and by
    the -D defines (e.g. "CQTF_KERNELS_OPTIMIZED=1": the optimized kernels, SIMD emulated in C)."""
    compiler = shutil.which("gcc") or shutil.which("cc")
    if compiler is None:
        raise ToolchainError("no host C compiler (gcc) found", "install it: apt-get install gcc")
    digest = hashlib.sha256(" ".join(defines).encode())
    for path in sources + sorted(p for d in include_dirs + [FIRMWARE_SRC] for p in d.rglob("*.h")):
        digest.update(path.read_bytes())
    out = cache_dir / f"libcqtf_{digest.hexdigest()[:16]}.so"
    if not out.exists():
        cache_dir.mkdir(parents=True, exist_ok=True)
        includes = [f"-I{d}" for d in [FIRMWARE_SRC, FIRMWARE_SRC / "kernels", *include_dirs]]
        tmp = Path(f"{out}.{os.getpid()}.tmp")  # processes building the same library do not share a file
        cmd = [compiler, *CFLAGS, *(f"-D{d}" for d in defines), *includes, *map(str, sources), "-o", str(tmp)]
        proc = subprocess.run(cmd, capture_output=True, text=True)
        if proc.returncode != 0:
            raise ToolchainError(f"host build of the firmware C failed:\n{proc.stderr[-3000:]}", "fix the C sources")
        tmp.replace(out)
    return out


class NativeEngine:
    """The firmware engine with one packed model, compiled for the host and called through ctypes."""

    def __init__(self, model_dir: Path, cache_dir: Path, optimized: bool = False):
        """optimized: run the optimized kernels' algorithms (their SIMD instructions emulated in C)
        instead of the portable reference kernels."""
        defines = (f"CQTF_KERNELS_OPTIMIZED={int(optimized)}",)
        self.lib = ctypes.CDLL(str(build_library(ENGINE_SOURCES, [Path(model_dir)], Path(cache_dir), defines)))
        self.model = ctypes.c_uint8.in_dll(self.lib, "cqtf_model")
        self.lib.cqtf_engine_run.restype = ctypes.c_int
        self.lib.cqtf_engine_run.argtypes = [ctypes.c_void_p, ctypes.c_void_p, ctypes.c_uint8, ctypes.c_void_p,
                                             ctypes.POINTER(ctypes.c_uint16)]

    def run(self, x_int8: np.ndarray, last_layer: int = 0xFF, max_output: int = 1 << 16) -> np.ndarray:
        x = np.ascontiguousarray(x_int8, dtype=np.int8)
        out = np.zeros(max_output, dtype=np.int8)
        size = ctypes.c_uint16(0)
        status = self.lib.cqtf_engine_run(ctypes.byref(self.model), x.ctypes.data, last_layer, out.ctypes.data,
                                          ctypes.byref(size))
        if status != 0:
            raise RuntimeError(f"cqtf_engine_run returned status {status}")
        return out[: size.value].copy()


def requantize_library(cache_dir: Path, name: str = "cqtf_requantize_fn"):
    """One C requantize function: cqtf_requantize_fn (reference) or cqtf_requantize_opt_fn (the
    optimized kernels'), called as fn(acc, multiplier, shift)."""
    lib = ctypes.CDLL(str(build_library(KERNEL_SOURCES, [], Path(cache_dir))))
    fn = getattr(lib, name)
    fn.restype = ctypes.c_int32
    fn.argtypes = [ctypes.c_int32, ctypes.c_int32, ctypes.c_int32]
    return fn
