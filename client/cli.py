"""``headwater``: the client-side command line.

``headwater cluster up|status|down`` runs a local cluster (:mod:`client.localcluster`);
``topics``, ``produce`` and ``consume`` talk to any cluster through the client library.
Where the cluster is: ``--bootstrap-server`` (Kafka's flag), else
``$HEADWATER_BOOTSTRAP_SERVERS``, else the cluster recorded in ``./.headwater``.

Output is for people on a terminal (rich tables) and for scripts otherwise (tab-separated
columns, one row per line, a header first). An error the user can act on is one line on
stderr and exit code 1; bad arguments are click's usage errors (exit code 2).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import json
import os
import re
import shutil
import signal
import sys
import threading
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import IO, TYPE_CHECKING, Any, NamedTuple, TypeVar

import click

from client.assignors import ASSIGNORS
from client.console import (
    CONSUMER_PROPERTIES,
    PRODUCER_PROPERTIES,
    LineError,
    LineReader,
    RecordFormat,
    client_settings,
    parse_properties,
)
from client.localcluster import (
    DEFAULT_DIRECTORY,
    STATE_FILE,
    ClusterStatus,
    LocalCluster,
    UpResult,
    recorded_bootstrap,
)
from protocol.apis import EARLIEST_TIMESTAMP, LATEST_TIMESTAMP
from protocol.errors import (
    ApiError,
    ElectionNotNeededError,
    GroupIdNotFoundError,
    HeadwaterError,
    MessageTooLargeError,
    NoReassignmentInProgressError,
    RecordListTooLargeError,
    ReplicaNotAvailableError,
    TopicAlreadyExistsError,
    UnknownTopicOrPartitionError,
)
from protocol.topic_id import parse_topic_id

if TYPE_CHECKING:
    from client import Admin, Consumer, Producer, RecordFuture
    from client.types import (
        GroupDescription,
        MemberDescription,
        TopicPartition,
        TopicPartitionReplica,
    )

VERSION = "0.1.0"
BOOTSTRAP_ENV = "HEADWATER_BOOTSTRAP_SERVERS"
_ADDRESS = re.compile(r"^(\[[0-9A-Fa-f:.]+\]|[A-Za-z0-9_.-]+):(\d{1,5})$")
_MAX_REPORTED_FAILURES = 10
_METADATA_LAG_TRIES = 10  # of 0.2 s: --verify's wait for the brokers' metadata

F = TypeVar("F", bound=Callable[..., Any])


# --- errors: one line, exit code 1 ------------------------------------------------------


class CliError(click.ClickException):
    """An error the user can act on: ``headwater: <what, and what to do>`` on stderr."""

    exit_code = 1

    def show(self, file: IO[Any] | None = None) -> None:
        click.echo(f"headwater: {self.message}", err=True)


def error_line(exc: BaseException) -> str:
    """The message of a Headwater error, Kafka's error name after it when it has one."""
    if isinstance(exc, ApiError):
        return f"{exc.message} ({exc.name})"
    return str(exc)


class _Group(click.Group):
    """Turns every Headwater error raised below it into one line and exit code 1."""

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except HeadwaterError as exc:
            raise CliError(error_line(exc)) from None
        except BrokenPipeError:  # `| head` stopped reading: not an error
            _silence_stdout()
            ctx.exit(0)
        except OSError as exc:  # a directory we cannot write, a full disk: say which
            raise CliError(str(exc)) from None


def _silence_stdout() -> None:
    """Point stdout at /dev/null, so the interpreter's last flush cannot fail again."""
    with contextlib.suppress(OSError, ValueError):
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())


# --- where the cluster is ---------------------------------------------------------------


def parse_bootstrap(value: str, source: str) -> str:
    """``host:port[,host:port...]`` normalised; a CliError naming ``source`` otherwise."""
    addresses = [a.strip() for a in value.split(",") if a.strip()]
    for address in addresses:
        match = _ADDRESS.match(address)
        if match is None or not 0 < int(match[2]) < 65536:
            raise CliError(
                f"{source}: {address!r} is not HOST:PORT (e.g. 127.0.0.1:9092; several "
                f"separated by commas)"
            )
    if not addresses:
        raise CliError(f"{source} is empty; give HOST:PORT[,HOST:PORT...]")
    return ",".join(addresses)


def resolve_bootstrap(flag: str | None, environ: Mapping[str, str], cwd: Path) -> str:
    """``--bootstrap-server`` > ``$HEADWATER_BOOTSTRAP_SERVERS`` > ``./.headwater`` > error."""
    if flag is not None:
        return parse_bootstrap(flag, "--bootstrap-server")
    if environ.get(BOOTSTRAP_ENV, "").strip():
        return parse_bootstrap(environ[BOOTSTRAP_ENV], BOOTSTRAP_ENV)
    recorded = recorded_bootstrap(cwd / DEFAULT_DIRECTORY)
    if recorded is not None:
        return recorded
    raise CliError(
        f"no cluster to talk to: run `headwater cluster up` here, or pass "
        f"--bootstrap-server HOST:PORT (or set {BOOTSTRAP_ENV})"
    )


def _remember_bootstrap(ctx: click.Context, _param: click.Parameter, value: str | None) -> None:
    if value is not None:
        ctx.ensure_object(dict)["bootstrap"] = value  # a subcommand's flag wins (parsed later)


def _remember_command_config(
    ctx: click.Context, _param: click.Parameter, value: Path | None
) -> None:
    if value is not None:
        ctx.ensure_object(dict)["command_config"] = value


def bootstrap_option(f: F) -> F:
    """``--bootstrap-server`` and ``--command-config``, accepted before the subcommand
    (global) and after it."""
    f = click.option(
        "--command-config",
        type=click.Path(exists=True, dir_okay=False, path_type=Path),
        expose_value=False,
        callback=_remember_command_config,
        help="Kafka's client properties file: security.protocol=SSL, ssl.truststore.location, "
        "ssl.keystore.location (PEM files), ssl.key.password.",
    )(f)
    return click.option(
        "--bootstrap-server",
        metavar="HOST:PORT[,...]",
        expose_value=False,
        callback=_remember_bootstrap,
        help=f"Brokers to start from [default: ${BOOTSTRAP_ENV}, else ./{DEFAULT_DIRECTORY}].",
    )(f)


def _bootstrap(ctx: click.Context) -> str:
    flag = ctx.ensure_object(dict).get("bootstrap")
    return resolve_bootstrap(flag, os.environ, Path.cwd())


def _security(ctx: click.Context) -> dict[str, Any]:
    """The client settings ``--command-config`` makes (none without it)."""
    path = ctx.ensure_object(dict).get("command_config")
    if path is None:
        return {}
    from client.security import parse_properties, settings_from_properties  # noqa: PLC0415

    return settings_from_properties(parse_properties(path.read_text()), str(path))


# --- output -----------------------------------------------------------------------------


def print_table(headers: Sequence[str], rows: Iterable[Sequence[object]]) -> None:
    """A rich table on a terminal; tab-separated lines, header first, for scripts."""
    if sys.stdout.isatty():
        from rich.console import Console  # noqa: PLC0415  (rich costs ~50 ms to import)
        from rich.table import Table  # noqa: PLC0415

        table = Table(*headers, box=None, header_style="bold")
        for row in rows:
            table.add_row(*(str(cell) for cell in row))
        Console().print(table)
        return
    click.echo("\t".join(h.upper() for h in headers))
    for row in rows:
        click.echo("\t".join(str(cell) for cell in row))


def _ids(ids: Iterable[int]) -> str:
    return ",".join(str(i) for i in ids) or "-"


def _command_name() -> str:
    """How to spell ``headwater`` in hints: as it was run, unless it is on PATH."""
    argv0 = Path(sys.argv[0])
    if argv0.name != "headwater":
        return "headwater"  # python -m client.cli, tests: the installed name
    found = shutil.which("headwater")
    if found and Path(found).resolve() == argv0.resolve():
        return "headwater"
    relative = os.path.relpath(argv0)
    return str(argv0) if relative.startswith("..") else relative


# --- the command ------------------------------------------------------------------------


