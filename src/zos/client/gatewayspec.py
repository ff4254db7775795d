"""A manifest's `gateways:`: a machine's port published to the web through a gateway.

    gateways:
      - name: hello            # served as https://hello.<the gateway node's domain>
        machine: web
        port: 8080
        tls_passthrough: false # true: TLS goes unopened to the machine, which terminates it
      - fqdn: www.example.com  # or a domain of your own (its DNS points at the gateway)
        machine: web
        port: 8080
        node: 1                # the gateway node (default: the machine's, if it serves gateways)

Only the model and the checks that read the manifest alone; what deploys it is
`zos.client.gateways`.
"""

from __future__ import annotations

import re
from collections.abc import Sequence

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from zos.registry.models import CONTRACT_NAME

# As the gateway workloads have it (gridtypes), a label at most 63 long.
_FQDN_LABEL = re.compile(r"^[a-zA-Z0-9_]([a-zA-Z0-9-_]{0,61}[a-zA-Z0-9_])?$")


class GatewaySpec(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=False)

    name: str | None = None
    fqdn: str | None = None
    machine: str
    port: int = Field(ge=1, le=65535)
    tls_passthrough: bool = False
    node: int | None = Field(default=None, ge=1)

    @field_validator("name")
    @classmethod
    def _name(cls, name: str | None) -> str | None:
        if name is not None and not re.match(CONTRACT_NAME, name):
            raise ValueError(
                f"{name!r}: a name is lowercase letters, digits, - and _ (at most 63, "
                "starting with a letter or digit)"
            )
        return name

    @field_validator("fqdn")
    @classmethod
    def _fqdn(cls, fqdn: str | None) -> str | None:
        if fqdn is None:
            return None
        labels = fqdn.split(".")
        if len(fqdn) > 253 or len(labels) < 2 or not all(_FQDN_LABEL.match(x) for x in labels):
            raise ValueError(f"{fqdn!r} is not a domain name (e.g. www.example.com)")
        return fqdn.lower()

    @model_validator(mode="after")
    def _one_host(self) -> GatewaySpec:
        if (self.name is None) == (self.fqdn is None):
            raise ValueError("needs exactly one of `name` (served under the gateway's domain) "
                             "or `fqdn` (a domain of your own)")  # fmt: skip
        return self

    @property
    def workload_name(self) -> str:
        """The gateway's workload in the deployment (`ps` shows it)."""
        return f"gw_{re.sub(r'[^A-Za-z0-9_]', '_', self.name or self.fqdn or '')}"[:36]


def check_gateways(
    gateways: Sequence[GatewaySpec], machines: Sequence[str], taken: set[str]
) -> None:
    """Each gateway names a machine of the manifest; no name or fqdn twice; its workload
    name clashes with nothing in `taken`. ValueError naming the field."""
    hosts: set[str] = set()
    for i, g in enumerate(gateways):
        if g.machine not in machines:
            raise ValueError(
                f"gateways[{i}].machine: no machine named '{g.machine}' "
                f"(machines: {', '.join(machines)})"
            )
        host = g.name or g.fqdn or ""
        field = "name" if g.name else "fqdn"
        if host in hosts:
            raise ValueError(f"gateways[{i}].{field}: '{host}' is published twice")
        hosts.add(host)
        if g.workload_name in taken:
            raise ValueError(
                f"gateways[{i}].{field}: its workload name '{g.workload_name}' is taken "
                "by another machine, disk, network or gateway of the manifest"
            )
        taken.add(g.workload_name)
