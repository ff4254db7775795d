"""The `zos` command.

Each module in this package that defines `register(subparsers)` adds its own
subcommands; a subcommand's handler returns an exit code. Any error becomes one line
on stderr and a non-zero exit, never a traceback (set ZOS_DEBUG=1 to see one).

A command named like its module (`zos zdb ...` in `zdb.py`) imports that module
alone: a long-running server such as `zos zdb serve` does not carry the bus, the
registry and the workload types of every other command in its memory.
"""

from __future__ import annotations

import argparse
import importlib
import os
import pkgutil
import sys
from collections.abc import Sequence


class CliError(Exception):
    """An error to show the user as one line; `code` is the exit status."""

    def __init__(self, message: str, code: int = 1) -> None:
        super().__init__(message)
        self.code = code


def build_parser(command: str | None = None) -> argparse.ArgumentParser:
    """The parser of every command, or only of `command` when a module has its name."""
    parser = argparse.ArgumentParser(prog="zos", description="Zero-OS node and grid")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    sub.required = True
    names = sorted(m.name for m in pkgutil.iter_modules(__path__) if not m.name.startswith("_"))
    if command in names:
        names = [command]
    for name in names:
        module = importlib.import_module(f"{__name__}.{name}")
        register = getattr(module, "register", None)
        if register is not None:
            register(sub)
    return parser


def _one_line(text: str, limit: int = 500) -> str:
    flat = " ".join(str(text).split())
    return flat if len(flat) <= limit else flat[: limit - 3] + "..."


def main(argv: Sequence[str] | None = None) -> int:
    argv = sys.argv[1:] if argv is None else list(argv)
    parser = build_parser(argv[0] if argv else None)
    args = parser.parse_args(argv)
    try:
        code = args.handler(args)
    except CliError as e:
        print(f"error: {_one_line(str(e))}", file=sys.stderr)
        return e.code
    except KeyboardInterrupt:
        return 130
    except BrokenPipeError:
        return 1
    except Exception as e:
        if os.environ.get("ZOS_DEBUG"):
            raise
        print(f"error: {_one_line(str(e) or type(e).__name__)}", file=sys.stderr)
        return 1
    return int(code or 0)


if __name__ == "__main__":
    sys.exit(main())