@click.group(cls=_Group, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(VERSION, prog_name="headwater")
@bootstrap_option
def main() -> None:
    """Headwater: a distributed, partitioned, replicated commit log.

    Start a local cluster with `headwater cluster up`; commands run in the same folder
    find it without flags.
    """


# --- cluster ----------------------------------------------------------------------------


@main.group()
def cluster() -> None:
    """A local cluster on loopback: ZooKeeper and brokers, recorded in a directory."""


def _dir_option(f: F) -> F:
    return click.option(
        "--dir",
        "directory",
        default=DEFAULT_DIRECTORY,
        show_default=True,
        type=click.Path(file_okay=False, path_type=Path),
        help=f"Where the cluster's data, logs and {STATE_FILE} live.",
    )(f)


def _dir_flag(directory: Path) -> str:
    return "" if str(directory) == DEFAULT_DIRECTORY else f" --dir {directory}"


@cluster.command("up")
@_dir_option
@click.option(
    "--brokers",
    type=click.IntRange(1, 32),
    default=None,
    help="Number of brokers [default: 3, or as recorded].",
)
@click.option(
    "--zookeeper",
    metavar="HOST:PORT",
    default=None,
    help="Use this ZooKeeper instead of starting a private one.",
)
def cluster_up(directory: Path, brokers: int | None, zookeeper: str | None) -> None:
    """Start a local cluster (or report the one running) and return; it keeps running."""
    if zookeeper is not None:
        parse_bootstrap(zookeeper.split("/")[0], "--zookeeper")
    try:
        result = LocalCluster(directory).up(brokers=brokers, zookeeper=zookeeper)
    except KeyboardInterrupt:
        raise CliError("interrupted; what this command had started is stopped again") from None
    _print_up(result, directory)


def _print_up(result: UpResult, directory: Path) -> None:
    state, metadata = result.state, result.metadata
    n = len(state.brokers)
    zk = state.zookeeper
    zk_text = f"external ZooKeeper {zk.connect}" if zk.external else f"ZooKeeper {zk.connect}"
    what = {
        "started": f"Started a {n}-broker cluster in {directory}",
        "repaired": f"Restarted what was stopped of the {n}-broker cluster in {directory}",
        "running": f"A {n}-broker cluster is already running in {directory}",
    }[result.outcome]
    click.echo(f"{what} ({zk_text}, controller: broker {metadata.controller_id}).")
    click.echo(f"Bootstrap servers: {state.bootstrap_servers}")
    if state.kafka_bootstrap_servers:
        click.echo(
            f"Kafka's own clients (kafka-python, aiokafka, confluent-kafka): "
            f"bootstrap.servers={state.kafka_bootstrap_servers}"
        )
    hw = _command_name()
    click.echo()
    if (Path.cwd() / DEFAULT_DIRECTORY).absolute() == directory.absolute():
        click.echo("Try it (commands run in this folder find the cluster on their own):")
        flag = ""
    else:
        click.echo(
            f"Try it (commands find ./{DEFAULT_DIRECTORY} on their own; for this cluster pass "
            f"--bootstrap-server,\nor `export {BOOTSTRAP_ENV}={state.bootstrap_servers}`):"
        )
        flag = f" --bootstrap-server {state.bootstrap_servers}"
    rf = min(3, n)
    click.echo(f"  {hw}{flag} topics create demo --partitions 3 --replication-factor {rf}")
    click.echo(f"  seq 1 10 | {hw}{flag} produce demo")
    click.echo(f"  {hw}{flag} consume demo --from-beginning --max-messages 10")
    down = _dir_flag(directory)
    click.echo(f"Status: {hw} cluster status{down}    Stop: {hw} cluster down{down}")


@cluster.command("status")
@_dir_option
def cluster_status(directory: Path) -> None:
    """Brokers, ports, pids (alive?), controller. Exit code 1 unless all is well."""
    status = LocalCluster(directory).status()
    _print_status(status, directory)
    down = _dir_flag(directory)
    if status.stopped:
        raise CliError(
            f"the cluster in {directory} is stopped; start it with `headwater cluster up{down}`"
        )
    if not status.healthy:
        raise CliError(
            f"the cluster in {directory} is not fully up; `headwater cluster up{down}` "
            f"restarts what is stopped"
        )


def _print_status(status: ClusterStatus, directory: Path) -> None:
    state, zk = status.state, status.state.zookeeper
    metadata = status.metadata
    click.echo(f"directory:         {directory}")
    click.echo(f"cluster id:        {metadata.cluster_id if metadata else '-'}")
    controller = status.controller_id
    click.echo(f"controller:        {f'broker {controller}' if controller >= 0 else '-'}")
    click.echo(f"bootstrap servers: {state.bootstrap_servers or '-'}")
    click.echo(f"kafka clients:     {state.kafka_bootstrap_servers or '-'}")
    if metadata is None:
        click.echo(f"metadata:          unavailable ({status.metadata_error})")
    click.echo()

    def alive(running: bool | None) -> str:
        return "external" if running is None else ("running" if running else "stopped")

    rows: list[tuple[object, ...]] = [
        ("zookeeper", zk.connect, zk.pid or "-", alive(status.zookeeper_running), "-")
    ]
    for b in state.brokers:
        registered = "yes" if b.broker_id in status.registered else "no"
        if b.broker_id == controller:
            registered += " (controller)"
        running = status.brokers_running[b.broker_id]
        rows.append((f"broker {b.broker_id}", b.address, b.pid or "-", alive(running), registered))
    print_table(["process", "address", "pid", "state", "registered"], rows)


@cluster.command("down")
@_dir_option
@click.option(
    "--timeout-s",
    type=click.FloatRange(0),
    default=30.0,
    show_default=True,
    help="How long a broker may take to stop cleanly before SIGKILL.",
)
def cluster_down(directory: Path, timeout_s: float) -> None:
    """Stop the brokers (SIGTERM, a clean stop), then ZooKeeper. Data is kept."""
    for line in LocalCluster(directory).down(timeout_s=timeout_s):
        click.echo(line)
    hw, down = _command_name(), _dir_flag(directory)
    click.echo(f"Data kept in {directory}: `{hw} cluster up{down}` resumes this cluster.")


# --- topics -----------------------------------------------------------------------------


@main.group()
def topics() -> None:
    """Create, list, describe and delete topics."""


def parse_configs(values: Iterable[str]) -> dict[str, str]:
    """``name=value`` pairs of ``--config``; a CliError for anything else."""
    configs: dict[str, str] = {}
    for item in values:
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise CliError(f"--config {item!r} is not NAME=VALUE (e.g. retention.ms=86400000)")
        if name.strip() in configs:
            raise CliError(f"--config {name.strip()} is given twice")
        configs[name.strip()] = value.strip()
    return configs


@topics.command("create")
@click.argument("name")
@click.option(
    "--partitions",
    type=click.IntRange(1),
    default=None,
    help="[default: the broker's num.partitions]",
)
@click.option(
    "--replication-factor",
    type=click.IntRange(1, 32767),
    default=None,
    help="[default: the broker's default.replication.factor]",
)
@click.option(
    "--config", "configs", multiple=True, metavar="NAME=VALUE", help="A topic setting (repeatable)."
)
@click.option("--if-not-exists", is_flag=True, help="An existing topic is not an error.")
@bootstrap_option
@click.pass_context
def topics_create(
    ctx: click.Context,
    *,
    name: str,
    partitions: int | None,
    replication_factor: int | None,
    configs: tuple[str, ...],
    if_not_exists: bool,
) -> None:
    """Create topic NAME."""
    topic_configs = parse_configs(configs)  # a usage error before anything else
    _bootstrap(ctx)
    from client import NewTopic  # noqa: PLC0415  (see _admin)

    topic = NewTopic(name, partitions or -1, replication_factor or -1, topic_configs)
    try:
        _admin(ctx, lambda admin: admin.create_topics([topic]))
    except TopicAlreadyExistsError:
        if not if_not_exists:
            raise CliError(f"topic {name!r} already exists (TOPIC_ALREADY_EXISTS)") from None
        click.echo(f"Topic {name} already exists.")
        return
    click.echo(f"Created topic {name}.")


@topics.command("alter")
@click.argument("name")
@click.option(
    "--config",
    "configs",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a topic setting (repeatable).",
)
@click.option(
    "--delete-config",
    "deletes",
    multiple=True,
    metavar="NAME",
    help="Return a setting to the broker's default (repeatable).",
)
@click.option(
    "--partitions",
    type=click.IntRange(min=1),
    help="Grow the topic to this many partitions (never fewer; keyed records may move).",
)
@click.option("--validate-only", is_flag=True, help="Only check the change; make none.")
@bootstrap_option
@click.pass_context
def topics_alter(
    ctx: click.Context,
    *,
    name: str,
    configs: tuple[str, ...],
    deletes: tuple[str, ...],
    partitions: int | None,
    validate_only: bool,
) -> None:
    """Change topic NAME's settings or partition count; every broker applies them at once,
    no restart."""
    sets = parse_configs(configs)
    removed = parse_deleted(deletes, sets)
    if not sets and not removed and partitions is None:
        raise click.UsageError(
            "nothing to change: give --config NAME=VALUE, --delete-config NAME or --partitions N"
        )
    from client import AlterConfigOp, ConfigResource, NewPartitions  # noqa: PLC0415  (see _admin)

    what = []
    if partitions is not None:
        grow = {name: NewPartitions(partitions)}
        _admin(ctx, lambda admin: admin.create_partitions(grow, validate_only=validate_only))
        what.append(f"{partitions} partitions")
    if sets or removed:
        ops = [AlterConfigOp(k, v) for k, v in sets.items()]
        ops += [AlterConfigOp(k, op_type="DELETE") for k in removed]
        changes = {ConfigResource("topic", name): ops}
        _admin(
            ctx,
            lambda admin: admin.incremental_alter_configs(changes, validate_only=validate_only),
        )
        what += [f"set {k}={v}" for k, v in sets.items()] + [f"deleted {k}" for k in removed]
    verb = "Valid change of" if validate_only else "Altered"
    click.echo(f"{verb} topic {name}: {', '.join(what)}.")


def parse_deleted(values: Iterable[str], sets: Mapping[str, str]) -> list[str]:
    """The names of ``--delete-config``; a CliError for a name given twice or also set."""
    names: list[str] = []
    for raw in values:
        name = raw.strip()
        if not name or "=" in name:
            raise CliError(f"--delete-config {raw!r} is not a setting NAME (e.g. retention.ms)")
        if name in names:
            raise CliError(f"--delete-config {name} is given twice")
        if name in sets:
            raise CliError(f"{name} is both set with --config and deleted with --delete-config")
        names.append(name)
    return names


@topics.command("list")
@bootstrap_option
@click.pass_context
def topics_list(ctx: click.Context) -> None:
    """Topic names, one per line."""
    for name in _admin(ctx, lambda admin: admin.list_topics()):
        click.echo(name)


@topics.command("describe")
@click.argument("name", required=False)
@click.option(
    "--under-replicated",
    "--under-replicated-partitions",
    "under_replicated",
    is_flag=True,
    help="Only partitions whose ISR lacks a replica.",
)
@click.option(
    "--unavailable",
    "--unavailable-partitions",
    "unavailable",
    is_flag=True,
    help="Only partitions without a live leader (offline).",
)
@click.option(
    "--under-min-isr-partitions",
    "under_min_isr",
    is_flag=True,
    help="Only partitions whose ISR is below the topic's min.insync.replicas (acks=all fails).",
)
@click.option(
    "--at-min-isr-partitions",
    "at_min_isr",
    is_flag=True,
    help="Only partitions whose ISR is exactly min.insync.replicas (one more loss stops acks=all).",
)
@click.option(
    "--topics-with-overrides",
    is_flag=True,
    help="Only the topics with settings of their own (one line each).",
)
@click.option(
    "--topic-id",
    default=None,
    metavar="ID",
    help="The topic with this id (Kafka's --topic-id), instead of NAME.",
)
@bootstrap_option
@click.pass_context
def topics_describe(
    ctx: click.Context,
    name: str | None,
    *,
    topic_id: str | None,
    under_replicated: bool,
    unavailable: bool,
    under_min_isr: bool,
    at_min_isr: bool,
    topics_with_overrides: bool,
) -> None:
    """One row per partition: topic, partition, leader, replicas, ISR (all topics without NAME),
    then a "Topic: NAME  TopicId: ID  Configs: k=v,..." line for each topic (Configs when it
    has settings of its own).

    As Kafka's kafka-topics --describe, the filters keep only the partitions in trouble;
    with several, a partition in any of those kinds of trouble is shown.
    """
    filtered = under_replicated or unavailable or under_min_isr or at_min_isr
    if filtered and topics_with_overrides:
        raise click.UsageError("--topics-with-overrides lists topics; the others, partitions")
    asked = _describing(name, topic_id)

    async def describe(admin: Any) -> tuple[list[Any], dict[str, dict[str, str]], dict[str, int]]:
        topics = await asked(admin)
        overrides = {} if filtered else await topic_overrides(admin, [t.name for t in topics])
        min_isr = {}
        if under_min_isr or at_min_isr:
            min_isr = await _min_isr(admin, [t.name for t in topics])
        return topics, overrides, min_isr

    described, overrides, min_isr = _admin(ctx, describe)
    ids = {t.name: t.topic_id for t in described}
    if topics_with_overrides:
        for topic, configs in sorted(overrides.items()):
            if configs:
                click.echo(_topic_line(topic, ids.get(topic), configs))
        return

    def shown(p: Any, topic: str) -> bool:
        if not filtered:
            return True
        needed = min_isr.get(topic, 1)
        return (
            (under_replicated and len(p.isr) < len(p.replicas))
            or (unavailable and p.leader < 0)
            or (under_min_isr and len(p.isr) < needed)
            or (at_min_isr and len(p.isr) == needed)
        )

    rows = [
        (t.name, p.partition, p.leader if p.leader >= 0 else "none", _ids(p.replicas), _ids(p.isr))
        for t in sorted(described, key=lambda t: t.name)
        for p in sorted(t.partitions, key=lambda p: p.partition)
        if shown(p, t.name)
    ]
    print_table(["topic", "partition", "leader", "replicas", "isr"], rows)
    if not filtered:
        for topic in sorted(ids):
            if (line := _topic_line(topic, ids[topic], overrides.get(topic))) is not None:
                click.echo(line)


def _describing(name: str | None, topic_id: str | None) -> Callable[[Any], Awaitable[Any]]:
    """How ``topics describe`` asks: by NAME, by ``--topic-id``, or for every topic."""
    if topic_id is not None:
        if name is not None:
            raise click.UsageError("give NAME or --topic-id, not both")
        try:
            parse_topic_id(topic_id)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--topic-id") from None
        return lambda admin: admin.describe_topics(topic_ids=[topic_id])
    return lambda admin: admin.describe_topics(None if name is None else [name])


def _topic_line(topic: str, topic_id: str | None, configs: dict[str, str] | None) -> str | None:
    """Kafka's per-topic line of a describe: the topic's id, and its own settings if it has
    any (None when there is neither: a broker of a build without ids)."""
    fields = [f"Topic: {topic}"]
    if topic_id is not None:
        fields.append(f"TopicId: {topic_id}")
    if configs:
        fields.append("Configs: " + ",".join(f"{k}={v}" for k, v in sorted(configs.items())))
    return "\t".join(fields) if len(fields) > 1 else None


async def _min_isr(admin: Admin, topics: list[str]) -> dict[str, int]:
    """Each topic's min.insync.replicas in force (a topic deleted meanwhile: left out)."""

    async def of(topic: str) -> int | None:
        try:
            entries = await admin.describe_configs(topic)
        except UnknownTopicOrPartitionError:
            return None
        value = entries["min.insync.replicas"].value
        return int(value) if value else 1

    found = await asyncio.gather(*(of(t) for t in topics))
    return {t: n for t, n in zip(topics, found, strict=True) if n is not None}


async def topic_overrides(admin: Admin, topics: list[str]) -> dict[str, dict[str, str]]:
    """Each topic's own settings (DescribeConfigs' DYNAMIC_TOPIC_CONFIG entries); a topic
    deleted meanwhile is left out."""

    async def of(topic: str) -> dict[str, str]:
        try:
            entries = await admin.describe_configs(topic)
        except UnknownTopicOrPartitionError:
            return {}
        return {
            e.name: e.value or "" for e in entries.values() if e.source == "DYNAMIC_TOPIC_CONFIG"
        }

    found = await asyncio.gather(*(of(t) for t in topics))
    return dict(zip(topics, found, strict=True))


@topics.command("configs")
@click.argument("name")
@click.option("--all", "show_all", is_flag=True, help="Every setting, not only the topic's own.")
@bootstrap_option
@click.pass_context
def topics_configs(ctx: click.Context, name: str, show_all: bool) -> None:
    """NAME's settings: CONFIG VALUE SOURCE SYNONYMS (Kafka's kafka-configs --describe
    --entity-type topics): its own ones, or with --all every one, with where each value
    comes from and every other value it has (the brokers' defaults under it)."""
    entries = _admin(ctx, lambda admin: admin.describe_configs(name))
    rows = [
        (
            e.name,
            "(secret)" if e.is_sensitive else e.value,
            e.source,
            ", ".join(f"{y.source}:{y.name}={y.value}" for y in e.synonyms[1:]) or "-",
        )
        for e in sorted(entries.values())
        if show_all or e.source == "DYNAMIC_TOPIC_CONFIG"
    ]
    print_table(["config", "value", "source", "synonyms"], rows)


@topics.command("elect-leaders")
@click.argument("name", required=False)
@click.option("--partition", type=click.IntRange(0), default=None, help="Only this partition.")
@click.option(
    "--election-type",
    type=click.Choice(["preferred", "unclean"]),
    default="preferred",
    show_default=True,
    help="unclean: give a partition with no live leader one from its live replicas, in "
    "sync or not (records only its last leader had are lost).",
)
@bootstrap_option
@click.pass_context
def topics_elect_leaders(
    ctx: click.Context, name: str | None, partition: int | None, election_type: str
) -> None:
    """Move leadership back to each partition's preferred (first) replica, where it is alive
    and in sync, or, with --election-type unclean, give partitions without a leader one
    (Kafka's kafka-leader-election). All topics without NAME."""
    if partition is not None and name is None:
        raise click.UsageError("--partition needs a topic NAME")
    from client import TopicPartition  # noqa: PLC0415  (see _admin)

    async def elect(admin: Any) -> Any:
        if name is None:
            return await admin.elect_leaders(None, election_type=election_type)
        (topic,) = await admin.describe_topics([name])
        indexes = [p.partition for p in topic.partitions]
        if partition is not None:
            if partition not in indexes:
                raise CliError(
                    f"topic {name!r} has no partition {partition} (it has {len(indexes)})"
                )
            indexes = [partition]
        tps = [TopicPartition(name, i) for i in indexes]
        return await admin.elect_leaders(tps, election_type=election_type)

    outcome = _admin(ctx, elect)
    failed = {tp: error for tp, error in outcome.items() if error is not None}
    if election_type == "unclean":
        led = {tp for tp, e in failed.items() if isinstance(e, ElectionNotNeededError)}
        for tp, error in sorted(failed.items()):
            if tp not in led:  # (the message names the partition)
                click.echo(f"headwater: {error_line(error)}", err=True)
        click.echo(
            f"{len(outcome) - len(failed)} of {len(outcome) - len(led)} partitions without a "
            f"leader got one by unclean election ({len(led)} had a leader)."
        )
        if len(failed) > len(led):
            ctx.exit(1)
        return
    for tp, error in sorted(failed.items()):
        click.echo(f"{tp.topic}-{tp.partition}: not moved: {error.message}", err=True)
    if name is None:  # every partition asked: only those that needed an election answer
        click.echo(
            f"{len(outcome) - len(failed)} partitions moved back to their preferred replica; "
            f"{len(failed)} could not be; the others were led by it already."
        )
        return
    click.echo(
        f"{len(outcome) - len(failed)} of {len(outcome)} partitions led by their preferred replica."
    )


@topics.command("delete-records")
@click.argument("name")
@click.option(
    "--before",
    "offset",
    type=click.IntRange(min=-1),
    required=True,
    help="Delete the records below this offset; -1: all up to the high watermark.",
)
@click.option(
    "--partition",
    "partitions",
    type=click.IntRange(0),
    multiple=True,
    help="Only this partition (repeatable); every partition without it.",
)
@bootstrap_option
@click.pass_context
def topics_delete_records(
    ctx: click.Context, name: str, offset: int, partitions: tuple[int, ...]
) -> None:
    """Delete topic NAME's records below an offset (Kafka's kafka-delete-records): consumers
    no longer read them, and their segments go at the next retention pass."""
    from client import TopicPartition  # noqa: PLC0415  (see _admin)

    async def delete(admin: Any) -> Any:
        (topic,) = await admin.describe_topics([name])
        indexes = [p.partition for p in topic.partitions]
        missing = sorted(set(partitions) - set(indexes))
        if missing:
            raise CliError(f"topic {name!r} has no partition {missing[0]} (it has {len(indexes)})")
        chosen = sorted(set(partitions)) or indexes
        return await admin.delete_records({TopicPartition(name, i): offset for i in chosen})

    low_watermarks = _admin(ctx, delete)
    for tp, low in sorted(low_watermarks.items()):
        click.echo(f"{tp.topic}-{tp.partition}: records below {low} deleted.")


@topics.command("delete")
@click.argument("name")
@click.option("--if-exists", is_flag=True, help="A missing topic is not an error.")
@bootstrap_option
@click.pass_context
def topics_delete(ctx: click.Context, name: str, if_exists: bool) -> None:
    """Delete topic NAME and its data."""
    try:
        _admin(ctx, lambda admin: admin.delete_topics([name]))
    except UnknownTopicOrPartitionError:
        if not if_exists:
            raise CliError(f"topic {name!r} does not exist (UNKNOWN_TOPIC_OR_PARTITION)") from None
        click.echo(f"Topic {name} does not exist.")
        return
    click.echo(f"Deleted topic {name}.")


# --- log-dirs -----------------------------------------------------------------------------


_TIMES = {"latest": -1, "earliest": -2, "max-timestamp": -3}


@main.command("get-offsets")
@click.option(
    "--topic",
    "pattern",
    default=None,
    help="The topics to ask about: a name or a regular expression (default: every topic).",
)
@click.option("--partitions", default=None, help="Only these partitions, e.g. 0,1,2.")
@click.option(
    "--time",
    "when",
    default="latest",
    show_default=True,
    help="latest (-1: the high watermark), earliest (-2: the log start), max-timestamp "
    "(-3: the record with the largest timestamp), or a timestamp in ms (the first record "
    "at or after it).",
)
@click.option(
    "--exclude-internal-topics", is_flag=True, help="Leave out __consumer_offsets and the like."
)
@bootstrap_option
@click.pass_context
def get_offsets(
    ctx: click.Context,
    *,
    pattern: str | None,
    partitions: str | None,
    when: str,
    exclude_internal_topics: bool,
) -> None:
    """Kafka's kafka-get-offsets: TOPIC:PARTITION:OFFSET for each partition (the offset
    empty where no record is at or after the time)."""
    from client.types import OffsetSpec, TopicPartition  # noqa: PLC0415  (see _admin)

    spec = OffsetSpec(parse_offset_time(when))
    matcher = _topic_matcher(pattern)
    wanted = (
        None
        if partitions is None
        else set(_broker_ids(partitions, "--partitions", "partition numbers"))
    )

    async def look(admin: Admin) -> dict[TopicPartition, Any]:
        described = await admin.describe_topics(None)
        tps = [
            TopicPartition(t.name, p.partition)
            for t in described
            if matcher(t.name) and not (exclude_internal_topics and t.is_internal)
            for p in t.partitions
            if wanted is None or p.partition in wanted
        ]
        if not tps:
            asked = f"--topic {pattern!r}" if pattern is not None else "any topic"
            if partitions is not None:
                asked += f" --partitions {partitions}"
            raise CliError(f"no partition matches {asked}; `headwater topics list` lists them")
        return await admin.list_offsets(dict.fromkeys(tps, spec))

    found = _admin(ctx, look)
    for tp in sorted(found):
        offset = found[tp].offset
        click.echo(f"{tp.topic}:{tp.partition}:{offset if offset >= 0 else ''}")


def parse_offset_time(value: str) -> int:
    """--time: a name, Kafka's number for it, or a timestamp in ms."""
    if value in _TIMES:
        return _TIMES[value]
    try:
        number = int(value)
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: latest, earliest, max-timestamp, -1, -2, -3 or a timestamp in ms",
            param_hint="--time",
        ) from None
    if number < -3:
        raise click.BadParameter(f"{number}: a timestamp is 0 or more", param_hint="--time")
    return number


def _topic_matcher(pattern: str | None) -> Callable[[str], bool]:
    if pattern is None:
        return lambda _name: True
    try:
        compiled = re.compile(pattern)
    except re.error as exc:
        raise click.BadParameter(f"{pattern!r}: {exc}", param_hint="--topic") from None
    return lambda name: name == pattern or compiled.fullmatch(name) is not None


