"""The red team: poison a copy of your own data to see what an attacker could do, and to test defences.

Every attack is configured in ``__init__``, seeded by ``random_state`` and run by ``poison(dataset)``,
which returns a :class:`Poisoned` (the poisoned copy and the mask of the rows it touched).
:func:`evaluate_attack` measures what the poison does to the reference model.

>>> from mithridate.data import demo
>>> make_attack("flip", rate=0.1).poison(demo("wine")).n_poisoned
18
"""

from __future__ import annotations

import inspect

from mithridate.attacks.backdoor import BackdoorAttack, BlendTrigger, FeatureTrigger, PatchTrigger
from mithridate.attacks.base import Attack, Poisoned, resolve_class
from mithridate.attacks.clean_label import CleanLabelBackdoor, FeatureCollision
from mithridate.attacks.evaluate import AttackReport, evaluate_attack, evaluate_split
from mithridate.attacks.label_flip import AdversarialFlip, RandomFlip, TargetedFlip
from mithridate.errors import DataError

ATTACKS: dict[str, type[Attack]] = {
    "flip": RandomFlip,
    "targeted-flip": TargetedFlip,
    "adversarial-flip": AdversarialFlip,
    "patch": PatchTrigger,
    "blend": BlendTrigger,
    "feature": FeatureTrigger,
    "feature-collision": FeatureCollision,
    "clean-label-backdoor": CleanLabelBackdoor,
}


def attack_options(name: str) -> list[str]:
    """The options (``__init__`` parameters) the attack called ``name`` takes."""
    return [p for p in inspect.signature(_attack_class(name).__init__).parameters if p != "self"]


def _attack_class(name: str) -> type[Attack]:
    name = name.lower().replace("_", "-")  # the CLI spells attacks with hyphens; underscores are an alias
    if name not in ATTACKS:
        raise DataError(f"unknown attack {name!r} (choose from {', '.join(ATTACKS)})")
    return ATTACKS[name]


def make_attack(name: str, **options) -> Attack:
    """The attack registered as ``name``, configured with ``options``."""
    cls = _attack_class(name)
    unknown = sorted(set(options) - set(attack_options(name)))
    if unknown:
        raise DataError(f"attack {name!r} takes no option {', '.join(unknown)} "
                        f"(options: {', '.join(attack_options(name))})")
    return cls(**options)


__all__ = [
    "ATTACKS",
    "AdversarialFlip",
    "Attack",
    "AttackReport",
    "BackdoorAttack",
    "BlendTrigger",
    "CleanLabelBackdoor",
    "FeatureCollision",
    "FeatureTrigger",
    "PatchTrigger",
    "Poisoned",
    "RandomFlip",
    "TargetedFlip",
    "attack_options",
    "evaluate_attack",
    "evaluate_split",
    "make_attack",
    "resolve_class",
]
