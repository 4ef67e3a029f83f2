"""Framing: round trips, CRC check value, and every kind of damage counted, never passed on."""
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cqtf.link.frame import Decoder, Frame, crc16, encode

frames = st.builds(Frame, st.integers(0, 255), st.integers(0, 255), st.binary(max_size=600))


def test_crc_check_value():
    assert crc16(b"123456789") == 0x29B1  # CRC-16/CCITT-FALSE catalogue value


@given(st.lists(frames, max_size=5), st.integers(1, 64))
def test_round_trip_in_arbitrary_chunks(sent, chunk):
    wire = b"".join(encode(f) for f in sent)
    assert wire.count(b"\x00") == len(sent)  # COBS leaves only the delimiters
    decoder = Decoder()
    got = []
    for i in range(0, len(wire), chunk):
        got += decoder.feed(wire[i: i + chunk])
    assert got == sent
    assert decoder.stats.errors == 0


@given(frames, st.data())
def test_any_single_bit_flip_is_rejected_or_detected(frame, data):
    wire = bytearray(encode(frame))
    position = data.draw(st.integers(0, len(wire) - 2))  # leave the delimiter alone
    wire[position] ^= 1 << data.draw(st.integers(0, 7))
    decoder = Decoder()
    got = decoder.feed(bytes(wire) + b"\x00")
    assert frame not in got
    assert decoder.stats.errors >= 1


def test_duplicated_delimiter_is_a_link_error():
    # The gcc -O2 bug in the toolchain notes re-sends a frame's last byte: the delimiter.
    decoder = Decoder()
    frame = Frame(0x83, 7, b"abc")
    assert decoder.feed(encode(frame) + b"\x00") == [frame]
    assert decoder.stats.empty_frames == 1


def test_resynchronizes_after_garbage():
    decoder = Decoder()
    frame = Frame(0x81, 1, bytes(range(40)))
    got = decoder.feed(b"\x13\x37garbage" + b"\x00" + encode(frame))
    assert got == [frame]
    assert decoder.stats.errors == 1


@pytest.mark.parametrize("raw", [b"\x01", b"\x02\x01\x01"])
def test_short_frames_are_dropped(raw):
    decoder = Decoder()
    assert decoder.feed(raw + b"\x00") == []
    assert decoder.stats.errors == 1
