"""Kafka's encoding on a Kafka-protocol listener: bytes a Kafka client sends decode into
Headwater's requests, Headwater's answers encode into what a Kafka client reads."""

from __future__ import annotations

import importlib
import pkgutil
import struct
import uuid
from typing import Any

import kafka.protocol
import pytest
from kafka.protocol.admin import DeleteTopicsRequest as KpDeleteTopics
from kafka.protocol.admin import DescribeClusterResponse as KpDescribeClusterResponse
from kafka.protocol.consumer import OffsetFetchRequest as KpOffsetFetchRequest
from kafka.protocol.consumer import OffsetFetchResponse as KpOffsetFetchResponse
from kafka.protocol.metadata import ApiVersionsResponse as KpApiVersionsResponse

from broker.config import ConfigError, load_config
from protocol.apis import (
    ApiKey,
    DivergingEpoch,
    FetchPartitionData,
    FetchRequest,
    FetchResponse,
    FetchTopicResponse,
    FindCoordinatorRequest,
    FindCoordinatorResponse,
    LeaderIdAndEpoch,
    LeaveGroupMember,
    LeaveGroupRequest,
    LeaveGroupResponse,
    MetadataBroker,
    MetadataRequest,
    MetadataResponse,
    NodeEndpoint,
    ProducePartitionResponse,
    ProduceRequest,
    ProduceResponse,
    ProduceTopicResponse,
    Response,
)
from protocol.errors import (
    CoordinatorLoadInProgressError,
    CoordinatorNotAvailableError,
    MalformedFrameError,
    MalformedMessageError,
    MismatchedEndpointTypeError,
    NotLeaderOrFollowerError,
    UnsupportedEndpointTypeError,
    UnsupportedRequestError,
)
from protocol.framing import FileRegion
from protocol.kafka.codec import (
    INT32,
    NULLABLE_STRING,
    STRING,
    Array,
    Field,
    NullableStruct,
    Reader,
    Struct,
    Writer,
    read_message,
    write_message,
)
from protocol.kafka.messages import KAFKA_APIS
from protocol.kafka.wire import (
    KafkaHeader,
    api_versions_response,
    decode_request,
    encode_error_response,
    encode_response,
)
from protocol.records.varints import uvarint
from tests import kafka_messages
from tests.unit.test_kafka_specs import NOT_IN_KAFKA_PYTHON

_uvarint = uvarint  # Kafka's unsigned varint (compact lengths, tags), as records use it


def _compact(s: str) -> bytes:
    data = s.encode()
    return _uvarint(len(data) + 1) + data


def _header(key: int, version: int, correlation_id: int, client_id: str, flexible: bool) -> bytes:
    cid = client_id.encode()
    head = struct.pack(">hhih", key, version, correlation_id, len(cid)) + cid
    return head + (b"\x00" if flexible else b"")


def _join(parts: list) -> bytes:
    return b"".join(bytes(p) for p in parts)


def test_api_versions_v3_from_a_kafka_client_is_answered_with_every_api() -> None:
    # what librdkafka and Kafka's Java client send first: v3, flexible, header v2
    payload = (
        _header(18, 3, 7, "rdkafka", flexible=True)
        + _compact("librdkafka")
        + _compact("2.3.0")
        + b"\x00"
    )
    header, _api, _request = decode_request(memoryview(payload))
    assert (header.api_key, header.kafka_version, header.correlation_id) == (18, 3, 7)
    assert header.client_id == "rdkafka"
    frame = _join(api_versions_response(header))
    (length, correlation_id) = struct.unpack_from(">Ii", frame)
    assert length == len(frame) - 4 and correlation_id == 7
    # ApiVersions' response header has no tagged fields, even at v3 (Kafka's rule)
    r = Reader(memoryview(frame)[8:])
    assert struct.unpack(">h", r.take(2))[0] == 0  # error_code
    count = r.uvarint() - 1
    keys = {}
    for _ in range(count):
        key, low, high = struct.unpack(">hhh", r.take(6))
        assert r.uvarint() == 0  # the entry's tagged fields
        keys[key] = (low, high)
    assert keys[ApiKey.PRODUCE] == (3, 11) and keys[ApiKey.FETCH] == (4, 16)
    assert set(keys) == set(KAFKA_APIS)


