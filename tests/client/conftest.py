"""A local grid (two nodes) shared by the SDK tests of a module, removed afterwards."""

from __future__ import annotations

import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "grid"))

from gridhelpers import emergency_sweep, quiet

from zos.grid.local import down, up
from zos.grid.state import GridState


@pytest.fixture(scope="module")
def local_grid(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GridState]:
    state_dir = tmp_path_factory.mktemp("grid") / "state"
    try:
        state, started = up(state_dir, nodes=2, say=quiet)
        assert started
        yield state
    finally:
        try:
            down(state_dir, say=quiet)
        finally:
            emergency_sweep(state_dir)
