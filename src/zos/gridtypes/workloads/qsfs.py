"""`qsfs`: a quantum-safe file system over zdb backends."""

from __future__ import annotations

from typing import ClassVar

from pydantic import Field

from zos.gridtypes.base import GoModel, ValidationContext, WorkloadData
from zos.gridtypes.capacity import Capacity, GiB
from zos.gridtypes.gojson import HexBytes, Uint32, Uint64


class Encryption(GoModel):
    algorithm: str = ""
    key: HexBytes = ""

    def challenge(self) -> str:
        return self.algorithm + self.key


class ZdbBackend(GoModel):
    address: str = ""
    namespace: str = ""
    password: str = ""

    def challenge(self) -> str:
        return self.address + self.namespace + self.password


class QuantumSafeConfig(GoModel):
    prefix: str = ""
    encryption: Encryption = Field(default_factory=Encryption)
    backends: list[ZdbBackend] = Field(default_factory=list)

    def challenge(self) -> str:
        return (
            self.prefix
            + self.encryption.challenge()
            + "".join(b.challenge() for b in self.backends)
        )


class QuantumSafeMeta(GoModel):
    type: str = ""
    config: QuantumSafeConfig = Field(default_factory=QuantumSafeConfig)

    def challenge(self) -> str:
        return self.type + self.config.challenge()


class ZdbGroup(GoModel):
    backends: list[ZdbBackend] = Field(default_factory=list)

    def challenge(self) -> str:
        return "".join(b.challenge() for b in self.backends)


class QuantumCompression(GoModel):
    algorithm: str = ""


class QuantumSafeFSConfig(GoModel):
    minimal_shards: Uint32 = 0
    expected_shards: Uint32 = 0
    redundant_groups: Uint32 = 0
    redundant_nodes: Uint32 = 0
    max_zdb_data_dir_size: Uint32 = 0
    encryption: Encryption = Field(default_factory=Encryption)
    meta: QuantumSafeMeta = Field(default_factory=QuantumSafeMeta)
    groups: list[ZdbGroup] = Field(default_factory=list)
    compression: QuantumCompression = Field(default_factory=QuantumCompression)

    def challenge(self) -> str:
        return "".join(
            [
                str(self.minimal_shards),
                str(self.expected_shards),
                str(self.redundant_groups),
                str(self.redundant_nodes),
                str(self.max_zdb_data_dir_size),
                self.encryption.challenge(),
                self.meta.challenge(),
                *(g.challenge() for g in self.groups),
                self.compression.algorithm,
            ]
        )


class QuantumSafeFS(WorkloadData):
    type: ClassVar[str] = "qsfs"

    cache: Uint64 = 0
    config: QuantumSafeFSConfig = Field(default_factory=QuantumSafeFSConfig)

    def challenge(self) -> str:
        return str(self.cache) + self.config.challenge()

    def capacity(self) -> Capacity:
        return Capacity(cru=1, mru=1 * GiB, sru=self.cache)

    def validate(self, ctx: ValidationContext) -> None:  # type: ignore[override]
        if self.config.minimal_shards > self.config.expected_shards:
            raise ctx.fail(
                "config.minimal_shards", "must not be greater than config.expected_shards"
            )
