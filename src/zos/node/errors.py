"""The errors the node's pieces raise for a user to read.

`WorkloadError`: a workload's builder failed; its message goes to the user as it is.
`Refused`: a request the node turns down; the node api answers it as a bus error.
"""

from __future__ import annotations


class WorkloadError(Exception):
    """A workload could not be built; the message goes to the user in Result.message."""


class Refused(Exception):
    """A refused request; `code` is a bus error code, the message names the field or rule."""

    def __init__(self, code: str, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message
