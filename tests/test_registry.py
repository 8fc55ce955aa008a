"""The model registry under attack and under fire: lineage, rollback, tampering, a killed response.

Data: scikit-learn's wine table as the uploads (a trusted lab batch, then a crowd batch), weights as
JSON and safetensors files. The blast radius is checked against the truth a generator kept while it built
a random registry (benchmarks/registry_rollback.py), never against the registry's own graph.
"""

from __future__ import annotations

import io
import json
import os
import shutil
import signal
import sqlite3
import subprocess
import sys
import time

import numpy as np
import pytest
from benchmarks.registry_rollback import build, check
from sklearn.datasets import load_wine
from typer.testing import CliRunner

from mithridate.cli import app
from mithridate.vault import Vault
from mithridate.vault.errors import IntegrityError, VaultError

ROLES = {"alice": "contributor", "tom": "trainer", "stew": "steward", "dee": "deployer", "audrey": "auditor"}


def wine_csv(rows: slice) -> bytes:
    frame = load_wine(as_frame=True).frame.iloc[rows]
    return frame.rename(columns={"target": "label"}).to_csv(index=False).encode()


def weights(value: float) -> io.BytesIO:
    return io.BytesIO(json.dumps({"coef": [value, -value]}).encode())


@pytest.fixture()
def incident(tmp_path):
    """train@1 from the lab; train@2 adds a crowd batch; train@3 cuts the crowd out; features@1 is made
    from train@2. fraud@1..3 are known-good (fraud@3 fine-tuned from fraud@2 on train@3), fraud@4 on
    features@1, other@1 on train@3. fraud@champion serves 3, fraud@staging 4, other@prod 1."""
    vault, admin = Vault.init(tmp_path / "vault", checks="none", auto_approve=True)
    t = {name: vault.add_user(admin, name, [role]) for name, role in ROLES.items()} | {"admin": admin}
    lab, crowd = wine_csv(slice(0, 120)), wine_csv(slice(120, 178))
    first = vault.put(t["alice"], "train", io.BytesIO(lab), "train.csv", source="lab", label="label")
    assert first["version"] == "train@1"
    assert vault.put(t["alice"], "train", io.BytesIO(lab + crowd.split(b"\n", 1)[1]), "train.csv", source="crowd",
                     label="label")["version"] == "train@2"
    assert vault.cut(t["stew"], "train", ["crowd"]) == "train@3"
    assert vault.put(t["alice"], "features", io.BytesIO(wine_csv(slice(0, 178))), "f.csv", source="etl",
                     label="label")["version"] == "features@1"
    vault.derive(t["tom"], "features@1", ["train@2"])
    for data, parent in ((["train@1"], None), (["train@2"], None), (["train@3"], "fraud@2"), (["features@1"], None)):
        vault.add_model(t["tom"], "fraud", weights(1.0), "w.json", data, parent=parent, metrics={"auc": 0.9})
    vault.add_model(t["tom"], "other", weights(2.0), "w.json", ["train@3"])
    for ref in ("fraud@1", "fraud@2", "fraud@3", "fraud@4", "other@1"):
        vault.promote(t["stew"], ref)
    for model, alias, number in (("fraud", "champion", 3), ("fraud", "staging", 4), ("other", "prod", 1)):
        vault.set_alias(t["dee"], model, alias, number)
    yield vault, t
    vault.close()


def alias_map(vault, token) -> dict:
    return {f"{a['model']}@{a['alias']}": a["number"] for a in vault.aliases(token)}


def statuses(vault, token) -> dict:
    return {m["model"]: m["status"] for m in vault.models(token)}


