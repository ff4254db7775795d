"""The data model of every workload type, and the registry `WORKLOAD_TYPES`."""

from __future__ import annotations

from zos.gridtypes.base import WorkloadData
from zos.gridtypes.workloads.gateway import GatewayFQDNProxy, GatewayNameProxy
from zos.gridtypes.workloads.ip import PublicIP, PublicIPResult, PublicIPv4
from zos.gridtypes.workloads.network import Mycelium, Network, NetworkLight, Peer
from zos.gridtypes.workloads.qsfs import (
    Encryption,
    QuantumCompression,
    QuantumSafeConfig,
    QuantumSafeFS,
    QuantumSafeFSConfig,
    QuantumSafeMeta,
    ZdbBackend,
    ZdbGroup,
)
from zos.gridtypes.workloads.volume import Volume
from zos.gridtypes.workloads.zdb import ZDB, ZDBResult
from zos.gridtypes.workloads.zlogs import ZLogs
from zos.gridtypes.workloads.zmachine import (
    MachineCapacity,
    MachineInterface,
    MachineMount,
    MachineNetwork,
    MachineNetworkLight,
    MyceliumIP,
    ZMachine,
    ZMachineLight,
)
from zos.gridtypes.workloads.zmount import ZMount

WORKLOAD_TYPES: dict[str, type[WorkloadData]] = {
    cls.type: cls
    for cls in (
        ZMount,
        Volume,
        ZDB,
        PublicIP,
        PublicIPv4,
        Network,
        NetworkLight,
        ZMachine,
        ZMachineLight,
        GatewayNameProxy,
        GatewayFQDNProxy,
        ZLogs,
        QuantumSafeFS,
    )
}

__all__ = [
    "WORKLOAD_TYPES",
    "ZDB",
    "Encryption",
    "GatewayFQDNProxy",
    "GatewayNameProxy",
    "MachineCapacity",
    "MachineInterface",
    "MachineMount",
    "MachineNetwork",
    "MachineNetworkLight",
    "Mycelium",
    "MyceliumIP",
    "Network",
    "NetworkLight",
    "Peer",
    "PublicIP",
    "PublicIPResult",
    "PublicIPv4",
    "QuantumCompression",
    "QuantumSafeConfig",
    "QuantumSafeFS",
    "QuantumSafeFSConfig",
    "QuantumSafeMeta",
    "Volume",
    "ZDBResult",
    "ZLogs",
    "ZMachine",
    "ZMachineLight",
    "ZMount",
    "ZdbBackend",
    "ZdbGroup",
]
