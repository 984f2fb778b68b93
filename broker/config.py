"""Broker configuration: every setting declared once, under Kafka's name, validated at start.

Sources, later ones winning: the defaults below, a TOML file, ``HEADWATER_*`` environment
variables (``HEADWATER_LOG_DIRS`` -> ``log.dirs``), and ``--set name=value`` flags. The
TOML file may write names flat (``"broker.id" = 1``) or as tables (``[log] dirs = [...]``).

A wrong name or value stops the start with one line naming the setting, the value, where
it came from and what would be accepted, e.g.
``num.partitions=0 (from --set) is invalid: it must be at least 1``.
"""

from __future__ import annotations

import difflib
import os
import re
import tomllib
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any

from broker.connection_quotas import parse_ip_overrides
from broker.log.config import LogConfig
from broker.properties import SPELLINGS as _KAFKA_SPELLINGS
from broker.properties import PropertiesError, kafka_names, read_properties
from protocol.errors import HeadwaterError
from protocol.kerberos import ShortNamer
from protocol.sasl import SaslError

__all__ = [
    "DYNAMIC_BROKER_CONFIGS",
    "PER_BROKER_CONFIGS",
    "SETTINGS",
    "BrokerConfig",
    "ConfigError",
    "Setting",
    "check_listener_settings",
    "config_text",
    "is_dynamic",
    "is_secret",
    "load_config",
    "parse_dynamic",
    "setting_for",
]

_LONG_MAX = 2**63 - 1
RACK_AWARE_SELECTOR = "org.apache.kafka.common.replica.RackAwareReplicaSelector"
"""Kafka's class name of the replica selector that sends consumers to their rack."""
_INT_MAX = 2**31 - 1
_LISTENER = re.compile(r"^(?P<name>[A-Za-z_][A-Za-z0-9_]*)://(?P<host>[^:/\s]*):(?P<port>\d{1,5})$")


class ConfigError(HeadwaterError):
    """A broker setting is unknown or has a value it cannot take."""


@dataclass(frozen=True, slots=True)
class Setting:
    """One setting: Kafka's name, its type, default, bounds and a line of documentation."""

    name: str
    type: type
    default: Any
    doc: str
    minimum: int | None = None
    maximum: int | None = None
    check: Callable[[Any], str | None] | None = None  # returns what is wrong, or None
    required: bool = False


def _principal_rules(rules: list[str]) -> str | None:
    try:
        ShortNamer(rules, "")
    except SaslError as exc:
        return str(exc)
    return None


def _listeners(value: list[str]) -> str | None:
    names: list[str] = []
    for item in value:
        match = _LISTENER.match(item)
        if match is None:
            return f"{item!r} is not NAME://HOST:PORT, e.g. PLAINTEXT://127.0.0.1:9092"
        if int(match["port"]) > 65535:
            return f"port {match['port']} is over 65535"
        if match["name"].lower() in names:  # listener.name.<l>.* settings are lower case
            return f"the listener name {match['name']} is used twice"
        names.append(match["name"].lower())
    addresses = [item.partition("://")[2] for item in value]
    twice = sorted({a for a in addresses if addresses.count(a) > 1 and not a.endswith(":0")})
    if twice:
        return f"two listeners on {twice[0]}"
    return None if value else "at least one listener is needed"


def is_secret(name: str) -> bool:
    """A password setting (Kafka's type PASSWORD): never shown, logged or sent."""
    return "password" in name or name.endswith(("jaas.config", ".secret.key"))


def listener_name(listener: str) -> str:
    """The NAME of a validated NAME://HOST:PORT."""
    match = _LISTENER.match(listener)
    assert match is not None, listener
    return match["name"]


SECURITY_PROTOCOLS = ("PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL")
TLS_PROTOCOLS = ("SSL", "SASL_SSL")
_PEER_MECHANISMS = ("PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512")
_SASL_MECHANISMS = (*_PEER_MECHANISMS, "OAUTHBEARER", "GSSAPI")
_INTER_BROKER_MECHANISMS = (*_PEER_MECHANISMS, "GSSAPI")
_AUTHORIZERS = (
    "kafka.security.authorizer.AclAuthorizer",
    "kafka.security.auth.SimpleAclAuthorizer",
)
_LISTENER_JAAS = re.compile(
    r"^listener\.name\.[a-z_][a-z0-9_]*\.(plain|scram-sha-256|scram-sha-512|oauthbearer|gssapi)\.sasl\.jaas\.config$"
)
_LISTENER_LIMIT = re.compile(
    r"^listener\.name\.(?P<listener>[a-z_][a-z0-9_]*)\."
    r"(?P<base>max\.connections|max\.connection\.creation\.rate)$"
)
"""Kafka's listener-level connection limits (KIP-402, KIP-612):
``listener.name.<listener>.max.connections`` and ``...max.connection.creation.rate``."""
_CLIENT_AUTH = ("none", "requested", "required")


def _protocol_map(value: list[str]) -> str | None:
    seen: set[str] = set()
    for item in value:
        name, sep, protocol = item.partition(":")
        if not sep or not name:
            return f"{item!r} is not NAME:PROTOCOL, e.g. INTERNAL:PLAINTEXT"
        if name in seen:
            return f"the listener name {name} is mapped twice"
        seen.add(name)
        if protocol not in SECURITY_PROTOCOLS:
            return f"{item!r}: the protocol must be one of {', '.join(SECURITY_PROTOCOLS)}"
    return None


_DAY_MS = 24 * 3600 * 1000


def _ip_overrides(value: str) -> str | None:
    try:
        parse_ip_overrides(value)
    except ValueError as exc:
        return str(exc)
    return None


def _assignors(value: list[str]) -> str | None:
    """Kafka's two server assignors, by name (a class name of Kafka's is not taken)."""
    if not value:
        return "name at least one of uniform, range"
    unknown = [name for name in value if name not in ("uniform", "range")]
    if unknown:
        return f"{unknown[0]} is not a server assignor here; the assignors are uniform, range"
    return None


def _topic_check(topic_name: str, value: Any) -> str | None:
    """A broker default of a topic setting is checked by the topic setting's own rule."""
    try:
        LogConfig.from_properties({topic_name: value})
    except ValueError as exc:
        return str(exc).partition(" is invalid: ")[2] or str(exc)
    return None


