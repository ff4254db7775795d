"""Manifests with mistakes are refused before anything is sent, naming the line and rule."""

from __future__ import annotations

from pathlib import Path

import pytest

from zos.client.manifest import ManifestError, load_manifest, parse_manifest

GOOD = """\
name: hello
node: 1
network: {name: hellonet, subnet: 10.20.1.0/24}
disks:
  - {name: data, size: 64M}
machines:
  - name: web
    flist: http://hub.example/flists/7/web.fl
    cpu: 1
    memory: 256M
    entrypoint: /bin/httpd -f -p 8080
    env: {GREETING: hi}
    mounts:
      - {disk: data, mountpoint: /data}
    ports: [8080]
"""


def refused(text: str) -> ManifestError:
    with pytest.raises(ManifestError) as info:
        parse_manifest(text, "app.yaml")
    return info.value


def test_good_manifest() -> None:
    m = parse_manifest(GOOD, "app.yaml")
    assert m.name == "hello" and m.node == 1 and m.network_name == "hellonet"
    assert m.disks[0].size == 64 << 20
    web = m.machines[0]
    assert web.memory == 256 << 20 and web.ports == [8080] and web.mounts[0].disk == "data"
    assert m.source_line("machines", 0, "memory") == "app.yaml:10"


def test_unknown_key_names_its_line_and_the_known_keys() -> None:
    e = refused(GOOD.replace("    cpu: 1\n", "    cpus: 1\n"))
    assert e.where == "app.yaml:9"
    assert "machines[0].cpus: unknown key 'cpus'" in str(e) and "known: name, flist" in str(e)
    assert "app.yaml:1: foo: unknown key 'foo'" in str(refused("foo: 1\n" + GOOD))


def test_missing_flist() -> None:
    e = refused(GOOD.replace("    flist: http://hub.example/flists/7/web.fl\n", ""))
    assert e.where == "app.yaml:7"
    assert "machines[0]: needs exactly one of `flist`" in str(e)
    e = refused(GOOD.replace("http://hub.example/flists/7/web.fl", "web.fl"))
    assert "must be an http(s) URL" in str(e)


def test_missing_image_path(tmp_path: Path) -> None:
    path = tmp_path / "app.yaml"
    path.write_text(GOOD.replace("flist: http://hub.example/flists/7/web.fl", "image: ./nothere"))
    with pytest.raises(ManifestError) as info:
        load_manifest(path)
    assert str(info.value) == (
        f"{path}:8: machines[0].image: {tmp_path / 'nothere'} does not exist"
    )


def test_images_stay_inside_the_manifest_directory(tmp_path: Path) -> None:
    # Issue 12, finding 6: `image: ../../keys` packed the key files and published them on
    # the public hub. A manifest's images resolve inside its own directory.
    (tmp_path / "keys").mkdir()
    (tmp_path / "keys" / "key.json").write_text("{}")
    app_dir = tmp_path / "apps" / "one"
    (app_dir / "rootfs").mkdir(parents=True)
    (app_dir / "out").symlink_to(tmp_path / "keys")
    (app_dir / "inside").symlink_to(app_dir / "rootfs")
    path = app_dir / "app.yaml"
    cases = {
        "../../keys": "'../../keys' leaves the manifest's directory ('..')",
        "rootfs/../../../keys": "'rootfs/../../../keys' leaves the manifest's directory",
        str(tmp_path / "keys"): "is an absolute path; a manifest names images inside its own",
        "~/.config/zos": "is an absolute path",
        "out": "'out' is a symlink out of the manifest's directory",
    }
    for image, why in cases.items():
        path.write_text(
            GOOD.replace("flist: http://hub.example/flists/7/web.fl", f"image: {image}")
        )
        with pytest.raises(ManifestError) as info:
            load_manifest(path)
        assert info.value.where == f"{path}:8", image
        assert "machines[0].image: " in str(info.value) and why in str(info.value), image
    for image in ("rootfs", "./inside"):
        path.write_text(
            GOOD.replace("flist: http://hub.example/flists/7/web.fl", f"image: {image}")
        )
        m = load_manifest(path)
        assert m.image_path(m.machines[0]).resolve() == (app_dir / "rootfs").resolve()
    # An image given on the command line may be anywhere: the user named it.
    m = load_manifest(path, {"web": tmp_path / "keys"})
    assert m.image_path(m.machines[0]) == tmp_path / "keys"
    with pytest.raises(ManifestError, match=r"--image db=\.\.\.: no machine named 'db'"):
        load_manifest(path, {"db": tmp_path / "keys"})


def test_memory_too_small_or_not_a_size() -> None:
    e = refused(GOOD.replace("memory: 256M", "memory: 100M"))
    assert str(e) == (
        "app.yaml:10: machines[0].memory: at least 250M is needed, got 104857600 bytes"
    )
    e = refused(GOOD.replace("memory: 256M", "memory: lots"))
    assert e.where == "app.yaml:10" and "'lots' is not a size" in str(e)


@pytest.mark.parametrize(
    ("mount", "line", "why"),
    [
        ("{disk: nope, mountpoint: /data}", 14, "no disk named 'nope' (disks: data)"),
        ("{disk: data, mountpoint: /proc/x}", 14, "/proc/x is part of the system"),
        ("{disk: data, mountpoint: data}", 14, "must be an absolute path"),
        ("{disk: data, mountpoint: /a/../../etc}", 14, "without '..'"),
        ("{disk: data}", 14, "mountpoint: is missing"),
    ],
)
def test_bad_mount(mount: str, line: int, why: str) -> None:
    e = refused(GOOD.replace("{disk: data, mountpoint: /data}", mount))
    assert e.where == f"app.yaml:{line}", str(e)
    assert why in str(e)


def test_other_mistakes() -> None:
    assert "app.yaml:1: name:" in str(refused(GOOD.replace("name: hello", "name: Hello World")))
    e = refused(GOOD.replace("node: 1", "node: 1\nnode: 2"))
    assert str(e) == "app.yaml:3: 'node' is given twice"
    e = refused(GOOD.replace("ports: [8080]", "ports: [80800]"))
    assert e.where == "app.yaml:15" and "80800 is not a port" in str(e)
    e = refused(GOOD.replace("10.20.1.0/24", "10.99.1.0/24"))
    assert "network.subnet: 10.99.1.0/24 is not inside ip_range 10.20.0.0/16" in str(e)
    e = refused("name: x\nmachines: [\n")
    assert e.where.startswith("app.yaml:") and "not valid YAML" in str(e)
    assert "must be a mapping" in str(refused("- a\n"))
    e = refused(GOOD.replace("  - {name: data, size: 64M}", "  - {name: web, size: 64M}"))
    assert "'web' is used twice" in str(e)


def test_hostile_yaml_is_refused_quickly() -> None:
    laughs = "a: &a [x, x, x, x, x, x, x, x, x]\n" + "".join(
        f"{c}: &{c} [*{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}, *{p}]\n"
        for p, c in zip("abcdefgh", "bcdefghi", strict=True)
    )
    e = refused(laughs + "name: x\nmachines: []\n")
    assert "anchors and aliases (&, *) are not supported" in str(e) and e.where == "app.yaml:1"
    assert "nested too deeply" in str(refused("a: " + "[" * 5000 + "]" * 5000 + "\n"))
    assert "larger than 1048576 bytes" in str(refused("#" * (2 << 20)))
