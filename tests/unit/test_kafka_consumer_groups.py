"""ConsumerGroupHeartbeat (API 68) and ConsumerGroupDescribe (API 69), KIP-848's, on a
Kafka-protocol listener, byte for byte against Kafka's message layouts (their JSON
specs: v0-1, flexible from v0): kafka-python ships no spec of it, so the requests here are written,
and the answers read, by hand, independently of protocol/kafka's codec."""

from __future__ import annotations

import struct

import pytest

from protocol.apis import (
    ApiKey,
    ConsumerGroupAssignment,
    ConsumerGroupDescribed,
    ConsumerGroupDescribedMember,
    ConsumerGroupDescribeResponse,
    ConsumerGroupHeartbeatResponse,
    ConsumerGroupTopicPartitions,
    DescribedAssignment,
    DescribedTopicPartitions,
)
from protocol.errors import CoordinatorLoadInProgressError
from protocol.kafka.wire import KafkaHeader, decode_request, encode_error_response, encode_response

T = bytes(range(16))


def _uvarint(n: int) -> bytes:
    out = bytearray()
    while True:
        byte, n = n & 0x7F, n >> 7
        out.append(byte | (0x80 if n else 0))
        if not n:
            return bytes(out)


def _cstr(text: str | None) -> bytes:
    if text is None:
        return b"\x00"
    data = text.encode()
    return _uvarint(len(data) + 1) + data


def _carray(items: list[bytes] | None) -> bytes:
    if items is None:
        return b"\x00"
    return _uvarint(len(items) + 1) + b"".join(items)


def _request(
    version: int, *, regex: str | None, owned: list[tuple[bytes, list[int]]] | None
) -> bytes:
    """A v0/v1 request as librdkafka writes one: header v2 (flexible), then the body."""
    header = struct.pack(">hhi", ApiKey.CONSUMER_GROUP_HEARTBEAT, version, 42)
    header += struct.pack(">h", 7) + b"rdkafka" + b"\x00"  # client id (int16 string), tags
    body = _cstr("orders-app") + _cstr("m-1") + struct.pack(">i", 0)
    body += _cstr("host-a") + _cstr(None)  # instance id, rack id
    body += struct.pack(">i", 300_000)
    body += _carray([_cstr("orders"), _cstr("payments")])
    if version >= 1:
        body += _cstr(regex)
    body += _cstr(None)  # server assignor
    topics = None
    if owned is not None:
        topics = [t + _carray([struct.pack(">i", p) for p in ps]) + b"\x00" for t, ps in owned]
    body += _carray(topics) + b"\x00"
    return header + body


@pytest.mark.parametrize("version", [0, 1])
def test_a_heartbeat_request_decodes_field_for_field(version: int) -> None:
    payload = _request(version, regex="^pay.*" if version else None, owned=[(T, [0, 2])])
    header, api, request = decode_request(memoryview(payload))
    assert (header.api_key, header.kafka_version, api.name) == (
        68,
        version,
        "ConsumerGroupHeartbeat",
    )
    assert (request.group_id, request.member_id, request.member_epoch) == ("orders-app", "m-1", 0)
    assert (request.instance_id, request.rack_id) == ("host-a", None)
    assert request.rebalance_timeout_ms == 300_000
    assert request.subscribed_topic_names == ["orders", "payments"]
    assert request.subscribed_topic_regex == ("^pay.*" if version else None)
    assert request.server_assignor is None
    assert request.topic_partitions == [ConsumerGroupTopicPartitions(topic_id=T, partitions=[0, 2])]
    assert request.client_id == "rdkafka"  # from the header (Kafka's)
    _, _, nothing_owned = decode_request(memoryview(_request(version, regex=None, owned=None)))
    assert nothing_owned.topic_partitions is None  # null: unchanged since the last one


