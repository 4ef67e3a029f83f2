"""Static memory plan: every intermediate tensor and kernel scratch buffer gets a fixed offset in one arena.

The firmware allocates nothing: the packer decides, ahead of time, where each tensor lives. A tensor
lives from the step that writes it to the last step that reads it; two buffers may share bytes when
their lifetimes do not overlap. Placement is greedy, largest first, each at the lowest offset that
clears every already placed buffer alive at the same time (as TFLite Micro's greedy planner does).

The plan is generic over producers and consumers: a layer reads the tensors named by its `inputs`
(default: the previous layer's output) and writes one tensor, so graphs with skip connections
(residual add) plan the same way. Tensor 0 is the model input; the firmware reads it where the caller
holds it (the request buffer), so it takes no arena space. Tensor i + 1 is layer i's output.

Pure Python, no numpy: firmware/test_model/make_test_model.py uses it too.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

ALIGN = 4  # every buffer starts on a word: the optimized kernels load 32 bits at a time
EXTERNAL = 0xFFFFFFFF  # CQTF_ARENA_EXTERNAL: the model input, outside the arena
NONE = 0xFFFFFFFE  # CQTF_ARENA_NONE: an unused input slot
MAX_LAYER_INPUTS = 2  # CQTF_MAX_LAYER_INPUTS in firmware/src/cqtf_types.h


@dataclass(frozen=True)
class Buffer:
    """One thing that needs memory: alive from step `first` to step `last`, both included."""

    name: str
    size: int
    first: int
    last: int


@dataclass(frozen=True)
class LayerSlots:
    """Where one layer finds its inputs, puts its output and its scratch (arena byte offsets)."""

    input_at: tuple[int, ...]  # MAX_LAYER_INPUTS entries; EXTERNAL = the model input, NONE = unused
    output_at: int
    scratch_at: int
    scratch_size: int


@dataclass(frozen=True)
class MemoryPlan:
    arena_size: int  # bytes
    offsets: dict[str, int]  # buffer name -> arena offset
    buffers: list[Buffer]
    layers: list[LayerSlots] = field(default_factory=list)

    @property
    def peak_live_bytes(self) -> int:
        """The most bytes alive at any one step: no plan can use less arena than this."""
        steps = {b.first for b in self.buffers} | {b.last for b in self.buffers}
        return max((sum(b.size for b in self.buffers if b.first <= s <= b.last) for s in steps), default=0)


def _round_up(n: int, to: int) -> int:
    return (n + to - 1) // to * to


def _overlap(a: Buffer, b: Buffer) -> bool:
    return a.first <= b.last and b.first <= a.last


def place(buffers: Sequence[Buffer], align: int = ALIGN) -> tuple[dict[str, int], int]:
    """Greedy placement: returns ({name: offset}, arena size). Zero-size buffers get offset 0."""
    offsets: dict[str, int] = {}
    placed: list[tuple[int, int, Buffer]] = []  # (offset, end, buffer)
    for buf in sorted(buffers, key=lambda b: (-b.size, b.first, b.name)):
        if buf.size == 0:
            offsets[buf.name] = 0
            continue
        busy = sorted((start, end) for start, end, other in placed if _overlap(buf, other))
        offset = 0
        for start, end in busy:
            if offset + buf.size <= start:
                break
            offset = max(offset, _round_up(end, align))
        offsets[buf.name] = offset
        placed.append((offset, offset + buf.size, buf))
    return offsets, max((end for _, end, _ in placed), default=0)


def conv2d_scratch_bytes(kernel_h: int, kernel_w: int, in_c: int) -> int:
    """Scratch of the optimized conv kernel: two im2col columns of int16, each padded to 4 values.
    Must equal cqtf_conv2d_s8_scratch_size() in firmware/src/kernels/cqtf_kernels.h."""
    return 2 * 2 * _round_up(kernel_h * kernel_w * in_c, 4)


def scratch_bytes(kind: str, kernel: tuple[int, int], in_shape: tuple[int, int, int]) -> int:
    if kind == "conv2d":
        return conv2d_scratch_bytes(kernel[0], kernel[1], in_shape[2])
    return 0


def plan_layers(out_sizes: Sequence[int], scratch_sizes: Sequence[int],
                inputs: Sequence[Sequence[int]] | None = None) -> MemoryPlan:
    """Plan a graph of len(out_sizes) layers, run in order. Layer i writes tensor i + 1 of
    out_sizes[i] bytes and reads the tensors inputs[i] (default: (i,), the previous output; 0 is the
    model input). The last layer's output lives to the end; so does any tensor nobody reads."""
    n = len(out_sizes)
    inputs = [tuple(ins) for ins in inputs] if inputs is not None else [(i,) for i in range(n)]
    if len(inputs) != n or len(scratch_sizes) != n:
        raise ValueError("one entry of inputs and scratch_sizes per layer")
    last_read = {t: (n - 1 if t == n else t - 1) for t in range(1, n + 1)}
    for i, ins in enumerate(inputs):
        if not 1 <= len(ins) <= MAX_LAYER_INPUTS:
            raise ValueError(f"layer {i} reads {len(ins)} tensors (1 to {MAX_LAYER_INPUTS})")
        for t in ins:
            if not 0 <= t <= i:
                raise ValueError(f"layer {i} reads tensor {t}, which is not written before it")
            if t > 0:
                last_read[t] = max(last_read[t], i)
    buffers = [Buffer(f"t{t}", out_sizes[t - 1], t - 1, last_read[t]) for t in range(1, n + 1)]
    buffers += [Buffer(f"s{i}", size, i, i) for i, size in enumerate(scratch_sizes)]
    offsets, arena = place(buffers)
    layers = []
    for i, ins in enumerate(inputs):
        at = [EXTERNAL if t == 0 else offsets[f"t{t}"] for t in ins]
        at += [NONE] * (MAX_LAYER_INPUTS - len(at))
        layers.append(LayerSlots(tuple(at), offsets[f"t{i + 1}"], offsets[f"s{i}"], scratch_sizes[i]))
    return MemoryPlan(_round_up(arena, ALIGN), offsets, buffers, layers)


def plan_model(model) -> MemoryPlan:
    """The plan of an IntModel (cqtf.model_ir); a layer may name its inputs with an `inputs` tuple."""
    out_sizes, scratch, inputs = [], [], []
    for i, layer in enumerate(model.layers):
        h, w, c = layer.out_shape
        out_sizes.append(h * w * c)
        scratch.append(scratch_bytes(layer.kind, tuple(layer.kernel), tuple(layer.in_shape)))
        inputs.append(tuple(getattr(layer, "inputs", None) or (i,)))
    return plan_layers(out_sizes, scratch, inputs)
