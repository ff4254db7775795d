"""Twin key resolvers: `async (twin_id) -> ed25519 public key | None`.

The bus asks a resolver for the key of every twin it hears from or seals to. Normally
it asks the registry (`RegistryClient.key_resolver()`), through `CachedResolver` so a
busy twin costs one registry query per `ttl`. Keys of unknown twins are cached for a
short `negative_ttl` only, so a twin that registers a moment later is found. The
registry client makes the cache forget a twin when the registry announces (signed) that
its key changed, and forget everything after a reconnect (an announcement may have been
missed); `ttl` is only the backstop.
"""

from __future__ import annotations

import time
from collections import OrderedDict
from collections.abc import Awaitable, Callable, Mapping

KeyResolver = Callable[[int], Awaitable[bytes | None]]


class StaticResolver:
    """A fixed table of twin keys (for tools and a grid whose twins are known up front)."""

    def __init__(self, keys: Mapping[int, bytes] | None = None) -> None:
        self.keys: dict[int, bytes] = dict(keys or {})

    async def __call__(self, twin_id: int) -> bytes | None:
        return self.keys.get(twin_id)


class CachedResolver:
    def __init__(
        self,
        fetch: KeyResolver,
        ttl: float = 300.0,
        negative_ttl: float = 2.0,
        max_entries: int = 10_000,
    ) -> None:
        self._fetch = fetch
        self.ttl = ttl
        self.negative_ttl = negative_ttl
        self.max_entries = max_entries
        self._cache: OrderedDict[int, tuple[float, bytes | None]] = OrderedDict()

    def put(self, twin_id: int, key: bytes) -> None:
        self._store(twin_id, key, self.ttl)

    def forget(self, twin_id: int) -> None:
        self._cache.pop(twin_id, None)

    def clear(self) -> None:
        self._cache.clear()

    def _store(self, twin_id: int, key: bytes | None, ttl: float) -> None:
        self._cache[twin_id] = (time.monotonic() + ttl, key)
        self._cache.move_to_end(twin_id)
        while len(self._cache) > self.max_entries:
            self._cache.popitem(last=False)

    async def __call__(self, twin_id: int) -> bytes | None:
        hit = self._cache.get(twin_id)
        if hit is not None and hit[0] > time.monotonic():
            return hit[1]
        key = await self._fetch(twin_id)
        self._store(twin_id, key, self.ttl if key is not None else self.negative_ttl)
        return key
