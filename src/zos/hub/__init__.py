"""The flist hub: blocks and published flists over HTTP; writes signed by registered twins.

`zos.hub.server.Hub` serves; `zos.hub.client` publishes, lists and downloads flists;
`zos.hub.auth` checks signed write requests (`zos.flist.hubsign` signs them).
"""

from zos.flist.hubsign import sign_headers
from zos.hub.auth import AuthError, KeyLookup, RequestVerifier
from zos.hub.server import Hub

__all__ = ["AuthError", "Hub", "KeyLookup", "RequestVerifier", "sign_headers"]
