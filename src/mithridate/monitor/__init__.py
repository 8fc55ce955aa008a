"""Monitor and respond: streaming monitors of a deployed model's inputs, outputs and errors, calibrated to an
expected number of events between false alarms (ERT): the protocol, calibration by simulation, the
per-feature CUSUM bank, the correlation and kernel banks, the error-rate chart, ``mithridate monitor
replay``; alerts (alerts.py), Prometheus metrics (metrics.py) and ``mithridate monitor serve``
(service.py); per-request checks for image models (strip.py) and canary inputs (canary.py). The model
registry and rollback live in the vault (``mithridate.vault.models``). See docs/monitor.md."""

from mithridate.monitor.base import Alarm, Monitor, MonitorError, load_state
from mithridate.monitor.correlation import CorrelationBank
from mithridate.monitor.cusum import CusumBank
from mithridate.monitor.error_rate import ErrorRate
from mithridate.monitor.kernel import KernelBank
from mithridate.monitor.registry import MONITORS

__all__ = ["MONITORS", "Alarm", "CorrelationBank", "CusumBank", "ErrorRate", "KernelBank", "Monitor", "MonitorError",
           "load_state"]
