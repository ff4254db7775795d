"""The way out of a private network, and the walls around it.

A network namespace gets a point-to-point uplink veth to the agent's namespace (the
"host"): a /30 from a node-local range, host side `.1`, namespace side `.2` and its
default route. The namespace masquerades its subnet out of the uplink; the host
forwards and masquerades the uplink range out of its own default route.

Isolation is enforced twice, with nftables:
- in the network namespace, forwarded traffic from the bridge may only go out of the
  uplink to a public address: private, loopback, link-local, CGNAT (other tenants'
  uplinks) and multicast are dropped;
- on the host, nothing that arrives over an uplink may reach the host itself, whatever
  the address (`fib daddr type local`: matched per packet, so an address added to any
  interface later is covered too), the grid's control plane (the NATS servers and stores
  the node is configured with, wherever they are), or another uplink.

`grid_host_rules` is the local grid's own wall, in the machine's root namespace: the
nodes' namespaces on the grid bridge reach the host only at its NATS and hub ports;
`router_rules`, the NAT a hidden node of the local grid sits behind.
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Sequence
from ipaddress import IPv4Address, IPv4Interface, IPv4Network

from zos.primitives import links, netns

UPLINK_RANGE = IPv4Network("100.127.0.0/16")
# The networks' WireGuard addresses (100.64.A.B/16, `zos.primitives.wireguard`).
TUNNEL_RANGE = IPv4Network("100.64.0.0/16")
UPLINK_PREFIX = "u-"  # host side of every uplink veth: u-<netid>
NS_UPLINK = "pub"  # namespace side of the uplink
HOST_TABLE = "zos_host"
NS_TABLE = "zos"

# Destinations a tenant never reaches through its uplink.
BLOCKED = (
    "0.0.0.0/8",
    "10.0.0.0/8",
    "100.64.0.0/10",
    "127.0.0.0/8",
    "169.254.0.0/16",
    "172.16.0.0/12",
    "192.0.0.0/24",
    "192.168.0.0/16",
    "198.18.0.0/15",
    "224.0.0.0/4",
    "240.0.0.0/4",
)

_alloc_lock = threading.Lock()
# An input chain that lets in only loopback and answers (what the rules after it add).
_INPUT_DROP = """type filter hook input priority 0; policy drop;
        iif lo accept
        ct state established,related accept"""


class NatError(Exception):
    pass


def _replace_table(table: str, chains: str) -> str:
    # `table x {}` then `delete table x` makes the replacement atomic and idempotent.
    return f"table inet {table}\ndelete table inet {table}\ntable inet {table} {{{chains}}}\n"


def _rule(match: str, values: Sequence[object], verdict: str) -> str:
    """`match { values } verdict`, or no rule at all when there are no values."""
    return f"{match} {{ {', '.join(map(str, values))} }} {verdict}" if values else ""


def host_rules(control: Sequence[IPv4Address] = (), table: str = HOST_TABLE) -> str:
    """`control`: addresses of the grid's control plane, dropped whatever they are."""
    to_control = _rule(f'iifname "{UPLINK_PREFIX}*" ip daddr', control, "drop")
    return _replace_table(
        table,
        f"""
    chain prerouting {{
        type filter hook prerouting priority -10; policy accept;
        iifname "{UPLINK_PREFIX}*" fib daddr type {{ local, broadcast, multicast }} drop
        {to_control}
    }}
    chain input {{
        type filter hook input priority -10; policy accept;
        iifname "{UPLINK_PREFIX}*" drop
    }}
    chain forward {{
        type filter hook forward priority -10; policy accept;
        iifname "{UPLINK_PREFIX}*" oifname "{UPLINK_PREFIX}*" drop
        iifname "{UPLINK_PREFIX}*" ip daddr {{ {", ".join(BLOCKED)} }} drop
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        ip saddr {UPLINK_RANGE} oifname != "{UPLINK_PREFIX}*" masquerade
    }}
""",
    )


async def setup_host(control: Sequence[IPv4Address] = ()) -> None:
    """Forwarding and the host table; safe to call for every network."""
    await asyncio.to_thread(netns.set_sysctl, None, "net/ipv4/ip_forward", "1")
    await netns.exec_in(None, "nft", "-f", "-", input=host_rules(control).encode())


def grid_table(tag: str) -> str:
    return f"zos_grid_{tag}"


def grid_host_rules(tag: str, bridge: str, host: IPv4Address, ports: Sequence[int]) -> str:
    """The local grid's wall in the root namespace: from the grid bridge (the nodes'
    namespaces, and everything behind them) only `host:ports` and answers to the host's
    own connections get in; nothing is forwarded on, except from node to node across
    the bridge (where br_netfilter shows bridged frames to this hook): their WireGuard
    tunnels."""
    allowed = _rule(f'iifname "{bridge}" ip daddr {host} tcp dport', ports, "accept")
    return _replace_table(
        grid_table(tag),
        f"""
    chain input {{
        type filter hook input priority -10; policy accept;
        iifname "{bridge}" ct state established,related accept
        {allowed}
        iifname "{bridge}" reject
    }}
    chain forward {{
        type filter hook forward priority -10; policy accept;
        iifname "{bridge}" ct state established,related accept
        iifname "{bridge}" oifname "{bridge}" accept
        iifname "{bridge}" reject
    }}
""",
    )


async def guard_grid_host(tag: str, bridge: str, host: IPv4Address, ports: Sequence[int]) -> None:
    rules = grid_host_rules(tag, bridge, host, ports)
    await netns.exec_in(None, "nft", "-f", "-", input=rules.encode())


ROUTER_TABLE = "zos_router"


