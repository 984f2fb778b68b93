from dataclasses import dataclass

import msgpack
import pytest
from hypothesis import given
from hypothesis import strategies as st

from protocol import apis, schema
from protocol.apis import (
    APIS,
    ApiKey,
    ApiVersionRange,
    FetchPartitionData,
    FetchResponse,
    FetchTopicResponse,
    MetadataRequest,
    ProducePartition,
    ProduceRequest,
    ProduceTopic,
    Response,
    api_for,
    decode_request,
    decode_response,
    encode_error_response,
    encode_request,
    encode_response,
    negotiate,
)
from protocol.errors import (
    MalformedFrameError,
    MalformedMessageError,
    NotEnoughReplicasError,
    UnsupportedRequestError,
)
from protocol.framing import FrameDecoder, parse_response_header
from protocol.records import encode_batch
from protocol.schema import Records, decode_message, encode_message, field
from tests.strategies import message

EVERY_VERSION = [
    (api, version)
    for api in APIS.values()
    for version in range(api.min_version, api.max_version + 1)
]
IDS = [f"{api.name}-v{version}" for api, version in EVERY_VERSION]


def _one_frame(parts: list) -> memoryview:
    (payload,) = FrameDecoder().feed(b"".join(bytes(p) for p in parts))
    return payload


@pytest.mark.parametrize(("api", "version"), EVERY_VERSION, ids=IDS)
@given(data=st.data())
def test_every_request_round_trips(api: apis.Api, version: int, data: st.DataObject) -> None:
    request = data.draw(message(api.request, version))
    correlation_id = data.draw(st.integers(-(2**31), 2**31 - 1))
    header, got_api, got = decode_request(
        _one_frame(encode_request(api.key, version, correlation_id, request))
    )
    assert (header.api_key, header.api_version, header.correlation_id) == (
        api.key,
        version,
        correlation_id,
    )
    assert got_api is api
    assert got == request


@pytest.mark.parametrize(("api", "version"), EVERY_VERSION, ids=IDS)
@given(data=st.data())
def test_every_response_round_trips(api: apis.Api, version: int, data: st.DataObject) -> None:
    response = data.draw(message(api.response, version))
    cid, body = parse_response_header(_one_frame(encode_response(42, version, response)))
    assert cid == 42
    assert decode_response(api, version, body) == response


@pytest.mark.parametrize("api", APIS.values(), ids=[a.name for a in APIS.values()])
def test_every_response_decodes_a_request_level_error(api: apis.Api) -> None:
    frame = encode_error_response(5, NotEnoughReplicasError("only 1 of 3 in sync"))
    cid, body = parse_response_header(_one_frame(frame))
    got = decode_response(api, api.min_version, body)
    assert cid == 5
    assert isinstance(got, api.response)
    assert (got.error_code, got.error_message) == (19, "only 1 of 3 in sync")


def test_unexpected_exception_becomes_unknown_server_error_without_details() -> None:
    _, body = parse_response_header(_one_frame(encode_error_response(1, KeyError("secret"))))
    got = decode_response(APIS[ApiKey.METADATA], 0, body)
    assert got.error_code == -1 and got.error_message is None


def test_records_travel_raw_after_msgpack_and_decode_without_copy() -> None:
    batch = encode_batch([(b"k", b"v" * 1000, None, 1)])
    request = ProduceRequest(
        acks=-1,
        timeout_ms=1000,
        topics=[ProduceTopic(name="t", partitions=[ProducePartition(index=0, records=batch)])],
    )
    parts = encode_request(ApiKey.PRODUCE, 0, 1, request)
    assert parts[-1] is batch  # not copied into the frame head
    payload = _one_frame(parts)
    _, _, got = decode_request(payload)
    records = got.topics[0].partitions[0].records
    assert isinstance(records, memoryview) and records.obj is payload.obj  # a view of the frame
    assert records == batch


