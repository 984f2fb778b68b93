"""Declarative, versioned message schemas, and the msgpack body codec derived from them.

A message is a keyword-only dataclass. Each field's type says how it travels and
:func:`field` says from which version on (``since``) and until which (``until``), so one
declaration per message lists its fields for every version; encoders and decoders are
compiled from it once per (message, version) and never written by hand.

Body layout (DESIGN.md "The wire")::

    body = msgpack map | raw bytes of every Records field, in schema order

A :data:`Records` field is never inside msgpack: the map holds its length (or nil for
null) and its bytes follow the map, so record data is neither copied into nor parsed by
msgpack. Decoding returns ``memoryview`` slices of the frame for those fields (zero copy).

Compatibility rules: keys are the field names; a key the schema does not know is ignored;
a key the version defines but the map lacks takes the field's default (a field without a
default is required). Field types: ``int``, ``str``, ``bool``, ``float``, ``bytes``,
``list[T]``, ``dict[str, T]``, ``T | None``, a nested message dataclass, and
:data:`Records`. Anything the decoder does not like raises :class:`MalformedMessageError`
naming the field path.
"""

from __future__ import annotations

import dataclasses
import threading
import types
import typing
from collections.abc import Callable
from typing import Annotated, Any, TypeVar

import msgpack

from protocol.errors import MalformedMessageError
from protocol.framing import FileRegion

__all__ = [
    "KAFKA_ONLY",
    "Records",
    "decode_message",
    "encode_message",
    "field",
    "fields_for_version",
]

T = TypeVar("T")

RecordData = bytes | bytearray | memoryview | FileRegion
"""What a Records field may hold when encoding (decoding always gives a memoryview)."""


class _RawMarker:
    def __repr__(self) -> str:
        return "RAW"


RAW = _RawMarker()

Records = Annotated[RecordData | None, RAW]
"""A field of raw record-batch bytes, carried after the msgpack map (never inside it)."""

_MISSING: Any = dataclasses.MISSING
_HEAD_CHUNK = 4096


KAFKA_ONLY = 1 << 30
"""``field(since=KAFKA_ONLY)``: a field Headwater's own encoding never carries, set and
read by a Kafka-protocol listener only (Kafka's Fetch v13+ topic ids)."""


def field(
    default: Any = _MISSING,
    *,
    default_factory: Callable[[], Any] | Any = _MISSING,
    since: int = 0,
    until: int | None = None,
) -> Any:
    """Declare a message field present from version ``since`` through ``until`` (inclusive)."""
    return dataclasses.field(
        default=default,
        default_factory=default_factory,
        metadata={"since": since, "until": until},
    )


# --- compiled codecs -------------------------------------------------------------------

Encoder = Callable[[Any, list[RecordData]], Any]
Decoder = Callable[[Any, "_Tail"], Any]


class _BadField(Exception):
    """Internal: a decode failure with the path to the field, built while unwinding."""

    def __init__(self, reason: str) -> None:
        super().__init__(reason)
        self.reason = reason
        self.path: list[str] = []


class _Tail:
    """The raw bytes after the msgpack map, handed out in schema order."""

    __slots__ = ("_data", "_pos")

    def __init__(self, data: memoryview) -> None:
        self._data = data
        self._pos = 0

    def take(self, size: int) -> memoryview:
        end = self._pos + size
        if end > len(self._data):
            raise _BadField(
                f"records of {size} bytes run past the end of the frame "
                f"({len(self._data) - self._pos} bytes left)"
            )
        view = self._data[self._pos : end]
        self._pos = end
        return view

    def leftover(self) -> int:
        return len(self._data) - self._pos


