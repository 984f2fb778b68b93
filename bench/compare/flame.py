"""Flame graphs as SVG, drawn from collapsed stacks.

Collapsed stacks are one line per distinct stack, ``root;...;leaf samples`` (py-spy's
``raw`` format, the input of Brendan Gregg's flamegraph.pl). The graph is his: a box per
frame, as wide as the samples that passed through it, callees stacked above callers,
siblings in name order, a frame's name, samples and share in its tooltip. Drawing it here
lets py-spy sample each process once (its own SVG output would need a second sampler).
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass, field
from html import escape

__all__ = ["render"]

WIDTH = 1200.0
ROW = 16
TOP_MARGIN = 32
CHAR_PX = 6.5  # at the 11 px monospace font below
MIN_PX = 0.2  # narrower boxes are left out (their samples still count in their callers)


@dataclass(slots=True)
class _Frame:
    samples: int = 0
    children: dict[str, _Frame] = field(default_factory=dict)


def _tree(collapsed: str) -> _Frame:
    root = _Frame()
    for line in collapsed.splitlines():
        stack, _, number = line.rpartition(" ")
        if not stack or not number.isdigit():
            continue
        samples = int(number)
        root.samples += samples
        node = root
        for name in stack.split(";"):
            node = node.children.setdefault(name, _Frame())
            node.samples += samples
    return root


def _depth(root: _Frame) -> int:
    deepest, stack = 0, [(root, 1)]  # no recursion: a stack may be deeper than Python's
    while stack:
        frame, depth = stack.pop()
        deepest = max(deepest, depth)
        stack.extend((child, depth + 1) for child in frame.children.values())
    return deepest


def _colour(name: str) -> str:
    # warm, stable per function: the same frame has the same colour in every graph
    h = zlib.crc32(name.encode())
    return f"rgb({205 + h % 50},{80 + (h >> 8) % 140},{(h >> 16) % 60})"


def _label(name: str, width: float) -> str:
    fits = int((width - 6) / CHAR_PX)
    if fits < 3:
        return ""
    return name if len(name) <= fits else name[: fits - 2] + ".."


def render(collapsed: str, title: str) -> str:
    """The SVG document of the flame graph of ``collapsed``."""
    root = _tree(collapsed)
    levels = _depth(root) - 1
    height = TOP_MARGIN + max(levels, 1) * ROW + 4
    parts = [
        '<?xml version="1.0" standalone="no"?>',
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH:.0f}" height="{height}" '
        f'viewBox="0 0 {WIDTH:.0f} {height}" font-family="monospace" font-size="11">',
        '<rect width="100%" height="100%" fill="#fdfdf5"/>',
        f'<text x="{WIDTH / 2:.0f}" y="20" text-anchor="middle" font-size="14">'
        f"{escape(title)} ({root.samples:,} samples)</text>",
    ]
    total = max(root.samples, 1)

    # (frame, name, x, depth), drawn parent first; iterative, as _depth
    todo: list[tuple[_Frame, str, float, int]] = []
    x = 0.0
    for name in sorted(root.children):
        todo.append((root.children[name], name, x, 0))
        x += root.children[name].samples / total * WIDTH
    while todo:
        frame, name, x, depth = todo.pop()
        width = frame.samples / total * WIDTH
        if width < MIN_PX:
            continue
        y = height - 4 - (depth + 1) * ROW
        share = 100 * frame.samples / total
        tip = escape(f"{name} ({frame.samples:,} samples, {share:.1f}%)")
        parts.append(
            f'<g><title>{tip}</title><rect x="{x:.2f}" y="{y}" width="{width:.2f}" '
            f'height="{ROW - 1}" fill="{_colour(name)}" rx="2"/>'
            f'<text x="{x + 3:.2f}" y="{y + 11}">{escape(_label(name, width))}</text></g>'
        )
        child_x = x
        for child_name in sorted(frame.children):
            child = frame.children[child_name]
            todo.append((child, child_name, child_x, depth + 1))
            child_x += child.samples / total * WIDTH
    parts.append("</svg>")
    return "\n".join(parts) + "\n"