def test_api_versions_of_a_version_not_spoken_is_answered_in_v0_with_the_list() -> None:
    payload = _header(18, 42, 3, "future", flexible=False) + b"\x00\x00"
    with pytest.raises(UnsupportedRequestError) as caught:
        decode_request(memoryview(payload))
    frame = _join(api_versions_response(caught.value.header, error_code=35))
    body = memoryview(frame)[8:]
    error_code, count = struct.unpack_from(">hi", body)
    assert error_code == 35 and count == len(KAFKA_APIS)  # v0: int32 array length


def test_other_unknown_versions_and_keys_are_refused_by_name() -> None:
    for key, version in ((0, 2), (1, 17), (57, 0)):
        with pytest.raises(UnsupportedRequestError, match="not served on a Kafka-protocol"):
            decode_request(memoryview(_header(key, version, 1, "c", flexible=False) + b"x"))


def _produce_v9(records: bytes) -> bytes:
    return (
        _header(0, 9, 11, "p", flexible=True)
        + b"\x00"  # transactional_id: null (compact: length + 1 = 0)
        + struct.pack(">hi", -1, 30_000)
        + _uvarint(2)  # one topic
        + _compact("orders")
        + _uvarint(2)  # one partition
        + struct.pack(">i", 4)
        + _uvarint(len(records) + 1)
        + records
        + b"\x00"  # partition tagged fields
        + b"\x00"  # topic tagged fields
        + b"\x00"  # body tagged fields
    )


def test_a_flexible_produce_decodes_into_headwaters_request_without_copying_records() -> None:
    records = bytes(range(70))
    payload = memoryview(_produce_v9(records))
    header, _api, request = decode_request(payload)
    assert isinstance(request, ProduceRequest)
    assert (request.acks, request.timeout_ms, request.transactional_id) == (-1, 30_000, None)
    (topic,) = request.topics
    (partition,) = topic.partitions
    assert (topic.name, partition.index) == ("orders", 4)
    assert isinstance(partition.records, memoryview) and bytes(partition.records) == records
    assert partition.records.obj is payload.obj  # a view of the frame, not a copy
    assert header.request is request


def test_a_produce_error_is_answered_in_every_partition_it_named() -> None:
    header, _api, _request = decode_request(memoryview(_produce_v9(b"r" * 10)))
    frame = _join(encode_error_response(header, NotLeaderOrFollowerError("moved")))
    r = Reader(memoryview(frame)[4:])
    assert struct.unpack(">i", r.take(4))[0] == 11
    assert r.uvarint() == 0  # response header v1: tagged fields
    assert r.uvarint() == 2  # one topic
    assert str(r.take(r.uvarint() - 1), "utf-8") == "orders"
    assert r.uvarint() == 2
    index, code = struct.unpack(">ih", r.take(6))
    assert (index, code) == (4, NotLeaderOrFollowerError.code)


def test_a_truncated_or_padded_body_is_malformed_and_names_where() -> None:
    whole = _produce_v9(b"r" * 10)
    with pytest.raises(MalformedMessageError, match="Produce v9"):
        decode_request(memoryview(whole[:-5]))
    # what follows the last field is left, as Kafka's brokers leave it (librdkafka's
    # Metadata v12 for every topic carries three bytes more)
    assert isinstance(decode_request(memoryview(whole + b"\x00"))[2], ProduceRequest)
    with pytest.raises(MalformedFrameError):
        decode_request(memoryview(b"\x00\x00\x00"))
    lying = bytearray(whole)
    lying[lying.index(b"orders") - 2] = 0x7F  # an array claiming far more items than bytes
    with pytest.raises(MalformedMessageError):
        decode_request(memoryview(bytes(lying)))


