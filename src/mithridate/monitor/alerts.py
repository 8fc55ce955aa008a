"""Alerts: rules in YAML turn monitor alarms and signals into alerts, sent to Alertmanager, a webhook (in
Alertmanager's own v4 webhook format), email or the log; one incident, one notification.

A rule fires when its condition has held for ``for``: a calibrated alarm of a monitor (``signal: alarm``,
optionally of one ``detector``) within the last ``window`` seconds, or a named signal at or above
``threshold``. The alert is sent when it fires and once more when it resolves. Rules are evaluated as
events arrive and on a clock tick (``LiveMonitor.tick``, every few seconds in ``monitor serve``), so an
alert on a stream that has gone quiet still resolves; while an alert fires, the tick re-sends it to
Alertmanager, which would otherwise resolve it by itself after its ``resolve_timeout`` (Alertmanager
deduplicates the repeats; webhooks and email get no repeats). A rule that fired does not notify again
within ``cooldown`` of its last notification, so a flapping condition is one incident.

>>> rules = parse_rules({"rules": [{"name": "InputDrift", "signal": "alarm", "severity": "page",
...                                 "labels": {"team": "ml-security"}}]})
>>> engine = AlertEngine(rules.rules)
>>> alarm = Alarm(event=812, detector="cusum", signal="carat up", statistic=9.1, threshold=8.0)
>>> [a.labels["alertname"] for a in engine.observe([alarm], now=100.0)]
['InputDrift']
>>> engine.observe([alarm], now=101.0)  # the same incident: no second notification
[]
>>> [a.status for a in engine.observe([], now=200.0)]  # quiet for the window: resolved once
['resolved']
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import smtplib
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from email.message import EmailMessage
from pathlib import Path
from typing import Protocol

import yaml

from mithridate.monitor.base import Alarm, MonitorError

SEVERITIES = ("info", "warning", "page", "critical")
log = logging.getLogger("mithridate.alerts")


def rfc3339(seconds: float) -> str:
    return datetime.fromtimestamp(seconds, UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


def duration(value, what: str) -> float:
    """``30``, ``"30s"``, ``"10m"``, ``"1h"`` -> seconds."""
    if isinstance(value, int | float) and not isinstance(value, bool) and value >= 0:
        return float(value)
    text = str(value).strip()
    units = {"ms": 0.001, "s": 1, "m": 60, "h": 3600, "d": 86400}
    for unit in sorted(units, key=len, reverse=True):
        if text.endswith(unit) and text[: -len(unit)].replace(".", "", 1).isdigit():
            return float(text[: -len(unit)]) * units[unit]
    raise MonitorError(f"{what}: {value!r} is not a duration (e.g. 30s, 10m, 1h)")


@dataclass(frozen=True)
class Rule:
    """One alerting rule (see the module's docstring)."""

    name: str
    signal: str = "alarm"
    detector: str | None = None
    threshold: float | None = None
    for_s: float = 0.0
    window_s: float = 60.0
    cooldown_s: float = 600.0
    severity: str = "warning"
    labels: dict = field(default_factory=dict)
    annotations: dict = field(default_factory=dict)


@dataclass(frozen=True)
class AlertConfig:
    rules: list[Rule]
    receivers: dict


@dataclass
class Alert:
    """An alert as Alertmanager's API v2 takes it."""

    labels: dict
    annotations: dict
    starts_at: float
    ends_at: float | None = None
    generator_url: str = ""

    @property
    def status(self) -> str:
        return "resolved" if self.ends_at is not None else "firing"

    @property
    def fingerprint(self) -> str:
        return hashlib.sha256(json.dumps(self.labels, sort_keys=True).encode()).hexdigest()[:16]

    def to_alertmanager(self) -> dict:
        body = {"labels": self.labels, "annotations": self.annotations, "startsAt": rfc3339(self.starts_at),
                "generatorURL": self.generator_url}
        if self.ends_at is not None:
            body["endsAt"] = rfc3339(self.ends_at)
        return body

    def to_webhook(self) -> dict:
        return {"status": self.status, "labels": self.labels, "annotations": self.annotations,
                "startsAt": rfc3339(self.starts_at),
                "endsAt": rfc3339(self.ends_at) if self.ends_at is not None else "0001-01-01T00:00:00Z",
                "generatorURL": self.generator_url, "fingerprint": self.fingerprint}


def webhook_payload(alerts: list[Alert], receiver: str = "mithridate", external_url: str = "") -> dict:
    """Alertmanager's webhook body (version 4) for ``alerts``, grouped by alert name."""
    common = dict(set.intersection(*(set(a.labels.items()) for a in alerts))) if alerts else {}
    shared = dict(set.intersection(*(set(a.annotations.items()) for a in alerts))) if alerts else {}
    group = {"alertname": common["alertname"]} if "alertname" in common else {}
    return {"version": "4", "groupKey": "{}:" + json.dumps(group, sort_keys=True), "truncatedAlerts": 0,
            "status": "firing" if any(a.status == "firing" for a in alerts) else "resolved",
            "receiver": receiver, "groupLabels": group, "commonLabels": common, "commonAnnotations": shared,
            "externalURL": external_url, "alerts": [a.to_webhook() for a in alerts]}


def parse_rules(doc: dict, where: str = "rules") -> AlertConfig:
    """Rules and receivers from a parsed YAML document; one-line errors naming the bad field."""
    if not isinstance(doc, dict) or not isinstance(doc.get("rules"), list) or not doc["rules"]:
        raise MonitorError(f"{where}: expected a mapping with a non-empty list `rules:`")
    known = {"name", "signal", "detector", "threshold", "for", "window", "cooldown", "severity", "labels",
             "annotations"}
    rules, names = [], set()
    for i, raw in enumerate(doc["rules"]):
        at = f"{where}: rule {i + 1}"
        if not isinstance(raw, dict) or not raw.get("name"):
            raise MonitorError(f"{at}: each rule needs a `name`")
        unknown = set(raw) - known
        if unknown:
            raise MonitorError(f"{at} ({raw['name']}): unknown field(s) {', '.join(sorted(unknown))}; "
                               f"known: {', '.join(sorted(known))}")
        name = str(raw["name"])
        if not name.replace("_", "").isalnum() or name in names:
            raise MonitorError(f"{at}: name {name!r} must be unique, letters, digits and '_'")
        names.add(name)
        signal = str(raw.get("signal", "alarm"))
        threshold = raw.get("threshold")
        if signal != "alarm" and not isinstance(threshold, int | float):
            raise MonitorError(f"{at} ({name}): signal {signal!r} needs a numeric `threshold`")
        severity = str(raw.get("severity", "warning"))
        if severity not in SEVERITIES:
            raise MonitorError(f"{at} ({name}): severity must be one of {', '.join(SEVERITIES)}")
        labels, annotations = raw.get("labels", {}) or {}, raw.get("annotations", {}) or {}
        if not isinstance(labels, dict) or not isinstance(annotations, dict):
            raise MonitorError(f"{at} ({name}): labels and annotations are mappings")
        rules.append(Rule(name=name, signal=signal, detector=raw.get("detector"),
                          threshold=None if threshold is None else float(threshold),
                          for_s=duration(raw.get("for", 0), f"{at} for"),
                          window_s=duration(raw.get("window", "60s"), f"{at} window"),
                          cooldown_s=duration(raw.get("cooldown", "10m"), f"{at} cooldown"), severity=severity,
                          labels={str(k): str(v) for k, v in labels.items()},
                          annotations={str(k): str(v) for k, v in annotations.items()}))
    receivers = doc.get("receivers", {}) or {}
    if not isinstance(receivers, dict) or set(receivers) - {"alertmanager", "webhook", "email", "log"}:
        raise MonitorError(f"{where}: receivers are alertmanager, webhook, email and log")
    return AlertConfig(rules, receivers)


def load_rules(path: str | Path) -> AlertConfig:
    path = Path(path)
    try:
        doc = yaml.safe_load(path.read_text())
    except OSError as exc:
        raise MonitorError(f"{path}: {exc.strerror or exc}") from None
    except yaml.YAMLError as exc:
        raise MonitorError(f"{path}: not YAML ({str(exc).splitlines()[0]})") from None
    return parse_rules(doc, str(path))


@dataclass
class _RuleState:
    since: float | None = None  # when the condition began holding
    last_seen: float | None = None  # the last matching alarm
    firing: Alert | None = None
    notified: float = float("-inf")


class AlertEngine:
    """Evaluates rules on each batch's alarms and signals; returns the alerts to notify (new firings,
    resolutions), each once."""

    def __init__(self, rules: list[Rule], source: str = "mithridate", clock: Callable[[], float] = time.time,
                 generator_url: str = ""):
        self.rules, self.source, self.clock, self.generator_url = rules, source, clock, generator_url
        self._state = {r.name: _RuleState() for r in rules}

    def active(self) -> list[Alert]:
        """Alerts firing now."""
        return [s.firing for s in self._state.values() if s.firing is not None]

    def observe(self, alarms: Iterable[Alarm], signals: dict[str, float] | None = None,
                now: float | None = None) -> list[Alert]:
        now = self.clock() if now is None else now
        alarms, signals = list(alarms), signals or {}
        out = []
        for rule in self.rules:
            state = self._state[rule.name]
            matched = [a for a in alarms if rule.detector in (None, a.detector)] if rule.signal == "alarm" else []
            if matched:
                state.last_seen = now
            if rule.signal == "alarm":
                holds = state.last_seen is not None and now - state.last_seen <= rule.window_s
            else:
                holds = signals.get(rule.signal, float("-inf")) >= rule.threshold
            if not holds:
                state.since = None
                if state.firing is not None:
                    state.firing.ends_at = now
                    out.append(state.firing)
                    state.firing = None
                continue
            state.since = now if state.since is None else state.since
            if state.firing is None and now - state.since >= rule.for_s and now - state.notified >= rule.cooldown_s:
                state.firing = self._alert(rule, matched, signals, now)
                state.notified = now
                out.append(state.firing)
        return out

    def _alert(self, rule: Rule, alarms: list[Alarm], signals: dict[str, float], now: float) -> Alert:
        labels = {"alertname": rule.name, "severity": rule.severity, "source": self.source, **rule.labels}
        annotations = dict(rule.annotations)
        if alarms:
            first = alarms[0]
            annotations.setdefault("summary", f"{first.detector}: {first.signal} (statistic {first.statistic:.3g} "
                                              f"over its calibrated threshold {first.threshold:.3g})")
            annotations["event"] = str(first.event)
            annotations["alarms"] = str(len(alarms))
        else:
            value = signals.get(rule.signal)
            annotations.setdefault("summary", f"{rule.signal} = {value:.4g} >= {rule.threshold:.4g}")
        return Alert(labels, annotations, starts_at=now, generator_url=self.generator_url)


# --- where alerts go ------------------------------------------------------------------------------------
class Sender(Protocol):
    name: str

    def send(self, alerts: list[Alert]) -> None: ...


def _post_json(url: str, body, timeout: float, headers: dict | None = None) -> None:
    import httpx

    response = httpx.post(url, json=body, timeout=timeout, headers=headers or {})
    response.raise_for_status()


@dataclass
class AlertmanagerSender:
    """Posts to a real Alertmanager's ``/api/v2/alerts``; it groups, deduplicates and routes."""

    url: str
    timeout: float = 5.0
    name: str = "alertmanager"

    def send(self, alerts: list[Alert]) -> None:
        _post_json(self.url.rstrip("/") + "/api/v2/alerts", [a.to_alertmanager() for a in alerts], self.timeout)


@dataclass
class WebhookSender:
    """Without an Alertmanager: posts Alertmanager's v4 webhook body straight to a URL (a chat bridge, an
    incident tool, another mithridate)."""

    url: str
    receiver: str = "mithridate"
    timeout: float = 5.0
    token_env: str | None = None
    name: str = "webhook"

    def send(self, alerts: list[Alert]) -> None:
        token = os.environ.get(self.token_env) if self.token_env else None
        _post_json(self.url, webhook_payload(alerts, self.receiver), self.timeout,
                   {"Authorization": f"Bearer {token}"} if token else None)


@dataclass
class EmailSender:
    """One email per notification over SMTP (STARTTLS when asked; the password from an environment
    variable, never from the rules file)."""

    host: str
    to: list[str]
    sender: str = "mithridate@localhost"
    port: int = 25
    starttls: bool = False
    user: str | None = None
    password_env: str | None = None
    timeout: float = 10.0
    name: str = "email"

    def send(self, alerts: list[Alert]) -> None:
        message = EmailMessage()
        firing = [a for a in alerts if a.status == "firing"]
        head = firing[0] if firing else alerts[0]
        message["Subject"] = (f"[{head.status.upper()}] {head.labels['alertname']} ({head.labels.get('severity')})"
                              + (f" and {len(alerts) - 1} more" if len(alerts) > 1 else ""))
        message["From"], message["To"] = self.sender, ", ".join(self.to)
        message.set_content("\n\n".join(
            f"{a.status}: {a.labels['alertname']}\nlabels: {json.dumps(a.labels, sort_keys=True)}\n"
            + "\n".join(f"{k}: {v}" for k, v in sorted(a.annotations.items())) + f"\nsince: {rfc3339(a.starts_at)}"
            for a in alerts))
        with smtplib.SMTP(self.host, self.port, timeout=self.timeout) as smtp:
            if self.starttls:
                smtp.starttls()
            if self.user:
                smtp.login(self.user, os.environ.get(self.password_env or "", ""))
            smtp.send_message(message)


@dataclass
class LogSender:
    name: str = "log"

    def send(self, alerts: list[Alert]) -> None:
        for a in alerts:
            log.warning("%s %s %s", a.status, a.labels["alertname"], json.dumps(a.annotations, sort_keys=True))


def senders_for(receivers: dict) -> list:
    """The senders a rules file's ``receivers:`` names (the log when it names none)."""
    out: list = []
    if "alertmanager" in receivers:
        out.append(AlertmanagerSender(str(receivers["alertmanager"])))
    if "webhook" in receivers:
        hook = receivers["webhook"]
        out.append(WebhookSender(hook) if isinstance(hook, str) else WebhookSender(**hook))
    if "email" in receivers:
        mail = {"sender" if k == "from" else k: v for k, v in dict(receivers["email"]).items()}
        mail["to"] = [mail["to"]] if isinstance(mail.get("to"), str) else mail.get("to")
        if not mail.get("host") or not mail.get("to"):
            raise MonitorError("receivers: email needs host and to")
        out.append(EmailSender(**mail))
    if receivers.get("log") or not out:
        out.append(LogSender())
    return out


@dataclass
class Dispatcher:
    """Sends each notification to every sender, retrying a failed one a few times; a receiver that stays
    down is logged and counted, never a crash of the monitor."""

    senders: list
    retries: int = 3
    backoff_s: float = 0.5
    on_result: Callable[[str, bool], None] | None = None
    failures: list[str] = field(default_factory=list)

    def send(self, alerts: list[Alert], only: type | None = None) -> None:
        """Every alert to every sender (with ``only``, to the senders of that class)."""
        if not alerts:
            return
        for sender in self.senders:
            if only is not None and not isinstance(sender, only):
                continue
            for attempt in range(self.retries):
                try:
                    sender.send(alerts)
                    ok = True
                    break
                except Exception as exc:  # a receiver down or refusing: retried, then logged
                    ok = False
                    error = f"{sender.name}: {type(exc).__name__}: {str(exc).splitlines()[0] if str(exc) else ''}"
                    time.sleep(self.backoff_s * (2 ** attempt))
            if not ok:
                self.failures.append(error)
                log.error("alert not delivered: %s", error)
            if self.on_result is not None:
                self.on_result(sender.name, ok)
