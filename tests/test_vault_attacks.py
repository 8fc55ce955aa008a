"""The vault under attack: an insider with write access to its folder and catalog, each attack performed.

Every test alters real bytes or rows (SQLite and PostgreSQL where the catalog is involved) and asserts
that the vault refuses to act on the result and that ``verify`` names it.
"""

from __future__ import annotations

import io
import json
import shutil
from pathlib import Path

import pytest
from sqlalchemy import text

from mithridate.vault import AccessDenied, IntegrityError, VaultError
from mithridate.vault.access import new_token, parse_token
from mithridate.vault.core import Vault
from mithridate.vault.errors import Conflict
from test_vault_store import CHUNK, table_bytes


def build(root: Path, db_url: str | None = None) -> tuple[Vault, dict[str, str]]:
    """A vault with users of every role and two approved versions of ``toy``."""
    vault, admin = Vault.init(root, checks="schema", chunk_size=CHUNK, db_url=db_url)
    tokens = {"admin": admin}
    for name, role in [("carol", "contributor"), ("sam", "steward"), ("tina", "trainer"), ("audrey", "auditor")]:
        tokens[role] = vault.add_user(admin, name, [role])
    for seed in (0, 1):
        up = vault.put(tokens["contributor"], "toy", io.BytesIO(table_bytes(200, seed)), "toy.csv", source="web")
        vault.approve(tokens["steward"], up["upload"])
    return vault, tokens


@pytest.fixture(params=["sqlite", "postgresql"])
def built(request, tmp_path):
    db_url = request.getfixturevalue("postgres")() if request.param == "postgresql" else None
    vault, tokens = build(tmp_path / "vault", db_url)
    yield vault, tokens
    vault.close()


def sql(vault: Vault, statement: str, **params) -> list:
    """What an insider with the catalog's credentials does, behind the vault's back."""
    with vault.db.engine.connect() as conn, conn.begin():
        result = conn.execute(text(statement), params)
        return result.all() if result.returns_rows else []


def problems(vault: Vault, token: str, **kw) -> list[str]:
    return vault.verify(token, **kw)["problems"]


def approval_seq(vault: Vault, ref: str) -> int:
    return next(e["seq"] for e in vault.audit.entries(action="upload.approve") if f'"version":"{ref}"' in e["detail"])


# --- 1. rolling the catalog back ----------------------------------------------------------------------
def test_deleting_the_newest_version_with_the_log_tail_is_found(built):
    vault, tokens = built
    seq = approval_seq(vault, "toy@2")
    sql(vault, "DELETE FROM versions WHERE dataset = 'toy' AND number = 2")
    sql(vault, "DELETE FROM audit WHERE seq >= :seq", seq=seq)
    with pytest.raises(IntegrityError, match="toy@2"):
        vault.read(tokens["trainer"], "toy")  # never serves toy@1 as the newest
    found = problems(vault, tokens["auditor"])
    assert any("toy@2" in p and "no catalog row" in p for p in found), found
    assert any("checkpoint" in p for p in found), found


def test_restoring_an_older_catalog_file_is_found(tmp_path):
    vault, tokens = build(tmp_path / "vault")
    vault.close()
    db = tmp_path / "vault" / "vault.db"
    shutil.copy(db, tmp_path / "old.db")
    with Vault.open(tmp_path / "vault") as vault:
        up = vault.put(tokens["contributor"], "toy", io.BytesIO(table_bytes(200, 2)), "toy.csv", source="web")
        vault.approve(tokens["steward"], up["upload"])
    for suffix in ("-wal", "-shm"):
        Path(f"{db}{suffix}").unlink(missing_ok=True)
    shutil.copy(tmp_path / "old.db", db)
    with Vault.open(tmp_path / "vault") as vault:
        with pytest.raises(IntegrityError, match="toy@3"):
            vault.read(tokens["trainer"], "toy")
        found = problems(vault, tokens["auditor"])
    assert any("toy@3" in p for p in found) and any("checkpoint" in p for p in found), found


