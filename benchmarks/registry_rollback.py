"""Rollback by lineage: a registry of dataset versions (uploads, cuts, derived data) and models (with
fine-tunes), one version marked poisoned, and the response checked against the truth the generator kept.

The generator draws the world in creation order and records, as it goes, which versions and models a
poisoning of each version would reach (a forward pass over the creation order, independent of the
registry's graph search). The response must quarantine exactly those models (precision = recall = 1) and
move every alias on them to the newest known-good, untouched version of the same model; the time of the
response is measured beside the bar (under 5 s for 50 versions and 500 models).

    python -m benchmarks.registry_rollback            # 50 versions, 500 models, 3 seeds
    python -m benchmarks.registry_rollback --quick    # 12 versions, 60 models
"""

from __future__ import annotations

import argparse
import io
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pandas as pd

from mithridate.vault import Vault
from mithridate.vault.lineage import KNOWN_GOOD, split_ref

ROLES = {"alice": "contributor", "tom": "trainer", "stew": "steward", "dee": "deployer", "audrey": "auditor"}


@dataclass
class World:
    """A registry built for the benchmark, and the generator's own record of it."""

    vault: Vault
    tokens: dict[str, str]
    versions: list[str] = field(default_factory=list)  # in creation order
    carried: dict[str, set[str]] = field(default_factory=dict)  # the versions whose new rows each one holds
    declared: dict[str, set[str]] = field(default_factory=dict)  # declared derivations
    cut_of: dict[str, str] = field(default_factory=dict)  # a cut's parent, when that parent is a cut too
    models: list[str] = field(default_factory=list)  # in creation order
    model_data: dict[str, set[str]] = field(default_factory=dict)
    model_parent: dict[str, str | None] = field(default_factory=dict)
    status: dict[str, str] = field(default_factory=dict)
    aliases: dict[tuple[str, str], int] = field(default_factory=dict)

    def reached(self, poisoned: str) -> tuple[set[str], set[str]]:
        """Versions and models a poisoning of ``poisoned`` reaches: one pass in creation order."""
        bad = set()
        for ref in self.versions:
            if (ref == poisoned or self.carried.get(ref, set()) & bad or self.declared.get(ref, set()) & bad
                    or self.cut_of.get(ref) in bad):
                bad.add(ref)
        models = set()
        for ref in self.models:
            if self.model_data[ref] & bad or self.model_parent[ref] in models:
                models.add(ref)
        return bad, models

    def expected_moves(self, models: set[str]) -> dict[tuple[str, str], int | None]:
        moves = {}
        for (name, alias), number in self.aliases.items():
            if f"{name}@{number}" in models:
                good = [split_ref(m)[1] for m in self.models if split_ref(m)[0] == name
                        and self.status[m] == KNOWN_GOOD and m not in models]
                moves[(name, alias)] = max(good, default=None)
        return moves


def table_bytes(rng: np.random.Generator, rows: int) -> bytes:
    frame = pd.DataFrame({"x": rng.normal(size=rows).round(6), "z": rng.integers(0, 5, rows),
                          "label": rng.choice(["a", "b"], rows)})
    return frame.to_csv(index=False).encode()