class _StructCodec:
    """Encoder and decoder of one message class at one version.

    :meth:`generic_encode` and :meth:`generic_decode` are the definition; once the fields
    are known, :func:`_specialise` replaces ``encode`` and ``decode`` with functions
    generated for this message (the same checks and errors, without the per-field loop
    and calls: every request and response goes through them)."""

    def __init__(self, cls: type, version: int) -> None:
        self.cls = cls
        self.version = version
        self.fields: list[tuple[str, Encoder, Decoder, Any, Any]] = []
        self.encode: Callable[[Any, list[RecordData]], dict[str, Any]] = self.generic_encode
        self.decode: Callable[[Any, _Tail], Any] = self.generic_decode

    def generic_encode(self, msg: Any, raws: list[RecordData]) -> dict[str, Any]:
        return {name: enc(getattr(msg, name), raws) for name, enc, _, _, _ in self.fields}

    def generic_decode(self, obj: Any, tail: _Tail) -> Any:
        if not isinstance(obj, dict):
            raise _BadField(f"expected a map, got {_kind(obj)}")
        kwargs = {}
        for name, _, dec, default, factory in self.fields:
            if name in obj:
                try:
                    kwargs[name] = dec(obj[name], tail)
                except _BadField as exc:
                    exc.path.append(name)
                    raise
            elif default is _MISSING and factory is _MISSING:
                raise _BadField(f"required field {name!r} is missing")
        return self.cls(**kwargs)


_codecs: dict[tuple[type, int], _StructCodec] = {}


def _codec_for(cls: type, version: int) -> _StructCodec:
    codec = _codecs.get((cls, version))
    if codec is None:
        codec = _compile_struct(cls, version)
    return codec


def fields_for_version(cls: type, version: int) -> list[str]:
    """The names of ``cls``'s fields that exist at ``version``."""
    return [f.name for f in dataclasses.fields(cls) if _in_version(f, version)]


def _in_version(f: dataclasses.Field[Any], version: int) -> bool:
    since = f.metadata.get("since", 0)
    until = f.metadata.get("until")
    return since <= version and (until is None or version <= until)


def _compile_struct(cls: type, version: int) -> _StructCodec:
    if not dataclasses.is_dataclass(cls):
        raise TypeError(f"{cls!r} is not a message dataclass")
    codec = _StructCodec(cls, version)
    _codecs[(cls, version)] = codec  # registered first: a message may contain itself
    hints = typing.get_type_hints(cls, include_extras=True)
    for f in dataclasses.fields(cls):
        if not _in_version(f, version):
            if f.default is _MISSING and f.default_factory is _MISSING:
                raise TypeError(f"{cls.__name__}.{f.name}: a versioned field needs a default")
            continue
        enc, dec = _compile_type(hints[f.name], version, f"{cls.__name__}.{f.name}")
        codec.fields.append((f.name, enc, dec, f.default, f.default_factory))
    _specialise(codec)
    return codec


def _specialise(codec: _StructCodec) -> None:
    """Generate ``codec``'s encode and decode (see :class:`_StructCodec`): field names are
    identifiers (dataclass fields), everything else is passed in as a global.

    A nested message, or a list of them, is inlined: the generated code calls the nested
    codec itself rather than the closures :func:`_nested` and :func:`_list_of` wrap it in
    (the same checks, errors and paths; a request is a few levels of these)."""
    env: dict[str, Any] = {"_BadField": _BadField, "_kind": _kind, "_cls": codec.cls}
    enc_setup: list[str] = []
    enc_items: list[str] = []
    dec_lines: list[str] = []
    for i, (name, enc, dec, default, factory) in enumerate(codec.fields):
        assert name.isidentifier(), name
        key = repr(name)
        enc_items.append(f"{key}: {_inline_encode(enc, f'msg.{name}', i, env, enc_setup)}")
        dec_lines += [
            f"    if {key} in obj:",
            "        try:",
            *_inline_decode(dec, key, i, env),
            "        except _BadField as exc:",
            f"            exc.path.append({key})",
            "            raise",
        ]
        if default is _MISSING and factory is _MISSING:
            dec_lines += [
                "    else:",
                f"        raise _BadField({f'required field {name!r} is missing'!r})",
            ]
    source = "\n".join(
        [
            "def encode(msg, raws):",
            *enc_setup,
            f"    return {{{', '.join(enc_items)}}}",
            "def decode(obj, tail):",
            "    if not isinstance(obj, dict):",
            "        raise _BadField(f'expected a map, got {_kind(obj)}')",
            "    kwargs = {}",
            *dec_lines,
            "    return _cls(**kwargs)",
        ]
    )
    exec(compile(source, f"<codec {codec.cls.__name__} v{codec.version}>", "exec"), env)
    codec.encode, codec.decode = env["encode"], env["decode"]


