"""The vault's HTTPS service: real TLS on loopback, concurrency, limits, mutual TLS, the CLI against it."""

from __future__ import annotations

import datetime
import io
import json
import socket
import ssl
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pandas as pd
import pytest
import uvicorn
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID
from typer.testing import CliRunner

from mithridate.cli import app as cli_app
from mithridate.vault import AccessDenied, Conflict, IntegrityError, TooLarge, VaultError
from mithridate.vault.client import RemoteVault
from mithridate.vault.core import Vault
from mithridate.vault.server import create_app, server_config


# --- a throwaway PKI ----------------------------------------------------------------------------------
def _key():
    return ec.generate_private_key(ec.SECP256R1())


def _write(path: Path, *pems: bytes) -> Path:
    path.write_bytes(b"".join(pems))
    return path


def _pem_key(key) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _cert(subject: str, key, issuer_cert, issuer_key, *, ca: bool = False, server: bool = False):
    now = datetime.datetime.now(datetime.UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, subject)])
    builder = (x509.CertificateBuilder().subject_name(name)
               .issuer_name(issuer_cert.subject if issuer_cert else name).public_key(key.public_key())
               .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=5))
               .not_valid_after(now + datetime.timedelta(days=1))
               .add_extension(x509.BasicConstraints(ca=ca, path_length=None), critical=True))
    if ca:
        builder = builder.add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                                      content_commitment=False, key_encipherment=False,
                                                      data_encipherment=False, key_agreement=False,
                                                      encipher_only=False, decipher_only=False), critical=True)
    elif server:
        builder = builder.add_extension(x509.SubjectAlternativeName(
            [x509.DNSName("localhost"), x509.IPAddress(__import__("ipaddress").ip_address("127.0.0.1"))]),
            critical=False).add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
    else:
        builder = builder.add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
    return builder.sign(issuer_key or key, hashes.SHA256())


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    d = tmp_path_factory.mktemp("pki")
    ca_key = _key()
    ca = _cert("test CA", ca_key, None, None, ca=True)
    server_key, client_key = _key(), _key()
    server = _cert("localhost", server_key, ca, ca_key, server=True)
    client = _cert("pipeline-7", client_key, ca, ca_key)
    pem = serialization.Encoding.PEM
    return {"ca": _write(d / "ca.pem", ca.public_bytes(pem)),
            "cert": _write(d / "server.pem", server.public_bytes(pem)),
            "key": _write(d / "server.key", _pem_key(server_key)),
            "client_cert": _write(d / "client.pem", client.public_bytes(pem)),
            "client_key": _write(d / "client.key", _pem_key(client_key))}


class Serving:
    """uvicorn in a thread on a loopback socket bound before it starts (no port race)."""

    def __init__(self, vault: Vault, pki: dict | None, client_ca: bool = False):
        sock = socket.socket()
        sock.bind(("127.0.0.1", 0))
        self.port = sock.getsockname()[1]
        tls = pki is not None
        config = server_config(create_app(vault, tls=tls), "127.0.0.1", self.port,
                               pki["cert"] if tls else None, pki["key"] if tls else None,
                               pki["ca"] if client_ca else None)
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, kwargs={"sockets": [sock]}, daemon=True)
        self.thread.start()
        deadline = time.time() + 30
        while not self.server.started and time.time() < deadline:
            time.sleep(0.02)
        assert self.server.started
        self.url = f"{'https' if tls else 'http'}://127.0.0.1:{self.port}"

    def stop(self) -> None:
        self.server.should_exit = True
        self.thread.join(10)


