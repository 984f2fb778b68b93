"""The console producer's and consumer's line formats, as Kafka's tools have them, and
their ``--producer-property`` / ``--consumer-property`` settings. Pure: lines in,
records out, and records in, lines out.

- :class:`LineReader` is Kafka's LineMessageReader (``kafka-console-producer --property
  parse.key=true ...``): a line is ``[headers<headers.delimiter>][key<key.separator>]value``.
- :class:`RecordFormat` is Kafka's DefaultMessageFormatter (``kafka-console-consumer
  --property print.key=true ...``): ``[CreateTime:ts][Partition:p][Offset:o][headers]
  [key]value``, the columns printed joined by ``key.separator``, then ``line.separator``.
- :func:`client_settings` turns ``linger.ms=5`` into ``linger_ms=5`` for a client's
  constructor, typed as its signature says.
"""

from __future__ import annotations

import inspect
import re
from collections.abc import Iterable, Mapping
from typing import Any, NamedTuple

__all__ = [
    "CONSUMER_PROPERTIES",
    "PRODUCER_PROPERTIES",
    "LineError",
    "LineReader",
    "ParsedLine",
    "RecordFormat",
    "client_settings",
    "parse_properties",
]

CONSUMER_PROPERTIES: Mapping[str, str] = {
    "print.timestamp": "false",
    "print.partition": "false",
    "print.offset": "false",
    "print.headers": "false",
    "print.key": "false",
    "print.value": "true",
    "key.separator": "\t",
    "line.separator": "\n",
    "headers.separator": ",",
    "headers.key.separator": ":",
    "null.literal": "null",
}
"""Kafka's DefaultMessageFormatter properties, with its defaults."""

PRODUCER_PROPERTIES: Mapping[str, str | None] = {
    "parse.key": "false",
    "key.separator": "\t",
    "parse.headers": "false",
    "headers.delimiter": "\t",
    "headers.separator": ",",
    "headers.key.separator": ":",
    "ignore.error": "false",
    "null.marker": None,
}
"""Kafka's LineMessageReader properties, with its defaults (no null marker)."""

_ESCAPES = {"\\t": "\t", "\\n": "\n", "\\r": "\r", "\\\\": "\\"}


def parse_properties(
    pairs: Iterable[str], known: Mapping[str, str | None], option: str
) -> dict[str, str | None]:
    """``name=value`` pairs over ``known``'s defaults. A value may say ``\\t`` or ``\\n``
    for a tab or a line end, as a shell makes it hard to type them. Raises ValueError
    naming ``option`` and the known names for a pair that is not ``name=value`` or a
    name not known."""
    out = dict(known)
    for pair in pairs:
        name, sep, value = pair.partition("=")
        name = name.strip()
        if not sep or not name:
            raise ValueError(f"{option} {pair!r} is not name=value")
        if name not in known:
            raise ValueError(
                f"{option} {name!r} is not a property of this command; known: "
                f"{', '.join(sorted(known))}"
            )
        out[name] = re.sub(r"\\[tnr\\]", lambda m: _ESCAPES[m.group()], value)  # one pass
    return out


def _flag(props: Mapping[str, str | None], name: str, option: str) -> bool:
    value = (props[name] or "").strip().lower()
    if value not in ("true", "false"):
        raise ValueError(f"{option} {name}={props[name]!r}: say true or false")
    return value == "true"


def _separator(props: Mapping[str, str | None], name: str, option: str) -> str:
    value = props[name]
    if not value:
        raise ValueError(f"{option} {name} must not be empty")
    return value


# --- the consumer's lines ----------------------------------------------------------------

_TIMESTAMP_TYPES = {0: b"CreateTime", 1: b"LogAppendTime"}


