import os
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
    FramePool,
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


# FramePool: a large frame read straight into a buffer of its own, reused once nothing
# refers to it.


def _read(
    decoder: FrameDecoder, stream: bytes, sizes: list[int], feed_anyway: int = 0
) -> list[memoryview]:
    """What a connection does: each read goes where ``read_into`` says (the frame's own
    buffer) or to its own buffer, then ``filled`` or ``feed``; sizes are the reads' caps.
    Every ``feed_anyway``-th read is fed even when ``read_into`` has a buffer."""
    frames: list[memoryview] = []
    pos, turn = 0, 0
    while pos < len(stream):
        cap = sizes[turn % len(sizes)] if sizes else 1 << 20
        turn += 1
        into = decoder.read_into()
        if into is not None and not (feed_anyway and turn % feed_anyway == 0):
            n = min(cap, len(into), len(stream) - pos)
            into[:n] = stream[pos : pos + n]
            frames += decoder.filled(n)
        else:
            n = min(cap, len(stream) - pos)
            frames += decoder.feed(stream[pos : pos + n])
        pos += n
    return frames


@given(
    st.lists(st.integers(0, 3_000), max_size=12),
    st.lists(st.integers(1, 5_000), max_size=8),
    st.integers(0, 20_000),
    st.integers(0, 4),
    st.lists(st.booleans(), max_size=12),
)
def test_pooled_reads_give_the_same_frames_and_never_reuse_a_live_one(
    lengths: list[int], sizes: list[int], budget: int, feed_anyway: int, dropped: list[bool]
) -> None:
    payloads = [bytes([i + 1]) * n for i, n in enumerate(lengths)]  # each its own byte
    pool = FramePool(budget, min_read_bytes=16)
    decoder = FrameDecoder(1 << 20, pool)
    stream = _frames(payloads)
    kept: list[tuple[memoryview, bytes]] = []
    for round_ in range(2):  # the second round meets the buffers the first one left
        frames = _read(decoder, stream, sizes, feed_anyway)
        assert [bytes(f) for f in frames] == payloads
        # some frames are dropped at once (their buffers free for the next ones), the
        # rest are held to the end: a buffer lent to one must not go to a later one
        for i, f in enumerate(frames):
            if not (dropped[i] if i < len(dropped) else round_):
                kept.append((f, payloads[i]))
        del frames
    assert all(bytes(view) == payload for view, payload in kept)
    assert decoder.buffered_bytes == 0
    assert pool.held_bytes <= budget
    decoder.close()


def test_a_large_frame_goes_to_a_buffer_of_its_own_once_the_pool_has_one() -> None:
    pool = FramePool(4 << 20)
    decoder = FrameDecoder(8 << 20, pool)
    big, other, third = (os.urandom(1 << 20) for _ in range(3))
    # the first is assembled as its bytes come (the pool has nothing), then kept by it
    (first,) = _read(decoder, _framed(big), [256 * 1024])
    assert first == big and pool.held_bytes == 4 + (1 << 20)
    # the first is still held: the second cannot have its buffer, and is kept too
    assert decoder.feed(_framed(other)[:100_000]) == [] and decoder.read_into() is None
    (second,) = decoder.feed(_framed(other)[100_000:])
    assert second == other and first == big and pool.held_bytes == 2 * (4 + (1 << 20))
    del first, second
    # nothing refers to them now: the third's rest is read straight into one of them
    assert decoder.feed(_framed(third)[:4096]) == []
    into = decoder.read_into()
    assert into is not None and len(into) == 4 + (1 << 20) - 4096
    into[:] = _framed(third)[4096:]
    (got,) = decoder.filled(len(into))
    assert got == third and decoder.read_into() is None
    assert pool.held_bytes == 2 * (4 + (1 << 20))  # no new memory


def test_a_length_prefix_alone_costs_no_memory() -> None:
    """Four bytes declaring a 60 MiB frame get four bytes held, pool or not (review 94)."""
    pool = FramePool(64 << 20)
    decoder = FrameDecoder(100 << 20, pool)
    assert decoder.feed(struct.pack(">I", 60 << 20)) == []
    assert decoder.buffered_bytes == 4 and decoder.read_into() is None
    assert pool.held_bytes == 0


def test_a_view_of_a_view_keeps_the_buffer_out_of_the_pool() -> None:
    pool = FramePool(1 << 20, min_read_bytes=1)
    decoder = FrameDecoder(1 << 20, pool)
    (frame_,) = _read(decoder, _framed(b"a" * 1000), [10])
    kept = frame_[10:20][2:4]
    del frame_
    (other,) = _read(decoder, _framed(b"b" * 1000), [10])
    assert bytes(kept) == b"aa" and bytes(other) == b"b" * 1000
    assert pool.held_bytes == 2 * 1004
    del kept, other
    decoder.feed(_framed(b"c" * 1000)[:10])
    assert decoder.read_into() is not None  # a freed one serves the next


