"""The error a workload's builder raises: its message goes to the user as it is."""

from __future__ import annotations


class WorkloadError(Exception):
    """A workload could not be built; the message goes to the user in Result.message."""
