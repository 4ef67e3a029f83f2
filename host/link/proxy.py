"""A TCP proxy that stands in for a serial wire between the host and an emulated board: it can
limit the rate to a baud rate's (full duplex, 10 bits per byte for 8N1) and inject faults at
chosen byte offsets: drop bytes, flip a bit, stall, cut the connection, or call a function (a
device reset through QEMU's monitor, say). For benchmarks and fault tests.

    with LinkProxy(("127.0.0.1", qemu_port), baud=115200) as proxy:
        port = serial.serial_for_url(proxy.url)

Offsets count the bytes of one direction ("up": host to device, "down": device to host) over
the proxy's whole life, across reconnections, so a fault plan is reproducible.
"""
from __future__ import annotations

import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Callable

UP, DOWN = "up", "down"


@dataclass(frozen=True)
class Fault:
    direction: str  # UP or DOWN
    at: int  # byte offset in that direction
    kind: str  # "drop", "flip", "delay", "cut" or "call"
    size: int = 1  # drop: bytes dropped; flip: the bit (0..7)
    seconds: float = 0.0  # delay
    call: Callable[[], None] | None = None  # call


@dataclass
class ProxyStats:
    bytes: dict = field(default_factory=lambda: {UP: 0, DOWN: 0})  # bytes that reached the other side
    applied: dict = field(default_factory=lambda: {"drop": 0, "flip": 0, "delay": 0, "cut": 0, "call": 0})
    connections: int = 0


class _Cut(Exception):
    pass


class LinkProxy:
    def __init__(self, upstream: tuple[str, int], *, baud: int | None = None, faults: list[Fault] = ()):
        self.upstream = upstream
        self.bytes_per_s = baud / 10 if baud else None
        self.faults = {d: sorted((f for f in faults if f.direction == d), key=lambda f: f.at) for d in (UP, DOWN)}
        self.stats = ProxyStats()
        self._seen = {UP: 0, DOWN: 0}  # bytes read per direction, dropped ones included
        self._server = socket.socket()
        self._server.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._server.bind(("127.0.0.1", 0))
        self._server.listen(1)
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        return f"socket://127.0.0.1:{self._server.getsockname()[1]}"

    def start(self) -> "LinkProxy":
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._server.close()
        if self._thread:
            self._thread.join(5)

    def __enter__(self) -> "LinkProxy":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    def _serve(self) -> None:
        self._server.settimeout(0.2)
        while not self._stop.is_set():
            try:
                client, _ = self._server.accept()
            except OSError:
                continue
            try:
                device = self._connect_upstream()
            except OSError:
                client.close()
                continue
            self.stats.connections += 1
            for s in (client, device):
                s.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
                s.settimeout(0.2)  # the pumps poll `done` between reads
            done = threading.Event()
            pumps = [threading.Thread(target=self._pump, args=(a, b, d, done), daemon=True)
                     for a, b, d in ((client, device, UP), (device, client, DOWN))]
            for p in pumps:
                p.start()
            while not done.is_set() and not self._stop.is_set():
                done.wait(0.2)
            for s in (client, device):
                try:
                    s.shutdown(socket.SHUT_RDWR)
                except OSError:
                    pass
                s.close()
            for p in pumps:
                p.join(5)

    def _connect_upstream(self) -> socket.socket:
        for _ in range(50):  # QEMU listens again a moment after the previous client left
            try:
                return socket.create_connection(self.upstream, timeout=2)
            except OSError:
                time.sleep(0.05)
        raise OSError(f"upstream {self.upstream} not listening")

    def _pump(self, src: socket.socket, dst: socket.socket, direction: str, done: threading.Event) -> None:
        next_free = time.monotonic()
        try:
            while not done.is_set():
                try:
                    data = src.recv(4096)
                except socket.timeout:
                    continue
                if not data:
                    break
                for piece, pause in self._apply(direction, data):
                    if pause:
                        time.sleep(pause)
                    next_free = self._send_paced(dst, piece, next_free)
                    self.stats.bytes[direction] += len(piece)
        except (_Cut, OSError):
            pass
        finally:
            done.set()

    def _apply(self, direction: str, data: bytes):
        """Yields (bytes to send, seconds to stall first) after the faults that fall in data."""
        start = self._seen[direction]
        self._seen[direction] += len(data)
        plan = self.faults[direction]
        out, pause = bytearray(), 0.0
        cursor = 0
        while plan and plan[0].at < start + len(data):
            fault = plan.pop(0)
            pos = max(fault.at - start, cursor)
            out += data[cursor:pos]
            cursor = pos
            self.stats.applied[fault.kind] += 1
            if fault.kind == "drop":
                cursor = min(len(data), pos + fault.size)
            elif fault.kind == "flip" and pos < len(data):
                out.append(data[pos] ^ (1 << (fault.size % 8)))
                cursor = pos + 1
            elif fault.kind == "delay":
                yield bytes(out), pause
                out, pause = bytearray(), fault.seconds
            elif fault.kind == "call" and fault.call is not None:
                yield bytes(out), pause
                out, pause = bytearray(), 0.0
                fault.call()
            elif fault.kind == "cut":
                yield bytes(out), pause
                raise _Cut()
        out += data[cursor:]
        yield bytes(out), pause

    def _send_paced(self, dst: socket.socket, data: bytes, next_free: float) -> float:
        """Delivers data as a UART would: each piece once the wire has carried it, one byte after
        another. The wire is free again at `next_free`; bytes that were waiting start right then,
        so a sleep that overshoots delays a piece but does not slow the wire down."""
        if self.bytes_per_s is None:
            _send_all(dst, data)
            return next_free
        step = max(1, int(self.bytes_per_s / 1000))  # about 1 ms of wire time per piece
        next_free = max(next_free, time.monotonic())  # an idle wire banks no credit
        for i in range(0, len(data), step):
            piece = data[i: i + step]
            next_free += len(piece) / self.bytes_per_s
            delay = next_free - time.monotonic()
            if delay > 0:
                time.sleep(delay)
            _send_all(dst, piece)
        return next_free


def _send_all(dst: socket.socket, data: bytes) -> None:
    """sendall that waits out a slow reader (the sockets time out every 0.2 s for polling)."""
    view = memoryview(data)
    while view:
        try:
            view = view[dst.send(view):]
        except socket.timeout:
            continue


def main(argv=None) -> int:
    """`python -m cqtf.link.proxy --upstream 127.0.0.1:PORT --baud 115200`: a rate-limited wire in a
    process of its own (benchmarks: no contention with the host's Python); prints its URL."""
    import argparse

    parser = argparse.ArgumentParser(description=main.__doc__)
    parser.add_argument("--upstream", required=True, help="HOST:PORT of the emulated board's serial socket")
    parser.add_argument("--baud", type=int, default=None)
    args = parser.parse_args(argv)
    host, port = args.upstream.rsplit(":", 1)
    with LinkProxy((host, int(port)), baud=args.baud) as proxy:
        print(proxy.url, flush=True)
        try:
            while True:
                time.sleep(1)
        except KeyboardInterrupt:
            pass
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