def router_rules(wan: str, lan: str) -> str:
    """A home router's, for a node behind NAT: what the LAN opens goes out of `wan`
    under the router's address; nothing from `wan` gets in or through unless it answers
    that (so nobody can dial the node: it is *hidden*)."""
    return _replace_table(
        ROUTER_TABLE,
        f"""
    chain input {{
        {_INPUT_DROP}
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        iifname "{lan}" oifname "{wan}" accept
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        oifname "{wan}" masquerade
    }}
""",
    )


async def apply_router_rules(ns: str, wan: str, lan: str) -> None:
    await asyncio.to_thread(netns.set_sysctl, ns, "net/ipv4/ip_forward", "1")
    await netns.exec_in(ns, "nft", "-f", "-", input=router_rules(wan, lan).encode())


async def remove_table(table: str, ns: str | None = None) -> None:
    """Delete an inet table (a no-op when it is not there)."""
    text = f"table inet {table}\ndelete table inet {table}\n"
    await netns.exec_in(ns, "nft", "-f", "-", input=text.encode())


def _allocate(host_if: str) -> IPv4Network:
    with _alloc_lock:
        for addr in links.addresses(host_if):
            if addr.ip in UPLINK_RANGE:
                return addr.network
        used = {a.network for a in links.all_addresses() if a.ip in UPLINK_RANGE}
        for net in UPLINK_RANGE.subnets(new_prefix=30):
            if net not in used:
                # Claim it now, under the lock, so a concurrent allocation skips it.
                links.set_addresses(host_if, [IPv4Interface(f"{net[1]}/30")])
                return net
    raise NatError(f"no free uplink /30 left in {UPLINK_RANGE}")


def _ensure_uplink(ns: str, host_if: str) -> IPv4Network:
    links.ensure_veth(host_if, NS_UPLINK, None, ns)
    net = _allocate(host_if)
    links.set_up(host_if)
    links.set_addresses(NS_UPLINK, [IPv4Interface(f"{net[2]}/30")], ns)
    links.set_up(NS_UPLINK, ns)
    links.set_default_route(net[1], ns)
    return net


async def ensure_uplink(ns: str, host_if: str) -> IPv4Network:
    """The uplink veth of namespace `ns` (host side `host_if`); returns its /30."""
    if not host_if.startswith(UPLINK_PREFIX):
        raise NatError(f"uplink name {host_if!r} must start with {UPLINK_PREFIX!r}")
    return await asyncio.to_thread(_ensure_uplink, ns, host_if)


async def remove_uplink(host_if: str) -> None:
    await asyncio.to_thread(links.delete, host_if)


def namespace_rules(
    bridge: str, subnet: IPv4Network, tunnel: str = "", ip_range: IPv4Network | None = None
) -> str:
    """The network namespace's walls. With `tunnel` (the network's WireGuard interface,
    `w-<netid>`): what comes out of it is what WireGuard let in, from the network's own
    peers only (each peer's packets must come from its allowed_ips); it may reach the
    subnet, and pass on to another peer (an access node relays its hidden nodes); the
    subnet may reach the rest of `ip_range` and the tunnel addresses through it. Nothing
    from the uplink ever goes in (only answers to what went out)."""
    tunnels = f"{{ {ip_range}, {TUNNEL_RANGE} }}" if ip_range else str(TUNNEL_RANGE)
    to_tunnel = (
        f"""iifname "{bridge}" oifname "{tunnel}" ip daddr {tunnels} accept
        iifname "{tunnel}" oifname "{bridge}" ip saddr {tunnels} ip daddr {subnet} accept
        iifname "{tunnel}" oifname "{tunnel}" ip saddr {tunnels} ip daddr {tunnels} accept"""
        if tunnel
        else ""
    )
    ping_tunnel = f'iifname "{tunnel}" icmp type echo-request accept' if tunnel else ""
    return _replace_table(
        NS_TABLE,
        f"""
    chain input {{
        {_INPUT_DROP}
        iifname "{bridge}" icmp type echo-request accept
        {ping_tunnel}
    }}
    chain forward {{
        type filter hook forward priority 0; policy drop;
        ct state established,related accept
        meta nfproto ipv6 drop
        iifname "{bridge}" ip saddr != {subnet} drop
        ip saddr {subnet} ip daddr {subnet} accept
        {to_tunnel}
        iifname "{bridge}" ip daddr {{ {", ".join(BLOCKED)} }} drop
        iifname "{bridge}" oifname "{NS_UPLINK}" accept
    }}
    chain postrouting {{
        type nat hook postrouting priority 100; policy accept;
        oifname "{NS_UPLINK}" ip saddr {subnet} masquerade
    }}
""",
    )


async def apply_namespace_rules(
    ns: str,
    bridge: str,
    subnet: IPv4Network,
    tunnel: str = "",
    ip_range: IPv4Network | None = None,
) -> None:
    """Routing on, bridge traffic kept off the IP hooks, and the rules above (replaced whole)."""

    def sysctls() -> None:
        for key, value in (
            ("net/ipv4/ip_forward", "1"),
            # Only where br_netfilter is loaded; bridged frames stay on the bridge.
            ("net/bridge/bridge-nf-call-iptables", "0"),
            ("net/bridge/bridge-nf-call-ip6tables", "0"),
            ("net/bridge/bridge-nf-call-arptables", "0"),
        ):
            netns.set_sysctl(None, key, value)

    await asyncio.to_thread(netns.run_in, ns, sysctls)
    rules = namespace_rules(bridge, subnet, tunnel, ip_range)
    await netns.exec_in(ns, "nft", "-f", "-", input=rules.encode())
