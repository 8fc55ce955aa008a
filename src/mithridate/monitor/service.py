"""``mithridate monitor serve``: the live monitor as a service. It ingests events, raises calibrated alarms,
turns them into alerts (rules, Alertmanager, webhook, email), serves Prometheus ``/metrics`` and a live page,
and takes Alertmanager's webhook so that any Prometheus rule can trigger a rollback in the registry.

Endpoints (``Authorization: Bearer <vault token>`` on every one but ``/metrics`` and the page, when a vault
is attached):

- ``POST /events``: ``{"rows": [{column: value, ...}, ...]}``, rows in time order;
- ``GET /metrics``: Prometheus exposition;
- ``POST /alertmanager``: Alertmanager's v4 webhook; a firing alert labelled ``action: rollback`` and
  ``model: MODEL@N`` (or ``MODEL@ALIAS``, the version it serves now) rolls that model back;
- ``GET /api/state`` and ``GET /``: what the page shows (level over time, alarms, alerts, aliases, responses).
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections import OrderedDict, deque
from collections.abc import Callable
from importlib import resources

import pandas as pd
from fastapi import Request  # at module level: FastAPI reads the endpoints' annotations from here

from mithridate.errors import DataError, MithridateError
from mithridate.monitor.alerts import AlertConfig, AlertEngine, AlertmanagerSender, Dispatcher, Rule, senders_for
from mithridate.monitor.base import Alarm
from mithridate.monitor.cusum import CusumBank
from mithridate.monitor.metrics import CONTENT_TYPE, MonitorMetrics
from mithridate.monitor.replay import encode, reference_matrix
from mithridate.validate.profile import Profile

DEFAULT_RULES = [Rule(name="InputDrift", signal="alarm", severity="page",
                      annotations={"description": "the live inputs left the verified baseline (calibrated alarm)"})]
MAX_ROWS = 100_000
log = logging.getLogger("mithridate.monitor")
MAX_BODY = 64 << 20  # bytes of one request's JSON
MAX_HANDLED = 10_000  # alert instances remembered as handled
CLOCK_SKEW_S = 300  # an alert may say it began this much in the future (clocks differ), no more


class LiveMonitor:
    """The default input monitor over a baseline, its alert rules and receivers, its metrics, and a short
    history for the page. Thread-safe: the service's workers share one."""

    def __init__(self, profile: Profile, ert: float = 10_000, rules: AlertConfig | None = None,
                 senders: list | None = None, shift: float = 0.5, history: int = 600,
                 clock: Callable[[], float] = time.time, random_state: int = 0, resend_s: float = 60.0):
        reference, names = reference_matrix(profile)
        self.profile, self.clock = profile, clock
        self.bank = CusumBank(ert=ert, shift=shift, random_state=random_state).fit(reference, names)
        self.metrics = MonitorMetrics()
        self.metrics.ert.labels("inputs").set(ert)
        self.metrics.start("inputs", [self.bank.name])
        self.engine = AlertEngine(rules.rules if rules else DEFAULT_RULES, clock=clock)
        self.dispatcher = Dispatcher(senders if senders is not None else senders_for(rules.receivers if rules else {}),
                                     on_result=self.metrics.notified)
        self.history: deque[dict] = deque(maxlen=history)
        self.alarms: deque[dict] = deque(maxlen=200)
        self.alerts: deque[dict] = deque(maxlen=200)
        self.responses: deque[dict] = deque(maxlen=50)
        self._lock = threading.Lock()
        self.resend_s, self._resent = resend_s, clock()

    def ingest(self, frame: pd.DataFrame) -> dict:
        """Read rows (in time order); their alarms, and the alerts they raised (already sent)."""
        x = encode(self.profile, frame, "the events")
        with self._lock:
            alarms: list[Alarm] = self.bank.update(x)
            level = self.bank.level()
            now = self.clock()
            self.metrics.observe("inputs", len(x), alarms, {self.bank.name: level})
            notify = self.engine.observe(alarms, {"level": level}, now=now)
            self.history.append({"time": now, "events": self.bank.events_, "level": level,
                                 "peak": max([1.0] * bool(alarms) + [level])})
            self.alarms.extend({"time": now, **a.to_dict()} for a in alarms)
            self.alerts.extend({"time": now, "status": a.status, "labels": a.labels, "annotations": a.annotations}
                               for a in notify)
        self.dispatcher.send(notify)
        return {"events": self.bank.events_, "level": level, "alarms": [a.to_dict() for a in alarms],
                "alerts": [a.to_alertmanager() for a in notify]}

    def tick(self) -> list:
        """Evaluate the rules with no new event (a quiet stream's alert resolves) and, every ``resend_s``
        seconds, re-send the firing alerts to Alertmanager (which resolves what it stops hearing of).
        ``monitor serve`` calls it every few seconds; returns the notifications it sent."""
        with self._lock:
            now = self.clock()
            notify = self.engine.observe([], {"level": self.bank.level()}, now=now)
            self.alerts.extend({"time": now, "status": a.status, "labels": a.labels, "annotations": a.annotations}
                               for a in notify)
            firing = self.engine.active() if now - self._resent >= self.resend_s else []
            if firing:
                self._resent = now
        self.dispatcher.send(notify)
        self.dispatcher.send(firing, only=AlertmanagerSender)
        return notify

    def start_ticking(self, every_s: float = 5.0) -> threading.Event:
        """Call :meth:`tick` every ``every_s`` seconds in a daemon thread until the returned event is set."""
        stop = threading.Event()

        def loop() -> None:
            while not stop.wait(every_s):
                try:
                    self.tick()
                except Exception:  # a tick that failed is logged; the next one tries again
                    log.exception("monitor tick failed")

        threading.Thread(target=loop, name="mithridate-monitor-tick", daemon=True).start()
        return stop

    def state(self) -> dict:
        with self._lock:
            return {"events": self.bank.events_, "ert": self.bank.ert, "history": list(self.history),
                    "alarms": list(self.alarms)[-50:], "alerts": list(self.alerts)[-50:],
                    "firing": [a.to_alertmanager() for a in self.engine.active()],
                    "responses": list(self.responses)[-10:], "delivery_failures": self.dispatcher.failures[-10:]}


