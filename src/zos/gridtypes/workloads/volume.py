"""`volume`: a directory-backed volume mounted into a zmachine."""

from __future__ import annotations

from typing import ClassVar

from zos.gridtypes.workloads.zmount import SizedDisk


class Volume(SizedDisk):
    """Hashed, counted (sru) and validated exactly as a zmount; only its type differs."""

    type: ClassVar[str] = "volume"
