"""The device, spoken to in domain verbs (info, infer, echo) over a framed serial link.

Protocol 2 (docs/protocol.md) adds sessions: INFO with a 4-byte token opens one, a reset clears
it, and the device then refuses INFER with NO_SESSION. The client takes that (or a silence, or a
dropped connection) as its cue to re-synchronize, re-open the session, re-check the model with
the caller's `check` and send again what was in flight; `stream` keeps several requests in
flight, as many as the device's receive buffer holds.
"""
from __future__ import annotations

import collections
import contextlib
import secrets
import struct
import time
from dataclasses import dataclass
from typing import Callable, Hashable, Iterable, Iterator

import serial

from cqtf.errors import DeviceError
from cqtf.link.frame import Decoder, Frame, LinkStats, encode

PROTOCOL_VERSION = 2
INFO, INFER, ECHO, ERROR = 0x01, 0x02, 0x03, 0x7F
FINAL_LAYER = 0xFF
NO_SESSION = 5
_NAMES = {INFO: "INFO", INFER: "INFER", ECHO: "ECHO"}
_ERROR_CODES = {1: "unknown request type", 2: "bad payload length", 3: "bad layer index", 4: "model error",
                NO_SESSION: "no session (the device was reset)"}
_FIXED_INFO = 26  # bytes before the three strings


@dataclass(frozen=True)
class DeviceInfo:
    protocol_version: int
    firmware_version: str
    format_version: int
    model_hash: str  # 16 hex digits: the first 8 bytes of the model's SHA-256
    input_size: int
    output_size: int
    num_layers: int
    max_payload: int
    session: int  # the token of the open session, 0 when none (just reset)
    rx_buffer: int  # bytes the device buffers while it computes: bounds the pipelining
    board: str
    model_name: str
    profile: str

    @staticmethod
    def parse(payload: bytes) -> "DeviceInfo":
        if payload[:1] and payload[0] != PROTOCOL_VERSION:
            raise DeviceError(f"device speaks protocol {payload[0]}, host {PROTOCOL_VERSION}",
                              "rebuild and flash the firmware with this cqtf (`cqtf build`)")
        try:
            proto, major, minor, patch, fmt = payload[:5]
            model_hash = payload[5:13].hex()
            input_size, output_size, num_layers, max_payload, session, rx_buffer = struct.unpack_from(
                "<HHBHIH", payload, 13)
            strings, offset = [], _FIXED_INFO
            for _ in range(3):
                length = payload[offset]
                strings.append(payload[offset + 1: offset + 1 + length].decode("ascii"))
                offset += 1 + length
        except (ValueError, IndexError, struct.error, UnicodeDecodeError) as e:
            raise DeviceError(f"malformed INFO reply ({e}): {payload.hex()}",
                              "the firmware speaks another protocol version; rebuild it with `cqtf build`") from None
        return DeviceInfo(proto, f"{major}.{minor}.{patch}", fmt, model_hash, input_size, output_size,
                          num_layers, max_payload, session, rx_buffer, *strings)


@dataclass(frozen=True)
class Inference:
    output: bytes
    ticks: int


@dataclass
class Recovery:
    """What the client did to keep a run going; all 0 on a clean link."""

    retransmits: int = 0  # requests sent again after a silence
    resets: int = 0  # device resets seen (NO_SESSION)
    reconnects: int = 0  # port re-opened after the connection dropped


class _LinkLost(Exception):
    """The port failed (the connection was cut); the caller re-opens it and sends again."""


@dataclass
class _Pending:
    seq: int
    key: Hashable
    frame: bytes
    tries: int = 1


