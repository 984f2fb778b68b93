"""Where the time goes: flame graphs of the matrix's Headwater workloads.

``python -m bench profile`` (``make bench-profile``) runs each Headwater workload of the
matrix (:mod:`bench.compare.headwater`, the same settings and counts) on fresh clusters
while py-spy samples the client (this process) and every broker at 200 Hz without
stopping them (``--nonblocking``; idle time is not sampled, so a graph is where CPU
went). For each workload and process it writes ``<workload>.<role>.txt`` (py-spy's
collapsed stacks, for any flame-graph tool) and ``<workload>.<role>.svg`` (the flame
graph, drawn from them by :mod:`bench.compare.flame`) to ``bench/results/profiles/``,
and ``README.md`` there: the functions with the most samples of their own, per process.
The rates measured while sampled are shown, but they are below the matrix's (by up to
half with 3 brokers): the matrix's figures are the ones without sampling.

Sampling another process needs ptrace rights (root, or ``kernel.yama.ptrace_scope`` 0);
without them, or without py-spy (``make setup`` installs it), a profile is n/a, with
py-spy's reason.
"""

from __future__ import annotations

import functools
import os
import shutil
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Coroutine, Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.compare import flame, headwater
from bench.compare.servers import scratch_directory, stop_on_sigterm
from bench.compare.table import Cell, NotAvailable, machine_line
from bench.compare.workloads import FULL, QUICK, Sizes, record

__all__ = ["PROFILES", "Profile", "main", "top_functions"]

PROFILES = Path(__file__).resolve().parent.parent / "results" / "profiles"
RATE_HZ = 200
TOP = 12


@dataclass(slots=True)
class Profile:
    """One process's samples during one workload (or why there are none)."""

    workload: str
    role: str
    svg: Path
    stacks: Path
    error: str | None = None
    samples: int = 0
    top: list[tuple[str, int]] = field(default_factory=list)


def py_spy() -> str | None:
    """The py-spy next to this Python (the venv's), else on PATH."""
    beside = Path(sys.executable).with_name("py-spy")
    return str(beside) if beside.exists() else shutil.which("py-spy")


def top_functions(collapsed: str, count: int = TOP) -> tuple[int, list[tuple[str, int]]]:
    """(samples, the ``count`` functions with the most samples of their own) from py-spy's
    collapsed stacks (``frame;frame;... samples`` per line). A function is its name and
    file: the line numbers py-spy adds to each frame are dropped."""
    own: Counter[str] = Counter()
    total = 0
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        total += samples
        leaf = stack.rpartition(";")[2]
        name, _, where = leaf.partition(" (")
        own[f"{name} ({where.rpartition(':')[0] or where.rstrip(')')})"] += samples
    return total, own.most_common(count)


@contextmanager
def sampling(
    tool: str | None, workload: str, pids: Mapping[str, int], directory: Path
) -> Iterator[list[Profile]]:
    """py-spy on each of ``pids`` (role -> pid) while the body runs; the profiles are
    filled in on the way out."""
    profiles = [
        Profile(
            workload,
            role,
            directory / f"{workload}.{role}.svg",
            directory / f"{workload}.{role}.txt",
        )
        for role in pids
    ]
    running: list[tuple[Profile, subprocess.Popen[bytes]]] = []
    try:
        for profile, pid in zip(profiles, pids.values(), strict=True):
            if tool is None:
                profile.error = "py-spy is not installed (make setup installs it)"
                continue
            command = [tool, "record", "--pid", str(pid), "--rate", str(RATE_HZ)]
            command += ["--nonblocking", "--function"]  # --function: a frame per function
            process = subprocess.Popen(
                [*command, "--format", "raw", "--output", str(profile.stacks)],
                stdin=subprocess.DEVNULL,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.PIPE,
                env={**os.environ, "RUST_BACKTRACE": "0"},  # its error, not a backtrace
            )
            running.append((profile, process))
        time.sleep(0.5)  # py-spy attaches before the workload starts
        yield profiles
    finally:
        for _, process in running:
            process.send_signal(signal.SIGINT)  # py-spy writes its output on Ctrl-C
        for profile, process in running:
            _collect(profile, process)