@main.command("log-dirs")
@click.option("--describe", is_flag=True, required=True, help="Describe the data directories.")
@click.option("--broker-list", help="Only these brokers, e.g. 1,2,3 (default: every live one).")
@click.option("--topic-list", help="Only these topics' partitions, e.g. orders,payments.")
@bootstrap_option
@click.pass_context
def log_dirs(
    ctx: click.Context, *, describe: bool, broker_list: str | None, topic_list: str | None
) -> None:
    """Each broker's data directories and the size of every partition in them (Kafka's
    kafka-log-dirs --describe, and its JSON)."""
    from client import TopicPartition  # noqa: PLC0415  (see _admin)

    brokers = None if broker_list is None else _broker_ids(broker_list)
    topics = None if topic_list is None else [t.strip() for t in topic_list.split(",") if t.strip()]

    async def look(admin: Admin) -> Any:
        partitions = None
        if topics is not None:
            described = await admin.describe_topics(topics)
            partitions = [
                TopicPartition(t.name, p.partition) for t in described for p in t.partitions
            ]
        return await admin.describe_log_dirs(brokers, partitions)

    click.echo("Querying brokers for log directories information", err=True)
    found = _admin(ctx, look)
    click.echo(f"Received log directory information from brokers {_ids(sorted(found))}", err=True)
    click.echo(json.dumps(log_dirs_json(found), separators=(",", ":")))


def log_dirs_json(found: Mapping[int, Mapping[str, Any]]) -> dict[str, Any]:
    """Kafka's kafka-log-dirs JSON, from ``Admin.describe_log_dirs``'s answer."""
    return {
        "version": 1,
        "brokers": [
            {
                "broker": broker,
                "logDirs": [
                    {
                        "logDir": directory,
                        "error": None if d.error is None else type(d.error).__name__,
                        "partitions": [
                            {
                                "partition": f"{tp.topic}-{tp.partition}",
                                "size": r.size,
                                "offsetLag": r.offset_lag,
                                "isFuture": r.is_future,
                            }
                            for tp, r in sorted(d.replicas.items())
                        ],
                    }
                    for directory, d in sorted(dirs.items())
                ],
            }
            for broker, dirs in sorted(found.items())
        ],
    }


# --- reassign-partitions ----------------------------------------------------------------


@main.command("reassign-partitions")
@click.option("--execute", "mode", flag_value="execute", help="Start the moves of the plan.")
@click.option("--verify", "mode", flag_value="verify", help="Say whether they are done.")
@click.option("--cancel", "mode", flag_value="cancel", help="Cancel those still under way.")
@click.option("--list", "mode", flag_value="list", help="List every move under way.")
@click.option(
    "--generate", "mode", flag_value="generate", help="Propose a plan (nothing is moved)."
)
@click.option(
    "--reassignment-json-file",
    "plan_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The plan (Kafka's JSON), for --execute, --verify and --cancel.",
)
@click.option(
    "--topics-to-move-json-file",
    "topics_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="For --generate: the topics to spread.",
)
@click.option("--broker-list", help="For --generate: the brokers to spread them over, e.g. 1,2,3.")
@click.option(
    "--additional",
    is_flag=True,
    help="For --execute: replace moves already under way (refused without it).",
)
@click.option(
    "--throttle",
    type=click.IntRange(1),
    default=None,
    metavar="BYTES/S",
    help="For --execute: bound the copying to this many bytes per second on each broker "
    "moving data (run --verify until the moves are done: it removes the throttle).",
)
@click.option(
    "--preserve-throttles",
    is_flag=True,
    help="For --verify: keep the throttles once the moves are done.",
)
@click.option(
    "--timeout",
    "timeout_ms",
    type=click.IntRange(0),
    default=10_000,
    show_default=True,
    metavar="MS",
    help="For --execute: how long to wait for a new replica to exist on its broker before "
    "its log can be moved to the data directory the plan names.",
)
@bootstrap_option
@click.pass_context
def reassign_partitions(
    ctx: click.Context,
    *,
    mode: str | None,
    plan_file: Path | None,
    topics_file: Path | None,
    broker_list: str | None,
    additional: bool,
    throttle: int | None,
    preserve_throttles: bool,
    timeout_ms: int,
) -> None:
    """Move partitions to other brokers (Kafka's kafka-reassign-partitions). New replicas
    copy the log while the old ones serve; a move finishes by itself once its new
    replicas are in sync, and the replicas it drops are deleted. A plan's "log_dirs"
    (one per replica: "any", or one of that broker's log.dirs) move each replica's log to
    that data directory on its broker as well."""
    from client import reassign  # noqa: PLC0415  (see _admin)

    if mode is None:
        raise click.UsageError(
            "say what to do: --generate, --execute, --verify, --cancel or --list"
        )
    if mode == "list":
        _print_moves(_admin(ctx, lambda admin: admin.list_partition_reassignments()))
        return
    if mode == "generate":
        if topics_file is None or not broker_list:
            raise click.UsageError("--generate needs --topics-to-move-json-file and --broker-list")
        names = reassign.parse_topics_to_move(topics_file.read_text(), str(topics_file))
        brokers = _broker_ids(broker_list)
        current = _admin(ctx, lambda admin: _replicas_of(admin, names))
        click.echo("Current partition replica assignment")
        click.echo(reassign.plan_json(current))
        click.echo("\nProposed partition reassignment configuration")
        click.echo(reassign.plan_json(reassign.propose(current, brokers)))
        return
    if plan_file is None:
        raise click.UsageError(f"--{mode} needs --reassignment-json-file")
    text = plan_file.read_text()
    plan = reassign.parse_plan(text, str(plan_file))
    dirs = reassign.parse_log_dirs(text, str(plan_file))
    if throttle is not None and mode != "execute":
        raise click.UsageError("--throttle goes with --execute")
    if preserve_throttles and mode != "verify":
        raise click.UsageError("--preserve-throttles goes with --verify")
    if mode == "execute":
        _execute(ctx, plan, additional, throttle, dirs, timeout_ms / 1000)
    elif mode == "verify":
        _verify(ctx, plan, preserve_throttles, dirs)
    else:
        _cancel(ctx, plan)


def _broker_ids(value: str, hint: str = "--broker-list", what: str = "broker ids") -> list[int]:
    try:
        return [int(b) for b in value.split(",") if b.strip()]
    except ValueError:
        raise click.BadParameter(
            f"{value!r}: {what} separated by commas, e.g. 1,2,3", param_hint=hint
        ) from None


async def _replicas_of(admin: Admin, names: list[str]) -> dict[TopicPartition, list[int]]:
    """Each partition's replica list now (the whole list while it moves)."""
    from client import TopicPartition  # noqa: PLC0415

    described = await admin.describe_topics(names)
    return {
        TopicPartition(t.name, p.partition): list(p.replicas)
        for t in described
        for p in t.partitions
    }


def _execute(  # noqa: PLR0917 - the command's options
    ctx: click.Context,
    plan: dict[TopicPartition, list[int]],
    additional: bool,
    throttle: int | None,
    dirs: dict[TopicPartitionReplica, str],
    timeout_s: float,
) -> None:
    from client import reassign  # noqa: PLC0415

    async def start(admin: Admin) -> tuple[dict[Any, Any], dict[Any, Any], dict[Any, Any]]:
        moving = await admin.list_partition_reassignments(list(plan))
        if moving and not additional:  # as Kafka's tool: a plan does not replace by accident
            raise CliError(
                f"{_names(sorted(moving))} {'is' if len(moving) == 1 else 'are'} being moved "
                "already; --verify or --cancel that first, or add --additional to replace "
                "those moves with this plan's"
            )
        current = await _replicas_of(admin, sorted({tp.topic for tp in plan}))
        # a partition moving holds both lists: its origin is what a rollback goes back to
        for tp, move in moving.items():
            current[tp] = [r for r in move.replicas if r not in move.adding_replicas]
        if throttle is not None:  # before the copying starts, as Kafka's tool
            # with every move under way: a topic's lists are set whole, and must keep
            # the replicas its other moves copy
            origins, targets = dict(current), dict(plan)
            for tp, move in (await admin.list_partition_reassignments()).items():
                if tp not in plan:
                    origins[tp] = [r for r in move.replicas if r not in move.adding_replicas]
                    targets[tp] = [r for r in move.replicas if r not in move.removing_replicas]
            await _set_throttles(admin, origins, targets, throttle)
        # as Kafka's tool: the moves between data directories first (a replica not on
        # its broker yet is then made in the directory named), then the reassignment
        moved = await admin.alter_replica_log_dirs(dirs) if dirs else {}
        outcome = await admin.alter_partition_reassignments(plan)
        moved.update(await _log_dirs_once_there(admin, moved, dirs, timeout_s))
        return current, outcome, moved

    current, outcome, moved = _admin(ctx, start)
    before = {tp: current[tp] for tp in plan if tp in current}
    click.echo("Current partition replica assignment\n")
    click.echo(reassign.plan_json(before))
    click.echo("\nSave this to use as the --reassignment-json-file option during rollback")
    started = sorted(tp for tp, error in outcome.items() if error is None)
    if started:
        click.echo(f"Successfully started partition reassignments for {_names(started)}")
    begun = sorted(r for r, error in moved.items() if error is None)
    if begun:
        click.echo(f"Successfully started log directory move for: {_replica_names(begun)}")
    if throttle is not None:
        click.echo(
            f"The inter-broker throttle limit was set to {throttle} B/s\n"
            "Warning: You must run --verify periodically, until the reassignment completes, "
            "to ensure the throttle is removed."
        )
    failed = sorted((r, error) for r, error in moved.items() if error is not None)
    for r, error in failed:
        click.echo(f"headwater: {_replica_names([r])}: {error_line(error)}", err=True)
    _refused(outcome, failed=bool(failed))


async def _log_dirs_once_there(
    admin: Admin,
    moved: Mapping[TopicPartitionReplica, ApiError | None],
    dirs: Mapping[TopicPartitionReplica, str],
    timeout_s: float,
) -> dict[TopicPartitionReplica, ApiError | None]:
    """The moves of replicas that were not on their brokers yet, asked again until they
    are (the reassignment makes them) or ``timeout_s`` has passed (Kafka's --timeout)."""
    loop = asyncio.get_running_loop()
    deadline = loop.time() + timeout_s
    waiting = {r: dirs[r] for r, e in moved.items() if isinstance(e, ReplicaNotAvailableError)}
    out: dict[TopicPartitionReplica, ApiError | None] = {}
    while waiting:
        if loop.time() >= deadline:
            for r in waiting:
                out[r] = ReplicaNotAvailableError(
                    f"not on broker {r.broker_id} after {timeout_s:g} s: its log will be made "
                    f"in {dirs[r]} when it is (raise --timeout to wait for it)"
                )
            break
        await asyncio.sleep(min(0.5, max(deadline - loop.time(), 0)))
        answered = await admin.alter_replica_log_dirs(waiting)
        out.update(answered)
        waiting = {
            r: dirs[r] for r, e in answered.items() if isinstance(e, ReplicaNotAvailableError)
        }
    return out


def _replica_names(replicas: Iterable[TopicPartitionReplica]) -> str:
    """Kafka's TopicPartitionReplica spelling: ``topic-partition-broker``."""
    return ",".join(f"{r.topic}-{r.partition}-{r.broker_id}" for r in replicas)


async def _set_throttles(
    admin: Admin,
    current: Mapping[TopicPartition, list[int]],
    plan: Mapping[TopicPartition, list[int]],
    rate: int,
) -> None:
    """Kafka's tool: the moving replicas named in their topics' throttle configs, and the
    rate on every broker that copies."""
    from client import reassign  # noqa: PLC0415
    from client.types import AlterConfigOp, ConfigResource  # noqa: PLC0415

    changes: dict[Any, list[Any]] = {
        ConfigResource("topic", topic): [AlterConfigOp(k, v) for k, v in configs.items()]
        for topic, configs in reassign.throttled_replicas(current, plan).items()
    }
    for broker in reassign.throttled_brokers(current, plan):
        changes[ConfigResource("broker", str(broker))] = [
            AlterConfigOp(name, str(rate)) for name in reassign.THROTTLE_RATES
        ]
    if changes:
        await admin.incremental_alter_configs(changes)


async def _clear_throttles(admin: Admin, topics: list[str]) -> list[int]:
    """--verify once the moves are done: the rates off every live broker, the throttled
    replicas off the plan's topics (Kafka's tool); returns the brokers cleared."""
    from client import reassign  # noqa: PLC0415
    from client.types import AlterConfigOp, ConfigResource  # noqa: PLC0415

    brokers = sorted(b.node_id for b in (await admin.describe_cluster()).brokers)
    delete = [AlterConfigOp(n, op_type="DELETE") for n in reassign.THROTTLE_RATES]
    changes: dict[Any, list[Any]] = {ConfigResource("broker", str(b)): delete for b in brokers}
    for topic in topics:
        changes[ConfigResource("topic", topic)] = [
            AlterConfigOp(reassign.LEADER_THROTTLED, op_type="DELETE"),
            AlterConfigOp(reassign.FOLLOWER_THROTTLED, op_type="DELETE"),
        ]
    await admin.incremental_alter_configs(changes)
    return brokers


def _verify(
    ctx: click.Context,
    plan: dict[TopicPartition, list[int]],
    preserve_throttles: bool,
    dirs: dict[TopicPartitionReplica, str],
) -> None:
    async def look(admin: Admin) -> tuple[dict[Any, Any], dict[Any, Any], dict[Any, Any]]:
        from client import TopicPartition  # noqa: PLC0415  (see _admin)

        moving = await admin.list_partition_reassignments(list(plan))
        topics = sorted({tp.topic for tp in plan})
        current = await _replicas_of(admin, topics)
        for _ in range(_METADATA_LAG_TRIES):
            # a move the controller just finished reaches the brokers' metadata a moment
            # later: not taken for a partition that ended up elsewhere
            if all(tp in moving or current.get(tp) == r for tp, r in plan.items()):
                break
            await asyncio.sleep(0.2)
            current = await _replicas_of(admin, topics)
        found = (
            await admin.describe_log_dirs(
                sorted({r.broker_id for r in dirs}),
                sorted({TopicPartition(r.topic, r.partition) for r in dirs}),
            )
            if dirs
            else {}
        )
        return moving, current, found

    moving, current, found = _admin(ctx, look)
    click.echo("Status of partition reassignment:")
    done = True
    for tp, replicas in sorted(plan.items()):
        line, finished = _partition_status(tp, replicas, moving, current)
        click.echo(line)
        done = done and finished
    if dirs:
        click.echo("")
    for replica, target in sorted(dirs.items()):
        line, finished = _log_dir_status(replica, target, found.get(replica.broker_id, {}))
        click.echo(line)
        done = done and finished
    if not done:
        ctx.exit(1)
    if preserve_throttles:
        return
    topics = sorted({tp.topic for tp in plan})
    cleared = _admin(ctx, lambda admin: _clear_throttles(admin, topics))
    click.echo(f"Clearing broker-level throttles on brokers {_ids(cleared)}")
    for topic in topics:
        click.echo(f"Clearing topic-level throttles on topic {topic}")


def _partition_status(
    tp: TopicPartition,
    replicas: list[int],
    moving: Mapping[TopicPartition, Any],
    current: Mapping[TopicPartition, list[int]],
) -> tuple[str, bool]:
    """--verify's line for a partition (Kafka's words), and whether its move is done."""
    name = f"{tp.topic}-{tp.partition}"
    if tp in moving:
        return f"Reassignment of partition {name} is still in progress.", False
    if tp not in current:
        return f"Partition {name} does not exist.", False
    if current[tp] == replicas:
        return f"Reassignment of partition {name} is completed.", True
    return (
        f"There is no active reassignment of partition {name}, but its replicas are "
        f"{_ids(current[tp])} rather than {_ids(replicas)}.",
        False,
    )


def _log_dir_status(
    replica: TopicPartitionReplica, target: str, dirs: Mapping[str, Any]
) -> tuple[str, bool]:
    """--verify's line for a replica's move between data directories (Kafka's words),
    and whether it is done, from its broker's DescribeLogDirs."""
    from client import TopicPartition  # noqa: PLC0415

    tp = TopicPartition(replica.topic, replica.partition)
    here = [(d, desc.replicas[tp]) for d, desc in dirs.items() if tp in desc.replicas]
    log = next((d for d, info in here if not info.is_future), None)
    copy = next((d for d, info in here if info.is_future), None)
    name, where = _replica_names([replica]), f"{tp.topic}-{tp.partition}"
    if log == target and copy is None:
        return f"Reassignment of replica {name} completed successfully.", True
    if copy == target:
        return f"Reassignment of replica {name} is still in progress.", False
    if log is None:
        return (
            f"Partition {where} is not found in any live log dir on broker "
            f"{replica.broker_id}. There is likely an offline log directory on the broker.",
            False,
        )
    if copy is not None:
        return (
            f"Partition {where} on broker {replica.broker_id} is being moved to log dir "
            f"{copy} instead of {target}.",
            False,
        )
    return (
        f"Partition {where} on broker {replica.broker_id} is not being moved from log dir "
        f"{log} to {target}.",
        False,
    )


def _cancel(ctx: click.Context, plan: dict[TopicPartition, list[int]]) -> None:
    outcome = _admin(ctx, lambda admin: admin.alter_partition_reassignments(dict.fromkeys(plan)))
    idle = {tp for tp, error in outcome.items() if isinstance(error, NoReassignmentInProgressError)}
    cancelled = sorted(tp for tp, error in outcome.items() if error is None)
    if cancelled:
        click.echo(f"Successfully cancelled partition reassignments for: {_names(cancelled)}")
    for tp in sorted(idle):
        click.echo(f"{tp.topic}-{tp.partition} was not being reassigned.")
    _refused({tp: error for tp, error in outcome.items() if tp not in idle})


