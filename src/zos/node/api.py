"""The node's bus API: `zos.deployment.*`, `zos.statistics.get`, `zos.system.version`,
and `zos.zmachine.logs` (from `zos.node.api_zmachine`).

Each handler checks its payload, calls the engine with the sender twin the bus has
already authenticated, and turns a refusal into a BusError with the engine's code.
Payloads and results follow reference/gridtypes.md: a deployment is zos JSON; `get`,
`changes` and `delete` take `{"contract_id": N}`.
"""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zos.bus import BusError, Request, Router
from zos.node.api_zmachine import zmachine_router
from zos.node.engine import Engine, EngineError


class ContractArgs(BaseModel):
    model_config = ConfigDict(extra="ignore")

    contract_id: int = Field(ge=1, lt=1 << 64)


def _contract_id(payload: Any) -> int:
    try:
        return ContractArgs.model_validate(payload).contract_id
    except ValidationError as e:
        err = e.errors()[0]
        where = ".".join(str(p) for p in err["loc"]) or "payload"
        raise BusError("invalid", f"{where}: {err['msg']}") from None


def zos_version() -> str:
    try:
        return version("zos")
    except PackageNotFoundError:
        return "unknown"


def node_router(engine: Engine) -> Router:
    router = Router()

    async def call(fn: Any, *args: Any) -> Any:
        try:
            return await fn(*args)
        except EngineError as e:
            raise BusError(e.code, e.message) from None

    @router.command("zos.deployment.deploy")
    async def deploy(req: Request) -> None:
        await call(engine.deploy, req.source_twin, req.payload)

    @router.command("zos.deployment.update")
    async def update(req: Request) -> None:
        await call(engine.update, req.source_twin, req.payload)

    @router.command("zos.deployment.get")
    async def get(req: Request) -> Any:
        return await call(engine.get, req.source_twin, _contract_id(req.payload))

    @router.command("zos.deployment.list")
    async def list_(req: Request) -> Any:
        return await call(engine.list, req.source_twin)

    @router.command("zos.deployment.changes")
    async def changes(req: Request) -> Any:
        return await call(engine.changes, req.source_twin, _contract_id(req.payload))

    @router.command("zos.deployment.delete")
    async def delete(req: Request) -> None:
        await call(engine.delete, req.source_twin, _contract_id(req.payload))

    @router.command("zos.statistics.get")
    async def statistics(req: Request) -> Any:
        return engine.statistics()

    @router.command("zos.system.version")
    async def system_version(req: Request) -> Any:
        return {"zos": zos_version(), "zinit": ""}

    router.include(zmachine_router(engine))
    return router
