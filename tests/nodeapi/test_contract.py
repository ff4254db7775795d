"""The node API contract: both sides use one table of names, payloads are read by the
contract's models with errors naming the field, answers are typed (unit tests: the
node's engine and the bus are small fakes; the end-to-end tests in tests/node drive a
real agent through the same NodeClient)."""

from __future__ import annotations

import subprocess
import sys
from typing import Any

import pytest
from pydantic import ValidationError

from zos.bus import BusError, Request
from zos.node.api import node_router
from zos.node.api_keys import keys_router
from zos.node.api_network import network_router
from zos.node.engine import EngineError
from zos.nodeapi import NodeClient
from zos.nodeapi import commands as api


class FakeEngine:
    """What the handlers call; records calls, answers what it is given."""

    def __init__(self, logs: tuple[bytes, int] = (b"", 0)) -> None:
        self.calls: list[tuple[Any, ...]] = []
        self._logs = logs

    async def get(self, sender: int, contract_id: int) -> dict[str, Any]:
        self.calls.append(("get", sender, contract_id))
        raise EngineError("not_found", f"contract_id {contract_id}: twin {sender} has none")

    changes = delete = get

    async def logs(self, *args: Any) -> tuple[bytes, int]:
        self.calls.append(("logs", *args))
        return self._logs

    def statistics(self) -> dict[str, Any]:
        zero = {"cru": 0, "mru": 0, "sru": 0, "hru": 0, "ipv4u": 0}
        users = {"deployments": 0, "workloads": 0, "last_deployment_timestamp": 0}
        return {"total": {**zero, "cru": 4}, "used": zero, "system": zero, "users": users}


async def _dispatch(engine: FakeEngine, command: str, payload: Any = None) -> Any:
    request = Request(source_twin=7, command=command, payload=payload, envelope=None)  # type: ignore[arg-type]
    return await node_router(engine).dispatch(request)  # type: ignore[arg-type]


def test_the_node_serves_every_command_of_the_contract_and_no_other() -> None:
    router = node_router(FakeEngine())  # type: ignore[arg-type]
    router.include(keys_router(None, None, None, None, 1, 1))  # type: ignore[arg-type]
    router.include(network_router(None, None))  # type: ignore[arg-type]
    assert router.commands == sorted(api.COMMANDS)


def test_the_contract_loads_without_the_node() -> None:
    code = (
        "import sys, zos.nodeapi; print(sorted(m for m in sys.modules if m.startswith('zos.node')))"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "['zos.nodeapi', 'zos.nodeapi.client', 'zos.nodeapi.commands']"


@pytest.mark.parametrize(
    ("command", "payload", "field"),
    [
        (api.GET, {"contract_id": "x"}, "contract_id"),
        (api.DELETE, {"contract_id": 0}, "contract_id"),
        (api.CHANGES, None, "payload"),
        (api.ZMACHINE_LOGS, {"contract_id": 1, "name": "../x"}, "name"),
        (api.ZMACHINE_LOGS, {"contract_id": 1, "name": "vm", "offset": -1}, "offset"),
    ],
)
async def test_a_bad_payload_is_refused_naming_its_field(
    command: str, payload: Any, field: str
) -> None:
    engine = FakeEngine()
    with pytest.raises(BusError) as refused:
        await _dispatch(engine, command, payload)
    assert refused.value.code == "invalid" and refused.value.message.startswith(f"{field}:")
    assert engine.calls == []  # refused before the engine is asked


async def test_an_engine_refusal_keeps_its_code_and_message() -> None:
    with pytest.raises(BusError) as refused:
        await _dispatch(FakeEngine(), api.GET, {"contract_id": 3})
    assert (refused.value.code, refused.value.message) == (
        "not_found",
        "contract_id 3: twin 7 has none",
    )


async def test_logs_asks_the_engine_for_the_senders_zmachine_and_caps_one_answer() -> None:
    big = b"x" * (api.MAX_LOG_CHUNK + 10)
    engine = FakeEngine(logs=(big, 1000 + len(big)))
    args = {"contract_id": 3, "name": "vm", "offset": 1000, "follow": True}
    answer = api.LogsChunk.model_validate(await _dispatch(engine, api.ZMACHINE_LOGS, args))
    assert engine.calls == [("logs", 7, 3, "zmachine", "vm", 1000, api.FOLLOW_WAIT)]
    # the rest comes with the next request, from the offset this answer gives
    assert len(answer.data) == api.MAX_LOG_CHUNK and answer.offset == 1000 + api.MAX_LOG_CHUNK


async def test_statistics_and_version_answer_the_contracts_models() -> None:
    stats = api.Statistics.model_validate(await _dispatch(FakeEngine(), api.STATISTICS))
    assert stats.total.cru == 4 and stats.used == stats.system
    assert api.Version.model_validate(await _dispatch(FakeEngine(), api.VERSION)).zos


class FakeBus:
    def __init__(self, answer: Any) -> None:
        self.answer = answer
        self.sent: list[tuple[int, str, Any, float]] = []

    async def request(self, twin: int, command: str, payload: Any = None, *, timeout: float) -> Any:
        self.sent.append((twin, command, payload, timeout))
        return self.answer


async def test_node_client_sends_the_contracts_payloads() -> None:
    bus = FakeBus({"data": "hi", "offset": 2})
    node = NodeClient(bus, 42)  # type: ignore[arg-type]
    chunk = await node.zmachine_logs(5, "vm", follow=True)
    assert (chunk.data, chunk.offset) == ("hi", 2)
    twin, command, payload, timeout = bus.sent[0]
    assert (twin, command) == (42, api.ZMACHINE_LOGS)
    assert payload == {"contract_id": 5, "name": "vm", "offset": 0, "follow": True}
    assert timeout > api.FOLLOW_WAIT  # the node may wait that long before it answers
    await node.delete(5)
    assert bus.sent[-1][1:3] == (api.DELETE, {"contract_id": 5})


async def test_node_client_sends_the_data_key_commands_payloads() -> None:
    bus = FakeBus({"contract_id": 5, "encrypted": True, "locked": False})
    node = NodeClient(bus, 42)  # type: ignore[arg-type]
    assert (await node.unlock(5, "sealed", {3: "copy"})).locked is False
    sent = {"contract_id": 5, "key": "sealed", "copies": {3: "copy"}}
    assert bus.sent[-1][1:3] == (api.UNLOCK, sent)
    await node.unlock(5, "sealed")
    assert bus.sent[-1][2] == {"contract_id": 5, "key": "sealed"}
    await node.share(5, 9, "copy")
    assert bus.sent[-1][1:3] == (api.SHARE, {"contract_id": 5, "twin": 9, "copy": "copy"})
    await node.unshare(5, 9)
    assert bus.sent[-1][1:3] == (api.UNSHARE, {"contract_id": 5, "twin": 9})
    bus.answer = {"contract_id": 5, "owner": 7, "encrypted": True, "locked": True, "copy": "c"}
    status = await node.encryption(5)
    assert (status.locked, status.copy_, status.shared) == (True, "c", [])
    with pytest.raises(ValidationError):
        await node.share(5, 0, "copy")  # no twin 0: refused before it is sent
    assert bus.sent[-1][1] == api.ENCRYPTION


async def test_node_client_refuses_an_answer_that_is_not_the_contracts() -> None:
    node = NodeClient(FakeBus({"zos": ["not", "a", "version"]}), 42)  # type: ignore[arg-type]
    with pytest.raises(BusError) as refused:
        await node.version()
    assert refused.value.code == "malformed" and "zos" in refused.value.message
