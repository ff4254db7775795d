"""A 0-db compatible key-value server (`reference/zdb.md`).

`protocol` reads RESP requests within fixed bounds; `datalog` keeps a namespace's
append-only, CRC-checked data files; `namespace` holds the index and every rule
about what a write may do; `commands` maps 0-db's commands onto it; `server`
serves them over TCP and unix sockets. `client` is the RESP client that the flist
zdb store and the tests use.
"""

from zos.zdb.namespace import Namespace, ZdbError
from zos.zdb.server import ZdbServer

__all__ = ["Namespace", "ZdbError", "ZdbServer"]
