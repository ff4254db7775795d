"""`zos node run` settings from flags and environment: the flist cache, block stores and
namespace prefix reach the agent's Settings, and a bad value is one clear error."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from zos.cli import CliError, build_parser
from zos.cli.node import settings_from_args
from zos.node.agent import CACHE_CAP, Settings, default_cache_size

BASE = ["node", "run", "--farm-id", "3", "--nats", "nats://127.0.0.1:4222"]


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch) -> None:
    for name in (
        "ZOS_CACHE_SIZE",
        "ZOS_STORES",
        "ZOS_NETNS_PREFIX",
        "ZOS_DATA_DIR",
        "ZOS_JOIN_TOKEN",
        "ZOS_JOIN_TOKEN_FILE",
    ):
        monkeypatch.delenv(name, raising=False)


def settings(tmp_path: Path, *args: str) -> Settings:
    parsed = build_parser().parse_args([*BASE, "--data-dir", str(tmp_path), *args])
    return settings_from_args(parsed)


def test_defaults(tmp_path: Path) -> None:
    s = settings(tmp_path)
    assert (s.cache_size, s.stores, s.netns_prefix) == (None, [], "")
    assert 0 < default_cache_size(tmp_path) <= CACHE_CAP


def test_flags(tmp_path: Path) -> None:
    s = settings(
        tmp_path,
        "--cache-size",
        "512M",
        "--store",
        f"dir://{tmp_path}/a",
        "--store",
        "00-7f=http://hub.example:8080",
        "--netns-prefix",
        "g1-n2-",
    )
    assert s.cache_size == 512 << 20
    assert s.stores == [f"dir://{tmp_path}/a", "00-7f=http://hub.example:8080"]
    assert s.netns_prefix == "g1-n2-"


def test_gateway_flags(tmp_path: Path) -> None:
    from zos.primitives.proxy import LETS_ENCRYPT

    assert settings(tmp_path).acme_url == LETS_ENCRYPT
    ca = tmp_path / "ca.pem"
    ca.write_text("-----BEGIN CERTIFICATE-----\n")
    s = settings(
        tmp_path,
        "--acme-url",
        "https://10.0.0.1:14000/dir",
        "--acme-ca",
        str(ca),
    )
    assert (s.acme_url, s.acme_ca) == ("https://10.0.0.1:14000/dir", ca)


def test_environment(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ZOS_CACHE_SIZE", "2G")
    monkeypatch.setenv("ZOS_STORES", "dir:///srv/a, zdb://10.0.0.1:9900/blocks")
    monkeypatch.setenv("ZOS_NETNS_PREFIX", "n7-")
    s = settings(tmp_path)
    assert (s.cache_size, s.netns_prefix) == (2 << 30, "n7-")
    assert s.stores == ["dir:///srv/a", "zdb://10.0.0.1:9900/blocks"]
    # a flag wins over the environment
    assert settings(tmp_path, "--store", "dir:///x").stores == ["dir:///x"]


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--store", "ftp://x"], "--store: ftp://x: unknown store type"),
        (["--store", "dir://"], "--store: dir://: dir:// needs a path"),
        (["--netns-prefix", "a/b"], "--netns-prefix: at most 16"),
        (["--netns-prefix", "x" * 17], "--netns-prefix: at most 16"),
        (["--cache-size", "big"], "--cache-size: not a size: 'big'"),
        (["--acme-url", "http://ca.example/dir"], "--acme-url 'http://ca.example/dir': an https"),
        (["--acme-ca", "/nonexistent/ca.pem"], "--acme-ca /nonexistent/ca.pem: no such file"),
    ],
)
def test_bad_values(tmp_path: Path, args: list[str], message: str) -> None:
    with pytest.raises(CliError, match="^" + re.escape(message)):
        settings(tmp_path, *args)


def test_the_join_token_never_comes_from_the_command_line(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Issue 12, finding 11: the farm join token was in the node agents' argv, which every
    # user of the machine reads in /proc/<pid>/cmdline. It comes from the environment or
    # a file now; the flag is refused with the reason.
    with pytest.raises(CliError, match="--join-token: a token on the command line is readable"):
        settings(tmp_path, "--join-token", "abc")
    token = tmp_path / "token"
    token.write_text("tok-from-file\n")
    token.chmod(0o600)
    assert settings(tmp_path, "--join-token-file", str(token)).join_token == "tok-from-file"
    token.chmod(0o644)
    with pytest.raises(CliError, match="readable by every user; chmod 600 it"):
        settings(tmp_path, "--join-token-file", str(token))
    monkeypatch.setenv("ZOS_JOIN_TOKEN", "tok-from-env")
    assert settings(tmp_path).join_token == "tok-from-env"
    with pytest.raises(CliError, match="No such file"):
        settings(tmp_path, "--join-token-file", str(tmp_path / "missing"))
