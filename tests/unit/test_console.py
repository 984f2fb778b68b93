"""The console tools' line formats (Kafka's DefaultMessageFormatter and LineMessageReader)
and their client settings by Kafka's names, without a broker."""

from __future__ import annotations

import pytest

from client import Consumer, Producer
from client.console import (
    CONSUMER_PROPERTIES,
    PRODUCER_PROPERTIES,
    LineError,
    LineReader,
    ParsedLine,
    RecordFormat,
    client_settings,
    parse_properties,
)
from client.types import ConsumerRecord


def _format(*pairs: str) -> RecordFormat:
    return RecordFormat(parse_properties(pairs, CONSUMER_PROPERTIES, "--property"))


def _reader(*pairs: str) -> LineReader:
    return LineReader(parse_properties(pairs, PRODUCER_PROPERTIES, "--property"))


RECORD = ConsumerRecord("t", 2, 41, 1700000000000, b"k", b"v", (("h1", b"a"), ("h2", None)))


def test_the_consumer_line_is_kafkas() -> None:
    assert _format().line(RECORD) == b"v\n"
    everything = _format(
        "print.timestamp=true",
        "print.partition=true",
        "print.offset=true",
        "print.headers=true",
        "print.key=true",
    )
    assert everything.line(RECORD) == (
        b"CreateTime:1700000000000\tPartition:2\tOffset:41\th1:a,h2:null\tk\tv\n"
    )
    # key.separator goes between every two columns (Kafka's writeSeparator)
    piped = _format("print.partition=true", "print.key=true", "key.separator=|")
    assert piped.line(RECORD) == b"Partition:2|k|v\n"
    no_headers = RECORD._replace(headers=(), key=None)
    assert everything.line(no_headers).split(b"\t")[3:] == [b"NO_HEADERS", b"null", b"v\n"]
    custom = _format(
        "print.key=true",
        "print.headers=true",
        "key.separator= => ",
        "line.separator=\\r\\n",
        "headers.separator=;",
        "headers.key.separator==",
        "null.literal=<none>",
    )
    assert custom.line(RECORD) == b"h1=a;h2=<none> => k => v\r\n"
    keys_only = _format("print.key=true", "print.value=false")
    assert keys_only.line(RECORD) == b"k\n"
    assert _format("print.value=false").line(RECORD) == b""  # nothing at all, as Kafka's
    stamped = _format("print.timestamp=true")
    assert stamped.line(RECORD._replace(timestamp_type=1)) == b"LogAppendTime:1700000000000\tv\n"
    assert stamped.line(RECORD._replace(timestamp=-1)) == b"NO_TIMESTAMP\tv\n"


def test_bad_properties_are_refused_with_the_known_names() -> None:
    with pytest.raises(ValueError, match=r"'print.colour' is not a property.*print.headers"):
        _format("print.colour=true")
    with pytest.raises(ValueError, match=r"'print.key' is not name=value"):
        _format("print.key")
    with pytest.raises(ValueError, match=r"print.key='yes': say true or false"):
        _format("print.key=yes")
    with pytest.raises(ValueError, match=r"key.separator must not be empty"):
        _reader("parse.key=true", "key.separator=")
    with pytest.raises(ValueError, match=r"null.marker and key.separator may not be equal"):
        _reader("null.marker=\\t")
    for pair in (  # Kafka's reader refuses these too: a line could not be cut
        "headers.separator=\\t",
        "headers.key.separator=\\t",
        "headers.key.separator=,",
        "null.marker=:",
    ):
        with pytest.raises(ValueError, match=r"may not be equal"):
            _reader("parse.headers=true", pair)
    # an escaped backslash stays one (found in review: \\t was a backslash and a tab)
    escaped = parse_properties(["key.separator=\\\\t"], PRODUCER_PROPERTIES, "--property")
    assert escaped["key.separator"] == "\\t"


