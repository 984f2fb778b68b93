"""The comparison table: rows, targets, the best-peer ratio, pass/fail, markdown and chart.

Pure apart from :func:`write_chart` (matplotlib, imported there) and :func:`machine_line`
(reads the machine): everything here is tested without a server. A cell is a number or
:class:`NotAvailable` with its reason, so a peer that could not run shows ``n/a (why)``
instead of ending the run.

The ratio is always "times better than the best peer": ``ours / peer`` where more is
better (rates), ``peer / ours`` where less is better (latency, memory). So ">= 2x" reads
the same way on every row.
"""

from __future__ import annotations

import math
import os
import platform
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

__all__ = [
    "PEERS",
    "Cell",
    "NotAvailable",
    "Row",
    "Target",
    "Verdict",
    "best_peer",
    "evaluate",
    "format_value",
    "machine_line",
    "ratio",
    "render_markdown",
    "write_chart",
]

PEERS = ("Redis Streams", "NATS JetStream")
"""The peers' column names, in table order."""


@dataclass(frozen=True, slots=True)
class NotAvailable:
    """A cell with no number: the system could not be installed, started or measured."""

    reason: str

    def __str__(self) -> str:
        return f"n/a ({self.reason})"


Cell = float | NotAvailable


@dataclass(frozen=True, slots=True)
class Target:
    """The issue's goal for one row: an absolute bound and/or a multiple of the best peer.

    ``at_least`` / ``at_most`` bound Headwater's own number (in the row's unit);
    ``peer_multiple`` asks for that many times better than the best peer.
    """

    at_least: float | None = None
    at_most: float | None = None
    peer_multiple: float | None = None

    @property
    def empty(self) -> bool:
        return self.at_least is None and self.at_most is None and self.peer_multiple is None

    def describe(self, unit: str) -> str:
        parts = []
        if self.at_least is not None:
            parts.append(f">= {format_value(self.at_least, unit)}")
        if self.at_most is not None:
            parts.append(f"<= {format_value(self.at_most, unit)}")
        if self.peer_multiple is not None:
            parts.append(f">= {self.peer_multiple:g}x best peer")
        return ", ".join(parts) if parts else "-"


@dataclass(slots=True)
class Row:
    """One workload: Headwater's number, each peer's, and the target."""

    name: str
    unit: str
    higher_is_better: bool
    headwater: Cell
    peers: dict[str, Cell] = field(default_factory=dict)
    target: Target = field(default_factory=Target)


@dataclass(frozen=True, slots=True)
class Verdict:
    """``passed`` is None when nothing could be judged (no target, or Headwater's number
    is n/a); ``unjudged`` names parts of the target that could not be checked."""

    passed: bool | None
    failures: tuple[str, ...] = ()
    unjudged: tuple[str, ...] = ()

    def __str__(self) -> str:
        if self.passed is None:
            return "-" if not self.unjudged else "n/a"
        if not self.passed:
            return "FAIL (" + "; ".join(self.failures) + ")"
        if self.unjudged:
            return "pass (" + "; ".join(self.unjudged) + ")"
        return "pass"


def _number(cell: Cell | None) -> float | None:
    if cell is None or isinstance(cell, NotAvailable) or math.isnan(cell):
        return None
    return cell


def best_peer(row: Row) -> tuple[str, float] | None:
    """The peer with the best number (highest or lowest as the row says); None if none ran."""
    numbers = [(name, n) for name, cell in row.peers.items() if (n := _number(cell)) is not None]
    if not numbers:
        return None
    pick = max if row.higher_is_better else min
    return pick(numbers, key=lambda item: item[1])


def ratio(row: Row) -> float | None:
    """How many times better Headwater is than the best peer (>1: ahead); None if unknown."""
    ours = _number(row.headwater)
    best = best_peer(row)
    if ours is None or best is None:
        return None
    theirs = best[1]
    if row.higher_is_better:
        return ours / theirs if theirs > 0 else math.inf
    return theirs / ours if ours > 0 else math.inf


def evaluate(row: Row) -> Verdict:
    """Every part of the row's target, checked; a peer multiple with no peer is unjudged."""
    target = row.target
    if target.empty:
        return Verdict(None)
    ours = _number(row.headwater)
    if ours is None:
        return Verdict(None, unjudged=("no Headwater figure",))
    failures, unjudged = [], []
    if target.at_least is not None and ours < target.at_least:
        failures.append(f"< {format_value(target.at_least, row.unit)}")
    if target.at_most is not None and ours > target.at_most:
        failures.append(f"> {format_value(target.at_most, row.unit)}")
    if target.peer_multiple is not None:
        times = ratio(row)
        if times is None:
            unjudged.append("no peer ran")
        elif times < target.peer_multiple:
            failures.append(f"{times:.2f}x < {target.peer_multiple:g}x peer")
    return Verdict(not failures, tuple(failures), tuple(unjudged))