def test_fetch_v4_has_no_session_and_v12_reads_the_last_fetched_epoch() -> None:
    v4 = (
        _header(1, 4, 2, "c", flexible=False)
        + struct.pack(">iiiib", -1, 500, 1, 1 << 20, 1)
        + struct.pack(">i", 1)
        + struct.pack(">h", 1)
        + b"t"
        + struct.pack(">i", 1)
        + struct.pack(">iqi", 0, 42, 65536)
    )
    _h, _a, request = decode_request(memoryview(v4))
    assert isinstance(request, FetchRequest)
    assert (request.session_id, request.session_epoch, request.isolation_level) == (0, -1, 1)
    assert request.topics[0].partitions[0].fetch_offset == 42
    v12 = (
        _header(1, 12, 2, "c", flexible=True)
        + struct.pack(">iiiibii", -1, 500, 1, 1 << 20, 0, 0, 0)
        + _uvarint(2)
        + _compact("t")
        + _uvarint(2)
        + struct.pack(">iiqiqi", 3, 5, 42, 4, -1, 65536)
        + b"\x00\x00"
        + _uvarint(1)  # no forgotten topics
        + _compact("rack-a")
        # tagged: cluster_id (tag 0), which Headwater does not keep
        + b"\x01\x00"
        + _uvarint(len(_compact("x")))
        + _compact("x")
    )
    _h, _a, request = decode_request(memoryview(v12))
    partition = request.topics[0].partitions[0]
    assert (partition.partition, partition.current_leader_epoch) == (3, 5)
    assert (partition.fetch_offset, partition.last_fetched_epoch) == (42, 4)
    assert request.rack_id == "rack-a"


def test_fetch_records_from_a_file_stay_a_file_region_and_no_data_is_empty_not_null() -> None:
    header = KafkaHeader(1, 4, 9, 12, "c", None)
    region = FileRegion(5, 100, 4096)
    response = FetchResponse(
        topics=[
            FetchTopicResponse(
                topic="t",
                partitions=[
                    FetchPartitionData(partition_index=0, high_watermark=10, records=region),
                    FetchPartitionData(
                        partition_index=1, diverging_epoch=DivergingEpoch(epoch=3, end_offset=7)
                    ),
                ],
            )
        ]
    )
    parts = encode_response(header, response)
    assert region in parts  # sendfile'd, never read into Python
    before = parts[: parts.index(region)]
    head = b"".join(bytes(p) for p in before)
    assert head.endswith(_uvarint(4096 + 1))  # compact length of the records
    (length,) = struct.unpack_from(">I", head)
    assert length == sum(len(p) for p in parts) - 4
    tail = bytes(parts[-1])
    # partition 1: no aborted transactions (null), no preferred replica, empty (not null)
    # records, then its tagged fields: the diverging epoch as tag 0 (a struct of 13 bytes,
    # its own empty tags included); then the topic's and the body's empty tags
    diverging = struct.pack(">iq", 3, 7) + b"\x00"
    expected = b"\x00" + struct.pack(">i", -1) + b"\x01" + b"\x01\x00" + _uvarint(13) + diverging
    assert tail.endswith(expected + b"\x00\x00")


def test_metadata_asks_by_topic_id_or_name_and_neither_is_malformed() -> None:
    def v12(*topics: tuple[bytes, bytes]) -> bytes:
        return (
            _header(3, 12, 1, "c", flexible=True)
            + _uvarint(len(topics) + 1)
            + b"".join(topic_id + name + b"\x00" for topic_id, name in topics)
            + b"\x01\x00\x00"  # allow auto creation, include topic operations, tagged
        )

    by_id = bytes(range(1, 17))
    _h, _a, request = decode_request(
        memoryview(v12((by_id, b"\x00"), (bytes(16), _uvarint(3) + b"ab")))  # null; "ab"
    )
    assert isinstance(request, MetadataRequest)
    assert request.topics == ["ab"] and request.topic_ids == [by_id]
    with pytest.raises(MalformedMessageError, match="a name or a topic id"):
        decode_request(memoryview(v12((bytes(16), b"\x00"))))
    v1_all = _header(3, 1, 1, "c", flexible=False) + struct.pack(">i", -1)
    _h, _a, request = decode_request(memoryview(v1_all))
    assert isinstance(request, MetadataRequest)
    assert request.topics is None and request.allow_auto_topic_creation


def test_leave_group_v3_takes_its_members_and_answers_for_each() -> None:
    v3 = (
        _header(13, 3, 4, "c", flexible=False)
        + struct.pack(">h", 1)
        + b"g"
        + struct.pack(">i", 1)
        + struct.pack(">h", 2)
        + b"m1"
        + struct.pack(">h", -1)
    )
    header, _a, request = decode_request(memoryview(v3))
    assert request == LeaveGroupRequest(
        group_id="g", members=[LeaveGroupMember(member_id="m1", group_instance_id=None)]
    )
    frame = _join(encode_response(header, Response(error_code=25)))
    body = memoryview(frame)[8:]
    throttle, code, count = struct.unpack_from(">ihi", body)
    assert (throttle, code, count) == (0, 25, 1)


