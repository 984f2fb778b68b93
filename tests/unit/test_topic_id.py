"""Topic ids (KIP-516): Kafka's text form, fresh ids, and the assignment znode's version 3."""

import json
import uuid
from typing import Any

import pytest
from kafka.protocol.consumer import FetchRequest as KpFetch
from kafka.protocol.consumer import FetchResponse as KpFetchResponse

from broker.app import _give_ids, _name_topics
from broker.metadata import MetadataCache
from broker.zk import CorruptZnode, TopicAssignment
from protocol.apis import (
    UPDATE_METADATA_FULL,
    UPDATE_METADATA_INCREMENTAL,
    ApiKey,
    DeletableTopicResult,
    DeleteTopicsResponse,
    FetchPartitionData,
    FetchResponse,
    FetchTopicResponse,
    MetadataResponse,
    UpdateMetadataPartitionState,
    UpdateMetadataRequest,
)
from protocol.errors import (
    UnknownTopicIdError,
    UnsupportedVersionError,
)
from protocol.kafka.wire import decode_request, encode_response
from protocol.topic_id import ZERO_TOPIC_ID, format_topic_id, new_topic_id, parse_topic_id
from tests.unit.test_admin_groups import _admin


def test_the_text_form_is_kafkas() -> None:
    # Kafka's Uuid.toString of these two longs (Uuid(0x0123456789abcdefL, 0x0fedcba987654321L))
    raw = bytes.fromhex("0123456789abcdef0fedcba987654321")
    assert format_topic_id(raw) == "ASNFZ4mrze8P7cuph2VDIQ"
    assert parse_topic_id("ASNFZ4mrze8P7cuph2VDIQ") == raw
    assert format_topic_id(ZERO_TOPIC_ID) == "AAAAAAAAAAAAAAAAAAAAAA"


@pytest.mark.parametrize(
    "text",
    ["", "short", "ASNFZ4mrze8P7cuph2VDIQ=", "ASNFZ4mrze8P7cuph2VD!Q", "ASNFZ4mrze8P7cuph2VDIR"],
)
def test_a_bad_text_form_is_refused_saying_what_is_expected(text: str) -> None:
    with pytest.raises(ValueError, match="URL-safe base64"):
        parse_topic_id(text)


def test_fresh_ids_are_random_never_reserved_and_never_read_as_an_option() -> None:
    ids = {new_topic_id() for _ in range(2000)}
    assert len(ids) == 2000
    for topic_id in ids:
        assert len(topic_id) == 16 and topic_id != ZERO_TOPIC_ID
        assert not format_topic_id(topic_id).startswith("-")
        assert topic_id[6] >> 4 == 4  # a version-4 UUID, as Kafka's Uuid.randomUuid


def test_the_znode_keeps_the_id_and_reads_kafkas_version_3_and_older() -> None:
    # as Kafka 2.8+ writes /brokers/topics/<t>
    kafkas = json.dumps(
        {
            "partitions": {"0": [1, 2]},
            "topic_id": "ASNFZ4mrze8P7cuph2VDIQ",
            "adding_replicas": {},
            "removing_replicas": {},
            "version": 3,
        }
    ).encode()
    read = TopicAssignment.from_json("t", kafkas)
    assert read.topic_id == bytes.fromhex("0123456789abcdef0fedcba987654321")
    assert TopicAssignment.from_json("t", read.to_json()) == read
    assert json.loads(read.to_json())["version"] == 3
    older = json.dumps({"version": 2, "partitions": {"0": [1]}}).encode()
    assert TopicAssignment.from_json("t", older).topic_id == ZERO_TOPIC_ID
    # no id: written as version 2, so a build without ids reads nothing it does not know
    assert json.loads(TopicAssignment("t", {0: [1]}).to_json()) == {
        "version": 2,
        "partitions": {"0": [1]},
        "adding_replicas": {},
        "removing_replicas": {},
    }
    bad = json.dumps({"version": 3, "partitions": {"0": [1]}, "topic_id": "nope"}).encode()
    with pytest.raises(CorruptZnode, match="nope"):
        TopicAssignment.from_json("t", bad)


async def test_describing_by_id_where_the_brokers_know_no_ids_says_so() -> None:
    seen: list[Any] = []

    def older_broker(_node: int | None, api_key: ApiKey, request: Any) -> Any:
        seen.append(request)  # as decoded by a broker of v0: the ids are not there
        return MetadataResponse(topics=[])

    admin = _admin(older_broker)
    with pytest.raises(UnsupportedVersionError, match="do not know topics by id"):
        await admin.describe_topics(topic_ids=["ASNFZ4mrze8P7cuph2VDIQ"])
    assert seen[0].topic_ids == [] and seen[0].topics == []
    with pytest.raises(ValueError, match="URL-safe base64"):
        await admin.describe_topics(topic_ids=["orders"])
    with pytest.raises(ValueError, match="not both"):
        await admin.describe_topics(["orders"], topic_ids=["ASNFZ4mrze8P7cuph2VDIQ"])


