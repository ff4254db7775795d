"""The file tree being packed: nodes, hard links shared by object, layer application.

A `Node` is one inode; a hard link is the same Node under two names. Content is not held
here: `origin` says where to read it (a path, or a tar member) when blocks are made.
"""

from __future__ import annotations

import stat
from collections.abc import Iterator
from dataclasses import dataclass, field

from zos.flist.blocks import Block
from zos.flist.errors import FlistError
from zos.flist.format import Kind, check_name


@dataclass(eq=False, slots=True)
class Node:
    kind: Kind
    mode: int  # full st_mode
    uid: int = 0
    gid: int = 0
    mtime: int = 0
    ctime: int = 0
    size: int = 0
    target: str | None = None  # symlink target
    origin: object = None  # where the content is read from
    blocks: list[Block] = field(default_factory=list)
    children: dict[str, Node] = field(default_factory=dict)  # directories only


def new_dir(mode: int = 0o755) -> Node:
    return Node("dir", stat.S_IFDIR | mode)


def split(path: str, where: str) -> list[str]:
    """Components of a relative path; '..' and absolute escapes are refused."""
    parts = [p for p in path.split("/") if p not in ("", ".")]
    for p in parts:
        check_name(p, where)
    return parts


class Tree:
    def __init__(self, root: Node | None = None) -> None:
        self.root = root or new_dir()

    def lookup(self, parts: list[str]) -> Node | None:
        node = self.root
        for p in parts:
            if node.kind != "dir" or p not in node.children:
                return None
            node = node.children[p]
        return node

    def parent_dir(self, parts: list[str], where: str) -> Node:
        """The directory that holds `parts[-1]`, creating missing parents as 0755 dirs."""
        node = self.root
        for p in parts[:-1]:
            child = node.children.get(p)
            if child is None:
                child = node.children[p] = new_dir()
            elif child.kind != "dir":
                raise FlistError(f"{where}: parent {p!r} is a {child.kind}, not a directory")
            node = child
        return node

    def put(self, parts: list[str], node: Node, where: str) -> None:
        if not parts:  # the root itself: keep its children, take its metadata
            if node.kind != "dir":
                raise FlistError(f"{where}: the root must be a directory")
            node.children = self.root.children
            self.root = node
            return
        parent = self.parent_dir(parts, where)
        old = parent.children.get(parts[-1])
        if old is not None and old.kind == "dir" and node.kind == "dir":
            node.children = old.children  # a directory entry updates metadata, keeps content
        parent.children[parts[-1]] = node

    def remove(self, parts: list[str]) -> None:
        if not parts:
            self.root.children.clear()
            return
        parent = self.lookup(parts[:-1])
        if parent is not None and parent.kind == "dir":
            parent.children.pop(parts[-1], None)

    def walk(self) -> Iterator[tuple[str, Node, Node | None, str]]:
        """(path, node, parent, name) for every name, parents before children."""
        yield "", self.root, None, ""
        queue: list[tuple[str, Node]] = [("", self.root)]
        while queue:
            path, directory = queue.pop(0)
            for name in sorted(directory.children):
                child = directory.children[name]
                child_path = f"{path}/{name}" if path else name
                yield child_path, child, directory, name
                if child.kind == "dir":
                    queue.append((child_path, child))

    def files(self) -> list[Node]:
        """Each regular-file inode once (hard links share one)."""
        seen: dict[int, Node] = {}
        for _, node, _, _ in self.walk():
            if node.kind == "file":
                seen.setdefault(id(node), node)
        return list(seen.values())