def build(root: Path, n_versions: int = 50, n_models: int = 500, n_names: int = 25, seed: int = 0,
          db_url: str | None = None) -> World:
    """Datasets grown by uploads from several sources, some cut, some derived from others; models trained
    on one or two versions, a third fine-tuned from an earlier model; most promoted; two aliases a name."""
    rng = np.random.default_rng(seed)
    vault, admin = Vault.init(root, checks="none", auto_approve=True, db_url=db_url)
    tokens = {name: vault.add_user(admin, name, [role]) for name, role in ROLES.items()}
    world = World(vault, tokens)
    datasets = [f"d{i}" for i in range(max(3, n_versions // 6))]
    current: dict[str, bytes] = {}
    holds: dict[str, dict[str, str]] = {}  # per dataset: the versions whose new rows it now holds -> their source
    kinds: dict[str, str] = {}
    while len(world.versions) < n_versions:
        name = datasets[rng.integers(len(datasets))]
        kind = rng.random()
        if name in current and kind < 0.15:  # a cut of the newest version without one of its sources
            newest = max((v for v in world.versions if split_ref(v)[0] == name), key=lambda v: split_ref(v)[1])
            sources = sorted(world.vault.manifest(tokens["tom"], newest)["sources"])
            if len(sources) < 2:
                continue
            drop = sources[rng.integers(len(sources))]
            ref = vault.cut(tokens["stew"], name, [drop])
            holds[name] = {v: s for v, s in holds[name].items() if s != drop}
            world.carried[ref] = set(holds[name])
            if kinds[newest] == "cut":
                world.cut_of[ref] = newest
            kinds[ref] = "cut"
            current[name] = b"".join(vault.read(tokens["tom"], ref)[1])
        else:  # a new version: the old rows plus a batch from one source (or a fresh table)
            batch = table_bytes(rng, 20)
            data = current.get(name, b"") + (batch if name not in current else batch.split(b"\n", 1)[1])
            source = f"s{rng.integers(6)}"
            ref = vault.put(tokens["alice"], name, io.BytesIO(data), f"{name}.csv", source=source)["version"]
            current[name] = data
            holds.setdefault(name, {})[ref] = source
            world.carried[ref] = set(holds[name]) - {ref}
            kinds[ref] = "upload"
            if len(world.versions) > 3 and rng.random() < 0.25:  # declared: made from other versions
                others = [v for v in world.versions if split_ref(v)[0] != name]
                parents = set(rng.choice(others, size=min(2, len(others)), replace=False).tolist())
                vault.derive(tokens["tom"], ref, sorted(parents))
                world.declared[ref] = parents
        world.versions.append(ref)
    names = [f"m{i}" for i in range(n_names)]
    for _ in range(n_models):
        name = names[rng.integers(n_names)]
        data = set(rng.choice(world.versions, size=rng.integers(1, 3), replace=False).tolist())
        parent = world.models[rng.integers(len(world.models))] if world.models and rng.random() < 0.3 else None
        weights = io.BytesIO(f'{{"w": [{rng.normal():.6f}]}}'.encode())
        ref = vault.add_model(tokens["tom"], name, weights, "w.json", sorted(data), parent=parent)
        world.models.append(ref)
        world.model_data[ref], world.model_parent[ref] = data, parent
        world.status[ref] = "candidate"
        if rng.random() < 0.7:
            vault.promote(tokens["stew"], ref)
            world.status[ref] = KNOWN_GOOD
    for name in names:
        good = [split_ref(m)[1] for m in world.models if split_ref(m)[0] == name and world.status[m] == KNOWN_GOOD]
        for alias in ("champion", "staging"):
            if good:
                number = int(rng.choice(good))
                vault.set_alias(tokens["dee"], name, alias, number)
                world.aliases[(name, alias)] = number
    return world


def check(world: World, poisoned: str, dry_run: bool = False) -> dict:
    """Mark ``poisoned`` (or only plan it) and compare the response with the generator's truth."""
    _, truth = world.reached(poisoned)
    expected = world.expected_moves(truth)
    start = time.perf_counter()
    result = world.vault.quarantine_dataset(world.tokens["stew"], [poisoned], reason="benchmark", dry_run=dry_run)
    seconds = time.perf_counter() - start
    chosen = set(result["quarantined"])
    moved = {(m["model"], m["alias"]): m["new"] for m in result["moves"]}
    hit = len(chosen & truth)
    return {"poisoned": poisoned, "run": "dry run" if dry_run else "response", "models_reached": len(truth),
            "precision": hit / len(chosen) if chosen else 1.0,
            "recall": hit / len(truth) if truth else 1.0, "aliases_moved": len(moved),
            "moves_right": moved == expected, "seconds": seconds}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true")
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--db", help="catalog URL (default: SQLite in the vault folder)")
    args = parser.parse_args()
    n_versions, n_models = (12, 60) if args.quick else (50, 500)
    rows = []
    for seed in range(args.seeds):
        with tempfile.TemporaryDirectory() as tmp:
            start = time.perf_counter()
            world = build(Path(tmp) / "vault", n_versions, n_models, seed=seed, db_url=args.db)
            built = time.perf_counter() - start
            # planned for a version of median reach, then carried out for the one reaching most models
            reach = sorted(world.versions, key=lambda v: len(world.reached(v)[1]))
            for poisoned, dry_run in ((reach[len(reach) // 2], True), (reach[-1], False)):
                rows.append({"seed": seed, "versions": n_versions, "models": n_models, "build_s": round(built, 1),
                             **check(world, poisoned, dry_run)})
            world.vault.close()
    frame = pd.DataFrame(rows)
    print(frame.to_string(index=False))
    ok = (frame.precision == 1).all() and (frame.recall == 1).all() and frame.moves_right.all() and \
        (frame.seconds < 5).all()
    print(f"bar (precision = recall = 1, every alias right, under 5 s): {'met' if ok else 'NOT met'}")


if __name__ == "__main__":
    main()
