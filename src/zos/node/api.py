"""The node's bus handlers, one for each command of the contract in `zos.nodeapi.commands`
(the data keys' are in `zos.node.api_keys`).

Each handler reads its payload with the contract's model (`parse`: a BusError `invalid`
naming the field), calls the engine with the sender twin the bus has already
authenticated, and turns the engine's refusal into a BusError with its code. Deployments
are zos JSON; the engine checks them.
"""

from __future__ import annotations

from collections.abc import Awaitable
from importlib.metadata import PackageNotFoundError, version
from typing import Any, TypeVar

from zos.bus import BusError, Request, Router
from zos.node.engine import Engine, EngineError
from zos.nodeapi import commands as api
from zos.nodeapi.commands import ContractArgs, LogsArgs, parse

T = TypeVar("T")


def zos_version() -> str:
    try:
        return version("zos")
    except PackageNotFoundError:
        return "unknown"


async def _answer(call: Awaitable[T]) -> T:
    try:
        return await call
    except EngineError as e:
        raise BusError(e.code, e.message) from None


def node_router(engine: Engine) -> Router:
    router = Router()

    def contract_id(req: Request) -> int:
        return parse(ContractArgs, req.payload).contract_id

    @router.command(api.DEPLOY)
    async def deploy(req: Request) -> None:
        await _answer(engine.deploy(req.source_twin, req.payload))

    @router.command(api.UPDATE)
    async def update(req: Request) -> None:
        await _answer(engine.update(req.source_twin, req.payload))

    @router.command(api.GET)
    async def get(req: Request) -> Any:
        return await _answer(engine.get(req.source_twin, contract_id(req)))

    @router.command(api.LIST)
    async def list_(req: Request) -> Any:
        return await _answer(engine.list(req.source_twin))

    @router.command(api.CHANGES)
    async def changes(req: Request) -> Any:
        return await _answer(engine.changes(req.source_twin, contract_id(req)))

    @router.command(api.DELETE)
    async def delete(req: Request) -> None:
        await _answer(engine.delete(req.source_twin, contract_id(req)))

    @router.command(api.STATISTICS)
    async def statistics(req: Request) -> Any:
        return api.Statistics.model_validate(engine.statistics()).model_dump()

    @router.command(api.VERSION)
    async def system_version(req: Request) -> Any:
        return api.Version(zos=zos_version()).model_dump()

    @router.command(api.ZMACHINE_LOGS)
    async def zmachine_logs(req: Request) -> Any:
        """The owner's machine only: another twin learns nothing of it. Follow = a long
        poll; offsets count every byte ever written, so a rotation never repeats output."""
        args = parse(LogsArgs, req.payload)
        wait = api.FOLLOW_WAIT if args.follow else 0.0
        data, offset = await _answer(
            engine.logs(req.source_twin, args.contract_id, "zmachine", args.name, args.offset, wait)
        )
        if len(data) > api.MAX_LOG_CHUNK:
            offset -= len(data) - api.MAX_LOG_CHUNK
            data = data[: api.MAX_LOG_CHUNK]
        return api.LogsChunk(data=data.decode(errors="replace"), offset=offset).model_dump()

    check_served(router, api.ENGINE_COMMANDS)
    return router


def check_served(router: Router, commands: tuple[str, ...]) -> None:
    """Every one of the contract's `commands` has its handler in `router`."""
    if missing := set(commands) - set(router.commands):
        raise RuntimeError(f"commands of the contract without a handler: {sorted(missing)}")
