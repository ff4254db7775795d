"""The node API contract, shared by the node and its clients: command names and request /
answer models (`commands`) and a typed client for one node (`NodeClient`).

Layering: gridtypes and bus below it; `zos.node` (which serves it) and `zos.client`,
`zos.grid`, tests and benchmarks (which call it) above. It imports nothing of the node.
"""

from zos.nodeapi import commands
from zos.nodeapi.client import NodeClient
from zos.nodeapi.commands import LogsChunk, Statistics, Version

__all__ = ["LogsChunk", "NodeClient", "Statistics", "Version", "commands"]
