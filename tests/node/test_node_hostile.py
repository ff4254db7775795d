"""The findings of an outside probe of the node (issue 12), each one a real node agent
(subprocess) on a real registry and nats-server: what a hostile tenant, flist or full
disk did before, and what the node answers now."""

from __future__ import annotations

import subprocess
import sys

import pytest
from nodehelpers import NodeProcess

pytestmark = [pytest.mark.nats, pytest.mark.root, pytest.mark.slow]

ZOS = [sys.executable, "-m", "zos.cli"]


async def test_a_deep_tree_in_the_cache_stops_neither_start_nor_wipe(
    make_user, make_node, deep_tree
) -> None:
    # Finding 1: a tree thousands of directories deep left in the flist cache made
    # `zos node run` and `zos node wipe` exit with "maximum recursion depth exceeded".
    user = await make_user()
    node: NodeProcess = await make_node(user)
    node.stop()
    trees = node.data_dir / "flist-cache" / "trees"
    deep_tree(trees / ".0123abcd.half", 1500)
    node.start()
    await node.wait_ready(user)
    assert list(trees.iterdir()) == []
    node.stop()

    deep_tree(trees / ("f" * 64), 1500)  # a tree the cache's index does not know
    wiped = subprocess.run(
        [*ZOS, "node", "wipe", "--data-dir", str(node.data_dir)],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert wiped.returncode == 0, wiped.stderr
    assert list(trees.iterdir()) == []
