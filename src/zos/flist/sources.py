"""What can be packed: a directory, a tar archive, or a container image archive.

Each source gives a `Tree` (metadata only) and a reader that streams the content of
every regular file once, in 512 KiB chunks, in an order that reads each archive
sequentially (so compressed layers are decompressed once more, never seeked).
Image archives are an OCI layout (directory or tar) or a `docker save` tarball; their
layers are applied in order with whiteouts (`.wh.NAME`) and opaque dirs (`.wh..wh..opq`).
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import stat
import tarfile
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Literal

from zos.flist.blocks import BLOCK_SIZE
from zos.flist.errors import FlistError
from zos.flist.format import check_name
from zos.flist.tree import Node, Tree, split

SourceFormat = Literal["auto", "dir", "tar", "image"]
LayerOpener = Callable[[], IO[bytes]]
MAX_JSON = 16 * 1024 * 1024
WHITEOUT = ".wh."
OPAQUE = ".wh..wh..opq"


@dataclass
class Source:
    tree: Tree
    read: Callable[[], Iterator[tuple[Node, bytes]]]
    tags: dict[str, str] = field(default_factory=dict)
    skipped: list[str] = field(default_factory=list)
    close: Callable[[], None] = lambda: None


def open_source(path: Path, fmt: SourceFormat = "auto") -> Source:
    path = Path(path)
    if not path.exists():
        raise FlistError(f"{path}: no such file or directory")
    if fmt == "dir" or (fmt == "auto" and path.is_dir()):
        if not path.is_dir():
            raise FlistError(f"{path}: not a directory")
        return dir_source(path)
    if path.is_dir():
        if fmt == "tar":
            raise FlistError(f"{path}: a directory is not a tar archive")
        return image_source(_OciDir(path))
    try:
        outer = tarfile.open(path, "r:*")  # noqa: SIM115 (closed by the source)
    except (tarfile.TarError, OSError) as e:
        raise FlistError(f"{path}: not a directory or a readable tar archive ({e})") from None
    names = {_clean(m.name) for m in outer.getmembers()}
    is_image = "manifest.json" in names or {"oci-layout", "index.json"} <= names
    if fmt == "image" or (fmt == "auto" and is_image):
        return image_source(_TarImage(outer))
    outer.close()
    src = layered_source([lambda: open(path, "rb")], whiteouts=False)  # noqa: SIM115
    return src


# -- directories ---------------------------------------------------------------------


def dir_source(root: Path) -> Source:
    skipped: list[str] = []
    st = os.lstat(root)
    tree = Tree(_node_from_stat(st, "dir"))
    inodes: dict[tuple[int, int], Node] = {}
    stack = [(root, tree.root, "")]
    while stack:
        directory, node, rel = stack.pop()
        with os.scandir(directory) as it:
            entries = sorted(it, key=lambda e: e.name)
        for entry in entries:
            path = f"{rel}/{entry.name}" if rel else entry.name
            check_name(entry.name, path)
            st = entry.stat(follow_symlinks=False)
            fmt = stat.S_IFMT(st.st_mode)
            if fmt == stat.S_IFREG and st.st_nlink > 1 and (st.st_dev, st.st_ino) in inodes:
                node.children[entry.name] = inodes[(st.st_dev, st.st_ino)]
                continue
            kind = {
                stat.S_IFDIR: "dir",
                stat.S_IFREG: "file",
                stat.S_IFLNK: "symlink",
                stat.S_IFIFO: "fifo",
            }.get(fmt)
            if kind is None:
                what = "device node" if fmt in (stat.S_IFCHR, stat.S_IFBLK) else "socket"
                skipped.append(f"{path}: {what} skipped")
                continue
            child = _node_from_stat(st, kind)
            if kind == "symlink":
                child.target = os.readlink(entry.path)
                child.size = len(os.fsencode(child.target))
            elif kind == "file":
                child.origin = Path(entry.path)
                if st.st_nlink > 1:
                    inodes[(st.st_dev, st.st_ino)] = child
            node.children[entry.name] = child
            if kind == "dir":
                stack.append((Path(entry.path), child, path))

    def read() -> Iterator[tuple[Node, bytes]]:
        for node in tree.files():
            fd = os.open(str(node.origin), os.O_RDONLY | os.O_NOFOLLOW)
            with os.fdopen(fd, "rb", buffering=0) as f:
                total = 0
                while chunk := _read_full(f, BLOCK_SIZE):
                    total += len(chunk)
                    yield node, chunk
                node.size = total  # what was read is what the blocks hold

    return Source(tree, read, skipped=skipped)


def _node_from_stat(st: os.stat_result, kind: str) -> Node:
    return Node(
        kind,  # type: ignore[arg-type]
        st.st_mode,
        uid=st.st_uid,
        gid=st.st_gid,
        mtime=int(st.st_mtime),
        ctime=int(st.st_ctime),
        size=st.st_size if kind == "file" else 0,
    )


def _read_full(f: IO[bytes], n: int) -> bytes:
    parts, got = [], 0
    while got < n:
        chunk = f.read(n - got)
        if not chunk:
            break
        parts.append(chunk)
        got += len(chunk)
    return b"".join(parts)


# -- tar archives and layers --------------------------------------------------------


def _clean(name: str) -> str:
    return "/".join(p for p in name.split("/") if p not in ("", "."))


def layered_source(layers: list[LayerOpener], whiteouts: bool) -> Source:
    """Apply tar layers in order; content is read afterwards, layer by layer."""
    tree = Tree()
    skipped: list[str] = []
    for index, opener in enumerate(layers):
        with opener() as raw:
            members = _members(raw, index)
            if isinstance(raw, _DigestReader):
                raw.finish()  # the whole blob was read once: check it is the one named
            _apply_layer(tree, members, index, whiteouts, skipped)
    wanted = {node.origin: node for node in tree.files() if node.size > 0}

    def read() -> Iterator[tuple[Node, bytes]]:
        for index, opener in enumerate(layers):
            if not any(o[0] == index for o in wanted):  # type: ignore[index]
                continue
            with opener() as raw, _stream(raw, index) as tf:
                for i, member in enumerate(tf):
                    node = wanted.get((index, i))
                    if node is None:
                        continue
                    f = tf.extractfile(member)
                    if f is None:
                        raise FlistError(f"layer {index}: {member.name}: content unreadable")
                    total = 0
                    while chunk := _read_full(f, BLOCK_SIZE):
                        total += len(chunk)
                        yield node, chunk
                    if total != node.size:
                        raise FlistError(f"layer {index}: {member.name}: truncated content")

    return Source(tree, read, skipped=skipped)


def _stream(raw: IO[bytes], index: int) -> tarfile.TarFile:
    try:
        return tarfile.open(fileobj=raw, mode="r|*")
    except tarfile.TarError as e:
        head = ""
        with contextlib.suppress(Exception):
            raw.seek(0)
            if raw.read(4) == b"\x28\xb5\x2f\xfd":
                head = " (zstd-compressed layers are not supported)"
        raise FlistError(f"layer {index}: not a tar archive{head}: {e}") from None


def _members(raw: IO[bytes], index: int) -> list[tuple[int, tarfile.TarInfo]]:
    with _stream(raw, index) as tf:
        try:
            return list(enumerate(tf))
        except tarfile.TarError as e:
            raise FlistError(f"layer {index}: damaged tar archive: {e}") from None


def _apply_layer(
    tree: Tree,
    members: list[tuple[int, tarfile.TarInfo]],
    index: int,
    whiteouts: bool,
    skipped: list[str],
) -> None:
    entries = []
    opaque: list[list[str]] = []
    removed: list[list[str]] = []
    for i, m in members:
        where = f"layer {index}: {m.name}"
        parts = split(m.name, where)
        name = parts[-1] if parts else ""
        if whiteouts and name == OPAQUE:
            opaque.append(parts[:-1])
        elif whiteouts and name.startswith(WHITEOUT):
            removed.append([*parts[:-1], name[len(WHITEOUT) :]])
        else:
            entries.append((i, m, parts, where))
    # Whiteouts hide what lower layers had; this layer's own entries are added after.
    for parts in opaque:
        directory = tree.lookup(parts)
        if directory is not None and directory.kind == "dir":
            directory.children.clear()
    for parts in removed:
        tree.remove(parts)
    for i, m, parts, where in entries:
        node = _node_from_member(tree, m, (index, i), parts, where, skipped)
        if node is not None:
            tree.put(parts, node, where)


def _node_from_member(
    tree: Tree,
    m: tarfile.TarInfo,
    origin: tuple[int, int],
    parts: list[str],
    where: str,
    skipped: list[str],
) -> Node | None:
    perm = m.mode & 0o7777
    common = {"uid": m.uid, "gid": m.gid, "mtime": int(m.mtime), "ctime": int(m.mtime)}
    if m.islnk():
        target = tree.lookup(split(m.linkname, where))
        if target is None or target.kind != "file":
            raise FlistError(f"{where}: hard link to {m.linkname!r}, which is not a file before it")
        return target
    if m.isreg():
        return Node("file", stat.S_IFREG | perm, size=m.size, origin=origin, **common)
    if m.isdir():
        return Node("dir", stat.S_IFDIR | perm, **common)
    if m.issym():
        if not m.linkname or "\0" in m.linkname:
            raise FlistError(f"{where}: symlink without a target")
        size = len(m.linkname.encode())
        return Node("symlink", stat.S_IFLNK | perm, size=size, target=m.linkname, **common)
    if m.isfifo():
        return Node("fifo", stat.S_IFIFO | perm, **common)
    skipped.append(f"{'/'.join(parts)}: {'device node' if m.isdev() else 'unsupported type'}")
    return None


# -- container image archives ------------------------------------------------------


_DIGEST = re.compile(r"^sha256:([0-9a-f]{64})$")
_INDEX_TYPES = {
    "application/vnd.oci.image.index.v1+json",
    "application/vnd.docker.distribution.manifest.list.v2+json",
}


class _ImageFiles:
    """Read named files of an image archive (tar or directory), bounded in size."""

    def open(self, name: str) -> IO[bytes]:
        raise NotImplementedError

    def exists(self, name: str) -> bool:
        raise NotImplementedError

    def json(self, name: str) -> object:
        with self.open(name) as f:
            data = f.read(MAX_JSON + 1)
        if len(data) > MAX_JSON:
            raise FlistError(f"image: {name} is larger than {MAX_JSON} bytes")
        expected = _blob_digest(name)
        if expected is not None and hashlib.sha256(data).hexdigest() != expected:
            raise FlistError(f"image: {name} does not match its sha256 digest")
        try:
            return json.loads(data)
        except ValueError:
            raise FlistError(f"image: {name} is not valid JSON") from None

    def blob(self, digest: object) -> str:
        m = _DIGEST.match(digest) if isinstance(digest, str) else None
        if m is None:
            raise FlistError(f"image: digest {digest!r:.80} is not sha256:<64 hex>")
        return f"blobs/sha256/{m[1]}"

    def close(self) -> None:
        return None


class _TarImage(_ImageFiles):
    def __init__(self, outer: tarfile.TarFile) -> None:
        self.outer = outer
        self.members = {_clean(m.name): m for m in outer.getmembers() if m.isreg()}

    def exists(self, name: str) -> bool:
        return _clean(name) in self.members

    def open(self, name: str) -> IO[bytes]:
        member = self.members.get(_clean(name))
        f = self.outer.extractfile(member) if member is not None else None
        if f is None:
            raise FlistError(f"image: {name} is missing from the archive")
        return f

    def close(self) -> None:
        self.outer.close()


class _OciDir(_ImageFiles):
    def __init__(self, root: Path) -> None:
        self.root = root

    def exists(self, name: str) -> bool:
        return (self.root / name).is_file()

    def open(self, name: str) -> IO[bytes]:
        if name.startswith("/") or ".." in name.split("/"):
            raise FlistError(f"image: {name!r} escapes the layout")
        try:
            fd = os.open(self.root / name, os.O_RDONLY | os.O_NOFOLLOW)
        except OSError as e:
            raise FlistError(f"image: {name}: {e.strerror}") from None
        return os.fdopen(fd, "rb")


def image_source(files: _ImageFiles) -> Source:
    try:
        if files.exists("manifest.json"):
            layers, config = _docker_manifest(files)
        elif files.exists("index.json"):
            layers, config = _oci_index(files)
        else:
            raise FlistError("image: neither manifest.json (docker save) nor index.json (OCI)")
        src = layered_source([_opener(files, name) for name in layers], whiteouts=True)
    except BaseException:
        files.close()
        raise
    src.tags = _config_tags(config)
    src.close = files.close
    return src


def _opener(files: _ImageFiles, name: str) -> LayerOpener:
    def open_layer() -> IO[bytes]:
        f = files.open(name)
        expected = _blob_digest(name)
        return f if expected is None else _DigestReader(f, expected, name)  # type: ignore[return-value]

    return open_layer


def _blob_digest(name: str) -> str | None:
    """The sha256 a content-addressed blob path names (OCI `blobs/sha256/<hex>`)."""
    m = re.match(r"^(?:\./)?blobs/sha256/([0-9a-f]{64})$", name)
    return m[1] if m else None


class _DigestReader:
    """Reads a blob while hashing it; `finish()` reads the rest and checks the digest."""

    def __init__(self, f: IO[bytes], expected: str, name: str) -> None:
        self.f, self.expected, self.name = f, expected, name
        self.h = hashlib.sha256()

    def read(self, n: int = -1) -> bytes:
        data = self.f.read(n)
        self.h.update(data)
        return data

    def finish(self) -> None:
        while self.read(1 << 20):
            pass
        if self.h.hexdigest() != self.expected:
            raise FlistError(f"image: layer {self.name} does not match its sha256 digest")

    def seek(self, *args: int) -> int:
        raise OSError("a digest reader does not seek")

    def __enter__(self) -> _DigestReader:
        return self

    def __exit__(self, *exc: object) -> None:
        self.f.close()


def _docker_manifest(files: _ImageFiles) -> tuple[list[str], object]:
    manifest = files.json("manifest.json")
    if not isinstance(manifest, list) or not manifest or not isinstance(manifest[0], dict):
        raise FlistError("image: manifest.json must be a non-empty list of images")
    image = manifest[0]
    layers = image.get("Layers")
    if not isinstance(layers, list) or not all(isinstance(x, str) for x in layers):
        raise FlistError("image: manifest.json Layers must be a list of paths")
    config = files.json(image["Config"]) if isinstance(image.get("Config"), str) else {}
    return layers, config


def _oci_index(files: _ImageFiles) -> tuple[list[str], object]:
    doc = files.json("index.json")
    for _ in range(4):  # an index may point at a nested index (multi-platform)
        manifests = doc.get("manifests") if isinstance(doc, dict) else None
        if not isinstance(manifests, list) or not manifests:
            raise FlistError("image: index has no manifests")
        chosen = next(
            (
                m
                for m in manifests
                if isinstance(m, dict)
                and (m.get("platform") or {}).get("architecture") in (None, "amd64")
            ),
            manifests[0],
        )
        doc = files.json(files.blob(chosen.get("digest")))
        if isinstance(doc, dict) and doc.get("mediaType") not in _INDEX_TYPES and "layers" in doc:
            break
    else:
        raise FlistError("image: index nests too deeply")
    if not isinstance(doc, dict) or not isinstance(doc.get("layers"), list):
        raise FlistError("image: manifest has no layers")
    for layer in doc["layers"]:
        media = layer.get("mediaType", "") if isinstance(layer, dict) else ""
        if "zstd" in media:
            raise FlistError("image: zstd-compressed layers are not supported")
    layers = [files.blob(layer.get("digest")) for layer in doc["layers"]]
    config_ref = doc.get("config")
    config = (
        files.json(files.blob(config_ref.get("digest"))) if isinstance(config_ref, dict) else {}
    )
    return layers, config


def _config_tags(config: object) -> dict[str, str]:
    inner = config.get("config") if isinstance(config, dict) else None
    if not isinstance(inner, dict):
        return {}
    tags = {}
    for key, tag in (("Entrypoint", "entrypoint"), ("Cmd", "cmd"), ("Env", "env")):
        value = inner.get(key)
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            tags[tag] = json.dumps(value)
    for key, tag in (("WorkingDir", "workdir"), ("User", "user")):
        if isinstance(inner.get(key), str) and inner[key]:
            tags[tag] = inner[key]
    return tags