def _inline_encode(enc: Encoder, value: str, i: int, env: dict[str, Any], setup: list[str]) -> str:
    """The expression encoding ``value`` with ``enc`` (statements it needs go to ``setup``)."""
    if enc is _identity:
        return value
    nested = _NESTED.get(enc)
    if nested is not None:
        env[f"_c{i}"] = nested
        return f"_c{i}.encode({value}, raws)"
    item = _ITEMS.get(enc)
    nested = _NESTED.get(item) if item is not None else None
    if nested is not None:
        env[f"_c{i}"] = nested
        setup.append(f"    _f{i} = _c{i}.encode")  # read per call: see _nested
        return f"[_f{i}(_x, raws) for _x in {value}]"
    env[f"_e{i}"] = enc
    return f"_e{i}({value}, raws)"


def _inline_decode(dec: Decoder, key: str, i: int, env: dict[str, Any]) -> list[str]:
    """Statements (inside the field's ``try``) decoding ``obj[key]`` into ``kwargs[key]``."""
    primitive = _SINGLE_TYPE.get(dec)
    if primitive is not None:
        env[f"_t{i}"] = primitive[0]
        return [
            f"            _v = obj[{key}]",
            f"            if type(_v) is not _t{i}:",
            f"                raise _BadField(f'expected {primitive[1]}, got {{_kind(_v)}}')",
            f"            kwargs[{key}] = _v",
        ]
    nested = _NESTED.get(dec)
    if nested is not None:
        env[f"_c{i}"] = nested
        return [f"            kwargs[{key}] = _c{i}.decode(obj[{key}], tail)"]
    item = _ITEMS.get(dec)
    nested = _NESTED.get(item) if item is not None else None
    if nested is not None:  # as _list_of's decode, with the nested decode inlined
        env[f"_c{i}"] = nested
        return [
            f"            _v = obj[{key}]",
            "            if type(_v) is not list:",
            "                raise _BadField(f'expected a list, got {_kind(_v)}')",
            f"            _f = _c{i}.decode",
            "            _out = []",
            "            try:",
            "                for _x in _v:",
            "                    _out.append(_f(_x, tail))",
            "            except _BadField as exc:",
            "                exc.path.append(f'[{len(_out)}]')",
            "                raise",
            f"            kwargs[{key}] = _out",
        ]
    env[f"_d{i}"] = dec
    return [f"            kwargs[{key}] = _d{i}(obj[{key}], tail)"]


# One return per kind of field type reads better than a dispatch table here.
def _compile_type(  # noqa: PLR0911
    tp: Any, version: int, where: str
) -> tuple[Encoder, Decoder]:
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is Annotated:
        if RAW in args[1:]:
            return _encode_raw, _decode_raw
        return _compile_type(args[0], version, where)
    if origin in (typing.Union, types.UnionType):
        inner = [a for a in args if a is not type(None)]
        if len(inner) != 1 or len(args) != 2:
            raise TypeError(f"{where}: only `T | None` unions are supported")
        return _nullable(*_compile_type(inner[0], version, where))
    if origin is list:
        return _list_of(*_compile_type(args[0], version, where))
    if origin is dict:
        if args[0] is not str:
            raise TypeError(f"{where}: map keys must be str")
        return _dict_of(*_compile_type(args[1], version, where))
    if tp in _PRIMITIVES:
        return _identity, _PRIMITIVES[tp]
    if isinstance(tp, type) and dataclasses.is_dataclass(tp):
        return _nested(_codec_for(tp, version))
    raise TypeError(f"{where}: unsupported field type {tp!r}")


def _identity(value: Any, raws: list[RecordData]) -> Any:
    return value


def _kind(obj: Any) -> str:
    return "nil" if obj is None else type(obj).__name__


