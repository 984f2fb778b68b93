"""``headwater-broker``: the daemon's command line."""

from __future__ import annotations

import asyncio
import ctypes
import logging
import signal
import sys

import click
import structlog
import uvloop

from broker import sasl, tls
from broker.app import Broker
from broker.config import BrokerConfig, ConfigError, is_secret, load_config
from broker.heap import HeapSettler, settle_heap
from broker.metrics import GC_PAUSES
from protocol.errors import HeadwaterError

VERSION = "0.1.0"

_M_TRIM_THRESHOLD = -1  # glibc's mallopt() parameters (malloc.h)
_M_MMAP_THRESHOLD = -3
_FREED_HEAP_KEPT = 64 * 1024 * 1024
_HEAP_FRAMES_UP_TO = 32 * 1024 * 1024  # glibc's largest mmap threshold on 64-bit


def reuse_freed_heap() -> bool:
    """Keep large request frames on the heap and the heap's freed memory for the next ones.

    By default glibc maps a large block (a 1 MiB produce frame) with mmap, or grows the heap
    for it and gives the freed top back to the kernel at once (trim threshold: two
    blocks): every frame then faults its pages in again, and the kernel zeroes them. That
    was a fifth of the broker's time on 1 MiB batches (`bench broker`: 0.46-0.61 GB/s,
    0.80-0.89 with this). Up to 64 MiB of freed heap is kept. Returns False where there is
    no glibc (nothing changes)."""
    try:
        mallopt = ctypes.CDLL(None).mallopt
    except (OSError, AttributeError):
        return False
    mallopt.argtypes = [ctypes.c_int, ctypes.c_int]
    # each on its own: a 32-bit glibc refuses a 32 MiB mmap threshold, not the trim one
    on_heap = mallopt(_M_MMAP_THRESHOLD, _HEAP_FRAMES_UP_TO)
    kept = mallopt(_M_TRIM_THRESHOLD, _FREED_HEAP_KEPT)
    return bool(on_heap or kept)


def raise_open_files_limit() -> tuple[int, int]:
    """Raise this process's open files limit to its hard limit (as the JVM does for Kafka);
    returns (before, after).

    A partition keeps three files open (its active segment's log and two index mappings,
    more with older segments), besides connections. Desktop Linux starts processes at a
    soft limit of 1,024, which a 300-partition topic used up: the broker then could not
    open logs or accept connections. The hard limit (often 524,288) is the operator's
    ceiling; this only takes what it allows."""
    try:
        import resource  # noqa: PLC0415 - Unix only
    except ImportError:
        return -1, -1
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    wanted = _MAX_OPEN_FILES if hard == resource.RLIM_INFINITY else min(hard, _MAX_OPEN_FILES)
    if soft != resource.RLIM_INFINITY and soft < wanted:
        try:
            resource.setrlimit(resource.RLIMIT_NOFILE, (wanted, hard))
        except (ValueError, OSError):
            return soft, soft
        return soft, wanted
    return soft, soft


_MAX_OPEN_FILES = 1 << 20  # Linux's default nr_open: a soft limit past it is refused


def configure_logging(*, json: bool) -> None:
    """structlog to stdout: JSON lines when not on a terminal (for machines), else pretty."""
    renderer: structlog.typing.Processor = (
        structlog.processors.JSONRenderer() if json else structlog.dev.ConsoleRenderer()
    )
    structlog.configure(
        processors=[
            structlog.processors.add_log_level,
            structlog.processors.TimeStamper(fmt="iso", utc=True),
            structlog.processors.dict_tracebacks if json else structlog.processors.format_exc_info,
            renderer,
        ],
        wrapper_class=structlog.make_filtering_bound_logger(logging.INFO),
        logger_factory=structlog.PrintLoggerFactory(sys.stdout),
        cache_logger_on_first_use=True,
    )


async def serve(config: BrokerConfig) -> int:
    """Run until SIGTERM/SIGINT; returns the exit code."""
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    heap = None
    if config["heap.settle.enable"]:
        heap = HeapSettler(
            quiet_s=config["heap.settle.quiet.ms"] / 1000,
            spacing_s=config["heap.settle.spacing.ms"] / 1000,
            thaw_every_s=config["heap.thaw.interval.ms"] / 1000,
            thaw_after_dropped=config["heap.thaw.dropped.partitions"],
        )
    broker = Broker(config, heap=heap)
    starting = asyncio.ensure_future(broker.start())
    stopping = asyncio.ensure_future(stop.wait())
    try:
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done() and broker.waiting_for_stale_registration:
            # stopped while waiting out its last run's registration (up to 45 s or more):
            # nothing is registered or served yet, so the start is simply abandoned
            starting.cancel()
        try:
            await starting
        except asyncio.CancelledError:
            await broker.stop()
            return 0
        except (HeadwaterError, OSError) as exc:
            click.echo(f"headwater-broker: broker {config.broker_id} cannot start: {exc}", err=True)
            await broker.stop()
            return 1
        await stopping
    finally:
        stopping.cancel()
    await broker.stop()
    return 0


@click.command(context_settings={"help_option_names": ["-h", "--help"]})
@click.option(
    "--config",
    "config_file",
    type=click.Path(dir_okay=False),
    default=None,
    help="A TOML file of settings (Kafka's names), or a Kafka server.properties (a file "
    "whose name ends in .properties).",
)
@click.option(
    "--set",
    "overrides",
    multiple=True,
    metavar="NAME=VALUE",
    help="Set one setting; wins over the file and HEADWATER_* variables.",
)
@click.option(
    "--check",
    is_flag=True,
    help="Validate the configuration, print every setting and its source, exit.",
)
@click.version_option(VERSION, prog_name="headwater-broker")
def main(config_file: str | None, overrides: tuple[str, ...], check: bool) -> None:
    """Run a Headwater broker."""
    try:
        config = load_config(file=config_file, overrides=overrides)
    except ConfigError as exc:
        click.echo(f"headwater-broker: {exc}", err=True)
        sys.exit(1)
    if check:
        try:
            tls.contexts(config)  # the keystore and truststore load
            sasl.peer_login(config)  # the JAAS lines read
            sasl.sasl_listeners(config, None)
        except ConfigError as exc:
            click.echo(f"headwater-broker: {exc}", err=True)
            sys.exit(1)
        for name, value in [*config.items(), *sorted(config.extra.items())]:
            shown = ",".join(value) if isinstance(value, list) else value
            if value and is_secret(name):
                shown = "[hidden]"  # Kafka's mask for a password setting
            click.echo(f"{name}={shown}  # {config.sources[name]}")
        for line in config.ignored:
            click.echo(f"# {line}")
        return
    configure_logging(json=not sys.stdout.isatty())
    for line in config.ignored:
        structlog.get_logger("headwater.broker").warning("broker.setting_ignored", setting=line)
    before, after = raise_open_files_limit()
    if after != before:
        structlog.get_logger("headwater.broker").info(
            "broker.open_files_limit_raised", before=before, after=after
        )
    reuse_freed_heap()
    settle_heap()
    GC_PAUSES.install()  # after: start-up's own full collection is not a stall anyone saw
    sys.exit(uvloop.run(serve(config)))
