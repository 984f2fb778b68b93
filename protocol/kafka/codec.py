"""Kafka's binary encoding of message bodies, driven by declared schemas (bytes in, objects out).

Kafka describes each request and response in a JSON message spec: fields with a type and
the versions they exist in; from a "flexible" version on, strings, bytes and arrays are
*compact* (length + 1 as an unsigned varint, 0 for null) and every struct ends with
tagged fields (a count, then ``tag | size | value`` each). :class:`Struct` is such a spec
written in Python: a field names Kafka's field and, where it differs, the attribute of the
Headwater message dataclass it maps to, so a Kafka request decodes straight into the
object the broker's handlers take and their answer encodes straight from theirs.

Nothing here reads a socket. A decode error is :class:`MalformedMessageError` naming the
field path; record data (``RECORDS``) is a ``memoryview`` of the frame when decoding and
may be a :class:`~protocol.framing.FileRegion` when encoding (sent with ``sendfile``).
"""

from __future__ import annotations

import struct
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from protocol.errors import MalformedMessageError
from protocol.framing import FileRegion, Part
from protocol.topic_id import ZERO_TOPIC_ID

__all__ = [
    "BOOL",
    "BYTES",
    "FLOAT64",
    "INT8",
    "INT16",
    "INT32",
    "INT64",
    "NULLABLE_STRING",
    "RECORDS",
    "STRING",
    "UUID",
    "Array",
    "Field",
    "NullableStruct",
    "Reader",
    "Struct",
    "Writer",
    "read_message",
    "write_message",
]

ZERO_UUID = ZERO_TOPIC_ID
"""Kafka's ``Uuid.ZERO_UUID``: the default of a UUID field."""


class _Short(Exception):
    """The body ended inside a field."""


class Reader:
    """A cursor over one message body."""

    __slots__ = ("buf", "pos")

    def __init__(self, buf: memoryview) -> None:
        self.buf = buf
        self.pos = 0

    def take(self, n: int) -> memoryview:
        start = self.pos
        end = start + n
        if n < 0 or end > len(self.buf):
            raise _Short
        self.pos = end
        return self.buf[start:end]

    def unpack(self, fmt: struct.Struct) -> Any:
        start = self.pos
        end = start + fmt.size
        if end > len(self.buf):
            raise _Short
        self.pos = end
        return fmt.unpack_from(self.buf, start)[0]

    def uvarint(self) -> int:
        result = shift = 0
        buf, pos = self.buf, self.pos
        while True:
            if pos >= len(buf) or shift > 28:
                raise _Short if pos >= len(buf) else MalformedMessageError("a varint over 5 bytes")
            byte = buf[pos]
            pos += 1
            result |= (byte & 0x7F) << shift
            if byte < 0x80:
                self.pos = pos
                return result
            shift += 7

    def length(self, flexible: bool, fmt: struct.Struct) -> int:
        """A string's, bytes' or array's length; -1 for null."""
        return self.uvarint() - 1 if flexible else self.unpack(fmt)

    def tagged(
        self, known: dict[int, Field] | None, v: int, flexible: bool, out: dict[str, Any]
    ) -> None:
        """The tagged fields ending a struct: known ones into ``out``, the rest skipped."""
        for _ in range(self.uvarint()):
            tag = self.uvarint()
            size = self.uvarint()
            f = known.get(tag) if known else None
            if f is None:
                self.take(size)
                continue
            inner = Reader(self.take(size))
            out[f.attr or f.name] = f.type.read(inner, v, flexible)


class Writer:
    """A message body being built: bytes, with record data kept as separate parts."""

    __slots__ = ("buf", "parts")

    def __init__(self) -> None:
        self.buf = bytearray()
        self.parts: list[Part] = []

    def uvarint(self, value: int) -> None:
        buf = self.buf
        while value >= 0x80:
            buf.append((value & 0x7F) | 0x80)
            value >>= 7
        buf.append(value)

    def length(self, n: int, flexible: bool, fmt: struct.Struct) -> None:
        if flexible:
            self.uvarint(n + 1)
        else:
            self.buf += fmt.pack(n)

    def raw(self, part: Part) -> None:
        """Record data, not copied: the bytes so far become a part, then ``part``."""
        if self.buf:
            self.parts.append(self.buf)
            self.buf = bytearray()
        self.parts.append(part)

    def finish(self) -> list[Part]:
        if self.buf or not self.parts:
            self.parts.append(self.buf)
        return self.parts