SETTINGS: tuple[Setting, ...] = (
    Setting(
        "broker.id",
        int,
        -1,
        "This broker's id, unique in the cluster.",
        0,
        2**31 - 1,
        required=True,
    ),
    Setting(
        "listeners",
        list,
        ["PLAINTEXT://127.0.0.1:9092"],
        "Where the broker listens (port 0: any free port).",
        check=_listeners,
    ),
    Setting(
        "advertised.listeners",
        list,
        [],
        "Where clients should connect; defaults to listeners.",
        check=lambda v: None if not v else _listeners(v),
    ),
    Setting(
        "listener.security.protocol.map",
        list,
        [f"{p}:{p}" for p in SECURITY_PROTOCOLS],
        "Each listener name's security protocol, NAME:PROTOCOL (PLAINTEXT, SSL, "
        "SASL_PLAINTEXT or SASL_SSL).",
        check=_protocol_map,
    ),
    Setting(
        "kafka.protocol.listeners",
        list,
        [],
        "Listener names that speak Kafka's own wire protocol (for Kafka clients: "
        "kafka-python, aiokafka, confluent-kafka, kcat, Java); the others speak "
        "Headwater's. Not the inter-broker listener.",
    ),
    Setting(
        "inter.broker.listener.name",
        str,
        "",
        "The listener brokers use to reach each other (replication, the controller); "
        "empty: the first of listeners.",
    ),
    Setting(
        "ssl.keystore.location",
        str,
        "",
        "PEM file with this broker's certificate (chain) and private key, for SSL listeners.",
    ),
    Setting("ssl.key.password", str, "", "Password of the private key, if it is encrypted."),
    Setting(
        "ssl.truststore.location",
        str,
        "",
        "PEM file of the CA certificates trusted for peers (clients with ssl.client.auth, "
        "other brokers over SSL); empty: the system's.",
    ),
    Setting(
        "ssl.client.auth",
        str,
        "none",
        "Client certificates on SSL listeners: none, requested or required (mutual TLS).",
        check=lambda v: None if v in _CLIENT_AUTH else "it must be none, requested or required",
    ),
    Setting(
        "ssl.endpoint.identification.algorithm",
        str,
        "https",
        "https: a broker connecting to another over SSL checks the name in its certificate; "
        "empty: it does not.",
        check=lambda v: None if v in ("https", "") else "it must be https or empty",
    ),
    Setting(
        "ssl.allow.dn.changes",
        bool,
        False,
        "A new keystore set while the broker runs (dynamic ssl.keystore.location) may hold a "
        "certificate of another subject (DN) than the one in use (Kafka's KIP-978).",
    ),
    Setting(
        "ssl.allow.san.changes",
        bool,
        False,
        "... and may leave out subject alternative names of the one in use (KIP-978).",
    ),
    Setting(
        "delegation.token.secret.key",
        str,
        "",
        "The secret delegation tokens' HMACs are made with (KIP-48); the same on every "
        "broker. Empty: tokens are off.",
    ),
    Setting(
        "delegation.token.max.lifetime.ms",
        int,
        7 * 24 * 3_600_000,
        "A delegation token never lives longer, however often it is renewed.",
        1,
    ),
    Setting(
        "delegation.token.expiry.time.ms",
        int,
        24 * 3_600_000,
        "A delegation token expires this long after it is made or renewed (unless renewed "
        "for another time).",
        1,
    ),
    Setting(
        "delegation.token.expiry.check.interval.ms",
        int,
        3_600_000,
        "How often each broker deletes expired delegation tokens.",
        1,
    ),
    Setting(
        "quota.window.num",
        int,
        11,
        "Samples a client's byte rate is measured over, for quotas.",
        2,
        1000,
    ),
    Setting(
        "quota.window.size.seconds",
        int,
        1,
        "Length of each quota sample.",
        1,
        3600,
    ),
    Setting(
        "authorizer.class.name",
        str,
        "",
        "kafka.security.authorizer.AclAuthorizer turns ACLs on (kept in ZooKeeper); empty: "
        "every request is allowed.",
        check=lambda v: (
            None
            if v in ("", *_AUTHORIZERS)
            else f"use {_AUTHORIZERS[0]}, or leave it empty for none"
        ),
    ),
    Setting(
        "super.users",
        str,
        "",
        "Principals allowed everything, ';'-separated (User:admin;User:ANONYMOUS).",
        check=lambda v: next(
            (
                f"{p.strip()!r} is not Type:name, e.g. User:admin"
                for p in v.split(";")
                if p.strip() and ":" not in p.strip()
            ),
            None,
        ),
    ),
    Setting(
        "allow.everyone.if.no.acl.found",
        bool,
        False,
        "With ACLs on: a resource without any ACL is open to all (else to none).",
    ),
    Setting(
        "sasl.enabled.mechanisms",
        list,
        list(_PEER_MECHANISMS),
        "The SASL mechanisms SASL listeners offer: PLAIN, SCRAM-SHA-256, SCRAM-SHA-512, "
        "OAUTHBEARER (not by default: see sasl.oauthbearer.jwks.endpoint.url), GSSAPI "
        "(Kerberos: a keytab in the listener's sasl.jaas.config).",
        check=lambda v: next(
            (
                f"{m!r} is not one of {', '.join(_SASL_MECHANISMS)}"
                for m in v
                if m not in _SASL_MECHANISMS
            ),
            None if v else "at least one mechanism is needed",
        ),
    ),
    Setting(
        "sasl.mechanism.inter.broker.protocol",
        str,
        "PLAIN",
        "The mechanism a broker logs in to others with on a SASL inter-broker listener.",
        check=lambda v: (
            None
            if v in _INTER_BROKER_MECHANISMS
            else f"use one of {', '.join(_INTER_BROKER_MECHANISMS)}"
        ),
    ),
    Setting(
        "sasl.jaas.config",
        str,
        "",
        "JAAS options of SASL listeners: username/password (this broker's own login to "
        "others) and user_<name>=<password> (PLAIN's users). Kafka's "
        "listener.name.<listener>.<mechanism>.sasl.jaas.config overrides it.",
    ),
    Setting(
        "sasl.kerberos.service.name",
        str,
        "",
        "GSSAPI: the Kerberos service name clients ask for, the primary of the principal "
        "in the listener's sasl.jaas.config (which it must match when set), e.g. kafka.",
    ),
    Setting(
        "sasl.kerberos.principal.to.local.rules",
        list,
        ["DEFAULT"],
        "GSSAPI: how a client's Kerberos principal becomes its user name (User:<name>): "
        "the first rule that applies, DEFAULT (the primary, in the default realm) or "
        "RULE:[n:format](regex)s/pattern/replacement/g/L, Kafka's syntax.",
        check=_principal_rules,
    ),
    Setting(
        "sasl.oauthbearer.jwks.endpoint.url",
        str,
        "",
        "OAUTHBEARER: where the identity provider's signing keys (a JWKS) are read, "
        "https://, http:// or file://; a token must be signed by one of them (KIP-768). "
        "Unset, unsigned tokens are taken (Kafka's unsecured validator, for development).",
        check=lambda v: (
            None
            if not v or v.startswith(("https://", "http://", "file:/"))
            else "give an https://, http:// or file:// URL"
        ),
    ),
    Setting(
        "sasl.oauthbearer.jwks.endpoint.refresh.ms",
        int,
        3_600_000,
        "How often the JWKS is read again (and at once for a token naming a key not seen).",
        1_000,
    ),
    Setting(
        "sasl.oauthbearer.expected.audience",
        list,
        [],
        "OAUTHBEARER: a token's 'aud' must name one of these (empty: not checked).",
    ),
    Setting(
        "sasl.oauthbearer.expected.issuer",
        str,
        "",
        "OAUTHBEARER: a token's 'iss' must be this (empty: not checked).",
    ),
    Setting(
        "sasl.oauthbearer.sub.claim.name",
        str,
        "sub",
        "OAUTHBEARER: the claim naming the token's principal (User:<it>).",
        check=lambda v: None if v else "name a claim",
    ),
    Setting(
        "sasl.oauthbearer.scope.claim.name",
        str,
        "scope",
        "OAUTHBEARER: the claim holding the token's scope.",
        check=lambda v: None if v else "name a claim",
    ),
    Setting(
        "sasl.oauthbearer.clock.skew.seconds",
        int,
        30,
        "OAUTHBEARER: how far this broker's clock may be from the identity provider's.",
        0,
        3600,
    ),
    Setting(
        "connection.failed.authentication.delay.ms",
        int,
        100,
        "How long a failed SASL login waits before its answer and the close.",
        0,
        60_000,
    ),
    Setting(
        "broker.rack",
        str,
        "",
        "This broker's rack (or zone): each partition's replicas go to as many racks as "
        "they can. Set on every broker or on none.",
        check=lambda v: None if len(v) <= 255 else "at most 255 characters",
    ),
    Setting(
        "zookeeper.connect",
        str,
        "127.0.0.1:2181",
        "ZooKeeper connection string: host:port[,host:port...][/chroot].",
    ),
    Setting(
        "zookeeper.session.timeout.ms",
        int,
        18_000,
        "ZooKeeper session timeout: how long a silent broker stays registered.",
        1_000,
    ),
    Setting(
        "zookeeper.connection.timeout.ms",
        int,
        18_000,
        "How long to wait for the first ZooKeeper connection.",
        100,
    ),
    Setting(
        "log.dirs",
        list,
        ["/tmp/headwater-logs"],
        "Directories that hold partition logs.",
        check=lambda v: None if v else "name at least one directory",
    ),
    Setting("num.partitions", int, 1, "Default partition count of new topics.", 1, 1_000_000),
    Setting(
        "default.replication.factor", int, 1, "Default replication factor of new topics.", 1, 32_767
    ),
    Setting(
        "min.insync.replicas", int, 1, "In-sync replicas an acks=all produce needs.", 1, 32_767
    ),
    Setting(
        "auto.create.topics.enable", bool, True, "Create a topic when a client first asks for it."
    ),
    Setting("delete.topic.enable", bool, True, "Allow topics to be deleted."),
    Setting(
        "unclean.leader.election.enable",
        bool,
        False,
        "Allow an out-of-sync replica to lead (may lose acknowledged data).",
    ),
    Setting(
        "auto.leader.rebalance.enable",
        bool,
        True,
        "Move leadership back to the preferred replica after restarts.",
    ),
    Setting(
        "controlled.shutdown.enable", bool, True, "Move leaderships away before a broker stops."
    ),
    Setting(
        "metrics.port",
        int,
        -1,
        "Port of the Prometheus endpoint GET /metrics (-1: off, 0: any free port).",
        -1,
        65_535,
    ),
    Setting("metrics.host", str, "127.0.0.1", "Address the metrics endpoint listens on."),
    Setting(
        "heap.settle.enable",
        bool,
        True,
        "Freeze the broker's long-lived objects once its partitions settle, so CPython's "
        "full collections skip them (broker/heap.py).",
    ),
    Setting(
        "heap.settle.quiet.ms",
        int,
        5_000,
        "Settle once the partitions here have not changed for this long (0 with no spacing: "
        "a settle on each housekeeping tick while the controller sends requests).",
        0,
        _LONG_MAX,
    ),
    Setting(
        "heap.settle.spacing.ms",
        int,
        60_000,
        "At most one settle for partition changes this often.",
        0,
        _LONG_MAX,
    ),
    Setting(
        "heap.thaw.interval.ms",
        int,
        1_800_000,
        "Thaw what is frozen at least this often, freeing what became garbage since.",
        1_000,
        _LONG_MAX,
    ),
    Setting(
        "heap.thaw.dropped.partitions",
        int,
        100,
        "Thaw at the next settle once this many partitions in all stopped being replicas "
        "here (deleted or moved away) since the last thaw.",
        1,
        2**31 - 1,
    ),
    Setting(
        "controlled.shutdown.max.retries",
        int,
        3,
        "Attempts to hand leaderships over before stopping anyway.",
        0,
    ),
    Setting(
        "controlled.shutdown.retry.backoff.ms",
        int,
        5_000,
        "Wait between controlled shutdown attempts.",
        0,
    ),
    Setting(
        "leader.imbalance.check.interval.seconds",
        int,
        300,
        "How often the controller moves leadership back to preferred replicas.",
        1,
    ),
    Setting(
        "replica.lag.time.max.ms",
        int,
        30_000,
        "A follower this far behind in time leaves the ISR.",
        1,
    ),
    Setting(
        "replica.fetch.wait.max.ms",
        int,
        500,
        "How long a follower's fetch waits at the leader for new data.",
        0,
    ),
    Setting(
        "replica.fetch.max.bytes",
        int,
        1_048_576,
        "Bytes a follower asks for per partition (a larger first batch still comes).",
        1,
        2**31 - 1,
    ),
    Setting(
        "max.incremental.fetch.session.cache.slots",
        int,
        1000,
        "Fetch sessions (KIP-227) this broker keeps; past it a new one replaces one idle "
        "for 2 minutes, or fetches go without one (0: never keep any).",
        0,
    ),
    Setting(
        "replica.high.watermark.checkpoint.interval.ms",
        int,
        5_000,
        "How often high watermarks are written to replication-offset-checkpoint.",
        1,
    ),
    Setting(
        "socket.request.max.bytes",
        int,
        104_857_600,
        "Largest request frame accepted.",
        1024,
        2**31 - 1,
    ),
    Setting(
        "max.connections",
        int,
        _INT_MAX,
        "Client connections the broker takes in all (beside other listeners, the "
        "inter-broker listener's are not counted and always get in); one past it is "
        "closed at once.",
        0,
    ),
    Setting(
        "max.connections.per.ip",
        int,
        _INT_MAX,
        "Connections one address may hold, on every listener; one past it is closed at once.",
        0,
    ),
    Setting(
        "socket.listen.backlog.size",
        int,
        1024,
        "Connections a listener holds before it takes them: the kernel's backlog, and "
        "those waiting their turn past max.connection.creation.rate (Kafka's default is "
        "50: here a burst of 100 connections then cost a 1 s SYN retransmit).",
        1,
    ),
    Setting(
        "max.connection.creation.rate",
        int,
        _INT_MAX,
        "New client connections a second the broker takes (KIP-612; beside other "
        "listeners, the inter-broker listener's are not counted). Past it, new connections "
        "wait their turn: each is read only when the rate allows.",
        0,
    ),
    Setting(
        "max.connections.per.ip.overrides",
        str,
        "",
        "Addresses with a limit of their own: IP:COUNT pairs, e.g. 10.0.0.7:50,10.0.0.8:0.",
        check=_ip_overrides,
    ),
    Setting(
        "connections.max.reauth.ms",
        int,
        0,
        "SASL sessions last at most this long (KIP-368; an OAUTHBEARER one no longer than "
        "its token): a client re-authenticates on its connection before then, or the "
        "connection is closed at its next request. 0: sessions do not expire.",
        0,
    ),
    Setting(
        "connections.max.idle.ms",
        int,
        600_000,
        "Close a connection silent for this long.",
        1,
    ),
    Setting(
        "message.max.bytes",
        int,
        1_048_588,
        "Largest record batch accepted (topic: max.message.bytes).",
        0,
        2**31 - 1,
    ),
    Setting("log.segment.bytes", int, 1024**3, "Segment size before a roll.", 14, 2**31 - 1),
    Setting("log.roll.ms", int, 7 * _DAY_MS, "Segment age before a roll.", 1),
    Setting("log.retention.ms", int, 7 * _DAY_MS, "Keep segments this long (-1: forever).", -1),
    Setting(
        "log.retention.bytes",
        int,
        -1,
        "Keep at most this many bytes per partition (-1: no limit).",
        -1,
    ),
    Setting("log.retention.check.interval.ms", int, 300_000, "How often retention runs.", 1),
    Setting(
        "producer.id.expiration.ms",
        int,
        _DAY_MS,
        "Forget an idempotent producer not heard from this long (KIP-854).",
        1,
    ),
    Setting(
        "producer.id.expiration.check.interval.ms",
        int,
        600_000,
        "How often expired producer ids are looked for.",
        1,
    ),
    Setting(
        "log.index.size.max.bytes",
        int,
        10 * 1024 * 1024,
        "Preallocated size of an index file.",
        16,
        2**31 - 1,
    ),
    Setting(
        "log.index.interval.bytes",
        int,
        4096,
        "Bytes of log between two index entries.",
        0,
        2**31 - 1,
    ),
    Setting("log.flush.interval.messages", int, _LONG_MAX, "Records written before an fsync.", 1),
    Setting(
        "log.flush.interval.ms",
        int,
        _LONG_MAX,
        "Time between fsyncs of a log with unflushed records.",
        0,
    ),
    Setting(
        "log.segment.delete.delay.ms", int, 60_000, "Wait before unlinking a deleted segment.", 0
    ),
    Setting(
        "log.cleanup.policy",
        str,
        "delete",
        "What happens to old segments: delete, compact, or compact,delete.",
        check=lambda v: _topic_check("cleanup.policy", v),
    ),
    Setting(
        "log.cleaner.delete.retention.ms",
        int,
        _DAY_MS,
        "How long a compacted topic keeps its tombstones.",
        0,
    ),
    Setting(
        "log.cleaner.min.compaction.lag.ms", int, 0, "A record stays uncompacted this long.", 0
    ),
    Setting(
        "log.cleaner.max.compaction.lag.ms",
        int,
        _LONG_MAX,
        "A record is compacted within this long at the latest.",
        1,
    ),
    Setting(
        "log.cleaner.min.cleanable.ratio",
        float,
        0.5,
        "Share of a log that must be uncompacted before it is compacted.",
        check=lambda v: _topic_check("min.cleanable.dirty.ratio", v),
    ),
    Setting(
        "log.message.timestamp.type",
        str,
        "CreateTime",
        "Record timestamps: CreateTime (the producer's) or LogAppendTime (the leader's clock).",
        check=lambda v: _topic_check("message.timestamp.type", v),
    ),
    Setting(
        "log.message.timestamp.before.max.ms",
        int,
        _LONG_MAX,
        "A CreateTime record older than this by the leader's clock is refused with "
        "INVALID_TIMESTAMP (KIP-937).",
        0,
        _LONG_MAX,
    ),
    Setting(
        "log.message.timestamp.after.max.ms",
        int,
        3_600_000,
        "A CreateTime record ahead of the leader's clock by more than this is refused with "
        "INVALID_TIMESTAMP (KIP-937; Kafka 4.0's default, KIP-1030: an hour).",
        0,
        _LONG_MAX,
    ),
    Setting(
        "compression.type",
        str,
        "producer",
        "Codec batches are stored in: producer (as sent), uncompressed, gzip, snappy, lz4, zstd.",
        check=lambda v: _topic_check("compression.type", v),
    ),
    Setting(
        "compression.gzip.level",
        int,
        -1,
        "The level of the broker's gzip compression when compression.type is gzip (KIP-390): "
        "1-9, or -1 for zlib's default.",
        check=lambda v: _topic_check("compression.gzip.level", v),
    ),
    Setting(
        "compression.lz4.level",
        int,
        9,
        "The level of the broker's lz4 compression when compression.type is lz4 (KIP-390): "
        "1-17; 9 is lz4's fast mode, others its high-compression one.",
        check=lambda v: _topic_check("compression.lz4.level", v),
    ),
    Setting(
        "compression.zstd.level",
        int,
        3,
        "The level of the broker's zstd compression when compression.type is zstd (KIP-390): "
        "-131072 to 22.",
        check=lambda v: _topic_check("compression.zstd.level", v),
    ),
    Setting(
        "log.roll.jitter.ms",
        int,
        0,
        "Up to this much is taken off log.roll.ms, chosen per segment, so logs made together "
        "do not all roll at once.",
        0,
    ),
    Setting(
        "log.preallocate",
        bool,
        False,
        "Preallocate segment files (Kafka's; only false here).",
        check=lambda v: _topic_check("preallocate", v),
    ),
    *(
        Setting(
            f"log.local.retention.{unit}",
            int,
            -2,
            f"Tiered storage's local retention in {unit} (KIP-405; -2: log.retention.{unit}); "
            "kept and shown only, as tiered storage is not in Headwater.",
            -2,
        )
        for unit in ("ms", "bytes")
    ),
    Setting(
        "group.min.session.timeout.ms",
        int,
        6_000,
        "Shortest session timeout a consumer may ask for.",
        1,
    ),
    Setting(
        "group.max.size",
        int,
        2**31 - 1,
        "The most members a consumer group may have (KIP-389): a join beyond it is "
        "GROUP_MAX_SIZE_REACHED.",
        1,
        2**31 - 1,
    ),
    Setting(
        "group.max.session.timeout.ms",
        int,
        1_800_000,
        "Longest session timeout a consumer may ask for.",
        1,
    ),
    Setting(
        "group.initial.rebalance.delay.ms",
        int,
        3_000,
        "How long a new group waits for more members before its first generation.",
        0,
    ),
    Setting(
        "group.consumer.session.timeout.ms",
        int,
        45_000,
        "A member of a group of the new consumer protocol (KIP-848) not heard from for this "
        "long is removed (the client's session.timeout.ms is not used there).",
        1,
        2**31 - 1,
    ),
    Setting(
        "group.consumer.heartbeat.interval.ms",
        int,
        5_000,
        "How often members of a group of the new consumer protocol heartbeat (told to them "
        "in each answer).",
        1,
        2**31 - 1,
    ),
    Setting(
        "group.consumer.max.size",
        int,
        2**31 - 1,
        "The most members a group of the new consumer protocol may have: a join beyond it is "
        "GROUP_MAX_SIZE_REACHED.",
        1,
        2**31 - 1,
    ),
    Setting(
        "group.consumer.migration.policy",
        str,
        "bidirectional",
        "Whether a group with members moves between the two consumer group protocols as "
        "its members do (Kafka's online migration): bidirectional, upgrade (classic to the "
        "new protocol only), downgrade (back only), disabled. An empty group always does.",
        check=lambda v: (
            None
            if str(v).lower() in ("bidirectional", "upgrade", "downgrade", "disabled")
            else "one of bidirectional, upgrade, downgrade, disabled"
        ),
    ),
    Setting(
        "group.consumer.assignors",
        list,
        ["uniform", "range"],
        "The server assignors a group of the new consumer protocol may name "
        "(group.remote.assignor); the first is used where none is named.",
        check=_assignors,
    ),
    Setting(
        "group.share.enable",
        bool,
        True,
        "Serve share groups (KIP-932: ShareGroupHeartbeat, ShareFetch, ShareAcknowledge); "
        "off, they are answered UNSUPPORTED_VERSION (Kafka's share.version=0).",
    ),
    Setting(
        "group.share.session.timeout.ms",
        int,
        45_000,
        "A share group member not heard from for this long is removed from its group.",
        1,
        2**31 - 1,
    ),
    Setting(
        "group.share.heartbeat.interval.ms",
        int,
        5_000,
        "How often share group members heartbeat (told to them in each answer).",
        1,
        2**31 - 1,
    ),
    Setting(
        "group.share.max.size",
        int,
        200,
        "The most members a share group may have: a join beyond it is GROUP_MAX_SIZE_REACHED.",
        1,
        1000,
    ),
    Setting(
        "group.share.record.lock.duration.ms",
        int,
        30_000,
        "How long a share group member holds the records a fetch gave it (its acquisition "
        "lock): not acknowledged by then, they are delivered again.",
        1000,
        3_600_000,
    ),
    Setting(
        "group.share.delivery.count.limit",
        int,
        5,
        "How often a record is delivered to a share group before it is archived instead "
        "(released, or its lock ended, that many times).",
        2,
        10,
    ),
    Setting(
        "group.share.partition.max.record.locks",
        int,
        2000,
        "The most records of a partition a share group may have in flight (from the "
        "first not yet done).",
        100,
        10_000,
    ),
    Setting(
        "group.share.max.share.sessions",
        int,
        2000,
        "The most share sessions (one per share group member fetching here) a broker holds; "
        "beyond it a new one is SHARE_SESSION_LIMIT_REACHED.",
        1,
        2**31 - 1,
    ),
    Setting(
        "offsets.topic.num.partitions", int, 50, "Partitions of __consumer_offsets.", 1, 10_000
    ),
    Setting(
        "offsets.topic.replication.factor",
        int,
        3,
        "Replication factor of __consumer_offsets (capped at the cluster size).",
        1,
        32_767,
    ),
    Setting(
        "offsets.retention.minutes",
        int,
        10_080,
        "Committed offsets of a group are kept this long once the group is empty (of a "
        "group without members, from each commit; KIP-211), then deleted.",
        1,
        2**31 - 1,
    ),
    Setting(
        "offsets.retention.check.interval.ms",
        int,
        600_000,
        "How often the coordinator deletes expired offsets, and empty groups without any.",
        1,
        2**63 - 1,
    ),
    Setting(
        "offsets.topic.segment.bytes",
        int,
        104_857_600,
        "Segment size of __consumer_offsets (small segments compact sooner).",
        14,
        2**31 - 1,
    ),
    Setting(
        "transaction.state.log.num.partitions",
        int,
        50,
        "Partitions of __transaction_state.",
        1,
        10_000,
    ),
    Setting(
        "transaction.state.log.replication.factor",
        int,
        3,
        "Replication factor of __transaction_state (capped at the cluster size).",
        1,
        32_767,
    ),
    Setting(
        "transaction.state.log.min.isr",
        int,
        2,
        "min.insync.replicas of __transaction_state (capped at its replication factor).",
        1,
        32_767,
    ),
    Setting(
        "transaction.state.log.segment.bytes",
        int,
        104_857_600,
        "Segment size of __transaction_state.",
        14,
        2**31 - 1,
    ),
    Setting(
        "transaction.max.timeout.ms",
        int,
        900_000,
        "Longest transaction.timeout.ms a producer may ask for.",
        1,
    ),
    Setting(
        "transaction.partition.verification.enable",
        bool,
        True,
        "Check a transaction's first batch in a partition with its coordinator (KIP-890): "
        "a late produce cannot open a transaction no marker ends.",
    ),
    Setting(
        "transactional.id.expiration.ms",
        int,
        604_800_000,
        "A transactional id not used for this long is forgotten.",
        1,
    ),
    Setting(
        "transaction.abort.timed.out.transaction.cleanup.interval.ms",
        int,
        10_000,
        "How often the coordinator aborts transactions past their timeout.",
        1,
    ),
    Setting(
        "transaction.remove.expired.transaction.cleanup.interval.ms",
        int,
        3_600_000,
        "How often the coordinator forgets expired transactional ids.",
        1,
    ),
    Setting("log.cleaner.enable", bool, True, "Compact topics with cleanup.policy=compact."),
    Setting("log.cleaner.threads", int, 1, "Logs compacted at the same time.", 1, 64),
    Setting(
        "log.cleaner.dedupe.buffer.size",
        int,
        134_217_728,
        "Memory for the cleaners' key maps (24 bytes per key), shared by the threads.",
        1024,
    ),
    Setting(
        "replica.selector.class",
        str,
        "",
        "How a leader picks the replica a consumer fetches from (KIP-392): empty, itself; "
        f"{RACK_AWARE_SELECTOR}, a replica in the consumer's client.rack when the leader "
        "is in another.",
        check=lambda v: (
            None if v in ("", RACK_AWARE_SELECTOR) else f"it must be empty or {RACK_AWARE_SELECTOR}"
        ),
    ),
    Setting(
        "leader.replication.throttled.rate",
        int,
        _LONG_MAX,
        "Bytes per second this broker sends, as a leader, to out-of-sync followers of the "
        "replicas it leads that the topics list in leader.replication.throttled.replicas "
        "(set live, e.g. by reassign-partitions --throttle).",
        0,
    ),
    Setting(
        "follower.replication.throttled.rate",
        int,
        _LONG_MAX,
        "Bytes per second this broker fetches, as a follower, for out-of-sync replicas "
        "the topics list in follower.replication.throttled.replicas.",
        0,
    ),
    Setting(
        "replica.alter.log.dirs.io.max.bytes.per.second",
        int,
        _LONG_MAX,
        "Bytes per second this broker copies, in all, for moves of logs between its "
        "log.dirs (AlterReplicaLogDirs; set live with `headwater configs`).",
        1,
    ),
    Setting(
        "num.replica.alter.log.dirs.threads",
        int,
        0,
        "Reads of logs being moved between log.dirs that run at once (each in a worker "
        "thread); 0, Kafka's unset: one per log dir.",
        0,
        1024,
    ),
    Setting(
        "log.cleaner.backoff.ms",
        int,
        15_000,
        "How long the cleaner sleeps when no log needs compacting.",
        0,
    ),
)

