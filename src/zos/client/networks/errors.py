"""The one error the network planner raises: bad input, naming the field."""

from __future__ import annotations


class NetworkPlanError(ValueError):
    """An input the planner refuses; `field` names it (e.g. `nodes[2].node_id`)."""

    def __init__(self, field: str, rule: str) -> None:
        self.field = field
        self.rule = rule
        super().__init__(f"{field}: {rule}")
