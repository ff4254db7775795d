"""`GridClientError`, the one error of the SDK, and how a node that does not answer reads."""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from zos.bus import BusError


class GridClientError(Exception):
    """What failed, where, why and what to do, in one message."""


@contextlib.contextmanager
def node_answers(node_id: int) -> Iterator[None]:
    """A node that does not answer becomes a GridClientError saying so; its refusals
    (other BusErrors) go on for the caller to word."""
    try:
        yield
    except BusError as e:
        if e.code in ("unreachable", "timeout"):
            raise GridClientError(
                f"node {node_id} does not answer ({e.message}); it may be down: "
                "`zos nodes` shows its status"
            ) from None
        raise