class Device:
    """Request/response client. Owns the decoder; the caller opens the port (and may pass `reopen`,
    which returns a fresh port, so that a dropped connection is survived).

    check(info) runs after every handshake (the first and each one after a reset); it raises to
    refuse the device, e.g. when its model hash is not the host model's.
    """

    def __init__(self, port, timeout: float = 5.0, retries: int = 2, *,
                 check: Callable[[DeviceInfo], None] | None = None,
                 reopen: Callable[[], object] | None = None, reconnect_tries: int = 5):
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.check = check
        self.reopen = reopen
        self.reconnect_tries = reconnect_tries
        self.decoder = Decoder()
        self.seq = 0
        self.received = bytearray()  # the last bytes seen, kept as evidence for errors
        self.bytes_received = 0
        self.recovery = Recovery()
        self.last_info: DeviceInfo | None = None
        self._fault: Exception | None = None

    @property
    def link_stats(self) -> LinkStats:
        return self.decoder.stats

    # -- bytes ------------------------------------------------------------------------------

    def _write(self, data: bytes) -> None:
        try:
            self.port.write(data)
        except (serial.SerialException, OSError) as e:
            raise _LinkLost(str(e)) from None

    def _read_frames(self) -> list[Frame]:
        try:
            data = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
        except (serial.SerialException, OSError) as e:
            raise _LinkLost(str(e)) from None
        if not data:
            return []
        self.bytes_received += len(data)
        self.received = (self.received + data)[-256:]
        return self.decoder.feed(data)

    def _next_seq(self) -> int:
        self.seq = (self.seq + 1) & 0xFF
        return self.seq

    def _silence(self, name: str, tries: int) -> DeviceError:
        tail = bytes(self.received[-32:]).hex(" ") or "nothing"
        hint = "is the firmware running and the port/baud rate right? reset the board and retry"
        if self.bytes_received and not self.last_info:
            hint = (f"{self.bytes_received} bytes came back but no valid frame: wrong baud rate (--baud) "
                    "or another firmware on the port?")
        return DeviceError(f"device did not answer {name} within {self.timeout:g} s "
                           f"({tries} tries; last bytes received: {tail})", hint)

    def _reconnect(self, why: str) -> None:
        if self.reopen is None:
            raise DeviceError(f"the connection to the device was lost: {why}",
                              "check the cable or the emulator, then run again with --resume")
        for attempt in range(self.reconnect_tries):
            time.sleep(min(0.1 * 2 ** attempt, 2.0))
            try:
                self.port.close()
            except Exception:  # noqa: BLE001 - the old port is gone either way
                pass
            try:
                self.port = self.reopen()
            except DeviceError:
                continue
            self.recovery.reconnects += 1
            self.decoder.buffer.clear()
            return
        raise DeviceError(f"the connection to the device was lost ({why}) and could not be re-opened "
                          f"in {self.reconnect_tries} tries", "check the board or emulator, then use --resume")

    # -- one request at a time --------------------------------------------------------------

    def request(self, kind: int, payload: bytes = b"") -> bytes:
        seq = self._next_seq()
        frame = encode(Frame(kind, seq, payload))
        for attempt in range(self.retries + 1):
            try:
                self._write(frame)
                reply = self._await(seq)
            except _LinkLost as e:
                self._reconnect(str(e))
                continue
            if reply is not None:
                return self._check(kind, reply)
            if attempt < self.retries:
                self.recovery.retransmits += 1
        raise self._silence(_NAMES.get(kind, hex(kind)), self.retries + 1)

    def _await(self, seq: int) -> Frame | None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            for frame in self._read_frames():
                if frame.seq == seq:
                    return frame
        return None

    def _check(self, kind: int, reply: Frame) -> bytes:
        if reply.type == ERROR:
            code = reply.payload[0] if reply.payload else 0
            detail = reply.payload[1:].decode("ascii", "replace")
            if code == NO_SESSION:
                raise _Reset()
            raise DeviceError(f"device refused {_NAMES.get(kind)}: {_ERROR_CODES.get(code, code)} {detail}".strip(),
                              "the firmware and host disagree on the model; rebuild with `cqtf build`")
        if reply.type != kind | 0x80:
            raise DeviceError(f"device answered {_NAMES.get(kind)} with frame type {reply.type:#x}",
                              "another program may be talking to this port")
        return reply.payload

    def sync(self) -> None:
        """Flush a half-received frame on the device side, and stale bytes on ours."""
        try:
            self.port.write(b"\x00")
            time.sleep(0.02)
            self.port.reset_input_buffer()
        except (serial.SerialException, OSError) as e:
            self._reconnect(str(e))
        self.decoder.buffer.clear()

    def info(self) -> DeviceInfo:
        """The handshake: opens a new session and checks the device (protocol, then `check`)."""
        token = secrets.randbits(32) or 1
        info = DeviceInfo.parse(self.request(INFO, struct.pack("<I", token)))
        if info.session != token:
            raise DeviceError(f"device did not take session {token:#010x} (reports {info.session:#010x})",
                              "rebuild and flash the firmware with this cqtf (`cqtf build`)")
        if self.check is not None:
            self.check(info)
        self.last_info = info
        return info

    def _resync(self) -> None:
        """After a silence, a reset or a reconnect: a clean decoder on both sides, then a look at
        the session (a reset cleared it: counted) and a new one, which re-checks the model."""
        self.sync()
        if self.last_info is not None:
            current = DeviceInfo.parse(self.request(INFO))
            if current.session != self.last_info.session:
                self.recovery.resets += 1
        self.info()

    def infer(self, input_bytes: bytes, layer: int = FINAL_LAYER) -> Inference:
        payload = bytes((layer,)) + input_bytes
        for _ in range(self.retries + 1):
            try:
                return _parse_inference(self.request(INFER, payload))
            except _Reset:
                self._resync()
        raise DeviceError(f"device kept resetting: INFER refused {self.retries + 1} times with no session",
                          "the board resets itself: check its power and watchdog")

    def echo(self, data: bytes) -> bytes:
        return self.request(ECHO, data)

    # -- pipelined ------------------------------------------------------------------------------

    def window_for(self, request_bytes: int) -> int:
        """Requests that may be in flight: the one computing and those the receive buffer holds."""
        info = self.last_info or self.info()
        wire = len(encode(Frame(INFER, 0, bytes(request_bytes))))
        return 1 + info.rx_buffer // wire

    def stream(self, jobs: Iterable[tuple[Hashable, bytes]], window: int | None = None,
               layer: int = FINAL_LAYER) -> Iterator[tuple[Hashable, Inference]]:
        """Infers every (key, input) of jobs, up to `window` requests in flight; yields (key, result)
        as replies arrive. A silence of `timeout` seconds, a reset or a lost connection makes it
        re-synchronize and send everything in flight again, up to `retries` times per request."""
        jobs = iter(jobs)
        pending: collections.OrderedDict[int, _Pending] = collections.OrderedDict()
        exhausted = False
        if self.last_info is None:
            self.info()
        while True:
            try:
                if window is None:
                    window = self.window_for(self.last_info.input_size + 1)
                while not exhausted and len(pending) < window:
                    job = next(jobs, None)
                    if job is None:
                        exhausted = True
                        break
                    key, data = job
                    seq = self._next_seq()
                    while seq in pending:  # cannot happen with a window below 256
                        seq = self._next_seq()
                    item = _Pending(seq, key, encode(Frame(INFER, seq, bytes((layer,)) + data)))
                    pending[seq] = item
                    self._write(item.frame)
                if not pending:
                    return
                for key, result in self._collect(pending):
                    yield key, result
                fault, self._fault = self._fault, None
                if fault is not None:
                    raise fault
            except _LinkLost as e:
                self._reconnect(str(e))
                self._resend(pending, resync=True)
            except _Reset:
                self._resend(pending, resync=True)

    def _collect(self, pending: "collections.OrderedDict[int, _Pending]"):
        """Waits up to `timeout` for replies; on silence re-sends what is pending. A reset or a lost
        link seen after some replies were taken is kept in self._fault until those are yielded."""
        deadline = time.monotonic() + self.timeout
        done = []
        try:
            while not done:
                if time.monotonic() > deadline:
                    self._resend(pending, resync=True, silence=True)
                    return []
                for frame in self._read_frames():
                    item = pending.get(frame.seq)
                    if item is None:
                        continue  # a late reply to a request already re-sent under a new seq
                    del pending[frame.seq]
                    try:
                        payload = self._check(INFER, frame)
                    except _Reset:
                        pending[item.seq] = item
                        raise
                    done.append((item.key, _parse_inference(payload)))
        except (_Reset, _LinkLost) as fault:
            if not done:
                raise
            self._fault = fault
        return done

    def _resend(self, pending, *, resync: bool, silence: bool = False) -> None:
        """Sends every pending request again under a new seq, so that late replies to the old
        ones (an ERROR from before a reset, say) are told apart and ignored."""
        for item in pending.values():
            if item.tries > self.retries:
                if silence:
                    raise self._silence(f"INFER (sample {item.key})", item.tries)
                raise DeviceError(f"INFER of sample {item.key} failed {item.tries} times "
                                  f"(last bytes received: {bytes(self.received[-32:]).hex(' ') or 'nothing'})",
                                  "the link is too unreliable: check the cable, lower --window, or raise --retries")
        items = list(pending.values())
        pending.clear()
        for item in items:
            item.seq = self._next_seq()
            item.frame = encode(Frame(INFER, item.seq, _payload_of(item.frame)))
            item.tries += 1
            pending[item.seq] = item
        while True:
            try:
                if resync:
                    self._resync()
                for item in items:
                    self.recovery.retransmits += 1
                    self._write(item.frame)
                return
            except _LinkLost as e:
                self._reconnect(str(e))


def _payload_of(wire: bytes) -> bytes:
    """The payload of a frame this client encoded (no need to keep it twice)."""
    return Decoder().feed(wire)[0].payload


class _Reset(Exception):
    """The device answered NO_SESSION: it was reset since the last handshake."""


def _parse_inference(payload: bytes) -> Inference:
    if len(payload) < 5:
        raise DeviceError(f"short INFER reply: {payload.hex()}", "rebuild the firmware with `cqtf build`")
    status, ticks = struct.unpack_from("<BI", payload)
    if status != 0:
        raise DeviceError(f"device inference failed with status {status}", "rebuild with `cqtf build`")
    return Inference(payload[5:], ticks)


@contextlib.contextmanager
def connect(url: str, timeout: float = 5.0) -> Iterator["Device"]:
    """Open the port at `url`, handshake, and yield the Device; the port is closed on leaving."""
    from cqtf.link.transport import open_port

    port = open_port(url)
    try:
        device = Device(port, timeout=timeout)
        device.sync()
        yield device
    finally:
        port.close()
