"""Structured errors that travel back to a caller: a short `code` and a one-line `message`.

Codes the bus itself produces: bad_signature, unknown_twin, expired, replayed, too_large,
malformed, unsealed (a request that must be sealed was not), not_found (no such command),
unreachable (nobody serves that twin), timeout, busy, internal; and for the connection:
not_permitted (nats-server refused the subject to this key), refused (nats-server refused
the key), unavailable (no server answers). Handlers and the registry add their own
(forbidden, conflict, invalid...).
"""

from __future__ import annotations

import re
from typing import Any

from pydantic import ValidationError

_CODE = re.compile(r"^[a-z][a-z0-9_]{0,39}$")
MAX_MESSAGE = 1000


class BusError(Exception):
    """An error with a machine-readable `code` and a human `message`."""

    def __init__(self, code: str, message: str) -> None:
        if not _CODE.match(code):
            code = "internal"
        message = " ".join(str(message).split())[:MAX_MESSAGE]
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message

    def to_dict(self) -> dict[str, str]:
        return {"code": self.code, "message": self.message}

    @classmethod
    def from_dict(cls, data: Any) -> BusError:
        if not isinstance(data, dict):
            return cls("malformed", "error response without code and message")
        code = data.get("code")
        message = data.get("message")
        if not isinstance(code, str) or not isinstance(message, str):
            return cls("malformed", "error response without code and message")
        return cls(code, message)

    def __reduce__(self) -> tuple[Any, ...]:
        return (type(self), (self.code, self.message))


def describe_error(e: ValidationError, root: str = "value") -> str:
    """The first problem of a pydantic error, naming its field: "body.name: ..." (`root`
    when the whole value is wrong)."""
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"]) or root
    return f"{where}: {err['msg']}"
