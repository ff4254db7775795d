"""`gateway-name-proxy` and `gateway-fqdn-proxy`: web gateways to backends."""

from __future__ import annotations

import ipaddress
import re
from typing import Annotated, ClassVar
from urllib.parse import urlsplit

from pydantic import Field

from zos.gridtypes.base import ValidationContext, WorkloadData, go_bool
from zos.gridtypes.gojson import OmitEmpty

_GW_NAME = re.compile(r"^[a-zA-Z0-9-_]+$")
_FQDN_LABEL = re.compile(r"^[a-zA-Z0-9_]([a-zA-Z0-9-_]{0,61}[a-zA-Z0-9_])?$")


def _check_backend(backend: str, tls_passthrough: bool) -> str | None:
    """Why a backend is invalid, or None. ip:port with TLS passthrough, else http://ip[:port]."""
    if tls_passthrough:
        host, sep, port = backend.rpartition(":")
        if not sep:
            return "must be ip:port when tls_passthrough is set"
        host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
        try:
            ipaddress.ip_address(host)
        except ValueError:
            return f"must be ip:port when tls_passthrough is set (invalid ip {host!r})"
        if not port.isascii() or not port.isdigit() or int(port) > 65535:
            return f"must be ip:port when tls_passthrough is set (invalid port {port!r})"
        return None
    try:
        url = urlsplit(backend)
        hostname = url.hostname or ""
        url.port  # noqa: B018 - raises ValueError on a bad port
    except ValueError as e:
        return f"invalid url: {e}"
    if url.scheme != "http":
        return "scheme must be http (or set tls_passthrough and use ip:port)"
    try:
        ip = ipaddress.ip_address(hostname)
    except ValueError:
        return f"host must be an IP address, not {hostname!r}"
    if ip.is_loopback:
        return "a loopback address is not allowed"
    return None


class _GatewayMixin:
    """Backends, tls_passthrough and the optional network both gateways share (methods only)."""

    def _base_challenge(self) -> str:
        out = [go_bool(self.tls_passthrough), *self.backends]  # type: ignore[attr-defined]
        if self.network is not None:  # type: ignore[attr-defined]
            out.append(self.network)  # type: ignore[attr-defined]
        return "".join(out)

    def _check_base(self, ctx: ValidationContext) -> None:
        backends: list[str] = self.backends  # type: ignore[attr-defined]
        if not backends:
            raise ctx.fail("backends", "must not be empty")
        for i, backend in enumerate(backends):
            why = _check_backend(backend, self.tls_passthrough)  # type: ignore[attr-defined]
            if why:
                raise ctx.fail(f"backends[{i}]", f"{backend!r}: {why}")


class GatewayNameProxy(_GatewayMixin, WorkloadData):
    type: ClassVar[str] = "gateway-name-proxy"

    name: str = ""
    tls_passthrough: bool = False
    backends: list[str] = Field(default_factory=list)
    network: Annotated[str | None, OmitEmpty()] = None

    def challenge(self) -> str:
        return self.name + self._base_challenge()

    def validate(self, ctx: ValidationContext) -> None:  # type: ignore[override]
        if not _GW_NAME.match(self.name):
            raise ctx.fail("name", f"invalid gateway name {self.name!r} (letters, digits, - and _)")
        self._check_base(ctx)


class GatewayFQDNProxy(_GatewayMixin, WorkloadData):
    type: ClassVar[str] = "gateway-fqdn-proxy"

    fqdn: str = ""
    tls_passthrough: bool = False
    backends: list[str] = Field(default_factory=list)
    network: Annotated[str | None, OmitEmpty()] = None

    def challenge(self) -> str:
        return self.fqdn + self._base_challenge()

    def validate(self, ctx: ValidationContext) -> None:  # type: ignore[override]
        fqdn = self.fqdn
        labels = fqdn.split(".")
        if (
            len(fqdn) > 253
            or len(labels) < 2
            or fqdn.endswith(".")
            or not all(_FQDN_LABEL.match(label) for label in labels)
        ):
            raise ctx.fail("fqdn", f"invalid domain name {fqdn!r}")
        self._check_base(ctx)
