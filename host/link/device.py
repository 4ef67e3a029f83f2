"""The device, spoken to in domain verbs (info, infer, echo) over a framed serial link."""
from __future__ import annotations

import struct
import time
from dataclasses import dataclass

from cqtf.errors import DeviceError
from cqtf.link.frame import Decoder, Frame, LinkStats, encode

PROTOCOL_VERSION = 1
INFO, INFER, ECHO, ERROR = 0x01, 0x02, 0x03, 0x7F
FINAL_LAYER = 0xFF
_NAMES = {INFO: "INFO", INFER: "INFER", ECHO: "ECHO"}
_ERROR_CODES = {1: "unknown request type", 2: "bad payload length", 3: "bad layer index", 4: "model error"}


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
    board: str
    model_name: str
    profile: str

    @staticmethod
    def parse(payload: bytes) -> "DeviceInfo":
        try:
            proto, major, minor, patch, fmt = payload[:5]
            model_hash = payload[5:13].hex()
            input_size, output_size, num_layers, max_payload = struct.unpack_from("<HHBH", payload, 13)
            strings, offset = [], 20
            for _ in range(3):
                length = payload[offset]
                strings.append(payload[offset + 1: offset + 1 + length].decode("ascii"))
                offset += 1 + length
        except (ValueError, IndexError, struct.error, UnicodeDecodeError) as e:
            raise DeviceError(f"malformed INFO reply ({e}): {payload.hex()}",
                              "the firmware speaks another protocol version; rebuild it with `cqtf build`") from None
        return DeviceInfo(proto, f"{major}.{minor}.{patch}", fmt, model_hash, input_size, output_size,
                          num_layers, max_payload, *strings)


@dataclass(frozen=True)
class Inference:
    output: bytes
    ticks: int


class Device:
    """Request/response client. Owns the decoder; the port is opened and closed by the caller."""

    def __init__(self, port, timeout: float = 5.0, retries: int = 2):
        self.port = port
        self.timeout = timeout
        self.retries = retries
        self.decoder = Decoder()
        self.seq = 0
        self.received = bytearray()  # the last bytes seen, kept as evidence for errors

    @property
    def link_stats(self) -> LinkStats:
        return self.decoder.stats

    def request(self, kind: int, payload: bytes = b"") -> bytes:
        self.seq = (self.seq + 1) & 0xFF
        frame = encode(Frame(kind, self.seq, payload))
        for _attempt in range(self.retries + 1):
            self.port.write(frame)
            reply = self._await(self.seq)
            if reply is not None:
                return self._check(kind, reply)
        tail = bytes(self.received[-32:]).hex(" ") or "nothing"
        raise DeviceError(
            f"device did not answer {_NAMES.get(kind, hex(kind))} within {self.timeout:g} s "
            f"({self.retries + 1} tries; last bytes received: {tail})",
            "is the firmware running and the port/baud rate right? reset the board and retry")

    def _await(self, seq: int) -> Frame | None:
        deadline = time.monotonic() + self.timeout
        while time.monotonic() < deadline:
            data = self.port.read(max(1, getattr(self.port, "in_waiting", 0) or 1))
            if not data:
                continue
            self.received = (self.received + data)[-256:]
            for frame in self.decoder.feed(data):
                if frame.seq == seq:
                    return frame
        return None

    def _check(self, kind: int, reply: Frame) -> bytes:
        if reply.type == ERROR:
            code = reply.payload[0] if reply.payload else 0
            detail = reply.payload[1:].decode("ascii", "replace")
            raise DeviceError(f"device refused {_NAMES.get(kind)}: {_ERROR_CODES.get(code, code)} {detail}".strip(),
                              "the firmware and host disagree on the model; rebuild with `cqtf build`")
        if reply.type != kind | 0x80:
            raise DeviceError(f"device answered {_NAMES.get(kind)} with frame type {reply.type:#x}",
                              "another program may be talking to this port")
        return reply.payload

    def sync(self) -> None:
        """Flush a half-received frame on the device side, and stale bytes on ours."""
        self.port.write(b"\x00")
        time.sleep(0.02)
        self.port.reset_input_buffer()

    def info(self) -> DeviceInfo:
        info = DeviceInfo.parse(self.request(INFO))
        if info.protocol_version != PROTOCOL_VERSION:
            raise DeviceError(f"device speaks protocol {info.protocol_version}, host {PROTOCOL_VERSION}",
                              "rebuild and flash the firmware with this cqtf (`cqtf build`)")
        return info

    def infer(self, input_bytes: bytes, layer: int = FINAL_LAYER) -> Inference:
        payload = self.request(INFER, bytes((layer,)) + input_bytes)
        if len(payload) < 5:
            raise DeviceError(f"short INFER reply: {payload.hex()}", "rebuild the firmware with `cqtf build`")
        status, ticks = struct.unpack_from("<BI", payload)
        if status != 0:
            raise DeviceError(f"device inference failed with status {status}", "rebuild with `cqtf build`")
        return Inference(payload[5:], ticks)

    def echo(self, data: bytes) -> bytes:
        return self.request(ECHO, data)