def _primitive(*types_: type, name: str) -> Decoder:
    def decode(obj: Any, tail: _Tail) -> Any:
        # bool is an int subclass: an int field must not accept true/false, nor the reverse
        if type(obj) not in types_:
            raise _BadField(f"expected {name}, got {_kind(obj)}")
        return obj

    return decode


def _decode_float(obj: Any, tail: _Tail) -> float:
    if type(obj) not in (float, int):
        raise _BadField(f"expected float, got {_kind(obj)}")
    return float(obj)


_PRIMITIVES: dict[Any, Decoder] = {
    int: _primitive(int, name="int"),
    str: _primitive(str, name="str"),
    bool: _primitive(bool, name="bool"),
    bytes: _primitive(bytes, name="bytes"),
    float: _decode_float,
}
_SINGLE_TYPE: dict[Decoder, tuple[type, str]] = {
    _PRIMITIVES[t]: (t, t.__name__) for t in (int, str, bool, bytes)
}
"""The decoders that only check ``type(obj) is T``: generated code inlines them."""


def _encode_raw(value: RecordData | None, raws: list[RecordData]) -> int | None:
    if value is None:
        return None
    raws.append(value)
    return len(value)


def _decode_raw(obj: Any, tail: _Tail) -> memoryview | None:
    if obj is None:
        return None
    if type(obj) is not int or obj < 0:
        raise _BadField(f"expected a records length, got {obj!r}")
    return tail.take(obj)


def _nullable(enc: Encoder, dec: Decoder) -> tuple[Encoder, Decoder]:
    def encode(value: Any, raws: list[RecordData]) -> Any:
        return None if value is None else enc(value, raws)

    def decode(obj: Any, tail: _Tail) -> Any:
        return None if obj is None else dec(obj, tail)

    return encode, decode


def _list_of(enc: Encoder, dec: Decoder) -> tuple[Encoder, Decoder]:
    if enc is _identity:

        def encode(value: Any, raws: list[RecordData]) -> Any:
            return value

    else:

        def encode(value: Any, raws: list[RecordData]) -> Any:
            return [enc(v, raws) for v in value]

    def decode(obj: Any, tail: _Tail) -> list[Any]:
        if type(obj) is not list:
            raise _BadField(f"expected a list, got {_kind(obj)}")
        out = []
        for i, item in enumerate(obj):
            try:
                out.append(dec(item, tail))
            except _BadField as exc:
                exc.path.append(f"[{i}]")
                raise
        return out

    _ITEMS[encode], _ITEMS[decode] = enc, dec
    return encode, decode


def _dict_of(enc: Encoder, dec: Decoder) -> tuple[Encoder, Decoder]:
    def encode(value: Any, raws: list[RecordData]) -> Any:
        return {k: enc(v, raws) for k, v in value.items()}

    def decode(obj: Any, tail: _Tail) -> dict[str, Any]:
        if type(obj) is not dict:
            raise _BadField(f"expected a map, got {_kind(obj)}")
        out = {}
        for key, item in obj.items():
            try:
                out[key] = dec(item, tail)
            except _BadField as exc:
                exc.path.append(f"[{key!r}]")
                raise
        return out

    return encode, decode


def _nested(codec: _StructCodec) -> tuple[Encoder, Decoder]:
    # Bound to the codec object, not to its functions: a self-referencing message's codec
    # is still compiling when its fields are, and gets its specialised functions after.
    def encode(value: Any, raws: list[RecordData]) -> Any:
        return codec.encode(value, raws)

    def decode(obj: Any, tail: _Tail) -> Any:
        return codec.decode(obj, tail)

    _NESTED[encode] = _NESTED[decode] = codec
    return encode, decode


_NESTED: dict[Encoder | Decoder, _StructCodec] = {}
"""The encoders and decoders :func:`_nested` made, to their message's codec: generated code
calls the codec directly instead of through them."""
_ITEMS: dict[Encoder | Decoder, Encoder | Decoder] = {}
"""The encoders and decoders :func:`_list_of` made, to their items' (likewise)."""


