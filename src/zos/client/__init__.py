"""The Python SDK: `GridClient` (nodes, deploy, ps, logs, rm, push_image) and manifests."""

from zos.client.config import ConfigError, find_grid, find_identity
from zos.client.manifest import Manifest, ManifestError, load_manifest, parse_manifest
from zos.client.sdk import DeploymentInfo, GridClient, GridClientError, MachineInfo, WorkloadInfo

__all__ = [
    "ConfigError",
    "DeploymentInfo",
    "GridClient",
    "GridClientError",
    "MachineInfo",
    "Manifest",
    "ManifestError",
    "WorkloadInfo",
    "find_grid",
    "find_identity",
    "load_manifest",
    "parse_manifest",
]
