"""What the benchmark scripts share to turn samples into figures (imported from beside
them, like `zmachine`'s helpers are by `vm.py`)."""

from __future__ import annotations


def pct(samples: list[float], q: float) -> float:
    """The `q` quantile (0 to 1) of `samples` by nearest rank: the value at index q·n of
    the sorted samples (the largest one for q near 1)."""
    ordered = sorted(samples)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]
