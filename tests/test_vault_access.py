"""Vault access control: the role x action matrix, separation of duties, tokens, audited denials."""

from __future__ import annotations

import io
import itertools
import sqlite3

import numpy as np
import pandas as pd
import pytest

from mithridate.vault import AccessDenied
from mithridate.vault.access import ACTIONS, ROLES
from mithridate.vault.core import Vault

# The specification, written out independently of the library's table: who may do what.
EXPECTED = {
    "user.add": {"admin"},
    "user.list": {"admin", "auditor"},
    "user.revoke": {"admin"},
    "key.rotate": {"admin"},
    "version.hold": {"admin"},
    "vault.verify": {"admin", "auditor"},
    "upload.put": {"contributor"},
    "upload.list": {"contributor", "steward", "auditor"},
    "upload.read": {"steward"},
    "upload.approve": {"steward"},
    "upload.reject": {"steward"},
    "version.list": {"trainer", "steward", "contributor", "auditor"},
    "version.read": {"trainer"},
    "version.cut": {"steward"},
    "trace": {"steward", "auditor"},
    "audit.read": {"auditor"},
    "storage.collect": {"admin"},
    "model.add": {"trainer"},
    "model.list": {"trainer", "steward", "auditor", "deployer"},
    "model.read": {"trainer", "deployer"},
    "model.promote": {"steward"},
    "model.alias": {"deployer"},
    "dataset.derive": {"trainer", "steward"},
    "dataset.quarantine": {"steward"},
    "model.rollback": {"steward", "deployer"},
}


def csv_bytes(n: int, seed: int) -> bytes:
    rng = np.random.default_rng(seed)
    return pd.DataFrame({"x": rng.normal(size=n).round(5), "label": rng.choice(["a", "b"], n)}).to_csv(
        index=False).encode()


@pytest.fixture(scope="module")
def setup(tmp_path_factory):
    root = tmp_path_factory.mktemp("access") / "vault"
    vault, admin = Vault.init(root, checks="none", chunk_size=1 << 16)
    tokens = {"admin": admin}
    for role in ROLES[1:]:
        tokens[role] = vault.add_user(admin, f"the-{role}", [role])
    uploader = vault.add_user(admin, "uploader2", ["contributor"])
    counter = itertools.count()

    def fresh_upload(source: str = "web", data: bytes | None = None) -> str:
        data = csv_bytes(40, next(counter)) if data is None else data
        return vault.put(uploader, "toy", io.BytesIO(data), "toy.csv", source=source)["upload"]

    vault.approve(tokens["steward"], fresh_upload())
    yield vault, tokens, fresh_upload, counter
    vault.close()


def perform(action: str, token: str, vault: Vault, tokens: dict, fresh_upload, counter) -> None:
    """Do ``action`` as the holder of ``token``, on state prepared so that it succeeds when allowed."""
    n = next(counter)
    if action == "user.add":
        vault.add_user(token, f"u{n}", ["trainer"])
    elif action == "user.list":
        vault.users(token)
    elif action == "user.revoke":
        vault.add_user(tokens["admin"], f"victim{n}", ["trainer"])
        vault.revoke_user(token, f"victim{n}")
    elif action == "key.rotate":
        vault.rotate_key(token)
    elif action == "version.hold":
        vault.hold(token, "toy@1", legal_hold=True)
    elif action == "vault.verify":
        assert vault.verify(token)["ok"]
    elif action == "upload.put":
        vault.put(token, "toy", io.BytesIO(csv_bytes(10, 1000 + n)), "toy.csv", source="web")
    elif action == "upload.list":
        vault.uploads(token)
    elif action == "upload.read":
        b"".join(vault.read_upload(token, fresh_upload())[1])
    elif action == "upload.approve":
        vault.approve(token, fresh_upload())
    elif action == "upload.reject":
        vault.reject(token, fresh_upload(), "test")
    elif action == "version.list":
        vault.versions(token, "toy")
    elif action == "version.read":
        b"".join(vault.read(token, "toy")[1])
    elif action == "version.cut":
        current = b"".join(vault.read(tokens["trainer"], "toy")[1])
        extra = fresh_upload(f"bad{n}", current + csv_bytes(5, n).split(b"\n", 1)[1])
        vault.approve(tokens["steward"], extra)
        vault.cut(token, "toy", [f"bad{n}"])
    elif action == "trace":
        vault.trace(token, "web")
    elif action == "audit.read":
        vault.log(token, limit=5)
    elif action == "storage.collect":
        vault.collect(token)
    elif action.startswith(("model.", "dataset.")):
        registry_action(action, token, vault, tokens, fresh_upload, n)
    else:
        raise AssertionError(f"no test for {action}")