_I8 = struct.Struct(">b")
_I16 = struct.Struct(">h")
_I32 = struct.Struct(">i")
_I64 = struct.Struct(">q")
_F64 = struct.Struct(">d")


class _Type:
    name = "?"
    default: Any = None

    def read(self, r: Reader, v: int, flexible: bool) -> Any:
        raise NotImplementedError

    def write(self, w: Writer, value: Any, v: int, flexible: bool) -> None:
        raise NotImplementedError


class _Fixed(_Type):
    def __init__(self, name: str, fmt: struct.Struct, default: Any) -> None:
        self.name, self.fmt, self.default = name, fmt, default

    def read(self, r: Reader, v: int, flexible: bool) -> Any:
        return r.unpack(self.fmt)

    def write(self, w: Writer, value: Any, v: int, flexible: bool) -> None:
        try:
            w.buf += self.fmt.pack(value)
        except (struct.error, TypeError) as exc:
            raise ValueError(f"{value!r} is not a valid {self.name}") from exc


class _Bool(_Type):
    name = "bool"
    default = False

    def read(self, r: Reader, v: int, flexible: bool) -> bool:
        return r.unpack(_I8) != 0

    def write(self, w: Writer, value: Any, v: int, flexible: bool) -> None:
        w.buf.append(1 if value else 0)


class _Uuid(_Type):
    name = "uuid"
    default = ZERO_UUID

    def read(self, r: Reader, v: int, flexible: bool) -> bytes:
        return bytes(r.take(16))

    def write(self, w: Writer, value: Any, v: int, flexible: bool) -> None:
        data = bytes(value)
        if len(data) != 16:
            raise ValueError(f"a uuid is 16 bytes, not {len(data)}")
        w.buf += data


class _String(_Type):
    def __init__(self, nullable: bool) -> None:
        self.nullable = nullable
        self.name = "nullable string" if nullable else "string"
        self.default = None if nullable else ""

    def read(self, r: Reader, v: int, flexible: bool) -> str | None:
        n = r.length(flexible, _I16)
        if n < 0:
            if not self.nullable:
                raise MalformedMessageError("null where a string is required")
            return None
        try:
            return str(r.take(n), "utf-8")
        except UnicodeDecodeError as exc:
            raise MalformedMessageError(f"not UTF-8 ({exc.reason})") from None

    def write(self, w: Writer, value: Any, v: int, flexible: bool) -> None:
        if value is None:
            if not self.nullable:
                raise ValueError("None where a string is required")
            w.length(-1, flexible, _I16)
            return
        data = value.encode()
        w.length(len(data), flexible, _I16)
        w.buf += data


class _Bytes(_Type):
    def __init__(self, nullable: bool, records: bool = False) -> None:
        self.nullable = nullable
        self.records = records
        self.name = "records" if records else ("nullable bytes" if nullable else "bytes")
        self.default = None if nullable else b""

    def read(self, r: Reader, v: int, flexible: bool) -> memoryview | bytes | None:
        n = r.length(flexible, _I32)
        if n < 0:
            if not self.nullable:
                raise MalformedMessageError("null where bytes are required")
            return None
        data = r.take(n)
        return data if self.records else bytes(data)

    def write(self, w: Writer, value: Any, v: int, flexible: bool) -> None:
        if value is None:
            if not self.nullable:
                raise ValueError("None where bytes are required")
            w.length(-1, flexible, _I32)
            return
        w.length(len(value), flexible, _I32)
        if self.records and len(value):
            w.raw(value)  # a FileRegion is sent from its file, the rest not copied
        elif isinstance(value, FileRegion):
            raise TypeError("a file region where plain bytes are expected")
        else:
            w.buf += value