def test_a_full_pool_keeps_what_fits_and_the_frames_are_whole() -> None:
    pool = FramePool(150_000, min_read_bytes=1)
    decoder = FrameDecoder(1 << 20, pool)
    payloads = [bytes([i]) * 100_000 for i in range(3)]
    frames = _read(decoder, _frames(payloads), [4096])
    assert [bytes(f) for f in frames] == payloads
    assert pool.held_bytes == 100_004  # one kept; the others were not, over the budget
    pool.adopt(bytearray(150_001))
    assert pool.held_bytes == 100_004  # never more than the budget, even alone


def test_idle_buffers_make_room_but_lent_ones_stay() -> None:
    pool = FramePool(300_000)
    pool.adopt(bytearray(100_000))
    pool.adopt(bytearray(100_000))
    lent = pool.take(100_000)  # one of them is lent out now
    assert lent is not None
    pool.adopt(bytearray(150_000))  # the idle one goes to make room; the lent one stays
    assert pool.held_bytes == 250_000
    other = pool.take(100_000)  # not the lent one: the new one (up to twice the size)
    assert other is not None and len(other) == 150_000
    assert pool.take(100_000) is None  # both lent
    del lent
    again = pool.take(100_000)
    assert again is not None and len(again) == 100_000


def test_the_stream_ending_inside_a_pooled_frame_is_truncated() -> None:
    pool = FramePool(1 << 20, min_read_bytes=1)
    pool.adopt(bytearray(1004))
    decoder = FrameDecoder(1 << 20, pool)
    decoder.feed(_framed(b"x" * 1000)[:304])
    assert decoder.read_into() is not None
    with pytest.raises(TruncatedFrameError, match="ended 304 bytes into a frame"):
        decoder.close()
    assert pool.take(1004) is not None  # and its buffer is free again


def test_discard_frees_the_pooled_buffer_of_a_frame_in_progress() -> None:
    pool = FramePool(1 << 20, min_read_bytes=1)
    pool.adopt(bytearray(1004))
    decoder = FrameDecoder(1 << 20, pool)
    decoder.feed(_framed(b"x" * 1000)[:304])
    assert pool.take(1004) is None
    decoder.discard()
    assert decoder.buffered_bytes == 0 and pool.take(1004) is not None


def test_feeding_into_a_pooled_frame_copies_and_reading_past_it_is_a_caller_bug() -> None:
    pool = FramePool(1 << 20, min_read_bytes=1)
    pool.adopt(bytearray(1004))
    decoder = FrameDecoder(1 << 20, pool)
    stream = _framed(b"x" * 1000) + _framed(b"next")
    decoder.feed(stream[:10])
    assert decoder.read_into() is not None
    with pytest.raises(ValueError, match="filled"):
        decoder.filled(995)
    assert [bytes(f) for f in decoder.feed(stream[10:])] == [b"x" * 1000, b"next"]
    with pytest.raises(ValueError, match="filled"):
        FrameDecoder().filled(1)
    with pytest.raises(ValueError, match="min_read_bytes"):
        FramePool(1 << 20, min_read_bytes=0)


def test_a_burst_s_buffers_are_let_go_once_a_period_goes_by_without_them() -> None:
    """Frames pools never shrank: a burst of large produce requests held its memory (up
    to the budget) for good. A trim lets go of the idle buffers no frame had since the
    last one; a buffer in use, or used since, stays."""
    pool = FramePool(8 << 20)
    decoder = FrameDecoder(8 << 20, pool)
    big = [os.urandom(1 << 20) for _ in range(3)]
    frames = [f for payload in big for f in _read(decoder, _framed(payload), [256 * 1024])]
    assert pool.held_bytes == 3 * (4 + (1 << 20))
    held = frames[0]  # one still referred to (a handler, a write queued)
    del frames
    assert pool.trim() == 0  # all three adopted since the last trim: a steady load's
    # the next period: one is taken again (a frame read straight into it), one is held
    assert decoder.feed(_framed(big[1])[:4096]) == []
    into = decoder.read_into()
    assert into is not None
    into[:] = _framed(big[1])[4096:]
    (again,) = decoder.filled(len(into))
    assert again == big[1]
    freed = pool.trim()
    assert freed == 4 + (1 << 20)  # only the buffer neither used nor held goes
    assert pool.held_bytes == 2 * (4 + (1 << 20))
    assert held == big[0]  # untouched
    del held, again, into
    # in use at the last trim, they count as used in the period after it; the next
    # quiet one lets them go
    assert pool.trim() == 0
    assert pool.trim() == 2 * (4 + (1 << 20))
    assert pool.held_bytes == 0
