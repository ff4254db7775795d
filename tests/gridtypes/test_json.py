"""Reading JSON by Go's encoding/json rules, and refusing what Go refuses."""

from __future__ import annotations

import json

import pytest

from zos.gridtypes import Deployment, GridTypeError, ZMachine

BASE = {
    "version": 0,
    "twin_id": 1,
    "signature_requirement": {"requests": [{"twin_id": 1, "required": True, "weight": 1}]},
}


def dep(**over) -> Deployment:
    return Deployment.from_json(json.dumps({**BASE, **over}))


def vm(network: dict, **over) -> dict:
    data = {
        "flist": "f",
        "network": network,
        "compute_capacity": {"cpu": 1, "memory": 1 << 30},
        **over,
    }
    return {"version": 0, "name": "vm", "type": "zmachine", "data": data}


def refused(text: str | bytes, *parts: str) -> str:
    with pytest.raises(GridTypeError) as info:
        Deployment.from_json(text)
    message = str(info.value)
    assert "\n" not in message and len(message) < 400
    for part in parts:
        assert part in message, (part, message)
    return message


def test_unknown_fields_are_ignored():
    a = dep(workloads=[{"version": 0, "name": "d", "type": "zmount", "data": {"size": 5}}])
    b = dep(
        extra={"x": [1, 2.5, None]},
        workloads=[
            {
                "version": 0,
                "name": "d",
                "type": "zmount",
                "data": {"__type": "zmount", "size": 5, "bogus": 1.5},
                "whatever": True,
            }
        ],
    )
    assert a.hash_hex() == b.hash_hex()
    assert a.to_dict() == b.to_dict()


def test_keys_match_case_insensitively():
    a = dep(
        description="x",
        workloads=[{"version": 0, "name": "d", "type": "zmount", "data": {"size": 5}}],
    )
    text = json.dumps(
        {
            "VERSION": 0,
            "Twin_Id": 1,
            "Description": "x",
            "Signature_Requirement": {"Requests": [{"TWIN_ID": 1, "Required": True, "weight": 1}]},
            "Workloads": [{"Version": 0, "NAME": "d", "Type": "zmount", "Data": {"SIZE": 5}}],
        }
    )
    b = Deployment.from_json(text)
    assert a.hash_hex() == b.hash_hex()


def test_mycelium_network_in_either_case():
    net = {"interfaces": [{"network": "n", "ip": "10.0.0.2"}]}
    a = dep(workloads=[vm({**net, "mycelium": {"Network": "n", "hex_seed": "a1b2c3d4e5f6"}})])
    b = dep(workloads=[vm({**net, "mycelium": {"network": "n", "hex_seed": "A1B2C3D4E5F6"}})])
    assert a.hash_hex() == b.hash_hex()
    assert "na1b2c3d4e5f6" in a.challenge()
    written = a.to_dict()["workloads"][0]["data"]["network"]["mycelium"]
    assert written == {"Network": "n", "hex_seed": "a1b2c3d4e5f6"}


def test_the_last_of_several_matching_keys_wins():
    d = Deployment.from_json('{"description": "a", "Description": "b", "DESCRIPTION": "c"}')
    assert d.description == "c"
    d = Deployment.from_json('{"description": "a", "description": null}')
    assert d.description == "a"  # null leaves a plain Go field as it was


def test_null_means_zero_or_absent():
    d = Deployment.from_json('{"version": null, "workloads": null, "signature_requirement": null}')
    assert d.version == 0 and d.workloads == [] and d.signature_requirement.requests == []
    d = dep(workloads=[vm({"interfaces": None, "mycelium": None}, env=None, gpu=None)])
    data = d.workloads[0].data
    assert isinstance(data, ZMachine) and data.network.mycelium is None and data.env == {}


@pytest.mark.parametrize(
    ("field", "value", "rule"),
    [
        ("version", 1.0, "expected a uint32 integer, got number 1.0"),
        ("version", 1e3, "expected a uint32 integer"),
        ("version", "1", "expected a uint32 integer, got string"),
        ("version", True, "expected a uint32 integer, got true"),
        ("version", -1, "out of range for uint32"),
        ("version", 2**32, "out of range for uint32"),
        ("twin_id", 2**32, "out of range for uint32"),
        ("contract_id", 2**64, "out of range for uint64"),
        ("contract_id", -1, "out of range for uint64"),
        ("expiration", 2**63, "out of range for int64"),
        ("expiration", 10**400, "out of range for int64"),
        ("expiration", "soon", "expected a timestamp"),
        ("metadata", 5, "expected a string, got number 5"),
        ("metadata", ["a"], "expected a string, got array"),
        ("workloads", {}, "expected an array, got object"),
        ("signature_requirement", [], "expected an object, got array"),
    ],
)
def test_wrong_types_and_ranges(field, value, rule):
    refused(json.dumps({**BASE, field: value}), f"{field}: {rule}")


def test_in_range_extremes():
    d = dep(version=2**32 - 1, contract_id=2**64 - 1, expiration=-(2**63))
    assert d.challenge().startswith(f"{2**32 - 1}1")
    assert Deployment.from_json(d.to_json()).to_dict() == d.to_dict()


def test_timestamp_may_be_a_date():
    assert dep(expiration="2023-11-14T22:13:20Z").expiration == 1700000000
    assert dep(expiration="2023-11-15T00:13:20+02:00").expiration == 1700000000


