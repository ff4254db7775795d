"""A small authoritative DNS server: the node's DNS-01 answers, and the local grid's names.

The node runs one in its public namespace, authoritative for `_acme-challenge.<domain>`
(the farmer's DNS delegates that name to the node with an NS record, as zos asks), so
the wildcard certificate of its domain comes by DNS-01 without any DNS provider's API.
The proxy's ACME hook (`zos.primitives.dnsrecords`) writes each TXT value as a file in
a directory that the server reads on every query: a value is served the moment the hook
returns, and a restarted server serves what it served before.

The local grid and the tests run a second one as the world's DNS that pebble asks: A
records for the test's names, and the `_acme-challenge` zones relayed to the node's
server (what a resolver that followed the NS record would get). A server answers only
its zones (REFUSED for any other name) and asks no server but a configured delegate.
"""

from __future__ import annotations

import argparse
import asyncio
import errno
import logging
import socket
import sys
from collections.abc import Mapping
from dataclasses import dataclass, field
from ipaddress import IPv4Address, IPv6Address, ip_address
from pathlib import Path

import dns.asyncquery
import dns.exception
import dns.flags
import dns.message
import dns.name
import dns.opcode
import dns.query
import dns.rcode
import dns.rdataclass
import dns.rdatatype
import dns.rrset

from zos.primitives import netns, nsclient
from zos.primitives.dnsrecords import ChallengeRecords, DnsError, check_name, within
from zos.primitives.signals import stop_on_signals

log = logging.getLogger(__name__)

TTL = 60


# --- what the server knows --------------------------------------------------------------------


@dataclass(frozen=True)
class Authority:
    """What a server answers: its zones, their addresses and TXT values, and delegations.

    `addresses` maps a name (or `*.parent`, covering every name below `parent` that has
    no record of its own) to IPv4/IPv6 addresses; every name must lie in one of `zones`.
    `delegations` maps a zone to the `(host, port)` of the server that answers it.
    """

    zones: tuple[str, ...] = ()
    addresses: Mapping[str, tuple[str, ...]] = field(default_factory=dict)
    records: Path | None = None
    delegations: Mapping[str, tuple[str, int]] = field(default_factory=dict)
    ttl: int = TTL

    def __post_init__(self) -> None:
        zones = tuple(check_name(z, "zone") for z in self.zones)
        addresses = {}
        for name, ips in self.addresses.items():
            key = check_name(name, "address name", wildcard=True)
            if not any(within(key.removeprefix("*."), z) for z in zones):
                raise DnsError(f"address name {name!r} lies in none of the zones {zones}")
            try:
                addresses[key] = tuple(str(ip_address(ip)) for ip in ips)
            except ValueError as e:
                raise DnsError(f"address of {name!r}: {e}") from None
        delegations = {
            check_name(z, "delegated zone"): (h, int(p)) for z, (h, p) in self.delegations.items()
        }
        object.__setattr__(self, "zones", zones)
        object.__setattr__(self, "addresses", addresses)
        object.__setattr__(self, "delegations", delegations)

    def delegate_for(self, name: str) -> tuple[str, int] | None:
        found = [z for z in self.delegations if within(name, z)]
        return self.delegations[max(found, key=len)] if found else None

    def zone_of(self, name: str) -> str | None:
        found = [z for z in self.zones if within(name, z)]
        return max(found, key=len) if found else None

    def _addresses(self, name: str, zone: str) -> tuple[str, ...] | None:
        if name in self.addresses:
            return self.addresses[name]
        parent = name
        while parent != zone and "." in parent:  # the closest wildcard above the name
            parent = parent.split(".", 1)[1]
            if f"*.{parent}" in self.addresses:
                return self.addresses[f"*.{parent}"]
        return None

    def lookup(self, name: str, rdtype: dns.rdatatype.RdataType) -> tuple[bool, list[str]]:
        """(the name exists, the rdata texts of `rdtype` it has) within its zone."""
        zone = self.zone_of(name)
        assert zone is not None
        txt = ChallengeRecords(self.records).values(name) if self.records else []
        ips = self._addresses(name, zone) or ()
        exists = name == zone or bool(txt) or bool(ips)
        if rdtype == dns.rdatatype.A:
            return exists, [ip for ip in ips if isinstance(ip_address(ip), IPv4Address)]
        if rdtype == dns.rdatatype.AAAA:
            return exists, [ip for ip in ips if isinstance(ip_address(ip), IPv6Address)]
        if rdtype == dns.rdatatype.TXT:
            return exists, [f'"{v}"' for v in txt]
        if rdtype == dns.rdatatype.SOA and name == zone:
            return exists, [self.soa(zone)]
        return exists, []

    def soa(self, zone: str) -> str:
        return f"{zone}. hostmaster.{zone}. 1 3600 600 86400 {self.ttl}"


