"""The one exception gridtypes raises."""

from __future__ import annotations


class GridTypeError(ValueError):
    """A deployment or workload that cannot be read, hashed, signed or accepted.

    The message names where the problem is (the workload, the field path) and the
    rule that was broken, on one line. `workload` and `field` repeat those parts for
    programs that want them separately.
    """

    def __init__(self, message: str, *, workload: str | None = None, field: str | None = None):
        super().__init__(message)
        self.workload = workload
        self.field = field
