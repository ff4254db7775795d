"""What issue 12's guards cost, each beside the baseline it replaces or precedes.

- removing a tree: `zos.primitives.trees.remove_tree` (iterative, one fd at a time)
  beside `shutil.rmtree`, on the same wide tree made twice (and a deep one shutil
  cannot remove at all);
- a bus payload: the nesting check run before parsing beside `json.loads` of it.

    .venv/bin/python benchmarks/hostile_checks.py [--files 20000] [--depth 3000]
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

from zos.bus.envelope import nests_too_deep
from zos.primitives.trees import remove_tree


def wide_tree(root: Path, files: int) -> None:
    per_dir = 200
    for i in range(files):
        d = root / f"d{i // per_dir}"
        if i % per_dir == 0:
            d.mkdir(parents=True)
        (d / f"f{i}").write_bytes(b"x")


def deep_tree(root: Path, depth: int) -> None:
    root.mkdir()
    fd = os.open(root, os.O_RDONLY | os.O_DIRECTORY)
    for _ in range(depth):
        os.mkdir("d", dir_fd=fd)
        deeper = os.open("d", os.O_RDONLY | os.O_DIRECTORY, dir_fd=fd)
        os.close(fd)
        fd = deeper
    os.close(fd)


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--files", type=int, default=20000)
    ap.add_argument("--depth", type=int, default=3000)
    args = ap.parse_args()
    with tempfile.TemporaryDirectory(prefix="zos-bench-", dir="/var/tmp") as tmp:
        base = Path(tmp)
        wide_tree(base / "a", args.files)
        wide_tree(base / "b", args.files)
        ours = timed(lambda: remove_tree(base / "a"))
        theirs = timed(lambda: shutil.rmtree(base / "b"))
        print(
            f"wide tree, {args.files} files:   remove_tree {ours:.3f} s"
            f"   shutil.rmtree {theirs:.3f} s"
        )
        deep_tree(base / "c", args.depth)
        try:
            shutil.rmtree(base / "c")
            verdict = "removed"
        except RecursionError:
            verdict = "RecursionError"
        ours = timed(lambda: remove_tree(base / "c"))
        print(f"deep tree, {args.depth} levels: remove_tree {ours:.3f} s   shutil.rmtree {verdict}")

    workloads = [
        {"name": f"w{i}", "type": "zmachine", "data": {"env": {"K": "v" * 100}, "x": [[1, 2]]}}
        for i in range(4000)
    ]
    payload = json.dumps({"workloads": workloads}).encode()
    rounds = 20
    check = timed(lambda: [nests_too_deep(payload) for _ in range(rounds)]) / rounds
    parse = timed(lambda: [json.loads(payload) for _ in range(rounds)]) / rounds
    print(
        f"bus payload, {len(payload) >> 10} KiB:   nesting check {check * 1000:.2f} ms"
        f"   json.loads {parse * 1000:.2f} ms"
    )
    deep = b"[" * 200_000 + b"]" * 200_000
    check = timed(lambda: nests_too_deep(deep))
    print(f"200,000 nested arrays:      nesting check {check * 1000:.2f} ms (refused unparsed)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
