"""The registry's dispatch tables, derived from its object modules (no NATS needed)."""

from __future__ import annotations

import typing
from typing import Any

import pytest
from pydantic import ValidationError

from zos.registry.models import Contract
from zos.registry.objects import (
    OBJECTS,
    ON_CANCEL,
    QUERIES,
    TRANSACTIONS,
    TX_KINDS,
    base,
    queries,
    transactions,
)
from zos.registry.service import OWN_SUBJECT
from zos.registry.tx import Transaction

# The wire's kinds and queries: a module left out of OBJECTS would drop some.
WIRE_KINDS = {
    "register_twin",
    "rotate_key",
    "create_farm",
    "register_node",
    "remove_node",
    "set_node_public_config",
    "create_node_contract",
    "update_node_contract",
    "cancel_contract",
    "create_name_contract",
    "cancel_name_contract",
}
WIRE_QUERIES = {
    "get_twin",
    "twin_by_key",
    "get_farm",
    "farm_by_name",
    "list_farms",
    "get_node",
    "node_by_twin",
    "list_nodes",
    "get_contract",
    "get_name_contract",
    "list_contracts",
    "contract_events",
}


def test_tables_cover_the_wire() -> None:
    assert set(TX_KINDS) == set(TRANSACTIONS) >= WIRE_KINDS
    assert set(QUERIES) >= WIRE_QUERIES
    for kind in TX_KINDS:  # every kind fits the pattern a transaction's kind must match
        assert Transaction(id="0" * 32, kind=kind, twin=0, body={}, timestamp=0).kind == kind


def test_own_subjects() -> None:
    assert OWN_SUBJECT == {"register": "register_twin"}
    # Heartbeats are signed statuses in their own stream (`heartbeats`), not transactions.
    assert "heartbeat" not in TRANSACTIONS


def test_every_argument_model_refuses_unknown_fields() -> None:
    models = [r.args for r in TRANSACTIONS.values()] + [q.args for q in QUERIES.values()]
    for model in models:
        assert issubclass(model, base.Args)
        with pytest.raises(ValidationError, match="extra"):
            model.model_validate({"surprise": 1})


def test_every_contract_type_has_a_cancel_hook() -> None:
    # Without one, a cancelled name would stay taken, or a node would never hear of it.
    (union, *_) = typing.get_args(Contract)
    types = {typing.get_args(m.model_fields["type"].annotation)[0] for m in typing.get_args(union)}
    assert set(ON_CANCEL) == types == {"node", "name"}


def test_a_new_object_is_one_more_module() -> None:
    extra = base.ObjectRules("widgets")

    @extra.tx("create_widget", base.IdArgs)
    async def create(ctx: base.Context, tx: Transaction, args: base.IdArgs) -> Any:
        return args.id

    @extra.query("get_widget", base.IdArgs)
    async def get(ctx: base.Context, args: base.IdArgs) -> Any:
        return args.id

    assert transactions((*OBJECTS, extra))["create_widget"].apply is create
    assert queries((*OBJECTS, extra))["get_widget"].answer is get


def test_a_kind_declared_twice_is_refused() -> None:
    twice = base.ObjectRules("twice")
    twice.tx("create_farm", base.IdArgs)(TRANSACTIONS["create_farm"].apply)
    with pytest.raises(ValueError, match="'create_farm' is declared twice"):
        transactions((*OBJECTS, twice))
    again = base.ObjectRules("again")
    again.query("get_node", base.IdArgs)(QUERIES["get_node"].answer)
    with pytest.raises(ValueError, match="'get_node' is declared twice"):
        queries((*OBJECTS, again))
