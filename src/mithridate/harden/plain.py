"""No defence: one network on every row, the baseline every hardened trainer is measured against."""

from __future__ import annotations

from mithridate.harden.base import Trainer, register


@register
class Plain(Trainer):
    name = "none"

    def _fit(self, dataset):
        return [self._member(dataset)], {}
