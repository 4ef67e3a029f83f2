"""The firmware's COBS encoders, compiled for the host: the streaming ones (cqtf_cobs_write, and
cqtf_cobs_write_spans, which sends a response's runs straight from its head, the arena and its CRC)
write exactly the bytes of the buffered one, and all decode with the `cobs` package the host uses."""
from __future__ import annotations

import ctypes

import pytest
from cobs import cobs
from hypothesis import given, settings
from hypothesis import strategies as st

from cqtf.native import FIRMWARE_SRC, build_library

SINK = ctypes.CFUNCTYPE(None, ctypes.POINTER(ctypes.c_uint8), ctypes.c_uint32)


class Span(ctypes.Structure):
    _fields_ = [("data", ctypes.c_char_p), ("len", ctypes.c_uint32)]


@pytest.fixture(scope="module")
def lib(tmp_path_factory):
    library = ctypes.CDLL(str(build_library([FIRMWARE_SRC / "link" / "cqtf_cobs.c"], [FIRMWARE_SRC / "link"],
                                            tmp_path_factory.mktemp("cobs"))))
    library.cqtf_cobs_encode.restype = ctypes.c_uint32
    library.cqtf_cobs_encode.argtypes = [ctypes.c_char_p, ctypes.c_uint32, ctypes.c_char_p, ctypes.c_uint32]
    library.cqtf_cobs_write.argtypes = [ctypes.c_char_p, ctypes.c_uint32, SINK]
    library.cqtf_cobs_write_spans.argtypes = [ctypes.POINTER(Span), ctypes.c_uint32, SINK]
    return library


def _buffered(lib, data: bytes) -> bytes:
    out = ctypes.create_string_buffer(len(data) + len(data) // 254 + 1)
    n = lib.cqtf_cobs_encode(data, len(data), out, len(out))
    return out.raw[:n]


def _streamed(lib, data: bytes) -> tuple[bytes, int]:
    chunks: list[bytes] = []
    sink = SINK(lambda ptr, n: chunks.append(ctypes.string_at(ptr, n)))
    lib.cqtf_cobs_write(data, len(data), sink)
    return b"".join(chunks), len(chunks)


# zeros and long non-zero runs (254 is COBS's longest) make the edge cases likely
payloads = st.lists(st.one_of(st.just(b"\x00"), st.binary(min_size=1, max_size=300).map(lambda b: b.replace(b"\x00", b"\x07")),
                              st.binary(max_size=40)), max_size=6).map(b"".join)


@settings(max_examples=400, deadline=None)
@given(payloads)
def test_streamed_encoding_is_the_buffered_one_and_decodes(lib, data):
    streamed, _ = _streamed(lib, data)
    assert streamed == _buffered(lib, data)
    assert b"\x00" not in streamed and cobs.decode(streamed) == data


@pytest.mark.parametrize("data", [b"", b"\x00", b"\x07" * 254, b"\x07" * 254 + b"\x00", b"\x07" * 508, b"\x07" * 255])
def test_edges_of_the_longest_run(lib, data):
    streamed, _ = _streamed(lib, data)
    assert streamed == _buffered(lib, data) and cobs.decode(streamed) == data


def _streamed_spans(lib, parts: list[bytes]) -> bytes:
    chunks: list[bytes] = []
    sink = SINK(lambda ptr, n: chunks.append(ctypes.string_at(ptr, n)))
    spans = (Span * max(len(parts), 1))(*[Span(p, len(p)) for p in parts])
    lib.cqtf_cobs_write_spans(spans, len(parts), sink)
    return b"".join(chunks)


@settings(max_examples=400, deadline=None)
@given(st.lists(payloads, max_size=5))
def test_spans_encode_as_their_concatenation(lib, parts):
    # empty spans, runs across span boundaries and zeros at them are all in reach of these parts
    streamed = _streamed_spans(lib, parts)
    assert streamed == _buffered(lib, b"".join(parts)) and cobs.decode(streamed) == b"".join(parts)


@pytest.mark.parametrize("parts", [[], [b""], [b"", b"\x00", b""], [b"\x07" * 200, b"\x07" * 54, b"\x00"],
                                   [b"\x07" * 253, b"\x07", b"\x07"], [b"\x07" * 254, b""]])
def test_span_edges(lib, parts):
    assert _streamed_spans(lib, parts) == _buffered(lib, b"".join(parts))