def make_app(live: LiveMonitor, vault=None):
    """The FastAPI application. With ``vault`` (a folder's :class:`~mithridate.vault.core.Vault` or the service's
    :class:`~mithridate.vault.client.RemoteVault`), every call but ``/metrics`` and the page needs a vault
    token, and each call acts as its caller: a rollback asked through Alertmanager's webhook is the vault's
    rollback by the holder of the token Alertmanager sends (a deployer's), allowed or denied by the vault."""
    from fastapi import FastAPI, HTTPException
    from fastapi.responses import HTMLResponse, Response
    from starlette.concurrency import run_in_threadpool

    app = FastAPI(title="mithridate monitor", docs_url=None, redoc_url=None)
    handled: OrderedDict[tuple, None] = OrderedDict()  # the alerts that rolled back, newest last (bounded)

    def caller(request: Request) -> str | None:
        """The caller's token, checked by the vault (None without a vault)."""
        if vault is None:
            return None
        auth = request.headers.get("authorization", "")
        token = auth[7:].strip() if auth.lower().startswith("bearer ") else None
        from mithridate.vault.errors import VaultError

        try:
            vault.whoami(token)
        except VaultError as exc:
            raise HTTPException(401, str(exc)) from None
        return token

    async def read(request: Request, valid: Callable[[dict], bool], expected: str) -> tuple[str | None, dict]:
        """The caller's token, then the JSON body if ``valid`` accepts it, else a 422 saying what is expected."""
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > MAX_BODY):
            raise HTTPException(413, f"request body over the limit of {MAX_BODY} bytes")
        token = await run_in_threadpool(caller, request)
        try:
            raw = await request.body()
            if len(raw) > MAX_BODY:
                raise HTTPException(413, f"request body over the limit of {MAX_BODY} bytes")
            body = json.loads(raw)
            if not valid(body):
                raise ValueError
        except HTTPException:
            raise
        except Exception:
            raise HTTPException(422, expected) from None
        return token, body

    @app.post("/events")
    async def events(request: Request) -> dict:
        _, body = await read(request, lambda b: isinstance(b["rows"], list) and 0 < len(b["rows"]) <= MAX_ROWS
                             and all(isinstance(r, dict) for r in b["rows"]),
                             f'send {{"rows": [{{column: value}}, ...]}}, 1 to {MAX_ROWS} rows')
        try:
            return await run_in_threadpool(live.ingest, pd.DataFrame.from_records(body["rows"]))
        except (DataError, MithridateError, ValueError, TypeError) as exc:
            raise HTTPException(422, str(exc).splitlines()[0] if str(exc) else type(exc).__name__) from None

    @app.get("/metrics")
    def metrics() -> Response:
        return Response(live.metrics.exposition(), media_type=CONTENT_TYPE)

    @app.post("/alertmanager")
    async def alertmanager(request: Request) -> dict:
        token, body = await read(request, lambda b: str(b.get("version")) == "4" and isinstance(b["alerts"], list),
                                 "expected Alertmanager's webhook body (version 4)")
        done = []
        for alert in body["alerts"]:
            labels = alert.get("labels", {}) if isinstance(alert, dict) else {}
            if not isinstance(labels, dict) or alert.get("status") != "firing" or \
                    labels.get("action") != "rollback" or not labels.get("model"):
                continue
            if vault is None:
                raise HTTPException(409, "rollback asked, but no vault is attached (monitor serve --vault)")
            # Alertmanager repeats a firing alert's notification: one alert (its labels and start) rolls back
            # once, or a rollback by alias would next take down the model it had just moved to
            since = str(alert.get("startsAt", ""))
            instance = (tuple(sorted((str(k), str(v)) for k, v in labels.items())), since)
            if instance in handled:
                continue
            began = parse_time(since)
            if began is None or began > time.time() + CLOCK_SKEW_S:
                done.append({"model": str(labels["model"]), "error": f"startsAt {since!r} is not a time in the past",
                             "time": time.time()})
                continue
            result = await run_in_threadpool(respond, vault, token, str(labels["model"]),
                                             str(labels.get("alertname", "alert")), since)
            if "error" not in result:  # a failure is tried again when Alertmanager repeats the alert
                handled[instance] = None
                while len(handled) > MAX_HANDLED:
                    handled.popitem(last=False)
            done.append(result)
        with live._lock:
            live.responses.extend(done)
        if any(r.get("moves") for r in done):
            live.metrics.rollbacks.inc(sum(1 for r in done if r.get("moves")))
        return {"responses": done}

    @app.get("/api/state")
    def state(request: Request) -> dict:
        token = caller(request)
        out = live.state()
        if vault is not None:
            from mithridate.vault.errors import VaultError

            try:  # what the caller may see
                out["aliases"] = vault.aliases(token)
            except VaultError:
                out["aliases"] = []
        return out

    @app.get("/", response_class=HTMLResponse)
    def page() -> str:
        return resources.files("mithridate.report").joinpath("monitor.html").read_text()

    return app


