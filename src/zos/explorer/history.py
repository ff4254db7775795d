"""What the explorer has seen over the last hour, sampled from the registry's answers.

The registry keeps only each node's last heartbeat (and derives up/down from its age),
so the explorer keeps the history itself: at every poll, how many nodes were up, and for
each node when its status changed. It knows nothing from before it started: a node up
at the first poll is "up for at least" that long.
"""

from __future__ import annotations

from collections import deque
from dataclasses import dataclass

from zos.explorer.snapshot import Snapshot

HOUR = 3600.0


@dataclass(frozen=True)
class Sample:
    at: float
    up: int
    total: int


@dataclass(frozen=True)
class Segment:
    start: float
    end: float
    status: str


@dataclass(frozen=True)
class UpSince:
    since: float
    at_least: bool  # the node was already up when the explorer first saw it


class History:
    def __init__(self, window: float = HOUR) -> None:
        self.window = window
        self.samples: deque[Sample] = deque()
        self.started: float | None = None
        self._changes: dict[int, deque[tuple[float, str]]] = {}  # (since, status), oldest first
        self._first_seen: dict[int, float] = {}

    def record(self, snap: Snapshot) -> None:
        now = snap.taken_at
        if self.started is None:
            self.started = now
        up = sum(1 for n in snap.nodes.values() if n.status == "up")
        self.samples.append(Sample(now, up, len(snap.nodes)))
        horizon = now - self.window
        while self.samples and self.samples[0].at < horizon:
            self.samples.popleft()
        for node in snap.nodes.values():
            changes = self._changes.get(node.id)
            if changes is None:
                self._changes[node.id] = deque([(now, node.status)])
                self._first_seen[node.id] = now
                continue
            if changes[-1][1] != node.status:
                changes.append((now, node.status))
            # Keep the change in force at the window's start, drop the ones before it.
            while len(changes) > 1 and changes[1][0] <= horizon:
                changes.popleft()
        for gone in self._changes.keys() - snap.nodes.keys():
            del self._changes[gone]
            del self._first_seen[gone]

    def up_since(self, node_id: int) -> UpSince | None:
        """Since when the node is up, as far as the explorer saw; None if it is not up."""
        changes = self._changes.get(node_id)
        if not changes or changes[-1][1] != "up":
            return None
        since = changes[-1][0]
        return UpSince(since, at_least=since == self._first_seen[node_id])

    def timeline(self, node_id: int, now: float) -> list[Segment]:
        """The node's status over the window, from when the explorer first saw it."""
        changes = list(self._changes.get(node_id, ()))
        horizon = now - self.window
        segments = []
        for i, (since, status) in enumerate(changes):
            end = changes[i + 1][0] if i + 1 < len(changes) else now
            if end > horizon:
                segments.append(Segment(max(since, horizon), end, status))
        return segments