def csv_bytes(n: int, seed: int, start: int = 0) -> bytes:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"id": np.arange(start, start + n), "x": rng.normal(size=n).round(5),
                         "label": rng.choice(["a", "b"], n)}).to_csv(index=False).encode()


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def service(request, tmp_path_factory, pki):
    """The vault service, with its catalog in SQLite and (the multi-user deployment) in PostgreSQL."""
    db_url = request.getfixturevalue("postgres")() if request.param == "postgresql" else None
    root = tmp_path_factory.mktemp("served") / "vault"
    vault, admin = Vault.init(root, checks="schema", chunk_size=1 << 14, max_upload_bytes=4 << 20, db_url=db_url)
    assert vault.db.sqlite == (request.param == "sqlite")
    tokens = {"admin": admin}
    for role in ("contributor", "steward", "trainer", "auditor"):
        tokens[role] = vault.add_user(admin, f"the-{role}", [role])
    serving = Serving(vault, pki)
    yield serving, vault, tokens
    serving.stop()
    vault.close()


@pytest.fixture
def remote(service, pki):
    client = RemoteVault(service[0].url, ca=pki["ca"])
    yield client
    client.close()


def test_remote_vault_round_trip_over_tls(service, remote):
    _, _, tokens = service
    data = csv_bytes(3000, 0)
    up = remote.put(tokens["contributor"], "served", io.BytesIO(data), "s.csv", source="api", label="label")
    assert up["status"] == "quarantined" and up["rows"] == 3000
    ref = remote.approve(tokens["steward"], up["upload"])
    body, parts = remote.read(tokens["trainer"], ref)
    assert b"".join(parts) == data and body["rows"] == 3000 and len(body["file"]["chunks"]) > 2
    assert remote.whoami(tokens["trainer"]) == {"name": "the-trainer", "roles": ["trainer"]}
    assert remote.trace(tokens["auditor"], "api")["versions"][0]["version"] == ref
    assert remote.verify(tokens["auditor"])["ok"]
    assert remote.log(tokens["auditor"], action="upload.approve")[-1]["target"] == up["upload"]


def test_denials_and_bad_tokens_over_http(service, remote, pki):
    serving, _, tokens = service
    with pytest.raises(AccessDenied, match=r"may not version\.read"):
        remote.read(tokens["contributor"], "served")
    with pytest.raises(AccessDenied, match="invalid, revoked or missing token"):
        remote.datasets("mth_" + "1" * 32 + "_" + "x" * 43)
    with httpx.Client(verify=ssl.create_default_context(cafile=str(pki["ca"]))) as http:
        response = http.get(f"{serving.url}/v1/datasets")
    assert response.status_code == 401 and response.headers["www-authenticate"] == "Bearer"
    assert response.headers["strict-transport-security"].startswith("max-age=")


def test_plain_http_is_refused_on_the_tls_port(service):
    serving, _, tokens = service
    with pytest.raises(httpx.TransportError):
        httpx.get(serving.url.replace("https://", "http://") + "/v1/info", timeout=10)
    with pytest.raises(httpx.TransportError):
        httpx.post(serving.url.replace("https://", "http://") + "/v1/datasets/x/uploads?source=s&filename=f.csv",
                   headers={"authorization": f"Bearer {tokens['contributor']}"}, content=b"a,label\n1,x\n", timeout=10)