def respond(vault, token: str, model: str, why: str, since: str = "") -> dict:
    """Roll back the model ``model`` names: ``MODEL@N``, or ``MODEL@ALIAS``, what that alias serves now,
    unless the alias was moved after the alert began (``since``, RFC 3339): the model the alert was about
    no longer serves, and a repeated notification (Alertmanager repeats them; a restarted service forgets
    what it handled) must not take down the model it was rolled back to."""
    from mithridate.vault.errors import VaultError

    try:
        name, _, target = model.rpartition("@")
        if not name:
            raise VaultError(f"label model={model!r}: name MODEL@ALIAS or MODEL@N")
        if not target.isdigit():
            moved = next((a["updated"] for a in vault.aliases(token, name) if a["alias"] == target), None)
            began = parse_time(since)
            if moved is not None and began is not None and parse_time(moved) >= began:
                return {"model": model, "skipped": f"{model} moved at {moved}, after the alert began ({since})",
                        "moves": [], "time": time.time()}
        ref = model if target.isdigit() else vault.resolve(token, model)["model"]
        result = vault.rollback(token, ref, reason=f"alert {why}")
        return {"model": ref, "response": result["response"], "moves": result["moves"],
                "stranded": result["stranded"], "time": time.time()}
    except Exception as exc:  # denied, unknown, the vault unreachable: said, and tried again on the repeat
        return {"model": model, "error": str(exc).splitlines()[0] if str(exc) else type(exc).__name__,
                "time": time.time()}


def parse_time(text: str) -> float | None:
    """RFC 3339 (Alertmanager's nanoseconds included) -> seconds since the epoch; None if unreadable.

    >>> round(parse_time("2026-11-30T13:50:31.512345678Z") - parse_time("2026-11-30T13:50:31Z"), 6)
    0.512345
    """
    import re
    from datetime import UTC, datetime

    trimmed = re.sub(r"(\.\d{6})\d+", r"\1", text.strip()).replace("Z", "+00:00")
    try:
        moment = datetime.fromisoformat(trimmed)
    except ValueError:
        return None
    return (moment if moment.tzinfo else moment.replace(tzinfo=UTC)).timestamp()


def run(reference, ert: float = 10_000, rules=None, vault_path=None, host: str = "127.0.0.1", port: int = 9464,
        cert=None, key=None, client_ca=None) -> None:
    """Calibrate the monitor on the baseline ``reference`` and serve it until interrupted (TLS as the
    vault's service does it)."""
    import uvicorn

    from mithridate.monitor.alerts import load_rules
    from mithridate.vault.server import server_config

    config = load_rules(rules) if rules is not None else None
    live = LiveMonitor(Profile.load(reference), ert=ert, rules=config)
    vault = None
    if vault_path is not None:  # a folder, or the vault's HTTPS service (its CA from $MITHRIDATE_VAULT_CA)
        import os

        from mithridate.vault import connect

        remote = str(vault_path).startswith(("https://", "http://"))
        vault = connect(str(vault_path), **({"ca": os.environ.get("MITHRIDATE_VAULT_CA")} if remote else {}))
    stop = live.start_ticking()
    try:
        uvicorn.Server(server_config(make_app(live, vault), host, port, cert, key, client_ca)).run()
    finally:
        stop.set()
        if vault is not None:
            vault.close()