def test_struct_codec_round_trips_and_skips_unknown_tagged_fields() -> None:
    spec = Struct(
        [
            Field("a", INT32),
            Field("b", STRING, (1, None)),
            Field("c", Array(NULLABLE_STRING)),
            Field("d", INT32, (2, None), tag=5, default=-1),
        ]
    )
    value = {"a": 1, "b": "x", "c": ["y", None], "d": 9}
    for version, flexible in ((0, False), (1, False), (2, True)):
        body = memoryview(_join(write_message(spec, value, version, flexible)))
        back = read_message(spec, body, version, flexible)
        assert back["a"] == 1 and back["c"] == ["y", None]
        assert back.get("b") == ("x" if version >= 1 else None)
    w = Writer()
    w.buf += struct.pack(">i", 1) + _compact("x") + _uvarint(1)  # a, b, c: empty
    w.buf += _uvarint(1) + _uvarint(77) + _uvarint(3) + b"abc"  # a tag from the future
    assert read_message(spec, memoryview(bytes(w.buf)), 2, True)["a"] == 1


@pytest.mark.parametrize(
    ("overrides", "why"),
    [
        (["kafka.protocol.listeners=KAFKA"], "names KAFKA, which is not in listeners"),
        (
            ["kafka.protocol.listeners=PLAINTEXT"],
            "the inter-broker listener: brokers speak Headwater's protocol",
        ),
    ],
)
def test_kafka_protocol_listeners_that_cannot_work_stop_the_start(
    overrides: list[str], why: str
) -> None:
    with pytest.raises(ConfigError, match=why):
        load_config(env={}, overrides=["broker.id=1", "zookeeper.connect=z:1", *overrides])
    fine = load_config(
        env={},
        overrides=[
            "broker.id=1",
            "zookeeper.connect=z:1",
            "listeners=PLAINTEXT://127.0.0.1:0,KAFKA://127.0.0.1:0",
            "listener.security.protocol.map=PLAINTEXT:PLAINTEXT,KAFKA:PLAINTEXT",
            "kafka.protocol.listeners=KAFKA",
        ],
    )
    assert fine.kafka_protocol_listeners == {"KAFKA"}


def test_an_offset_fetch_v1_refusal_is_in_every_partition_kafka_python_reads_it() -> None:
    # kafka-python's own encoder and decoder (built from Kafka's JSON specs) on both ends
    request = KpOffsetFetchRequest[1](
        group_id="g",
        topics=[KpOffsetFetchRequest.OffsetFetchRequestTopic(name="t", partition_indexes=[0, 1])],
    )
    request.with_header(correlation_id=3, client_id="kp")
    header, _api, _req = decode_request(memoryview(request.encode(version=1, header=True)))
    frame = _join(encode_error_response(header, CoordinatorLoadInProgressError("loading")))
    response = KpOffsetFetchResponse.decode(frame[4:], version=1, header=True)
    codes = [p.error_code for t in response.topics for p in t.partitions]
    assert codes == [CoordinatorLoadInProgressError.code] * 2


def _sample(t: Any) -> Any:
    """A value of Kafka type ``t`` with every field set (not its default)."""
    if isinstance(t, Array):
        return [_sample(t.item), _sample(t.item)]
    if isinstance(t, Struct):
        return {f.attr or f.name: _sample(f.type) for f in t.fields}
    if isinstance(t, NullableStruct):
        return _sample(t.struct)
    return {
        "bool": True,
        "int8": 1,
        "int16": 300,
        "int32": 70_000,
        "int64": 2**40,
        "float64": 1.5,
        "uuid": bytes(range(16)),
        "string": "sé",
        "nullable string": "sé",
        "bytes": b"\x01\x02",
        "nullable bytes": b"\x01\x02",
        "records": b"\x01\x02",
    }[t.name]


