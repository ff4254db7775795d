"""The NoCloud disk's files as zos writes them, and the disk itself (FAT, label cidata)."""

from __future__ import annotations

from ipaddress import IPv4Address, IPv4Interface, IPv6Address, IPv6Interface
from pathlib import Path

import pytest
import yaml

from zos.primitives import cloudinit
from zos.primitives.command import run

KEY = 'ssh-ed25519 AAAAC3Nza x@y: "quoted" #not-a-comment'


def _config(**kw: object) -> cloudinit.NoCloud:
    fields: dict[str, object] = {
        "instance_id": "12-34-vm",
        "hostname": "vm1",
        "ethernets": [
            cloudinit.Ethernet(
                "eth0",
                "10:11:22:33:44:55",  # all digits: YAML 1.1 would read it as a number
                [IPv4Interface("10.20.2.5/24"), IPv6Interface("fd00::5/64")],
                IPv4Address("10.20.2.1"),
                IPv6Address("fd00::1"),
                [("10.20.0.0/16", IPv4Address("10.20.2.1"))],
            ),
            cloudinit.Ethernet("eth1", "02:00:00:00:00:02", [IPv4Interface("192.168.9.3/24")]),
        ],
        "nameservers": [IPv4Address("1.1.1.1")],
        "ssh_keys": cloudinit.ssh_keys_from_env(f"{KEY}\nssh-rsa BBB k2, ssh-rsa CCC k3\n"),
        "mounts": [cloudinit.Mount("/dev/vdb", "/data")],
    }
    fields.update(kw)
    return cloudinit.NoCloud(**fields)  # type: ignore[arg-type]


def test_files_are_as_zos_writes_them() -> None:
    files = _config().files()
    assert set(files) == {"meta-data", "network-config", "user-data"}
    assert all(text.startswith("#cloud-config\n") for text in files.values())
    meta = yaml.safe_load(files["meta-data"])
    assert meta == {"instance-id": "12-34-vm", "local-hostname": "vm1"}
    net = yaml.safe_load(files["network-config"])
    assert net["version"] == 2
    eth0, eth1 = net["ethernets"]["eth0"], net["ethernets"]["eth1"]
    assert eth0["match"] == {"macaddress": "10:11:22:33:44:55"}
    assert eth0["dhcp4"] is False
    assert eth0["addresses"] == ["10.20.2.5/24", "fd00::5/64"]
    assert eth0["gateway4"] == "10.20.2.1" and eth0["gateway6"] == "fd00::1"
    assert eth0["routes"] == [{"to": "10.20.0.0/16", "via": "10.20.2.1"}]
    assert eth0["nameservers"] == {"addresses": ["1.1.1.1"]}  # DNS on the first NIC only
    assert "nameservers" not in eth1 and "gateway4" not in eth1
    user = yaml.safe_load(files["user-data"])
    assert user["users"] == [
        {"name": "root", "ssh_authorized_keys": [KEY, "ssh-rsa BBB k2", "ssh-rsa CCC k3"]}
    ]
    assert user["mounts"] == [["/dev/vdb", "/data", "auto", "defaults", "0", "0"]]


def test_no_keys_no_users() -> None:
    user = yaml.safe_load(_config(ssh_keys=[]).files()["user-data"])
    assert user == {"users": [], "mounts": [["/dev/vdb", "/data", "auto", "defaults", "0", "0"]]}


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"hostname": "a b"}, "hostname"),
        ({"hostname": "x\nlocal-hostname: evil"}, "hostname"),
        ({"instance_id": ""}, "instance-id"),
        ({"ssh_keys": ["k1\nk2"]}, "ssh key"),
        ({"ethernets": [cloudinit.Ethernet("eth0", "zz:00:00:00:00:00")]}, "MAC"),
        ({"ethernets": [cloudinit.Ethernet("e", "02:00:00:00:00:01", routes=[("x", 1)])]}, "route"),
        ({"mounts": [cloudinit.Mount("/dev/vdb", "data")]}, "absolute"),
        ({"mounts": [cloudinit.Mount("/dev/vdb", "/a b")]}, "mount"),
    ],
)
def test_bad_values_are_refused_naming_the_field(change: dict[str, object], message: str) -> None:
    with pytest.raises(cloudinit.CloudInitError, match=message):
        _config(**change).files()


async def test_the_disk_is_fat_labelled_cidata_with_the_files(tmp_path: Path) -> None:
    cfg = _config()
    disk = await cloudinit.write_disk(cfg, tmp_path / "seed" / "cidata.img")
    assert (await run("blkid", "-p", "-o", "value", "-s", "TYPE", str(disk))).strip() == "vfat"
    assert (await run("blkid", "-p", "-o", "value", "-s", "LABEL", str(disk))).strip() == "cidata"
    for name, text in cfg.files().items():
        assert await run("mtype", "-i", str(disk), f"::/{name}") == text
    assert [p.name for p in disk.parent.iterdir()] == ["cidata.img"]  # no temporary left
    # Written again (an update): replaced whole.
    await cloudinit.write_disk(_config(hostname="vm2"), disk)
    assert "local-hostname: vm2" in await run("mtype", "-i", str(disk), "::/meta-data")
