"""The host's link client and campaign logic against a device simulated in Python (no QEMU): fast
checks of pipelining, reset recovery, retries and the progress file. The real firmware is
exercised the same way in test_link_faults.py."""
from __future__ import annotations

import hashlib
import struct

import numpy as np
import pytest

from cqtf.campaign import ProgressFile, run_campaign
from cqtf.errors import DataError, DeviceError
from cqtf.link.device import Device
from cqtf.link.frame import Decoder, Frame, encode

INPUT, OUTPUT = 8, 4


def _output(x: bytes) -> bytes:
    return hashlib.sha256(x).digest()[:OUTPUT]


class FakeDevice:
    """A port whose far end answers like the firmware: sessions, INFER, in order. `drop` holds the
    indices of INFER replies it swallows; `reset_at` the INFER count at which it resets."""

    def __init__(self, rx_buffer: int = 64, drop=(), reset_at=()):
        self.rx_buffer = rx_buffer
        self.drop, self.reset_at = set(drop), set(reset_at)
        self.decoder = Decoder()
        self.outbox = bytearray()
        self.session = 0
        self.infers = 0
        self.max_in_flight = 0
        self.in_waiting = 0

    def write(self, data: bytes) -> None:
        for f in self.decoder.feed(data):
            self._answer(f)
        self.max_in_flight = max(self.max_in_flight, self.outbox.count(0))  # replies not yet read

    def _answer(self, f: Frame) -> None:
        if f.type == 0x01:
            if len(f.payload) == 4:
                (self.session,) = struct.unpack("<I", f.payload)
            info = bytes([2, 0, 1, 0, 1]) + bytes.fromhex("00112233445566ff") + struct.pack(
                "<HHBHIH", INPUT, OUTPUT, 1, 256, self.session, self.rx_buffer)
            reply = Frame(0x81, f.seq, info + b"\x04fake\x01m\x04int8")
        elif f.type == 0x02:
            self.infers += 1
            if self.infers in self.reset_at:
                self.session = 0
            if self.session == 0:
                reply = Frame(0x7F, f.seq, b"\x05no session")
            elif self.infers in self.drop:
                return
            else:
                reply = Frame(0x82, f.seq, b"\x00" + struct.pack("<I", 7) + _output(f.payload[1:]))
        else:
            reply = Frame(0x83, f.seq, f.payload)
        self.outbox += encode(reply)

    def read(self, n: int) -> bytes:
        data = bytes(self.outbox[:n])
        del self.outbox[:n]
        return data

    def reset_input_buffer(self) -> None:
        self.outbox.clear()

    def close(self) -> None:
        pass


def _samples(n: int) -> np.ndarray:
    return np.random.default_rng(0).integers(-128, 128, (n, INPUT), dtype=np.int8)


def _expected(x: np.ndarray) -> dict:
    return {i: _output(x[i].tobytes()) for i in range(len(x))}


def test_pipelined_stream_returns_every_sample_once_in_the_window():
    port = FakeDevice(rx_buffer=64)  # a request is 15 bytes on the wire: 4 wait, 1 computes
    device = Device(port, timeout=0.2)
    x = _samples(50)
    got = dict((k, r.output) for k, r in device.stream((i, x[i].tobytes()) for i in range(len(x))))
    assert got == _expected(x)
    assert device.window_for(INPUT + 1) == 5 and port.max_in_flight == 5


def test_reset_and_lost_replies_are_recovered_without_loss_or_duplicates(tmp_path):
    port = FakeDevice(drop={5, 17}, reset_at={30})
    device = Device(port, timeout=0.1, retries=3)
    x = _samples(60)
    store = ProgressFile(tmp_path / "p.jsonl", {"run": 1}, resume=False)
    run_campaign([device], x, store, progress=False)
    assert {i: out for i, (out, _) in store.done.items()} == _expected(x)
    assert store.duplicates == 0
    assert device.recovery.resets == 1 and device.recovery.retransmits > 0


def test_a_device_that_never_answers_a_sample_fails_with_evidence():
    port = FakeDevice(drop=set(range(1, 100)))
    device = Device(port, timeout=0.05, retries=2)
    with pytest.raises(DeviceError, match=r"did not answer INFER \(sample 0\)"):
        list(device.stream([(0, bytes(INPUT))]))


def test_two_devices_share_the_samples(tmp_path):
    devices = [Device(FakeDevice(), timeout=0.2), Device(FakeDevice(drop={3}), timeout=0.1)]
    x = _samples(80)
    store = ProgressFile(None, {}, resume=False)
    stats = run_campaign(devices, x, store, progress=False)
    assert {i: out for i, (out, _) in store.done.items()} == _expected(x)
    assert sum(s.samples for s in stats.shards) == 80 and store.duplicates == 0


def test_progress_file_resumes_and_ignores_a_torn_last_line(tmp_path):
    path = tmp_path / "progress.jsonl"
    store = ProgressFile(path, {"model_hash": "ab"}, resume=False)
    assert not path.exists()  # created with the first result, not before
    store.record(3, b"\x01\x02", 9)
    store.record(3, b"\x01\x02", 9)
    store.close()
    assert store.duplicates == 1
    with open(path, "a") as f:
        f.write('{"i": 4, "out": "0')  # a crash in the middle of a line
    again = ProgressFile(path, {"model_hash": "ab"}, resume=True)
    assert again.done == {3: (b"\x01\x02", 9)}
    with pytest.raises(DataError, match="belongs to another run"):
        ProgressFile(path, {"model_hash": "cd"}, resume=True)