def test_an_external_witness_catches_a_rollback_that_also_deletes_stored_files(built):
    vault, tokens = built
    head = vault.head(tokens["auditor"])
    assert head["body"]["seq"] > 0 and head["key"] == vault.config.public_key
    seq = approval_seq(vault, "toy@2")
    sql(vault, "DELETE FROM versions WHERE dataset = 'toy' AND number = 2")
    sql(vault, "DELETE FROM audit WHERE seq >= :seq", seq=seq)
    for key in [*vault.backend.list("manifests/toy"), *vault.backend.list("checkpoints"),
                *vault.backend.list("committed")]:
        if "/2." in key or key.startswith(("checkpoints", "committed")):
            path = vault.root / key
            path.chmod(0o644)
            path.unlink()
    assert not any("toy@2" in p for p in problems(vault, tokens["auditor"]))  # every trace inside is gone ...
    found = problems(vault, tokens["auditor"], witness=head)  # ... but the auditor kept the head
    assert any(f"witnessed head (entry {head['body']['seq']}," in p for p in found), found


def test_a_forged_witness_is_refused(built):
    vault, tokens = built
    head = vault.head(tokens["auditor"])
    forged = {**head, "body": {**head["body"], "seq": head["body"]["seq"] + 5}}
    with pytest.raises(IntegrityError, match="witness"):
        vault.verify(tokens["auditor"], witness=forged)


# --- 2. vault.json names code to run ------------------------------------------------------------------
def edit_config(root: Path, change) -> None:
    path = root / "vault.json"
    doc = json.loads(path.read_text())
    change(doc["config"])
    path.write_text(json.dumps(doc))


def test_a_key_plugin_named_only_by_the_configuration_is_never_imported(tmp_path):
    vault, _ = build(tmp_path / "vault")
    vault.close()
    marker = tmp_path / "ran"
    edit_config(vault.root, lambda c: c.update(key={"source": "plugin", "factory": "subprocess:run",
                                                    "options": {"args": ["touch", str(marker)]}, "id": "x"}))
    with pytest.raises(VaultError, match="not allowed"):
        Vault.open(vault.root)
    assert not marker.exists()


def test_storage_and_catalog_named_by_an_edited_configuration_are_never_touched(tmp_path):
    vault, _ = build(tmp_path / "vault")
    vault.close()
    elsewhere = tmp_path / "elsewhere"
    edit_config(vault.root, lambda c: c.update(storage={"kind": "local", "path": str(elsewhere)},
                                               db=f"sqlite:///{tmp_path / 'other.db'}"))
    with pytest.raises(IntegrityError, match=r"vault\.json"):
        Vault.open(vault.root)
    assert not elsewhere.exists() and not (tmp_path / "other.db").exists()


def test_a_key_plugin_the_operator_allows_is_used(tmp_path, monkeypatch):
    from mithridate.vault.crypto import encode_key, random_key

    monkeypatch.setenv("PLUGIN_KEY", encode_key(random_key()))
    spec = {"source": "plugin", "factory": "keyplugin:make", "options": {"var": "PLUGIN_KEY"}}
    with pytest.raises(VaultError, match="not allowed"):
        Vault.init(tmp_path / "refused", key=spec, checks="none")
    monkeypatch.setenv("MITHRIDATE_VAULT_KEY_PLUGINS", "keyplugin:make")
    vault, admin = Vault.init(tmp_path / "vault", key=spec, checks="none")
    vault.close()
    with Vault.open(tmp_path / "vault") as again:
        assert again.verify(admin)["ok"]


# --- 3. users, tokens and uploads edited in the catalog -----------------------------------------------
def test_a_trainer_made_admin_in_the_catalog_gets_nothing(built):
    vault, tokens = built
    sql(vault, "UPDATE users SET roles = 'admin' WHERE name = 'tina'")
    with pytest.raises((IntegrityError, AccessDenied)):
        vault.add_user(tokens["trainer"], "mallory", ["admin"])
    found = problems(vault, tokens["auditor"])
    assert any("user tina" in p for p in found), found


def test_a_revoked_token_revived_in_the_catalog_stays_revoked(built):
    vault, tokens = built
    before = {t: sql(vault, f"SELECT * FROM {t} WHERE " + ("name = 'carol'" if t == "users" else
                                                            "user_id = (SELECT id FROM users WHERE name = 'carol')"))
              for t in ("users", "tokens")}
    vault.revoke_user(tokens["admin"], "carol")
    sql(vault, "UPDATE tokens SET revoked = :f", f=False)
    sql(vault, "UPDATE users SET active = :t WHERE name = 'carol'", t=True)
    with pytest.raises((IntegrityError, AccessDenied)):
        vault.whoami(tokens["contributor"])
    assert any("user carol" in p for p in problems(vault, tokens["auditor"]))
    # the rows exactly as they were before the revocation (seals included): replayed, still refused
    (user,), (token,) = before["users"], before["tokens"]
    sql(vault, "UPDATE users SET active = :a, seal = :s WHERE name = 'carol'", a=user.active, s=user.seal)
    sql(vault, "UPDATE tokens SET revoked = :r, seal = :s WHERE id = :i", r=token.revoked, s=token.seal, i=token.id)
    with pytest.raises((IntegrityError, AccessDenied)):
        vault.whoami(tokens["contributor"])
    assert any("user carol" in p for p in problems(vault, tokens["auditor"]))