_FORMATS = {
    "rec/s": "{:,.0f} rec/s",
    "MB/s": "{:,.0f} MB/s",
    "%": "{:.0f}%",
}


def format_value(value: Cell, unit: str) -> str:
    """A number for the table: thousands separators, sensible precision, the unit."""
    if isinstance(value, NotAvailable):
        return str(value)
    if math.isnan(value):
        return "n/a"
    if unit in _FORMATS:
        return _FORMATS[unit].format(value)
    if unit == "us":
        return f"{value:,.0f} us" if value >= 10 else f"{value:.1f} us"
    return f"{value:,.2f} {unit}" if value < 10 else f"{value:,.0f} {unit}"


def ratio_text(row: Row) -> str:
    times = ratio(row)
    best = best_peer(row)
    if times is None or best is None:
        return "n/a"
    return f"{times:.2f}x vs {best[0]}" if math.isfinite(times) else f"inf vs {best[0]}"


def _escape(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def render_markdown(
    rows: Sequence[Row],
    *,
    machine: str,
    limits: Sequence[tuple[str, Cell, str]] = (),
    notes: Sequence[str] = (),
    peers: Sequence[str] = PEERS,
) -> str:
    """The whole report: the machine line, the machine's limits, the matrix, notes."""
    lines = [f"# Headwater vs peers — {machine}", ""]
    if limits:
        lines += ["| machine limit | measured |", "|---|---:|"]
        lines += [f"| {_escape(name)} | {format_value(v, unit)} |" for name, v, unit in limits]
        lines.append("")
    header = ["workload", "Headwater", *peers, "best-peer ratio", "target", "result"]
    lines.append("| " + " | ".join(header) + " |")
    lines.append("|---|" + "---:|" * (1 + len(peers)) + "---|---|---|")
    for row in rows:
        cells = [
            row.name,
            format_value(row.headwater, row.unit),
            *(format_value(row.peers.get(p, NotAvailable("not run")), row.unit) for p in peers),
            ratio_text(row),
            row.target.describe(row.unit),
            str(evaluate(row)),
        ]
        lines.append("| " + " | ".join(_escape(c) for c in cells) + " |")
    if notes:
        lines.append("")
        lines += [f"- {note}" for note in notes]
    return "\n".join(lines) + "\n"


def machine_line() -> str:
    """CPU model, cores, Python, kernel: what the numbers were measured on."""
    model = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as cpuinfo:
            for line in cpuinfo:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    return (
        f"{model}, {os.cpu_count()} cores, {platform.python_implementation()} "
        f"{platform.python_version()}, {platform.system()} {platform.release()}"
    )


def write_chart(rows: Sequence[Row], path: Path, title: str, peers: Sequence[str] = PEERS) -> None:
    """One small bar chart per workload (their units differ), the target as a dashed line."""
    import matplotlib  # noqa: PLC0415 - the bench extra; the table works without it

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt  # noqa: PLC0415

    systems = ["Headwater", *peers]
    colours = ["#1f77b4", "#d62728", "#2ca02c"]
    columns = 3
    lines = math.ceil(len(rows) / columns)
    figure, axes = plt.subplots(lines, columns, figsize=(4.2 * columns, 3.0 * lines), squeeze=False)
    for index, row in enumerate(rows):
        _chart_row(axes[index // columns][index % columns], row, systems, colours)
    for index in range(len(rows), lines * columns):
        axes[index // columns][index % columns].set_visible(False)
    figure.suptitle(title, fontsize=10)
    figure.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(path, dpi=80)
    plt.close(figure)


def _chart_row(ax: Any, row: Row, systems: Sequence[str], colours: Sequence[str]) -> None:
    """``ax`` is a matplotlib Axes (typed Any: this module imports without matplotlib)."""
    cells: Mapping[str, Cell] = {"Headwater": row.headwater, **row.peers}
    values = [_number(cells.get(s)) for s in systems]
    heights = [v if v is not None else 0.0 for v in values]
    bars = ax.bar(range(len(systems)), heights, color=colours[: len(systems)])
    for bar, value in zip(bars, values, strict=True):
        label = "n/a" if value is None else format_value(value, row.unit).rsplit(" ", 1)[0]
        ax.annotate(
            label,
            (bar.get_x() + bar.get_width() / 2, bar.get_height()),
            ha="center",
            va="bottom",
            fontsize=7,
        )
    bound = row.target.at_least if row.target.at_least is not None else row.target.at_most
    if bound is not None:
        ax.axhline(bound, color="black", linestyle="--", linewidth=0.8)
    better = "higher" if row.higher_is_better else "lower"
    ax.set_title(f"{row.name}\n({row.unit}, {better} is better)", fontsize=8)
    ax.set_xticks(range(len(systems)), [s.split(" ")[0] for s in systems], fontsize=7)
    ax.tick_params(axis="y", labelsize=7)