_BY_NAME = {s.name: s for s in SETTINGS}


def setting_for(name: str) -> Setting | None:
    """A setting by its name: one of :data:`SETTINGS`, or a listener's own connection
    limit (``listener.name.<listener>.max.connections``, ``...max.connection.creation.rate``:
    the broker-wide one's type, at least 1 as Kafka's, and its value unless set)."""
    found = _BY_NAME.get(name)
    if found is not None:
        return found
    base = base_of(name)
    if base is None:
        return None
    what = "connections" if base == "max.connections" else "new connections a second"
    listener = name.split(".")[2]
    return replace(
        _BY_NAME[base],
        name=name,
        minimum=1,  # Kafka refuses 0 (it would shut the listener, the brokers' one too)
        doc=f"The {what} the listener named {listener} takes, its own connections counted "
        f"(the inter-broker listener's too); not set, {base}'s value (Kafka's listener "
        "prefix).",
    )


def base_of(name: str) -> str | None:
    """The broker-wide setting a listener's own one overrides (``max.connections`` for
    ``listener.name.<listener>.max.connections``); None for any other name."""
    match = _LISTENER_LIMIT.match(name)
    return None if match is None else match["base"]


def _in_force(values: Mapping[str, Any], name: str) -> Any:
    """``name``'s value among ``values``: a listener's own limit not there is the
    broker-wide one's (Kafka's valuesWithPrefixOverride)."""
    if name in values:
        return values[name]
    base = base_of(name)
    return values[base] if base is not None else None


