"""The registry answers nats-server's auth callout: may this connection in, and as what.

nats-server (configured by `zos.grid.natsserver.authorization_config`) sends every
connection that is not the registry itself to `$SYS.REQ.USER.AUTH` as an authorization
request JWT signed by the server. The request carries the client's NKey and its
signature of the server's nonce; nats-server does not check that signature for callout
users, so it is checked here. A connection without a key, or whose key did not sign the
nonce, is refused. Otherwise the key's role (`roles.Role`: an unregistered key, a twin
or a node) becomes a user JWT with that role's permissions, placed in the global
account (which holds the registry's JetStream state, out of every callout user's
reach), wrapped in an authorization response JWT for that server and that connection
only (its `user_nkey`), both signed by the registry's key as the callout's issuer
account.
"""

from __future__ import annotations

import base64
import binascii
import logging
from collections.abc import Awaitable, Callable
from typing import Any

from zos.bus.errors import BusError
from zos.identity.keys import KeyError_, verify_ed25519
from zos.identity.nkey import ACCOUNT, SERVER, USER, decode_public_nkey, public_nkey
from zos.registry import natsjwt
from zos.registry.roles import Role
from zos.registry.signing import RegistrySigner

log = logging.getLogger(__name__)

GLOBAL_ACCOUNT = "$G"
RoleLookup = Callable[[bytes], Awaitable[Role]]


class Refused(Exception):
    """A connection the callout does not let in; the message goes to nats-server's log."""


def _signature(text: str) -> bytes:
    """nats clients send the nonce signature in base64, standard or URL-safe."""
    text = text.strip().rstrip("=")
    try:
        return base64.urlsafe_b64decode(
            text.replace("+", "-").replace("/", "_") + "=" * (-len(text) % 4)
        )
    except (binascii.Error, ValueError):
        raise Refused("the nonce signature is not base64") from None


class AuthCallout:
    def __init__(self, signer: RegistrySigner, role_of: RoleLookup) -> None:
        self.signer = signer
        self.role_of = role_of
        self.issuer = public_nkey(signer.public_key, ACCOUNT)

    async def answer(self, request: bytes) -> bytes:
        """The signed authorization response to one request (b"" for one that does not
        parse: nats-server then refuses the connection as unanswered)."""
        try:
            claims = natsjwt.decode(request.decode(), SERVER)
            req = claims["nats"]
            user_nkey, server_id = req["user_nkey"], req["server_id"]["id"]
            if not isinstance(user_nkey, str) or not isinstance(server_id, str):
                raise TypeError
        except (natsjwt.JwtError, KeyError, TypeError, UnicodeDecodeError) as e:
            log.warning("auth callout: unreadable request (%s)", e)
            return b""
        response: dict[str, Any] = {"type": "authorization_response", "version": 2}
        try:
            role = await self.role_of(self._proven_key(req))
            user = {
                "sub": user_nkey,
                "aud": GLOBAL_ACCOUNT,
                "nats": {**role.permissions(), "type": "user", "version": 2},
            }
            response["jwt"] = natsjwt.encode(user, self.signer, self.issuer)
            log.debug("auth callout: %s connects", role.describe())
        except Refused as e:
            response["error"] = str(e)
            log.info("auth callout: refused a connection: %s", e)
        except BusError as e:  # storage not answering: the client retries
            response["error"] = f"registry: {e.message}"
            log.warning("auth callout: cannot look the key up: %s", e)
        claims = {"sub": user_nkey, "aud": server_id, "nats": response}
        return natsjwt.encode(claims, self.signer, self.issuer).encode()

    def _proven_key(self, req: dict[str, Any]) -> bytes:
        """The client's ed25519 key, once it is shown to have signed the server's nonce."""
        opts = req.get("connect_opts") or {}
        info = req.get("client_info") or {}
        nkey, sig, nonce = opts.get("nkey"), opts.get("sig"), info.get("nonce")
        if not isinstance(nkey, str) or not nkey:
            raise Refused("no key: zos connections authenticate with an NKey")
        if not isinstance(sig, str) or not isinstance(nonce, str) or not nonce:
            raise Refused(f"key {nkey}: no signed nonce")
        try:
            key = decode_public_nkey(nkey, USER)
        except KeyError_ as e:
            raise Refused(str(e)) from None
        if not verify_ed25519(key, nonce.encode(), _signature(sig)):
            raise Refused(f"key {nkey} did not sign the server's nonce")
        return key
