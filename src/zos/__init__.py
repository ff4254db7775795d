"""Zero-OS: the node operating system of a decentralized cloud, and the grid around it."""

from __future__ import annotations

import importlib.abc
import importlib.machinery
import sys
from collections.abc import Sequence
from types import ModuleType

__version__ = "0.1.0"


class _NatsWithoutWebsockets(importlib.abc.MetaPathFinder, importlib.abc.Loader):
    """nats-py imports aiohttp as it loads, for a websocket transport zos never uses: ~10
    MiB resident and 0.15 s in every process on the bus, the node agent's included. Its
    transport module is run with aiohttp hidden (it then leaves websockets out); a process
    that uses aiohttp itself (the explorer, the hub client) imports it as usual."""

    def __init__(self) -> None:
        self._loader: importlib.abc.Loader | None = None

    def find_spec(
        self, name: str, path: Sequence[str] | None, target: ModuleType | None = None
    ) -> importlib.machinery.ModuleSpec | None:
        if name != "nats.aio.transport" or self._loader is not None:
            return None
        spec = importlib.machinery.PathFinder.find_spec(name, path)
        if spec is None or spec.loader is None or "aiohttp" in sys.modules:
            return spec
        self._loader, spec.loader = spec.loader, self
        return spec

    def create_module(self, spec: importlib.machinery.ModuleSpec) -> ModuleType | None:
        assert self._loader is not None
        return self._loader.create_module(spec)

    def exec_module(self, module: ModuleType) -> None:
        assert self._loader is not None
        sys.modules["aiohttp"] = None  # type: ignore[assignment]  # import raises ImportError
        try:
            self._loader.exec_module(module)
        finally:
            del sys.modules["aiohttp"]


sys.meta_path.insert(0, _NatsWithoutWebsockets())
