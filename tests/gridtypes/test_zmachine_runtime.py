"""A zmachine's runtime: "container" (the default) or "vm", signed only when set."""

from __future__ import annotations

import json

import pytest
from test_validation import check, deployment, refused, vm

from zos.client.manifest import ManifestError, parse_manifest
from zos.gridtypes import Deployment


def test_a_runtime_is_container_or_vm_and_nothing_else() -> None:
    check(deployment(vm(runtime="vm")))
    check(deployment(vm(runtime="container")))
    refused(deployment(vm(runtime="kvm")), "runtime", "container, vm", "'kvm'")


def test_the_runtime_is_signed_when_set_and_left_out_when_not() -> None:
    plain = Deployment.from_json(json.dumps(deployment(vm())))
    as_vm = Deployment.from_json(json.dumps(deployment(vm(runtime="vm"))))
    assert "runtime" not in json.dumps(plain.to_dict())  # hashes as zos hashes it
    assert plain.hash_hex() != as_vm.hash_hex()  # a changed runtime is seen


def test_the_manifest_takes_container_or_vm() -> None:
    text = "name: app\nnode: 1\nmachines:\n  - {name: web, flist: http://h/x.fl, runtime: %s}\n"
    assert parse_manifest(text % "vm").machines[0].runtime == "vm"
    assert parse_manifest(text % "container").machines[0].runtime == "container"
    with pytest.raises(ManifestError) as info:
        parse_manifest(text % "kvm")
    assert "machines[0].runtime" in str(info.value)