def test_a_token_hash_swapped_in_the_catalog_opens_nothing(built):
    vault, tokens = built
    admin_id, _ = parse_token(tokens["admin"])
    mine, _, my_hash = new_token()
    forged = f"mth_{admin_id}_{parse_token(mine)[1]}"
    sql(vault, "UPDATE tokens SET hash = :h WHERE id = :i", h=my_hash, i=admin_id)
    with pytest.raises((IntegrityError, AccessDenied)):
        vault.add_user(forged, "mallory", ["admin"])
    assert any("token" in p for p in problems(vault, tokens["auditor"]))


def test_a_rejected_upload_made_quarantined_again_cannot_be_approved(built):
    vault, tokens = built
    up = vault.put(tokens["contributor"], "toy", io.BytesIO(table_bytes(50, 3)), "toy.csv", source="web")
    vault.reject(tokens["steward"], up["upload"], "poisoned")
    sql(vault, "UPDATE uploads SET status = 'quarantined', decided_by = NULL, decided_at = NULL, reason = NULL "
               "WHERE id = :i", i=up["upload"])
    with pytest.raises((IntegrityError, Conflict)):
        vault.approve(tokens["steward"], up["upload"])
    assert any(up["upload"] in p for p in problems(vault, tokens["auditor"]))


def test_a_failed_check_cleared_in_the_catalog_still_needs_force(built):
    vault, tokens = built
    other = b"a,b,label\n1,2,x\n3,4,y\n"
    up = vault.put(tokens["contributor"], "toy", io.BytesIO(other), "toy.csv", source="web")
    assert not up["checks_passed"]
    sql(vault, "UPDATE uploads SET checks_passed = :t WHERE id = :i", t=True, i=up["upload"])
    with pytest.raises((IntegrityError, Conflict)):
        vault.approve(tokens["steward"], up["upload"])
    assert any(up["upload"] in p for p in problems(vault, tokens["auditor"]))


# --- 4. rotating the key under a running service ------------------------------------------------------
def test_key_rotation_is_refused_while_the_vault_is_served(tmp_path):
    vault, tokens = build(tmp_path / "vault")
    vault.serving()  # what `mithridate serve` holds while it runs
    with Vault.open(vault.root) as other, pytest.raises(Conflict, match="served"):
        other.rotate_key(tokens["admin"])
    vault.close()
    with Vault.open(vault.root) as other:  # service stopped: rotation goes ahead
        other.rotate_key(tokens["admin"])


def test_a_process_never_wraps_under_a_key_vault_json_no_longer_names(tmp_path):
    vault, tokens = build(tmp_path / "vault")
    with Vault.open(vault.root) as other:
        other.rotate_key(tokens["admin"])
    with pytest.raises(IntegrityError, match="master key"):
        vault.put(tokens["contributor"], "toy", io.BytesIO(table_bytes(50, 4)), "toy.csv", source="web")
    vault.close()
    with Vault.open(vault.root) as again:
        assert again.verify(tokens["auditor"])["ok"]
        assert b"".join(again.read(tokens["trainer"], "toy@2")[1]) == table_bytes(200, 1)


# --- 8. a catalog row repointed at another version's manifest -----------------------------------------
def test_a_version_row_repointed_at_an_older_manifest_is_refused(built):
    vault, tokens = built
    (old,) = sql(vault, "SELECT manifest, manifest_sha256 FROM versions WHERE dataset = 'toy' AND number = 1")
    sql(vault, "UPDATE versions SET manifest = :m, manifest_sha256 = :s WHERE dataset = 'toy' AND number = 2",
        m=old.manifest, s=old.manifest_sha256)
    with pytest.raises(IntegrityError, match="toy@2"):
        vault.read(tokens["trainer"], "toy@2")