def test_a_poisoned_source_rolls_back_exactly_what_it_reached(incident):
    vault, t = incident
    assert vault.lineage(t["dee"], "train@2")["models"] == [
        {"model": "fraud@2", "status": "known-good"}, {"model": "fraud@3", "status": "known-good"},
        {"model": "fraud@4", "status": "known-good"}]
    result = vault.quarantine_dataset(t["stew"], source="crowd", reason="flipped labels")
    # train@3 was cut without the crowd's rows: it and other@1 are clean; fraud@3 is a fine-tune of fraud@2
    assert result["marked"] == ["train@2"]
    assert result["datasets_reached"] == ["features@1", "train@2"]
    assert sorted(result["quarantined"]) == ["fraud@2", "fraud@3", "fraud@4"]
    assert alias_map(vault, t["dee"]) == {"fraud@champion": 1, "fraud@staging": 1, "other@prod": 1}
    assert vault.resolve(t["dee"], "fraud@champion")["model"] == "fraud@1"
    # what was reached can serve no more, nor be promoted again
    with pytest.raises(VaultError, match="quarantined"):
        vault.set_alias(t["dee"], "fraud", "champion", 3)
    with pytest.raises(VaultError, match="quarantined"):
        vault.promote(t["stew"], "fraud@4")
    # a model trained later on what the poisoned version reached is quarantined from the start
    late = vault.add_model(t["tom"], "fraud", weights(3.0), "w.json", ["features@1"])
    assert statuses(vault, t["stew"])[late] == "quarantined"
    with pytest.raises(VaultError, match="quarantined"):
        vault.promote(t["stew"], late)
    # again: nothing changes, no second response
    again = vault.quarantine_dataset(t["stew"], source="crowd")
    assert (again["response"], again["marked"], again["quarantined"], again["moves"]) == (None, [], {}, [])
    assert len(vault.responses(t["audrey"])) == 1
    assert vault.verify(t["audrey"])["ok"]


def test_undo_restores_aliases_statuses_and_marks(incident):
    vault, t = incident
    before_aliases, before_status = alias_map(vault, t["dee"]), statuses(vault, t["stew"])
    response = vault.quarantine_dataset(t["stew"], ["train@2"], reason="false alarm")["response"]
    vault.set_alias(t["dee"], "other", "prod", 1)  # an alias the response did not move stays as it is
    undone = vault.undo(t["stew"], response)
    assert {(m["model"], m["alias"]) for m in undone["restored"]} == {("fraud", "champion"), ("fraud", "staging")}
    assert alias_map(vault, t["dee"]) == before_aliases
    assert statuses(vault, t["stew"]) == before_status
    with pytest.raises(VaultError, match="was undone"):
        vault.undo(t["stew"], response)
    vault.promote(t["stew"], "fraud@2")  # the mark is cleared
    assert vault.verify(t["audrey"])["ok"]


def test_a_dry_run_changes_nothing(incident):
    vault, t = incident
    db = vault.root / "vault.db"
    tables = ("aliases", "models", "dataset_marks", "responses")

    def rows():
        with sqlite3.connect(db) as conn:
            return {table: sorted(conn.execute(f"SELECT * FROM {table}").fetchall()) for table in tables}

    before = rows()
    plan = vault.quarantine_dataset(t["stew"], source="crowd", dry_run=True)
    assert plan["dry_run"] and plan["response"] is None and len(plan["moves"]) == 2
    assert rows() == before


def test_a_rollback_of_one_model_takes_its_fine_tunes_along(incident):
    vault, t = incident
    result = vault.rollback(t["dee"], "fraud@2", reason="canary disagreement")
    assert sorted(result["quarantined"]) == ["fraud@2", "fraud@3"]
    assert alias_map(vault, t["dee"])["fraud@champion"] == 4
    vault.rollback(t["dee"], "fraud@4")
    vault.rollback(t["dee"], "fraud@1")
    last = vault.responses(t["audrey"])[-1]
    assert last["stranded"] == ["fraud@champion", "fraud@staging"]
    with pytest.raises(VaultError, match="points at no model"):
        vault.resolve(t["dee"], "fraud@champion")


def test_an_alias_or_status_edited_in_the_catalog_is_caught(incident):
    vault, t = incident
    vault.rollback(t["dee"], "fraud@2")
    with sqlite3.connect(vault.root / "vault.db") as conn:  # the insider points champion back at fraud@3
        conn.execute("UPDATE aliases SET number = 3 WHERE model = 'fraud' AND alias = 'champion'")
    with pytest.raises(IntegrityError, match=r"alias fraud@champion.*seal invalid"):
        vault.resolve(t["dee"], "fraud@champion")
    assert any("alias fraud@champion was altered" in p for p in vault.verify(t["audrey"])["problems"])
    with sqlite3.connect(vault.root / "vault.db") as conn:  # and revives the quarantined model
        conn.execute("UPDATE models SET status = 'known-good' WHERE name = 'fraud' AND number = 2")
    with pytest.raises(IntegrityError, match=r"model fraud@2.*seal invalid"):
        vault.models(t["dee"])


