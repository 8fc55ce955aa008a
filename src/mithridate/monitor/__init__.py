"""Monitor and respond: streaming monitors of a deployed model's inputs and errors, calibrated to an
expected number of events between false alarms (ERT). First step of issue 13: the protocol, calibration by
simulation, the per-feature CUSUM bank, the correlation bank, the error-rate chart and
``mithridate monitor replay``; alerts, the registry and rollback are not built yet (see docs/monitor.md)."""

from mithridate.monitor.base import Alarm, Monitor, MonitorError, load_state
from mithridate.monitor.correlation import CorrelationBank
from mithridate.monitor.cusum import CusumBank
from mithridate.monitor.error_rate import ErrorRate
from mithridate.monitor.registry import MONITORS

__all__ = ["MONITORS", "Alarm", "CorrelationBank", "CusumBank", "ErrorRate", "Monitor", "MonitorError", "load_state"]