# --- the witness from the command line ----------------------------------------------------------------
def test_cli_witness_round_trip_catches_a_rollback(tmp_path):
    from typer.testing import CliRunner

    from mithridate.cli import app

    vault, tokens = build(tmp_path / "vault")
    vault.close()

    def run(*args, token="auditor"):
        env = {"MITHRIDATE_VAULT": str(tmp_path / "vault"), "MITHRIDATE_TOKEN": tokens[token]}
        return CliRunner().invoke(app, ["vault", *args], env=env)

    kept = tmp_path / "head.json"
    assert run("head", "--out", str(kept)).exit_code == 0
    again = run("head", "--out", str(kept))
    assert again.exit_code == 2 and "exists" in again.stderr  # never overwritten
    assert run("verify", "--witness", str(kept)).exit_code == 0
    with Vault.open(tmp_path / "vault") as vault:
        seq = approval_seq(vault, "toy@2")
        sql(vault, "DELETE FROM versions WHERE dataset = 'toy' AND number = 2")
        sql(vault, "DELETE FROM audit WHERE seq >= :seq", seq=seq)
    result = run("verify", "--witness", str(kept))
    assert result.exit_code == 1 and "ALTERED: audit log: the witnessed head" in result.stdout
    bad = tmp_path / "bad.json"
    bad.write_text("[1, 2]")
    refused = run("verify", "--witness", str(bad))
    assert refused.exit_code == 2 and len(refused.stderr.strip().splitlines()) == 1


# --- 9. a flood of wrong tokens -------------------------------------------------------------------------
def test_a_flood_of_wrong_tokens_is_throttled_and_logged_as_counts(built):
    from mithridate.vault.errors import Throttled

    vault, tokens = built
    before = vault.audit.count()
    outcomes = []
    for i in range(200):
        try:
            vault.whoami(f"mth_{i:032x}_{'x' * 43}")
        except Throttled:
            outcomes.append("throttled")
        except AccessDenied:
            outcomes.append("denied")
    assert outcomes[:10] == ["denied"] * 10 and set(outcomes[10:]) == {"throttled"}
    rows = vault.audit.entries(after=0)[before:]
    summaries = [r for r in rows if r["action"] == "auth.throttled"]
    assert len(rows) == 10 + len(summaries) and [json.loads(r["detail"])["refused"] for r in summaries] == [1, 10, 100]
    with pytest.raises(Throttled):  # the client is refused until the window passes, good token or not
        vault.whoami(tokens["trainer"])


# --- 12. the small ones ---------------------------------------------------------------------------------
def test_careless_inputs_get_one_line_and_leave_no_secret_behind(tmp_path, monkeypatch):
    import stat

    from typer.testing import CliRunner

    from mithridate.cli import app
    from mithridate.vault.access import check_name

    with pytest.raises(VaultError):
        check_name("tina\n")
    bad = CliRunner().invoke(app, ["vault", "init", str(tmp_path / "v0"), "--chunk-mb", "0"])
    assert bad.exit_code == 2 and "chunk size" in bad.stderr and not (tmp_path / "v0" / "vault.json").exists()

    vault, admin = Vault.init(tmp_path / "v2", checks="none")
    vault.close()
    for name in ("vault.json", "vault.db", "keys/master.key"):
        assert stat.S_IMODE((tmp_path / "v2" / name).stat().st_mode) == 0o600, name

    (tmp_path / "v2" / "vault.db").write_bytes(b"not a database at all" * 100)  # a garbage catalog: exit 1
    result = CliRunner().invoke(app, ["vault", "verify", "--vault", str(tmp_path / "v2"), "--token", admin])
    assert result.exit_code == 1 and "ALTERED" in result.stdout


def test_a_refused_upload_is_audited_and_its_chunks_listed_as_orphans(tmp_path):
    from mithridate.vault.errors import TooLarge

    vault, tokens = build(tmp_path / "vault")
    vault.config.max_upload_bytes = 3 * CHUNK
    with pytest.raises(TooLarge):
        vault.put(tokens["contributor"], "toy", io.BytesIO(table_bytes(2000, 9)), "toy.csv", source="web")
    refused = vault.audit.entries(action="upload.put")[-1]
    assert refused["outcome"] == "refused" and refused["actor"] == "carol"
    report = vault.verify(tokens["auditor"])
    assert report["ok"] and any("no manifest refers to" in o for o in report["orphans"])
    vault.close()