def _kafka_python_class(name: str) -> Any:
    """kafka-python's message class ``name``, or (the delegation tokens' messages, whose
    specs it does not ship) the one its generator made of tests/kafka_messages' spec."""
    for module in pkgutil.walk_packages(kafka.protocol.__path__, "kafka.protocol."):
        found = getattr(importlib.import_module(module.name), name, None)
        if found is not None and hasattr(found, "_VERSIONS"):
            return found
    found = getattr(kafka_messages, name, None)
    if found is not None:
        return found
    raise LookupError(name)


_EVERY_VERSION = pytest.mark.parametrize(
    ("api", "version"),
    [
        (api, version)
        for api in KAFKA_APIS.values()
        if api.key != ApiKey.API_VERSIONS and api.name not in NOT_IN_KAFKA_PYTHON
        for version in range(api.min_version, api.max_version + 1)
    ],
    ids=lambda x: x.name if hasattr(x, "key") else f"v{x}",
)
"""Every API this listener serves (but ApiVersions, answered by the listener), at every
version."""


@_EVERY_VERSION
def test_every_answer_at_every_version_decodes_in_an_independent_implementation(
    api: Any, version: int
) -> None:
    # kafka-python 3's message classes are generated from Kafka's own JSON specs: what
    # they decode field for field is what Kafka's clients read
    header = KafkaHeader(api.key, 0, 77, version, "c")
    response = _sample(api.response)
    if api.key == ApiKey.LEAVE_GROUP:  # its answer is built from the request (v3+: members)
        header = header._replace(request=LeaveGroupRequest(group_id="g", member_id="m"))
        response = LeaveGroupResponse(error_code=25)
    frame = _join(encode_response(header, response))
    decoded = _kafka_python_class(f"{api.name}Response").decode(
        frame[4:], version=version, header=True
    )
    assert decoded.to_dict() is not None


@pytest.mark.parametrize("version", [0, 1, 2, 3])
def test_api_versions_answers_decode_in_kafka_python(version: int) -> None:
    frame = _join(api_versions_response(KafkaHeader(18, 0, 9, version, "c")))
    decoded = KpApiVersionsResponse.decode(frame[4:], version=version, header=True)
    assert {k.api_key for k in decoded.api_keys} == set(KAFKA_APIS)


@_EVERY_VERSION
def test_every_refusal_at_every_version_decodes_and_says_the_code_everywhere(
    api: Any, version: int
) -> None:
    # a request with every field set, as this listener decodes it, refused whole: the
    # answer (Kafka's getErrorResponse shape) must decode in kafka-python and carry the
    # code wherever its schema has one
    flexible = api.flexible(version)
    sample = _sample(api.request)
    body = memoryview(_join(write_message(api.request, sample, version, flexible)))
    request = read_message(api.request, body, version, flexible)
    if api.finish is not None:  # as decode_request: what the handlers and refusals get
        request = api.finish(request, version, "c")
    header = KafkaHeader(api.key, 0, 5, version, "c", request)
    frame = _join(encode_error_response(header, CoordinatorLoadInProgressError("loading")))
    decoded = _kafka_python_class(f"{api.name}Response").decode(
        frame[4:], version=version, header=True
    )
    codes = _error_codes(decoded.to_dict())
    if (api.name, version) in _NO_ROOM_FOR_AN_ERROR:
        assert not codes
        return
    assert codes and set(codes) == {CoordinatorLoadInProgressError.code}, decoded


_NO_ROOM_FOR_AN_ERROR = {("DescribeLogDirs", 1), ("DescribeLogDirs", 2)}
"""Answers before the request-level error code existed, with no item to carry one (Kafka's
answer to them loses the error the same way)."""


def _error_codes(value: Any) -> list[int]:
    if isinstance(value, dict):
        found = [v for k, v in value.items() if k.endswith("error_code") and v]
        return found + [c for v in value.values() for c in _error_codes(v)]
    if isinstance(value, list):
        return [c for v in value for c in _error_codes(v)]
    return []


