"""The Kafka-protocol listener's message specs against Kafka's own JSON message specs
(``clients/src/main/resources/common/message/*.json``, as kafka-python 3 ships them):
for every API and every version served, each struct's fields in order, their types and
nullability, the tagged fields, and where flexible versions start.

What is allowed to differ, on purpose:
- a request field Headwater reads as nullable where Kafka's is not (it reads more);
- a response field Headwater writes as non-nullable where Kafka's may be null (it never
  writes null), or as nullable with a non-null default (it never writes null either);
- tagged fields Headwater does not write or read (optional by definition: a request's
  are skipped, as Kafka's brokers skip tags they do not know);
- field names (not on the wire; Kafka renames fields across releases).
"""

from __future__ import annotations

import json
from importlib import resources
from typing import Any

import pytest

from protocol.kafka.codec import INT32, Array, Field, Struct
from protocol.kafka.messages import KAFKA_APIS
from protocol.kafka.spec import KafkaApi

_BELOW_KAFKA_4 = {"DescribeAcls", "CreateAcls", "DeleteAcls"}
"""Served from v0, which Kafka 4.0 dropped (KIP-896) and its specs no longer list:
librdkafka 2.x offers its ACL API only to a broker that has v0."""

NOT_IN_KAFKA_PYTHON = {"ConsumerGroupHeartbeat", "ConsumerGroupDescribe"}
"""APIs whose message specs kafka-python does not ship (KIP-848's): checked byte for byte
against Kafka's layout by tests/unit/test_kafka_consumer_groups.py instead."""

_PRIMITIVES = {"int8", "int16", "int32", "int64", "uint16", "bool", "uuid", "float64"}


def _spec(name: str) -> dict[str, Any]:
    """Kafka's spec of message ``name``: kafka-python's copy, or for the APIs it lacks,
    tests/kafka_messages' (the delegation tokens')."""
    shipped = resources.files("kafka.protocol.schemas") / "resources" / f"{name}.json"
    if not shipped.is_file():
        shipped = resources.files("tests.kafka_messages") / f"{name}.json"
    text = shipped.read_text()
    return json.loads(
        "\n".join(line for line in text.splitlines() if not line.strip().startswith("//"))
    )


def _range(text: str | None) -> tuple[int, int]:
    if text is None or text == "none":
        return (1 << 30, -1)
    if text.endswith("+"):
        return (int(text[:-1]), 1 << 30)
    low, _, high = text.partition("-")
    return (int(low), int(high or low))


def _within(version: int, text: str | None) -> bool:
    low, high = _range(text)
    return low <= version <= high


def _kafka_type(f: dict[str, Any], version: int) -> tuple[str, bool]:
    """(kind, nullable) of a Kafka JSON field at ``version``."""
    t = f["type"]
    nullable = _within(version, f.get("nullableVersions"))
    if t.startswith("[]"):
        item = t[2:]
        return ("[]" + (item if item in _PRIMITIVES | {"string", "bytes"} else "struct"), nullable)
    if t == "records":
        return ("records", True)
    if t in _PRIMITIVES or t in ("string", "bytes"):
        return (t, nullable)
    return ("struct", nullable)


def _our_type(f: Field) -> tuple[str, bool]:
    t = f.type
    if isinstance(t, Array):
        item = t.item
        kind = "struct" if isinstance(item, Struct) else item.name.replace("nullable ", "")
        return ("[]" + kind, t.nullable)
    if isinstance(t, Struct):
        return ("struct", True)
    name = t.name
    if name == "records":
        return ("records", True)
    return (name.replace("nullable ", ""), name.startswith("nullable "))


