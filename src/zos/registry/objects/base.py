"""What a registry object module declares, and the context its rules run in.

An object module (`twins`, `farms`, ...) makes one `ObjectRules` and adds to it, by
decorator, each transaction kind it owns (`tx`: its argument model and the function that
checks the rules of that kind and applies it), each query (`query`), and for a contract
type what happens when one is cancelled (`cancelled`). `zos.registry.objects` gathers
every module's rules into the service's dispatch tables.

A transaction's apply runs after the service has checked everything that is the same for
every kind (size, shape, time, signer, signature, body against the argument model,
replay); it raises a `BusError` (not_found, forbidden, conflict, unavailable, invalid)
for the first rule the transaction breaks, before writing anything.
"""

from __future__ import annotations

import contextlib
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any, Literal, TypeVar

from pydantic import BaseModel, ConfigDict, TypeAdapter

from zos.bus.connection import Connection
from zos.registry.models import Contract, Farm, Id, NameContract, Node, NodeContract, Twin
from zos.registry.signing import RegistrySigner
from zos.registry.store import Mirror, Store
from zos.registry.tx import Transaction

if TYPE_CHECKING:
    from zos.registry.index import NodeIndex

MAX_LIST = 1000

TWIN = TypeAdapter(Twin)
FARM = TypeAdapter(Farm)
NODE = TypeAdapter(Node)
CONTRACT: TypeAdapter[NodeContract | NameContract] = TypeAdapter(Contract)


class Args(BaseModel):
    """A transaction's body or a query's arguments: unknown fields are refused."""

    model_config = ConfigDict(extra="forbid")


class IdArgs(Args):
    id: Id


def dumped(model: BaseModel) -> dict[str, Any]:
    return model.model_dump(mode="json")


@dataclass
class Context:
    """The registry's state as every rule sees it: the store, the mirrors the list
    queries read, the node index (statuses from the heartbeat stream), and the key
    that signs what the registry pushes."""

    store: Store
    signer: RegistrySigner
    conn: Connection
    down_after: float
    farms: Mirror[Farm]
    nodes: Mirror[Node]
    contracts: Mirror[NodeContract | NameContract]
    index: NodeIndex
    on_cancel: Mapping[str, CancelHook] = field(default_factory=dict)

    async def event(self, stored_subject: str, push_subject: str, event: Any, msg_id: str) -> None:
        """Store an event in the stream (signed), then push it with its sequence (signed):
        the stream is what a node reads after a restart, the push what it hears at once."""
        seq = await self.store.publish(stored_subject, dumped(event), msg_id=msg_id)
        pushed = event.model_copy(update={"seq": seq}).model_dump_json().encode()
        with contextlib.suppress(Exception):  # the stream has it; a missed push is read later
            await self.conn.publish(push_subject, self.signer.sign(f"event/{push_subject}", pushed))


A = TypeVar("A", bound=Args)
TxApply = Callable[[Context, Transaction, A], Awaitable[Any]]
QueryAnswer = Callable[[Context, A], Awaitable[Any]]
CancelHook = Callable[[Context, Transaction, Any], Awaitable[None]]
# Where a kind is sent: the registry's transaction subject, or its own subject
# (`zos.bus.subjects`): the registering key's.
Route = Literal["tx", "register"]


@dataclass(frozen=True)
class TxRule:
    kind: str
    args: type[Args]
    apply: TxApply[Any]
    route: Route = "tx"


@dataclass(frozen=True)
class QueryRule:
    name: str
    args: type[Args]
    answer: QueryAnswer[Any]


@dataclass
class ObjectRules:
    """One registry object's transaction kinds, queries and cancel hooks."""

    name: str
    transactions: list[TxRule] = field(default_factory=list)
    queries: list[QueryRule] = field(default_factory=list)
    on_cancel: dict[str, CancelHook] = field(default_factory=dict)

    def tx(
        self, kind: str, args: type[A], *, route: Route = "tx"
    ) -> Callable[[TxApply[A]], TxApply[A]]:
        def add(apply: TxApply[A]) -> TxApply[A]:
            self.transactions.append(TxRule(kind, args, apply, route))
            return apply

        return add

    def query(self, name: str, args: type[A]) -> Callable[[QueryAnswer[A]], QueryAnswer[A]]:
        def add(answer: QueryAnswer[A]) -> QueryAnswer[A]:
            self.queries.append(QueryRule(name, args, answer))
            return answer

        return add

    def cancelled(self, contract_type: str) -> Callable[[CancelHook], CancelHook]:
        """What else a cancel does for contracts of `contract_type`."""

        def add(hook: CancelHook) -> CancelHook:
            self.on_cancel[contract_type] = hook
            return hook

        return add
