"""Frames of the cqtf serial protocol (docs/protocol.md): COBS, 0x00-delimited, CRC-16/CCITT-FALSE.

The C twin is firmware/src/link/.
"""
from __future__ import annotations

import binascii
import struct
from dataclasses import dataclass

from cobs import cobs

DELIMITER = b"\x00"
CRC_INIT = 0xFFFF
MIN_RAW = 4  # type, seq, crc16


@dataclass(frozen=True)
class Frame:
    type: int
    seq: int
    payload: bytes


def crc16(data: bytes) -> int:
    """CRC-16/CCITT-FALSE: poly 0x1021, init 0xFFFF, no reflection, no final XOR."""
    return binascii.crc_hqx(data, CRC_INIT)


def encode(frame: Frame) -> bytes:
    raw = bytes((frame.type, frame.seq)) + frame.payload
    raw += struct.pack("<H", crc16(raw))
    return cobs.encode(raw) + DELIMITER


@dataclass
class LinkStats:
    """What the receiver threw away. On a clean link every counter stays 0."""

    empty_frames: int = 0  # two delimiters in a row: a duplicated or injected byte
    bad_cobs: int = 0
    short_frames: int = 0
    bad_crc: int = 0

    @property
    def errors(self) -> int:
        return self.empty_frames + self.bad_cobs + self.short_frames + self.bad_crc


class Decoder:
    """Incremental: feed bytes as they arrive, get back the complete, valid frames."""

    def __init__(self, max_frame: int = 65536):
        self.max_frame = max_frame
        self.buffer = bytearray()
        self.stats = LinkStats()

    def feed(self, data: bytes) -> list[Frame]:
        frames = []
        for chunk_end in _split_keep(data):
            self.buffer += chunk_end[0]
            if chunk_end[1]:
                frame = self._finish(bytes(self.buffer))
                self.buffer.clear()
                if frame is not None:
                    frames.append(frame)
            elif len(self.buffer) > self.max_frame:
                self.stats.short_frames += 1  # runaway: drop it, resynchronize at the next delimiter
                self.buffer.clear()
        return frames

    def _finish(self, encoded: bytes) -> Frame | None:
        if not encoded:
            self.stats.empty_frames += 1
            return None
        try:
            raw = cobs.decode(encoded)
        except cobs.DecodeError:
            self.stats.bad_cobs += 1
            return None
        if len(raw) < MIN_RAW:
            self.stats.short_frames += 1
            return None
        body, (crc,) = raw[:-2], struct.unpack("<H", raw[-2:])
        if crc16(body) != crc:
            self.stats.bad_crc += 1
            return None
        return Frame(body[0], body[1], body[2:])


def _split_keep(data: bytes):
    """Yield (piece, ends_with_delimiter) for the pieces of data between delimiters."""
    start = 0
    while True:
        end = data.find(DELIMITER, start)
        if end < 0:
            if start < len(data):
                yield data[start:], False
            return
        yield data[start:end], True
        start = end + 1