def is_dynamic(name: str) -> bool:
    """Whether ``name`` can be changed on a running broker (a dynamic broker config)."""
    return name in DYNAMIC_BROKER_CONFIGS or _LISTENER_LIMIT.match(name) is not None


TOPIC_CONFIG_SYNONYMS = {
    "segment.bytes": "log.segment.bytes",
    "segment.ms": "log.roll.ms",
    "segment.index.bytes": "log.index.size.max.bytes",
    "index.interval.bytes": "log.index.interval.bytes",
    "retention.ms": "log.retention.ms",
    "retention.bytes": "log.retention.bytes",
    "flush.messages": "log.flush.interval.messages",
    "flush.ms": "log.flush.interval.ms",
    "max.message.bytes": "message.max.bytes",
    "file.delete.delay.ms": "log.segment.delete.delay.ms",
    "min.insync.replicas": "min.insync.replicas",
    "unclean.leader.election.enable": "unclean.leader.election.enable",
    "cleanup.policy": "log.cleanup.policy",
    "delete.retention.ms": "log.cleaner.delete.retention.ms",
    "min.compaction.lag.ms": "log.cleaner.min.compaction.lag.ms",
    "max.compaction.lag.ms": "log.cleaner.max.compaction.lag.ms",
    "min.cleanable.dirty.ratio": "log.cleaner.min.cleanable.ratio",
    "message.timestamp.type": "log.message.timestamp.type",
    "message.timestamp.before.max.ms": "log.message.timestamp.before.max.ms",
    "message.timestamp.after.max.ms": "log.message.timestamp.after.max.ms",
    "compression.type": "compression.type",
    "compression.gzip.level": "compression.gzip.level",
    "compression.lz4.level": "compression.lz4.level",
    "compression.zstd.level": "compression.zstd.level",
    "segment.jitter.ms": "log.roll.jitter.ms",
    "preallocate": "log.preallocate",
    "local.retention.ms": "log.local.retention.ms",
    "local.retention.bytes": "log.local.retention.bytes",
}
"""Topic config -> the broker setting that gives its default (Kafka's synonyms)."""

