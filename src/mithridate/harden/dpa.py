"""Deep Partition Aggregation (Levine & Feizi 2021): one member per partition of the rows, chosen by a
hash of each row's content; the plurality vote is certified against ``floor(lead / 2)`` inserted or
removed rows. Finite Aggregation with ``spread = 1`` (:mod:`.finite`)."""

from __future__ import annotations

from mithridate.harden.base import register
from mithridate.harden.finite import FiniteAggregation


@register
class DeepPartitionAggregation(FiniteAggregation):
    name = "dpa"

    def __init__(self, partitions: int = 50, classes: list | None = None, network: str = "auto",
                 epochs: int | None = None, random_state: int = 0):
        super().__init__(partitions, 1, classes, network, epochs, random_state)

    def get_params(self, deep: bool = True) -> dict:
        return {"partitions": self.partitions, "classes": self.classes, "network": self.network,
                "epochs": self.epochs, "random_state": self.random_state}