def _read_response(frame: bytes) -> dict[str, object]:
    """Kafka's ConsumerGroupHeartbeatResponse v0/v1, after the length and header v1."""
    pos = 4 + 4  # length, correlation id
    assert frame[pos] == 0  # the header's tags
    pos += 1
    out: dict[str, object] = {}

    def take(fmt: str) -> int:
        nonlocal pos
        (value,) = struct.unpack_from(fmt, frame, pos)
        pos += struct.calcsize(fmt)
        return int(value)

    def uvarint() -> int:
        nonlocal pos
        shift = n = 0
        while True:
            byte = frame[pos]
            pos += 1
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return n

    def cstr() -> str | None:
        nonlocal pos
        n = uvarint()
        if n == 0:
            return None
        text = frame[pos : pos + n - 1].decode()
        pos += n - 1
        return text

    out["throttle_time_ms"] = take(">i")
    out["error_code"] = take(">h")
    out["error_message"] = cstr()
    out["member_id"] = cstr()
    out["member_epoch"] = take(">i")
    out["heartbeat_interval_ms"] = take(">i")
    if take(">b") < 0:
        out["assignment"] = None
    else:
        topics = []
        for _ in range(uvarint() - 1):
            topic_id = frame[pos : pos + 16]
            pos += 16
            partitions = [take(">i") for _ in range(uvarint() - 1)]
            assert uvarint() == 0  # the topic's tags
            topics.append((topic_id, partitions))
        assert uvarint() == 0  # the assignment's tags
        out["assignment"] = topics
    assert uvarint() == 0  # the body's tags
    assert pos == len(frame)
    return out


@pytest.mark.parametrize("version", [0, 1])
def test_a_heartbeat_answer_encodes_as_kafkas_with_and_without_an_assignment(version: int) -> None:
    header = KafkaHeader(ApiKey.CONSUMER_GROUP_HEARTBEAT, 0, 42, version, "c")
    given = ConsumerGroupHeartbeatResponse(
        member_id="m-1",
        member_epoch=3,
        heartbeat_interval_ms=5_000,
        assignment=ConsumerGroupAssignment(
            topic_partitions=[ConsumerGroupTopicPartitions(topic_id=T, partitions=[1, 4])]
        ),
    )
    frame = b"".join(bytes(p) for p in encode_response(header, given))
    assert _read_response(frame) == {
        "throttle_time_ms": 0,
        "error_code": 0,
        "error_message": None,
        "member_id": "m-1",
        "member_epoch": 3,
        "heartbeat_interval_ms": 5_000,
        "assignment": [(T, [1, 4])],
    }
    unchanged = ConsumerGroupHeartbeatResponse(member_id="m-1", member_epoch=3)
    frame = b"".join(bytes(p) for p in encode_response(header, unchanged))
    assert _read_response(frame)["assignment"] is None
    refused = encode_error_response(header, CoordinatorLoadInProgressError("loading"))
    answer = _read_response(b"".join(bytes(p) for p in refused))
    assert (answer["error_code"], answer["error_message"]) == (14, "loading")


def _describe_request(version: int) -> bytes:
    header = struct.pack(">hhi", ApiKey.CONSUMER_GROUP_DESCRIBE, version, 9)
    header += struct.pack(">h", 1) + b"c" + b"\x00"
    return header + _carray([_cstr("g1"), _cstr("g2")]) + b"\x01" + b"\x00"


