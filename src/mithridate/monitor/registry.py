"""The monitors by name."""

from __future__ import annotations

from mithridate.monitor.base import Monitor
from mithridate.monitor.cusum import CusumBank

MONITORS: dict[str, type[Monitor]] = {cls.name: cls for cls in (CusumBank,)}

__all__ = ["MONITORS"]
