"""Flists: rfs `.fl` metadata plus encrypted, content-addressed blocks.

pack a directory, tar or container image; read and check an `.fl`; unpack it; block
stores (dir, http hub, zdb) with routes; the node-wide verified cache (`zos.flist.cache`).
"""

from zos.flist.blocks import BLOCK_SIZE, Block, decrypt_block, encrypt_block
from zos.flist.errors import BlockError, FlistError, StoreError
from zos.flist.format import Entry, Flist, FlistWriter, Route, read_flist
from zos.flist.ops import download_flist, open_flist, router_for, unpack_flist
from zos.flist.pack import PackResult, pack
from zos.flist.stores import DirStore, HttpStore, HubSigner, Router, ZdbStore, make_store
from zos.flist.unpack import UnpackResult, unpack

__all__ = [
    "BLOCK_SIZE",
    "Block",
    "BlockError",
    "DirStore",
    "Entry",
    "Flist",
    "FlistError",
    "FlistWriter",
    "HttpStore",
    "HubSigner",
    "PackResult",
    "Route",
    "Router",
    "StoreError",
    "UnpackResult",
    "ZdbStore",
    "decrypt_block",
    "download_flist",
    "encrypt_block",
    "make_store",
    "open_flist",
    "pack",
    "read_flist",
    "router_for",
    "unpack",
    "unpack_flist",
]
