"""A minimal QMP client: one connection per command, over QEMU's unix socket.

QEMU serves one QMP client at a time; a short connection per command never keeps
another (a later agent) out. Events that arrive while waiting for a reply are skipped.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from pathlib import Path
from typing import Any


class QmpError(Exception):
    """QEMU refused the command, or did not answer."""


async def _message(reader: asyncio.StreamReader) -> dict[str, Any]:
    line = await reader.readline()
    if not line:
        raise QmpError("QEMU closed the QMP connection")
    try:
        msg = json.loads(line)
    except ValueError as exc:
        raise QmpError(f"QEMU sent something that is not JSON: {line[:100]!r}") from exc
    if not isinstance(msg, dict):
        raise QmpError("QEMU sent a QMP message that is not an object")
    return msg


async def _reply(reader: asyncio.StreamReader) -> Any:
    while True:
        msg = await _message(reader)
        if "event" in msg:
            continue
        if "error" in msg:
            err = msg["error"]
            raise QmpError(f"{err.get('class', 'Error')}: {err.get('desc', '')}")
        if "return" in msg:
            return msg["return"]


async def execute(
    socket: Path, command: str, arguments: dict[str, Any] | None = None, timeout: float = 10.0
) -> Any:
    """Run one QMP command and return its `return` value."""
    try:
        async with asyncio.timeout(timeout):
            reader, writer = await asyncio.open_unix_connection(str(socket))
            try:
                greeting = await _message(reader)
                if "QMP" not in greeting:
                    raise QmpError("no QMP greeting")
                writer.write(b'{"execute": "qmp_capabilities"}\n')
                await _reply(reader)
                request: dict[str, Any] = {"execute": command}
                if arguments:
                    request["arguments"] = arguments
                writer.write(json.dumps(request).encode() + b"\n")
                await writer.drain()
                return await _reply(reader)
            finally:
                writer.close()
                with contextlib.suppress(Exception):
                    await writer.wait_closed()
    except TimeoutError:
        raise QmpError(f"no QMP answer to {command} within {timeout:.0f}s") from None
    except OSError as exc:
        raise QmpError(f"cannot reach QMP at {socket}: {exc.strerror or exc}") from None
