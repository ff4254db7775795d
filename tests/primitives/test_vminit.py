"""What the host tells the light VM's init: settings sourced by a shell, hostile values
staying values; the kernel command line; bad settings refused naming the field."""

from __future__ import annotations

import subprocess
from ipaddress import IPv4Address, IPv4Interface, IPv4Network
from pathlib import Path

import pytest

from zos.primitives import vminit

HOSTILE = [
    "it's",
    '"double" $(touch /tmp/pwned-zos) `touch /tmp/pwned-zos`',
    "a\nnew line; rm -rf /",
    "--",
    "",
    "\\ back slash \\'",
    "ünï©ødé ${PATH}",
]


def _source(tmp_path: Path, text: str) -> list[str]:
    """Source `text` as the init does (its functions stubbed to print their arguments) and
    return what came out, one entry per printed argument."""
    (tmp_path / "config").write_text(text)
    script = r"""
set -f
show() { for a in "$@"; do printf '%s\0' "$a"; done; }
zos_hostname() { show hostname "$@"; }
zos_mount() { show mount "$@"; }
zos_file() { show file "$@"; }
zos_cwd() { show cwd "$@"; }
set --
. ./config
show "$@"
"""
    out = subprocess.run(
        ["busybox", "sh", "-c", script], cwd=tmp_path, capture_output=True, check=True
    ).stdout
    return out.decode().split("\0")[:-1]


def test_settings_round_trip_through_a_shell_unchanged(tmp_path: Path) -> None:
    cfg = vminit.GuestConfig(
        hostname="web_1",
        entrypoint=["/bin/prog", *HOSTILE],
        env={"A": HOSTILE[1], "B": HOSTILE[2], "EMPTY": ""},
        mounts=[vminit.Mount("blk", "vol-1", "/data/my dir"), vminit.Mount("9p", "share0", "/s")],
        files={"/etc/hosts": "127.0.0.1 localhost\n$(x) 'y'\n"},
        cwd="/srv/my app/$(id)",
    )
    got = _source(tmp_path, cfg.render())
    expected = ["hostname", "web_1"]
    expected += ["mount", "blk", "vol-1", "/data/my dir", "ext4"]
    expected += ["mount", "9p", "share0", "/s", "ext4"]
    expected += ["file", "/etc/hosts", "127.0.0.1 localhost\n$(x) 'y'\n"]
    expected += ["cwd", "/srv/my app/$(id)"]
    expected += [f"PATH={vminit.DEFAULT_PATH}", "HOSTNAME=web_1"]
    expected += [f"A={HOSTILE[1]}", f"B={HOSTILE[2]}", "EMPTY="]
    expected += ["--", "/bin/prog", *HOSTILE]
    assert got == expected
    assert not Path("/tmp/pwned-zos").exists()


def test_the_env_can_override_path_and_hostname(tmp_path: Path) -> None:
    cfg = vminit.GuestConfig("h", ["x"], env={"PATH": "/opt/bin", "HOSTNAME": "other"})
    got = _source(tmp_path, cfg.render())
    assert got[got.index("--") - 2 : got.index("--")] == ["PATH=/opt/bin", "HOSTNAME=other"]


@pytest.mark.parametrize(
    ("cfg", "message"),
    [
        (vminit.GuestConfig("bad host", ["x"]), "hostname"),
        (vminit.GuestConfig("h", []), "entrypoint: empty"),
        (vminit.GuestConfig("h", ["x\0y"]), "entrypoint: may not contain a NUL"),
        (vminit.GuestConfig("h", ["x"], env={"A-B": "1"}), "env: invalid variable name 'A-B'"),
        (vminit.GuestConfig("h", ["x"], env={"1A": "1"}), "env: invalid variable name"),
        (vminit.GuestConfig("h", ["x"], env={"A": "\0"}), "env A: may not contain a NUL"),
        (vminit.GuestConfig("h", ["x"], mounts=[vminit.Mount("blk", "v", "data")]), "absolute"),
        (vminit.GuestConfig("h", ["x"], mounts=[vminit.Mount("blk", "v", "/a/../b")]), "'..'"),
        (vminit.GuestConfig("h", ["x"], mounts=[vminit.Mount("blk", "v", "/")]), "mount target"),
        (vminit.GuestConfig("h", ["x"], mounts=[vminit.Mount("blk", "a;b", "/d")]), "serial"),
        (vminit.GuestConfig("h", ["x"], mounts=[vminit.Mount("nfs", "a", "/d")]), "kind"),
        (vminit.GuestConfig("h", ["x"], files={"etc/hosts": ""}), "file"),
        (vminit.GuestConfig("h", ["x"], cwd="srv"), "cwd: 'srv' must be an absolute path"),
        (vminit.GuestConfig("h", ["x"], cwd="/srv/../.."), "cwd"),
        (vminit.GuestConfig("h", ["x"], cwd="/a\nb"), "cwd"),
    ],
)
def test_bad_settings_are_refused_naming_the_field(cfg: vminit.GuestConfig, message: str) -> None:
    with pytest.raises(vminit.GuestConfigError, match=message):
        cfg.render()


def test_the_kernel_command_line_carries_root_and_network() -> None:
    nic = vminit.Interface(
        name="eth0",
        mac="02:AA:bb:cc:dd:ee",
        address=IPv4Interface("10.1.2.3/24"),
        gateway=IPv4Address("10.1.2.1"),
        routes=[(IPv4Network("100.64.0.0/16"), IPv4Address("10.1.2.1"))],
        dns=[IPv4Address("10.1.2.1"), IPv4Address("1.1.1.1"), IPv4Address("8.8.8.8")],
    )
    args = vminit.kernel_cmdline([nic]).split()
    assert args[: len(vminit.DEFAULT_ARGS)] == list(vminit.DEFAULT_ARGS)
    assert "root=root" in args and "rootfstype=9p" in args
    assert "ifname=eth0:02:aa:bb:cc:dd:ee" in args
    assert "ip=10.1.2.3::10.1.2.1:255.255.255.0::eth0:off:10.1.2.1:1.1.1.1" in args
    assert "rd.route=100.64.0.0/16:10.1.2.1:eth0" in args
    assert vminit.PROBE_ARG in vminit.probe_cmdline().split()