class RecordFormat:
    """A record as a line of Kafka's console consumer."""

    def __init__(self, props: Mapping[str, str | None]) -> None:
        """``props``: :data:`CONSUMER_PROPERTIES` as :func:`parse_properties` gives them."""
        option = "--property"
        self.timestamp = _flag(props, "print.timestamp", option)
        self.partition = _flag(props, "print.partition", option)
        self.offset = _flag(props, "print.offset", option)
        self.headers = _flag(props, "print.headers", option)
        self.key = _flag(props, "print.key", option)
        self.value = _flag(props, "print.value", option)
        self.key_separator = (props["key.separator"] or "").encode()
        self.line_separator = (props["line.separator"] or "").encode()
        self.headers_separator = (props["headers.separator"] or "").encode()
        self.headers_key_separator = (props["headers.key.separator"] or "").encode()
        self.null = (props["null.literal"] or "").encode()

    def line(self, record: Any) -> bytes:
        columns: list[bytes] = []
        if self.timestamp:
            columns.append(
                b"%s:%d" % (_TIMESTAMP_TYPES[record.timestamp_type], record.timestamp)
                if record.timestamp >= 0
                else b"NO_TIMESTAMP"
            )
        if self.partition:
            columns.append(b"Partition:%d" % record.partition)
        if self.offset:
            columns.append(b"Offset:%d" % record.offset)
        if self.headers:
            columns.append(
                self.headers_separator.join(
                    name.encode() + self.headers_key_separator + self._bytes(value)
                    for name, value in record.headers
                )
                if record.headers
                else b"NO_HEADERS"
            )
        if self.key:
            columns.append(self._bytes(record.key))
        if self.value:
            columns.append(self._bytes(record.value))
        if not columns:
            return b""  # (Kafka's prints nothing at all)
        return self.key_separator.join(columns) + self.line_separator

    def _bytes(self, value: object) -> bytes:
        if value is None:
            return self.null
        return value if isinstance(value, bytes) else str(value).encode()


# --- the producer's lines ----------------------------------------------------------------


class LineError(ValueError):
    """A line the reader cannot take (Kafka's console producer stops on it; ours skips
    it, says why, and exits 1 at the end)."""


class ParsedLine(NamedTuple):
    key: bytes | None
    value: bytes | None
    headers: list[tuple[str, bytes | None]]


class LineReader:
    """Lines of Kafka's console producer as records."""

    def __init__(self, props: Mapping[str, str | None]) -> None:
        """``props``: :data:`PRODUCER_PROPERTIES` as :func:`parse_properties` gives them."""
        option = "--property"
        self.parse_key = _flag(props, "parse.key", option)
        self.parse_headers = _flag(props, "parse.headers", option)
        self.ignore_error = _flag(props, "ignore.error", option)
        self.key_separator = _separator(props, "key.separator", option).encode()
        self.headers_delimiter = _separator(props, "headers.delimiter", option).encode()
        self.headers_separator = _separator(props, "headers.separator", option).encode()
        self.headers_key_separator = _separator(props, "headers.key.separator", option).encode()
        for a, b in (  # as Kafka's reader: a line could not be cut where it means
            ("headers.delimiter", "headers.separator"),
            ("headers.delimiter", "headers.key.separator"),
            ("headers.separator", "headers.key.separator"),
        ):
            if props[a] == props[b]:
                raise ValueError(f"{option} {a} and {b} may not be equal")
        marker = props["null.marker"]
        self.null_marker = None if marker is None else marker.encode()
        if self.null_marker is not None:
            if not self.null_marker:
                raise ValueError(f"{option} null.marker must not be empty")
            for name in (
                "key.separator",
                "headers.delimiter",
                "headers.separator",
                "headers.key.separator",
            ):
                if (props[name] or "").encode() == self.null_marker:
                    raise ValueError(f"{option} null.marker and {name} may not be equal")

    def parse(self, line: bytes) -> ParsedLine:
        """``line`` (without its line end) as key, value and headers; LineError says why
        one cannot be read."""
        headers: list[tuple[str, bytes | None]] = []
        if self.parse_headers:
            found, sep, rest = line.partition(self.headers_delimiter)
            if sep:  # a headers column spelled as the null marker: no headers (Kafka's)
                headers = [] if found == self.null_marker else self._headers(found)
                line = rest
            elif not self.ignore_error:
                raise LineError(f"no headers delimiter {self.headers_delimiter.decode()!r}")
        key: bytes | None = None
        if self.parse_key:
            found, sep, rest = line.partition(self.key_separator)
            if sep:
                key, line = self._nullable(found), rest
            elif not self.ignore_error:
                raise LineError(f"no key separator {self.key_separator.decode()!r}")
        return ParsedLine(key, self._nullable(line), headers)

    def _headers(self, text: bytes) -> list[tuple[str, bytes | None]]:
        headers: list[tuple[str, bytes | None]] = []
        for pair in text.split(self.headers_separator):
            if not pair:
                continue
            name, sep, value = pair.partition(self.headers_key_separator)
            if not sep and self.ignore_error:  # Kafka's: a header with a null value
                name, value = pair, b""
            elif not sep:
                raise LineError(
                    f"no header key separator {self.headers_key_separator.decode()!r} in "
                    f"{pair.decode(errors='replace')!r}"
                )
            if self.null_marker is not None and name == self.null_marker:
                raise LineError(f"a header key may not be the null marker {name.decode()!r}")
            try:
                headers.append((name.decode(), self._nullable(value) if sep else None))
            except UnicodeDecodeError:
                raise LineError(f"header key {name!r} is not UTF-8") from None
        return headers

    def _nullable(self, data: bytes) -> bytes | None:
        return None if self.null_marker is not None and data == self.null_marker else data


