"""``headwater bench produce | consume | e2e | broker``: :mod:`bench.perf` on the command line.

Loaded by :mod:`client.cli` only when ``headwater bench`` runs (the harness sits above
the client: ``bench`` imports ``client``; the client reaches ``bench`` through that one
lazy import, which lint-imports checks never leads to ``broker``).

The cluster is found as every ``headwater`` command finds it (``--bootstrap-server``, else
``$HEADWATER_BOOTSTRAP_SERVERS``, else the ``cluster up`` cluster recorded in
``./.headwater``). Output: a live progress line on stderr when it is a terminal, notes on
stderr, then the results as a table (rich on a terminal, tab-separated otherwise), or one
JSON object with ``--json``. Exit code 1 if a record failed (after the figures).
"""

from __future__ import annotations

import json
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from bench import perf
from bench.report import LiveProgress, describe, table
from client.cli import CliError, bootstrap_option, print_table, resolve_bootstrap

if TYPE_CHECKING:
    from bench.perf import Result
from protocol.records import CODECS

__all__ = ["bench"]

F = TypeVar("F", bound=Callable[..., Any])


def _throughput(_ctx: click.Context, _param: click.Parameter, value: float | None) -> float | None:
    if value is not None and value <= 0 and value != -1:
        raise click.BadParameter("records/s above 0, or -1 for unlimited")
    return value


def _options(test: str) -> Callable[[F], F]:
    """The options of every test (Kafka's perf-test names where Kafka has one)."""
    records = perf.DEFAULT_RECORDS[test]
    batch = perf.DEFAULT_BATCH_BYTES[test]
    throughput = perf.DEFAULT_THROUGHPUT[test]
    options = [
        click.option(
            "--num-records",
            type=click.IntRange(1),
            default=records,
            show_default=True,
            help="Records to "
            + ("read." if test == "consume" else "send (broker: rounded up to whole batches)."),
        ),
        click.option(
            "--record-size",
            type=click.IntRange(perf.E2E_HEADER_BYTES if test == "e2e" else 1),
            default=100,
            show_default=True,
            help="Value bytes per record.",
        ),
        click.option(
            "--throughput",
            type=float,
            default=throughput,
            show_default=True,
            callback=_throughput,
            help="Target records/s over all producers; -1 is unlimited. Paced, no busy wait.",
        ),
        click.option(
            "--acks", type=click.Choice(["0", "1", "all", "-1"]), default="1", show_default=True
        ),
        click.option(
            "--batch-size",
            type=click.IntRange(1),
            default=batch,
            show_default=True,
            help="Bytes of records per replayed batch."
            if test == "broker"
            else "The producer's batch.size in bytes.",
        ),
        click.option(
            "--linger-ms",
            type=click.IntRange(0),
            default=perf.DEFAULT_LINGER_MS[test],
            show_default=True,
            help="The producer's linger.ms"
            + (" (0, as Kafka's end-to-end latency tool)." if test == "e2e" else "."),
        ),
        click.option(
            "--compression", type=click.Choice(list(CODECS)), default="none", show_default=True
        ),
        click.option(
            "--partitions",
            type=click.IntRange(1),
            default=1,
            show_default=True,
            help="Partitions of the topic the test creates.",
        ),
        click.option(
            "--replication-factor",
            type=click.IntRange(1, 32767),
            default=1,
            show_default=True,
            help="Replication factor of the topic the test creates.",
        ),
        click.option(
            "--max-in-flight",
            type=click.IntRange(1),
            default=5,
            show_default=True,
            help="Requests in flight per broker connection.",
        ),
        click.option(
            "--topic",
            default=None,
            help="Use this topic (created if missing, and kept) [default: a fresh one, "
            "deleted afterwards].",
        ),
        click.option("--keep-topic", is_flag=True, help="Keep the fresh topic."),
        click.option("--json", "as_json", is_flag=True, help="Print one JSON object."),
        bootstrap_option,
    ]
    if test == "produce":
        options.insert(
            2,
            click.option(
                "--payload-file",
                type=click.Path(exists=True, dir_okay=False),
                default=None,
                help="Values from this UTF-8 text file, split at --payload-delimiter, picked "
                "at random (instead of --record-size).",
            ),
        )
        options.insert(
            3,
            click.option(
                "--payload-delimiter",
                default="\\n",
                show_default=True,
                help="Where --payload-file splits into values (\\n: a newline).",
            ),
        )
        options.insert(
            -4,
            click.option(
                "--send-batch",
                is_flag=True,
                help="Fill batches with create_batch() and send them with send_batch() "
                "(to the partitions in turn) instead of send() per record.",
            ),
        )
        options.insert(
            -4,
            click.option(
                "--transactional-id",
                default=None,
                help="Send in transactions under this id (-<n> per producer process; "
                "needs --acks all).",
            ),
        )
        options.insert(
            -4,
            click.option(
                "--transaction-duration-ms",
                type=click.IntRange(1),
                default=3000,
                show_default=True,
                help="With --transactional-id: commit each transaction after this long.",
            ),
        )
    if test in ("consume", "e2e"):
        options.insert(
            -4,
            click.option(
                "--isolation-level",
                type=click.Choice(["read_uncommitted", "read_committed"]),
                default="read_uncommitted",
                show_default=True,
                help="The consumer's isolation level.",
            ),
        )
    if test != "broker":
        options.insert(
            -4,
            click.option(
                "--print-metrics",
                is_flag=True,
                help="Print the clients' metrics at the end (Kafka's names; --json: under "
                '"metrics").',
            ),
        )
    if test in ("produce", "broker"):
        options.insert(
            -4,
            click.option(
                "--producers",
                type=click.IntRange(1, 64),
                default=1,
                show_default=True,
                help="Producer processes; each sends 1/N of the records at 1/N of the rate.",
            ),
        )

    def decorate(f: F) -> F:
        for option in reversed(options):
            f = option(f)
        return f

    return decorate