@pytest.mark.parametrize("endpoint_type", [1, 2])
def test_describe_cluster_is_metadata_for_no_topic_and_a_broker_answers_for_brokers(
    endpoint_type: int,
) -> None:
    # KIP-700, as librdkafka's and Kafka's Java admin clients send it (v1, flexible)
    v1 = _header(60, 1, 4, "c", flexible=True) + b"\x00" + bytes([endpoint_type]) + b"\x00"
    header, _api, request = decode_request(memoryview(v1))
    assert isinstance(request, MetadataRequest)
    assert request.topics == [] and not request.allow_auto_topic_creation
    served = MetadataResponse(
        brokers=[MetadataBroker(node_id=3, host="h", port=9093, rack="r1")],
        cluster_id="cid",
        controller_id=3,
    )
    answer = KpDescribeClusterResponse.decode(
        _join(encode_response(header, served))[4:], version=1, header=True
    )
    if endpoint_type == 2:  # a KRaft controller's: not this broker's to answer
        assert answer.error_code == MismatchedEndpointTypeError.code and not answer.brokers
        return
    assert (answer.error_code, answer.cluster_id, answer.controller_id) == (0, "cid", 3)
    assert [(b.broker_id, b.host, b.port, b.rack) for b in answer.brokers] == [(3, "h", 9093, "r1")]


def test_delete_topics_v6_naming_a_topic_by_name_and_id_deletes_by_the_id() -> None:
    # Kafka refuses it (INVALID_REQUEST); the name must not win here, or a topic made again
    # under it would be deleted, which the id is there to prevent (found in review)
    asked = KpDeleteTopics[6](
        topics=[KpDeleteTopics.DeleteTopicState(name="orders", topic_id=uuid.UUID(int=7))],
        timeout_ms=30_000,
    )
    asked.with_header(correlation_id=9, client_id="c")
    _, _api, request = decode_request(memoryview(bytes(asked.encode(version=6, header=True))))
    assert request.topic_names == [] and request.topic_ids == [(7).to_bytes(16, "big")]


@pytest.mark.parametrize("endpoint_type", [0, 3])
def test_describe_cluster_of_an_unknown_endpoint_type_is_unsupported(endpoint_type: int) -> None:
    # Kafka's: neither brokers (1) nor controllers (2) is UNSUPPORTED_ENDPOINT_TYPE
    v1 = _header(60, 1, 4, "c", flexible=True) + b"\x00" + bytes([endpoint_type]) + b"\x00"
    header, _api, _request = decode_request(memoryview(v1))
    served = MetadataResponse(brokers=[], cluster_id="cid", controller_id=3)
    answer = KpDescribeClusterResponse.decode(
        _join(encode_response(header, served))[4:], version=1, header=True
    )
    assert answer.error_code == UnsupportedEndpointTypeError.code


@pytest.mark.parametrize(("key", "version"), [(ApiKey.FETCH, 16), (ApiKey.PRODUCE, 10)])
def test_the_leader_named_with_a_refusal_reads_as_kafkas_clients_read_it(
    key: ApiKey, version: int
) -> None:
    # KIP-951's tagged fields: CurrentLeader in the partition, NodeEndpoints in the answer
    leader = LeaderIdAndEpoch(leader_id=2, leader_epoch=7)
    endpoints = [NodeEndpoint(node_id=2, host="kafka-2", port=29092, rack="b")]
    if key == ApiKey.FETCH:
        response: Any = FetchResponse(
            topics=[
                FetchTopicResponse(
                    topic="t",
                    topic_id=bytes(range(16)),
                    partitions=[
                        FetchPartitionData(partition_index=0, error_code=6, current_leader=leader)
                    ],
                )
            ],
            node_endpoints=endpoints,
        )
    else:
        response = ProduceResponse(
            topics=[
                ProduceTopicResponse(
                    name="t",
                    partitions=[
                        ProducePartitionResponse(index=0, error_code=6, current_leader=leader)
                    ],
                )
            ],
            node_endpoints=endpoints,
        )
    frame = _join(encode_response(KafkaHeader(key, 0, 5, version, "c"), response))
    api = KAFKA_APIS[key]
    decoded = _kafka_python_class(f"{api.name}Response").decode(
        frame[4:], version=version, header=True
    )
    topic = decoded.responses[0]
    partition = (topic.partitions if key == ApiKey.FETCH else topic.partition_responses)[0]
    assert (partition.current_leader.leader_id, partition.current_leader.leader_epoch) == (2, 7)
    [node] = decoded.node_endpoints
    assert (node.node_id, node.host, node.port, node.rack) == (2, "kafka-2", 29092, "b")