def _refused(outcome: Mapping[TopicPartition, ApiError | None], *, failed: bool = False) -> None:
    """Each partition refused, on stderr; exit code 1 if any was (or ``failed``)."""
    refused = sorted((tp, error) for tp, error in outcome.items() if error is not None)
    for tp, error in refused:
        click.echo(f"headwater: {tp.topic}-{tp.partition}: {error_line(error)}", err=True)
    if refused or failed:
        raise click.exceptions.Exit(1)


def _print_moves(moves: Mapping[TopicPartition, Any]) -> None:
    if not moves:
        click.echo("No partition reassignments found.")
        return
    click.echo("Current partition reassignments:")
    for tp, move in sorted(moves.items()):
        click.echo(
            f"{tp.topic}-{tp.partition}: replicas: {_ids(move.replicas)}. "
            f"adding: {_ids(move.adding_replicas)}. removing: {_ids(move.removing_replicas)}."
        )


def _names(tps: Iterable[TopicPartition]) -> str:
    return ",".join(f"{tp.topic}-{tp.partition}" for tp in tps)


def _admin(ctx: click.Context, call: Callable[[Any], Any]) -> Any:
    """Run one Admin call against the resolved cluster and return its result."""
    bootstrap, security = _bootstrap(ctx), _security(ctx)
    # imported here: the cluster commands need only the connection, and stay fast
    from client import Admin  # noqa: PLC0415

    async def run() -> Any:
        async with Admin(bootstrap_servers=bootstrap, **security) as admin:
            return await call(admin)

    return asyncio.run(run())


# --- share groups (KIP-932) --------------------------------------------------------------


@main.group("share-groups")
def share_groups() -> None:
    """List and describe share groups (Kafka's kafka-share-groups): groups whose members
    read a topic as a queue, each record acknowledged by one of them."""


@share_groups.command("list")
@bootstrap_option
@click.pass_context
def share_groups_list(ctx: click.Context) -> None:
    """The share groups: id and state (Empty, Stable). Every broker is asked."""
    listed = _admin(ctx, lambda admin: admin.list_groups())
    print_table(
        ["group", "state"],
        [(g.group_id, g.state or "-") for g in listed if g.protocol_type == "share"],
    )


@share_groups.command("describe")
@click.argument("group")
@click.option("--members", "view", flag_value="members", help="Its members and assignments.")
@click.option("--state", "view", flag_value="state", help="Its state, epochs and coordinator.")
@bootstrap_option
@click.pass_context
def share_groups_describe(ctx: click.Context, group: str, view: str | None) -> None:
    """GROUP's offsets: TOPIC PARTITION START-OFFSET LAG (Kafka's kafka-share-groups
    --describe; the start offset is the first record not yet done, the lag the records from
    there to the log's end not done yet); --members: MEMBER-ID HOST CLIENT-ID #PARTITIONS
    ASSIGNMENT; --state: COORDINATOR STATE GROUP-EPOCH ASSIGNMENT-EPOCH #MEMBERS."""
    if view is None:
        offsets = _admin(ctx, lambda admin: admin.list_share_group_offsets(group))
        if not offsets:
            click.echo(f"Share group {group!r} has no offset information.")
            return
        print_table(
            ["group", "topic", "partition", "start-offset", "lag"],
            [
                (
                    group,
                    tp.topic,
                    tp.partition,
                    "-" if o.start_offset < 0 else o.start_offset,
                    "-" if o.lag is None else o.lag,
                )
                for tp, o in offsets.items()
            ],
        )
        return
    (described,) = _admin(ctx, lambda admin: admin.describe_share_groups([group]))
    if described.state == "Dead":
        raise CliError(f"share group {group!r} does not exist")
    if view == "state":
        where = described.coordinator
        print_table(
            ["group", "coordinator (id)", "state", "group-epoch", "assignment-epoch", "#members"],
            [
                (
                    group,
                    "-" if where is None else f"{where.host}:{where.port} ({where.node_id})",
                    described.state,
                    described.group_epoch,
                    described.assignment_epoch,
                    len(described.members),
                )
            ],
        )
        return
    print_table(
        ["group", "member-id", "host", "client-id", "#partitions", "assignment"],
        [
            (
                group,
                m.member_id,
                m.host or "-",
                m.client_id or "-",
                len(m.assignment),
                _assignment_text(m.assignment) or "-",
            )
            for m in described.members
        ],
    )


def _assignment_text(assignment: Iterable[Any]) -> str:
    """Kafka's form: ``topic:0,1;other:3``."""
    by_topic: dict[str, list[int]] = {}
    for tp in assignment:
        by_topic.setdefault(tp.topic, []).append(tp.partition)
    return ";".join(f"{t}:{','.join(map(str, sorted(ps)))}" for t, ps in sorted(by_topic.items()))


# --- groups -----------------------------------------------------------------------------

_INACTIVE = ("Empty", "Dead")
"""Group states with no live members: the only ones whose offsets may be reset."""


@main.group()
def groups() -> None:
    """List, describe, reset the offsets of, and delete consumer groups."""


@groups.command("list")
@click.option(
    "--state",
    "states",
    multiple=True,
    help="Only groups in these states (Stable, Empty, PreparingRebalance, ...; a comma list "
    "or repeated; any case), as kafka-consumer-groups --list --state.",
)
@bootstrap_option
@click.pass_context
def groups_list(ctx: click.Context, states: tuple[str, ...]) -> None:
    """List the groups: id, protocol type, state.

    Every broker is asked (each knows the groups it coordinates)."""
    known = {s.lower(): s for s in _GROUP_STATES}
    wanted = {s.strip().lower() for v in states for s in v.split(",") if s.strip()}
    unknown = sorted(wanted - known.keys())
    if unknown:
        raise click.BadParameter(
            f"{', '.join(unknown)}: not a group state; the states are {', '.join(_GROUP_STATES)}",
            param_hint="--state",
        )
    listed = _admin(ctx, lambda admin: admin.list_groups())
    print_table(
        ["group", "protocol-type", "state"],
        [
            (g.group_id, g.protocol_type or "-", g.state or "-")
            for g in listed
            if not wanted or (g.state or "").lower() in wanted
        ],
    )


_GROUP_STATES = ("Empty", "PreparingRebalance", "CompletingRebalance", "Stable", "Dead")
"""A group's states, as Kafka names them (ConsumerGroupState)."""


def _every_group(ctx: click.Context) -> list[str]:
    """--all-groups: every group the brokers know, by name."""
    return sorted(g.group_id for g in _admin(ctx, lambda admin: admin.list_groups()))


class LagRow(NamedTuple):
    """A row of ``groups describe``: a partition, or a member that has none (topic None)."""

    topic: str | None
    partition: int | None
    current: int | None
    log_end: int | None
    lag: int | None
    consumer_id: str
    host: str
    client_id: str


def lag_rows(
    members: Sequence[MemberDescription],
    committed: Mapping[TopicPartition, int],
    log_ends: Mapping[TopicPartition, int],
) -> list[LagRow]:
    """kafka-consumer-groups --describe: one row per partition the group has committed or
    a member is assigned (lag = log end - committed, where both are known), then one per
    member without partitions, so every member shows."""
    owner = {tp: m for m in members for tp in m.assignment}
    rows = []
    for tp in sorted(committed.keys() | owner.keys()):
        current, end, member = committed.get(tp), log_ends.get(tp), owner.get(tp)
        lag = None if current is None or end is None else end - current
        who = (member.member_id, member.host, member.client_id) if member else ("-", "-", "-")
        rows.append(LagRow(tp.topic, tp.partition, current, end, lag, *who))
    for m in members:
        if not m.assignment:
            rows.append(LagRow(None, None, None, None, None, m.member_id, m.host, m.client_id))
    return rows


def total_lag(rows: Iterable[LagRow]) -> int:
    return sum(r.lag for r in rows if r.lag is not None)


def _cell(value: object) -> object:
    return "-" if value is None or value == "" else value  # Kafka's mark for "none"


@groups.command("describe")
@click.argument("group", required=False)
@click.option("--all-groups", is_flag=True, help="Every group, one after the other.")
@click.option(
    "--members",
    "show",
    flag_value="members",
    help="One row per member: consumer-id, group-instance-id, host, client-id, #partitions.",
)
@click.option(
    "--state", "show", flag_value="state", help="Only the group's state, strategy, members."
)
@click.option("--verbose", is_flag=True, help="With --members: each member's partitions too.")
@bootstrap_option
@click.pass_context
def groups_describe(
    ctx: click.Context, group: str | None, all_groups: bool, show: str | None, verbose: bool
) -> None:
    """Show GROUP's state, members, offsets and lag (or every group's, --all-groups).

    State, strategy and members, the total lag, then one row per partition the group has
    committed or a member is assigned: committed offset, log end offset, lag, owner (as
    kafka-consumer-groups --describe); a member without partitions gets a row of its own.
    --members lists the members instead, --state only the group's state.
    """
    if verbose and show != "members":
        raise click.UsageError("--verbose goes with --members")
    if (group is None) == (not all_groups):
        raise click.UsageError("give a GROUP or --all-groups (one of them)")
    if group is not None:
        _describe_group(ctx, group, show, verbose)
        return
    for i, name in enumerate(_every_group(ctx)):
        if i:
            click.echo()
        try:
            _describe_group(ctx, name, show, verbose)
        except (CliError, GroupIdNotFoundError):  # deleted since it was listed: the others
            click.echo(f"headwater: group {name} is gone", err=True)


def _describe_group(ctx: click.Context, group: str, show: str | None, verbose: bool) -> None:
    if show is not None:
        (found,) = _admin(ctx, lambda admin: admin.describe_groups([group]))
        if found.state == "Dead":
            raise CliError(
                f"group {group!r} does not exist (`headwater groups list` shows the groups)"
            )
        if show == "state":  # kafka-consumer-groups --describe --state's columns
            where = found.coordinator
            print_table(
                ["group", "coordinator (id)", "assignment-strategy", "state", "#members"],
                [
                    (
                        group,
                        "-" if where is None else f"{where.host}:{where.port} ({where.node_id})",
                        found.strategy or "-",
                        found.state,
                        len(found.members),
                    )
                ],
            )
            return
        headers = ["consumer-id", "group-instance-id", "host", "client-id", "#partitions"]
        rows = [
            (m.member_id, m.group_instance_id or "-", m.host, m.client_id, len(m.assignment))
            + ((_names(sorted(m.assignment)) or "-",) if verbose else ())
            for m in sorted(found.members, key=lambda m: m.member_id)
        ]
        print_table([*headers, *(["assignment"] if verbose else [])], rows)
        return
    description, rows = _admin(ctx, lambda admin: _describe(admin, group))
    members = description.members
    leader = f" (leader: {description.leader})" if description.leader else ""
    click.echo(f"group:       {group}")
    click.echo(f"state:       {description.state}")
    click.echo(f"strategy:    {description.strategy or '-'}")
    click.echo(f"generation:  {description.generation}")
    click.echo(f"members:     {len(members)}{leader}")
    click.echo(f"total lag:   {total_lag(rows)}")
    click.echo()
    headers = ["topic", "partition", "current-offset", "log-end-offset", "lag"]
    print_table(
        [*headers, "consumer-id", "host", "client-id"], [tuple(map(_cell, r)) for r in rows]
    )


async def _describe(admin: Admin, group: str) -> tuple[GroupDescription, list[LagRow]]:
    (description,) = await admin.describe_groups([group])
    committed = await admin.list_group_offsets(group)
    if description.state == "Dead" and not committed:
        raise GroupIdNotFoundError(
            f"group {group!r} does not exist (`headwater groups list` shows the groups)"
        )
    wanted = set(committed) | {tp for m in description.members for tp in m.assignment}
    existing = set(await admin.list_topics())  # a deleted topic's commits have no log end
    log_ends = await _offsets(
        admin, [tp for tp in wanted if tp.topic in existing], LATEST_TIMESTAMP
    )
    return description, lag_rows(description.members, committed, log_ends)


async def _offsets(
    admin: Admin, partitions: Iterable[TopicPartition], timestamp: int
) -> dict[TopicPartition, int]:
    """Each partition's offset at ``timestamp`` (ms, or ListOffsets' EARLIEST_TIMESTAMP /
    LATEST_TIMESTAMP); -1 where no record is that late."""
    from client.types import OffsetSpec  # noqa: PLC0415  (see _admin)

    found = await admin.list_offsets(dict.fromkeys(partitions, OffsetSpec(timestamp)))
    return {tp: result.offset for tp, result in found.items()}


# --- groups reset-offsets: the plan is a pure function of what the cluster says -------


class ResetMode(NamedTuple):
    kind: str
    """earliest, latest, offset, datetime, shift, current or file."""
    value: int = 0
    """The offset (offset), the time in ms (datetime), or the shift (shift)."""
    offsets: Mapping[TopicPartition, int] | None = None
    """file: each partition's new offset, as the file gives it."""


class PlanRow(NamedTuple):
    topic: str
    partition: int
    current: int | None
    new: int


def reset_mode(
    *,
    to_earliest: bool,
    to_latest: bool,
    to_offset: int | None,
    to_datetime_ms: int | None,
    shift_by: int | None,
    to_current: bool = False,
    by_duration_ms: int | None = None,
    from_file: Mapping[TopicPartition, int] | None = None,
    now_ms: int | None = None,
) -> ResetMode:
    """The one reset mode given; a usage error naming them all otherwise."""
    if by_duration_ms is not None:  # the first record at or after now minus the duration
        now = int(time.time() * 1000) if now_ms is None else now_ms
        by_duration = ResetMode("datetime", max(now - by_duration_ms, 0))
    given = [
        ("--to-earliest", ResetMode("earliest") if to_earliest else None),
        ("--to-latest", ResetMode("latest") if to_latest else None),
        ("--to-offset", None if to_offset is None else ResetMode("offset", to_offset)),
        (
            "--to-datetime",
            None if to_datetime_ms is None else ResetMode("datetime", to_datetime_ms),
        ),
        ("--shift-by", None if shift_by is None else ResetMode("shift", shift_by)),
        ("--to-current", ResetMode("current") if to_current else None),
        ("--by-duration", None if by_duration_ms is None else by_duration),
        ("--from-file", None if from_file is None else ResetMode("file", offsets=from_file)),
    ]
    chosen = [(flag, mode) for flag, mode in given if mode is not None]
    if len(chosen) == 1:
        return chosen[0][1]
    what = "none" if not chosen else " and ".join(flag for flag, _ in chosen)
    raise click.UsageError(
        "give exactly one of --to-earliest, --to-latest, --to-current, --to-offset N, "
        "--to-datetime ISO8601, --by-duration PnDTnHnMnS, --shift-by N, --from-file CSV "
        f"(got {what})"
    )


_DURATION = re.compile(
    r"^P(?:(?P<d>\d+)D)?(?:T(?:(?P<h>\d+)H)?(?:(?P<m>\d+)M)?(?:(?P<s>\d+(?:\.\d+)?)S)?)?$"
)


def parse_duration_ms(value: str) -> int:
    """--by-duration: an ISO-8601 duration, PnDTnHnMnS (Kafka's java.time.Duration form:
    P1D, PT15M, P1DT2H30M, PT0.5S), in ms."""
    text = value.strip().upper()
    found = _DURATION.match(text)
    if found is None or text in ("P", "PT") or text.endswith("T"):
        raise click.BadParameter(
            f"{value!r} is not a duration PnDTnHnMnS (e.g. PT15M, P1DT2H)",
            param_hint="--by-duration",
        )
    parts = {k: float(v) for k, v in found.groupdict().items() if v}
    seconds = (
        parts.get("d", 0) * 86_400 + parts.get("h", 0) * 3600 + parts.get("m", 0) * 60
    ) + parts.get("s", 0)
    return int(seconds * 1000)


def parse_offsets_file(path: Path) -> dict[TopicPartition, int]:
    """--from-file: ``topic,partition,offset`` lines, as --export prints them."""
    from client.types import TopicPartition  # noqa: PLC0415  (see _admin)

    offsets: dict[TopicPartition, int] = {}
    for number, line in enumerate(path.read_text().splitlines(), 1):
        if not line.strip():
            continue
        fields = [f.strip() for f in line.split(",")]
        try:
            if len(fields) != 3 or not fields[0]:
                raise ValueError
            tp, offset = TopicPartition(fields[0], int(fields[1])), int(fields[2])
            if tp.partition < 0 or offset < 0:
                raise ValueError
        except ValueError:
            raise click.BadParameter(
                f"{path}:{number}: {line!r} is not topic,partition,offset",
                param_hint="--from-file",
            ) from None
        offsets[tp] = offset
    if not offsets:
        raise click.BadParameter(f"{path} names no partition", param_hint="--from-file")
    return offsets