def test_a_database_password_is_never_written_to_vault_json(tmp_path, postgres, monkeypatch):
    url = postgres().replace("postgres@", "postgres:s3cret-pw@")  # the test server trusts any password
    vault, _ = Vault.init(tmp_path / "vault", db_url=url, checks="none")
    vault.close()
    assert "s3cret-pw" not in (tmp_path / "vault" / "vault.json").read_text()
    monkeypatch.setenv("MITHRIDATE_VAULT_DB_PASSWORD", "from-env")
    with Vault.open(tmp_path / "vault") as again:
        assert again.db.engine.url.password == "from-env"


# --- found by a second red-team pass over the defences above ----------------------------------------------
def test_a_whole_vault_swapped_for_the_insiders_own_is_refused_when_its_key_is_pinned(tmp_path, monkeypatch):
    real, _ = build(tmp_path / "real")
    pinned = real.config.public_key
    real.close()
    fake, _ = build(tmp_path / "fake")  # the insider's vault, keyed by a file they made
    fake.close()
    shutil.rmtree(tmp_path / "real")
    shutil.copytree(tmp_path / "fake", tmp_path / "real")
    monkeypatch.setenv("MITHRIDATE_VAULT_PUBLIC_KEY", pinned)
    with pytest.raises(IntegrityError, match="replaced"):
        Vault.open(tmp_path / "real")


def test_a_row_repointed_at_a_killed_approvals_manifest_is_refused(built):
    vault, tokens = built
    u1 = vault.put(tokens["contributor"], "toy", io.BytesIO(table_bytes(200, 11)), "toy.csv", source="evil")
    real_put = vault.backend.put_once

    def killed(key, data):
        real_put(key, data)
        if key.startswith("manifests/"):
            raise KeyboardInterrupt("approver killed after writing the manifest")

    vault.backend.put_once = killed
    with pytest.raises(KeyboardInterrupt):
        vault.approve(tokens["steward"], u1["upload"])
    vault.backend.put_once = real_put
    vault.reject(tokens["steward"], u1["upload"], "poisoned")
    u2 = vault.put(tokens["contributor"], "toy", io.BytesIO(table_bytes(200, 12)), "toy.csv", source="web")
    assert vault.approve(tokens["steward"], u2["upload"]) == "toy@3"
    (row,) = sql(vault, "SELECT manifest FROM versions WHERE dataset = 'toy' AND number = 3")
    orphan = next(k for k in vault.backend.list("manifests/toy") if k.startswith("manifests/toy/3.") and k != row[0])
    sql(vault, "UPDATE versions SET manifest = :m, manifest_sha256 = :h WHERE dataset = 'toy' AND number = 3",
        m=orphan, h=__import__("hashlib").sha256(vault.backend.get(orphan)).hexdigest())
    with pytest.raises(IntegrityError, match="committed"):
        vault.read(tokens["trainer"], "toy")


def test_a_revocation_survives_replayed_rows_and_an_edited_log_entry(built):
    vault, tokens = built
    (user,) = sql(vault, "SELECT active, seal FROM users WHERE name = 'tina'")
    token_rows = sql(vault, "SELECT t.id, t.revoked, t.seal FROM tokens t JOIN users u ON u.id = t.user_id "
                            "WHERE u.name = 'tina'")
    vault.revoke_user(tokens["admin"], "tina")
    sql(vault, "UPDATE users SET active = :a, seal = :s WHERE name = 'tina'", a=user.active, s=user.seal)
    for t in token_rows:
        sql(vault, "UPDATE tokens SET revoked = :r, seal = :s WHERE id = :i", r=t.revoked, s=t.seal, i=t.id)
    sql(vault, "UPDATE audit SET target = 'tina ' WHERE action = 'user.revoke' AND target = 'tina'")
    vault._verified.clear()
    vault._revoked.clear()  # a fresh process: only storage remembers
    with pytest.raises((IntegrityError, AccessDenied)):
        vault.read(tokens["trainer"], "toy")
    assert any("revoked/tina.json" in p for p in problems(vault, tokens["auditor"]))


def test_a_token_id_under_attack_still_lets_its_owner_in(built):
    from mithridate.vault.access import CLIENT, parse_token
    from mithridate.vault.errors import Throttled

    vault, tokens = built
    admin_id, _ = parse_token(tokens["admin"])
    for i in range(12):  # wrong secrets for the admin's token id, from ever new addresses
        CLIENT.set(f"10.0.0.{i}")
        with pytest.raises(AccessDenied):
            vault.whoami(f"mth_{admin_id}_{'x' * 43}")
    CLIENT.set("10.0.1.1")
    with pytest.raises(Throttled):
        vault.whoami(f"mth_{admin_id}_{'y' * 43}")
    assert vault.whoami(tokens["admin"])["name"] == "admin"
    CLIENT.set("local")