async def test_deleting_by_id_where_the_brokers_know_no_ids_says_so() -> None:
    seen: list[Any] = []

    def older_broker(_node: int | None, api_key: ApiKey, request: Any) -> Any:
        seen.append(request)  # DeleteTopics v0: no topic_ids, nothing to delete
        return DeleteTopicsResponse(responses=[])

    admin = _admin(older_broker)
    with pytest.raises(UnsupportedVersionError, match="do not know topics by id"):
        await admin.delete_topics(topic_ids=["ASNFZ4mrze8P7cuph2VDIQ"])
    assert seen[0].topic_ids == [] and seen[0].topic_names == []
    with pytest.raises(ValueError, match="one of them"):
        await admin.delete_topics(["t"], topic_ids=["ASNFZ4mrze8P7cuph2VDIQ"])


async def test_deleting_the_same_id_twice_is_not_taken_for_an_older_broker() -> None:
    topic_id = "ASNFZ4mrze8P7cuph2VDIQ"  # (found in review)
    asked: list[Any] = []

    async def to_controller(api_key: ApiKey, request: Any) -> Any:  # a broker of this build
        asked.append(request)
        return DeleteTopicsResponse(
            responses=[DeletableTopicResult(name="orders", topic_id=i) for i in request.topic_ids]
        )

    admin = _admin(lambda *_: None)
    admin._to_controller = to_controller  # type: ignore[method-assign]
    await admin.delete_topics(topic_ids=[topic_id, topic_id])  # no error: it is gone
    assert asked[0].topic_ids == [parse_topic_id(topic_id)]  # asked once


def test_fetch_v13_names_topics_by_id_and_answers_with_the_ids() -> None:
    # Kafka's Fetch v13+ (librdkafka, Kafka's Java consumer): topics by id alone
    known, gone = bytes(range(1, 17)), bytes(range(2, 18))
    cache = MetadataCache()
    full = UpdateMetadataRequest(
        controller_id=1,
        controller_epoch=1,
        type=UPDATE_METADATA_FULL,
        partition_states=[
            UpdateMetadataPartitionState(
                topic_name="orders",
                partition_index=0,
                controller_epoch=1,
                leader=1,
                leader_epoch=0,
                isr=[1],
                replicas=[1],
            )
        ],
        topic_ids={"orders": known},
    )
    cache.update(full)
    partition = KpFetch.FetchTopic.FetchPartition(
        partition=0, fetch_offset=5, partition_max_bytes=1 << 20
    )
    asked = KpFetch[13](
        max_wait_ms=0,
        min_bytes=1,
        session_id=0,
        session_epoch=0,  # asks for a session
        topics=[
            KpFetch.FetchTopic(topic_id=uuid.UUID(bytes=i), partitions=[partition])
            for i in (known, gone)
        ],
        forgotten_topics_data=[
            KpFetch.ForgottenTopic(topic_id=uuid.UUID(bytes=known), partitions=[1])
        ],
    )
    asked.with_header(correlation_id=3, client_id="c")
    header, _api, request = decode_request(memoryview(bytes(asked.encode(version=13, header=True))))
    assert [t.topic_id for t in request.topics] == [known, gone]
    ids = _name_topics(request, cache)
    assert request.topics[0].topic == "orders" and request.topics[1].topic != ""
    assert request.forgotten_topics_data[0].topic == "orders"
    assert request.session_epoch == 0  # the session asked for (held by these names)
    # as the replica manager answers: the known topic's records, the other unknown
    answer = FetchResponse(
        topics=[
            FetchTopicResponse(
                topic=t.topic,
                partitions=[
                    FetchPartitionData(
                        partition_index=0,
                        error_code=0 if t.topic == "orders" else UnknownTopicIdError.code,
                    )
                ],
            )
            for t in request.topics
        ]
    )
    cache.update(  # "orders" deleted before the answer: it still carries the id asked by
        UpdateMetadataRequest(
            controller_id=1,
            controller_epoch=1,
            type=UPDATE_METADATA_INCREMENTAL,
            deleted_topics=["orders"],
        )
    )
    _give_ids(answer, ids, cache)
    decoded = KpFetchResponse.decode(
        b"".join(bytes(p) for p in encode_response(header, answer))[4:], version=13, header=True
    )
    assert [(t.topic_id.bytes, t.partitions[0].error_code) for t in decoded.responses] == [
        (known, 0),
        (gone, UnknownTopicIdError.code),
    ]
