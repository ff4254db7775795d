"""The small authoritative DNS server: its zones, the ACME hook's TXT values, delegation."""

from __future__ import annotations

import asyncio
import socket
import subprocess
import sys
from collections.abc import AsyncIterator
from pathlib import Path

import dns.message
import dns.query
import dns.rcode
import pytest

from zos.primitives import dns as zdns
from zos.primitives import dnsprocess
from zos.primitives.nodedns import acme_zone

ZONE = "_acme-challenge.gw.example.test"
TOKEN = "n3Kk1dQ0m5pS8Q2p4J8h2O1cV7yR1xX0aW9bN6mC2eE"  # 43 base64url characters, as ACME's


@pytest.fixture
async def servers(tmp_path: Path) -> AsyncIterator[tuple[zdns.DnsServer, zdns.DnsServer, Path]]:
    """The node's server (challenge records) and a world server that delegates to it."""
    records = tmp_path / "records"
    node = await zdns.DnsServer(zdns.Authority((ZONE,), records=records)).start("127.0.0.1", 0)
    world = zdns.Authority(
        ("example.test",),
        {"app.example.test": ("10.1.0.2",), "*.gw.example.test": ("10.1.0.3", "fd00::3")},
        delegations={ZONE: node.address},
    )
    outer = await zdns.DnsServer(world).start("127.0.0.1", 0)
    try:
        yield node, outer, records
    finally:
        await outer.stop()
        await node.stop()


async def ask(server: zdns.DnsServer, name: str, rdtype: str) -> dns.message.Message:
    return await asyncio.to_thread(zdns.query, *server.address, name, rdtype)


def texts(reply: dns.message.Message) -> list[str]:
    return sorted(rd.to_text() for rrset in reply.answer for rd in rrset)


async def test_names_wildcards_and_what_is_not_ours(servers) -> None:
    _, world, _ = servers
    assert texts(await ask(world, "app.example.test", "A")) == ["10.1.0.2"]
    assert texts(await ask(world, "hello.gw.example.test", "A")) == ["10.1.0.3"]
    assert texts(await ask(world, "a.b.gw.example.test", "AAAA")) == ["fd00::3"]
    reply = await ask(world, "app.example.test", "AAAA")  # the name exists, not the type
    assert reply.rcode() == dns.rcode.NOERROR and not reply.answer
    assert reply.authority[0].rdtype == dns.rdatatype.SOA
    reply = await ask(world, "nobody.example.test", "A")
    assert reply.rcode() == dns.rcode.NXDOMAIN and reply.authority
    assert (await ask(world, "example.com", "A")).rcode() == dns.rcode.REFUSED
    # Over TCP as well (what a client falls back to after a truncated answer).
    q = dns.message.make_query("app.example.test", "A")
    reply = await asyncio.to_thread(dns.query.tcp, q, world.address[0], 2, world.address[1])
    assert texts(reply) == ["10.1.0.2"]


async def test_challenge_values_are_served_as_written_and_relayed(servers) -> None:
    node, world, records = servers
    challenge = zdns.ChallengeRecords(records)
    assert (await ask(node, ZONE, "TXT")).answer == []
    challenge.present(ZONE + ".", TOKEN)
    challenge.present(ZONE, TOKEN[::-1])  # *.d and d are validated at the same name
    assert texts(await ask(node, ZONE, "TXT")) == sorted([f'"{TOKEN}"', f'"{TOKEN[::-1]}"'])
    # The world's server has no record of its own there: it relays the node's answer.
    assert texts(await ask(world, ZONE, "TXT")) == texts(await ask(node, ZONE, "TXT"))
    challenge.cleanup(ZONE, TOKEN)
    challenge.cleanup(ZONE, TOKEN[::-1])
    assert (await ask(world, ZONE, "TXT")).answer == []
    assert challenge.names() == [] and not (records / ZONE).exists()


async def test_a_delegate_that_is_gone_is_a_servfail_not_a_hang(servers) -> None:
    node, world, _ = servers
    await node.stop()
    reply = await asyncio.to_thread(zdns.query, *world.address, ZONE, "TXT", timeout=10)
    assert reply.rcode() == dns.rcode.SERVFAIL


async def test_garbage_gets_no_answer_and_the_server_goes_on(servers) -> None:
    _, world, _ = servers
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as s:
        s.sendto(b"\x00\x01not dns at all", world.address)
        s.sendto(
            dns.message.make_response(dns.message.make_query("x.", "A")).to_wire(), world.address
        )
    assert texts(await ask(world, "app.example.test", "A")) == ["10.1.0.2"]


def test_settings_and_hook_input_are_checked(tmp_path: Path) -> None:
    with pytest.raises(zdns.DnsError, match="lies in none of the zones"):
        zdns.Authority(("example.test",), {"app.other.test": ("10.0.0.1",)})
    with pytest.raises(zdns.DnsError, match=r"address of .a\.example\.test."):
        zdns.Authority(("example.test",), {"a.example.test": ("not-an-ip",)})
    with pytest.raises(zdns.DnsError, match="zone 'bad zone'"):
        zdns.Authority(("bad zone",))
    assert acme_zone("GW.Example.Test.") == ZONE
    records = zdns.ChallengeRecords(tmp_path / "r")
    for name, value in (("../../etc", TOKEN), (ZONE, "../x"), (ZONE, "a b"), ("", TOKEN)):
        with pytest.raises(zdns.DnsError):
            records.present(name, value)
    assert not (tmp_path / "r").exists() or records.names() == []


def test_hook_program_writes_and_removes_a_value(tmp_path: Path) -> None:
    records = tmp_path / "records"

    def hook(*args: str) -> subprocess.CompletedProcess[str]:
        argv = [*dnsprocess.hook_argv(records), *args]
        return subprocess.run(argv, capture_output=True, text=True, timeout=30)

    assert hook("present", ZONE + ".", TOKEN).returncode == 0
    assert zdns.ChallengeRecords(records).values(ZONE) == [TOKEN]
    bad = hook("present", ZONE, "not/a/token")
    assert bad.returncode == 2 and "TXT value" in bad.stderr
    assert hook("cleanup", ZONE + ".", TOKEN).returncode == 0
    assert zdns.ChallengeRecords(records).values(ZONE) == []
    assert sys.executable in dnsprocess.hook_argv(records)


def test_the_node_agent_does_not_load_the_server() -> None:
    """The agent starts the server and the hook as processes of their own: dnspython is
    not in its memory until it asks a DNS server it runs (the readiness probe)."""
    probe = (
        "import sys; from zos.cli import build_parser;"
        " build_parser('node').parse_args(['node', 'run']); import zos.node.agent;"
        " print(sorted(m for m in ('dns', 'zos.primitives.dns') if m in sys.modules))"
    )
    out = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "[]"
