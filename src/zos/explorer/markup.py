"""Small helpers for writing HTML by hand: every value is escaped on the way in.

`Markup` is text already safe to put in a page; anything else given to `esc` or to the
helpers here is escaped. Registry values such as a node's city, a farm's name or a
machine's logs are hostile input.
"""

from __future__ import annotations

import html
import time
from collections.abc import Iterable, Mapping
from urllib.parse import urlencode

VOID = frozenset({"br", "hr", "img", "input", "link", "meta"})


class Markup(str):
    """HTML that is safe as it is (built by these helpers)."""


def esc(value: object) -> Markup:
    if isinstance(value, Markup):
        return value
    return Markup(html.escape(str(value), quote=True))


def join(parts: Iterable[object]) -> Markup:
    return Markup("".join(esc(p) for p in parts))


def tag(name: str, content: object = "", /, **attrs: object) -> Markup:
    """<name attrs>content</name>; attribute names take `_` for `-` and a trailing `_`
    for reserved words (class_); None and False leave an attribute out."""
    rendered = []
    for key, value in attrs.items():
        if value is None or value is False:
            continue
        key = key.rstrip("_").replace("_", "-")
        rendered.append(f" {key}" if value is True else f' {key}="{esc(value)}"')
    if name in VOID:
        return Markup(f"<{name}{''.join(rendered)}>")
    return Markup(f"<{name}{''.join(rendered)}>{esc(content)}</{name}>")


def link(href: str, content: object, /, **attrs: object) -> Markup:
    return tag("a", content, href=href, **attrs)


def url(path: str, params: Mapping[str, object] | None = None) -> str:
    """`path?params`, leaving out empty values."""
    kept = {k: v for k, v in (params or {}).items() if v not in (None, "")}
    return f"{path}?{urlencode(kept)}" if kept else path


def table(head: list[object], rows: Iterable[Iterable[object]], **attrs: object) -> Markup:
    thead = tag("thead", tag("tr", join(tag("th", h, scope="col") for h in head)))
    body = join(tag("tr", join(tag("td", c) for c in row)) for row in rows)
    return tag("table", join([thead, tag("tbody", body)]), **attrs)


def when(ts: float) -> Markup:
    """A UTC time that the page's script keeps saying "N s ago" about."""
    iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(ts))
    return tag("time", iso.replace("T", " "), datetime=iso, data_ts=f"{ts:.3f}")


def duration(seconds: float) -> str:
    seconds = max(0, int(seconds))
    if seconds < 120:
        return f"{seconds} s"
    if seconds < 7200:
        return f"{seconds // 60} min"
    if seconds < 172800:
        return f"{seconds // 3600} h {seconds % 3600 // 60} min"
    return f"{seconds // 86400} d {seconds % 86400 // 3600} h"