PER_BROKER_CONFIGS = frozenset({"ssl.keystore.location", "ssl.truststore.location"})
"""Dynamic configs a broker has of its own, never every broker's default (Kafka's
PerBrokerConfigs): each broker's certificate, and the CAs it trusts, are its own."""

DYNAMIC_BROKER_CONFIGS = frozenset(
    {
        *TOPIC_CONFIG_SYNONYMS.values(),
        "leader.replication.throttled.rate",
        "follower.replication.throttled.rate",
        "replica.alter.log.dirs.io.max.bytes.per.second",
        "max.connections",
        "max.connections.per.ip",
        "max.connections.per.ip.overrides",
        "max.connection.creation.rate",
        *PER_BROKER_CONFIGS,
    }
)
"""The settings that can be changed on a running cluster, per broker or as every broker's
default (Kafka's KIP-226 dynamic broker configs: here, the broker defaults of the topic
configs, which a topic without an override of its own follows at once, the replication
throttles, the connection limits and rate, and a broker's TLS certificate and truststore)."""

STATIC, DEFAULT = "STATIC_BROKER_CONFIG", "DEFAULT_CONFIG"
DYNAMIC_BROKER, DYNAMIC_DEFAULT = "DYNAMIC_BROKER_CONFIG", "DYNAMIC_DEFAULT_BROKER_CONFIG"
"""Where a setting's value comes from (Kafka's ConfigSource names), strongest first:
this broker's dynamic value, every broker's dynamic default, its config file (or
environment, or ``--set``), the built-in default."""