def _collect(profile: Profile, process: subprocess.Popen[bytes]) -> None:
    """Wait for one py-spy; its profile filled in, or its error (never raises)."""
    try:
        _, err = process.communicate(timeout=60)
    except subprocess.TimeoutExpired:
        process.kill()
        _, err = process.communicate()
    if process.returncode or not profile.stacks.exists():
        profile.error = f"py-spy failed: {_reason(err) or process.returncode}"
        return
    try:
        collapsed = profile.stacks.read_text(errors="replace")
        profile.samples, profile.top = top_functions(collapsed)
        profile.svg.write_text(flame.render(collapsed, f"{profile.workload}: {profile.role}"))
    except (OSError, ValueError) as exc:
        profile.error = f"its stacks could not be read or drawn: {exc!r}"


def _reason(stderr: bytes) -> str:
    """py-spy's error line out of what it printed (hints and backtraces follow it)."""
    lines = [line.strip() for line in stderr.decode(errors="replace").splitlines()]
    lines = [line for line in lines if line]
    for line in lines:
        if line.startswith("Error") or "ermission" in line:
            return line
    return lines[0] if lines else ""


Workload = Callable[[str], Coroutine[Any, Any, float | tuple[float, ...]]]


def _workloads(sizes: Sizes) -> dict[int, dict[str, tuple[str, Workload]]]:
    """Brokers -> workload name -> (unit [and the figures' names], the workload on a
    bootstrap)."""
    return {
        1: {
            "produce-rf1": ("rec/s", lambda b: headwater.produce(b, sizes, "1", 1)),
            "produce-send-batch-rf1": (
                "rec/s",
                lambda b: headwater.produce(b, sizes, "1", 1, send_batch=True),
            ),
            "consume": ("rec/s", lambda b: headwater.consume(b, sizes)),
            "e2e-rf1": ("us p50, p99", lambda b: headwater.end_to_end(b, sizes, "1", 1)),
            "broker-alone": ("GB/s", lambda b: headwater.broker_alone(b, sizes)),
        },
        3: {
            "produce-rf3": ("rec/s", lambda b: headwater.produce(b, sizes, "all", 3)),
            "e2e-rf3": ("us p50, p99", lambda b: headwater.end_to_end(b, sizes, "all", 3)),
        },
    }


def run_profiles(
    sizes: Sizes, directory: Path, data_parent: str | None
) -> tuple[dict[str, tuple[str, list[Cell]]], list[Profile]]:
    """Every workload under py-spy; (workload -> (unit, figures), profiles)."""
    tool = py_spy()
    figures: dict[str, tuple[str, list[Cell]]] = {}
    profiles: list[Profile] = []
    with scratch_directory("headwater-profile-", data_parent) as scratch:
        for brokers, workloads in _workloads(sizes).items():
            try:
                cluster = headwater.BenchCluster(scratch / f"cluster-{brokers}", brokers)
                with cluster:
                    _profile_on(cluster, workloads, sizes, tool, directory, figures, profiles)
            except Exception as exc:  # a cluster that would not start: its rows say why
                for name, (unit, _) in workloads.items():
                    if name not in figures:
                        figures[name] = (unit, [NotAvailable(f"{exc!r}")] * _figures_in(unit))
    return figures, profiles


def _profile_on(  # noqa: PLR0917 - run_profiles' state, passed down
    cluster: headwater.BenchCluster,
    workloads: Mapping[str, tuple[str, Workload]],
    sizes: Sizes,
    tool: str | None,
    directory: Path,
    figures: dict[str, tuple[str, list[Cell]]],
    profiles: list[Profile],
) -> None:
    pids = {"client": os.getpid()}
    for broker in cluster.brokers:
        assert broker.pid is not None
        pids[f"broker-{broker.broker_id}"] = broker.pid
    for name, (unit, workload) in workloads.items():
        print(f"[bench] profiling {name}", file=sys.stderr, flush=True)
        results: dict[str, Cell] = {}
        keys = tuple(str(k) for k in range(_figures_in(unit)))
        with sampling(tool, name, pids, directory) as sampled:
            record(results, keys, sizes, functools.partial(workload, cluster.bootstrap))
        figures[name] = (unit, [results[k] for k in keys])
        profiles.extend(sampled)


