"""The vault on S3 with Object Lock, against a real S3 protocol server (moto's server mode) on loopback."""

from __future__ import annotations

import io
import socket

import numpy as np
import pandas as pd
import pytest

pytest.importorskip("moto")
boto3 = pytest.importorskip("boto3")
from botocore.exceptions import ClientError  # noqa: E402

from mithridate.vault import VaultError  # noqa: E402
from mithridate.vault.core import Vault  # noqa: E402
from mithridate.vault.store import object_key  # noqa: E402


@pytest.fixture(scope="module")
def s3_server():
    from moto.server import ThreadedMotoServer

    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=port, verbose=False)
    server.start()
    mp = pytest.MonkeyPatch()
    for name, value in (("AWS_ACCESS_KEY_ID", "testing"), ("AWS_SECRET_ACCESS_KEY", "testing"),
                        ("AWS_DEFAULT_REGION", "us-east-1")):
        mp.setenv(name, value)
    yield f"http://127.0.0.1:{port}"
    server.stop()
    mp.undo()


def csv_bytes(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n).round(5), "label": rng.choice(["a", "b"], n)}).to_csv(
        index=False).encode()


@pytest.fixture(scope="module")
def s3_vault(s3_server, tmp_path_factory):
    storage = {"kind": "s3", "bucket": "training-data", "endpoint_url": s3_server, "retention_days": 1,
               "create_bucket": True, "prefix": "vault1"}
    vault, admin = Vault.init(tmp_path_factory.mktemp("s3") / "vault", checks="schema", chunk_size=1 << 12,
                              storage=storage)
    tokens = {"admin": admin, **{r: vault.add_user(admin, f"the-{r}", [r]) for r in
                                 ("contributor", "steward", "trainer", "auditor")}}
    data = csv_bytes(800, 0)
    up = vault.put(tokens["contributor"], "ds", io.BytesIO(data), "d.csv", source="web")
    vault.approve(tokens["steward"], up["upload"])
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    yield vault, tokens, data, client
    vault.close()


def test_round_trip_and_nothing_but_config_and_keys_on_local_disk(s3_vault):
    vault, tokens, data, client = s3_vault
    assert b"".join(vault.read(tokens["trainer"], "ds@1")[1]) == data
    local = sorted(p.relative_to(vault.root).as_posix() for p in vault.root.rglob("*") if p.is_file())
    assert all(p in ("vault.json", "keys/master.key", "keys.lock", "serve.lock") or p.startswith("vault.db")
               for p in local), local  # the lock files are empty
    keys = [o["Key"] for o in client.list_objects_v2(Bucket="training-data")["Contents"]]
    assert all(k.startswith("vault1/") for k in keys) and any(k.startswith("vault1/objects/") for k in keys)
    assert vault.verify(tokens["auditor"])["ok"]


def test_objects_are_locked_in_compliance_mode(s3_vault):
    vault, tokens, _, client = s3_vault
    chunk = vault.manifest(tokens["trainer"], "ds@1")["file"]["chunks"][0][0]
    key = "vault1/" + object_key(chunk)
    head = client.head_object(Bucket="training-data", Key=key)
    assert head["ObjectLockMode"] == "COMPLIANCE"
    version = head["VersionId"]
    with pytest.raises(ClientError) as err:
        client.delete_object(Bucket="training-data", Key=key, VersionId=version)
    assert err.value.response["Error"]["Code"] == "AccessDenied"
    assert vault.backend.put_once(object_key(chunk), b"forged") is False


def test_a_shadowing_version_or_delete_marker_is_ignored_and_reported(s3_vault):
    vault, tokens, data, client = s3_vault
    body = vault.manifest(tokens["trainer"], "ds@1")
    first, second = (c for c, _ in body["file"]["chunks"][:2])
    client.put_object(Bucket="training-data", Key="vault1/" + object_key(first), Body=b"attacker bytes")
    client.delete_object(Bucket="training-data", Key="vault1/" + object_key(second))  # a delete marker
    assert b"".join(vault.read(tokens["trainer"], "ds@1")[1]) == data  # the locked originals are what is read
    problems = vault.verify(tokens["auditor"])["problems"]
    assert problems == [
        f"{object_key(first)}: 1 version(s) written over the locked original (ignored; tampering attempt?)",
        f"{object_key(second)}: delete marker(s) hide the locked original (ignored; tampering attempt?)",
    ]


def test_legal_hold_and_retention_reach_the_bucket(s3_vault):
    vault, tokens, _, client = s3_vault
    result = vault.hold(tokens["admin"], "ds@1", legal_hold=True, retain_until="2031-01-01")
    assert result["legal_hold"] is True
    manifest = next(vault.backend.list("manifests/ds"))
    key = "vault1/" + manifest
    head = client.head_object(Bucket="training-data", Key=key)  # (moto's GetObjectRetention is broken)
    assert head["ObjectLockLegalHoldStatus"] == "ON" and head["ObjectLockMode"] == "COMPLIANCE"
    assert head["ObjectLockRetainUntilDate"].year == 2031
    with pytest.raises(VaultError, match="can only be extended"):
        vault.hold(tokens["admin"], "ds@1", retain_until="2030-01-01")


def test_a_bucket_without_object_lock_is_refused(s3_server, tmp_path):
    client = boto3.client("s3", endpoint_url=s3_server, region_name="us-east-1")
    client.create_bucket(Bucket="plain-bucket")
    with pytest.raises(VaultError, match="Object Lock"):
        Vault.init(tmp_path / "v", storage={"kind": "s3", "bucket": "plain-bucket", "endpoint_url": s3_server})


def test_data_keys_wrapped_by_a_kms(s3_server, tmp_path):
    """The pluggable KMS interface, with AWS KMS (moto's) wrapping the data keys instead of a key file."""
    kms = boto3.client("kms", endpoint_url=s3_server, region_name="us-east-1")
    arn = kms.create_key(Description="vault master key")["KeyMetadata"]["Arn"]
    key = {"source": "plugin", "factory": "mithridate.vault.crypto:AwsKms",
           "options": {"key_id": arn, "endpoint_url": s3_server, "region": "us-east-1"}}
    vault, admin = Vault.init(tmp_path / "kms", checks="none", key=key, chunk_size=1 << 12)
    contributor, steward, trainer = (vault.add_user(admin, n, [n]) for n in ("contributor", "steward", "trainer"))
    data = csv_bytes(300, 3)
    vault.approve(steward, vault.put(contributor, "k", io.BytesIO(data), "k.csv", source="s")["upload"])
    vault.close()
    assert not (tmp_path / "kms" / "keys" / "master.key").exists()
    with Vault.open(tmp_path / "kms") as again:
        assert b"".join(again.read(trainer, "k")[1]) == data
        assert again.verify(admin)["ok"]
        dek = next(again.backend.list("keys/dek"))
        path = again.root / dek
        raw = bytearray(path.read_bytes())
        raw[raw.index(b'"wrapped"') + 30] ^= 1  # inside the KMS ciphertext
        path.write_bytes(bytes(raw))
    with Vault.open(tmp_path / "kms") as again:
        problems = again.verify(admin)["problems"]
        assert problems and all(dek in p and "cannot be unwrapped" in p for p in problems)