# --- the server -------------------------------------------------------------------------------


def _error(query: dns.message.Message, rcode: dns.rcode.Rcode) -> dns.message.Message:
    reply = dns.message.make_response(query)
    reply.set_rcode(rcode)
    return reply


def answer(authority: Authority, query: dns.message.Message) -> dns.message.Message:
    """The authoritative reply to `query` (delegated names are not answered here)."""
    if query.opcode() != dns.opcode.QUERY or len(query.question) != 1:
        return _error(query, dns.rcode.NOTIMP)
    q = query.question[0]
    name = q.name.to_text(omit_final_dot=True).lower()
    zone = authority.zone_of(name)
    if zone is None or q.rdclass != dns.rdataclass.IN:
        return _error(query, dns.rcode.REFUSED)
    reply = dns.message.make_response(query)
    reply.flags |= dns.flags.AA
    exists, rdata = authority.lookup(name, q.rdtype)
    ttl = authority.ttl
    if rdata:
        reply.answer.append(dns.rrset.from_text_list(q.name, ttl, "IN", q.rdtype, rdata))
    else:
        if not exists:
            reply.set_rcode(dns.rcode.NXDOMAIN)
        apex = dns.name.from_text(zone)
        reply.authority.append(dns.rrset.from_text(apex, ttl, "IN", "SOA", authority.soa(zone)))
    return reply


