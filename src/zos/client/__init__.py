"""The Python SDK: `GridClient` (nodes, deploy, ps, logs, rm, push_image) and manifests.

`sdk` is the facade; beside it one module per job: `config` (where the grid and your key
are), `manifest` (the YAML, checked), `placement` (which node), `building` (manifest ->
deployment), `deploying` (send, wait, take down), `views` (what `ps` shows), `errors`.

Names are imported on first use, so that `zos.client.config` (what the registry
commands of the CLI need) loads without the SDK and its manifest models.
"""

from __future__ import annotations

import importlib
from typing import Any

_WHERE = {
    "ConfigError": "config",
    "find_grid": "config",
    "find_identity": "config",
    "Manifest": "manifest",
    "ManifestError": "manifest",
    "load_manifest": "manifest",
    "parse_manifest": "manifest",
    "DeploymentInfo": "views",
    "GatewayInfo": "views",
    "GridClient": "sdk",
    "GridClientError": "errors",
    "MachineInfo": "views",
    "WorkloadInfo": "views",
}

__all__ = sorted(_WHERE)


def __getattr__(name: str) -> Any:
    if name not in _WHERE:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    return getattr(importlib.import_module(f"{__name__}.{_WHERE[name]}"), name)