def test_nested_type_errors_name_the_workload_and_path():
    msg = refused(
        json.dumps({**BASE, "workloads": [vm({"interfaces": []}, compute_capacity={"cpu": 256})]}),
        "workload 'vm' (zmachine)",
        "workloads[0].data.compute_capacity.cpu: out of range for uint8: number 256",
    )
    assert msg.startswith("workload 'vm'")
    refused(
        json.dumps(
            {
                **BASE,
                "workloads": [
                    {"name": "n", "type": "network", "data": {"wireguard_listen_port": 65536}}
                ],
            }
        ),
        "data.wireguard_listen_port: out of range for uint16",
    )
    refused(
        json.dumps({**BASE, "signature_requirement": {"requests": [{"weight": -5}]}}),
        "signature_requirement.requests[0].weight: out of range for uint64",
    )


def test_ip_and_cidr_are_read_as_go_reads_them():
    def net(**data) -> str:
        return dep(
            workloads=[{"version": 0, "name": "n", "type": "network", "data": data}]
        ).challenge()

    # host bits stay, as gridtypes.ParseIPNet keeps them; IPv6 is printed compressed lowercase
    assert "10.1.2.3/16" in net(ip_range="10.1.2.3/16")
    assert "2a02:1802::/64" in net(subnet="2A02:1802:0:0::/64")
    assert "10.0.0.1/8" in net(subnet="::ffff:10.0.0.1/104")
    # an empty network prints as Go prints it
    assert "<nil><nil>" in net()
    for bad in (
        "10.1.2.3",
        "10.1.2.300/16",
        "10.1.2.3/33",
        "x/8",
        " 10.0.0.0/8",
        "10.0.0.0/8%eth0",
    ):
        refused(
            json.dumps(
                {**BASE, "workloads": [{"name": "n", "type": "network", "data": {"subnet": bad}}]}
            ),
            "data.subnet: invalid CIDR address",
        )
    d = dep(workloads=[vm({"interfaces": [{"network": "n", "ip": "::FFFF:10.0.0.2"}]})])
    assert "n10.0.0.2" in d.challenge()
    refused(
        json.dumps({**BASE, "workloads": [vm({"interfaces": [{"network": "n", "ip": "10.0.0"}]})]}),
        "interfaces[0].ip: invalid IP address",
    )


def test_hex_fields():
    refused(
        json.dumps({**BASE, "workloads": [vm({"mycelium": {"hex_seed": "abc"}})]}),
        "hex_seed: invalid hex string",
    )
    refused(
        json.dumps({**BASE, "workloads": [vm({"mycelium": {"hex_seed": "zz"}})]}),
        "hex_seed: invalid hex string",
    )


@pytest.mark.parametrize(
    ("text", "rule"),
    [
        ('{"version": 1', "invalid JSON"),
        ("", "invalid JSON"),
        ("[]", "expected an object, got array"),
        ("null", None),
        ('"x"', "expected an object, got string"),
        ('{"version": NaN}', "invalid JSON"),
        ('{"expiration": Infinity}', "invalid JSON"),
        ('{"version": 1} x', "invalid JSON: Extra data"),
        ("[" * 100_000, "invalid JSON"),
        ('{"version": ' + "9" * 5000 + "}", "invalid JSON"),
        ("\ufeff{}", "invalid JSON"),
    ],
)
def test_hostile_json(text, rule):
    if rule is None:
        assert Deployment.from_json(text).version == 0
    else:
        refused(text, rule)


def test_not_utf8_and_too_big():
    refused(b'{"metadata": "\xff\xfe"}', "not valid UTF-8 (byte 14)")
    refused(b'{"metadata": "' + b"a" * (10 * 1024 * 1024) + b'"}', "larger than")
    refused("x" * (5 * 1024 * 1024), "larger than")


def test_lone_surrogates_become_replacement_characters():
    d = Deployment.from_json('{"metadata": "a\\ud800b"}')
    assert d.metadata == "a\ufffdb"
    d.hash_hex()


def test_line_and_column_of_syntax_errors():
    refused('{\n  "version": 1,\n  "twin_id": }', "line 3 column 14")


def test_unicode_folding_as_go():
    # U+212A KELVIN SIGN folds to k, U+017F LONG S to s, as in Go's encoding/json
    d = Deployment.from_json('{"\\u212aey": 1, "de\\u017fcription": "x", "metadata\\u0130": "y"}')
    assert d.description == "x"
    assert d.metadata == ""


@pytest.mark.parametrize("depth", [65, 500, 990, 5000])
def test_deep_nesting_is_refused_without_recursion_errors(depth):
    nested = "[" * depth + "]" * depth
    text = '{"workloads": [{"name": "x", "type": "zz", "data": ' + nested + "}]}"
    refused(text, "nested")
    text = '{"workloads": [{"result": {"data": ' + '{"a":' * depth + "1" + "}" * depth + "}}]}"
    refused(text, "nested")


def test_moderate_nesting_in_raw_data_is_kept():
    nested = {"a": [{"b": [1, 2.5, None, True]}]}
    text = json.dumps({"workloads": [{"name": "x", "type": "zz", "data": nested}]})
    d = Deployment.from_json(text)
    assert d.to_dict()["workloads"][0]["data"] == nested