def render_index(
    figures: Mapping[str, tuple[str, list[Cell]]], profiles: list[Profile], machine: str
) -> str:
    """README.md of the profiles directory: per workload and process, the top functions."""
    lines = [
        "# Where the time goes: the matrix's Headwater workloads under py-spy",
        "",
        f"{machine}. Made by `make bench-profile` (`python -m bench profile`): py-spy at "
        f"{RATE_HZ} Hz, `--nonblocking`, idle not sampled. The figures were measured while "
        "sampled: below the matrix's, by up to half on the 3-broker rows (four processes "
        "and their samplers on the same cores). Each process: its flame graph (`.svg`), "
        "its collapsed stacks (`.txt`, not committed: `make bench-profile` writes them), "
        "and the functions with the most samples of their own (% of that process's "
        "samples). `Runner.run`'s own samples are uvloop's C code under it: polling, "
        "socket reads and writes, timers.",
    ]
    for workload, (described, values) in figures.items():
        unit, _, labels = described.partition(" ")
        shown = [_figure(v) for v in values]
        if labels:  # several figures: "p50 1,024, p99 4,000 us"
            shown = [f"{label} {v}" for label, v in zip(labels.split(", "), shown, strict=True)]
        lines += ["", f"## {workload}: {', '.join(shown)} {unit}"]
        for profile in (p for p in profiles if p.workload == workload):
            lines.append("")
            if profile.error is not None:
                lines.append(f"**{profile.role}**: n/a ({profile.error})")
                continue
            lines += [
                f"**{profile.role}**: {profile.samples:,} samples; "
                f"[flame graph]({profile.svg.name}); collapsed stacks: `{profile.stacks.name}`",
                "",
                "| own samples | function (file) |",
                "|---:|---|",
            ]
            for function, samples in profile.top:
                share = 100 * samples / max(profile.samples, 1)
                lines.append(f"| {share:.1f}% | `{function}` |")
    return "\n".join(lines) + "\n"


def _figures_in(unit: str) -> int:
    """How many figures a workload gives: one, or one per name after its unit."""
    _, _, names = unit.partition(" ")
    return len(names.split(", ")) if names else 1


def _figure(value: Cell) -> str:
    if not isinstance(value, int | float):
        return str(value)
    return f"{value:,.0f}" if value >= 100 else f"{value:.2f}"


def main(environ: Mapping[str, str] = os.environ) -> None:
    stop_on_sigterm()
    quick = environ.get("BENCH_QUICK", "") not in ("", "0")
    final = PROFILES.with_name("profiles-quick") if quick else PROFILES
    # written beside the last run's, which is replaced only once this one is complete
    directory = final.with_name(f".{final.name}-new")
    if directory.exists():
        shutil.rmtree(directory)
    directory.mkdir(parents=True)
    started = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
    try:
        figures, profiles = run_profiles(
            QUICK if quick else FULL, directory, environ.get("BENCH_DIR") or None
        )
    except KeyboardInterrupt:
        shutil.rmtree(directory, ignore_errors=True)
        print("[bench] interrupted: every server started was stopped", file=sys.stderr)
        sys.exit(130)
    machine = f"{machine_line()}; {started}" + ("; QUICK smoke run" if quick else "")
    (directory / "README.md").write_text(render_index(figures, profiles, machine))
    if final.exists():
        shutil.rmtree(final)
    directory.rename(final)
    print(f"[bench] wrote {final}: README.md and {len(profiles)} profiles", file=sys.stderr)