def plan_reset(
    mode: ResetMode,
    partitions: Iterable[TopicPartition],
    *,
    committed: Mapping[TopicPartition, int],
    log_starts: Mapping[TopicPartition, int],
    log_ends: Mapping[TopicPartition, int],
    at_time: Mapping[TopicPartition, int] | None = None,
) -> list[PlanRow]:
    """The new offset of each partition, kept within [log start, log end] as Kafka's
    kafka-consumer-groups does. ``at_time`` (--to-datetime): the first offset at or after
    the time per partition, -1 or missing where no record is that late (then the log end,
    as Kafka)."""
    rows = []
    for tp in sorted(partitions):
        current, start, end = committed.get(tp), log_starts[tp], log_ends[tp]
        if mode.kind == "shift" and current is None:
            raise CliError(
                f"{tp.topic}-{tp.partition} has no committed offset to shift; reset it "
                f"with --to-earliest, --to-latest or --to-offset first"
            )
        wanted = {
            "earliest": start,
            "latest": end,
            "offset": mode.value,
            "datetime": (at_time or {}).get(tp, -1),
            "shift": (current or 0) + mode.value,
            "current": end if current is None else current,  # none committed: the end
            "file": (mode.offsets or {}).get(tp, end),
        }[mode.kind]
        if mode.kind == "datetime" and wanted < 0:
            wanted = end  # no record that late
        rows.append(PlanRow(tp.topic, tp.partition, current, min(max(wanted, start), end)))
    return rows


def parse_topic_spec(value: str) -> tuple[str, tuple[int, ...] | None]:
    """``--topic`` as Kafka takes it: TOPIC (every partition) or TOPIC:P[,P...]."""
    topic, sep, listed = value.rpartition(":") if ":" in value else (value, "", "")
    try:
        partitions = tuple(sorted({int(p) for p in listed.split(",")})) if sep else None
    except ValueError:
        partitions = ()
    if not topic or partitions == () or any(p < 0 for p in partitions or ()):
        raise click.BadParameter(
            f"{value!r} is not TOPIC or TOPIC:PARTITION[,PARTITION...] (e.g. orders:0,1)",
            param_hint="--topic",
        )
    return topic, partitions


def parse_datetime_ms(value: str) -> int:
    """An ISO 8601 time as milliseconds since the epoch; without a zone it is local time,
    as Kafka's --to-datetime reads it."""
    try:
        moment = datetime.fromisoformat(value.strip())
    except ValueError:
        raise click.BadParameter(
            f"{value!r} is not an ISO 8601 time (e.g. 2024-05-01T12:30:00, with Z or "
            f"+02:00 for a zone other than the local one)",
            param_hint="--to-datetime",
        ) from None
    if moment.tzinfo is None:
        moment = moment.astimezone()  # the local zone
    ms: int = (moment - datetime(1970, 1, 1, tzinfo=UTC)) // timedelta(milliseconds=1)
    if ms < 0:
        raise click.BadParameter(f"{value!r} is before 1970", param_hint="--to-datetime")
    return ms


@groups.command("reset-offsets")
@click.argument("group", required=False)
@click.option("--all-groups", is_flag=True, help="Every group (those with members refused).")
@click.option(
    "--topic",
    "topic_specs",
    multiple=True,
    metavar="TOPIC[:P,P...]",
    help="Reset this topic (all partitions, or those listed); repeatable.",
)
@click.option("--all-topics", is_flag=True, help="Reset every topic the group has committed.")
@click.option("--to-earliest", is_flag=True, help="To each partition's log start offset.")
@click.option("--to-latest", is_flag=True, help="To each partition's log end offset.")
@click.option("--to-offset", type=click.IntRange(0), default=None, metavar="N", help="To N.")
@click.option(
    "--to-datetime",
    "to_datetime_ms",
    callback=lambda _c, _p, v: None if v is None else parse_datetime_ms(v),
    metavar="ISO8601",
    default=None,
    help="To the first record at or after this time (the log end if none).",
)
@click.option("--shift-by", type=int, default=None, metavar="N", help="Committed offset + N.")
@click.option(
    "--to-current",
    is_flag=True,
    help="To the committed offset (kept within the log; the log end where none is).",
)
@click.option(
    "--by-duration",
    "by_duration_ms",
    callback=lambda _c, _p, v: None if v is None else parse_duration_ms(v),
    metavar="PnDTnHnMnS",
    default=None,
    help="To the first record at or after now minus this duration, e.g. PT15M, P1D.",
)
@click.option(
    "--from-file",
    "from_file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    default=None,
    help="To the offsets in this CSV of topic,partition,offset lines (as --export prints).",
)
@click.option(
    "--export", is_flag=True, help="Print the plan as topic,partition,offset lines (CSV)."
)
@click.option("--execute", is_flag=True, help="Commit the new offsets (else a dry run).")
@bootstrap_option
@click.pass_context
def groups_reset_offsets(
    ctx: click.Context,
    *,
    group: str | None,
    all_groups: bool,
    topic_specs: tuple[str, ...],
    all_topics: bool,
    to_earliest: bool,
    to_latest: bool,
    to_offset: int | None,
    to_datetime_ms: int | None,
    shift_by: int | None,
    to_current: bool,
    by_duration_ms: int | None,
    from_file: Path | None,
    export: bool,
    execute: bool,
) -> None:
    """Reset GROUP's committed offsets, or every group's (dry run unless --execute).

    Prints the plan (current and new offset per partition) and, with --execute, commits
    it. Exactly one of the --to-*/--shift-by modes. Refused while the group has live
    members; new offsets stay within [log start, log end], as Kafka keeps them.
    """
    if (group is None) == (not all_groups):
        raise click.UsageError("give a GROUP or --all-groups (one of them)")
    if all_groups and from_file is not None:
        raise click.UsageError(
            "--from-file holds one group's offsets: give the GROUP (with --all-groups it "
            "would be written into every group)"
        )
    mode = reset_mode(
        to_earliest=to_earliest,
        to_latest=to_latest,
        to_offset=to_offset,
        to_datetime_ms=to_datetime_ms,
        shift_by=shift_by,
        to_current=to_current,
        by_duration_ms=by_duration_ms,
        from_file=None if from_file is None else parse_offsets_file(from_file),
    )
    if mode.kind == "file":
        if topic_specs or all_topics:
            raise click.UsageError("--from-file names the partitions: no --topic or --all-topics")
    elif bool(topic_specs) == all_topics:
        raise click.UsageError("give the topics to reset: --topic TOPIC[:P,P...] or --all-topics")
    specs = [parse_topic_spec(s) for s in topic_specs]
    if group is not None:
        plan = _admin(ctx, lambda admin: _reset(admin, group, specs, mode, execute))
        if export:
            for r in plan:
                click.echo(f"{r.topic},{r.partition},{r.new}")
        else:
            print_table(
                ["topic", "partition", "current", "new"],
                [(r.topic, r.partition, _cell(r.current), r.new) for r in plan],
            )
        done = f"Committed new offsets of {len(plan)} partitions for group {group}."
    else:
        done = _reset_every_group(ctx, specs, mode, execute=execute, export=export)
    if execute:
        click.echo(done, err=True)
    else:
        click.echo("Dry run: nothing committed; add --execute to commit these offsets.", err=True)


def _reset_every_group(
    ctx: click.Context,
    specs: list[tuple[str, tuple[int, ...] | None]],
    mode: ResetMode,
    *,
    execute: bool,
    export: bool,
) -> str:
    """reset-offsets --all-groups: each group's plan (a GROUP column first, as Kafka's);
    groups that refuse (live members, nothing committed) are named on one line after."""
    names = _every_group(ctx)

    async def each(admin: Admin) -> tuple[list[tuple[str, PlanRow]], list[str]]:
        rows: list[tuple[str, PlanRow]] = []
        refused: list[str] = []
        for name in names:
            if not specs and not await admin.list_group_offsets(name):
                continue  # --all-topics of a group with nothing committed: nothing to do
            try:
                rows += [(name, r) for r in await _reset(admin, name, specs, mode, execute)]
            except (CliError, ApiError) as exc:
                refused.append(f"group {name}: {exc}")
        return rows, refused

    rows, refused = _admin(ctx, each)
    if export:
        for name, r in rows:
            click.echo(f"{name},{r.topic},{r.partition},{r.new}")
    else:
        print_table(
            ["group", "topic", "partition", "current", "new"],
            [(name, r.topic, r.partition, _cell(r.current), r.new) for name, r in rows],
        )
    if refused:
        raise CliError(f"{len(refused)} of {len(names)} groups refused: {'; '.join(refused)}")
    return f"Committed new offsets of {len(rows)} partitions for {len(names)} groups."


async def _reset(
    admin: Admin,
    group: str,
    specs: list[tuple[str, tuple[int, ...] | None]],
    mode: ResetMode,
    execute: bool,
) -> list[PlanRow]:
    await _check_inactive(admin, group)
    committed = await admin.list_group_offsets(group)
    if mode.offsets is not None:  # --from-file: its partitions, which must exist
        partitions = await _partitions_to_reset(
            admin, group, [(tp.topic, (tp.partition,)) for tp in mode.offsets], committed
        )
    else:
        partitions = await _partitions_to_reset(admin, group, specs, committed)
    starts = await _offsets(admin, partitions, EARLIEST_TIMESTAMP)
    ends = await _offsets(admin, partitions, LATEST_TIMESTAMP)
    at_time = None
    if mode.kind == "datetime":
        at_time = await _offsets(admin, partitions, mode.value)
    plan = plan_reset(
        mode, partitions, committed=committed, log_starts=starts, log_ends=ends, at_time=at_time
    )
    if execute:
        from client.types import TopicPartition  # noqa: PLC0415  (see _admin)

        await admin.alter_group_offsets(
            group, {TopicPartition(r.topic, r.partition): r.new for r in plan}
        )
    return plan


async def _check_inactive(admin: Admin, group: str) -> None:
    """Refuse while members are live: they would overwrite the new offsets (Kafka's rule)."""
    try:
        (description,) = await admin.describe_groups([group])
    except GroupIdNotFoundError:
        return  # a new group: its offsets may be set
    if description.state not in _INACTIVE:
        raise CliError(
            f"group {group!r} is {description.state} with {len(description.members)} "
            f"member(s); offsets can only be reset while it has none: stop its consumers first"
        )


async def _partitions_to_reset(
    admin: Admin,
    group: str,
    specs: list[tuple[str, tuple[int, ...] | None]],
    committed: Mapping[TopicPartition, int],
) -> list[TopicPartition]:
    if not specs:  # --all-topics
        if not committed:
            raise CliError(f"group {group!r} has no committed offsets; name them with --topic")
        return sorted(committed)
    from client.types import TopicPartition  # noqa: PLC0415  (see _admin)

    described = {t.name: t for t in await admin.describe_topics(sorted({t for t, _ in specs}))}
    wanted: set[TopicPartition] = set()
    for topic, listed in specs:
        have = [p.partition for p in described[topic].partitions]
        for p in listed if listed is not None else have:
            if p not in have:
                raise CliError(f"topic {topic!r} has no partition {p} (it has {len(have)})")
            wanted.add(TopicPartition(topic, p))
    return sorted(wanted)


@groups.command("configs")
@click.argument("group")
@bootstrap_option
@click.pass_context
def groups_configs(ctx: click.Context, group: str) -> None:
    """GROUP's settings: CONFIG VALUE SOURCE SYNONYMS (Kafka's kafka-configs --describe
    --entity-type groups): each group config, its value and where it comes from (the
    group's own, or the broker setting under it)."""
    from client import ConfigResource  # noqa: PLC0415  (see _admin)

    entries = _admin(ctx, lambda admin: admin.describe_configs(ConfigResource("group", group)))
    rows = [
        (
            e.name,
            e.value,
            e.source,
            ", ".join(f"{y.source}:{y.name}={y.value}" for y in e.synonyms[1:]) or "-",
        )
        for e in sorted(entries.values())
    ]
    print_table(["config", "value", "source", "synonyms"], rows)


@groups.command("alter")
@click.argument("group")
@click.option(
    "--config",
    "configs",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set a group config, e.g. share.auto.offset.reset=earliest (repeatable).",
)
@click.option(
    "--delete-config",
    "deletes",
    multiple=True,
    metavar="NAME",
    help="Return a group config to the broker's setting (repeatable).",
)
@click.option("--validate-only", is_flag=True, help="Only check the change; make none.")
@bootstrap_option
@click.pass_context
def groups_alter(
    ctx: click.Context,
    *,
    group: str,
    configs: tuple[str, ...],
    deletes: tuple[str, ...],
    validate_only: bool,
) -> None:
    """Change GROUP's configs (Kafka's kafka-configs --alter --entity-type groups):
    share.auto.offset.reset, share.record.lock.duration.ms, share.session.timeout.ms,
    share.heartbeat.interval.ms. They apply from the group's next use of each."""
    sets = parse_configs(configs)
    removed = parse_deleted(deletes, sets)
    if not sets and not removed:
        raise click.UsageError(
            "nothing to change: give --config NAME=VALUE or --delete-config NAME"
        )
    from client import AlterConfigOp, ConfigResource  # noqa: PLC0415  (see _admin)

    ops = [AlterConfigOp(k, v) for k, v in sets.items()]
    ops += [AlterConfigOp(k, op_type="DELETE") for k in removed]
    changes = {ConfigResource("group", group): ops}
    _admin(ctx, lambda admin: admin.incremental_alter_configs(changes, validate_only=validate_only))
    what = [f"set {k}={v}" for k, v in sets.items()] + [f"deleted {k}" for k in removed]
    verb = "Valid change of" if validate_only else "Altered"
    click.echo(f"{verb} group {group}: {', '.join(what)}.")


@groups.command("delete-offsets")
@click.argument("group")
@click.option(
    "--topic",
    "topic_specs",
    multiple=True,
    required=True,
    help="TOPIC (every partition) or TOPIC:P[,P...]; repeatable.",
)
@bootstrap_option
@click.pass_context
def groups_delete_offsets(ctx: click.Context, group: str, topic_specs: tuple[str, ...]) -> None:
    """Delete GROUP's committed offsets of the topics (Kafka's kafka-consumer-groups
    --delete-offsets): the group starts those partitions by its auto.offset.reset. A
    topic a member of the group subscribes to keeps its offsets."""
    from client import TopicPartition  # noqa: PLC0415  (see _admin)

    specs = [parse_topic_spec(v) for v in topic_specs]

    async def delete(admin: Admin) -> Any:
        # a whole topic: its partitions now and those the group has offsets of (a topic
        # deleted since keeps the group's offsets: removing them is what this is for)
        committed = await admin.list_group_offsets(group)
        partitions: list[TopicPartition] = []
        unknown: list[str] = []
        for topic, parts in specs:
            if parts is not None:
                partitions += [TopicPartition(topic, p) for p in parts]
                continue
            found = {tp.partition for tp in committed if tp.topic == topic}
            try:
                (described,) = await admin.describe_topics([topic])
                found.update(p.partition for p in described.partitions)
            except UnknownTopicOrPartitionError:
                if not found:
                    unknown.append(topic)
            partitions += [TopicPartition(topic, p) for p in sorted(found)]
        outcome = await admin.delete_consumer_group_offsets(group, partitions) if partitions else {}
        return outcome, unknown

    outcome, unknown = _admin(ctx, delete)
    rows: list[tuple[str, int, str]] = [
        (t, -1, f"Error: topic {t!r} does not exist and group {group!r} has no offsets of it")
        for t in unknown
    ]
    rows += [
        (tp.topic, tp.partition, "Successful" if error is None else f"Error: {error_line(error)}")
        for tp, error in sorted(outcome.items())
    ]
    print_table(["TOPIC", "PARTITION", "STATUS"], sorted(rows))
    if unknown or any(error is not None for error in outcome.values()):
        raise click.exceptions.Exit(1)


@groups.command("delete")
@click.argument("group", required=False)
@click.option("--all-groups", is_flag=True, help="Every group (those with members refused).")
@click.option("--if-exists", is_flag=True, help="A missing group is not an error.")
@bootstrap_option
@click.pass_context
def groups_delete(ctx: click.Context, group: str | None, all_groups: bool, if_exists: bool) -> None:
    """Delete GROUP and its committed offsets (or every group, --all-groups).

    Refused while the group has members (NON_EMPTY_GROUP): stop its consumers first."""
    if (group is None) == (not all_groups):
        raise click.UsageError("give a GROUP or --all-groups (one of them)")
    if group is None:
        names = _every_group(ctx)
        outcome = _admin(ctx, lambda admin: admin.delete_groups(names))
        refused = [  # (one gone since it was listed is as good as deleted)
            (n, e)
            for n, e in outcome.items()
            if e is not None and not isinstance(e, GroupIdNotFoundError)
        ]
        for name in names:
            if outcome.get(name) is None:
                click.echo(f"Deleted group {name}.")
        if refused:  # one line, as every error here
            why = "; ".join(f"group {n}: {error_line(e)}" for n, e in refused)
            raise CliError(f"{len(refused)} of {len(names)} groups were not deleted: {why}")
        return
    outcome = _admin(ctx, lambda admin: admin.delete_groups([group]))
    error = outcome[group]
    if isinstance(error, GroupIdNotFoundError) and if_exists:
        click.echo(f"Group {group} does not exist.")
        return
    if error is not None:
        raise error
    click.echo(f"Deleted group {group}.")


