"""Charts as inline SVG, drawn on the server (colours come from the stylesheet's classes,
so a page needs no script and no inline style to show them)."""

from __future__ import annotations

from zos.explorer.history import Sample, Segment
from zos.explorer.markup import Markup, esc, join, tag
from zos.registry import Node

WIDTH = 600


def _svg(width: int, height: int, label: str, body: Markup, class_: str = "chart") -> Markup:
    return tag(
        "svg",
        join([tag("title", label), body]),
        xmlns="http://www.w3.org/2000/svg",
        viewBox=f"0 0 {width} {height}",
        width=width,
        height=height,
        role="img",
        aria_label=label,
        class_=class_,
    )


def _text(x: float, y: float, text: object, anchor: str = "start") -> Markup:
    return tag("text", text, x=f"{x:.1f}", y=f"{y:.1f}", text_anchor=anchor)


def _axis(left: int, right: int, base: int, window: float) -> Markup:
    minutes = int(window // 60)
    return join(
        [
            tag("line", x1=left, y1=base, x2=right, y2=base, class_="axis"),
            _text(left, base + 14, f"-{minutes} min"),
            _text((left + right) / 2, base + 14, f"-{minutes // 2} min", "middle"),
            _text(right, base + 14, "now", "end"),
        ]
    )


def up_chart(samples: list[Sample], now: float, window: float, every: float) -> Markup:
    """Nodes up (filled) and registered (line) at each poll over the window."""
    left, right, top, base, height = 40, WIDTH - 10, 10, 110, 130
    label = "nodes up over the last hour, sampled from the registry's answers"
    if len(samples) < 2:
        body = join(
            [
                _axis(left, right, base, window),
                _text(left + 10, 60, f"sampling the registry every {every:g} s: no history yet"),
            ]
        )
        return _svg(WIDTH, height, label, body)
    peak = max(max(s.total for s in samples), 1)

    def x(t: float) -> float:
        return right - (now - t) / window * (right - left)

    def y(v: int) -> float:
        return base - v / peak * (base - top)

    up = " ".join(f"{x(s.at):.1f},{y(s.up):.1f}" for s in samples)
    total = " ".join(f"{x(s.at):.1f},{y(s.total):.1f}" for s in samples)
    first, last = samples[0], samples[-1]
    area = f"{x(first.at):.1f},{base} {up} {x(last.at):.1f},{base}"
    body = join(
        [
            tag("polygon", points=area, class_="up-area"),
            tag("polyline", points=up, class_="up-line"),
            tag("polyline", points=total, class_="total-line"),
            _axis(left, right, base, window),
            _text(left - 4, top + 8, peak, "end"),
            _text(left - 4, base, 0, "end"),
            _text(right, top + 8, f"{last.up} of {last.total} up", "end"),
        ]
    )
    return _svg(WIDTH, height, label, body)


def _bar(x: float, y: float, width: float, height: float, used: int, total: int) -> Markup:
    share = min(1.0, used / total) if total else 0.0
    level = "high" if share >= 0.9 else "mid" if share >= 0.6 else "low"
    return join(
        [
            tag("rect", x=f"{x:.1f}", y=y, width=f"{width:.1f}", height=height, class_="bar-bg"),
            tag(
                "rect",
                tag("title", f"{share:.0%} used"),
                x=f"{x:.1f}",
                y=y,
                width=f"{width * share:.1f}",
                height=height,
                class_=f"bar {level}",
            ),
        ]
    )


def capacity_chart(nodes: list[Node], limit: int = 30) -> Markup:
    """Memory, disk and cores used on each node, the most used first (at most `limit`)."""
    shown = sorted(
        nodes,
        key=lambda n: (-(n.used.mru / n.capacity.mru if n.capacity.mru else 0), n.id),
    )[:limit]
    row, top = 18, 20
    height = top + row * max(1, len(shown)) + 4
    cols = [("memory", 70), ("disk", 250), ("cores", 430)]
    parts = [_text(x, 12, name) for name, x in cols]
    if not shown:
        parts.append(_text(10, top + 12, "no nodes"))
    for i, n in enumerate(shown):
        y = top + i * row
        parts.append(_text(0, y + 11, f"node {n.id}"))
        for (_, x), used, total in zip(
            cols,
            (n.used.mru, n.used.sru, n.used.cru),
            (n.capacity.mru, n.capacity.sru, n.capacity.cru),
            strict=True,
        ):
            parts.append(_bar(x, y + 2, 160, row - 6, used, total))
    label = f"capacity used per node ({len(shown)} most used of {len(nodes)})"
    return _svg(WIDTH, height, label, join(parts))


def timeline_chart(segments: list[Segment], now: float, window: float) -> Markup:
    """A node's status over the window: up green, down red, unknown (before the explorer
    started) left blank."""
    left, right, height = 10, WIDTH - 10, 44
    parts = []
    for seg in segments:
        x0 = right - (now - seg.start) / window * (right - left)
        x1 = right - (now - seg.end) / window * (right - left)
        parts.append(
            tag(
                "rect",
                tag("title", seg.status),
                x=f"{x0:.1f}",
                y=4,
                width=f"{max(1.0, x1 - x0):.1f}",
                height=20,
                class_=f"seg {esc(seg.status)}",
            )
        )
    parts.append(_axis(left, right, 26, window))
    return _svg(WIDTH, height, "status over the last hour, as the explorer saw it", join(parts))


def meter(used: int, total: int, width: int = 80) -> Markup:
    """A small bar for a table cell."""
    body = _bar(0, 2, width, 8, used, total)
    share = f"{used / total:.0%}" if total else "0%"
    return _svg(width, 12, f"{share} used", body, class_="meter")