class BrokerConfig:
    """The validated settings of one broker: ``config["log.dirs"]``."""

    def __init__(
        self,
        values: Mapping[str, Any],
        sources: Mapping[str, str],
        extra: Mapping[str, str] | None = None,
    ) -> None:
        self._static = dict(values)
        self._values = self._static  # what is in force: the dynamic layers over _static
        self.dynamic_default: dict[str, Any] = {}
        self.dynamic_broker: dict[str, Any] = {}
        self.sources = dict(sources)  # name -> "default", "file x.toml", "env X", "--set"
        self._bases: dict[str, str] = {}
        self.ignored: list[str] = []
        """A line for each of Kafka's settings given and ignored (no meaning here)."""
        self.extra = dict(extra or {})
        """Settings whose names carry a listener (Kafka's
        ``listener.name.<listener>.<mechanism>.sasl.jaas.config``)."""

    def __getitem__(self, name: str) -> Any:
        try:
            return self._values[name]
        except KeyError:
            base = self._bases.get(name)  # a listener's own limit, not set: the broker's
            if base is None:
                base = base_of(name)
                if base is None:
                    raise
                if self._brokers_own(name):
                    base = ""  # ...but never the brokers' own listener's (see there)
                self._bases[name] = base  # once per name: this runs per connection
            return self._values[base] if base else _INT_MAX  # the brokers' own: no limit

    def _brokers_own(self, name: str) -> bool:
        """Whether ``name`` is a limit of the inter-broker listener beside others: the
        broker-wide limits never touch that one here (``max.connections=0`` shuts the
        clients out, never replication or the controller), so its own limit is none
        unless set (Kafka's prefix override would give it the broker-wide value)."""
        return (
            len(self._values["listeners"]) > 1
            and name.split(".")[2] == self.inter_broker_listener.lower()
        )

    def items(self) -> Iterable[tuple[str, Any]]:
        return sorted(self._values.items())

    def set_dynamic(self, default: Mapping[str, Any], broker: Mapping[str, Any]) -> set[str]:
        """Put the dynamic layers in force (values parsed with :func:`parse_dynamic`);
        returns the names whose value in force changed."""
        values = {**self._static, **default, **broker}
        changed = {  # a listener's own limit set or gone is a change if its value is
            name
            for name in values.keys() | self._values.keys()
            if _in_force(values, name) != _in_force(self._values, name)
        }
        self.dynamic_default, self.dynamic_broker = dict(default), dict(broker)
        self._values = values
        return changed

    def with_dynamic(self, default: Mapping[str, Any], broker: Mapping[str, Any]) -> BrokerConfig:
        """A copy with these dynamic layers over the same static settings (to validate a
        change before it is made)."""
        copy = BrokerConfig(self._static, self.sources, self.extra)
        copy.set_dynamic(default, broker)
        return copy

    def layers(self, name: str) -> list[tuple[str, Any]]:
        """Every value ``name`` has, with where it comes from, the one in force first
        (Kafka's synonyms of a broker config)."""
        return [(source, value) for _, source, value in self.synonyms(name)]

    def synonyms(self, name: str) -> list[tuple[str, str, Any]]:
        """:meth:`layers` with the name each value is set under: a listener's own limit's
        values, then the broker-wide setting's (Kafka lists a listener-prefixed config's
        synonyms so)."""
        found = []
        if name in self.dynamic_broker:
            found.append((name, DYNAMIC_BROKER, self.dynamic_broker[name]))
        if name in self.dynamic_default:
            found.append((name, DYNAMIC_DEFAULT, self.dynamic_default[name]))
        if self.sources.get(name, "default") != "default":
            found.append((name, STATIC, self._static[name]))
        base = base_of(name)
        if base is not None:
            return found + self.synonyms(base)
        setting = setting_for(name)
        found.append((name, DEFAULT, setting.default if setting is not None else None))
        return found

    @property
    def broker_id(self) -> int:
        return int(self._values["broker.id"])

    @property
    def log_dirs(self) -> list[Path]:
        return [Path(d) for d in self._values["log.dirs"]]

    @property
    def advertised_listeners(self) -> list[str]:
        """Where each listener is reached: its advertised address where one is given for
        its name, else the address it binds."""
        given = {listener_name(a): a for a in self._values["advertised.listeners"]}
        return [given.get(listener_name(i), i) for i in self._values["listeners"]]

    @property
    def super_users(self) -> frozenset[str]:
        return frozenset(p.strip() for p in self._values["super.users"].split(";") if p.strip())

    @property
    def listener_names(self) -> list[str]:
        return [listener_name(i) for i in self._values["listeners"]]

    @property
    def listener_protocols(self) -> dict[str, str]:
        """Each listener name's security protocol."""
        return dict(i.split(":", 1) for i in self._values["listener.security.protocol.map"])

    @property
    def kafka_protocol_listeners(self) -> frozenset[str]:
        """The listener names that speak Kafka's wire protocol."""
        return frozenset(self._values["kafka.protocol.listeners"])

    @property
    def inter_broker_listener(self) -> str:
        """The listener name brokers reach each other on."""
        chosen: str = self._values["inter.broker.listener.name"]
        return chosen or listener_name(self._values["listeners"][0])

    def log_config(self) -> LogConfig:
        """The broker-wide defaults of topic-level log settings."""
        return LogConfig.from_properties(
            {topic: self._values[broker] for topic, broker in TOPIC_CONFIG_SYNONYMS.items()}
        )


