"""Vault storage: envelope encryption, write-once chunks, signed manifests, tamper detection, killed writes."""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import textwrap
import time
import tracemalloc
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from mithridate.vault import IntegrityError, VaultError
from mithridate.vault.backends.local import LocalBackend
from mithridate.vault.core import Vault
from mithridate.vault.crypto import Keyring, MasterKey, decrypt_object, encrypt_object
from mithridate.vault.primitives import digest, random_key
from mithridate.vault.store import ChunkStore, merkle_root, object_key

CHUNK = 4096


def table_bytes(n: int, seed: int = 0, extra: str = "") -> bytes:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({"x1": rng.normal(size=n).round(6), "x2": rng.integers(0, 100, n),
                          "note": [f"r{seed}-{i}{extra}" for i in range(n)], "label": rng.choice(["a", "b"], n)})
    return frame.to_csv(index=False).encode()


def new_vault(root: Path, **kw) -> tuple[Vault, dict[str, str]]:
    vault, admin = Vault.init(root, checks="schema", chunk_size=CHUNK, **kw)
    tokens = {"admin": admin}
    for name, role in [("carol", "contributor"), ("sam", "steward"), ("tina", "trainer"), ("audrey", "auditor")]:
        tokens[role] = vault.add_user(admin, name, [role])
    return vault, tokens


@pytest.fixture(scope="module")
def template(tmp_path_factory):
    """A vault with two approved versions (several chunks each) and one quarantined upload, built once."""
    root = tmp_path_factory.mktemp("template") / "vault"
    vault, tokens = new_vault(root)
    data = table_bytes(400)
    up = vault.put(tokens["contributor"], "toy", io.BytesIO(data), "toy.csv", source="web")
    vault.approve(tokens["steward"], up["upload"])
    data2 = data + table_bytes(50, seed=1).split(b"\n", 1)[1]
    up2 = vault.put(tokens["contributor"], "toy", io.BytesIO(data2), "toy.csv", source="forum")
    vault.approve(tokens["steward"], up2["upload"])
    vault.put(tokens["contributor"], "toy", io.BytesIO(table_bytes(30, seed=2)), "toy.csv", source="web")
    vault.close()
    return root, tokens, {"v1": data, "v2": data2}


@pytest.fixture
def filled(template, tmp_path):
    """A private copy of the template vault, opened."""
    root, tokens, data = template
    shutil.copytree(root, tmp_path / "vault")
    vault = Vault.open(tmp_path / "vault")
    yield vault, tokens, data
    vault.close()


def flip(path: Path, offset: int) -> None:
    os.chmod(path, 0o644)
    raw = bytearray(path.read_bytes())
    raw[offset] ^= 0x01
    path.write_bytes(bytes(raw))


def reopen_and_verify(vault: Vault, token: str) -> list[str]:
    vault.close()
    with Vault.open(vault.root) as again:
        return again.verify(token)["problems"]


