"""The flist hub: blocks and published flists over HTTP; writes signed by registered twins.

`zos.hub.server.Hub` serves; `zos.hub.client` publishes, lists and downloads flists;
`zos.hub.auth` signs and checks write requests.
"""

from zos.hub.auth import AuthError, KeyLookup, RequestVerifier, sign_headers
from zos.hub.server import Hub

__all__ = ["AuthError", "Hub", "KeyLookup", "RequestVerifier", "sign_headers"]
