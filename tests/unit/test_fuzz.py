"""Random and mutated bytes: the decoders succeed or raise a typed protocol error; they never
leak IndexError/struct.error/KeyError, crash, or hang (pytest-timeout bounds every test)."""

import contextlib
import os
import struct

from crc32c import crc32c
from hypothesis import given, settings
from hypothesis import strategies as st

from protocol.apis import APIS, decode_request, encode_request
from protocol.errors import ApiError
from protocol.framing import FrameDecoder
from protocol.records import decode_batches
from tests.strategies import message, record_batches

FUZZ = settings(max_examples=int(os.environ.get("FUZZ_EXAMPLES", "300")))


@st.composite
def mutated(draw: st.DrawFn, valid: st.SearchStrategy[bytes]) -> bytes:
    """A valid input with a few bytes flipped, cut, inserted or duplicated."""
    data = bytearray(draw(valid))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(["flip", "cut", "insert", "dup"]))
        at = draw(st.integers(0, max(len(data) - 1, 0)))
        if op == "flip" and data:
            data[at] ^= draw(st.integers(1, 255))
        elif op == "cut":
            del data[at : at + draw(st.integers(1, 16))]
        elif op == "insert":
            data[at:at] = draw(st.binary(min_size=1, max_size=8))
        else:
            data[at:at] = data[at : at + draw(st.integers(1, 32))]
    return bytes(data)


@st.composite
def batches_with_damaged_records(draw: st.DrawFn) -> bytes:
    """One batch whose records (or compressed payload) are mutated, with its length and CRC
    then repaired: the header view accepts it, so only the record decoder can refuse it."""
    (batch,) = draw(st.lists(record_batches(), min_size=1, max_size=1))
    first_len = 12 + struct.unpack_from(">i", batch, 8)[0]
    head, body = bytearray(batch[:61]), draw(mutated(st.just(batch[61:first_len])))
    struct.pack_into(">i", head, 8, 49 + len(body))
    crc = crc32c(body, crc32c(bytes(head[21:])))
    struct.pack_into(">I", head, 17, crc)
    return bytes(head) + body


def _decode_all_batches(data: bytes) -> None:
    for batch in decode_batches(data):
        for record in batch:
            assert record.key is None or isinstance(record.key, bytes)


@FUZZ
@given(st.binary(max_size=512) | mutated(record_batches()))
def test_batch_decoder_raises_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(ApiError):
        _decode_all_batches(data)


@FUZZ
@given(batches_with_damaged_records())
def test_record_decoder_raises_only_typed_errors(data: bytes) -> None:
    with contextlib.suppress(ApiError):
        _decode_all_batches(data)


@st.composite
def request_frames(draw: st.DrawFn) -> bytes:
    api = draw(st.sampled_from(list(APIS.values())))
    request = draw(message(api.request, api.max_version))
    return b"".join(bytes(p) for p in encode_request(api.key, api.max_version, 1, request))


@FUZZ
@given(st.binary(max_size=256) | mutated(request_frames()), st.integers(1, 64))
def test_frame_and_request_decoders_raise_only_typed_errors(data: bytes, chunk: int) -> None:
    decoder = FrameDecoder(max_frame_bytes=4096)
    with contextlib.suppress(ApiError):
        for start in range(0, len(data), chunk):
            for payload in decoder.feed(data[start : start + chunk]):
                with contextlib.suppress(ApiError):  # one bad request: the stream goes on
                    decode_request(payload)
        decoder.close()
