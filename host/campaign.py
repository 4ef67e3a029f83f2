"""A validation campaign: the test set sharded over one or more devices, every result saved as it
arrives, so that Ctrl-C, a crash or a dead board loses nothing and `--resume` carries on.

The progress file (progress.jsonl next to the report) starts with a header naming the model and
the data, then holds one line per finished sample. Each line is flushed as it is written; a line
cut short by a crash is the last one and is ignored on resume.
"""
from __future__ import annotations

import hashlib
import json
import os
import queue
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from cqtf.errors import CqtfError, DataError
from cqtf.link.device import Device

PROGRESS_NAME = "progress.jsonl"
_KIND = "cqtf-progress"


def data_digest(x: np.ndarray, y: np.ndarray) -> str:
    """Identifies a test set: a progress file is only resumed on the very same samples."""
    h = hashlib.sha256(np.ascontiguousarray(x).tobytes())
    h.update(np.ascontiguousarray(y).astype(np.int64).tobytes())
    return h.hexdigest()[:16]


class ProgressFile:
    """Results of finished samples: loaded when resuming, appended as they come (thread-safe)."""

    def __init__(self, path: Path | None, header: dict, resume: bool):
        """path None: results are kept in memory only."""
        self.path = Path(path) if path is not None else None
        self.header = {"kind": _KIND, **header}
        self.done: dict[int, tuple[bytes, int]] = {}
        self.duplicates = 0  # results that arrived for a sample already done: must stay 0
        self._lock = threading.Lock()
        self._file = None
        self._created = False  # the header is on disk: from then on the file is only appended to
        if resume and self.path is not None and self.path.exists():
            self._load()
            self._file = open(self.path, "a", encoding="ascii")
            self._created = True

    def _load(self) -> None:
        lines = self.path.read_text(encoding="ascii", errors="replace").split("\n")
        complete = lines[:-1]  # the text after the last newline is an unfinished line: ignored
        try:
            header = json.loads(complete[0]) if complete else None
            if header != self.header:
                raise DataError(f"{self.path} belongs to another run ({header}), not to {self.header}",
                                "run without --resume to start afresh, or point --out elsewhere")
            for line in complete[1:]:
                row = json.loads(line)
                self.done[int(row["i"])] = (bytes.fromhex(row["out"]), int(row["ticks"]))
        except (json.JSONDecodeError, KeyError, ValueError, TypeError) as e:
            raise DataError(f"progress file {self.path} is corrupt ({e})", "delete it and run without --resume") \
                from None

    def _open_fresh(self) -> None:
        """Header first, written atomically: a progress file always starts with a whole header."""
        self.path.parent.mkdir(parents=True, exist_ok=True)
        tmp = self.path.with_name(self.path.name + ".tmp")
        tmp.write_text(json.dumps(self.header) + "\n", encoding="ascii")
        os.replace(tmp, self.path)
        self._file = open(self.path, "a", encoding="ascii")
        self._created = True

    def record(self, index: int, output: bytes, ticks: int) -> bool:
        """Saves one result; False (and counted) when the sample was already done."""
        with self._lock:
            if index in self.done:
                self.duplicates += 1
                return False
            if self.path is not None:
                if self._file is None and not self._created:
                    self._open_fresh()
                elif self._file is None:  # closed, then a late result: append, never start over
                    self._file = open(self.path, "a", encoding="ascii")
                self._file.write(json.dumps({"i": index, "out": output.hex(), "ticks": ticks}) + "\n")
                self._file.flush()
            self.done[index] = (output, ticks)
            return True

    def close(self) -> None:
        with self._lock:
            if self._file is not None:
                self._file.flush()
                os.fsync(self._file.fileno())
                self._file.close()
                self._file = None

    def remove(self) -> None:
        """Once the report is written, the progress it was made from has served."""
        self.close()
        if self.path is not None:
            self.path.unlink(missing_ok=True)


@dataclass
class Shard:
    """One device's part of a campaign, for the report."""

    name: str
    samples: int = 0
    error: str = ""


@dataclass
class CampaignStats:
    devices: int
    resumed_samples: int
    shards: list[Shard] = field(default_factory=list)


def run_campaign(devices: list[Device], x_test: np.ndarray, store: ProgressFile, *, names: list[str] | None = None,
                 window: int | None = None, progress: bool = True) -> CampaignStats:
    """Infers every sample not yet in `store` on whichever device is free: a shared queue feeds
    one worker thread per device. A worker whose device fails hands its unfinished samples back
    to the queue for the others; the campaign fails only if samples remain when all have stopped."""
    todo: queue.Queue[int] = queue.Queue()
    resumed = len(store.done)
    for i in range(len(x_test)):
        if i not in store.done:
            todo.put(i)
    stats = CampaignStats(len(devices), resumed, [Shard(n) for n in (names or [f"device {k}" for k in range(len(devices))])])
    stop = threading.Event()
    bar = tqdm(total=len(x_test), initial=resumed, desc="validating on device", unit="sample",
               disable=not progress, leave=False)
    errors: list[BaseException] = []

    def jobs(issued: set[int]):
        while not stop.is_set():
            try:
                i = todo.get_nowait()
            except queue.Empty:
                return
            issued.add(i)
            yield i, x_test[i].tobytes()

    def work(device: Device, shard: Shard) -> None:
        issued: set[int] = set()
        try:
            for i, result in device.stream(jobs(issued), window=window):
                issued.discard(i)
                if store.record(i, result.output, result.ticks):
                    shard.samples += 1
                    bar.update(1)
        except BaseException as e:  # noqa: BLE001 - reported by the main thread
            shard.error = str(e)
            errors.append(e)
        finally:
            for i in issued:  # requested but never answered: another device takes them
                todo.put(i)

    # Waiting on an Event per worker, not on Thread.join: a Ctrl-C that lands inside join() can
    # leave CPython 3.11 believing the thread has ended while it still records results.
    def launch(pairs) -> list[threading.Event]:
        events = []
        for device, shard in pairs:
            finished = threading.Event()
            events.append(finished)
            threading.Thread(target=lambda d=device, s=shard, f=finished: (work(d, s), f.set()),
                             daemon=True).start()
        return events

    def wait(events, limit: float | None = None) -> None:
        deadline = None if limit is None else time.monotonic() + limit
        for finished in events:
            while not finished.wait(0.2):
                if deadline is not None and time.monotonic() > deadline:
                    return

    running = launch(zip(devices, stats.shards))
    try:
        wait(running)
        # a device that failed late may have handed back samples the others never saw
        while not todo.empty() and len(errors) < len(devices):
            running = launch([(d, s) for d, s in zip(devices, stats.shards) if not s.error])
            wait(running)
    except KeyboardInterrupt:
        stop.set()  # workers finish what is in flight, and it is saved
        wait(running, limit=10)
        raise
    finally:
        bar.close()
        store.close()
    missing = len(x_test) - len(store.done)
    if missing:
        first = next((e for e in errors if isinstance(e, CqtfError)), errors[0] if errors else None)
        if isinstance(first, CqtfError):
            if store.path is not None:
                first.message += f" ({missing} samples not done; progress saved in {store.path}, --resume continues)"
            raise first
        if first is not None:
            raise first
        raise AssertionError(f"{missing} samples neither done nor failed")
    return stats