# --- acls -------------------------------------------------------------------------------


@main.command("acls")
@click.option("--add", "mode", flag_value="add", help="Add the ACLs the options describe.")
@click.option("--remove", "mode", flag_value="remove", help="Remove the ACLs they match.")
@click.option("--list", "mode", flag_value="list", help="List the ACLs they match (default).")
@click.option("--allow-principal", multiple=True, help="Type:name, e.g. User:alice (repeatable).")
@click.option("--deny-principal", multiple=True, help="Type:name to deny (repeatable).")
@click.option("--allow-host", multiple=True, help="Where the allowed may come from (default *).")
@click.option("--deny-host", multiple=True, help="Where the denied come from (default *).")
@click.option(
    "--operation",
    "operations",
    multiple=True,
    help="Read, Write, Create, Delete, Alter, Describe, ClusterAction, DescribeConfigs, "
    "AlterConfigs, IdempotentWrite, CreateTokens, DescribeTokens, All (repeatable; "
    "default All).",
)
@click.option("--topic", "topics", multiple=True, help="A topic ('*': every one; repeatable).")
@click.option("--group", "groups_", multiple=True, help="A group ('*': every one; repeatable).")
@click.option(
    "--transactional-id",
    "transactional_ids",
    multiple=True,
    help="A producer's transactional id ('*': every one; repeatable).",
)
@click.option(
    "--delegation-token",
    "delegation_tokens",
    multiple=True,
    help="A delegation token's id (Describe lets one see it; repeatable).",
)
@click.option(
    "--user-principal",
    "user_principals",
    multiple=True,
    help="A user, User:<name>, whose tokens one may make (CreateTokens) or see "
    "(DescribeTokens); repeatable.",
)
@click.option("--cluster", is_flag=True, help="The cluster itself.")
@click.option(
    "--resource-pattern-type",
    default=None,
    help="LITERAL (default to --add/--remove), PREFIXED; to --list/--remove also ANY, MATCH.",
)
@click.option("--principal", help="--list: only this principal's.")
@click.option(
    "--producer",
    is_flag=True,
    help="A producer's: Write, Describe, Create on the topics; Write, Describe on the "
    "transactional ids.",
)
@click.option(
    "--consumer",
    is_flag=True,
    help="A consumer's: Read, Describe on the topics, Read on the groups.",
)
@click.option("--force", is_flag=True, help="Accepted for Kafka's scripts; nothing is asked.")
@bootstrap_option
@click.pass_context
def acls(ctx: click.Context, /, **options: Any) -> None:
    """Kafka's kafka-acls: add, remove and list ACLs (brokers with
    authorizer.class.name=kafka.security.authorizer.AclAuthorizer)."""
    from client.acls import AclCommand  # noqa: PLC0415  (see _admin)

    try:
        command = AclCommand(**options)
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    if command.mode == "list":
        found = _admin(ctx, command.matching)
        _print_acls(found)
    elif command.mode == "add":
        added = _admin(ctx, command.add)
        click.echo(f"Added {len(added)} ACL{'s' if len(added) != 1 else ''}:")
        _print_acls(added)
    else:
        removed = _admin(ctx, command.remove)
        click.echo(f"Removed {len(removed)} ACL{'s' if len(removed) != 1 else ''}:")
        _print_acls(removed)


def _print_acls(bindings: Iterable[Any]) -> None:
    print_table(
        ["resource-type", "name", "pattern", "principal", "host", "operation", "permission"],
        [
            (
                a.resource_type.title,
                a.resource_name,
                a.pattern_type.title,
                a.principal,
                a.host,
                a.operation.title,
                a.permission.title,
            )
            for a in bindings
        ],
    )


# --- quotas -----------------------------------------------------------------------------


@main.command("quotas")
@click.option("--describe", "mode", flag_value="describe", help="Show the quotas (default).")
@click.option("--alter", "mode", flag_value="alter", help="Set or delete quotas.")
@click.option("--user", help="The user's quotas (its principal's name).")
@click.option("--user-defaults", is_flag=True, help="The default user's quotas.")
@click.option("--client-id", help="The client id's quotas.")
@click.option("--client-defaults", is_flag=True, help="The default client id's quotas.")
@click.option("--ip", help="An address's quota (connection_creation_rate; alone).")
@click.option("--ip-defaults", is_flag=True, help="Every address's default quota.")
@click.option(
    "--add-config",
    help="Kafka's form: producer_byte_rate=1048576,consumer_byte_rate=2097152,"
    "request_percentage=50,controller_mutation_rate=10; for an ip, "
    "connection_creation_rate=10.",
)
@click.option("--delete-config", help="Names to remove, e.g. producer_byte_rate.")
@bootstrap_option
@click.pass_context
def quotas(
    ctx: click.Context,
    *,
    mode: str | None,
    user: str | None,
    user_defaults: bool,
    client_id: str | None,
    client_defaults: bool,
    ip: str | None,
    ip_defaults: bool,
    add_config: str | None,
    delete_config: str | None,
) -> None:
    """Client quotas (Kafka's kafka-configs --entity-type users/clients/ips): byte rates,
    request_percentage (the share of a broker's time its requests may take) and
    controller_mutation_rate (partitions created or deleted per second) per user, client
    id, or both; and connection_creation_rate (new connections a second) per address.
    Every broker applies a change at once."""
    from client.admin import ANY_ENTITY  # noqa: PLC0415  (see _admin)

    if (
        (user is not None and user_defaults)
        or (client_id is not None and client_defaults)
        or (ip is not None and ip_defaults)
    ):
        raise click.UsageError("name an entity, or its defaults, not both")
    entity: list[tuple[str, str | None]] = []
    if user is not None or user_defaults:
        entity.append(("user", user))
    if client_id is not None or client_defaults:
        entity.append(("client-id", client_id))
    if ip is not None or ip_defaults:
        if entity:
            raise click.UsageError("an ip's quota stands alone: no --user or --client-id with it")
        entity.append(("ip", ip))
    if mode != "alter":
        named = dict(entity)
        found = _admin(
            ctx,
            lambda admin: admin.describe_client_quotas(
                user=named.get("user", ANY_ENTITY),
                client_id=named.get("client-id", ANY_ENTITY),
                ip=named.get("ip", ANY_ENTITY),
            ),
        )
        print_table(
            ["user", "client-id", "ip", "quota", "value"],
            [
                (
                    _quota_name(dict(e), "user"),
                    _quota_name(dict(e), "client-id"),
                    _quota_name(dict(e), "ip"),
                    key,
                    f"{value:g}",
                )
                for e, values in sorted(found.items(), key=lambda kv: repr(kv[0]))
                for key, value in sorted(values.items())
            ],
        )
        return
    if not entity:
        raise click.UsageError(
            "--alter needs --user/--user-defaults and/or --client-id/--client-defaults, "
            "or --ip/--ip-defaults"
        )
    changes = _quota_changes(add_config, delete_config)
    _admin(ctx, lambda admin: admin.alter_client_quotas({tuple(entity): changes}))
    click.echo(f"Altered the quotas of {_quota_entity(entity)}.")


def _quota_changes(add: str | None, delete: str | None) -> dict[str, float | None]:
    """kafka-configs' --add-config / --delete-config: a value per name, None to remove."""
    changes: dict[str, float | None] = {}
    for item in (add or "").split(","):
        if not item.strip():
            continue
        key, sep, value = item.partition("=")
        try:
            if not sep:
                raise ValueError(item)
            changes[key.strip()] = float(value)
        except ValueError:
            raise click.UsageError(f"--add-config {item!r} is not name=number") from None
    for key in (delete or "").split(","):
        if key.strip():
            changes[key.strip()] = None
    if not changes:
        raise click.UsageError("--alter needs --add-config or --delete-config")
    return changes


def _quota_name(parts: dict[str, str | None], kind: str) -> str:
    if kind not in parts:
        return "-"
    name = parts[kind]
    return "<default>" if name is None else name


def _quota_entity(entity: list[tuple[str, str | None]]) -> str:
    return " and ".join(f"{kind} {'<default>' if n is None else n}" for kind, n in entity)


# --- broker configs ---------------------------------------------------------------------


@main.command("broker-configs")
@click.option("--describe", "mode", flag_value="describe", help="Show the configs (default).")
@click.option("--alter", "mode", flag_value="alter", help="Set or delete configs.")
@click.option("--broker", type=click.IntRange(0), default=None, help="This broker's configs.")
@click.option("--broker-defaults", is_flag=True, help="Every broker's default.")
@click.option(
    "--add-config",
    help="Kafka's form: log.retention.ms=3600000,log.cleanup.policy=[compact,delete].",
)
@click.option("--delete-config", help="Names to remove, e.g. log.retention.ms.")
@click.option(
    "--all", "show_all", is_flag=True, help="--describe: every setting, not only dynamic ones."
)
@bootstrap_option
@click.pass_context
def broker_configs(
    ctx: click.Context,
    *,
    mode: str | None,
    broker: int | None,
    broker_defaults: bool,
    add_config: str | None,
    delete_config: str | None,
    show_all: bool,
) -> None:
    """Dynamic broker configs (Kafka's kafka-configs --entity-type brokers): change a
    broker's settings, or every broker's default, on a running cluster. Topics without
    an override of their own follow a new default at once."""
    from client.types import AlterConfigOp, ConfigResource  # noqa: PLC0415  (see _admin)

    if broker is not None and broker_defaults:
        raise click.UsageError("give --broker or --broker-defaults, not both")
    if mode != "alter" and (add_config or delete_config):
        raise click.UsageError("--add-config and --delete-config go with --alter")
    if mode == "alter":
        if broker is None and not broker_defaults:
            raise click.UsageError("--alter needs --broker ID or --broker-defaults")
        ops = [AlterConfigOp(k, v) for k, v in parse_add_config(add_config).items()]
        ops += [AlterConfigOp(k.strip(), op_type="DELETE") for k in _names_of(delete_config)]
        if not ops:
            raise click.UsageError("--alter needs --add-config or --delete-config")
        resource = ConfigResource("broker", "" if broker is None else str(broker))
        _admin(ctx, lambda admin: admin.incremental_alter_configs({resource: ops}))
        whose = "every broker's default" if broker is None else f"broker {broker}"
        click.echo(f"Altered the configs of {whose}.")
        return

    async def describe(admin: Any) -> list[tuple[str, Any]]:
        if broker_defaults:
            return [("<default>", await admin.describe_configs(ConfigResource("broker", "")))]
        ids = (
            [broker]
            if broker is not None
            else sorted(b.node_id for b in (await admin.describe_cluster()).brokers)
        )
        found = await asyncio.gather(
            *(admin.describe_configs(ConfigResource("broker", str(i))) for i in ids)
        )
        listed = [(str(i), f) for i, f in zip(ids, found, strict=True)]
        if broker is None:
            default = await admin.describe_configs(ConfigResource("broker", ""))
            listed.insert(0, ("<default>", default))
        return listed

    rows = []
    for whose, entries in _admin(ctx, describe):
        # as kafka-configs: a broker's own settings under it, the defaults once, under
        # <default> (not again under every broker that inherits them)
        own = "DYNAMIC_DEFAULT_BROKER_CONFIG" if whose == "<default>" else "DYNAMIC_BROKER_CONFIG"
        for e in sorted(entries.values()):
            if not show_all and e.source != own:
                continue
            value = "(secret)" if e.is_sensitive else e.value
            rows.append((whose, e.name, value, e.source))
    print_table(["broker", "config", "value", "source"], rows)


def parse_add_config(text: str | None) -> dict[str, str]:
    """kafka-configs' --add-config: ``a=1,b=[x,y]`` (brackets hold a list's commas)."""
    configs: dict[str, str] = {}
    for item in _split_outside_brackets(text or ""):
        name, sep, value = item.partition("=")
        if not sep or not name.strip():
            raise click.UsageError(f"--add-config {item!r} is not name=value")
        value = value.strip()
        if value.startswith("[") and value.endswith("]"):
            value = value[1:-1]
        configs[name.strip()] = value
    return configs


def _split_outside_brackets(text: str) -> list[str]:
    items, depth, start = [], 0, 0
    for i, char in enumerate(text):
        depth += {"[": 1, "]": -1}.get(char, 0)
        if char == "," and depth == 0:
            items.append(text[start:i])
            start = i + 1
    items.append(text[start:])
    return [i.strip() for i in items if i.strip()]


def _names_of(text: str | None) -> list[str]:
    return [n.strip() for n in (text or "").split(",") if n.strip()]


# --- delegation tokens ------------------------------------------------------------------


@main.command("delegation-tokens")
@click.option("--create", "mode", flag_value="create", help="Make a token for the login.")
@click.option("--renew", "mode", flag_value="renew", help="Push a token's expiry out.")
@click.option("--expire", "mode", flag_value="expire", help="End a token (now, or later).")
@click.option("--describe", "mode", flag_value="describe", help="Show tokens (default).")
@click.option(
    "--renewer-principal",
    multiple=True,
    help="--create: a user who may renew it too (User:<name>; repeatable).",
)
@click.option(
    "--owner-principal",
    multiple=True,
    help="--create: whose token it is (default: the login's; needs CREATE_TOKENS on that "
    "user). --describe: only these owners' tokens (repeatable).",
)
@click.option(
    "--max-life-time-period",
    type=int,
    default=-1,
    help="--create: its longest life in ms (-1: the broker's delegation.token.max.lifetime.ms).",
)
@click.option("--hmac", help="--renew / --expire: the token's HMAC (base64, as printed).")
@click.option(
    "--renew-time-period",
    type=int,
    default=-1,
    help="--renew: ms from now (-1: the broker's delegation.token.expiry.time.ms).",
)
@click.option(
    "--expiry-time-period",
    type=int,
    default=-1,
    help="--expire: ms from now (-1: at once; the token is deleted).",
)
@bootstrap_option
@click.pass_context
def delegation_tokens(
    ctx: click.Context,
    *,
    mode: str | None,
    renewer_principal: tuple[str, ...],
    owner_principal: tuple[str, ...],
    max_life_time_period: int,
    hmac: str | None,
    renew_time_period: int,
    expiry_time_period: int,
) -> None:
    """Delegation tokens (Kafka's kafka-delegation-tokens): short-lived SCRAM logins a
    user hands to its jobs. Run with a --command-config that logs in with a password or
    a client certificate (not with a token). A job logs in with the token's id as
    username and its HMAC as password, and tokenauth="true" in its sasl.jaas.config
    (``sasl_token_auth=True`` in the Python clients)."""
    if mode == "create":
        if len(owner_principal) > 1:
            raise click.UsageError("--create takes one --owner-principal")
        owner = owner_principal[0] if owner_principal else None
        made = _admin(
            ctx,
            lambda admin: admin.create_delegation_token(
                renewers=renewer_principal, max_lifetime_ms=max_life_time_period, owner=owner
            ),
        )
        _print_tokens([made])
        return
    if mode in ("renew", "expire"):
        if not hmac:
            raise click.UsageError(f"--{mode} needs --hmac (the token's, base64)")
        try:
            raw = base64.b64decode(hmac, validate=True)
        except ValueError:
            raise click.UsageError("--hmac is not base64 (as --create prints it)") from None
        if mode == "renew":
            expiry = _admin(ctx, lambda admin: admin.renew_delegation_token(raw, renew_time_period))
        else:
            expiry = _admin(
                ctx, lambda admin: admin.expire_delegation_token(raw, expiry_time_period)
            )
        click.echo(f"The token's expiry is now {_when(expiry)}.")
        return
    owners = list(owner_principal) or None
    _print_tokens(_admin(ctx, lambda admin: admin.describe_delegation_tokens(owners)))


def _print_tokens(tokens: Iterable[Any]) -> None:
    print_table(
        ["TOKENID", "HMAC", "OWNER", "REQUESTER", "RENEWERS", "ISSUEDATE", "EXPIRYDATE", "MAXDATE"],
        [
            (
                t.token_id,
                t.password,
                t.owner,
                t.requester,
                ",".join(t.renewers) or "-",
                _when(t.issue_timestamp_ms),
                _when(t.expiry_timestamp_ms),
                _when(t.max_timestamp_ms),
            )
            for t in tokens
        ],
    )


