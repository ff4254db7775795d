"""DNS names, and the TXT values of ACME DNS-01 challenges kept on disk; the ACME hook.

Traefik's DNS-01 `exec` provider runs the hook for every challenge (`present FQDN VALUE`,
then `cleanup FQDN VALUE`): it writes or removes one file, which the node's DNS server
(`zos.primitives.dns`) reads on every query. The hook imports nothing but the standard
library, so it starts fast.
"""

from __future__ import annotations

import argparse
import contextlib
import re
import sys
from pathlib import Path

_LABEL = re.compile(r"^[a-z0-9_]([a-z0-9_-]{0,61}[a-z0-9_])?$")
# ACME's DNS-01 value: base64url of a SHA-256 digest (43 characters); kept a little loose.
_TXT_VALUE = re.compile(r"^[A-Za-z0-9_-]{1,255}$")


class DnsError(ValueError):
    """A name, value or setting that is not acceptable; the message names it."""


def check_name(name: str, what: str = "name", wildcard: bool = False) -> str:
    """A host name, lower case, without the final dot; DnsError naming `what` otherwise."""
    text = name.lower().removesuffix(".")
    labels = text.split(".")
    if wildcard and labels[0] == "*":
        labels = labels[1:]
    if len(text) > 253 or len(labels) < 1 or not all(_LABEL.match(label) for label in labels):
        raise DnsError(f"{what} {name!r} is not a valid DNS name")
    return text


def within(name: str, zone: str) -> bool:
    return name == zone or name.endswith("." + zone)


# --- challenge records ------------------------------------------------------------------------


class ChallengeRecords:
    """TXT values by name, one file per value: `<root>/<name>/<value>` (a name may hold
    several values at once: `*.d` and `d` are both validated at `_acme-challenge.d`)."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def _dir(self, name: str) -> Path:
        return self.root / check_name(name)

    @staticmethod
    def _value(value: str) -> str:
        if not _TXT_VALUE.match(value):
            raise DnsError(f"TXT value {value!r} is not a base64url ACME token")
        return value

    def present(self, name: str, value: str) -> None:
        d, value = self._dir(name), self._value(value)
        d.mkdir(parents=True, exist_ok=True)
        (d / value).touch()

    def cleanup(self, name: str, value: str) -> None:
        d = self._dir(name)
        (d / self._value(value)).unlink(missing_ok=True)
        with contextlib.suppress(OSError):
            d.rmdir()  # only when it was the last value

    def values(self, name: str) -> list[str]:
        try:
            return sorted(p.name for p in self._dir(name).iterdir() if _TXT_VALUE.match(p.name))
        except (OSError, DnsError):
            return []

    def names(self) -> list[str]:
        if not self.root.is_dir():
            return []
        return sorted(p.name for p in self.root.iterdir() if p.is_dir() and any(p.iterdir()))


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(prog="python -m zos.primitives.dnsrecords")
    p.add_argument("--records", type=Path, required=True, help="the directory of TXT values")
    p.add_argument("action", choices=["present", "cleanup"])
    p.add_argument("fqdn")
    p.add_argument("value")
    args = p.parse_args(argv)
    try:
        getattr(ChallengeRecords(args.records), args.action)(args.fqdn, args.value)
    except (DnsError, OSError) as e:
        print(f"acme hook: {e}", file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main())