def test_several_records_fields_keep_their_order() -> None:
    parts = [
        FetchPartitionData(partition_index=i, records=None if i == 1 else bytes([i]) * (i + 1))
        for i in range(4)
    ]
    response = FetchResponse(topics=[FetchTopicResponse(topic="a", partitions=parts)])
    _, body = parse_response_header(_one_frame(encode_response(1, 0, response)))
    assert decode_response(APIS[ApiKey.FETCH], 0, body) == response


def test_unknown_api_key_is_unsupported_and_keeps_the_header() -> None:
    payload = memoryview(b"\x00\x63\x00\x00\x00\x00\x00\x09" + msgpack.packb({}))
    with pytest.raises(UnsupportedRequestError, match="unknown API key 99") as info:
        decode_request(payload)
    assert info.value.code == 35
    assert info.value.header.correlation_id == 9


def test_unknown_api_version_is_unsupported() -> None:
    payload = memoryview(b"\x00\x03\x00\x63\x00\x00\x00\x01" + msgpack.packb({}))
    with pytest.raises(UnsupportedRequestError, match=r"Metadata v99 is not supported"):
        decode_request(payload)


def test_encoding_an_unsupported_version_is_refused() -> None:
    with pytest.raises(UnsupportedRequestError):
        encode_request(ApiKey.METADATA, 99, 1, MetadataRequest())
    with pytest.raises(TypeError, match="Produce takes ProduceRequest"):
        encode_request(ApiKey.PRODUCE, 0, 1, MetadataRequest())


def test_truncated_header_is_malformed() -> None:
    with pytest.raises(MalformedFrameError):
        decode_request(memoryview(b"\x00\x03\x00"))


def _metadata_payload(body: bytes) -> memoryview:
    return memoryview(b"\x00\x03\x00\x00\x00\x00\x00\x01" + body)


@pytest.mark.parametrize(
    ("body", "match"),
    [
        (b"", "ends inside its msgpack map"),
        (b"\xc1", "not valid msgpack"),  # 0xc1 is never used in msgpack
        (b"\x85\xa1a", "exceeds max_map_len"),  # a map of 5 in 3 bytes
        (msgpack.packb({"topics": ["abc"]})[:-1], "ends inside"),
        (msgpack.packb([1, 2]), "expected a map, got list"),
        (msgpack.packb({"topics": "all"}), "field 'topics': expected a list, got str"),
        (msgpack.packb({"topics": ["a", 7]}), r"field 'topics\[1\]': expected str, got int"),
        (msgpack.packb({"allow_auto_topic_creation": 1}), "expected bool, got int"),
        (msgpack.packb({}) + b"junk", "4 bytes after the last records field"),
        (b"\xa3\xff\xfe\xfd", "not valid msgpack"),  # invalid UTF-8 string
        # a 4-billion-element array is refused from its length, before any allocation
        (b"\xdd\xff\xff\xff\xff", "exceeds max_array_len"),
    ],
)
def test_bad_bodies_are_malformed_messages(body: bytes, match: str) -> None:
    with pytest.raises(MalformedMessageError, match=match):
        decode_request(_metadata_payload(body))


def test_missing_required_field_is_malformed() -> None:
    body = msgpack.packb({"timeout_ms": 5})
    with pytest.raises(MalformedMessageError, match="required field 'acks' is missing"):
        decode_message(ProduceRequest, 0, body)


def test_records_running_past_the_frame_are_malformed() -> None:
    body = (
        msgpack.packb(
            {
                "acks": 1,
                "timeout_ms": 5,
                "topics": [{"name": "t", "partitions": [{"index": 0, "records": 100}]}],
            }
        )
        + b"short"
    )
    with pytest.raises(MalformedMessageError, match=r"topics\[0\].partitions\[0\].records"):
        decode_message(ProduceRequest, 0, body)


