"""The monitors by name."""

from __future__ import annotations

from mithridate.monitor.base import Monitor
from mithridate.monitor.correlation import CorrelationBank
from mithridate.monitor.cusum import CusumBank
from mithridate.monitor.error_rate import ErrorRate
from mithridate.monitor.kernel import KernelBank

MONITORS: dict[str, type[Monitor]] = {cls.name: cls for cls in (CusumBank, ErrorRate, CorrelationBank, KernelBank)}

__all__ = ["MONITORS"]
