"""Build, on the node, the small initramfs a VM boots with: busybox, kernel modules, an init.

The kernel is Debian's (`linux-image-amd64`): `/boot/vmlinuz-<version>` beside
`/lib/modules/<version>`. The initramfs holds static busybox (`busybox-static`) with its
applets linked, the modules asked for and everything they depend on (from the kernel's
own `modules.dep`, in load order), and an init script. It is an uncompressed newc cpio:
under TCG the guest would spend longer inflating it than QEMU spends loading it.

A `Recipe` names what goes in; `ensure` keeps one built image per kernel version and
content (init, modules, busybox, files) in a cache directory: built once, at run time,
and again only when one of them changes.
"""

from __future__ import annotations

import gzip
import hashlib
import lzma
import os
import re
import stat
import subprocess
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import cramjam

BOOT = Path("/boot")
MODULES = Path("/lib/modules")
BUSYBOX = Path("/bin/busybox")
INIT_PATH = "init"
MODULE_DIR = "lib/modules"
LOAD_ORDER = "lib/modules/load"  # one module file name a line, in the order to insmod them


class InitramfsError(Exception):
    pass


@dataclass(frozen=True)
class Kernel:
    version: str
    image: Path  # the bzImage
    modules: Path  # /lib/modules/<version>


def _version_key(version: str) -> list[tuple[int, str]]:
    return [(int(p), "") if p.isdigit() else (-1, p) for p in re.split(r"[.\-+~]", version)]


def installed_kernels() -> list[Kernel]:
    """Kernels with both an image in /boot and their modules, oldest first."""
    found = []
    for image in BOOT.glob("vmlinuz-*"):
        version = image.name.removeprefix("vmlinuz-")
        modules = MODULES / version
        if (modules / "modules.dep").is_file():
            found.append(Kernel(version, image, modules))
    return sorted(found, key=lambda k: _version_key(k.version))


def default_kernel() -> Kernel:
    """The newest installed kernel (the one `linux-image-amd64` points at)."""
    kernels = installed_kernels()
    if not kernels:
        raise InitramfsError(
            "no kernel found: install linux-image-amd64 (/boot/vmlinuz-* and /lib/modules/*)"
        )
    return kernels[-1]


# ---- modules ------------------------------------------------------------------------


def _module_name(path: str) -> str:
    name = path.rsplit("/", 1)[-1]
    name = re.sub(r"\.ko(\.(xz|gz|zst))?$", "", name)
    return name.replace("-", "_")


def _read_deps(kernel: Kernel) -> dict[str, tuple[str, list[str]]]:
    """module name -> (path relative to the modules dir, the paths it depends on)."""
    deps: dict[str, tuple[str, list[str]]] = {}
    for line in (kernel.modules / "modules.dep").read_text().splitlines():
        path, sep, rest = line.partition(":")
        if sep:
            deps[_module_name(path)] = (path, rest.split())
    return deps


def _builtin(kernel: Kernel) -> set[str]:
    try:
        text = (kernel.modules / "modules.builtin").read_text()
    except OSError:
        return set()
    return {_module_name(line) for line in text.split()}


def resolve_modules(kernel: Kernel, names: Iterable[str]) -> list[str]:
    """The module files (relative to the kernel's modules dir) that `names` need, each
    after the modules it depends on. Modules built into the kernel are skipped."""
    deps = _read_deps(kernel)
    by_path = {path: name for name, (path, _) in deps.items()}
    builtin = _builtin(kernel)
    order: list[str] = []
    seen: set[str] = set()

    def visit(name: str) -> None:
        if name in seen:
            return
        seen.add(name)
        path, needs = deps[name]
        # modules.dep lists every module needed, the one to load first last.
        for dep in reversed(needs):
            visit(by_path.get(dep, _module_name(dep)))
        order.append(path)

    for raw in names:
        name = raw.replace("-", "_")
        if name in deps:
            visit(name)
        elif name not in builtin:
            raise InitramfsError(f"kernel {kernel.version} has no module {raw!r}")
    return order


def _module_bytes(path: Path) -> bytes:
    """The module as insmod needs it (uncompressed)."""
    data = path.read_bytes()
    if path.suffix == ".xz":
        return lzma.decompress(data)
    if path.suffix == ".gz":
        return gzip.decompress(data)
    if path.suffix == ".zst":
        return bytes(cramjam.zstd.decompress(data))
    return data


# ---- cpio (newc) --------------------------------------------------------------------


