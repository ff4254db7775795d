"""Validation messages name the workload, the field and the rule; capacity; names."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest

from zos.gridtypes import (
    Capacity,
    Deployment,
    GiB,
    GridTypeError,
    MiB,
    capacity,
    network_id,
    short_name,
    validate,
    workload_id,
)


def vm_data(**over: Any) -> dict:
    data = {
        "flist": "https://hub.grid.tf/x.flist",
        "network": {"interfaces": [{"network": "net1", "ip": "10.20.2.5"}]},
        "compute_capacity": {"cpu": 2, "memory": 2 * GiB},
        "size": 0,
        "mounts": [{"name": "disk", "mountpoint": "/data"}],
    }
    data.update(over)
    return data


def deployment(*workloads: dict, **over: Any) -> dict:
    doc = {
        "version": 1,
        "twin_id": 7,
        "signature_requirement": {
            "requests": [{"twin_id": 7, "required": True, "weight": 1}],
            "weight_required": 1,
        },
        "workloads": [
            {"version": 0, "name": "disk", "type": "zmount", "data": {"size": 10 * GiB}},
            *workloads,
        ],
    }
    doc.update(over)
    return doc


def vm(name: str = "vm", version: int = 1, **over: Any) -> dict:
    return {"version": version, "name": name, "type": "zmachine", "data": vm_data(**over)}


def check(doc: dict) -> None:
    validate(Deployment.from_json(json.dumps(doc)))


def refused(doc: dict, *parts: str) -> str:
    with pytest.raises(GridTypeError) as info:
        check(doc)
    message = str(info.value)
    assert "\n" not in message
    for part in parts:
        assert part in message, (part, message)
    return message


def test_a_valid_deployment():
    check(deployment(vm()))


def test_bad_name():
    msg = refused(deployment(vm(name="my vm")), "workload 'my vm' (zmachine)", "name:", "letters")
    assert msg.startswith("workload")
    refused(deployment(vm(name="x" * 37)), "name:", "at most 36")
    refused(deployment(vm(name="")), "name:", "empty")


def test_duplicate_name():
    refused(deployment(vm(), vm()), "workload 'vm' (zmachine)", "name:", "more than one")


def test_zero_cpu():
    refused(
        deployment(vm(compute_capacity={"cpu": 0, "memory": GiB})),
        "workload 'vm' (zmachine)",
        "data.compute_capacity.cpu",
        "must not be 0",
    )


def test_memory_under_250_mib():
    refused(
        deployment(vm(compute_capacity={"cpu": 1, "memory": 250 * MiB - 1})),
        "data.compute_capacity.memory",
        "at least 250 MiB",
    )
    check(deployment(vm(compute_capacity={"cpu": 1, "memory": 250 * MiB})))


@pytest.mark.parametrize("count", [0, 2])
def test_zmachine_needs_exactly_one_interface(count):
    interfaces = [{"network": "net1", "ip": f"10.20.2.{i + 2}"} for i in range(count)]
    refused(
        deployment(vm(network={"interfaces": interfaces})),
        "workload 'vm' (zmachine)",
        "data.network.interfaces",
        f"exactly one private network interface is supported, got {count}",
    )


def test_unknown_type():
    doc = deployment({"version": 0, "name": "thing", "type": "teleporter", "data": {"x": 1}})
    refused(doc, "workload 'thing' (teleporter)", "type:", "unknown workload type 'teleporter'")
    d = Deployment.from_json(json.dumps(doc))
    # kept as it was written, refused when hashed
    assert d.to_dict()["workloads"][1]["data"] == {"x": 1}
    with pytest.raises(GridTypeError, match="unknown workload type"):
        d.hash_hex()


def test_workload_version_never_exceeds_deployment_version():
    refused(deployment(vm(version=2)), "workload 'vm' (zmachine)", "version:", "higher than")
    check(deployment(vm(version=1)))


def test_deployment_level_rules():
    refused(deployment(twin_id=0), "twin_id", "must not be 0")
    doc = deployment()
    doc["signature_requirement"]["requests"][0]["twin_id"] = 8
    refused(doc, "signature_requirement.requests", "owner twin 7")
    doc = deployment()
    doc["signature_requirement"]["weight_required"] = 2
    refused(doc, "weight_required", "never be reached")
    doc = deployment()
    doc["signature_requirement"]["signature_style"] = "fancy"
    refused(doc, "signature_style", "unknown style")
    doc = deployment()
    doc["signature_requirement"]["requests"].append({"twin_id": 7, "weight": 1})
    refused(doc, "requested twice")


@pytest.mark.parametrize(
    ("workload", "parts"),
    [
        ({"type": "zmount", "data": {"size": 0}}, ["(zmount)", "data.size", "more than 0"]),
        ({"type": "volume", "data": {}}, ["(volume)", "data.size"]),
        ({"type": "zdb", "data": {"size": 1, "mode": "x"}}, ["data.mode", "'user' or 'seq'"]),
        ({"type": "ip", "data": {"v4": False, "v6": False}}, ["(ip)", "at least one"]),
        (
            {"type": "network", "data": {"subnet": "10.1.1.0/24", "wireguard_private_key": "k"}},
            ["(network)", "data.ip_range", "empty"],
        ),
        (
            {
                "type": "network",
                "data": {
                    "ip_range": "10.1.0.0/16",
                    "subnet": "10.2.1.0/24",
                    "wireguard_private_key": "k",
                },
            },
            ["data.subnet", "not inside ip_range"],
        ),
        (
            {
                "type": "network",
                "data": {
                    "ip_range": "10.1.0.0/16",
                    "subnet": "10.1.1.0/24",
                    "wireguard_private_key": "k",
                    "mycelium": {"hex_key": "abcd"},
                },
            },
            ["data.mycelium.hex_key", "32 bytes"],
        ),
        (
            {"type": "network-light", "data": {"subnet": "10.1.1.0/24"}},
            ["(network-light)", "data.mycelium.hex_key"],
        ),
        (
            {"type": "gateway-name-proxy", "data": {"name": "a.b", "backends": ["http://1.2.3.4"]}},
            ["data.name", "invalid gateway name"],
        ),
        (
            {"type": "gateway-name-proxy", "data": {"name": "ab", "backends": []}},
            ["data.backends", "must not be empty"],
        ),
        (
            {"type": "gateway-name-proxy", "data": {"name": "ab", "backends": ["https://1.2.3.4"]}},
            ["data.backends[0]", "scheme must be http"],
        ),
        (
            {
                "type": "gateway-name-proxy",
                "data": {"name": "ab", "backends": ["http://1.2.3.4"], "tls_passthrough": True},
            },
            ["data.backends[0]", "ip:port"],
        ),
        (
            {"type": "gateway-fqdn-proxy", "data": {"fqdn": "nodot", "backends": ["1.2.3.4:1"]}},
            ["data.fqdn", "invalid domain name"],
        ),
        (
            {"type": "zlogs", "data": {"zmachine": "nope", "output": "redis://1.2.3.4"}},
            ["(zlogs)", "data.zmachine", "no zmachine named 'nope'"],
        ),
        (
            {"type": "qsfs", "data": {"config": {"minimal_shards": 3, "expected_shards": 2}}},
            ["(qsfs)", "data.config.minimal_shards"],
        ),
    ],
)
def test_type_rules(workload, parts):
    refused(deployment({"version": 0, "name": "w", **workload}), "workload 'w'", *parts)


def test_zmachine_rules():
    refused(deployment(vm(mounts=[{"name": "nodisk", "mountpoint": "/x"}])), "data.mounts[0].name")
    refused(deployment(vm(size=100 * MiB)), "data.size", "must be 0 (minimum) or at least")
    refused(
        deployment(vm(network={"interfaces": [{"network": "ygg", "ip": "10.0.0.2"}]})),
        "reserved network name",
    )
    refused(deployment(vm(network={"interfaces": [{"network": "n"}]})), "interfaces[0].ip")
    net = {
        "interfaces": [{"network": "n", "ip": "10.0.0.2"}],
        "mycelium": {"network": "n", "hex_seed": "abcd"},
    }
    refused(deployment(vm(network=net)), "data.network.mycelium.hex_seed", "6 bytes")
    net = {"public_ip": "pip", "interfaces": [{"network": "n", "ip": "10.0.0.2"}]}
    refused(deployment(vm(network=net)), "data.network.public_ip", "no ip workload named 'pip'")
    pip = {"version": 0, "name": "pip", "type": "ip", "data": {"v4": True}}
    check(deployment(pip, vm(network=net)))
    refused(deployment(pip, vm(network=net), vm(name="vm2", network=net)), "several machines")


def test_capacity():
    pip = {"version": 0, "name": "pip", "type": "ip", "data": {"v4": True}}
    old = {"version": 0, "name": "old", "type": "ipv4", "data": {}}
    zdb = {"version": 0, "name": "z", "type": "zdb", "data": {"size": 5 * GiB, "mode": "user"}}
    vol = {"version": 0, "name": "v", "type": "volume", "data": {"size": GiB}}
    small = vm(name="small", compute_capacity={"cpu": 1, "memory": GiB})
    big = vm(name="big", compute_capacity={"cpu": 4, "memory": 8 * GiB}, size=30 * GiB)
    d = Deployment.from_json(json.dumps(deployment(pip, old, zdb, vol, small, big)))
    assert capacity(d) == Capacity(
        cru=5,
        mru=9 * GiB,
        sru=10 * GiB + GiB + 500 * MiB + 30 * GiB,
        hru=5 * GiB,
        ipv4u=2,
    )
    assert d.get("big").capacity() == Capacity(cru=4, mru=8 * GiB, sru=30 * GiB)
    assert d.get("small").data.root_size() == 500 * MiB
    # cpu × memory of at least 8 GiB-cores needs a 2 GiB root
    mid = vm(name="mid", compute_capacity={"cpu": 2, "memory": 4 * GiB})
    assert Deployment.from_dict(deployment(mid)).get("mid").capacity().sru == 2 * GiB
    # deleted workloads reserve nothing
    d.get("big").result.state = "deleted"
    assert capacity(d).cru == 1
    assert capacity(d, include_deleted=True).cru == 5
    assert Capacity(1, 2, 3, 4, 5) + Capacity(1, 1, 1, 1, 1) == Capacity(2, 3, 4, 5, 6)


def test_names_a_node_derives():
    assert workload_id(7, 12, "vm") == "7-12-vm"
    nid = network_id(7, "net1")
    assert len(nid) == 13 and re.fullmatch(r"[1-9A-HJ-NP-Za-km-z]+", nid)
    assert network_id(7, "net1") == nid != network_id(8, "net1")
    assert short_name("7-12-vm", 0) != short_name("7-12-vm", 1)
    assert len(short_name("7-12-vm", 0)) == 13
    # base58 of MD5("1:a"), computed independently
    import hashlib

    import base58

    assert network_id(1, "a") == base58.b58encode(hashlib.md5(b"1:a").digest()).decode()[:13]