def test_a_derivation_deleted_from_the_catalog_still_counts(incident):
    vault, t = incident
    with sqlite3.connect(vault.root / "vault.db") as conn:
        conn.execute("DELETE FROM derivations")
    assert "fraud@4" in vault.quarantine_dataset(t["stew"], ["train@2"], dry_run=True)["quarantined"]


def test_altered_weights_or_records_are_refused(incident):
    vault, t = incident
    key = next(k for k in vault.backend.list("models/fraud/") if k.split("/")[-1].startswith("1."))
    path = vault.root / "objects" / ".." / key
    raw = bytearray(path.read_bytes())
    raw[raw.index(b'"sha256"') + 12] ^= 1
    os.chmod(path, 0o600)
    path.write_bytes(bytes(raw))
    with pytest.raises(IntegrityError, match="altered"):
        vault.read_model(t["dee"], "fraud@1")


def test_pickles_are_refused_and_safetensors_kept(incident, tmp_path):
    from safetensors.numpy import save

    vault, t = incident
    pickled = b"\x80\x04\x95" + b"\x00" * 20
    with pytest.raises(VaultError, match="pickle"):
        vault.add_model(t["tom"], "fraud", io.BytesIO(pickled), "model.pkl", ["train@1"])
    with pytest.raises(VaultError, match="pickle"):
        vault.add_model(t["tom"], "fraud", io.BytesIO(pickled), "model.json", ["train@1"])
    zipped = io.BytesIO()
    import zipfile

    with zipfile.ZipFile(zipped, "w") as z:  # torch.save's layout
        z.writestr("archive/data.pkl", pickled)
    with pytest.raises(VaultError, match="pickle"):
        vault.add_model(t["tom"], "fraud", io.BytesIO(zipped.getvalue()), "model.safetensors", ["train@1"])
    with pytest.raises(VaultError, match="no dataset version"):
        vault.add_model(t["tom"], "fraud", weights(1), "w.json", ["train@9"])
    tensors = save({"w": np.arange(6, dtype=np.float32).reshape(2, 3)})
    ref = vault.add_model(t["tom"], "fraud", io.BytesIO(tensors), "model.safetensors", ["train@3"])
    vault.collect(t["admin"], older_than=0)  # removes only chunks nothing refers to: the weights stay
    body, parts = vault.read_model(t["dee"], ref)
    assert b"".join(parts) == tensors and body["file"]["format"] == "safetensors"