# --- crypto -----------------------------------------------------------------------------------------
def test_envelope_round_trip_and_wrong_key_or_flipped_byte_never_decrypts(tmp_path):
    backend = LocalBackend(tmp_path)
    master = MasterKey(random_key())
    ring = Keyring(backend, {master.key_id: master}, master.key_id)
    plain = os.urandom(10_000)
    name = digest(plain)
    blob = encrypt_object(name, plain, ring)
    assert plain not in blob and decrypt_object(name, blob, ring, "x", name) == plain
    for offset in (3, 10, 40, len(blob) // 2, len(blob) - 1):  # magic, key id, nonce, body, tag
        bad = bytearray(blob)
        bad[offset] ^= 0x80
        with pytest.raises(IntegrityError):
            decrypt_object(name, bytes(bad), ring, "x", name)
    with pytest.raises(IntegrityError):  # bound to its name: cannot be passed off as another object
        decrypt_object(digest(b"other"), blob, ring, "x")
    other = MasterKey(random_key())
    wrong = Keyring(backend, {master.key_id: other}, master.key_id)  # same id, wrong secret
    with pytest.raises(IntegrityError, match="cannot be unwrapped"):
        decrypt_object(name, blob, wrong, "x", name)


def test_streaming_write_keeps_memory_to_a_few_chunks(tmp_path):
    backend = LocalBackend(tmp_path, fsync=False)
    master = MasterKey(random_key())
    store = ChunkStore(backend, Keyring(backend, {master.key_id: master}, master.key_id), chunk_size=1 << 20)
    size = 48 << 20

    class Source(io.RawIOBase):  # 48 MiB produced on the fly: never whole in memory
        def __init__(self):
            self.left = size
            self.hash = __import__("hashlib").sha256()

        def readable(self):
            return True

        def read(self, n=-1):
            n = min(self.left, 1 << 20 if n < 0 else n)
            self.left -= n
            part = os.urandom(n)
            self.hash.update(part)
            return part

    source = Source()
    tracemalloc.start()
    blob = store.write(source)
    peak = tracemalloc.get_traced_memory()[1]
    tracemalloc.stop()
    assert blob.size == size and len(blob.chunks) == 48
    assert peak < 10 * (1 << 20), f"peak {peak / 2**20:.1f} MiB for a 48 MiB stream"
    h = __import__("hashlib").sha256()
    for part in store.read(blob):
        h.update(part)
    assert h.hexdigest() == source.hash.hexdigest()


def test_merkle_root_depends_on_every_chunk_and_its_order():
    leaves = [digest(bytes([i])) for i in range(5)]
    root = merkle_root(leaves)
    assert merkle_root(leaves[::-1]) != root
    assert merkle_root(leaves[:4]) != root and merkle_root([*leaves, leaves[-1]]) != root


# --- the vault ----------------------------------------------------------------------------------------
def test_get_is_byte_identical_and_objects_are_encrypted_and_deduplicated(filled):
    vault, tokens, data = filled
    for ref, expected in (("toy@1", data["v1"]), ("toy@2", data["v2"]), ("toy", data["v2"])):
        body, parts = vault.read(tokens["trainer"], ref)
        assert b"".join(parts) == expected and body["rows"] == expected.count(b"\n") - 1
    objects = list(vault.backend.list("objects"))
    needle = data["v1"][100:140]
    assert all(needle not in (vault.root / o).read_bytes() for o in objects)
    body1, body2 = vault.manifest(tokens["trainer"], "toy@1"), vault.manifest(tokens["trainer"], "toy@2")
    shared = {c for c, _ in body1["file"]["chunks"]} & {c for c, _ in body2["file"]["chunks"]}
    assert len(shared) >= len(body1["file"]["chunks"]) - 1  # v2 appends rows: all but the last chunk shared
    assert body2["parent"] == 1 and body2["uploaded_by"] == "carol" and body2["created_by"] == "sam"
    assert body2["sources"] == {"forum": 50, "web": 400}


def test_stored_versions_cannot_be_overwritten(filled):
    vault, _, _ = filled
    key = next(vault.backend.list("manifests"))
    assert vault.backend.put_once(key, b"forged") is False
    assert vault.backend.get(key) != b"forged"
    with pytest.raises(VaultError, match="mutable"):
        vault.backend.put_mutable(key, b"forged")
    assert not hasattr(vault.backend, "delete") and not hasattr(vault, "delete")


def test_verify_is_clean_on_an_intact_vault(filled):
    vault, tokens, _ = filled
    report = vault.verify(tokens["auditor"])
    assert report["ok"], report["problems"]
    assert report["checked"]["manifests"] == 5 and report["checked"]["chunks"] > 10


def test_flipped_chunk_byte_is_named_by_verify_and_never_read(filled):
    vault, tokens, _ = filled
    chunk = vault.manifest(tokens["trainer"], "toy@1")["file"]["chunks"][1][0]
    flip(vault.root / object_key(chunk), 200)
    problems = reopen_and_verify(vault, tokens["auditor"])
    assert len(problems) == 1 and object_key(chunk) in problems[0] and "toy@1" in problems[0]
    with Vault.open(vault.root) as again, pytest.raises(IntegrityError, match=object_key(chunk)):
        b"".join(again.read(tokens["trainer"], "toy@1")[1])


def test_flipped_manifest_byte_is_named(filled):
    vault, tokens, _ = filled
    key = next(k for k in vault.backend.list("manifests") if "/2." in k)
    flip(vault.root / key, 50)
    problems = reopen_and_verify(vault, tokens["auditor"])
    assert problems == [f"{key}: altered (its hash differs from the catalog's) (toy@2)"]


def test_flipped_audit_log_byte_on_disk_is_named(filled):
    vault, tokens, _ = filled
    entry = next(e for e in vault.audit.entries() if e["action"] == "user.add" and e["target"] == "tina")
    vault.close()
    db = vault.root / "vault.db"
    assert not Path(f"{db}-wal").exists() or Path(f"{db}-wal").stat().st_size == 0
    raw = db.read_bytes()
    needle = b'"roles":["trainer"]'
    assert raw.count(needle) == 1  # only that audit entry holds this text
    flip(db, raw.index(needle) + 12)
    with Vault.open(vault.root) as again:
        problems = again.verify(tokens["auditor"])["problems"]
    assert problems == [f"audit log entry {entry['seq']}: content altered (hash mismatch)"]


def test_deleted_audit_entries_and_catalog_rows_are_named(filled):
    vault, tokens, _ = filled
    vault.close()
    with sqlite3.connect(vault.root / "vault.db") as conn:
        conn.execute("DELETE FROM audit WHERE seq IN (3, 4)")
        conn.execute("DELETE FROM versions WHERE number = 1")
    with Vault.open(vault.root) as again:
        problems = again.verify(tokens["auditor"])["problems"]
    assert "audit log: entries 3-4 missing (deleted)" in problems
    assert "audit log entry 5: does not follow the entry before it (chain broken)" in problems
    assert any("version toy@1" in p and "missing" in p for p in problems)


@pytest.mark.parametrize("target", ["master", "signing", "dek"])
def test_flipped_key_file_byte_is_named(filled, target):
    vault, tokens, _ = filled
    if target == "dek":
        chunk = vault.manifest(tokens["trainer"], "toy@2")["file"]["chunks"][-1][0]
        blob = (vault.root / object_key(chunk)).read_bytes()
        key = f"keys/dek/{blob[8:24].hex()}"
        flip(vault.root / key, 30)
        problems = reopen_and_verify(vault, tokens["auditor"])
        assert problems and all(key in p for p in problems)
        assert any(object_key(chunk) in p for p in problems)
        return
    vault.close()
    if target == "master":
        flip(vault.root / "keys/master.key", 20)
    else:  # the signing key travels in vault.json, wrapped by the master key
        path = vault.root / "vault.json"
        doc = json.loads(path.read_text())
        record = json.loads(doc["config"]["signing_key"])
        wrapped = record["wrapped"]
        record["wrapped"] = wrapped[:20] + ("A" if wrapped[20] != "A" else "B") + wrapped[21:]
        doc["config"]["signing_key"] = json.dumps(record)
        path.write_text(json.dumps(doc))
    with pytest.raises(IntegrityError) as err:
        Vault.open(vault.root)
    assert str(err.value).startswith("keys/master.key" if target == "master" else "vault.json: signing key")


def test_edited_configuration_is_refused(filled):
    vault, _, _ = filled
    vault.close()
    path = vault.root / "vault.json"
    path.write_text(path.read_text().replace('"checks": "schema"', '"checks": "none"'))
    with pytest.raises(IntegrityError, match=r"vault\.json: signature invalid"):
        Vault.open(vault.root)


def test_key_rotation_rewraps_keys_without_rewriting_data(filled):
    vault, tokens, data = filled
    objects = {o: (vault.root / o).read_bytes() for o in vault.backend.list("objects")}
    manifests = {m: (vault.root / m).read_bytes() for m in vault.backend.list("manifests")}
    deks_before = {d: (vault.root / d).read_bytes() for d in vault.backend.list("keys/dek")}
    old_key, old_signing = vault.config.key, vault.config.signing_key
    result = vault.rotate_key(tokens["admin"])
    assert result["rewrapped"] == len(deks_before) and result["previous"] == old_key["id"]
    assert json.loads(vault.config.signing_key)["kek"] == result["key"] != json.loads(old_signing)["kek"]
    assert not (vault.root / old_key["path"]).exists()
    assert {o: (vault.root / o).read_bytes() for o in vault.backend.list("objects")} == objects
    assert {m: (vault.root / m).read_bytes() for m in vault.backend.list("manifests")} == manifests
    assert all((vault.root / d).read_bytes() != raw for d, raw in deks_before.items())
    vault.close()
    with Vault.open(vault.root) as again:
        assert b"".join(again.read(tokens["trainer"], "toy@1")[1]) == data["v1"]
        assert again.verify(tokens["auditor"])["ok"]
        rotations = [e for e in again.audit.entries() if e["action"] == "key.rotate"]
        assert len(rotations) == 1 and rotations[0]["actor"] == "admin"


def test_master_key_from_environment(tmp_path, monkeypatch):
    from mithridate.vault.crypto import encode_key

    monkeypatch.setenv("TEST_VAULT_KEY", encode_key(random_key()))
    vault, tokens = new_vault(tmp_path / "v", key={"source": "env", "var": "TEST_VAULT_KEY"})
    vault.put(tokens["contributor"], "toy", io.BytesIO(table_bytes(20)), "toy.csv", source="web")
    vault.close()
    assert not (tmp_path / "v" / "keys" / "master.key").exists()
    monkeypatch.setenv("TEST_VAULT_KEY", encode_key(random_key()))
    with pytest.raises(IntegrityError, match="TEST_VAULT_KEY: not the vault's master key"):
        Vault.open(tmp_path / "v")


# --- a writer killed midway ------------------------------------------------------------------------------
KILLED_WRITER = textwrap.dedent("""
    import io, sys, time
    from pathlib import Path
    from mithridate.vault.backends.local import LocalBackend
    from mithridate.vault.core import Vault

    root, token, stage, marker = sys.argv[1:5]
    original = LocalBackend.put_once
    written = []

    def put_once(self, key, data):
        done = original(self, key, data)
        written.append(key)
        if (stage == "chunks" and len(written) == 5) or (stage == "manifest" and key.startswith("manifests/")):
            Path(marker).write_text(key)
            time.sleep(600)
        return done

    LocalBackend.put_once = put_once
    vault = Vault.open(root)
    if stage == "chunks":
        vault.put(token, "toy", io.BytesIO(sys.stdin.buffer.read()), "toy.csv", source="crash")
    else:
        vault.approve(token, sys.argv[5])
""")


def run_killed(tmp_path, vault, token, stage, *args, stdin=b""):
    script = tmp_path / "writer.py"
    script.write_text(KILLED_WRITER)
    marker = tmp_path / f"{stage}.marker"
    proc = subprocess.Popen([sys.executable, str(script), str(vault.root), token, stage, str(marker), *args],
                            stdin=subprocess.PIPE)
    proc.stdin.write(stdin)
    proc.stdin.close()
    deadline = time.time() + 60
    while not marker.exists() and proc.poll() is None and time.time() < deadline:
        time.sleep(0.05)
    assert marker.exists(), "the writer never reached the point to kill it at"
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    return marker.read_text()


def test_write_killed_midway_leaves_no_partial_upload_or_version(filled, tmp_path):
    vault, tokens, data = filled
    before = {"uploads": vault.uploads(tokens["steward"]), "versions": vault.versions(tokens["trainer"], "toy")}
    run_killed(tmp_path, vault, tokens["contributor"], "chunks", stdin=table_bytes(2000, seed=7))
    pending = next(u for u in before["uploads"] if u["status"] == "quarantined")
    manifest = run_killed(tmp_path, vault, tokens["steward"], "manifest", pending["id"])
    vault.close()
    with Vault.open(vault.root) as again:
        assert again.uploads(tokens["steward"]) == before["uploads"]  # nothing half-uploaded, still quarantined
        assert again.versions(tokens["trainer"], "toy") == before["versions"]  # no version 3
        assert again.backend.exists(manifest)  # the orphan manifest is there, but nothing refers to it
        assert b"".join(again.read(tokens["trainer"], "toy@2")[1]) == data["v2"]
        report = again.verify(tokens["auditor"])
        assert report["ok"]
        assert any("never ended" in o for o in report["orphans"])  # the killed upload is listed
        assert any(manifest in o for o in report["orphans"])  # and the manifest nothing committed
        assert again.approve(tokens["steward"], pending["id"]) == "toy@3"  # and the approval can be redone
        assert again.verify(tokens["auditor"])["ok"]


def test_migrations_build_exactly_the_catalog_the_code_uses(tmp_path):
    from alembic.autogenerate import compare_metadata
    from alembic.config import Config
    from alembic.runtime.migration import MigrationContext
    from alembic.script import ScriptDirectory

    from mithridate.vault.db import MIGRATIONS, SCHEMA_HEAD, Database, metadata, sqlite_url

    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    assert ScriptDirectory.from_config(config).get_current_head() == SCHEMA_HEAD
    db = Database(sqlite_url(tmp_path / "catalog.db"))
    db.migrate()
    db.check_schema()
    with db.engine.connect() as conn:
        assert compare_metadata(MigrationContext.configure(conn), metadata) == []
    db.dispose()
