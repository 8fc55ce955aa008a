"""The monitor's Prometheus metrics, named as Prometheus asks (``mithridate_<what>_<unit>``, counters ending
in ``_total``), with bounded labels only (the monitor and its detector, never a row or a value).

>>> metrics = MonitorMetrics()
>>> metrics.observe("inputs", events=100, alarms=[Alarm(5, "cusum", "x up", 9.0, 8.0)], ratio={"cusum": 1.1})
>>> b"mithridate_monitor_alarms_total" in metrics.exposition()
True
"""

from __future__ import annotations

from collections.abc import Iterable

from prometheus_client import CollectorRegistry, Counter, Gauge, generate_latest

from mithridate.monitor.base import Alarm

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class MonitorMetrics:
    """One registry per service (never the process-wide default, so tests and workers stay apart)."""

    def __init__(self) -> None:
        self.registry = CollectorRegistry(auto_describe=True)
        self.events = Counter("mithridate_monitor_events", "Events the monitor has read.", ["monitor"],
                              registry=self.registry)
        self.alarms = Counter("mithridate_monitor_alarms", "Calibrated alarms raised.", ["monitor", "detector"],
                              registry=self.registry)
        self.ratio = Gauge("mithridate_monitor_statistic_threshold_ratio",
                           "Largest statistic over its calibrated threshold (an alarm at 1).", ["monitor", "detector"],
                           registry=self.registry)
        self.ert = Gauge("mithridate_monitor_expected_run_length_events",
                         "Expected events between false alarms the monitor was calibrated to.", ["monitor"],
                         registry=self.registry)
        self.notifications = Counter("mithridate_alert_notifications", "Alert notifications sent, by receiver "
                                     "and outcome.", ["receiver", "outcome"], registry=self.registry)
        self.rollbacks = Counter("mithridate_registry_rollbacks", "Responses that moved serving aliases.",
                                 registry=self.registry)

    def start(self, monitor: str, detectors: list[str]) -> None:
        """Publish every series at zero before the first event: Prometheus's ``increase()`` sees no rise in a
        counter whose first sample already counts an alarm."""
        self.events.labels(monitor)
        for detector in detectors:
            self.alarms.labels(monitor, detector)
            self.ratio.labels(monitor, detector)

    def observe(self, monitor: str, events: int, alarms: Iterable[Alarm], ratio: dict[str, float]) -> None:
        self.events.labels(monitor).inc(events)
        for alarm in alarms:
            self.alarms.labels(monitor, alarm.detector).inc()
        for detector, value in ratio.items():
            self.ratio.labels(monitor, detector).set(value)

    def notified(self, receiver: str, ok: bool) -> None:
        self.notifications.labels(receiver, "sent" if ok else "failed").inc()

    def exposition(self) -> bytes:
        return generate_latest(self.registry)