@click.group()
def bench() -> None:
    """The commands of ``headwater bench`` (whose help text is client.cli's)."""


@bench.command("produce")
@_options("produce")
@click.pass_context
def bench_produce(ctx: click.Context, **options: Any) -> None:
    """Producer throughput and send -> ack latency (kafka-producer-perf-test).

    Latency is per record, from send() to its future's completion: every record in runs
    under 20,000, one in 16 in long runs (a callback per record costs the producer
    a quarter of its rate)."""
    _run(ctx, "produce", options)


@bench.command("consume")
@_options("consume")
@click.pass_context
def bench_consume(ctx: click.Context, **options: Any) -> None:
    """Consumer throughput from the start of the topic (kafka-consumer-perf-test).

    A topic with fewer than --num-records records is first filled up with records of
    --record-size (the output says so); the producer settings apply to that."""
    _run(ctx, "consume", options)


@bench.command("e2e")
@_options("e2e")
@click.pass_context
def bench_e2e(ctx: click.Context, **options: Any) -> None:
    """End-to-end latency: producer at --throughput, consumer in the same process.

    Latency runs from the producer stamping the record (a nanosecond clock in the
    value's first 16 bytes) to the consumer's getmany() returning it."""
    _run(ctx, "e2e", options)


@bench.command("broker")
@_options("broker")
@click.pass_context
def bench_broker(ctx: click.Context, **options: Any) -> None:
    """The broker alone: one pre-encoded batch replayed with raw Produce requests.

    The batch (--batch-size bytes of --record-size records, 1 MiB by default) is encoded
    once and sent again and again, --max-in-flight requests in flight per leader, as fast
    as the broker answers: MB/s, batches/s and request latency are the broker's own."""
    _run(ctx, "broker", options)


def _run(ctx: click.Context, test: str, options: dict[str, Any]) -> None:
    as_json = options.pop("as_json")
    bootstrap = resolve_bootstrap(ctx.ensure_object(dict).get("bootstrap"), os.environ, Path.cwd())
    command_config = ctx.ensure_object(dict).get("command_config")
    if command_config is not None:  # TLS: a path, read again by each --producers child
        options["command_config"] = str(command_config)
    if options.get("payload_file") is not None and (
        ctx.get_parameter_source("record_size") is click.core.ParameterSource.COMMANDLINE
    ):
        raise click.UsageError("give --record-size or --payload-file, not both")
    workload = perf.Workload(**options).resolve(test)
    if sys.stderr.isatty():
        click.echo(describe(test, workload, workload.topic or "(fresh)"), err=True)
        size = workload.record_size
        if workload.payload_file is not None:  # (the live MB/s: their mean size)
            values = perf.payloads(workload)
            size = round(sum(map(len, values)) / len(values))
        with LiveProgress(size) as progress:
            result = perf.run(test, bootstrap, workload, progress)
    else:
        result = perf.run(test, bootstrap, workload)
    if as_json:
        click.echo(json.dumps(result.to_json()))
    else:
        for note in result.notes:
            click.echo(f"note: {note}", err=True)
        print_results([result])
        for client in result.metrics:
            click.echo(f"\n{client.client} metrics")
            print_table(["Metric Name", "Value"], client.lines())
    if result.failed:
        raise CliError(
            f"{result.failed:,} of {result.failed + result.records:,} records failed: "
            f"{result.first_error}"
        )


def print_results(results: list[Result]) -> None:
    """On a terminal a rich table, numbers right-aligned and narrow enough for 80 columns
    (padding collapsed); for scripts the tab-separated lines of every other command."""
    headers, rows = table(results)
    if not sys.stdout.isatty():
        print_table(headers, rows)
        return
    from rich.console import Console  # noqa: PLC0415  (rich costs ~50 ms to import)
    from rich.table import Table  # noqa: PLC0415

    view = Table(box=None, header_style="bold", collapse_padding=True, pad_edge=False)
    for index, header in enumerate(headers):
        view.add_column(header, justify="left" if index == 0 else "right", no_wrap=True)
    for row in rows:
        view.add_row(*row)
    Console().print(view)