def test_oversized_and_malformed_requests_are_rejected_cleanly(service, remote, pki):
    serving, vault, tokens = service
    big = b"x,label\n" + b"1,a\n" * ((5 << 20) // 4)
    before = vault.uploads(tokens["steward"])
    with pytest.raises(TooLarge):  # declared length over the limit: refused before reading
        remote.put(tokens["contributor"], "big", io.BytesIO(big), "big.csv", source="s")

    class Pipe(io.RawIOBase):  # no length known: chunked, refused while streaming
        def __init__(self):
            self.inner = io.BytesIO(big)

        def read(self, n=-1):
            return self.inner.read(n)

    with pytest.raises(TooLarge):
        remote.put(tokens["contributor"], "big", Pipe(), "big.csv", source="s")
    assert vault.uploads(tokens["steward"]) == before
    context = ssl.create_default_context(cafile=str(pki["ca"]))
    auth = {"authorization": f"Bearer {tokens['admin']}"}
    with httpx.Client(base_url=serving.url + "/v1", verify=context, headers=auth) as http:
        assert http.post("/users", content=b"{not json", headers={"content-type": "application/json"}
                         ).status_code == 422
        assert http.post("/users", json={"name": "x", "roles": "admin"}).status_code == 422
        assert http.post("/users", json={"name": "../x", "roles": ["trainer"]}).json()["kind"] == "bad_request"
        assert http.post("/users", content=b"{" + b" " * (100 << 10) + b"}",
                         headers={"content-type": "application/json"}).status_code == 413
        assert http.get("/versions/%00/content").status_code in (400, 403)
        assert http.get("/nowhere").status_code == 404


def test_inputs_that_gave_500s_get_a_4xx_in_the_error_shape(service, remote, pki):
    serving, _, tokens = service
    data = csv_bytes(50, 21)
    up = remote.put(tokens["contributor"], "unicode", io.BytesIO(data), "données-ü-日本.csv", source="api")
    ref = remote.approve(tokens["steward"], up["upload"])
    assert b"".join(remote.read(tokens["trainer"], ref)[1]) == data  # a non-Latin-1 file name downloads
    context = ssl.create_default_context(cafile=str(pki["ca"]))

    def http(token: str) -> httpx.Client:
        return httpx.Client(base_url=serving.url + "/v1", verify=context, headers={"authorization": f"Bearer {token}"})

    with http(tokens["trainer"]) as client:
        got = client.get(f"/versions/{ref}/content")
        assert got.status_code == 200 and "filename*=UTF-8''donn%C3%A9es" in got.headers["content-disposition"]
        huge = client.get("/versions/unicode@99999999999999999999999/manifest")
        assert huge.status_code == 400 and huge.json()["kind"] == "bad_request"
    remote.hold(tokens["admin"], ref, retain_until="2031-01-01")  # no time zone, then one with
    assert remote.hold(tokens["admin"], ref, retain_until="2032-01-01T00:00:00+02:00")["version"] == ref
    with pytest.raises(Conflict, match="only be extended"):
        remote.hold(tokens["admin"], ref, retain_until="2031-06-01T00:00:00+00:00")
    buf = io.BytesIO()
    np.savez(buf, X=np.zeros((3, 2)), y=np.array(1))
    with pytest.raises(VaultError, match="one entry per row"):  # a 0-d y
        remote.put(tokens["contributor"], "zero-d", io.BytesIO(buf.getvalue()), "z.npz", source="api")
    with http(tokens["admin"]) as client:
        bad = client.post("/users", json={"name": "x", "roles": "admin"})
        assert bad.status_code == 422 and set(bad.json()) == {"error", "kind"} and "roles" in bad.json()["error"]


def test_wrong_tokens_over_https_are_throttled_per_client(tmp_path, pki):
    vault, admin = Vault.init(tmp_path / "vault", checks="none")
    serving = Serving(vault, pki)
    try:
        context = ssl.create_default_context(cafile=str(pki["ca"]))
        with httpx.Client(base_url=serving.url + "/v1", verify=context) as http:
            codes = [http.get("/whoami", headers={"authorization": f"Bearer mth_{i:032x}_{'x' * 43}"})
                     for i in range(40)]
        assert [r.status_code for r in codes[:10]] == [401] * 10
        assert {r.status_code for r in codes[10:]} == {429} and int(codes[-1].headers["retry-after"]) >= 1
        assert codes[-1].json()["kind"] == "throttled"
        with httpx.Client(base_url=serving.url + "/v1", verify=context,
                          transport=httpx.HTTPTransport(local_address="127.0.0.2", verify=context)) as other:
            assert other.get("/whoami", headers={"authorization": f"Bearer {admin}"}).status_code == 200
        logged = [e for e in vault.audit.entries() if e["outcome"] == "denied"]
        assert len(logged) <= 10 + 2  # ten denials, then counted summaries (after 1 and 10 refusals)
    finally:
        serving.stop()
        vault.close()


def test_concurrent_uploads_from_several_clients_land_exactly_once(service, pki):
    serving, vault, tokens = service
    contributors = [vault.add_user(tokens["admin"], f"worker{i}", ["contributor"]) for i in range(6)]
    base = len(vault.uploads(tokens["steward"], dataset="crowd"))

    def upload(i: int) -> str:
        with RemoteVault(serving.url, ca=pki["ca"]) as client:
            data = csv_bytes(400 + i, seed=100 + i, start=i * 10_000)
            return client.put(contributors[i], "crowd", io.BytesIO(data), "c.csv", source=f"site-{i}")["upload"]

    with ThreadPoolExecutor(6) as pool:
        ids = list(pool.map(upload, range(6)))
    assert len(set(ids)) == 6
    rows = vault.uploads(tokens["steward"], dataset="crowd")
    assert len(rows) == base + 6 and sorted(r["source"] for r in rows) == [f"site-{i}" for i in range(6)]
    puts = [e for e in vault.audit.entries(action="upload.put") if e["target"].startswith("crowd/")]
    assert sorted(e["target"].split("/")[1] for e in puts) == sorted(ids)

    def approve(upload_id: str) -> str:
        with RemoteVault(serving.url, ca=pki["ca"]) as client:
            return client.approve(tokens["steward"], upload_id, force=True)

    with ThreadPoolExecutor(6) as pool:
        refs = list(pool.map(approve, ids))
    assert sorted(refs, key=lambda r: int(r.split("@")[1])) == [f"crowd@{n}" for n in range(1, 7)]
    assert vault.verify(tokens["auditor"])["ok"]


def test_mutual_tls_requires_a_client_certificate(tmp_path, pki):
    vault, admin = Vault.init(tmp_path / "mtls", checks="none")
    serving = Serving(vault, pki, client_ca=True)
    try:
        with RemoteVault(serving.url, ca=pki["ca"]) as anonymous, pytest.raises(VaultError, match="cannot reach"):
            anonymous.whoami(admin)
        with RemoteVault(serving.url, ca=pki["ca"], client_cert=pki["client_cert"],
                         client_key=pki["client_key"]) as client:
            assert client.whoami(admin)["name"] == "admin"
    finally:
        serving.stop()
        vault.close()


def test_client_detects_a_tampered_response(service, remote, monkeypatch):
    _, vault, tokens = service
    data = csv_bytes(500, 7)
    up = remote.put(tokens["contributor"], "tamper", io.BytesIO(data), "t.csv", source="api")
    remote.approve(tokens["steward"], up["upload"])
    original = vault.store.read

    def corrupted(blob):
        for i, part in enumerate(original(blob)):
            yield part if i != 0 else part[:-1] + bytes([part[-1] ^ 1])

    monkeypatch.setattr(vault.store, "read", corrupted)
    _, parts = remote.read(tokens["trainer"], "tamper")
    with pytest.raises(IntegrityError, match="does not match its hash"):
        b"".join(parts)


def test_a_service_answering_with_another_versions_manifest_is_caught(service, remote, monkeypatch):
    _, vault, tokens = service
    for seed in (1, 2):
        up = remote.put(tokens["contributor"], "repoint", io.BytesIO(csv_bytes(100, seed)), "r.csv", source="api")
        remote.approve(tokens["steward"], up["upload"])
    first = vault.signed_manifest(tokens["trainer"], "repoint@1")
    monkeypatch.setattr(vault, "signed_manifest", lambda token, ref: first)  # validly signed, wrong version
    with pytest.raises(IntegrityError, match="not what was asked"):
        remote.read(tokens["trainer"], "repoint@2")


def test_a_witness_is_checked_by_the_client_not_taken_from_the_service(service, remote, monkeypatch):
    _, vault, tokens = service
    head = remote.head(tokens["auditor"])
    assert remote.verify(tokens["auditor"], witness=head)["ok"]
    with pytest.raises(IntegrityError, match="witness"):
        remote.verify(tokens["auditor"], witness={**head, "body": {**head["body"], "hash": "0" * 64}})
    monkeypatch.setattr(vault, "log", lambda *a, **k: [])  # a service whose log was rolled back
    report = remote.verify(tokens["auditor"], witness=head)
    assert not report["ok"] and any("witnessed head" in p for p in report["problems"])


def test_cli_against_the_service(service, pki, tmp_path):
    serving, _, tokens = service
    env = {"MITHRIDATE_VAULT": serving.url, "MITHRIDATE_VAULT_CA": str(pki["ca"])}
    src = tmp_path / "cli.csv"
    src.write_bytes(csv_bytes(120, 11))

    def run(args, token):
        return CliRunner().invoke(cli_app, ["vault", *args], env={**env, "MITHRIDATE_TOKEN": token})

    put = run(["put", "via-cli", str(src), "--source", "cli"], tokens["contributor"])
    assert put.exit_code == 0, put.stderr
    upload = put.stdout.strip()
    denied = run(["approve", upload], tokens["contributor"])
    assert denied.exit_code == 3 and denied.stderr.startswith("error: denied: ")
    approved = run(["approve", upload], tokens["steward"])
    assert approved.exit_code == 0 and approved.stdout.strip() == "via-cli@1"
    out = tmp_path / "back.csv"
    assert run(["get", "via-cli@1", "--out", str(out)], tokens["trainer"]).exit_code == 0
    assert out.read_bytes() == src.read_bytes()
    verify = run(["verify", "--json"], tokens["auditor"])
    assert verify.exit_code == 0 and json.loads(verify.stdout)["ok"]


# --- fuzzing the API from its own OpenAPI description ------------------------------------------------------
@pytest.fixture(scope="module")
def fuzz_target(request, tmp_path_factory, pki):
    """A vault to fuzz, its catalog in PostgreSQL when there is one (stricter about odd input than SQLite)."""
    try:
        db_url = request.getfixturevalue("postgres")()
    except pytest.skip.Exception:
        db_url = None
    vault, admin = Vault.init(tmp_path_factory.mktemp("fuzz") / "vault", checks="schema", max_upload_bytes=1 << 20,
                              db_url=db_url)
    token = vault.add_user(admin, "fuzzer", ["admin", "steward", "contributor", "trainer", "auditor"])
    other = vault.add_user(admin, "other", ["contributor"])
    for i in range(2):  # some state to hit: an approved version and a quarantined upload
        up = vault.put(other, "fz", io.BytesIO(csv_bytes(50, i)), "f.csv", source="seed")
        if i == 0:
            vault.approve(token, up["upload"])
    serving = Serving(vault, pki)
    yield serving, vault, token
    serving.stop()
    vault.close()


@pytest.fixture(scope="module")
def api_schema(fuzz_target, pki):
    import schemathesis

    with httpx.Client(verify=ssl.create_default_context(cafile=str(pki["ca"]))) as http:
        spec = http.get(f"{fuzz_target[0].url}/openapi.json").json()
    return schemathesis.openapi.from_dict(spec)


@pytest.mark.parametrize("mode", ["positive", "negative"])
def test_api_fuzzed_from_its_openapi_spec_never_errors(api_schema, fuzz_target, pki, mode):
    """Generated requests, valid and malformed, to every operation get documented 2xx/4xx answers: never a 5xx."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis.errors import Unsatisfiable
    from schemathesis import GenerationMode
    from schemathesis.checks import not_a_server_error
    from schemathesis.specs.openapi.checks import (
        content_type_conformance,
        negative_data_rejection,
        response_schema_conformance,
        status_code_conformance,
    )

    serving, _, token = fuzz_target
    checks = [not_a_server_error, status_code_conformance, content_type_conformance, response_schema_conformance]
    if mode == "negative":
        checks.append(negative_data_rejection)
    operations = [r.ok() for r in api_schema.get_all_operations()]
    assert len(operations) >= 20
    fuzzed = 0
    for operation in operations:
        if operation.path == "/v1/keys/rotate":
            continue  # re-keying on every example is slow, and tested on its own

        @given(case=operation.as_strategy(GenerationMode(mode)))
        @settings(max_examples=6, deadline=None, derandomize=True, database=None,
                  suppress_health_check=list(HealthCheck))
        def check(case):
            auth = {} if api_schema.is_security_param_negated(case) else {"authorization": f"Bearer {token}"}
            response = case.call(base_url=serving.url, headers=auth, verify=str(pki["ca"]), timeout=60)
            case.validate_response(response, checks=checks)

        try:
            check()
            fuzzed += 1
        except Unsatisfiable:  # nothing to make malformed (an operation without parameters or body)
            assert mode == "negative"
    assert fuzzed >= (len(operations) - 1 if mode == "positive" else 14)


def test_fuzzing_left_the_vault_intact(fuzz_target):
    _, vault, token = fuzz_target
    report = vault.verify(token)
    assert report["ok"], report["problems"]


def test_the_registry_over_tls_from_upload_to_rollback(service, remote, monkeypatch):
    """The model registry through the service, as a team runs it: weights up (larger than one chunk),
    promoted, served by an alias; a poisoned source rolls the alias back; weights come down checked
    against their signed record, and a service that swaps the record is caught."""
    _, vault, tokens = service
    for role in ("deployer",):
        tokens.setdefault(role, vault.add_user(tokens["admin"], f"the-{role}", [role]))
    ups = [remote.put(tokens["contributor"], "reg", io.BytesIO(csv_bytes(200, 7, 0)), "r.csv", source="lab",
                      label="label")]
    first = remote.approve(tokens["steward"], ups[0]["upload"])
    grown = csv_bytes(200, 7, 0) + csv_bytes(50, 8, 200).split(b"\n", 1)[1]
    second = remote.approve(tokens["steward"], remote.put(tokens["contributor"], "reg", io.BytesIO(grown), "r.csv",
                                                          source="crowd", label="label")["upload"])
    weights = json.dumps({"w": list(range(5000))}).encode()  # over the 16 KiB chunk size
    good = remote.add_model(tokens["trainer"], "served-model", io.BytesIO(weights), "w.json", [first],
                            metrics={"auc": 0.9})
    bad = remote.add_model(tokens["trainer"], "served-model", io.BytesIO(b'{"w": 2}'), "w.json", [second],
                           parent=good)
    for ref in (good, bad):
        remote.promote(tokens["steward"], ref)
    remote.set_alias(tokens["deployer"], "served-model", "champion", int(bad.split("@")[1]))
    with pytest.raises(AccessDenied, match=r"may not model\.alias"):
        remote.set_alias(tokens["trainer"], "served-model", "champion", 1)
    plan = remote.quarantine_dataset(tokens["steward"], source="crowd", dry_run=True)
    assert plan["moves"] == [{"model": "served-model", "alias": "champion", "old": 2, "new": 1}]
    done = remote.quarantine_dataset(tokens["steward"], source="crowd", reason="over TLS")
    assert remote.resolve(tokens["deployer"], "served-model@champion")["model"] == good
    assert [r["response"] for r in remote.responses(tokens["auditor"])][-1] == done["response"]
    assert remote.lineage(tokens["deployer"], second)["models"] == [{"model": bad, "status": "quarantined"}]
    body, parts = remote.read_model(tokens["deployer"], good)
    assert b"".join(parts) == weights and body["metrics"] == {"auc": 0.9}
    remote.undo(tokens["steward"], done["response"])
    assert remote.aliases(tokens["deployer"], "served-model")[0]["number"] == 2
    real = remote._call

    def swapped(method, path, token, **kw):  # the service answers with another model's (valid) record
        return real(method, path.replace(f"/models/{good}/", f"/models/{bad}/"), token, **kw)

    monkeypatch.setattr(remote, "_call", swapped)
    with pytest.raises(IntegrityError, match="not what was asked"):
        remote.read_model(tokens["deployer"], good)
