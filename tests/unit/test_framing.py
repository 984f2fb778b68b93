import struct

import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol.errors import (
    FrameTooLargeError,
    MalformedFrameError,
    TruncatedFrameError,
)
from protocol.framing import (
    FrameDecoder,
    RequestHeader,
    frame,
    pack_response_header,
    parse_request_header,
    parse_response_header,
)


def _frames(payloads: list[bytes]) -> bytes:
    return b"".join(b"".join(frame(p, [])) for p in payloads)


def test_frame_prefixes_total_length_without_joining_parts() -> None:
    body = memoryview(b"records")
    parts = frame(b"head", [body])
    assert parts[0] == struct.pack(">I", 11) + b"head"
    assert parts[1] is body


def test_request_header_round_trip() -> None:
    header = RequestHeader(api_key=3, api_version=7, correlation_id=-5)
    got, body = parse_request_header(memoryview(header.pack() + b"body"))
    assert got == header
    assert bytes(body) == b"body"


def test_response_header_round_trip() -> None:
    cid, body = parse_response_header(memoryview(pack_response_header(2**31 - 1) + b"x"))
    assert cid == 2**31 - 1 and bytes(body) == b"x"


@pytest.mark.parametrize("size", [0, 7])
def test_short_request_header_is_malformed(size: int) -> None:
    with pytest.raises(MalformedFrameError, match="shorter than its 8-byte header"):
        parse_request_header(memoryview(bytes(size)))


def test_short_response_header_is_malformed() -> None:
    with pytest.raises(MalformedFrameError):
        parse_response_header(memoryview(b"\x00\x01"))


def test_decoder_yields_whole_frames_from_one_chunk() -> None:
    decoder = FrameDecoder()
    frames = decoder.feed(_frames([b"a", b"", b"ccc"]))
    assert [bytes(f) for f in frames] == [b"a", b"", b"ccc"]
    assert decoder.buffered_bytes == 0


def test_decoder_reassembles_frames_split_at_every_byte() -> None:
    payloads = [b"first frame", b"x" * 300, b"third"]
    stream = _frames(payloads)
    for split in range(len(stream) + 1):
        decoder = FrameDecoder()
        got = decoder.feed(stream[:split]) + decoder.feed(stream[split:])
        assert [bytes(f) for f in got] == payloads, split
        decoder.close()


@given(st.lists(st.binary(max_size=200), max_size=8), st.data())
def test_decoder_any_chunking(payloads: list[bytes], data: st.DataObject) -> None:
    stream = _frames(payloads)
    cuts = sorted(data.draw(st.lists(st.integers(0, len(stream)), max_size=10)))
    decoder = FrameDecoder()
    got = []
    start = 0
    for cut in [*cuts, len(stream)]:
        got += [bytes(f) for f in decoder.feed(stream[start:cut])]
        start = cut
    assert got == payloads
    decoder.close()


def test_frames_stay_valid_after_later_feeds() -> None:
    decoder = FrameDecoder()
    stream = _frames([b"one", b"two"])
    (first,) = decoder.feed(stream[:8])
    decoder.feed(stream[8:])
    assert bytes(first) == b"one"


def test_oversized_frame_is_refused_before_it_is_buffered() -> None:
    decoder = FrameDecoder(max_frame_bytes=1024)
    with pytest.raises(FrameTooLargeError, match="1025 bytes is over the maximum of 1024"):
        decoder.feed(struct.pack(">I", 1025))
    assert decoder.buffered_bytes == 0


def test_oversized_frame_split_across_feeds() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    decoder.feed(_frames([b"ok"]) + b"\x00\x00")
    with pytest.raises(FrameTooLargeError):
        decoder.feed(b"\xff\xff")


def test_decoder_refuses_to_continue_after_an_error() -> None:
    decoder = FrameDecoder(max_frame_bytes=10)
    with pytest.raises(FrameTooLargeError):
        decoder.feed(struct.pack(">I", 11))
    with pytest.raises(MalformedFrameError, match="lost its framing"):
        decoder.feed(_frames([b"x"]))


@pytest.mark.parametrize("cut", [1, 3, 4, 6])
def test_stream_ending_inside_a_frame_is_truncated(cut: int) -> None:
    decoder = FrameDecoder()
    decoder.feed(_frames([b"abcdef"])[:cut])
    with pytest.raises(TruncatedFrameError, match=f"ended {cut} bytes into a frame"):
        decoder.close()


def test_exact_maximum_is_accepted() -> None:
    decoder = FrameDecoder(max_frame_bytes=5)
    assert [bytes(f) for f in decoder.feed(_frames([b"12345"]))] == [b"12345"]


def _framed(payload: bytes) -> bytes:
    return len(payload).to_bytes(4, "big") + payload


def test_a_large_frame_fed_in_pieces_is_the_same() -> None:
    big = b"x" * 100_000
    stream = _framed(big) * 2
    decoder = FrameDecoder(1 << 20)
    frames = []
    for i in range(0, len(stream), 3_001):
        frames += decoder.feed(stream[i : i + 3_001])
    assert [bytes(f) for f in frames] == [big, big]
    truncated = FrameDecoder(1 << 20)
    truncated.feed(stream[:50_000])
    with pytest.raises(TruncatedFrameError, match="50000 bytes into a frame"):
        truncated.close()