def test_unknown_keys_are_ignored_and_missing_optional_keys_take_defaults() -> None:
    body = msgpack.packb({"topics": ["a"], "from_the_future": {"x": [1, 2]}})
    assert decode_message(MetadataRequest, 0, body) == MetadataRequest(
        topics=["a"], allow_auto_topic_creation=True
    )


def test_int_field_refuses_bool() -> None:
    body = msgpack.packb({"acks": True, "timeout_ms": 5})
    with pytest.raises(MalformedMessageError, match="field 'acks': expected int, got bool"):
        decode_message(ProduceRequest, 0, body)


# --- versioning, on a message of the test's own --------------------------------------


@dataclass(slots=True, kw_only=True)
class Evolving:
    name: str
    added_in_v1: int = field(default=-1, since=1)
    dropped_after_v1: str = field(default="old", until=1)
    blob: Records = field(default=None, since=2)


@pytest.mark.parametrize(
    ("version", "keys"),
    [
        (0, {"name", "dropped_after_v1"}),
        (1, {"name", "added_in_v1", "dropped_after_v1"}),
        (2, {"name", "added_in_v1", "blob"}),
    ],
)
def test_fields_exist_only_in_their_versions(version: int, keys: set[str]) -> None:
    msg = Evolving(name="n", added_in_v1=7, dropped_after_v1="x", blob=b"raw")
    head, raws = encode_message(msg, version)
    assert set(msgpack.unpackb(head)) == keys
    assert raws == ([b"raw"] if version >= 2 else [])
    got = decode_message(Evolving, version, head + b"".join(raws))
    assert got.name == "n"
    assert got.added_in_v1 == (7 if version >= 1 else -1)
    assert got.dropped_after_v1 == ("x" if version <= 1 else "old")
    assert got.blob == (b"raw" if version >= 2 else None)


def test_a_newer_peers_extra_field_is_ignored_by_an_older_decoder() -> None:
    head, _ = encode_message(Evolving(name="n", added_in_v1=3), 1)
    assert decode_message(Evolving, 0, head) == Evolving(name="n")


# --- version negotiation ---------------------------------------------------------------


def test_api_for_and_negotiation() -> None:
    metadata = api_for(ApiKey.METADATA, 0)
    assert metadata.name == "Metadata"
    assert negotiate(metadata, ApiVersionRange(api_key=3, min_version=0, max_version=12)) == 1
    assert negotiate(metadata, ApiVersionRange(api_key=3, min_version=0, max_version=0)) == 0
    with pytest.raises(UnsupportedRequestError, match="no common version"):
        negotiate(metadata, ApiVersionRange(api_key=3, min_version=4, max_version=12))


def test_api_versions_lists_everything_served() -> None:
    listed = {r.api_key: (r.min_version, r.max_version) for r in apis.supported_versions()}
    assert listed == {k: (a.min_version, a.max_version) for k, a in APIS.items()}
    for key in (0, 1, 2, 3, 18, 19, 20, 32, 33):
        assert key in listed


def test_generic_error_body_is_a_response() -> None:
    head, raws = encode_message(Response(error_code=35, error_message="no"), 0)
    assert msgpack.unpackb(head) == {"error_code": 35, "error_message": "no"} and not raws


# --- the generated codecs against their definition -----------------------------------

_JUNK = st.sampled_from([None, True, 7, -1, "x", b"x", 1.5, [], {}, [None], [{}], {"x": 1}])


def _mutate(obj: object, draw: st.DrawFn) -> object:
    """``obj`` (a decoded msgpack head) with one value somewhere replaced or one key gone."""
    if isinstance(obj, dict) and obj:
        key = draw(st.sampled_from(sorted(obj)))
        action = draw(st.sampled_from(["junk", "drop", "deeper"]))
        if action == "drop":
            return {k: v for k, v in obj.items() if k != key}
        value = draw(_JUNK) if action == "junk" else _mutate(obj[key], draw)
        return {**obj, key: value}
    if isinstance(obj, list) and obj:
        i = draw(st.integers(0, len(obj) - 1))
        value = draw(_JUNK) if draw(st.booleans()) else _mutate(obj[i], draw)
        return [*obj[:i], value, *obj[i + 1 :]]
    return draw(_JUNK)


