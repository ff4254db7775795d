"""Run an external program and turn a failure into one readable error."""

from __future__ import annotations

import asyncio
import os
import shutil


class CommandError(Exception):
    """An external program failed; the message names it and carries its stderr."""

    def __init__(self, argv: list[str], code: int, stderr: str) -> None:
        self.argv = argv
        self.code = code
        self.stderr = stderr
        detail = " ".join(stderr.split())[:300] or f"exit status {code}"
        super().__init__(f"{os.path.basename(argv[0])}: {detail}")


async def run(*argv: str, check: bool = True, ok: tuple[int, ...] = (0,)) -> str:
    """Run `argv` (no shell), return its stdout; raise CommandError unless its status is in `ok`."""
    program = shutil.which(argv[0]) or argv[0]
    try:
        proc = await asyncio.create_subprocess_exec(
            program,
            *argv[1:],
            stdin=asyncio.subprocess.DEVNULL,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
            env={**os.environ, "LC_ALL": "C"},
        )
    except FileNotFoundError:
        raise CommandError(list(argv), 127, f"{argv[0]} is not installed") from None
    out, err = await proc.communicate()
    if check and proc.returncode not in ok:
        raise CommandError(list(argv), proc.returncode or 1, err.decode(errors="replace"))
    return out.decode(errors="replace")