def _differences(
    ours: Struct,
    fields: list[dict[str, Any]],
    version: int,
    *,
    flexible: bool,
    path: str,
    common: dict[str, list[dict[str, Any]]],
    request: bool,
) -> list[str]:
    present = [f for f in fields if _within(version, f.get("versions"))]
    kafka_tagged = {
        f["tag"]: f for f in present if flexible and _within(version, f.get("taggedVersions"))
    }
    kafka_ordered = [f for f in present if f.get("tag") not in kafka_tagged or not flexible]
    if not flexible:
        kafka_ordered = [f for f in present if "taggedVersions" not in f]
    ordered, tagged = ours.plan(version, flexible)
    out: list[str] = []
    if len(ordered) != len(kafka_ordered):
        names = [f.name for f in ordered], [f["name"] for f in kafka_ordered]
        return [f"{path} v{version}: fields {names[0]} against Kafka's {names[1]}"]
    pairs = [(f, k, f"{path}.{f.name}") for f, k in zip(ordered, kafka_ordered, strict=True)]
    for tag, f in tagged.items():
        k = kafka_tagged.get(tag)
        if k is None:
            out.append(f"{path} v{version}: tag {tag} ({f.name}) is not Kafka's")
        else:
            pairs.append((f, k, f"{path}.{f.name}[tag {tag}]"))
    for f, k, where in pairs:
        (kind, nullable), (k_kind, k_nullable) = _our_type(f), _kafka_type(k, version)
        if kind != k_kind:
            out.append(f"{where} v{version}: {kind} where Kafka has {k_kind}")
        elif nullable != k_nullable and kind != "struct":
            looser_read = request and nullable
            never_null = not request and (not nullable or f.default is not None)
            if not (looser_read or never_null):
                out.append(f"{where} v{version}: nullable {nullable}, Kafka's {k_nullable}")
        item = f.type.item if isinstance(f.type, Array) else f.type
        if isinstance(item, Struct):
            sub = k.get("fields") or common.get(k["type"].removeprefix("[]"), [])
            out += _differences(
                item, sub, version, flexible=flexible, path=where, common=common, request=request
            )
    return out


@pytest.mark.parametrize(
    ("api", "kind"),
    [
        (api, kind)
        for api in KAFKA_APIS.values()
        if api.name not in NOT_IN_KAFKA_PYTHON
        for kind in ("Request", "Response")
    ],
    ids=lambda x: x.name if isinstance(x, KafkaApi) else x,
)
def test_each_served_version_is_kafkas_message_field_for_field(api: KafkaApi, kind: str) -> None:
    spec = _spec(api.name + kind)
    low, high = _range(spec["validVersions"])
    if api.name in _BELOW_KAFKA_4:
        low = 0  # its fields still say from which version they exist
    assert low <= api.min_version and api.max_version <= high, spec["validVersions"]
    flexible_from = _range(spec["flexibleVersions"])[0]
    assert api.flexible_from == flexible_from or (
        flexible_from > api.max_version and api.flexible_from > api.max_version
    ), spec["flexibleVersions"]
    common = {s["name"]: s["fields"] for s in spec.get("commonStructs", [])}
    ours = api.request if kind == "Request" else api.response
    found: list[str] = []
    for version in range(api.min_version, api.max_version + 1):
        found += _differences(
            ours,
            spec["fields"],
            version,
            flexible=api.flexible(version),
            path=api.name + kind,
            common=common,
            request=kind == "Request",
        )
    assert not found, "\n".join(found)


def test_the_comparison_finds_a_field_of_the_wrong_type() -> None:
    # the check itself: Produce's base_offset as int32 instead of Kafka's int64
    produce = KAFKA_APIS[0]
    answer = produce.response.fields[0].type.item  # responses[]
    partition = answer.fields[1].type.item  # partition_responses[]
    base = partition.fields[2]
    assert base.name == "base_offset"
    broken = Struct([*partition.fields[:2], Field("base_offset", INT32), *partition.fields[3:]])
    spec = _spec("ProduceResponse")
    (topic,) = [f for f in spec["fields"] if f["name"] == "Responses"]
    (kafka_partitions,) = [f for f in topic["fields"] if f["name"] == "PartitionResponses"]
    kafka_partition = kafka_partitions["fields"]
    judged = {"flexible": True, "path": "p", "common": {}, "request": False}
    assert _differences(broken, kafka_partition, 9, **judged)  # type: ignore[arg-type]
    assert not _differences(partition, kafka_partition, 9, **judged)  # type: ignore[arg-type]