def registry_action(action: str, token: str, vault: Vault, tokens: dict, fresh_upload, n: int) -> None:
    """The model registry's actions, each on a model or version of its own (so a denial leaves no trace)."""
    def new_model(parent: str | None = None) -> str:
        return vault.add_model(tokens["trainer"], f"m{n}", io.BytesIO(b'{"w": [1]}'), "w.json", ["toy@1"], parent)

    if action == "model.add":
        vault.add_model(token, f"m{n}", io.BytesIO(b'{"w": [1]}'), "w.json", ["toy@1"])
    elif action == "model.list":
        vault.models(token)
    elif action == "model.read":
        b"".join(vault.read_model(token, new_model())[1])
    elif action == "model.promote":
        vault.promote(token, new_model())
    elif action == "model.alias":
        vault.set_alias(token, f"m{n}", "champion", int(new_model().split("@")[1]))
    elif action == "dataset.derive":
        vault.approve(tokens["steward"], fresh_upload(f"derived{n}"))
        newest = vault.datasets(tokens["trainer"])[0]["latest"]
        vault.derive(token, f"toy@{newest}", ["toy@1"])
    elif action == "dataset.quarantine":
        vault.approve(tokens["steward"], fresh_upload(f"poison{n}"))
        vault.quarantine_dataset(token, source=f"poison{n}", reason="test")
    elif action == "model.rollback":
        vault.rollback(token, new_model(), reason="test")
    else:
        raise AssertionError(f"no test for {action}")


def test_the_matrix_covers_every_action():
    assert set(EXPECTED) == set(ACTIONS)


@pytest.mark.parametrize("action", list(EXPECTED))
def test_role_action_matrix(setup, action):
    vault, tokens, fresh_upload, counter = setup
    for role in ROLES:
        before = vault.audit.count()
        allowed = role in EXPECTED[action]
        if allowed:
            perform(action, tokens[role], vault, tokens, fresh_upload, counter)
        else:
            with pytest.raises(AccessDenied, match=f"may not {action}"):
                perform(action, tokens[role], vault, tokens, fresh_upload, counter)
            denial = vault.audit.entries(after=before)[-1]
            assert (denial["action"], denial["outcome"], denial["actor"]) == (action, "denied", f"the-{role}"
                                                                               if role != "admin" else "admin")


def test_nobody_approves_their_own_upload(setup):
    vault, tokens, _, _ = setup
    both = vault.add_user(tokens["admin"], "both-hats", ["contributor", "steward"])
    upload = vault.put(both, "toy", io.BytesIO(csv_bytes(10, 5000)), "toy.csv", source="web")["upload"]
    with pytest.raises(AccessDenied, match="nobody approves their own upload"):
        vault.approve(both, upload)
    assert vault.audit.entries()[-1]["outcome"] == "denied"
    assert vault.upload(tokens["steward"], upload)["status"] == "quarantined"
    assert vault.approve(tokens["steward"], upload).startswith("toy@")


@pytest.mark.parametrize("bad", [None, "", "garbage", "mth_" + "0" * 32 + "_" + "A" * 43])
def test_missing_malformed_or_unknown_tokens_are_denied_and_audited(setup, bad):
    vault, _, _, _ = setup
    with pytest.raises(AccessDenied, match="invalid, revoked or missing token"):
        vault.versions(bad, "toy")
    last = vault.audit.entries()[-1]
    assert (last["actor"], last["action"], last["outcome"]) == ("anonymous", "version.list", "denied")


def test_a_tampered_secret_with_a_real_token_id_is_denied(setup):
    vault, tokens, _, _ = setup
    token = tokens["trainer"]
    forged = token[:-1] + ("A" if token[-1] != "A" else "B")
    with pytest.raises(AccessDenied):
        vault.versions(forged, "toy")


def test_revoked_token_stops_working_at_once(setup):
    vault, tokens, _, _ = setup
    token = vault.add_user(tokens["admin"], "temp-trainer", ["trainer"])
    assert vault.versions(token, "toy")
    vault.revoke_user(tokens["admin"], "temp-trainer")
    with pytest.raises(AccessDenied):
        vault.versions(token, "toy")


def test_tokens_are_stored_only_as_argon2_hashes(setup):
    vault, tokens, _, _ = setup
    with sqlite3.connect(vault.root / "vault.db") as conn:
        stored = [r[0] for r in conn.execute("SELECT hash FROM tokens")]
    dump = (vault.root / "vault.db").read_bytes()
    assert all(h.startswith("$argon2id$") for h in stored)
    for token in tokens.values():
        secret = token[len("mth_") + 33:]  # after the 32-hex id and its underscore (the secret may hold "_")
        assert len(secret) == 43
        assert secret.encode() not in dump and not any(secret in h for h in stored)
