"""Container image archives (OCI layout and docker save) written by hand in the test:
two layers, a whiteout, an opaque dir, a hard link across layers; config kept as tags."""

from __future__ import annotations

import gzip
import hashlib
import io
import json
import os
import tarfile
from pathlib import Path

import pytest

from zos.cli import main
from zos.flist import Router, pack, read_flist, unpack_flist

CONFIG = {
    "architecture": "amd64",
    "os": "linux",
    "config": {
        "Entrypoint": ["/usr/bin/tool"],
        "Cmd": ["--help"],
        "Env": ["PATH=/usr/bin:/bin", "GREETING=hello world"],
        "WorkingDir": "/opt",
    },
    "rootfs": {"type": "layers", "diff_ids": []},
}


def _tar(entries: list[tuple]) -> bytes:
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tf:
        for kind, name, *rest in entries:
            info = tarfile.TarInfo(name)
            info.mtime = 1_600_000_000
            if kind == "dir":
                info.type, info.mode = tarfile.DIRTYPE, 0o755
                tf.addfile(info)
            elif kind == "file":
                data, mode = rest[0], (rest[1] if len(rest) > 1 else 0o644)
                info.size, info.mode = len(data), mode
                tf.addfile(info, io.BytesIO(data))
            elif kind == "sym":
                info.type, info.linkname, info.mode = tarfile.SYMTYPE, rest[0], 0o777
                tf.addfile(info)
            elif kind == "hard":
                info.type, info.linkname, info.mode = tarfile.LNKTYPE, rest[0], 0o755
                tf.addfile(info)
    return buf.getvalue()


OLD_TOOL = b"#!/bin/sh\necho old\n" + os.urandom(600_000)
NEW_TOOL = b"#!/bin/sh\necho new\n"
LAYER1 = _tar(
    [
        ("dir", "etc/"),
        ("file", "etc/passwd", b"root:x:0:0::/root:/bin/sh\n"),
        ("dir", "usr/"),
        ("dir", "usr/bin/"),
        ("file", "usr/bin/tool", OLD_TOOL, 0o755),
        ("dir", "bin/"),
        ("hard", "bin/tool-link", "usr/bin/tool"),
        ("sym", "bin/sh", "/usr/bin/tool"),
        ("dir", "opt/"),
        ("dir", "opt/old/"),
        ("file", "opt/old/a", b"a"),
        ("file", "opt/old/b", b"b"),
        ("dir", "var/"),
        ("dir", "var/cache/"),
        ("file", "var/cache/x", b"cached"),
    ]
)
LAYER2 = _tar(
    [
        ("file", "var/cache/.wh.x", b""),
        ("dir", "opt/old/"),
        ("file", "opt/old/.wh..wh..opq", b""),
        ("file", "opt/old/c", b"c"),
        ("file", "etc/hostname", b"box\n"),
        ("file", "usr/bin/tool", NEW_TOOL, 0o755),
    ]
)