def test_the_producer_line_is_kafkas() -> None:
    assert _reader().parse(b"a\tb") == ParsedLine(None, b"a\tb", [])
    keyed = _reader("parse.key=true")
    assert keyed.parse(b"k\tv\tw") == ParsedLine(b"k", b"v\tw", [])  # the first separator
    assert keyed.parse(b"\tv") == ParsedLine(b"", b"v", [])
    with pytest.raises(LineError, match="no key separator '\\\\t'"):
        keyed.parse(b"no separator")
    lenient = _reader("parse.key=true", "ignore.error=true")
    assert lenient.parse(b"no separator") == ParsedLine(None, b"no separator", [])

    full = _reader("parse.key=true", "parse.headers=true", "null.marker=NULL")
    assert full.parse(b"h1:a,h2:NULL,h3:x:y\tNULL\tv") == ParsedLine(
        None, b"v", [("h1", b"a"), ("h2", None), ("h3", b"x:y")]
    )
    assert full.parse(b"\tk\tNULL") == ParsedLine(b"k", None, [])  # no headers, a null value
    with pytest.raises(LineError, match=r"no header key separator ':' in 'h1'"):
        full.parse(b"h1\tk\tv")
    with pytest.raises(LineError, match=r"may not be the null marker 'NULL'"):
        full.parse(b"NULL:a\tk\tv")
    with pytest.raises(LineError, match=r"no headers delimiter"):
        full.parse(b"just a value")
    assert full.parse(b"NULL\tk\tv") == ParsedLine(b"k", b"v", [])  # no headers (Kafka's)
    lenient_headers = _reader("parse.headers=true", "ignore.error=true")
    assert lenient_headers.parse(b"flag,a:1\tv") == ParsedLine(
        None, b"v", [("flag", None), ("a", b"1")]
    )
    custom = _reader(
        "parse.key=true",
        "key.separator=::",
        "parse.headers=true",
        "headers.delimiter=|",
        "headers.separator=;",
        "headers.key.separator==",
    )
    assert custom.parse(b"a=1;b=2|k::v") == ParsedLine(b"k", b"v", [("a", b"1"), ("b", b"2")])


def test_client_settings_take_kafkas_names_and_the_signatures_types() -> None:
    assert client_settings(
        Producer,
        [
            "linger.ms=20",
            "acks=all",
            "enable.idempotence=false",
            "compression.type=zstd",
            "delivery.timeout.ms=60000",
        ],
        "--producer-property",
    ) == {
        "linger_ms": 20,
        "acks": "all",
        "enable_idempotence": False,
        "compression_type": "zstd",
        "delivery_timeout_ms": 60000,
    }
    assert client_settings(Producer, ["compression.type=none"], "-") == {"compression_type": None}
    assert client_settings(Producer, ["acks=-1"], "-")["acks"] == -1
    assert client_settings(Consumer, ["fetch.max.wait.ms=100", "client.rack=r1"], "-") == {
        "fetch_max_wait_ms": 100,
        "client_rack": "r1",
    }
    with pytest.raises(ValueError, match=r"'fetch.max.wait.ms' is not a setting of the producer"):
        client_settings(Producer, ["fetch.max.wait.ms=1"], "--producer-property")
    with pytest.raises(ValueError, match=r"linger.ms='soon': not a whole number"):
        client_settings(Producer, ["linger.ms=soon"], "--producer-property")
    with pytest.raises(ValueError, match=r"bootstrap.servers: use --bootstrap-server"):
        client_settings(Producer, ["bootstrap.servers=x:1"], "--producer-property")
    with pytest.raises(ValueError, match=r"'value.serializer' is not a setting"):
        client_settings(Producer, ["value.serializer=str"], "--producer-property")
    with pytest.raises(ValueError, match=r"transactional.id: the produce command writes no"):
        client_settings(Producer, ["transactional.id=t"], "--producer-property")
    with pytest.raises(ValueError, match=r"use --partition-assignment-strategy"):
        client_settings(Consumer, ["partition.assignment.strategy=range"], "-")
    with pytest.raises(ValueError, match=r"'topics' is not a setting of the consumer"):
        client_settings(Consumer, ["topics=x"], "--consumer-property")  # (*topics)
