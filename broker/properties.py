"""A Kafka broker's ``server.properties`` as Headwater's configuration.

Two parts, both pure:

- :func:`read_properties`: Java's properties format (``java.util.Properties.load``),
  which Kafka's config files are written in: ``name=value``, ``name: value`` or
  ``name value``; ``#`` and ``!`` comments; a backslash at a line's end continues it (a
  ``sasl.jaas.config`` is often written so); ``\\t``, ``\\n``, ``\\uXXXX`` and ``\\``
  before any other character.
- :func:`kafka_names`: what Kafka reads differently from Headwater, said in Headwater's
  names: the time settings Kafka also takes in minutes or hours
  (``log.retention.hours=168`` is in Kafka's own sample file), ``log.dir`` beside
  ``log.dirs``, Kafka's settings that have no meaning here (its thread pools, socket
  buffers, checkpoint intervals: taken and said to be ignored, each with why), and the
  ones that must not be ignored (KRaft's, ZooKeeper's ACLs and TLS, keystores not in
  PEM): refused with what to do.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from pathlib import Path
from typing import Any

__all__ = [
    "IGNORED",
    "SPELLINGS",
    "KafkaNames",
    "PropertiesError",
    "kafka_names",
    "parse_properties",
    "read_properties",
]

_UNITS: dict[str, tuple[str, int]] = {
    "log.retention.minutes": ("log.retention.ms", 60_000),
    "log.retention.hours": ("log.retention.ms", 3_600_000),
    "log.roll.hours": ("log.roll.ms", 3_600_000),
    "log.roll.jitter.hours": ("log.roll.jitter.ms", 3_600_000),
    "log.local.retention.minutes": ("log.local.retention.ms", 60_000),
    "log.local.retention.hours": ("log.local.retention.ms", 3_600_000),
}
"""Kafka's coarser spellings of a time setting: (the setting, ms per unit). Kafka takes
the finest one given: ms, then minutes, then hours."""

_KEYTAB = (
    "GSSAPI takes its keys from the keytab; the tickets of a broker's own logins to others "
    "are renewed from it by MIT Kerberos (no kinit, no login thread)"
)
_EVENT_LOOP = "Headwater serves a broker's connections and requests on one event loop"
IGNORED: dict[str, str] = {
    "num.network.threads": _EVENT_LOOP,
    "num.io.threads": _EVENT_LOOP,
    "background.threads": _EVENT_LOOP,
    "queued.max.requests": f"{_EVENT_LOOP}, with no request queue between threads",
    "num.recovery.threads.per.data.dir": "logs are opened and recovered one after another "
    "in a worker thread at start-up",
    "num.replica.fetchers": "a follower fetches from each leader on one connection",
    "socket.send.buffer.bytes": "the kernel sizes socket buffers itself (Linux autotuning)",
    "socket.receive.buffer.bytes": "the kernel sizes socket buffers itself (Linux autotuning)",
    "replica.socket.receive.buffer.bytes": "the kernel sizes socket buffers itself",
    "log.flush.scheduler.interval.ms": "logs due an fsync by log.flush.interval.ms are "
    "looked for every second",
    "log.flush.offset.checkpoint.interval.ms": "recovery points are written at a clean stop "
    "and when a log's start moves; after a crash, recovery reads on from the last written",
    "log.flush.start.offset.checkpoint.interval.ms": "log start offsets are written as they "
    "move (retention, DeleteRecords)",
    "inter.broker.protocol.version": "versions are agreed per request (ApiVersions)",
    "log.message.format.version": "batches are always Kafka's record batch v2 (magic 2)",
    "metric.reporters": "metrics are served to Prometheus on metrics.port",
    "kafka.metrics.reporters": "metrics are served to Prometheus on metrics.port",
    "sasl.kerberos.kinit.cmd": _KEYTAB,
    "sasl.kerberos.min.time.before.relogin": _KEYTAB,
    "sasl.kerberos.ticket.renew.jitter": _KEYTAB,
    "sasl.kerberos.ticket.renew.window.factor": _KEYTAB,
}
"""Kafka settings with no meaning in Headwater: taken from a file, and said to be
ignored, each with why."""

_KRAFT = (
    "a KRaft setting: Headwater keeps its metadata in ZooKeeper, as Kafka's ZooKeeper mode "
    "does; use a ZooKeeper-mode server.properties (zookeeper.connect, broker.id)"
)
_REFUSED: dict[str, str] = {
    "process.roles": _KRAFT,
    "node.id": _KRAFT,
    "controller.quorum.voters": _KRAFT,
    "controller.quorum.bootstrap.servers": _KRAFT,
    "controller.listener.names": _KRAFT,
    "zookeeper.clientCnxnSocket": "Headwater connects to ZooKeeper without TLS: keep "
    "ZooKeeper on a private network",
}
"""Kafka settings Headwater cannot honour and must not ignore: refused with what to do."""

_ONLY_OFF: dict[str, str] = {
    "zookeeper.set.acl": "Headwater does not set ZooKeeper ACLs on its znodes: keep "
    "ZooKeeper reachable by the brokers only (a private network, or a firewall)",
    "zookeeper.ssl.client.enable": "Headwater connects to ZooKeeper without TLS: keep "
    "ZooKeeper on a private network",
}
"""Kafka settings Headwater does not do: false (Kafka's default) is taken, true refused."""

_STORE_PASSWORDS = ("ssl.keystore.password", "ssl.truststore.password")

_STORE_TYPES = ("ssl.keystore.type", "ssl.truststore.type")
_PEM_ONLY = (
    "Headwater reads PEM files: convert the store (keytool -importkeystore "
    "-deststoretype PKCS12, then openssl pkcs12 -nodes) and set {name}=PEM"
)


SPELLINGS = frozenset(
    {
        *_UNITS,
        *IGNORED,
        *_REFUSED,
        *_ONLY_OFF,
        *_STORE_TYPES,
        *_STORE_PASSWORDS,
        "log.dir",
        "security.inter.broker.protocol",
    }
)
"""Every Kafka name :func:`kafka_names` reads differently (an environment variable may
give one too)."""


class KafkaNames:
    """:func:`kafka_names`' result: the settings in Headwater's names, and a line for
    each setting taken and ignored."""

    __slots__ = ("ignored", "settings")

    def __init__(self, settings: dict[str, Any], ignored: list[str]) -> None:
        self.settings = settings
        self.ignored = ignored


class PropertiesError(ValueError):
    """A setting of a Kafka config that Headwater refuses, with what to do."""


def kafka_names(items: Mapping[str, Any]) -> KafkaNames:
    """``items`` (one source's settings, in Kafka's names) in Headwater's.

    Raises :class:`PropertiesError` for a setting that cannot be honoured and must not be
    ignored, or a time setting that is not a whole number."""
    settings: dict[str, Any] = {}
    ignored: list[str] = []
    finest: dict[str, int] = {}  # setting -> ms per unit of the spelling taken for it
    for name, value in items.items():
        _refuse(name, value)
        if name in _ONLY_OFF or name in _STORE_TYPES:
            continue  # (what _refuse let through: false; PEM)
        if name == "security.inter.broker.protocol":
            # Kafka's: the listener of that protocol's name (listener names default to
            # their protocol's)
            if "inter.broker.listener.name" not in items:
                settings["inter.broker.listener.name"] = str(value).strip()
            continue
        if name in IGNORED:
            ignored.append(f"{name}={value} is ignored: {IGNORED[name]}")
            continue
        if name == "log.dir":  # Kafka's single directory, when log.dirs is not set
            if "log.dirs" not in items:
                settings["log.dirs"] = value
            continue
        if name in _UNITS:
            target, unit = _UNITS[name]
            if target in items or finest.get(target, unit + 1) <= unit:
                continue  # a finer spelling is given: Kafka takes that one
            settings[target] = _in_ms(name, value, unit)
            finest[target] = unit
            continue
        settings[name] = value
    return KafkaNames(settings, ignored)


def _refuse(name: str, value: Any) -> None:
    """Raise :class:`PropertiesError` for a setting Headwater must not take as given."""
    text = str(value).strip()
    if name in _REFUSED:
        raise PropertiesError(f"{name} is not taken: {_REFUSED[name]}")
    if name in _ONLY_OFF and text.lower() != "false":
        raise PropertiesError(f"{name}={value} is not taken: {_ONLY_OFF[name]}")
    if name in _STORE_TYPES and text.upper() != "PEM":
        raise PropertiesError(f"{name}={value} is not taken: {_PEM_ONLY.format(name=name)}")
    if name in _STORE_PASSWORDS:
        # (Kafka's default store type is JKS, and Kafka refuses a store password on a PEM
        # store: one given means a store Headwater would misread as PEM)
        store = name.removesuffix(".password")
        raise PropertiesError(
            f"{name} is not taken: {store}.location names a JKS or PKCS12 store; "
            f"{_PEM_ONLY.format(name=store + '.type')} (an encrypted PEM key's password is "
            "ssl.key.password)"
        )


def _in_ms(name: str, value: Any, unit: int) -> int:
    try:
        count = int(str(value).strip().replace("_", ""))
    except ValueError:
        raise PropertiesError(f"{name}={value!r} is invalid: it must be an integer") from None
    return -1 if count < 0 else count * unit  # Kafka: any negative time is -1, for ever


def read_properties(path: Path) -> dict[str, str]:
    """``path`` in Java's properties format (UTF-8), as ``{name: value}``; a name given
    twice takes its last value, as Java's ``Properties`` does. Raises
    ``FileNotFoundError`` and ``UnicodeDecodeError`` as opening and decoding do."""
    return parse_properties(path.read_text(encoding="utf-8-sig"))  # (a BOM is no setting)


def parse_properties(text: str) -> dict[str, str]:
    """The text of a properties file as ``{name: value}`` (see :func:`read_properties`)."""
    out: dict[str, str] = {}
    for line in _logical_lines(text):
        key, value = _split(line)
        out[_unescape(key)] = _unescape(value)
    return out


def _logical_lines(text: str) -> list[str]:
    """Natural lines joined where one ends in an odd number of backslashes (the next one's
    leading blanks dropped); blank and comment lines left out."""
    lines: list[str] = []
    pending: str | None = None
    for raw in re.split(r"\r\n|\r|\n", text):  # Java's line ends only
        line = raw.lstrip(" \t\f")
        if pending is None and (not line or line[0] in "#!"):
            continue
        trailing = len(line) - len(line.rstrip("\\"))
        if trailing % 2:
            pending = (pending or "") + line[:-1]
            continue
        lines.append((pending or "") + line)
        pending = None
    if pending:
        lines.append(pending)
    return lines


_KEY_END = re.compile(r"(?<!\\)(?:\\\\)*[=:\s]")


def _split(line: str) -> tuple[str, str]:
    """A logical line's key and value: the key ends at its first unescaped ``=``, ``:``
    or blank; blanks, then one ``=`` or ``:``, then blanks separate it from the value."""
    found = _KEY_END.search(line)
    if found is None:
        return line, ""
    end = found.end() - 1
    key, rest = line[:end], line[end:]
    rest = rest.lstrip(" \t\f")
    if rest[:1] in ("=", ":"):
        rest = rest[1:].lstrip(" \t\f")
    return key, rest


_ESCAPES = {"t": "\t", "n": "\n", "r": "\r", "f": "\f"}


def _unescape(text: str) -> str:
    if "\\" not in text:
        return text
    out: list[str] = []
    i = 0
    while i < len(text):
        char = text[i]
        if char != "\\" or i + 1 == len(text):
            out.append(char)
            i += 1
            continue
        nxt = text[i + 1]
        if nxt == "u" and re.fullmatch(r"[0-9a-fA-F]{4}", text[i + 2 : i + 6]):
            out.append(chr(int(text[i + 2 : i + 6], 16)))
            i += 6
            continue
        out.append(_ESCAPES.get(nxt, nxt))
        i += 2
    return "".join(out)