def load_config(
    *,
    file: Path | str | None = None,
    env: Mapping[str, str] | None = None,
    overrides: Iterable[str] = (),
) -> BrokerConfig:
    """Merge defaults < file < ``HEADWATER_*`` env < ``--set`` flags, and validate."""
    values = {s.name: s.default for s in SETTINGS}
    sources = dict.fromkeys(values, "default")
    extra: dict[str, str] = {}
    ignored: list[str] = []

    def take(
        items: Mapping[str, Any], source: str, each: Callable[[str], str] | None = None
    ) -> None:
        """One source's settings (``each``: a setting's own name for its source)."""
        try:
            named = kafka_names(items)
        except PropertiesError as exc:
            raise ConfigError(f"{exc} (from {source})") from None
        for name, raw in named.settings.items():
            _assign(values, sources, name, raw, each(name) if each else source, extra=extra)
        ignored.extend(f"{line} (from {source})" for line in named.ignored)

    if file is not None:
        path = Path(file)
        take(
            _read_properties(path) if path.suffix == ".properties" else _read_toml(path),
            f"file {file}",
        )
    # each one source, as a file is: the finest of Kafka's time spellings given wins
    environment = _environment(os.environ if env is None else env)
    if environment:
        take(environment, "env", lambda name: f"env HEADWATER_{name.upper().replace('.', '_')}")
    given = _overrides(overrides)
    if given:
        take(given, "--set")
    for setting in SETTINGS:
        if setting.required and sources[setting.name] == "default":
            raise ConfigError(
                f"{setting.name} is required: {setting.doc} "
                f"(set it in the config file, --set {setting.name}=..., or "
                f"HEADWATER_{setting.name.upper().replace('.', '_')})"
            )
    _check_listeners(values, extra)
    config = BrokerConfig(values, sources, extra=extra)
    config.ignored = ignored
    return config


def _environment(env: Mapping[str, str]) -> dict[str, str]:
    """The broker's settings among ``HEADWATER_*`` variables (``HEADWATER_LOG_DIRS``:
    ``log.dirs``); others (``HEADWATER_BOOTSTRAP_SERVERS``...) are the client's."""
    found = {}
    for key, raw in sorted(env.items()):
        if key.startswith("HEADWATER_"):
            name = key[len("HEADWATER_") :].lower().replace("_", ".")
            if name in _BY_NAME or name in _KAFKA_SPELLINGS:
                found[name] = raw
    return found


def _overrides(overrides: Iterable[str]) -> dict[str, str]:
    given = {}
    for item in overrides:
        name, sep, raw = item.partition("=")
        if not sep:
            raise ConfigError(f"--set {item!r} is not name=value, e.g. --set broker.id=1")
        given[name.strip()] = raw.strip()
    return given