class DnsServer:
    """Zones answered over UDP and TCP on one address (in a namespace, if given)."""

    def __init__(self, authority: Authority) -> None:
        self.authority = authority
        self._tasks: set[asyncio.Task[None]] = set()
        self._udp: asyncio.DatagramTransport | None = None
        self._tcp: asyncio.Server | None = None
        self.address: tuple[str, int] = ("", 0)

    async def _reply(self, wire: bytes) -> dns.message.Message | None:
        try:
            query = dns.message.from_wire(wire)
        except dns.exception.DNSException:
            return None  # not DNS: no answer, as a server under a flood should
        if query.flags & dns.flags.QR:
            return None
        if len(query.question) == 1:
            name = query.question[0].name.to_text(omit_final_dot=True).lower()
            delegate = self.authority.delegate_for(name)
            if delegate is not None:
                return await self._relay(query, delegate)
        return answer(self.authority, query)

    async def _relay(self, query: dns.message.Message, to: tuple[str, int]) -> dns.message.Message:
        try:
            reply, _ = await dns.asyncquery.udp_with_fallback(query, to[0], timeout=3, port=to[1])
        except (dns.exception.DNSException, OSError) as e:
            log.info("delegate %s:%d for %s: %s", *to, query.question[0].name, e)
            return _error(query, dns.rcode.SERVFAIL)
        return reply

    async def start(self, host: str, port: int, ns: str | None = None) -> DnsServer:
        loop = asyncio.get_running_loop()
        udp, tcp = await asyncio.to_thread(_sockets, ns, host, port)
        self.address = udp.getsockname()[:2]
        server = self

        class Datagrams(asyncio.DatagramProtocol):
            def datagram_received(self, data: bytes, addr: tuple[str, int]) -> None:
                task = loop.create_task(server._answer_udp(data, addr))
                server._tasks.add(task)
                task.add_done_callback(server._tasks.discard)

        self._udp, _ = await loop.create_datagram_endpoint(Datagrams, sock=udp)
        self._tcp = await asyncio.start_server(self._answer_tcp, sock=tcp)
        return self

    async def _answer_udp(self, data: bytes, addr: tuple[str, int]) -> None:
        reply = await self._reply(data)
        if reply is None or self._udp is None:
            return
        query_size = reply.request_payload if reply.request_payload > 512 else 512
        try:
            wire = reply.to_wire(max_size=query_size)
        except dns.exception.TooBig:
            reply.answer.clear()
            reply.flags |= dns.flags.TC
            wire = reply.to_wire()
        self._udp.sendto(wire, addr)

    async def _answer_tcp(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            while True:
                size = int.from_bytes(await asyncio.wait_for(reader.readexactly(2), 30), "big")
                reply = await self._reply(await asyncio.wait_for(reader.readexactly(size), 30))
                if reply is None:
                    break
                wire = reply.to_wire()
                writer.write(len(wire).to_bytes(2, "big") + wire)
                await writer.drain()
        except (asyncio.IncompleteReadError, TimeoutError, OSError):
            pass
        finally:
            writer.close()

    async def stop(self) -> None:
        if self._udp is not None:
            self._udp.close()
            self._udp = None
        if self._tcp is not None:
            self._tcp.close()
            await self._tcp.wait_closed()
            self._tcp = None


def _sockets(ns: str | None, host: str, port: int) -> tuple[socket.socket, socket.socket]:
    """A UDP and a TCP socket bound to the same host:port (port 0: a free one for both)."""
    family = socket.AF_INET6 if ip_address(host).version == 6 else socket.AF_INET

    def bind() -> tuple[socket.socket, socket.socket]:
        udp = socket.socket(family, socket.SOCK_DGRAM)
        tcp = socket.socket(family, socket.SOCK_STREAM)
        try:
            udp.bind((host, port))
            tcp.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
            tcp.bind((host, udp.getsockname()[1]))
            tcp.listen(64)
        except OSError:
            udp.close()
            tcp.close()
            raise
        udp.setblocking(False)
        tcp.setblocking(False)
        return udp, tcp

    def make() -> tuple[socket.socket, socket.socket]:
        for _ in range(20 if port == 0 else 1):
            try:
                return bind()
            except OSError as e:
                # A free UDP port whose TCP twin is taken: try another.
                if port != 0 or e.errno != errno.EADDRINUSE:
                    raise
        raise OSError(errno.EADDRINUSE, f"no port free for both UDP and TCP on {host}")

    return netns.run_in(ns, make) if ns else make()


# --- asking -----------------------------------------------------------------------------------


def query(
    host: str,
    port: int,
    name: str,
    rdtype: str = "A",
    ns: str | None = None,
    timeout: float = 2.0,
) -> dns.message.Message:
    """Ask host:port (from namespace `ns`) over UDP; blocks. No answer: TimeoutError."""
    q = dns.message.make_query(name, rdtype)
    sock = nsclient.udp_socket(ns, host)
    try:
        return dns.query.udp(q, host, timeout=timeout, port=port, sock=sock)
    except dns.exception.Timeout:
        raise TimeoutError(f"no answer from {host}:{port} for {name} {rdtype}") from None
    finally:
        sock.close()


# --- the program ------------------------------------------------------------------------------


def _host_port(text: str) -> tuple[str, int]:
    host, sep, port = text.rpartition(":")
    host = host.removeprefix("[").removesuffix("]")
    try:
        ip_address(host)
        if not sep or not 0 <= int(port) < 65536:
            raise ValueError
    except ValueError:
        raise DnsError(f"{text!r} is not IP:PORT") from None
    return host, int(port)


def _parse(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(prog="python -m zos.primitives.dns")
    sub = p.add_subparsers(dest="cmd", required=True)
    serve = sub.add_parser("serve", help="answer the zones over UDP and TCP until SIGTERM")
    serve.add_argument("--listen", required=True, help="IP:PORT")
    serve.add_argument("--zone", action="append", default=[])
    serve.add_argument("--address", action="append", default=[], help="NAME=IP[,IP]")
    serve.add_argument("--records", type=Path, help="directory of TXT values")
    serve.add_argument("--delegate", action="append", default=[], help="ZONE=IP:PORT")
    return p.parse_args(argv)


async def _serve(args: argparse.Namespace) -> None:
    addresses = {}
    for item in args.address:
        name, sep, ips = item.partition("=")
        if not sep:
            raise DnsError(f"--address {item!r}: NAME=IP[,IP]")
        addresses[name] = tuple(ips.split(","))
    delegations = {}
    for item in args.delegate:
        zone, sep, to = item.partition("=")
        if not sep:
            raise DnsError(f"--delegate {item!r}: ZONE=IP:PORT")
        delegations[zone] = _host_port(to)
    authority = Authority(tuple(args.zone), addresses, args.records, delegations)
    stop = stop_on_signals()
    server = await DnsServer(authority).start(*_host_port(args.listen))
    print(f"dns: listening on {args.listen}", flush=True)
    await stop.wait()
    await server.stop()


def main(argv: list[str] | None = None) -> int:
    try:
        asyncio.run(_serve(_parse(argv)))
    except (DnsError, OSError) as e:
        sys.exit(f"dns: {e}")  # the message on stderr, status 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