def _when(ms: int) -> str:
    """A wall-clock time in ms, as UTC ISO 8601 to the second."""
    return datetime.fromtimestamp(ms / 1000, UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


# --- users ------------------------------------------------------------------------------

_SCRAM = ("SCRAM-SHA-256", "SCRAM-SHA-512")


@main.group()
def users() -> None:
    """SCRAM users of SASL listeners: list, describe, set a password, delete."""


@users.command("list")
@bootstrap_option
@click.pass_context
def users_list(ctx: click.Context) -> None:
    """Every user with a SCRAM credential, and its mechanisms."""
    found = _admin(ctx, lambda admin: admin.describe_user_scram_credentials())
    _print_users(found.values())


@users.command("describe")
@click.argument("name", nargs=-1, required=True)
@bootstrap_option
@click.pass_context
def users_describe(ctx: click.Context, name: tuple[str, ...]) -> None:
    """NAME's mechanisms and iterations (never a password or its keys)."""
    found = _admin(ctx, lambda admin: admin.describe_user_scram_credentials(name))
    _print_users(found.values())


def _print_users(found: Iterable[Any]) -> None:
    print_table(
        ["user", "mechanism", "iterations"],
        [
            (d.name, info.mechanism, info.iterations)
            for d in sorted(found)
            for info in sorted(d.credential_infos)
        ],
    )


@users.command("set-password")
@click.argument("name")
@click.option(
    "--mechanism",
    "mechanisms",
    type=click.Choice(_SCRAM),
    multiple=True,
    help="Repeat for both (default: SCRAM-SHA-256 and SCRAM-SHA-512).",
)
@click.option("--iterations", type=click.IntRange(4096, 16384), default=4096, show_default=True)
@click.option(
    "--password-file",
    type=click.File("r"),
    help="Read the password from the file's first line ('-': stdin). Default: ask for it.",
)
@bootstrap_option
@click.pass_context
def users_set_password(
    ctx: click.Context,
    name: str,
    mechanisms: tuple[str, ...],
    iterations: int,
    password_file: Any,
) -> None:
    """Create NAME, or change its password (Kafka's kafka-configs --alter --add-config
    'SCRAM-SHA-256=[password=...]' --entity-type users). Every broker takes it at the
    next login. The password is salted and hashed here; only that is sent."""
    from client import UserScramCredentialUpsertion  # noqa: PLC0415  (see _admin)

    if password_file is not None:
        password = password_file.readline().rstrip("\r\n")
    else:
        password = click.prompt(f"Password for {name}", hide_input=True, confirmation_prompt=True)
    if not password:
        raise click.UsageError("the password is empty")
    chosen = mechanisms or _SCRAM
    alterations = [UserScramCredentialUpsertion(name, m, password, iterations) for m in chosen]
    _admin(ctx, lambda admin: admin.alter_user_scram_credentials(alterations))
    click.echo(f"Set the password of user {name} for {', '.join(chosen)}.")


@users.command("delete")
@click.argument("name")
@click.option(
    "--mechanism",
    "mechanisms",
    type=click.Choice(_SCRAM),
    multiple=True,
    help="Only this mechanism's credential (default: every one the user has).",
)
@bootstrap_option
@click.pass_context
def users_delete(ctx: click.Context, name: str, mechanisms: tuple[str, ...]) -> None:
    """Delete NAME's SCRAM credentials; its connections already logged in stay so."""
    from client import UserScramCredentialDeletion  # noqa: PLC0415  (see _admin)

    async def delete(admin: Admin) -> list[str]:
        chosen = list(mechanisms)
        if not chosen:
            found = await admin.describe_user_scram_credentials([name])
            chosen = [i.mechanism for i in found[name].credential_infos]
        await admin.alter_user_scram_credentials(
            [UserScramCredentialDeletion(name, m) for m in chosen]
        )
        return chosen

    deleted = _admin(ctx, delete)
    click.echo(f"Deleted the {', '.join(deleted)} credentials of user {name}.")


# --- transactions ------------------------------------------------------------------------


@main.group()
def transactions() -> None:
    """Kafka's kafka-transactions: list, describe, and abort hanging transactions."""


@transactions.command("list")
@click.option("--state", "states", multiple=True, help="Only these states (Ongoing, ...).")
@click.option(
    "--duration-filter",
    "duration_ms",
    type=click.IntRange(min=0),
    default=None,
    help="Only transactions running longer than this many ms (Kafka's, KIP-994).",
)
@bootstrap_option
@click.pass_context
def transactions_list(ctx: click.Context, states: tuple[str, ...], duration_ms: int | None) -> None:
    """Every transactional id the coordinators hold: id, producer id, state."""
    longer = -1 if duration_ms is None else duration_ms
    try:
        listed = _admin(
            ctx, lambda admin: admin.list_transactions(states, duration_filter_ms=longer)
        )
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    print_table(
        ["transactional-id", "producer-id", "state"],
        [(t.transactional_id, t.producer_id, t.state) for t in listed],
    )


@transactions.command("describe")
@click.option("--transactional-id", required=True)
@bootstrap_option
@click.pass_context
def transactions_describe(ctx: click.Context, transactional_id: str) -> None:
    """One transactional id: its producer, state, timeout and open transaction."""
    (t,) = _admin(ctx, lambda admin: admin.describe_transactions([transactional_id]))
    started = t.transaction_start_time_ms
    duration = int(time.time() * 1000) - started if started >= 0 else None
    print_table(
        [
            "transactional-id",
            "producer-id",
            "producer-epoch",
            "state",
            "timeout-ms",
            "start-time-ms",
            "duration-ms",
            "partitions",
        ],
        [
            (
                t.transactional_id,
                t.producer_id,
                t.producer_epoch,
                t.state,
                t.transaction_timeout_ms,
                _cell(_or_none(started)),
                _cell(duration),
                ",".join(f"{tp.topic}-{tp.partition}" for tp in t.partitions) or "-",
            )
        ],
    )


@transactions.command("describe-producers")
@click.option("--topic", required=True)
@click.option("--partition", type=click.IntRange(0), required=True)
@bootstrap_option
@click.pass_context
def transactions_describe_producers(ctx: click.Context, topic: str, partition: int) -> None:
    """The producers a partition's leader knows, and where their open transaction began."""
    from client import TopicPartition  # noqa: PLC0415  (see _admin)

    tp = TopicPartition(topic, partition)
    found = _admin(ctx, lambda admin: admin.describe_producers([tp]))[tp]
    print_table(
        [
            "producer-id",
            "producer-epoch",
            "coordinator-epoch",
            "last-sequence",
            "last-timestamp",
            "current-transaction-start-offset",
        ],
        [
            (
                p.producer_id,
                p.producer_epoch,
                _cell(_or_none(p.coordinator_epoch)),
                p.last_sequence,
                p.last_timestamp,
                _cell(
                    p.current_transaction_start_offset
                    if p.current_transaction_start_offset >= 0
                    else None
                ),
            )
            for p in found
        ],
    )


def _or_none(value: int) -> int | None:
    """Kafka's -1 for "none", as None (shown as -)."""
    return None if value < 0 else value


@transactions.command("find-hanging")
@click.option("--topic", required=True)
@click.option("--partition", type=click.IntRange(0), default=None, help="Only this partition.")
@click.option(
    "--max-transaction-timeout",
    type=click.IntRange(0),
    default=15,
    show_default=True,
    help="Minutes: a transaction open longer than this may be hanging (the broker's "
    "transaction.max.timeout.ms).",
)
@bootstrap_option
@click.pass_context
def transactions_find_hanging(
    ctx: click.Context, topic: str, partition: int | None, max_transaction_timeout: int
) -> None:
    """Transactions open in the topic's partitions that no coordinator is completing:
    open longer than the longest timeout, and not Ongoing there at their coordinator."""
    from client import TopicPartition  # noqa: PLC0415  (see _admin)

    async def find(admin: Any) -> list[tuple[TopicPartition, Any]]:
        count = len((await admin.describe_topics([topic]))[0].partitions)
        tps = [TopicPartition(topic, p) for p in range(count) if partition in (None, p)]
        producers = await admin.describe_producers(tps)
        cutoff = int(time.time() * 1000) - max_transaction_timeout * 60_000
        open_ = [
            (tp, p)
            for tp, states in producers.items()
            for p in states
            if p.current_transaction_start_offset >= 0 and p.last_timestamp < cutoff
        ]
        if not open_:
            return []
        known = await admin.list_transactions(producer_ids={p.producer_id for _, p in open_})
        described = {
            d.producer_id: d
            for d in await admin.describe_transactions([t.transactional_id for t in known])
        }
        return [
            (tp, p)
            for tp, p in open_
            if (d := described.get(p.producer_id)) is None
            or d.state != "Ongoing"
            or tp not in d.partitions
        ]

    hanging = _admin(ctx, find)
    print_table(
        [
            "topic",
            "partition",
            "producer-id",
            "producer-epoch",
            "coordinator-epoch",
            "start-offset",
            "last-timestamp",
        ],
        [
            (
                tp.topic,
                tp.partition,
                p.producer_id,
                p.producer_epoch,
                p.coordinator_epoch,
                p.current_transaction_start_offset,
                p.last_timestamp,
            )
            for tp, p in hanging
        ],
    )


@transactions.command("abort")
@click.option("--topic", required=True)
@click.option("--partition", type=click.IntRange(0), required=True)
@click.option(
    "--start-offset",
    type=click.IntRange(0),
    default=None,
    help="The first offset of the transaction to abort (its producer is looked up).",
)
@click.option("--producer-id", type=click.IntRange(0), default=None)
@click.option("--producer-epoch", type=click.IntRange(0), default=None)
@click.option("--coordinator-epoch", type=click.IntRange(0), default=None)
@bootstrap_option
@click.pass_context
def transactions_abort(
    ctx: click.Context,
    *,
    topic: str,
    partition: int,
    start_offset: int | None,
    producer_id: int | None,
    producer_epoch: int | None,
    coordinator_epoch: int | None,
) -> None:
    """Write an ABORT marker for a hanging transaction in one partition (KIP-664), named
    by --start-offset or by --producer-id, --producer-epoch and --coordinator-epoch."""
    explicit = (producer_id, producer_epoch, coordinator_epoch)
    if (start_offset is None) == all(v is None for v in explicit) or (
        start_offset is None and any(v is None for v in explicit)
    ):
        raise click.UsageError(
            "name the transaction by --start-offset, or by all of --producer-id, "
            "--producer-epoch and --coordinator-epoch"
        )
    from client import TopicPartition  # noqa: PLC0415  (see _admin)

    tp = TopicPartition(topic, partition)

    async def abort(admin: Any) -> tuple[int, int, int]:
        if start_offset is None:
            assert producer_id is not None and producer_epoch is not None
            assert coordinator_epoch is not None
            pid, epoch, coordinator = producer_id, producer_epoch, coordinator_epoch
        else:
            states = (await admin.describe_producers([tp]))[tp]
            match = [p for p in states if p.current_transaction_start_offset == start_offset]
            if not match:
                raise click.ClickException(
                    f"no transaction open in {topic}-{partition} starts at offset "
                    f"{start_offset}; see `headwater transactions describe-producers`"
                )
            pid, epoch = match[0].producer_id, match[0].producer_epoch
            coordinator = max(match[0].coordinator_epoch, 0)
        await admin.abort_transaction(tp, pid, epoch, coordinator)
        return pid, epoch, coordinator

    pid, epoch, _ = _admin(ctx, abort)
    click.echo(f"Aborted the transaction of producer {pid} (epoch {epoch}) in {topic}-{partition}.")


# --- produce ----------------------------------------------------------------------------


@main.command()
@click.argument("topic")
@click.option("--key-separator", metavar="SEP", default=None, help="Each line is KEY<SEP>VALUE.")
@click.option(
    "--acks",
    type=click.Choice(["0", "1", "all", "-1"]),
    default="1",
    show_default=True,
    help="Acknowledgements a write waits for.",
)
@click.option(
    "--compression",
    type=click.Choice(["none", "gzip", "snappy", "lz4", "zstd"]),
    default="none",
    show_default=True,
)
@click.option(
    "--partition",
    type=click.IntRange(0),
    default=None,
    help="Write every record to this partition.",
)
@click.option(
    "--property",
    "properties",
    multiple=True,
    metavar="NAME=VALUE",
    help="Kafka's line reader: parse.key, key.separator, parse.headers, headers.delimiter, "
    "headers.separator, headers.key.separator, null.marker, ignore.error (repeatable).",
)
@click.option(
    "--producer-property",
    "producer_properties",
    multiple=True,
    metavar="NAME=VALUE",
    help="A producer setting by Kafka's name, e.g. linger.ms=20 (repeatable).",
)
@bootstrap_option
@click.pass_context
def produce(
    ctx: click.Context,
    *,
    topic: str,
    key_separator: str | None,
    acks: str,
    compression: str,
    partition: int | None,
    properties: tuple[str, ...],
    producer_properties: tuple[str, ...],
) -> None:
    """Write one record per line of stdin to TOPIC. Exit code 1 if any record failed.

    A line is [HEADERS<TAB>][KEY<TAB>]VALUE with --property parse.headers=true and
    parse.key=true (headers as name:value,name:value), as Kafka's console producer."""
    from client import Producer  # noqa: PLC0415  (see _admin)

    if key_separator == "":
        raise click.BadParameter("must not be empty", param_hint="--key-separator")
    shorthand = []
    if key_separator is not None:
        shorthand = ["parse.key=true", f"key.separator={key_separator}"]
    try:
        reader = LineReader(
            parse_properties([*shorthand, *properties], PRODUCER_PROPERTIES, "--property")
        )
        chosen = client_settings(Producer, producer_properties, "--producer-property")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    bootstrap = _bootstrap(ctx)
    job = _ProduceJob(topic, reader, partition)
    settings = {
        "linger_ms": 5,
        "acks": "all" if acks in ("all", "-1") else int(acks),
        "compression_type": None if compression == "none" else compression,
        **_security(ctx),
        **chosen,
    }
    # Ctrl-C ends the input like Ctrl-D: what was read has been flushed by stop()
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(job.run(bootstrap, settings, sys.stdin.buffer))
    job.report()


class _ProduceJob:
    """Lines of stdin to records, delivery outcomes counted, failures reported."""

    def __init__(self, topic: str, reader: LineReader, partition: int | None) -> None:
        self.topic = topic
        self.reader = reader
        self.partition = partition
        self.sent = 0
        self.acked = 0
        self.failed = 0

    async def run(self, bootstrap: str, settings: dict[str, Any], stdin: IO[bytes]) -> None:
        from client import Producer  # noqa: PLC0415  (see _admin)

        try:
            producer = Producer(bootstrap_servers=bootstrap, **settings)
        except ValueError as exc:  # a --producer-property the producer refuses
            raise CliError(str(exc)) from None
        await producer.start()
        try:
            if self.partition is not None:  # before any input is read
                _check_partition(
                    self.topic, self.partition, await producer.partitions_for(self.topic)
                )
            line_number = 0
            async for line in _stdin_lines(stdin):
                line_number += 1
                await self._send(producer, line_number, line)
        finally:
            await producer.stop()  # flushes: every future below is done after this

    async def _send(self, producer: Producer, line_number: int, line: bytes) -> None:
        try:
            key, value, headers = self.reader.parse(line)
        except LineError as exc:
            self._failed(line_number, str(exc))
            return
        try:
            future = await producer.send(
                self.topic, value=value, key=key, partition=self.partition, headers=headers or None
            )
        except (MessageTooLargeError, RecordListTooLargeError) as exc:
            self._failed(line_number, error_line(exc))  # this record only
            return
        except ValueError as exc:  # the producer's word for a bad argument: the whole run
            raise CliError(str(exc)) from None
        self.sent += 1
        future.add_done_callback(lambda f: self._delivered(line_number, f))

    def _delivered(self, line_number: int, future: RecordFuture) -> None:
        if future.cancelled():
            self._failed(line_number, "cancelled before it was acknowledged")
        elif (exc := future.exception()) is not None:
            self._failed(line_number, error_line(exc))
        else:
            self.acked += 1

    def _failed(self, line_number: int, why: str) -> None:
        self.failed += 1
        if self.failed <= _MAX_REPORTED_FAILURES:
            click.echo(f"headwater: line {line_number} was not written: {why}", err=True)

    def report(self) -> None:
        if self.failed > _MAX_REPORTED_FAILURES:
            click.echo(f"headwater: ... and {self.failed - _MAX_REPORTED_FAILURES} more", err=True)
        if self.failed:
            raise CliError(
                f"{self.failed} of {self.failed + self.acked} records were not written to "
                f"{self.topic}"
            )
        if sys.stderr.isatty():  # a person is watching (Ctrl-C included): say what was done
            click.echo(f"{self.acked} records written to {self.topic}.", err=True)


def _check_partition(topic: str, partition: int, partitions: set[int] | None) -> None:
    if not partitions:
        raise UnknownTopicOrPartitionError(
            f"topic {topic!r} does not exist; create it with `headwater topics create {topic}`"
        )
    if partition not in partitions:
        raise UnknownTopicOrPartitionError(
            f"topic {topic!r} has no partition {partition} (its partitions are "
            f"0..{max(partitions)})"
        )


async def _stdin_lines(stream: IO[bytes], chunk_bytes: int = 1 << 16) -> AsyncIterator[bytes]:
    """Lines of ``stream`` without their line ending, as they arrive.

    A daemon thread does the blocking reads (``read1``: whatever is there, so a terminal
    gives a line at a time), so the event loop keeps sending while input trickles in,
    and a read still blocked at Ctrl-C never holds up the exit.
    """
    loop = asyncio.get_running_loop()
    chunks: asyncio.Queue[bytes | BaseException] = asyncio.Queue(maxsize=16)

    def read() -> None:
        read1 = getattr(stream, "read1", stream.read)
        while True:
            try:
                chunk: bytes | BaseException = read1(chunk_bytes)
            except (OSError, ValueError) as exc:
                chunk = exc
            with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
                asyncio.run_coroutine_threadsafe(chunks.put(chunk), loop).result()
            if not isinstance(chunk, bytes) or not chunk:
                return

    threading.Thread(target=read, name="headwater-stdin", daemon=True).start()
    pending = b""
    while True:
        chunk = await chunks.get()
        if isinstance(chunk, BaseException):
            raise CliError(f"cannot read stdin: {chunk}")
        if not chunk:
            break
        *lines, pending = (pending + chunk).split(b"\n")
        for line in lines:
            yield line.removesuffix(b"\r")
    if pending:
        yield pending.removesuffix(b"\r")


# --- consume ----------------------------------------------------------------------------


def _offset(value: str) -> int | str:
    if value in ("earliest", "latest"):
        return value
    try:
        offset = int(value)
    except ValueError:
        raise click.BadParameter("must be an offset (0 or more), earliest or latest") from None
    if offset < 0:
        raise click.BadParameter("must be an offset (0 or more), earliest or latest")
    return offset


@main.command()
@click.argument("topic", required=False)
@click.option(
    "--include",
    metavar="REGEX",
    default=None,
    help="Every topic whose whole name matches REGEX instead of TOPIC (not the internal "
    "__ ones); with --group, new ones as they come.",
)
@click.option("--from-beginning", is_flag=True, help="Start at the earliest record, not the end.")
@click.option("--partition", type=click.IntRange(0), default=None, help="Read only this partition.")
@click.option(
    "--offset",
    callback=lambda _c, _p, v: None if v is None else _offset(v),
    metavar="OFFSET|earliest|latest",
    default=None,
    help="Start here (needs --partition).",
)
@click.option(
    "--max-messages", type=click.IntRange(1), default=None, help="Stop after this many records."
)
@click.option(
    "--timeout-ms",
    type=click.IntRange(1),
    default=None,
    help="Stop after this long without a new record.",
)
@click.option("--print-key", is_flag=True, help="KEY<TAB>VALUE.")
@click.option("--print-offset", is_flag=True, help="Prefix each line with Offset:O<TAB>.")
@click.option("--print-partition", is_flag=True, help="Prefix each line with Partition:P<TAB>.")
@click.option(
    "--group",
    default=None,
    help="Consume as a member of this group: share the partitions with its other members, "
    "start at its committed offsets, commit what is printed.",
)
@click.option(
    "--partition-assignment-strategy",
    "strategies",
    multiple=True,
    type=click.Choice(sorted(ASSIGNORS)),
    help="With --group: how the group shares the partitions (repeatable, in order of "
    "preference; default range). cooperative-sticky: rebalances move only what moves.",
)
@click.option(
    "--isolation-level",
    type=click.Choice(["read_uncommitted", "read_committed"]),
    default="read_uncommitted",
    show_default=True,
    help="read_committed: only committed transactions' records (and those of none).",
)
@click.option(
    "--client-rack",
    default="",
    help="This consumer's rack: brokers with a rack-aware replica.selector.class serve it "
    "from the replica there (KIP-392).",
)
@click.option(
    "--property",
    "properties",
    multiple=True,
    metavar="NAME=VALUE",
    help="Kafka's formatter: print.timestamp, print.partition, print.offset, print.headers, "
    "print.key, print.value, key.separator, line.separator, headers.separator, "
    "headers.key.separator, null.literal (repeatable).",
)
@click.option(
    "--consumer-property",
    "consumer_properties",
    multiple=True,
    metavar="NAME=VALUE",
    help="A consumer setting by Kafka's name, e.g. fetch.max.wait.ms=100 (repeatable).",
)
@bootstrap_option
@click.pass_context
def consume(
    ctx: click.Context,
    *,
    topic: str | None,
    include: str | None,
    from_beginning: bool,
    partition: int | None,
    offset: int | str | None,
    max_messages: int | None,
    timeout_ms: int | None,
    print_key: bool,
    print_offset: bool,
    print_partition: bool,
    group: str | None,
    strategies: tuple[str, ...],
    isolation_level: str,
    client_rack: str,
    properties: tuple[str, ...],
    consumer_properties: tuple[str, ...],
) -> None:
    """Print TOPIC's records, one value per line, until --max-messages, --timeout-ms or Ctrl-C.

    As Kafka's console consumer, --property print.key=true print.timestamp=true ... adds
    columns: [CreateTime:TS<TAB>][Partition:P<TAB>][Offset:O<TAB>][HEADERS<TAB>][KEY<TAB>]VALUE."""
    from client import Consumer  # noqa: PLC0415  (see _admin)

    flags = {"key": print_key, "offset": print_offset, "partition": print_partition}
    shorthand = [f"print.{name}=true" for name, on in flags.items() if on]
    try:
        props = parse_properties([*shorthand, *properties], CONSUMER_PROPERTIES, "--property")
        RecordFormat(props)  # checked now, before anything is read
        chosen = client_settings(Consumer, consumer_properties, "--consumer-property")
    except ValueError as exc:
        raise click.UsageError(str(exc)) from None
    group, start = _where_to_read(
        topic=topic,
        include=include,
        partition=partition,
        offset=offset,
        from_beginning=from_beginning,
        group=group,
        strategies=strategies,
        chosen=chosen,
    )
    job = _ConsumeJob(
        topic=topic,
        include=include,
        partition=partition,
        start=start,
        max_messages=max_messages,
        timeout_ms=timeout_ms,
        props=props,
        group=group,
        security=_security(ctx),
        settings={"isolation_level": isolation_level, "client_rack": client_rack, **chosen},
        strategies=strategies,
    )
    bootstrap = _bootstrap(ctx)
    # a second Ctrl-C or SIGTERM while stopping: the records so far are printed
    with contextlib.suppress(KeyboardInterrupt, asyncio.CancelledError):
        asyncio.run(job.run(bootstrap))
    if sys.stderr.isatty():
        click.echo(f"Processed a total of {job.count} messages", err=True)


def _check_regex(text: str | None, option: str) -> None:
    if text is not None:
        try:
            re.compile(text)
        except re.error as exc:
            raise click.UsageError(
                f"{option} {text!r} is not a regular expression: {exc}"
            ) from None


def _where_to_read(
    *,
    topic: str | None,
    include: str | None,
    partition: int | None,
    offset: int | str | None,
    from_beginning: bool,
    group: str | None,
    strategies: tuple[str, ...],
    chosen: dict[str, Any],
) -> tuple[str | None, int | str]:
    """consume's (group, where to start), from its options and the --consumer-property
    settings that say the same (group.id as --group, auto.offset.reset as
    --from-beginning: taken out of ``chosen``, as Kafka's console consumer takes them); a
    usage error for options that exclude each other."""
    if (topic is None) == (include is None):
        raise click.UsageError("give a TOPIC or --include REGEX (one of them)")
    _check_regex(include, "--include")
    if "group_id" in chosen:
        named = chosen.pop("group_id")
        if group is not None and named != group:
            raise click.UsageError("--group and --consumer-property group.id differ")
        group = named
    reset = chosen.get("auto_offset_reset")
    if reset is not None and (from_beginning or offset is not None):
        raise click.UsageError(
            "--from-beginning or --offset and --consumer-property auto.offset.reset exclude "
            "each other"
        )
    if reset in ("earliest", "latest"):  # ("none" stays the consumer's: a group's check)
        del chosen["auto_offset_reset"]
    if (partition is not None or offset is not None) and (include or group is not None):
        raise click.UsageError(
            "--partition and --offset read one partition of a TOPIC, as no group; they "
            "exclude --include and --group (reset a group's offsets with `headwater groups "
            "reset-offsets`)"
        )
    if strategies and group is None:
        raise click.UsageError("--partition-assignment-strategy needs --group")
    if offset is not None and partition is None:
        raise click.UsageError("--offset needs --partition (an offset is per partition)")
    if offset is not None and from_beginning:
        raise click.UsageError("--offset and --from-beginning exclude each other")
    if offset is not None:
        return group, offset
    return group, "earliest" if from_beginning or reset == "earliest" else "latest"


class _ConsumeJob:
    """Assign, seek, print until the limit, the idle timeout, or a signal."""

    def __init__(
        self,
        *,
        topic: str | None,
        include: str | None = None,
        partition: int | None,
        start: int | str,
        max_messages: int | None,
        timeout_ms: int | None,
        props: Mapping[str, str | None] = CONSUMER_PROPERTIES,
        group: str | None = None,
        security: dict[str, Any] | None = None,
        settings: dict[str, Any] | None = None,
        strategies: tuple[str, ...] = (),
    ) -> None:
        self.group = group
        self.security = security or {}  # --command-config: TLS and SASL settings
        self.settings = settings or {}  # the consumer's own (--consumer-property...)
        self.strategies = strategies
        self.topic = topic
        self.include = include
        self.partition = partition
        self.start = start
        self.max_messages = max_messages
        self.timeout_ms = timeout_ms
        self.fmt = RecordFormat(props)
        self.count = 0
        self.printed = 0  # of the last batch written

    async def run(self, bootstrap: str) -> None:
        from client import Consumer  # noqa: PLC0415  (see _admin)

        task = asyncio.current_task()
        assert task is not None
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, task.cancel)
        reset = "earliest" if self.start == "earliest" else "latest"
        settings: dict[str, Any] = {
            "bootstrap_servers": bootstrap,
            "auto_offset_reset": reset,
            **self.security,
        }
        topics: tuple[str, ...] = () if self.topic is None else (self.topic,)
        if self.group is not None:  # where the group committed; else by --from-beginning
            settings["group_id"] = self.group
            settings["enable_auto_commit"] = False  # what was printed is committed, no more
            settings["partition_assignment_strategy"] = self.strategies or ("range",)
        elif self.partition is not None:
            topics = ()
        try:
            consumer = Consumer(*topics, **{**settings, **self.settings})
        except ValueError as exc:  # a --consumer-property the consumer refuses
            raise CliError(str(exc)) from None
        try:
            await consumer.start()
            if self.group is None:
                await self._position(consumer)
            elif self.include is not None:
                consumer.subscribe(pattern=self.include)
            await self._print_until_done(consumer)
        except asyncio.CancelledError:
            task.uncancel()  # Ctrl-C / SIGTERM: a normal way to stop
        finally:
            await consumer.stop()

    async def _position(self, consumer: Consumer) -> None:
        from client import TopicPartition  # noqa: PLC0415  (see _admin)

        if self.include is not None:
            matched = sorted(
                t
                for t in await consumer.topics()
                if re.fullmatch(self.include, t) and not t.startswith("__")  # (as subscribe)
            )
            if not matched:
                raise UnknownTopicOrPartitionError(
                    f"no topic matches --include {self.include!r} (`headwater topics list` "
                    f"shows them)"
                )
            consumer.assign(
                [
                    TopicPartition(t, p)
                    for t in matched
                    for p in sorted(await consumer.partitions_for_topic(t))
                ]
            )
        elif self.partition is not None:
            assert self.topic is not None  # (--partition needs a TOPIC)
            partitions = await consumer.partitions_for_topic(self.topic)
            _check_partition(self.topic, self.partition, partitions)
            consumer.assign([TopicPartition(self.topic, self.partition)])
        assigned = sorted(consumer.assignment())
        if not assigned:
            raise UnknownTopicOrPartitionError(f"topic {self.topic!r} does not exist")
        if self.start == "earliest":
            await consumer.seek_to_beginning(*assigned)
        elif self.start == "latest":
            await consumer.seek_to_end(*assigned)
        else:
            assert isinstance(self.start, int)
            consumer.seek(assigned[0], self.start)

    async def _print_until_done(self, consumer: Consumer) -> None:
        out = sys.stdout.buffer
        loop = asyncio.get_running_loop()
        idle_since = loop.time()
        while self.max_messages is None or self.count < self.max_messages:
            wait_ms = 1000
            if self.timeout_ms is not None:
                left_ms = self.timeout_ms - (loop.time() - idle_since) * 1000
                if left_ms <= 0:
                    return
                wait_ms = max(1, min(wait_ms, int(left_ms)))
            left = None if self.max_messages is None else self.max_messages - self.count
            batches = await consumer.getmany(timeout_ms=wait_ms, max_records=left)
            records = [r for tp in sorted(batches) for r in batches[tp]][:left]
            if records:
                idle_since = loop.time()
                self._write(out, records)
                if self.group is not None and records:
                    await self._commit(consumer, records)

    async def _commit(self, consumer: Consumer, records: list[Any]) -> None:
        """Commit past the records printed (a broken pipe may have printed fewer)."""
        from client import CommitFailedError, TopicPartition  # noqa: PLC0415  (see _admin)

        offsets: dict[TopicPartition, int] = {}
        for record in records[: self.printed]:
            offsets[TopicPartition(record.topic, record.partition)] = record.offset + 1
        try:
            await consumer.commit(offsets)
        except CommitFailedError as exc:  # the group rebalanced: these are redelivered
            click.echo(f"headwater: {exc}", err=True)

    def _write(self, out: IO[bytes], records: list[Any]) -> None:
        try:
            out.write(b"".join(self.fmt.line(r) for r in records))
            out.flush()
        except BrokenPipeError:  # `| head`: the reader has gone; stop quietly
            _silence_stdout()
            self.max_messages = self.count
            self.printed = 0
            return
        self.printed = len(records)
        self.count += len(records)