# --- --producer-property / --consumer-property -------------------------------------------

_NOT_PROPERTIES = {
    "bootstrap_servers": "use --bootstrap-server",
    "ssl_context": "use --command-config",
    "security_protocol": "use --command-config",
    "sasl_mechanism": "use --command-config",
    "sasl_plain_username": "use --command-config",
    "sasl_plain_password": "use --command-config",
    "partition_assignment_strategy": "use --partition-assignment-strategy",
    "transactional_id": "the produce command writes no transactions (each record alone)",
}


def client_settings(cls: type, pairs: Iterable[str], option: str) -> dict[str, Any]:
    """``--producer-property linger.ms=5`` and the like as keyword arguments of ``cls``
    (Kafka's dotted names: ``linger.ms`` is ``linger_ms``), each converted to the type
    its signature says. Raises ValueError for a name ``cls`` does not take or a value
    that is not of its type, saying which and why."""
    params = inspect.signature(cls.__init__).parameters  # type: ignore[misc]
    out: dict[str, Any] = {}
    for pair in pairs:
        name, sep, text = pair.partition("=")
        name, text = name.strip(), text.strip()
        if not sep or not name:
            raise ValueError(f"{option} {pair!r} is not name=value")
        key = name.replace(".", "_").replace("-", "_")
        if key in _NOT_PROPERTIES:
            raise ValueError(f"{option} {name}: {_NOT_PROPERTIES[key]}")
        param = params.get(key)
        settable = (param.POSITIONAL_OR_KEYWORD, param.KEYWORD_ONLY) if param else ()
        if param is not None and param.kind not in settable:
            param = None  # (*topics: not a setting)
        kinds = _kinds(param.annotation) if param is not None else None
        if param is None or key == "self" or not kinds:
            raise ValueError(f"{option} {name!r} is not a setting of the {cls.__name__.lower()}")
        out[key] = _typed(text, kinds, f"{option} {name}")
    return out


def _kinds(annotation: object) -> set[str]:
    """The plain types an annotation (a string: postponed) allows; empty if it allows
    anything else (an object a command line cannot give)."""
    parts = {p.strip() for p in str(annotation).split("|")}
    plain = {"int", "str", "bool", "float", "None"}
    return parts if parts <= plain and parts - {"None"} else set()


def _typed(text: str, kinds: set[str], what: str) -> Any:
    if "None" in kinds and text.lower() in ("", "null", "none"):
        return None
    if "bool" in kinds and text.lower() in ("true", "false"):
        return text.lower() == "true"
    if "int" in kinds:
        try:
            return int(text)
        except ValueError:
            if "str" not in kinds:
                raise ValueError(f"{what}={text!r}: not a whole number") from None
    if "float" in kinds:
        try:
            return float(text)
        except ValueError:
            if "str" not in kinds:
                raise ValueError(f"{what}={text!r}: not a number") from None
    if "str" in kinds:
        return text
    raise ValueError(f"{what}={text!r}: say true or false")