BOOL = _Bool()
INT8 = _Fixed("int8", _I8, 0)
INT16 = _Fixed("int16", _I16, 0)
INT32 = _Fixed("int32", _I32, 0)
INT64 = _Fixed("int64", _I64, 0)
FLOAT64 = _Fixed("float64", _F64, 0.0)
UUID = _Uuid()
STRING = _String(nullable=False)
NULLABLE_STRING = _String(nullable=True)
BYTES = _Bytes(nullable=False)
RECORDS = _Bytes(nullable=True, records=True)
"""Kafka's ``records`` type: record batches as nullable bytes, never copied."""


class Array(_Type):
    def __init__(self, item: _Type, *, nullable: bool = False) -> None:
        self.item = item
        self.nullable = nullable
        self.name = f"[{item.name}]"
        self.default = None if nullable else []

    def read(self, r: Reader, v: int, flexible: bool) -> list[Any] | None:
        n = r.length(flexible, _I32)
        if n < 0:
            if not self.nullable:
                raise MalformedMessageError("null where an array is required")
            return None
        if n > len(r.buf) - r.pos:  # every item takes a byte at least: a lie, not a wait
            raise _Short
        read = self.item.read
        out = []
        for i in range(n):
            try:
                out.append(read(r, v, flexible))
            except MalformedMessageError as exc:
                raise MalformedMessageError(f"[{i}]{_sep(exc)}{exc.message}") from None
        return out

    def write(self, w: Writer, value: Any, v: int, flexible: bool) -> None:
        if value is None:
            if not self.nullable:
                raise ValueError("None where an array is required")
            w.length(-1, flexible, _I32)
            return
        w.length(len(value), flexible, _I32)
        write = self.item.write
        for item in value:
            write(w, item, v, flexible)


@dataclass(frozen=True, slots=True)
class Field:
    """One field of a Kafka struct.

    ``versions``: the first and last version it exists in (None: no end). ``attr``: the
    Headwater attribute it maps to (default: the same name); None: Kafka's alone, read
    and dropped, written as ``default`` (or the type's). ``tag``: a tagged field's tag in
    flexible versions (written only when it is not its default).
    """

    name: str
    type: _Type
    versions: tuple[int, int | None] = (0, None)
    attr: str | None = ""
    default: Any = None
    tag: int | None = None
    convert: Callable[[Any], Any] | None = None
    """Applied to the Headwater value before it is written (a type name to Kafka's
    number)."""

    def __post_init__(self) -> None:
        if self.attr == "":
            object.__setattr__(self, "attr", self.name)

    def exists(self, version: int) -> bool:
        low, high = self.versions
        return low <= version and (high is None or version <= high)

    def value_default(self) -> Any:
        return self.type.default if self.default is None else self.default


def _sep(exc: MalformedMessageError) -> str:
    return "" if (exc.message or "").startswith("[") else ": "