class _Cpio:
    """A deterministic newc archive: fixed inode numbers, owner root, mtime 0."""

    def __init__(self) -> None:
        self.parts: list[bytes] = []
        self.ino = 0

    def _entry(
        self, name: str, mode: int, data: bytes = b"", rdev: tuple[int, int] = (0, 0)
    ) -> None:
        self.ino += 1
        encoded = name.encode() + b"\0"
        fields = [self.ino, mode, 0, 0, 1, 0, len(data), 0, 0, rdev[0], rdev[1], len(encoded), 0]
        header = b"070701" + b"".join(b"%08X" % f for f in fields)
        self.parts += [header, encoded, _pad(len(header) + len(encoded)), data, _pad(len(data))]

    def directory(self, name: str) -> None:
        self._entry(name, stat.S_IFDIR | 0o755)

    def file(self, name: str, data: bytes, mode: int = 0o644) -> None:
        self._entry(name, stat.S_IFREG | mode, data)

    def symlink(self, name: str, target: str) -> None:
        self._entry(name, stat.S_IFLNK | 0o777, target.encode())

    def chardev(self, name: str, major: int, minor: int) -> None:
        self._entry(name, stat.S_IFCHR | 0o600, rdev=(major, minor))

    def bytes(self) -> bytes:
        self._entry("TRAILER!!!", 0)
        self.ino = 0
        return b"".join(self.parts)


def _pad(n: int) -> bytes:
    return b"\0" * (-n % 4)


def _applets(busybox: Path) -> list[str]:
    out = subprocess.run([str(busybox), "--list"], capture_output=True, text=True, check=True)
    return sorted(a for a in out.stdout.split() if a and a != "busybox" and "/" not in a)


@dataclass(frozen=True)
class Recipe:
    """What an initramfs holds: busybox in /bin with every applet, the kernel's `modules`
    (and their dependencies) in /lib/modules with their load order in /lib/modules/load,
    `init` as /init, and `files` (path -> content) beside them."""

    kernel: Kernel
    init: str
    modules: Sequence[str]
    busybox: Path = BUSYBOX
    files: Mapping[str, bytes] = field(default_factory=dict)

    def digest(self) -> str:
        """Changes with any input (the kernel by its version, busybox by its bytes)."""
        h = hashlib.sha256()
        for part in (self.kernel.version, self.init, *self.modules):
            h.update(part.encode() + b"\0")
        h.update(
            hashlib.sha256(self.busybox.read_bytes()).digest() if self.busybox.is_file() else b""
        )
        for path, content in sorted(self.files.items()):
            h.update(path.encode() + b"\0" + hashlib.sha256(content).digest())
        return h.hexdigest()


def build(recipe: Recipe) -> bytes:
    """The initramfs of `recipe`, as a deterministic newc archive."""
    kernel, busybox = recipe.kernel, recipe.busybox
    if not busybox.is_file():
        raise InitramfsError(f"{busybox} is missing: install busybox-static")
    order = resolve_modules(kernel, recipe.modules)
    cpio = _Cpio()
    for d in ("bin", "dev", "etc", "lib", MODULE_DIR, "proc", "run", "sys", "tmp", "newroot"):
        cpio.directory(d)
    cpio.chardev("dev/console", 5, 1)
    cpio.chardev("dev/null", 1, 3)
    cpio.file("bin/busybox", busybox.read_bytes(), 0o755)
    for applet in _applets(busybox):
        cpio.symlink(f"bin/{applet}", "busybox")
    names = []
    for rel in order:
        name = _module_name(rel) + ".ko"
        names.append(name)
        cpio.file(f"{MODULE_DIR}/{name}", _module_bytes(kernel.modules / rel))
    cpio.file(LOAD_ORDER, "".join(f"{n}\n" for n in names).encode())
    for path, content in sorted(recipe.files.items()):
        cpio.file(path.lstrip("/"), content)
    cpio.file(INIT_PATH, recipe.init.encode(), 0o755)
    return cpio.bytes()


def ensure(cache: Path, recipe: Recipe) -> Path:
    """The cached initramfs of `recipe`, built first if it is not there yet."""
    version = recipe.kernel.version
    target = cache / f"initramfs-{version}-{recipe.digest()[:16]}.cpio"
    if target.is_file():
        return target
    cache.mkdir(parents=True, exist_ok=True)
    tmp = target.with_name(f".{target.name}.{os.getpid()}.tmp")
    try:
        tmp.write_bytes(build(recipe))
        os.replace(tmp, target)
    finally:
        tmp.unlink(missing_ok=True)
    return target
