"""An ext4 volume encrypted with fscrypt beside a plain one, under the same fio jobs.

    .venv/bin/python benchmarks/storage.py [--size-mib 1024] [--io-mib 256] [--files 2000]
        [--runs 3] [--workdir /var/tmp]

Needs root. Makes two sparse images of the same size, formatted by the same
`filesystem.mkfs_ext4` except that one has the encrypt feature, loop-mounts both and
works in a directory `data` on each: on the encrypted one a v2 policy (AES-256-XTS
contents, AES-256-CTS names) under a random key, as `zos.primitives.fscrypt` makes it.
Each run does, on the plain volume and then on the encrypted one, from an empty `data`:

- sequential write: one file of --io-mib MiB in 1 MiB blocks, fsync at the end: MiB/s;
- sequential read of that file, its page cache dropped first (fio's invalidate): MiB/s;
- small files: --files files of 4 KiB, each created, written and closed: files/s (no
  fsync per file, which would measure the disk's flush, not the filesystem).

Figures are the median of --runs. The images' own pages stay in the host's page cache,
so the figures show the filesystem's and the cipher's cost more than the disk's. The
kernel's crypto drivers for the two modes are read from /proc/crypto after the runs.
Everything is unmounted and removed on exit, Ctrl-C too.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import gzip
import json
import os
import secrets
import shutil
import statistics
import subprocess
import tempfile
from dataclasses import dataclass
from pathlib import Path

from zos.primitives import filesystem, fscrypt

MiB = 1024 * 1024


@dataclass
class Volume:
    name: str
    image: Path
    mount: Path

    @property
    def data(self) -> Path:
        return self.mount / "data"


async def make_volume(work: Path, name: str, size: int, encrypt: bool) -> Volume:
    vol = Volume(name, work / f"{name}.img", work / name)
    filesystem.create_sparse(vol.image, size)
    await filesystem.mkfs_ext4(vol.image, encrypt=encrypt)
    await filesystem.mount_image(vol.image, vol.mount)
    vol.data.mkdir()
    if encrypt:
        fscrypt.encrypt_directory(vol.data, secrets.token_bytes(fscrypt.KEY_SIZE))
    return vol


def fio(directory: Path, *args: str) -> dict:
    out = subprocess.run(
        ["fio", f"--directory={directory}", "--ioengine=psync", "--output-format=json", *args],
        check=True,
        capture_output=True,
        text=True,
    ).stdout
    return json.loads(out)["jobs"][0]


def empty(directory: Path) -> None:
    for entry in directory.iterdir():
        if entry.is_dir():
            shutil.rmtree(entry)
        else:
            entry.unlink()
    os.sync()


def measure(vol: Volume, io_mib: int, files: int) -> dict[str, float]:
    empty(vol.data)
    seq = ("--filename=seq", "--bs=1M", f"--size={io_mib}M")
    write = fio(vol.data, "--name=seqwrite", "--rw=write", "--end_fsync=1", *seq)
    read = fio(vol.data, "--name=seqread", "--rw=read", "--invalidate=1", *seq)
    small_dir = vol.data / "small"
    small_dir.mkdir()
    small = fio(
        small_dir,
        "--name=small",
        "--rw=write",
        "--bs=4k",
        "--filesize=4k",
        f"--nrfiles={files}",
        "--openfiles=1",
        "--create_on_open=1",
        "--file_service_type=sequential",
    )
    return {
        "seq write MiB/s": write["write"]["bw_bytes"] / MiB,
        "seq read MiB/s": read["read"]["bw_bytes"] / MiB,
        "4 KiB files/s": small["write"]["iops"],  # one 4 KiB write per file
    }


def crypto_drivers(names: tuple[str, ...]) -> dict[str, str]:
    """The driver with the highest priority for each algorithm name in /proc/crypto."""
    best: dict[str, tuple[int, str]] = {}
    for block in Path("/proc/crypto").read_text().split("\n\n"):
        fields = dict(
            (k.strip(), v.strip()) for k, _, v in (ln.partition(":") for ln in block.splitlines())
        )
        name, prio = fields.get("name"), int(fields.get("priority", "0"))
        if name in names and prio >= best.get(name, (-1, ""))[0]:
            best[name] = (prio, fields.get("driver", "?"))
    return {n: best[n][1] if n in best else "not loaded" for n in names}


def cpu_has_aes() -> bool:
    for line in Path("/proc/cpuinfo").read_text().splitlines():
        if line.startswith("flags"):
            return "aes" in line.partition(":")[2].split()
    return False


async def run(work: Path, size: int, io_mib: int, files: int, runs: int) -> None:
    volumes = [
        await make_volume(work, "plain", size, encrypt=False),
        await make_volume(work, "encrypted", size, encrypt=True),
    ]
    try:
        results: dict[str, list[dict[str, float]]] = {v.name: [] for v in volumes}
        for _ in range(runs):
            for vol in volumes:
                results[vol.name].append(measure(vol, io_mib, files))
    finally:
        for vol in volumes:
            with contextlib.suppress(Exception):
                await filesystem.umount(vol.mount)

    print(
        f"ext4 images of {size // MiB} MiB (mkfs.ext4 -m 0, one with -O encrypt), "
        f"median of {runs} runs; fio psync, {io_mib} MiB sequential, {files} small files"
    )
    print(f"  {'':<18} {'plain':>10} {'encrypted':>10} {'enc/plain':>10}")
    for metric in results["plain"][0]:
        plain = statistics.median(r[metric] for r in results["plain"])
        enc = statistics.median(r[metric] for r in results["encrypted"])
        print(f"  {metric:<18} {plain:10.1f} {enc:10.1f} {enc / plain:10.2f}")
    print(f"kernel crypto drivers (CPU AES instructions: {'yes' if cpu_has_aes() else 'no'}):")
    for name, driver in crypto_drivers(("xts(aes)", "cts(cbc(aes))")).items():
        print(f"  {name:<14} {driver}")
    if aesni := kernel_config("CONFIG_CRYPTO_AES_NI_INTEL"):
        print(f"  kernel config: {aesni}")


def kernel_config(option: str) -> str | None:
    """The line of /proc/config.gz that sets (or leaves unset) `option`, if readable."""
    with contextlib.suppress(OSError):
        for line in gzip.decompress(Path("/proc/config.gz").read_bytes()).decode().splitlines():
            if line.startswith(f"{option}=") or line == f"# {option} is not set":
                return line
    return None


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mib", type=int, default=1024)
    parser.add_argument("--io-mib", type=int, default=256)
    parser.add_argument("--files", type=int, default=2000)
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--workdir", type=Path, default=Path("/var/tmp"))
    args = parser.parse_args()
    if os.geteuid() != 0:
        parser.error("needs root (loop mounts)")
    work = Path(tempfile.mkdtemp(prefix="zos-storage-bench-", dir=args.workdir))
    try:
        asyncio.run(run(work, args.size_mib * MiB, args.io_mib, args.files, args.runs))
    finally:
        for m in reversed(filesystem.mounts_under(work)):  # left by an interrupted run
            subprocess.run(["umount", "-l", str(m.target)], check=False)
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