class Struct(_Type):
    """A struct: its fields in order, and what a decoded one becomes (``make``: a
    Headwater dataclass, or any callable taking the fields as keywords; None: a dict)."""

    def __init__(self, fields: Sequence[Field], make: Callable[..., Any] | None = None) -> None:
        self.fields = tuple(fields)
        self.make = make
        self.name = getattr(make, "__name__", "struct")
        self._plans: dict[tuple[int, bool], tuple[list[Field], dict[int, Field]]] = {}
        self._defaults: dict[int, list[tuple[str, Any]]] = {}

    def plan(self, version: int, flexible: bool) -> tuple[list[Field], dict[int, Field]]:
        """The fields in order at ``version``, and the tagged ones by tag."""
        key = (version, flexible)
        plan = self._plans.get(key)
        if plan is None:
            present = [f for f in self.fields if f.exists(version)]
            tagged = {f.tag: f for f in present if f.tag is not None and flexible}
            plan = ([f for f in present if f.tag is None or not flexible], tagged)
            self._plans[key] = plan
        return plan

    def defaults(self, version: int) -> list[tuple[str, Any]]:
        """The fields not in ``version`` that have a default of Kafka's (a CreateAcls v0
        creation's pattern type is LITERAL): what a decoded one takes for them."""
        found = self._defaults.get(version)
        if found is None:
            found = self._defaults[version] = [
                (f.attr, f.default)
                for f in self.fields
                if f.attr and f.default is not None and not f.exists(version)
            ]
        return found

    def read(self, r: Reader, v: int, flexible: bool) -> Any:
        ordered, tagged = self.plan(v, flexible)
        out: dict[str, Any] = {}
        for f in ordered:
            try:
                value = f.type.read(r, v, flexible)
            except MalformedMessageError as exc:
                raise MalformedMessageError(f"{f.name}{_sep(exc)}{exc.message}") from None
            if f.attr is not None:
                out[f.attr] = value
        if flexible:
            r.tagged(tagged, v, flexible, out)
            for f in tagged.values():
                if f.attr is None:
                    out.pop(f.name, None)
        for attr, default in self.defaults(v):
            out.setdefault(attr, default)
        if self.make is None:
            return out
        try:
            return self.make(**out)
        except (TypeError, ValueError) as exc:
            raise MalformedMessageError(f"{self.name}: {exc}") from None

    def write(self, w: Writer, value: Any, v: int, flexible: bool) -> None:
        ordered, tagged = self.plan(v, flexible)
        get = value.get if isinstance(value, dict) else None
        for f in ordered:
            f.type.write(w, _attr(value, get, f), v, flexible)
        if not flexible:
            return
        present = []
        for tag in sorted(tagged):
            f = tagged[tag]
            item = _attr(value, get, f)
            if item is not None and item != f.value_default():
                present.append((tag, f, item))
        w.uvarint(len(present))
        for tag, f, item in present:
            inner = Writer()
            f.type.write(inner, item, v, flexible)
            # tagged fields are small, and never record data (no file regions)
            data = b"".join(bytes(p) for p in inner.finish() if not isinstance(p, FileRegion))
            w.uvarint(tag)
            w.uvarint(len(data))
            w.buf += data


class NullableStruct(_Type):
    """A struct field Kafka's spec makes nullable: an int8 before it, -1 for null, 1
    then the struct."""

    def __init__(self, struct_: Struct) -> None:
        self.struct = struct_
        self.name = struct_.name
        self.nullable = True
        self.default = None

    def read(self, r: Reader, v: int, flexible: bool) -> Any:
        if r.unpack(_I8) < 0:
            return None
        return self.struct.read(r, v, flexible)

    def write(self, w: Writer, value: Any, v: int, flexible: bool) -> None:
        if value is None:
            w.buf.append(0xFF)
            return
        w.buf.append(1)
        self.struct.write(w, value, v, flexible)


def _attr(value: Any, get: Callable[[str], Any] | None, f: Field) -> Any:
    if f.attr is None:
        return f.value_default()
    item = get(f.attr) if get is not None else getattr(value, f.attr, None)
    if f.convert is not None and item is not None:
        item = f.convert(item)
    if item is None and (f.default is not None or not _nullable(f.type)):
        return f.value_default()  # Headwater's None where Kafka's spec wants a value
    return item


def _nullable(t: _Type) -> bool:
    return getattr(t, "nullable", False) or isinstance(t, Struct)


def read_message(
    struct_: Struct, body: memoryview, version: int, flexible: bool, *, exact: bool = True
) -> Any:
    """Decode a whole body. :class:`MalformedMessageError` names the field that did not
    decode; ``exact``: bytes left after the last field are an error too."""
    r = Reader(body)
    try:
        value = struct_.read(r, version, flexible)
    except _Short:
        raise MalformedMessageError(f"the body ends inside a field (at byte {r.pos})") from None
    except struct.error as exc:
        raise MalformedMessageError(str(exc)) from None
    if exact and r.pos != len(body):
        raise MalformedMessageError(f"{len(body) - r.pos} bytes after the body's last field")
    return value


def write_message(struct_: Struct, value: Any, version: int, flexible: bool) -> list[Part]:
    """Encode a whole body: bytes, and record data as parts of their own."""
    w = Writer()
    struct_.write(w, value, version, flexible)
    return w.finish()
