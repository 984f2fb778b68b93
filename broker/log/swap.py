"""Replacing segments by the log cleaner's output, crash-safely (Kafka's
``LocalLog.replaceSegments`` and the ``.swap`` recovery of its ``LogLoader``).

The cleaner writes one new segment for a group of consecutive old ones; its base offset is
the first old one's, ``B``. The steps, each a rename (atomic), and what a crash after each
leaves once :func:`recover_swaps` has run at the next open:

1. ``B.log.cleaned`` + ``B.index.cleaned`` + ``B.timeindex.cleaned``, written and fsynced
   by the cleaner (a worker thread). A crash: the old segments, untouched.
2. :func:`promote`: the ``.cleaned`` files become ``.swap``, the ``.log`` last. Its rename is
   the commit point: a crash before it, the old segments; after it, the new one.
3. :func:`retire`: the old segments' files become ``.deleted``.
4. :func:`install`: the ``.swap`` files take the final names, the ``.log`` last; the
   directory is fsynced.

Recovery of a ``B.log.swap``: it is complete (fsynced before its rename), so every other
``.log`` whose base offset lies in ``[B, end)`` (``end``: one past the swap segment's last
batch) is an old segment of the group and goes with its indexes; the swap segment takes the
final names and gets its indexes rebuilt. The cleaner keeps the last batch of every group
(as an empty batch if need be), so ``end`` is exactly where the old group ended and no
segment after the group is touched. ``.cleaned`` and ``.deleted`` files are leftovers: the
log removes them.

Concurrency: :func:`promote`, :func:`retire` and :func:`install` run on the event loop
thread, inside ``Log.replace_segments``, with no await between them (renames, and two
fsyncs of the directory: small, like the log manager's checkpoints); :func:`recover_swaps`
runs while a log is being opened, before anything else can see it.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from pathlib import Path

import structlog

from broker.log.segment import LogSegment
from protocol.records.files import SEGMENT_KINDS, parse_segment_file_name, segment_name

__all__ = [
    "CLEANED",
    "SWAP",
    "discard",
    "fault_point",
    "install",
    "promote",
    "recover_swaps",
    "retire",
]

CLEANED = ".cleaned"
SWAP = ".swap"
_ORDER = (".index", ".timeindex", ".log")  # the .log last: its name says the step is done


def _no_fault(step: str) -> None:
    return None


fault_point: Callable[[str], None] = _no_fault
"""A seam for crash tests: called with the name of each step as it is about to happen."""


def promote(directory: Path, base: int) -> None:
    """Step 2: ``.cleaned`` -> ``.swap``; from here on the new segment wins a crash."""
    _rename_all(directory, base, CLEANED, SWAP, "promote")
    fsync_dir(directory)


def install(directory: Path, base: int) -> None:
    """Step 4: ``.swap`` -> the final names, after the old files were renamed away."""
    _rename_all(directory, base, SWAP, "", "install")
    fsync_dir(directory)


def retire(segments: Sequence[LogSegment]) -> None:
    """Step 3: the old segments' files become ``.deleted`` (readers keep their descriptors)."""
    for segment in segments:
        fault_point("retire")
        segment.rename_for_delete()


def discard(directory: Path, base: int) -> None:
    """Remove a cleaned segment that will not be swapped in (best effort)."""
    for kind in SEGMENT_KINDS:
        (directory / (segment_name(base, kind) + CLEANED)).unlink(missing_ok=True)


def _rename_all(directory: Path, base: int, old: str, new: str, step: str) -> None:
    for kind in _ORDER:
        fault_point(f"{step}{kind}")
        name = segment_name(base, kind)
        os.replace(directory / (name + old), directory / (name + new))


def recover_swaps(directory: Path, *, index_interval_bytes: int, max_index_bytes: int) -> int:
    """Finish every swap a crash interrupted after its commit point; returns how many."""
    swaps = sorted(
        parsed.base_offset
        for path in directory.iterdir()
        if (parsed := parse_segment_file_name(path.name)) is not None
        and parsed.kind == ".log"
        and parsed.state == SWAP
    )
    for base in swaps:
        for kind in (".index", ".timeindex"):  # rebuilt below, from the log itself
            (directory / (segment_name(base, kind) + SWAP)).unlink(missing_ok=True)
        segment = LogSegment(
            directory,
            base,
            index_interval_bytes=index_interval_bytes,
            max_index_bytes=max_index_bytes,
            created_ms=0,
            suffix=SWAP,
        )
        try:
            segment.recover()
            end = segment.next_offset
            segment.on_roll()
        except BaseException:
            segment.release()  # the open fails: its retry must not leak a descriptor each
            raise
        segment.close()
        _remove_replaced(directory, base, end)
        _rename_all(directory, base, SWAP, "", "recover")
        structlog.get_logger("headwater.log").warning(
            "log.swap_completed", log=directory.name, base_offset=base, end_offset=end
        )
    if swaps:
        fsync_dir(directory)
    return len(swaps)


def _remove_replaced(directory: Path, base: int, end: int) -> None:
    end = max(end, base + 1)  # an empty swap segment still replaces its own name's files
    for path in directory.iterdir():
        parsed = parse_segment_file_name(path.name)
        if parsed is not None and parsed.state == "" and base <= parsed.base_offset < end:
            path.unlink()


def fsync_dir(directory: Path) -> None:
    """Make renames and unlinks in ``directory`` durable."""
    fd = os.open(directory, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