def test_the_blast_radius_matches_the_generators_truth(tmp_path):
    world = build(tmp_path / "vault", n_versions=10, n_models=40, n_names=6, seed=1)
    reach = sorted(world.versions, key=lambda v: len(world.reached(v)[1]))
    for poisoned, dry_run in ((reach[len(reach) // 3], True), (reach[len(reach) // 2], True), (reach[-1], False)):
        result = check(world, poisoned, dry_run)
        assert (result["precision"], result["recall"], result["moves_right"]) == (1.0, 1.0, True), result
    assert world.vault.verify(world.tokens["audrey"])["ok"]
    world.vault.close()


KILLER = """
import sys, time
from mithridate.vault import Vault
vault = Vault.open(sys.argv[1])
print("go", flush=True)
vault.quarantine_dataset(sys.argv[2], ["{poisoned}"], reason="killed")
print("done", flush=True)
"""


def test_a_response_killed_midway_leaves_every_alias_old_or_new(tmp_path):
    world = build(tmp_path / "base", n_versions=6, n_models=40, n_names=20, seed=3)
    poisoned = max(world.versions, key=lambda v: len(world.reached(v)[1]))
    _, truth = world.reached(poisoned)
    old = {f"{m}@{a}": n for (m, a), n in world.aliases.items()}
    new = {**old, **{f"{m}@{a}": n for (m, a), n in world.expected_moves(truth).items()}}
    assert new != old
    token = world.tokens["stew"]
    world.vault.close()
    script = KILLER.format(poisoned=poisoned)

    def attempt(name: str, kill_after: float | None) -> tuple[str, float]:
        root = tmp_path / name
        shutil.copytree(tmp_path / "base", root)
        proc = subprocess.Popen([sys.executable, "-c", script, str(root), token], stdout=subprocess.PIPE, text=True)
        assert proc.stdout.readline().strip() == "go"
        start = time.perf_counter()
        if kill_after is None:
            assert proc.stdout.readline().strip() == "done"
        else:
            time.sleep(kill_after)
            proc.send_signal(signal.SIGKILL)
        proc.wait()
        took = time.perf_counter() - start
        with Vault.open(root) as vault:
            now = alias_map(vault, world.tokens["dee"])
            assert now in (old, new), f"killed after {kill_after}s: aliases neither all old nor all new"
            vault.quarantine_dataset(token, [poisoned])  # finishing the response afterwards gives the plan
            assert alias_map(vault, world.tokens["dee"]) == new
        return ("new" if now == new else "old"), took

    outcome, whole = attempt("whole", None)  # how long a response takes here, to kill it at fractions of that
    assert outcome == "new"
    outcomes = [attempt(f"kill{i}", whole * f)[0] for i, f in enumerate((0.0, 0.3, 0.6, 0.8, 0.9, 0.97))]
    assert outcomes[0] == "old"


def test_registry_cli(incident, tmp_path):
    vault, t = incident
    root = str(vault.root)
    runner = CliRunner()

    def run(*args, token="tom"):
        return runner.invoke(app, ["registry", *args, "--vault", root, "--token", t[token]])

    metrics = tmp_path / "m.json"
    metrics.write_text('{"auc": 0.93}')
    w = tmp_path / "w.json"
    w.write_text('{"coef": [1]}')
    added = run("add", "fraud", str(w), "--dataset", "train@3", "--metrics", str(metrics))
    assert added.exit_code == 0 and added.stdout.strip() == "fraud@5", added.output
    bad = tmp_path / "model.pkl"
    bad.write_bytes(b"\x80\x04K.")
    refused = run("add", "fraud", str(bad), "--dataset", "train@3")
    assert refused.exit_code == 2 and "pickle" in refused.output and len(refused.output.strip().splitlines()) == 1
    denied = run("alias", "fraud", "champion", "5")  # a trainer moves no alias
    assert denied.exit_code == 3 and "may not model.alias" in denied.output
    plan = run("quarantine-dataset", "--source", "crowd", "--dry-run", token="stew")
    assert plan.exit_code == 0 and "fraud@champion: 3 -> 1" in plan.output and "nothing was written" in plan.output
    assert alias_map(vault, t["dee"])["fraud@champion"] == 3
    done = run("quarantine-dataset", "--source", "crowd", "--reason", "flipped", "--json", token="stew")
    response = json.loads(done.stdout)["response"]
    assert run("aliases", token="dee").stdout.splitlines()[0].startswith("fraud@champion\t1\t")
    assert response in run("log", token="audrey").stdout
    assert json.loads(run("lineage", "model:fraud@3", token="dee").stdout)["fine_tuned_from"] == ["fraud@2"]
    assert run("undo", response, token="stew").exit_code == 0
    assert alias_map(vault, t["dee"])["fraud@champion"] == 3
    remote = runner.invoke(app, ["registry", "list", "--vault", "https://127.0.0.1:1", "--token", t["tom"]])
    assert remote.exit_code == 2 and "cannot reach the vault" in remote.output


@pytest.mark.slow
def test_the_registry_on_postgresql(postgres, tmp_path):
    world = build(tmp_path / "vault", n_versions=8, n_models=30, n_names=5, seed=2, db_url=postgres())
    reach = sorted(world.versions, key=lambda v: len(world.reached(v)[1]))
    result = check(world, reach[-1])
    assert (result["precision"], result["recall"], result["moves_right"]) == (1.0, 1.0, True)
    world.vault.close()


def test_mlflow_mirror_follows_a_rollback(incident, tmp_path):
    """A real MLflow registry (its SQLAlchemy store on SQLite): versions, statuses and aliases mirrored;
    after a rollback here, MLflow's champion moves too; a second sync changes nothing."""
    from mlflow import MlflowClient

    from mithridate.vault.mlflow_mirror import sync

    vault, t = incident
    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    first = sync(vault, t["dee"], uri)
    assert sorted(first["created"]) == ["fraud@1", "fraud@2", "fraud@3", "fraud@4", "other@1"]
    client = MlflowClient(tracking_uri=uri, registry_uri=uri)
    assert client.get_model_version_by_alias("fraud", "champion").tags["mithridate.ref"] == "fraud@3"
    client.set_registered_model_alias("other", "theirs", "1")  # an alias mithridate does not hold
    vault.quarantine_dataset(t["stew"], source="crowd", reason="flipped labels")
    second = sync(vault, t["dee"], uri)
    assert sorted(second["updated"]) == ["fraud@2", "fraud@3", "fraud@4"]
    assert {m["alias"] for m in second["aliases_moved"]} == {"fraud@champion", "fraud@staging"}
    champion = client.get_model_version_by_alias("fraud", "champion")
    assert champion.tags["mithridate.ref"] == "fraud@1" and champion.source == "mithridate:fraud@1"
    assert client.get_model_version("fraud", "3").tags["mithridate.status"] == "quarantined"
    assert sync(vault, t["dee"], uri) == {"created": [], "updated": [], "aliases_moved": [], "aliases_removed": []}
    assert str(client.get_model_version_by_alias("other", "theirs").version) == "1"
    vault.rollback(t["dee"], "fraud@1")  # nothing clean is left: the MLflow alias goes too
    assert set(sync(vault, t["dee"], uri)["aliases_removed"]) == {"fraud@champion", "fraud@staging"}


def test_a_deployer_cannot_undo_a_stewards_quarantine(incident):
    vault, t = incident
    response = vault.quarantine_dataset(t["stew"], ["train@2"], reason="poisoned")["response"]
    with pytest.raises(VaultError, match=r"may not dataset\.quarantine"):
        vault.undo(t["dee"], response)
    assert vault.resolve(t["dee"], "fraud@champion")["model"] == "fraud@1"
    vault.undo(t["stew"], response)  # the steward may


def test_undo_never_puts_a_model_on_poisoned_data_back_into_service(incident):
    vault, t = incident
    first = vault.rollback(t["dee"], "fraud@3", reason="canary")["response"]  # champion 3 -> 2
    vault.quarantine_dataset(t["stew"], ["train@3"], reason="poisoned")  # fraud@3 was trained on it
    undone = vault.undo(t["dee"], first)
    assert vault.resolve(t["dee"], "fraud@champion")["model"] != "fraud@3"
    assert statuses(vault, t["stew"])["fraud@3"] == "quarantined"
    assert undone["kept"]


def test_fine_tunes_of_a_rolled_back_model_cannot_serve(incident):
    vault, t = incident
    vault.rollback(t["dee"], "fraud@2", reason="bad outputs")
    tuned = vault.add_model(t["tom"], "fraud", weights(5.0), "w.json", ["train@1"], parent="fraud@2")
    assert statuses(vault, t["stew"])[tuned] == "quarantined"
    with pytest.raises(VaultError, match="quarantined"):
        vault.promote(t["stew"], tuned)


def test_data_derived_later_from_a_poisoned_version_is_reached_at_once(incident):
    vault, t = incident
    vault.quarantine_dataset(t["stew"], ["train@2"], reason="poisoned")
    first = vault.put(t["alice"], "extra", io.BytesIO(wine_csv(slice(40, 90))), "e.csv", source="etl", label="label")
    model = vault.add_model(t["tom"], "other", weights(4.0), "w.json", [first["version"]])
    vault.promote(t["stew"], model)
    vault.set_alias(t["dee"], "other", "prod", 2)
    derived = vault.derive(t["tom"], first["version"], ["train@2"])  # only now is it said to come from train@2
    assert derived["reached_by_poison"]
    assert statuses(vault, t["stew"])[model] == "quarantined"
    assert vault.resolve(t["dee"], "other@prod")["model"] == "other@1"
    assert vault.verify(t["audrey"])["ok"]


def test_a_deleted_model_row_is_caught_and_a_failed_add_is_only_an_orphan(incident, monkeypatch):
    vault, t = incident
    sealing = vault._seal_rows

    def crash(conn, kind, where):  # the writer dies after storing the record, before committing the row
        if kind == "models":
            raise RuntimeError("killed")
        sealing(conn, kind, where)

    monkeypatch.setattr(vault, "_seal_rows", crash)
    with pytest.raises(RuntimeError):
        vault.add_model(t["tom"], "fraud", weights(9.0), "w.json", ["train@1"])
    monkeypatch.setattr(vault, "_seal_rows", sealing)
    report = vault.verify(t["audrey"])
    assert report["ok"] and any("models/fraud/5." in o for o in report["orphans"])
    with sqlite3.connect(vault.root / "vault.db") as conn:  # the insider removes fraud@1 from the catalog
        conn.execute("DELETE FROM models WHERE name = 'fraud' AND number = 1")
    report = vault.verify(t["audrey"])
    assert any("fraud/1." in p and "deleted from the catalog" in p for p in report["problems"])