# --- entry points ----------------------------------------------------------------------


def encode_message(msg: Any, version: int) -> tuple[bytes, list[RecordData]]:
    """Encode ``msg`` at ``version``: the msgpack head, then the raw record parts in order."""
    raws: list[RecordData] = []
    packed = _codec_for(type(msg), version).encode(msg, raws)
    try:
        packer = _per_thread.packer
    except AttributeError:
        packer = _per_thread.packer = msgpack.Packer(use_bin_type=True, buf_size=_PACKER_BYTES)
    head = packer.pack(packed)
    if len(head) > _PACKER_BYTES:
        del _per_thread.packer  # it grew to fit: the next one starts small again
    return head, raws


_per_thread = threading.local()
"""Each thread's msgpack Packer (packb builds one per call, with its buffer; a Packer
empties its buffer after every pack, and on failure) and its Unpacker for small bodies
(see :func:`_unpack_head`)."""
_PACKER_BYTES = 256 * 1024
"""A Packer's buffer (msgpack's default); one that grew past it for a large message (the
metadata of thousands of partitions) is dropped rather than kept for the thread's life."""


def decode_message(cls: type[T], version: int, body: memoryview | bytes) -> T:
    """Decode a body produced by :func:`encode_message` for ``cls`` at ``version``."""
    view = memoryview(body).cast("B")
    obj, head_size = _unpack_head(view)
    tail = _Tail(view[head_size:])
    try:
        msg = _codec_for(cls, version).decode(obj, tail)
    except _BadField as exc:
        path = ".".join(reversed(exc.path)).replace(".[", "[")
        where = f"field {path!r}: " if path else ""
        raise MalformedMessageError(f"{cls.__name__} v{version}: {where}{exc.reason}") from None
    if tail.leftover():
        raise MalformedMessageError(
            f"{cls.__name__} v{version}: {tail.leftover()} bytes after the last records field"
        )
    return typing.cast(T, msg)


def _unpack_head(view: memoryview) -> tuple[Any, int]:
    """Parse the msgpack map at the start of ``view``; returns it and its size in bytes.

    Fed in growing chunks so the record bytes after the map are never copied; msgpack's
    limits are bounded by the body size, so a claimed huge array fails fast.
    """
    size = len(view)
    if size <= _HEAD_CHUNK:
        # Small bodies (every latency-bound request): the thread's Unpacker, fed the whole
        # body (a copy, cheap at this size), then emptied of the bytes after the map.
        # unpackb would build the same state per call and raise ExtraData for those bytes
        # (3.6 -> 2.5 us a produce). Anything odd drops that Unpacker (its buffer may hold
        # part of this body) and falls through to the path below, which words the error.
        try:
            unpacker = _per_thread.unpacker
        except AttributeError:
            unpacker = _per_thread.unpacker = msgpack.Unpacker(
                raw=False, strict_map_key=True, max_buffer_size=_HEAD_CHUNK
            )
        try:
            start = unpacker.tell()
            unpacker.feed(view)
            obj = unpacker.unpack()
            head = unpacker.tell() - start
            if head < size:
                unpacker.read_bytes(size - head)
            return obj, head
        except Exception:
            del _per_thread.unpacker
    unpacker = msgpack.Unpacker(raw=False, strict_map_key=True, max_buffer_size=max(size, 1))
    fed = 0
    chunk = _HEAD_CHUNK
    while True:
        end = min(size, fed + chunk)
        unpacker.feed(view[fed:end])
        fed = end
        try:
            obj = unpacker.unpack()
        except msgpack.OutOfData:
            if fed >= size:
                raise MalformedMessageError(
                    f"message body of {size} bytes ends inside its msgpack map"
                ) from None
            chunk *= 2
            continue
        except (ValueError, TypeError, msgpack.UnpackException) as exc:
            # msgpack reports bad input as ValueError subclasses (FormatError, StackError,
            # invalid UTF-8) or TypeError (unhashable map key): all mean the same to us.
            raise MalformedMessageError(f"message body is not valid msgpack: {exc}") from None
        return obj, unpacker.tell()