# --- dump-log ---------------------------------------------------------------------------


@main.command("dump-log")
@click.argument("paths", nargs=-1, required=True, type=click.Path(path_type=Path))
@click.option(
    "--print-data", is_flag=True, help="Each record too: offset, timestamp, key, value, headers."
)
@click.option(
    "--offsets-decoder",
    is_flag=True,
    help="The records are __consumer_offsets': show committed offsets and groups (implies "
    "--print-data).",
)
@click.option(
    "--transaction-log-decoder",
    is_flag=True,
    help="The records are __transaction_state's: show each transactional id's state "
    "(implies --print-data).",
)
def dump_log(
    paths: tuple[Path, ...],
    print_data: bool,
    offsets_decoder: bool,
    transaction_log_decoder: bool,
) -> None:
    """Print what segment files hold: a .log's batches, an .index's or a .timeindex's
    entries, checked against the .log beside them (like kafka-dump-log). Exit code 1 if
    a file is damaged or an index disagrees with its log. Files are only read."""
    from client.dumplog import DECODERS, DumpError, dump_file  # noqa: PLC0415  (only this command)

    if offsets_decoder and transaction_log_decoder:
        raise click.UsageError("--offsets-decoder and --transaction-log-decoder exclude each other")
    decoder = (
        DECODERS["offsets"]
        if offsets_decoder
        else DECODERS["transaction-log"]
        if transaction_log_decoder
        else None
    )

    def emit(line: str) -> None:
        sys.stdout.write(line + "\n")

    damaged = []
    for path in paths:
        try:
            if not dump_file(path, emit, print_data=print_data, decoder=decoder):
                damaged.append(str(path))
        except DumpError as exc:
            raise CliError(str(exc)) from None
    sys.stdout.flush()
    if damaged:
        raise CliError(f"{', '.join(damaged)}: damaged or inconsistent (see above)")


# --- bench ------------------------------------------------------------------------------


class _BenchGroup(click.Group):
    """``headwater bench``: its commands are :mod:`bench.cli`'s, loaded on first use.

    The benchmark harness sits above the client (it imports it), so the client reaches
    it through this one import, made lazily: other commands never load it, and
    lint-imports sees the edge and checks that it never leads to ``broker``.
    """

    @staticmethod
    def _commands() -> click.Group:
        from bench.cli import bench  # noqa: PLC0415

        return bench

    def list_commands(self, ctx: click.Context) -> list[str]:
        return self._commands().list_commands(ctx)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self._commands().get_command(ctx, cmd_name)


@main.group(cls=_BenchGroup)
def bench() -> None:
    """Measure the cluster: produce, consume, e2e, broker (as Kafka's perf tools).

    Each test creates a fresh topic (--partitions, --replication-factor) and deletes it
    afterwards (unless --keep-topic), or uses the --topic named (created if missing). A
    table of records/s, MB/s (10^6 bytes) and latency percentiles follows; --json prints
    one JSON object instead.
    """


if __name__ == "__main__":
    main(prog_name="headwater")
