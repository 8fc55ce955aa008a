"""Lineage: what a poisoned dataset version reached, and where each serving alias should go back to.

The functional core of the model registry's response (:mod:`.models` holds the catalog side): plain
sets and dicts in, plain results out. A dataset version is ``"name@n"``, a model ``"name@n"`` too.

- A dataset version is affected when it is marked poisoned or derives from an affected one (it carries
  the rows an affected version brought, it was declared made from one, it is a cut of an affected cut),
  transitively. Which parents a version has is the registry's to say (:mod:`.models`, from provenance).
- A model is affected when it was trained on an affected version, or is a fine-tune of an affected model,
  transitively, or was itself quarantined.
- Each alias on an affected model moves to the newest version of the same registered model that is
  known-good and unaffected; with none, to nothing (and the caller alerts).

>>> parents = {"clean@2": {"clean@1"}, "feat@1": {"raw@1"}}
>>> trained = {"m@1": {"raw@1"}, "m@2": {"clean@2"}, "m@3": {"feat@1"}}
>>> tuned = {"m@4": "m@3"}
>>> sorted(blast_radius(parents, trained, tuned, {"raw@1"}).models)
['m@1', 'm@3', 'm@4']
>>> plan = rollback_plan({("m", "champion"): 4}, {"m@1": "known-good", "m@2": "known-good",
...     "m@3": "known-good", "m@4": "known-good"}, {"m@1", "m@3", "m@4"})
>>> plan[0].new
2
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass

KNOWN_GOOD, CANDIDATE, QUARANTINED = "known-good", "candidate", "quarantined"
STATUSES = (CANDIDATE, KNOWN_GOOD, QUARANTINED)


def split_ref(ref: str) -> tuple[str, int]:
    """``"m@3"`` -> ``("m", 3)``."""
    name, _, number = ref.rpartition("@")
    return name, int(number)


def downstream(children: Mapping[str, Iterable[str]], start: Iterable[str]) -> set[str]:
    """``start`` and everything reachable from it along ``children``."""
    seen, todo = set(start), list(start)
    while todo:
        for child in children.get(todo.pop(), ()):
            if child not in seen:
                seen.add(child)
                todo.append(child)
    return seen


def invert(parents: Mapping[str, Iterable[str]]) -> dict[str, set[str]]:
    children: dict[str, set[str]] = defaultdict(set)
    for child, ps in parents.items():
        for parent in ps:
            children[parent].add(child)
    return children


@dataclass(frozen=True)
class Blast:
    """What a poisoning reached: dataset versions and models, each ``name@n``."""

    datasets: frozenset[str]
    models: frozenset[str]


def blast_radius(dataset_parents: Mapping[str, Iterable[str]], model_datasets: Mapping[str, Iterable[str]],
                 model_parent: Mapping[str, str | None], poisoned_datasets: Iterable[str],
                 poisoned_models: Iterable[str] = ()) -> Blast:
    """Every dataset version derived from a poisoned one, and every model trained on any of them or
    fine-tuned from such a model (or from a poisoned model)."""
    datasets = downstream(invert(dataset_parents), poisoned_datasets)
    seeds = {m for m, used in model_datasets.items() if datasets & set(used)} | set(poisoned_models)
    tunes = invert({m: [p] for m, p in model_parent.items() if p})
    return Blast(frozenset(datasets), frozenset(downstream(tunes, seeds)))


@dataclass(frozen=True)
class Move:
    """One alias moved: from model version ``old`` to ``new`` (None: no clean version is left)."""

    model: str
    alias: str
    old: int | None
    new: int | None

    def to_dict(self) -> dict:
        return {"model": self.model, "alias": self.alias, "old": self.old, "new": self.new}


def rollback_plan(aliases: Mapping[tuple[str, str], int | None], statuses: Mapping[str, str],
                  affected: Iterable[str]) -> list[Move]:
    """Each alias on an affected model to the newest known-good, unaffected version of the same model."""
    affected = set(affected)
    good: dict[str, list[int]] = defaultdict(list)
    for ref, status in statuses.items():
        if status == KNOWN_GOOD and ref not in affected:
            name, number = split_ref(ref)
            good[name].append(number)
    moves = []
    for (model, alias), number in sorted(aliases.items()):
        if number is None or f"{model}@{number}" not in affected:
            continue
        moves.append(Move(model, alias, number, max(good[model], default=None)))
    return moves