def _check_listeners(values: Mapping[str, Any], extra: Mapping[str, str]) -> None:
    """What the listener settings must agree on, one with another."""
    names = [listener_name(item) for item in values["listeners"]]
    protocols = dict(i.split(":", 1) for i in values["listener.security.protocol.map"])
    for name in names:
        if name not in protocols:
            raise ConfigError(
                f"listener {name} has no security protocol: add {name}:PLAINTEXT (or SSL, "
                "SASL_PLAINTEXT, SASL_SSL) to listener.security.protocol.map"
            )
    for item in values["advertised.listeners"]:
        name = listener_name(item)
        if name not in names:
            raise ConfigError(
                f"advertised.listeners names {name}, which is not in listeners ({', '.join(names)})"
            )
    inter = values["inter.broker.listener.name"]
    if inter and inter not in names:
        raise ConfigError(
            f"inter.broker.listener.name={inter!r} is not in listeners ({', '.join(names)})"
        )
    check_listener_settings([*extra, *values], names)
    inter = values["inter.broker.listener.name"] or names[0]
    _check_kafka_listeners(values["kafka.protocol.listeners"], names, inter)
    mechanism = values["sasl.mechanism.inter.broker.protocol"]
    if (
        protocols[inter] in ("SASL_PLAINTEXT", "SASL_SSL")
        and mechanism not in values["sasl.enabled.mechanisms"]
    ):
        raise ConfigError(
            f"sasl.mechanism.inter.broker.protocol={mechanism} is not in "
            f"sasl.enabled.mechanisms ({','.join(values['sasl.enabled.mechanisms'])}): brokers "
            "could not log in to each other"
        )
    secure = [n for n in names if protocols[n] in TLS_PROTOCOLS]
    if secure and not values["ssl.keystore.location"]:
        raise ConfigError(
            f"listener {secure[0]} is {protocols[secure[0]]}: set ssl.keystore.location to "
            "a PEM file holding the broker's certificate and private key"
        )
    if secure and values["ssl.client.auth"] != "none" and not values["ssl.truststore.location"]:
        raise ConfigError(
            f"ssl.client.auth={values['ssl.client.auth']} needs ssl.truststore.location: the "
            "CA certificates that signed the clients' certificates (PEM)"
        )


def check_listener_settings(settings: Iterable[str], names: list[str]) -> None:
    """Each listener-prefixed setting names one of the listeners ``names``."""
    for name in settings:
        if not name.startswith("listener.name."):
            continue
        listener = name.split(".")[2]
        if listener not in [n.lower() for n in names]:
            raise ConfigError(
                f"{name} names listener {listener}, which is not in listeners ({', '.join(names)})"
            )


def _check_kafka_listeners(kafka: list[str], names: list[str], inter: str) -> None:
    """``kafka.protocol.listeners`` against the listeners."""
    for name in kafka:
        if name not in names:
            raise ConfigError(
                f"kafka.protocol.listeners names {name}, which is not in listeners "
                f"({', '.join(names)})"
            )
        if name == inter:
            raise ConfigError(
                f"kafka.protocol.listeners names {name}, the inter-broker listener: brokers "
                "speak Headwater's protocol to each other; add a listener for Kafka clients"
            )


def _assign(
    values: dict[str, Any],
    sources: dict[str, str],
    name: str,
    raw: Any,
    source: str,
    *,
    extra: dict[str, str],
) -> None:
    if _LISTENER_JAAS.match(name.lower()):
        if not isinstance(raw, str):
            raise ConfigError(f"{name} (from {source}) is invalid: it must be a string")
        extra[name.lower()] = raw
        sources[name.lower()] = source
        return
    setting = setting_for(name)
    if setting is None:
        # a topic-level name given to the broker (retention.ms), or a typo (num.partition)
        near = [s for s in _BY_NAME if s.endswith("." + name)]
        near += difflib.get_close_matches(name, list(_BY_NAME), n=1)
        near[:0] = _lower_listener(name)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise ConfigError(f"unknown setting {name!r} (from {source}){hint}")
    values[name] = _parse(setting, raw, source)
    sources[name] = source


def _lower_listener(name: str) -> list[str]:
    """``[the name with its listener in lower case]`` where that is a setting (Kafka's
    listener prefix is lower case: ``listener.name.external.max.connections``), else []."""
    lower = name.lower()
    return [lower] if lower != name and base_of(lower) is not None else []


def _parse(setting: Setting, raw: Any, source: str) -> Any:
    def bad(need: str) -> ConfigError:
        return ConfigError(f"{setting.name}={raw!r} (from {source}) is invalid: {need}")

    value = _convert(setting, raw, bad)
    if setting.minimum is not None and value < setting.minimum:
        raise bad(f"it must be at least {setting.minimum}")
    if setting.maximum is not None and value > setting.maximum:
        raise bad(f"it must be at most {setting.maximum}")
    if setting.check is not None and (problem := setting.check(value)):
        raise bad(problem)
    return value


def _convert(setting: Setting, raw: Any, bad: Callable[[str], ConfigError]) -> Any:
    if setting.type is bool:
        if isinstance(raw, bool):
            return raw
        text = str(raw).strip().lower()
        if text in ("true", "1", "yes", "on"):
            return True
        if text in ("false", "0", "no", "off"):
            return False
        raise bad("it must be true or false")
    if setting.type in (int, float):
        return _number(setting.type, raw, bad)
    if setting.type is list:
        items = raw if isinstance(raw, list) else str(raw).split(",")
        return [str(i).strip() for i in items if str(i).strip()]
    if not isinstance(raw, str):
        raise bad("it must be a string")
    return raw.strip()  # (Kafka's ConfigDef trims: "zk:2181/kafka " is no other root)


def _number(kind: type, raw: Any, bad: Callable[[str], ConfigError]) -> Any:
    need = "it must be an integer" if kind is int else "it must be a number"
    if isinstance(raw, bool):
        raise bad(need)
    try:
        return kind(str(raw).replace("_", ""))
    except ValueError:
        raise bad(need) from None


def parse_dynamic(name: str, raw: str, where: str) -> Any:
    """A dynamic broker config's value, validated as the config file's would be; raises
    :class:`ConfigError` naming ``where`` it was set (``broker 1``, ``every broker's default``)."""
    setting = setting_for(name)
    if setting is None:
        near = [*_lower_listener(name)]
        near += difflib.get_close_matches(name, sorted(DYNAMIC_BROKER_CONFIGS), n=1)
        hint = f"; did you mean {near[0]}?" if near else ""
        raise ConfigError(f"unknown broker config {name!r} ({where}){hint}")
    if not is_dynamic(name):
        raise ConfigError(
            f"{name} cannot be changed on a running broker ({where}): set it in the broker's "
            "config file (or with --set) and restart it; the ones that can are "
            + ", ".join(sorted(DYNAMIC_BROKER_CONFIGS))
        )
    return _parse(setting, raw.strip(), where)


def config_text(value: Any) -> str:
    """A setting's value as Kafka writes it: ``a,b`` for a list, ``true`` for a bool."""
    if isinstance(value, bool):
        return str(value).lower()
    if isinstance(value, list):
        return ",".join(map(str, value))
    return str(value)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as f:
            data = tomllib.load(f)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except tomllib.TOMLDecodeError as exc:
        raise ConfigError(
            f"config file {path} is not valid TOML: {exc} (a Kafka server.properties file "
            "is read as one when its name ends in .properties)"
        ) from None
    return dict(_flatten(data))


def _read_properties(path: Path) -> dict[str, str]:
    try:
        return read_properties(path)
    except FileNotFoundError:
        raise ConfigError(f"config file {path} does not exist") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"config file {path} is not UTF-8 text: {exc}") from None


def _flatten(data: Mapping[str, Any], prefix: str = "") -> Iterable[tuple[str, Any]]:
    for key, value in data.items():
        name = f"{prefix}{key}"
        if isinstance(value, dict):
            yield from _flatten(value, f"{name}.")
        else:
            yield name, value