def _add(tf: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tf.addfile(info, io.BytesIO(data))


def write_oci(path: Path, tamper: bool = False) -> None:
    blobs: dict[str, bytes] = {}

    def blob(data: bytes) -> dict:
        digest = hashlib.sha256(data).hexdigest()
        blobs[digest] = data
        return {"digest": f"sha256:{digest}", "size": len(data)}

    layer2 = gzip.compress(LAYER2)
    manifest = {
        "schemaVersion": 2,
        "mediaType": "application/vnd.oci.image.manifest.v1+json",
        "config": {
            "mediaType": "application/vnd.oci.image.config.v1+json",
            **blob(json.dumps(CONFIG).encode()),
        },
        "layers": [
            {"mediaType": "application/vnd.oci.image.layer.v1.tar", **blob(LAYER1)},
            {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", **blob(layer2)},
        ],
    }
    ref = blob(json.dumps(manifest).encode())
    index = {
        "schemaVersion": 2,
        "manifests": [{"mediaType": "application/vnd.oci.image.manifest.v1+json", **ref}],
    }
    with tarfile.open(path, "w") as tf:
        _add(tf, "oci-layout", b'{"imageLayoutVersion": "1.0.0"}')
        _add(tf, "index.json", json.dumps(index).encode())
        for digest, data in blobs.items():
            if tamper and data == LAYER1:
                data = data.replace(b"root:x:0:0", b"root::0:0:")  # same size, other bytes
            _add(tf, f"blobs/sha256/{digest}", data)


def write_docker_save(path: Path) -> None:
    config = json.dumps(CONFIG).encode()
    config_name = hashlib.sha256(config).hexdigest() + ".json"
    manifest = [
        {
            "Config": config_name,
            "RepoTags": ["test:latest"],
            "Layers": ["l1/layer.tar", "l2/layer.tar"],
        }
    ]
    with tarfile.open(path, "w") as tf:
        _add(tf, "manifest.json", json.dumps(manifest).encode())
        _add(tf, config_name, config)
        _add(tf, "l1/layer.tar", LAYER1)
        _add(tf, "l2/layer.tar", LAYER2)


def check_tree(out: Path) -> None:
    files = sorted(str(p.relative_to(out)) for p in out.rglob("*"))
    assert files == [
        "bin",
        "bin/sh",
        "bin/tool-link",
        "etc",
        "etc/hostname",
        "etc/passwd",
        "opt",
        "opt/old",
        "opt/old/c",
        "usr",
        "usr/bin",
        "usr/bin/tool",
        "var",
        "var/cache",
    ]
    assert (out / "usr/bin/tool").read_bytes() == NEW_TOOL
    # the lower layer's hard link keeps the file it linked, as overlay layers do
    assert (out / "bin/tool-link").read_bytes() == OLD_TOOL
    assert os.readlink(out / "bin/sh") == "/usr/bin/tool"
    assert (out / "usr/bin/tool").stat().st_mode & 0o777 == 0o755


def check_tags(tags: dict[str, str]) -> None:
    assert json.loads(tags["entrypoint"]) == ["/usr/bin/tool"]
    assert json.loads(tags["cmd"]) == ["--help"]
    assert json.loads(tags["env"]) == ["PATH=/usr/bin:/bin", "GREETING=hello world"]
    assert tags["workdir"] == "/opt"


@pytest.mark.parametrize("writer", [write_oci, write_docker_save], ids=["oci", "docker-save"])
async def test_image_archive_layers_and_tags(tmp_path: Path, writer) -> None:
    archive = tmp_path / "image.tar"
    writer(archive)
    router = Router.parse([f"dir://{tmp_path / 'store'}"])
    result = await pack(archive, tmp_path / "img.fl", router)
    await router.close()
    check_tags(result.tags)
    flist = read_flist(tmp_path / "img.fl")
    check_tags(flist.tags)
    await unpack_flist(tmp_path / "img.fl", tmp_path / "out")
    check_tree(tmp_path / "out")


def test_oci_layout_directory_via_cli(tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    write_oci(archive)
    layout = tmp_path / "layout"
    layout.mkdir()
    with tarfile.open(archive) as tf:
        tf.extractall(layout, filter="data")
    fl, store = tmp_path / "img.fl", tmp_path / "store"
    args = ["flist", "pack", str(layout), "--format", "image", "-o", str(fl)]
    assert main([*args, "--store", f"dir://{store}"]) == 0
    assert main(["flist", "unpack", str(fl), str(tmp_path / "out")]) == 0
    check_tree(tmp_path / "out")


async def test_layer_escaping_the_tree_is_refused(tmp_path: Path) -> None:
    evil = _tar([("file", "../../escape", b"x")])
    archive = tmp_path / "evil.tar"
    with tarfile.open(archive, "w") as tf:
        _add(tf, "manifest.json", json.dumps([{"Layers": ["l/layer.tar"]}]).encode())
        _add(tf, "l/layer.tar", evil)
    router = Router.parse([f"dir://{tmp_path / 'store'}"])
    with pytest.raises(ValueError, match=r"'\.\.' is not allowed"):
        await pack(archive, tmp_path / "evil.fl", router)
    await router.close()
    assert not (tmp_path / "evil.fl").exists()


async def test_oci_layer_not_matching_its_digest_is_refused(tmp_path: Path) -> None:
    archive = tmp_path / "image.tar"
    write_oci(archive, tamper=True)
    router = Router.parse([f"dir://{tmp_path / 'store'}"])
    with pytest.raises(ValueError, match="does not match its sha256 digest"):
        await pack(archive, tmp_path / "img.fl", router)
    await router.close()
    assert not (tmp_path / "img.fl").exists()
