"""Flist pack/unpack benchmark beside `tar` and `tar | zstd` of the same tree.

Builds a tree of about 200 MiB (many small files, some large; half of the bytes random,
half compressible text), then in the same run and with the same warm page cache:

- `zos.flist.pack` into a dir store, and `unpack` from it: MiB/s;
- `tar -cf` / `tar -xf` and `tar -cf - | zstd -T0` / `zstd -dc | tar -xf`: MiB/s;
- stored bytes: the block store beside the .tar.zst;
- a second image sharing most files with the first (5% of files changed, one new file):
  the block store's growth beside the second .tar.zst, which is stored whole again.

Run: `.venv/bin/python benchmarks/flist_pack.py [--size-mib 200] [--workdir /tmp]`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import random
import shutil
import subprocess
import tempfile
import time
from pathlib import Path

from zos.flist import Router, pack, unpack_flist

WORDS = b"the quick brown fox jumps over a lazy dog while zero os packs flists into blocks".split()


def text(rng: random.Random, size: int) -> bytes:
    out = bytearray()
    while len(out) < size:
        out += b" ".join(rng.choices(WORDS, k=64)) + b"\n"
    return bytes(out[:size])


def make_tree(root: Path, total: int, seed: int = 1) -> list[Path]:
    rng = random.Random(seed)
    files: list[Path] = []
    written = 0
    n = 0
    while written < total:
        d = root / f"dir{n % 40:02d}" / f"sub{n % 7}"
        d.mkdir(parents=True, exist_ok=True)
        size = rng.choice([2_000, 8_000, 30_000, 120_000, 700_000]) if n % 50 else 8_000_000
        size = min(size, total - written)
        data = os.urandom(size) if n % 2 else text(rng, size)
        path = d / f"file{n:05d}"
        path.write_bytes(data)
        files.append(path)
        written += size
        n += 1
    return files


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file())


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def sh(cmd: str) -> None:
    subprocess.run(cmd, shell=True, check=True)


def row(name: str, seconds: float, mib: float, extra: str = "") -> None:
    print(f"  {name:<28} {seconds:7.2f} s  {mib / seconds:8.1f} MiB/s  {extra}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--size-mib", type=int, default=200)
    parser.add_argument("--workdir", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="zos-flist-bench-", dir=args.workdir))
    try:
        run(work, args.size_mib)
    finally:
        shutil.rmtree(work, ignore_errors=True)


def run(work: Path, size_mib: int) -> None:
    src = work / "src"
    files = make_tree(src, size_mib * 1024 * 1024)
    mib = du(src) / 2**20
    print(f"tree: {len(files)} files, {mib:.1f} MiB (half random, half text)")
    store = work / "store"

    async def do_pack(source: Path, fl: Path) -> None:
        router = Router.parse([f"dir://{store}"])
        try:
            await pack(source, fl, router)
        finally:
            await router.close()

    print("pack")
    t_pack = timed(lambda: asyncio.run(do_pack(src, work / "a.fl")))
    row("zos flist pack (dir store)", t_pack, mib)
    t_tar = timed(lambda: sh(f"tar -cf {work}/a.tar -C {src} ."))
    row("tar -cf", t_tar, mib)
    t_zst = timed(lambda: sh(f"tar -cf - -C {src} . | zstd -q -T0 -o {work}/a.tar.zst"))
    row("tar -cf - | zstd -T0", t_zst, mib)

    print("unpack")
    t_unpack = timed(lambda: asyncio.run(unpack_flist(work / "a.fl", work / "out-fl")))
    row("zos flist unpack", t_unpack, mib)
    (work / "out-tar").mkdir()
    t_untar = timed(lambda: sh(f"tar -xf {work}/a.tar -C {work}/out-tar"))
    row("tar -xf", t_untar, mib)
    (work / "out-zst").mkdir()
    t_unzst = timed(lambda: sh(f"zstd -q -dc {work}/a.tar.zst | tar -xf - -C {work}/out-zst"))
    row("zstd -dc | tar -xf", t_unzst, mib)

    store_a = du(store)
    fl_a = (work / "a.fl").stat().st_size
    zst_a = (work / "a.tar.zst").stat().st_size
    print("stored size, first image")
    print(f"  flist: {store_a / 2**20:8.1f} MiB blocks + {fl_a / 1024:.0f} KiB .fl")
    tar_a = (work / "a.tar").stat().st_size
    print(f"  tar.zst: {zst_a / 2**20:6.1f} MiB    tar: {tar_a / 2**20:.1f} MiB")

    # second image: same tree with 5% of the files changed and one new file
    src_b = work / "src-b"
    shutil.copytree(src, src_b, symlinks=True)
    rng = random.Random(2)
    changed = rng.sample(files, max(1, len(files) // 20))
    for p in changed:
        target = src_b / p.relative_to(src)
        target.write_bytes(os.urandom(target.stat().st_size))
    (src_b / "new-file").write_bytes(os.urandom(3 * 2**20))
    mib_b = du(src_b) / 2**20
    asyncio.run(do_pack(src_b, work / "b.fl"))
    sh(f"tar -cf - -C {src_b} . | zstd -q -T0 -o {work}/b.tar.zst")
    grown = du(store) - store_a
    zst_b = (work / "b.tar.zst").stat().st_size
    print(
        f"second image ({len(changed)} of {len(files)} files changed, +3 MiB new, {mib_b:.0f} MiB)"
    )
    fl_b = (work / "b.fl").stat().st_size
    print(f"  flist store grows by: {grown / 2**20:8.1f} MiB (+ {fl_b / 1024:.0f} KiB .fl)")
    print(f"  second tar.zst:       {zst_b / 2**20:8.1f} MiB")
    both_fl, both_zst = (store_a + grown) / 2**20, (zst_a + zst_b) / 2**20
    print(f"  both images: flist {both_fl:.1f} MiB vs tar.zst {both_zst:.1f} MiB")


if __name__ == "__main__":
    main()