def _decode_outcome(codec: object, obj: object, raws: bytes) -> object:
    try:
        return codec.decode(obj, schema._Tail(memoryview(raws)))
    except schema._BadField as exc:
        return ("bad", exc.reason, exc.path)


@pytest.mark.parametrize(("api", "version"), EVERY_VERSION, ids=IDS)
@given(data=st.data())
def test_generated_codecs_match_their_generic_definition(
    api: apis.Api, version: int, data: st.DataObject
) -> None:
    """The generated encode and decode (nested messages inlined) give exactly what the
    generic, field-by-field ones give: the same map and record parts, and for a damaged
    map the same message or the same error at the same field path."""
    cls = data.draw(st.sampled_from([api.request, api.response]))
    msg = data.draw(message(cls, version))
    codec = schema._codec_for(cls, version)
    raws: list = []
    obj = codec.encode(msg, raws)
    damaged = _mutate(obj, data.draw) if data.draw(st.booleans()) else obj
    tail = b"".join(bytes(r) for r in raws)
    generated = _decode_outcome(codec, damaged, tail)
    with pytest.MonkeyPatch.context() as patch:
        for each in list(schema._codecs.values()):  # every level generic, nested ones too
            patch.setattr(each, "encode", each.generic_encode)
            patch.setattr(each, "decode", each.generic_decode)
        generic_raws: list = []
        assert codec.encode(msg, generic_raws) == obj
        assert [bytes(r) for r in generic_raws] == [bytes(r) for r in raws]
        assert _decode_outcome(codec, damaged, tail) == generated


def test_the_packer_a_large_message_grew_is_not_kept() -> None:
    """Each thread reuses one msgpack Packer, but not one a large message (the metadata of
    thousands of partitions) grew: that buffer would stay for the thread's life."""
    small = MetadataRequest(topics=["a"])
    as_map = schema._codec_for(MetadataRequest, 0).generic_encode(small, [])
    assert encode_message(small, 0)[0] == msgpack.packb(as_map, use_bin_type=True)
    kept = schema._per_thread.packer
    assert encode_message(small, 0)[0] == encode_message(small, 0)[0]
    assert schema._per_thread.packer is kept
    large = MetadataRequest(topics=[f"topic-{i:08d}" for i in range(30_000)])
    head, _ = encode_message(large, 0)
    assert len(head) > schema._PACKER_BYTES
    assert not hasattr(schema._per_thread, "packer")
    assert decode_message(MetadataRequest, 0, head) == large
    encode_message(small, 0)
    assert schema._per_thread.packer is not kept


def test_a_body_that_fails_to_decode_leaves_nothing_for_the_next() -> None:
    """Small bodies go through one Unpacker per thread: whatever a bad body leaves in it
    (half a map, bytes after an error) must not reach the next body's decode."""
    request = ProduceRequest(
        acks=1,
        timeout_ms=5,
        topics=[ProduceTopic(name="t", partitions=[ProducePartition(index=0, records=b"r" * 40)])],
    )
    head, raws = encode_message(request, 0)
    good = head + b"".join(raws)
    bad_bodies = [
        head[: len(head) // 2],  # the map cut short
        b"\xc1" + good,  # a byte msgpack never uses
        b"\xa3\xff\xfe\xfd",  # invalid UTF-8
        msgpack.packb({"acks": 1}) + b"junk",  # a required field missing, bytes after it
    ]
    for bad in bad_bodies:
        with pytest.raises(MalformedMessageError):
            decode_message(ProduceRequest, 0, bad)
        assert decode_message(ProduceRequest, 0, good) == request
    for _ in range(3):  # and bodies in a row, each with record bytes after its map
        assert decode_message(ProduceRequest, 0, good) == request
