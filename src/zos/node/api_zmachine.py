"""`zos.zmachine.logs`: a zmachine's output, for its owner only.

Payload `{"contract_id": N, "name": "<zmachine workload>", "offset": 0, "follow": false}`.
The answer is `{"data": "<text>", "offset": M}`: ask again from `M` for what comes next.
With `follow`, a request with nothing new waits up to FOLLOW_WAIT seconds (a long poll),
so a client follows the log by asking again and again. At most the last 2 MiB are kept;
offsets count every byte ever written, so a rotation never repeats or skips output.

`zos.node.api.node_router` includes it (`router.include(zmachine_router(engine))`).
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from zos.bus import BusError, Request, Router
from zos.gridtypes.names import workload_id
from zos.node.engine import Engine, EngineError
from zos.node.workloads.base import WorkloadError

FOLLOW_WAIT = 20.0
MAX_CHUNK = 256 * 1024


class LogsArgs(BaseModel):
    model_config = ConfigDict(extra="ignore")

    contract_id: int = Field(ge=1, lt=1 << 64)
    name: str = Field(min_length=1, max_length=36, pattern=r"^[a-zA-Z0-9_]+$")
    offset: int = Field(default=0, ge=0)
    follow: bool = False


def zmachine_router(engine: Engine) -> Router:
    router = Router()

    @router.command("zos.zmachine.logs")
    async def logs(req: Request) -> Any:
        try:
            args = LogsArgs.model_validate(req.payload)
        except ValidationError as e:
            err = e.errors()[0]
            where = ".".join(str(p) for p in err["loc"]) or "payload"
            raise BusError("invalid", f"{where}: {err['msg']}") from None
        try:
            # The owner's deployment or nothing: another twin learns nothing of it.
            deployment = await engine.get(req.source_twin, args.contract_id)
        except EngineError as e:
            raise BusError(e.code, e.message) from None
        names = {w.get("name"): w.get("type") for w in deployment.get("workloads", [])}
        if names.get(args.name) != "zmachine":
            raise BusError("not_found", f"name: no zmachine '{args.name}' in the deployment")
        manager = engine.managers.get("zmachine")
        if manager is None:
            raise BusError("not_found", "zmachines are not supported on this node")
        wid = workload_id(req.source_twin, args.contract_id, args.name)
        try:
            data, offset = await manager.logs_since(
                wid, args.offset, FOLLOW_WAIT if args.follow else 0.0
            )
        except WorkloadError as e:
            raise BusError("not_found", str(e)) from None
        if len(data) > MAX_CHUNK:
            offset -= len(data) - MAX_CHUNK
            data = data[:MAX_CHUNK]
        return {"data": data.decode(errors="replace"), "offset": offset}

    return router
