"""The registry's objects, one module each, and the dispatch tables made from them.

Each module (`twins`, `farms`, `nodes`, `contracts`, `node_contracts`, `name_contracts`)
declares its `RULES` (`base.ObjectRules`): its transaction kinds with their argument
models and apply functions, its queries, and for a contract type what a cancel does.
A new object is one new module listed in OBJECTS (and, if it keeps new state, its
buckets in `store.BUCKETS`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TypeVar

from zos.registry.objects import contracts, farms, name_contracts, node_contracts, nodes, twins
from zos.registry.objects.base import CancelHook, ObjectRules, QueryRule, TxRule

OBJECTS: tuple[ObjectRules, ...] = (
    twins.RULES,
    farms.RULES,
    nodes.RULES,
    contracts.RULES,
    node_contracts.RULES,
    name_contracts.RULES,
)

V = TypeVar("V")


def index(pairs: Iterable[tuple[str, V]], what: str) -> dict[str, V]:
    """A table by name, refusing a name two objects both declare."""
    table: dict[str, V] = {}
    for name, value in pairs:
        if name in table:
            raise ValueError(f"{what} {name!r} is declared twice")
        table[name] = value
    return table


def transactions(objects: Iterable[ObjectRules]) -> dict[str, TxRule]:
    return index(((r.kind, r) for o in objects for r in o.transactions), "transaction kind")


def queries(objects: Iterable[ObjectRules]) -> dict[str, QueryRule]:
    return index(((r.name, r) for o in objects for r in o.queries), "query")


def cancel_hooks(objects: Iterable[ObjectRules]) -> dict[str, CancelHook]:
    return index((pair for o in objects for pair in o.on_cancel.items()), "cancel hook of")


TRANSACTIONS = transactions(OBJECTS)
QUERIES = queries(OBJECTS)
ON_CANCEL = cancel_hooks(OBJECTS)
TX_KINDS = tuple(TRANSACTIONS)
