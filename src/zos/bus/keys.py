"""A twin's own keys, prepared once, and the box key it shares with each peer twin.

The signing key is the identity's, built once (`Identity`). A shared box key (an X25519
exchange, `zos.identity.shared_key`) costs many times what boxing a message with it
costs, so the bus keeps one `Keys` per client, and in it one shared key per peer twin:
at most `max_peers`, the least recently used dropped first.

An entry remembers the ed25519 key it was derived from, and every lookup passes the key
the resolver gives now: when a twin's key changes (issue 11's rotation), its old entry
is dropped and a new one derived, so nothing sealed with the old key opens any more.
"""

from __future__ import annotations

from collections import OrderedDict

from zos.identity import Identity, box_open, box_seal, shared_key


class Keys:
    def __init__(self, identity: Identity, max_peers: int = 4096) -> None:
        self.identity = identity
        self.public_key = identity.public_key
        self.max_peers = max_peers
        self._x25519 = identity.x25519_private
        self._peers: OrderedDict[int, tuple[bytes, bytes]] = OrderedDict()

    def sign(self, message: bytes) -> bytes:
        return self.identity.sign(message)

    def shared_key(self, twin_id: int, public_key: bytes) -> bytes:
        """The box key shared with `twin_id`, whose ed25519 key is `public_key` (SealError
        if that key cannot seal)."""
        entry = self._peers.get(twin_id)
        if entry is not None and entry[0] == public_key:
            self._peers.move_to_end(twin_id)
            return entry[1]
        self._peers.pop(twin_id, None)  # the twin's key changed: forget the old box key
        key = shared_key(self._x25519, public_key)
        self._peers[twin_id] = (public_key, key)
        while len(self._peers) > self.max_peers:
            self._peers.popitem(last=False)
        return key

    def cached_peer_key(self, twin_id: int) -> bytes | None:
        """The ed25519 key of `twin_id` whose box key is cached, if any."""
        entry = self._peers.get(twin_id)
        return entry[0] if entry is not None else None

    def seal(self, twin_id: int, public_key: bytes, plaintext: bytes) -> bytes:
        return box_seal(self.shared_key(twin_id, public_key), plaintext)

    def open(self, twin_id: int, public_key: bytes, data: bytes) -> bytes:
        return box_open(self.shared_key(twin_id, public_key), data)