def test_a_join_and_a_leave_carry_the_clients_reason() -> None:
    # KIP-800 (JoinGroup v8, LeaveGroup v5): what the coordinator logs
    join_class = _kafka_python_class("JoinGroupRequest")
    join = join_class[8](
        group_id="g",
        session_timeout_ms=10_000,
        rebalance_timeout_ms=30_000,
        member_id="",
        group_instance_id=None,
        protocol_type="consumer",
        protocols=[],
        reason="rebalance requested",
    )
    join.with_header(correlation_id=1, client_id="c")
    _header, _api, joined = decode_request(memoryview(bytes(join.encode(version=8, header=True))))
    assert joined.reason == "rebalance requested" and not joined.supports_skip_assignment
    nine = join_class[9](
        **{k: getattr(join, k) for k in ("group_id", "session_timeout_ms")},
        rebalance_timeout_ms=30_000,
        member_id="",
        group_instance_id=None,
        protocol_type="consumer",
        protocols=[],
        reason=None,
    )
    nine.with_header(correlation_id=3, client_id="c")
    _header, _api, joined = decode_request(memoryview(bytes(nine.encode(version=9, header=True))))
    assert joined.supports_skip_assignment  # it reads SkipAssignment (KIP-814)
    leave_class = _kafka_python_class("LeaveGroupRequest")
    leave = leave_class[5](
        group_id="g",
        members=[leave_class.MemberIdentity(member_id="m", group_instance_id=None, reason="bye")],
    )
    leave.with_header(correlation_id=2, client_id="c")
    _header, _api, left = decode_request(memoryview(bytes(leave.encode(version=5, header=True))))
    assert [(m.member_id, m.reason) for m in left.members] == [("m", "bye")]


@pytest.mark.parametrize(("version", "missing_is_an_error"), [(5, False), (6, True)])
def test_describe_groups_v6_asks_for_missing_groups_as_errors(
    version: int, missing_is_an_error: bool
) -> None:
    asked = _kafka_python_class("DescribeGroupsRequest")[version](
        groups=["g"], include_authorized_operations=False
    )
    asked.with_header(correlation_id=1, client_id="c")
    frame = memoryview(bytes(asked.encode(version=version, header=True)))
    assert decode_request(frame)[2].missing_is_an_error is missing_is_an_error


async def test_find_coordinator_v4_answers_each_key_on_its_own() -> None:
    # KIP-699: several groups' coordinators in one request, one key's error its own
    from broker.app import _each_key

    async def find(request: FindCoordinatorRequest) -> FindCoordinatorResponse:
        if request.key == "elsewhere":
            raise CoordinatorNotAvailableError("not loaded yet")
        return FindCoordinatorResponse(node_id=2, host="b2", port=9092)

    asked = _kafka_python_class("FindCoordinatorRequest")[4](
        key_type=0, coordinator_keys=["g1", "elsewhere"]
    )
    asked.with_header(correlation_id=9, client_id="c")
    header, _api, request = decode_request(memoryview(bytes(asked.encode(version=4, header=True))))
    answer = await _each_key(find)(header, request)
    frame = _join(encode_response(header, answer))
    decoded = _kafka_python_class("FindCoordinatorResponse").decode(
        frame[4:], version=4, header=True
    )
    assert [(c.key, c.node_id, c.host, c.port, c.error_code) for c in decoded.coordinators] == [
        ("g1", 2, "b2", 9092, 0),
        ("elsewhere", -1, "", -1, CoordinatorNotAvailableError.code),
    ]


@pytest.mark.parametrize("version", [1, 2, 3])
def test_a_find_coordinator_v1_to_3_refusal_keeps_its_message(version: int) -> None:
    # found in review: v4's per-key refusal had dropped v1-3's top-level message
    asked = _kafka_python_class("FindCoordinatorRequest")[version](key="g", key_type=0)
    asked.with_header(correlation_id=3, client_id="c")
    header, _api, _request = decode_request(
        memoryview(bytes(asked.encode(version=version, header=True)))
    )
    error = CoordinatorNotAvailableError("__consumer_offsets is being created; retry shortly")
    frame = _join(encode_error_response(header, error))
    decoded = _kafka_python_class("FindCoordinatorResponse").decode(
        frame[4:], version=version, header=True
    )
    assert (decoded.error_code, decoded.error_message) == (
        CoordinatorNotAvailableError.code,
        "__consumer_offsets is being created; retry shortly",
    )