def _read_described(frame: bytes, version: int) -> list[dict[str, object]]:
    """Kafka's ConsumerGroupDescribeResponse v0/v1, read by hand."""
    r = _Reader(frame[9:])  # length, correlation id, header tags
    assert r.take(">i") == 0  # throttle
    groups = []
    for _ in range(r.uvarint() - 1):
        group: dict[str, object] = {"error_code": r.take(">h"), "error_message": r.cstr()}
        group["group_id"], group["state"] = r.cstr(), r.cstr()
        group["epochs"] = (r.take(">i"), r.take(">i"))
        group["assignor"] = r.cstr()
        members = []
        for _ in range(r.uvarint() - 1):
            member: dict[str, object] = {"member_id": r.cstr(), "instance_id": r.cstr()}
            member["rack_id"], member["epoch"] = r.cstr(), r.take(">i")
            member["client"] = (r.cstr(), r.cstr())
            member["topics"] = [r.cstr() for _ in range(r.uvarint() - 1)]
            member["regex"] = r.cstr()
            member["assignment"], member["target"] = r.assignment(), r.assignment()
            if version >= 1:
                member["type"] = r.take(">b")
            assert r.uvarint() == 0
            members.append(member)
        group["members"] = members
        group["authorized_operations"] = r.take(">i")
        assert r.uvarint() == 0
        groups.append(group)
    assert r.uvarint() == 0 and r.pos == len(r.data)
    return groups


class _Reader:
    def __init__(self, data: bytes) -> None:
        self.data, self.pos = data, 0

    def take(self, fmt: str) -> int:
        (value,) = struct.unpack_from(fmt, self.data, self.pos)
        self.pos += struct.calcsize(fmt)
        return int(value)

    def uvarint(self) -> int:
        shift = n = 0
        while True:
            byte = self.data[self.pos]
            self.pos += 1
            n |= (byte & 0x7F) << shift
            shift += 7
            if not byte & 0x80:
                return n

    def cstr(self) -> str | None:
        n = self.uvarint()
        if n == 0:
            return None
        text = self.data[self.pos : self.pos + n - 1].decode()
        self.pos += n - 1
        return text

    def assignment(self) -> list[tuple[bytes, str | None, list[int]]]:
        topics = []
        for _ in range(self.uvarint() - 1):
            topic_id = self.data[self.pos : self.pos + 16]
            self.pos += 16
            name = self.cstr()
            partitions = [self.take(">i") for _ in range(self.uvarint() - 1)]
            assert self.uvarint() == 0
            topics.append((topic_id, name, partitions))
        assert self.uvarint() == 0
        return topics


@pytest.mark.parametrize("version", [0, 1])
def test_consumer_group_describe_as_kafkas(version: int) -> None:
    header, _, request = decode_request(memoryview(_describe_request(version)))
    assert (request.group_ids, request.include_authorized_operations) == (["g1", "g2"], True)
    member = ConsumerGroupDescribedMember(
        member_id="m",
        member_epoch=4,
        client_id="rdkafka",
        client_host="/127.0.0.1",
        subscribed_topic_names=["orders"],
        assignment=DescribedAssignment(
            topic_partitions=[
                DescribedTopicPartitions(topic_id=T, topic_name="orders", partitions=[0])
            ]
        ),
    )
    answer = ConsumerGroupDescribeResponse(
        groups=[
            ConsumerGroupDescribed(
                group_id="g1",
                group_state="Stable",
                group_epoch=4,
                assignment_epoch=4,
                assignor_name="uniform",
                members=[member],
            ),
            ConsumerGroupDescribed(group_id="g2", error_code=69, error_message="not one"),
        ]
    )
    frame = b"".join(bytes(p) for p in encode_response(header, answer))
    g1, g2 = _read_described(frame, version)
    assert (g1["state"], g1["epochs"], g1["assignor"]) == ("Stable", (4, 4), "uniform")
    (m,) = g1["members"]  # type: ignore[misc]
    assert m["assignment"] == [(T, "orders", [0])] and m["target"] == []
    assert m["topics"] == ["orders"] and m["client"] == ("rdkafka", "/127.0.0.1")
    assert m.get("type") == (1 if version >= 1 else None)
    assert (g2["error_code"], g2["error_message"], g2["members"]) == (69, "not one", [])
    refused = encode_error_response(
        header._replace(request=request), CoordinatorLoadInProgressError("x")
    )
    assert [
        g["error_code"] for g in _read_described(b"".join(bytes(p) for p in refused), version)
    ] == [14, 14]