def test_a_baseline_hidden_while_an_upload_is_checked_does_not_get_it_approved(built):
    vault, tokens = built
    bad = b"x1,label\n" + b"".join(f"{i},{'ab'[i % 2]}\n".encode() for i in range(200))  # columns dropped
    sql(vault, "UPDATE versions SET dataset = 'zz_hidden' WHERE dataset = 'toy'")
    moved = vault.root / "committed_toy"
    shutil.move(vault.root / "committed" / "toy", moved)
    up = vault.put(tokens["contributor"], "toy", io.BytesIO(bad), "toy.csv", source="web")
    sql(vault, "UPDATE versions SET dataset = 'toy' WHERE dataset = 'zz_hidden'")
    shutil.move(moved, vault.root / "committed" / "toy")
    assert up["checks_passed"]  # fooled once ...
    with pytest.raises(Conflict, match="re-run against toy@2"):  # ... but the approval checks again
        vault.approve(tokens["steward"], up["upload"])


def test_retention_edited_in_the_catalog_is_named(built):
    vault, tokens = built
    vault.hold(tokens["admin"], "toy@1", legal_hold=True, retain_until="2031-01-01")
    sql(vault, "UPDATE versions SET legal_hold = :f, retain_until = NULL WHERE dataset = 'toy' AND number = 1",
        f=False)
    assert any("toy@1 has legal hold" in p for p in problems(vault, tokens["auditor"]))


ROTATING_WRITER = """
import io, sys, time
from pathlib import Path
sys.path.insert(0, sys.argv[4])
from mithridate.vault.core import Vault
from test_vault_store import table_bytes
root, token, marker = sys.argv[1:4]
vault = Vault.open(root)
guard = vault.keyring.guard
def slow_guard(current):  # holding the shared key lock, as every wrap does
    guard(current)
    if not Path(marker).exists():
        Path(marker).write_text("wrapping")
        time.sleep(2)
vault.keyring.guard = slow_guard
try:
    vault.put(token, "toy", io.BytesIO(table_bytes(2000, 21)), "toy.csv", source="web")
    print("put ok")
except Exception as exc:
    print(type(exc).__name__, exc)
"""


def test_a_rotation_from_another_process_never_leaves_a_key_wrapped_under_the_retired_one(tmp_path):
    import subprocess
    import sys
    import time

    vault, tokens = build(tmp_path / "vault")
    vault.close()
    marker = tmp_path / "marker"
    writer = subprocess.Popen([sys.executable, "-c", ROTATING_WRITER, str(tmp_path / "vault"), tokens["contributor"],
                               str(marker), str(Path(__file__).parent)], stdout=subprocess.PIPE, text=True)
    deadline = time.time() + 60
    while not marker.exists() and time.time() < deadline:
        time.sleep(0.05)
    with Vault.open(tmp_path / "vault") as rotator:
        rotator.rotate_key(tokens["admin"])  # waits for the writer's wrap, then the writer must stop
    out, _ = writer.communicate(timeout=120)
    with Vault.open(tmp_path / "vault") as again:
        report = again.verify(tokens["auditor"])
    assert report["ok"], report["problems"]
    assert "put ok" in out or "master key" in out, out


def test_collect_removes_only_chunks_nothing_refers_to(tmp_path):
    from mithridate.vault.errors import TooLarge

    vault, tokens = build(tmp_path / "vault")
    before = {k for k in vault.backend.list("objects")}
    vault.config.max_upload_bytes = 3 * CHUNK
    with pytest.raises(TooLarge):
        vault.put(tokens["contributor"], "toy", io.BytesIO(table_bytes(2000, 9)), "toy.csv", source="web")
    left = {k for k in vault.backend.list("objects")} - before
    assert left and any("no manifest refers to" in o for o in vault.verify(tokens["auditor"])["orphans"])
    assert vault.collect(tokens["admin"])["objects"] == 0  # too young: could be a live upload's
    with pytest.raises(AccessDenied):
        vault.collect(tokens["steward"])
    assert vault.collect(tokens["admin"], older_than=0)["objects"] == len(left)
    assert {k for k in vault.backend.list("objects")} == before
    report = vault.verify(tokens["auditor"])
    assert report["ok"] and not any("no manifest refers to" in o for o in report["orphans"])
    assert b"".join(vault.read(tokens["trainer"], "toy@1")[1]) == table_bytes(200, 0)
    vault.close()
