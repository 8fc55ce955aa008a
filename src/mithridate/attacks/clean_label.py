"""Clean-label attacks on differentiable image models: inputs are perturbed, labels stay correct.

A reviewer who checks that every label matches its image finds nothing wrong: the poison lives in small,
optimised changes to pixels. Both attacks work against a reference :class:`~mithridate.represent.CNNClassifier`
trained on the clean data (or a fitted one passed as ``model``: the attacker's white-box copy).

- :class:`FeatureCollision`: "Poison Frogs" (Shafahi, Huang, Najibi, Suciu, Studer, Dumitras & Goldstein,
  "Poison frogs! Targeted clean-label poisoning attacks on neural networks", NeurIPS 2018). Images of a
  base class are nudged until their penultimate-layer features collide with one chosen target instance,
  so a model retrained on them classifies the target as the base class.
- :class:`CleanLabelBackdoor`: Turner, Tsipras & Madry, "Label-consistent backdoor attacks" (2019). Images
  of the target class are made hard to learn with an adversarial (PGD) perturbation, then stamped with a
  trigger; the model leans on the trigger to fit them, and later sends any triggered input to the target.

>>> from mithridate.data import demo
>>> from mithridate.represent import CNNClassifier
>>> data = demo("digits")
>>> cnn = CNNClassifier(epochs=2).fit(data.features, data.y, data.n_classes)
>>> p = CleanLabelBackdoor(target=0, rate=0.5, model=cnn).poison(data)
>>> bool((p.dataset.y == data.y).all()), int(data.y[p.mask].max())
(True, 0)
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from mithridate.attacks.backdoor import Location, PatchTrigger
from mithridate.attacks.base import Attack, Poisoned, resolve_class
from mithridate.data import Dataset
from mithridate.errors import DataError
from mithridate.represent import CNNClassifier, reference_model


def _check_images(attack: Attack, dataset: Dataset) -> None:
    if dataset.kind != "image":
        raise DataError(f"{type(attack).__name__} needs image data; {dataset.name} is {dataset.kind}")


def _reference(attack: Attack, dataset: Dataset) -> CNNClassifier:
    """The attacker's model: the one given, or a reference CNN trained on the clean data."""
    model = getattr(attack, "model", None)
    if model is None:
        model = reference_model("image", random_state=attack.random_state)
        model.fit(dataset.features, dataset.y, dataset.n_classes)
    if not hasattr(model, "model_"):
        raise DataError("model must be a fitted CNNClassifier")
    return model


def _to_unit(model: CNNClassifier, images: np.ndarray) -> torch.Tensor:
    return model._tensor(images)


def _from_unit(model: CNNClassifier, x: torch.Tensor, like: np.ndarray, lo: float, hi: float) -> np.ndarray:
    """Back from the model's scaled NCHW tensor to the data's layout, range and dtype."""
    out = x.detach().numpy() * (model.hi_ - model.lo_) + model.lo_
    out = out[:, 0] if like.ndim == 3 else out.transpose(0, 2, 3, 1)
    out = np.clip(out, lo, hi)
    if np.issubdtype(like.dtype, np.integer):
        out = np.rint(out)
    return out.astype(like.dtype)


def penultimate(module: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """The input of the module's last ``nn.Linear`` (its penultimate representation), with gradients."""
    linears = [m for m in module.modules() if isinstance(m, nn.Linear)]
    if not linears:
        raise DataError("the model has no nn.Linear layer to read features from")
    captured: list[torch.Tensor] = []
    handle = linears[-1].register_forward_hook(lambda _m, args, _out: captured.append(args[0]))
    try:
        module(x)
    finally:
        handle.remove()
    return captured[0].flatten(1)


# --- Feature collision --------------------------------------------------------------------------------
def feature_collision(module: nn.Module, bases: torch.Tensor, target: torch.Tensor, beta: float = 0.25,
                      steps: int = 300, lr: float = 0.05) -> torch.Tensor:
    """Poisons ``argmin_x ||f(x) - f(t)||^2 / ||f(t)||^2 + beta ||x - b||^2 / d`` by forward-backward splitting.

    ``bases`` (n, C, H, W) and ``target`` (1, C, H, W) are in [0, 1]; ``f`` is the penultimate layer and
    ``d`` the number of input values. Each step is a gradient step on the feature term (forward), then the
    closed-form proximal step of the distance term (backward), then a clip to [0, 1] (Shafahi et al.,
    Algorithm 1; both terms are normalised here so ``beta`` does not depend on the sizes of ``f`` or ``x``).
    """
    module.eval()
    for p in module.parameters():
        p.requires_grad_(False)
    try:
        with torch.no_grad():
            goal = penultimate(module, target)
        scale = goal.pow(2).sum().clamp_min(1e-12)
        d = bases[0].numel()
        x = bases.clone()
        for _ in range(steps):
            x.requires_grad_(True)
            loss = (penultimate(module, x) - goal).pow(2).sum() / scale
            (grad,) = torch.autograd.grad(loss, x)
            with torch.no_grad():
                x = x - lr * grad
                x = (x + lr * beta / d * bases) / (1 + lr * beta / d)
                x = x.clamp(0.0, 1.0)
    finally:
        for p in module.parameters():
            p.requires_grad_(True)
    return x.detach()


class FeatureCollision(Attack):
    """Poison Frogs: clean-label poisons that make one chosen *target instance* be classified as ``target``.

    Naming follows the rest of :mod:`mithridate.attacks`: ``target`` is the class the attacker wants the
    target instance to receive (the paper's base class ``b``); ``source`` optionally fixes the target
    instance's own class ``t``. The target instance is row ``target_index`` of ``test`` (data the victim
    will classify later), or one chosen by the seed among the rows the reference model gets right. Without
    ``test`` it is a row of the poisoned data itself (which the victim then also trains on: a harder game
    than the paper's; use ``test`` for the paper's setting).

    ``rate`` of all rows become poisons, bases drawn by the seed from class ``target``; ``watermark`` (the
    paper uses 0.3 for end-to-end training) first blends that share of the target image into each base.
    Labels are untouched. ``Poisoned.info`` holds the target image and classes, and ``retrain="head"``: as in
    the paper's transfer-learning setting, :func:`~mithridate.attacks.evaluate.evaluate_attack` retrains only
    the last layer on the frozen features of the attacker's network (``model_``), which is where one
    collision suffices.

    >>> from mithridate.data import demo, split
    >>> train, test = split(demo("digits"), seed=0)
    >>> attack = FeatureCollision(target=0, source=8, rate=0.01, test=test, steps=50)  # doctest: +SKIP
    >>> attack.poison(train).info["intended_class"]  # doctest: +SKIP
    0
    """

    name = "feature-collision"

    def __init__(self, target: int | str = 0, source: int | str | None = None, rate: float = 0.01,
                 test: Dataset | None = None, target_index: int | None = None, beta: float = 0.25,
                 watermark: float = 0.0, steps: int = 300, lr: float = 0.05,
                 model: CNNClassifier | None = None, random_state: int = 0):
        self._check_rate(rate)
        if not 0 <= watermark < 1:
            raise DataError(f"watermark opacity must be in [0, 1), got {watermark}")
        self.target, self.source, self.rate, self.test, self.target_index = target, source, rate, test, target_index
        self.beta, self.watermark, self.steps, self.lr = beta, watermark, steps, lr
        self.model, self.random_state = model, random_state

    def poison(self, dataset: Dataset) -> Poisoned:
        _check_images(self, dataset)
        rng = self._rng()
        self.target_ = resolve_class(dataset, self.target)
        source = None if self.source is None else resolve_class(dataset, self.source, "source")
        if source == self.target_:
            raise DataError("the target instance's class (source) must differ from the target class")
        self.model_ = _reference(self, dataset)
        pool = self.test if self.test is not None else dataset
        _check_images(self, pool)
        index = self._target_instance(pool, source, rng)
        target_image = np.array(pool.features[index:index + 1])
        candidates = np.flatnonzero(dataset.y == self.target_)
        if self.test is None:
            candidates = candidates[candidates != index]
        n = max(1, round(self.rate * dataset.n_rows))
        if n > len(candidates):
            raise DataError(f"rate {self.rate} asks for {n} poisons but class {self.target_} has "
                            f"{len(candidates)} rows to use as bases")
        rows = np.sort(rng.choice(candidates, n, replace=False))
        images = np.array(dataset.features)
        bases = _to_unit(self.model_, images[rows])
        goal = _to_unit(self.model_, target_image)
        bases = (1 - self.watermark) * bases + self.watermark * goal
        poisons = feature_collision(self.model_.model_, bases, goal, self.beta, self.steps, self.lr)
        lo, hi = dataset.image_range()
        images[rows] = _from_unit(self.model_, poisons, images, lo, hi)
        mask = np.zeros(dataset.n_rows, bool)
        mask[rows] = (images[rows] != np.asarray(dataset.features)[rows]).reshape(n, -1).any(1)
        info = {
            "target": self.target_, "intended_class": self.target_, "target_class": int(pool.y[index]),
            "target_index": int(index), "target_in": "test" if self.test is not None else "train",
            "target_image": target_image, "retrain": "head",
        }
        return Poisoned(dataset.replace(features=images), mask, self, info)

    def _target_instance(self, pool: Dataset, source: int | None, rng: np.random.Generator) -> int:
        if self.target_index is not None:
            if not 0 <= self.target_index < pool.n_rows:
                raise DataError(f"target_index {self.target_index} is outside 0..{pool.n_rows - 1}")
            if pool.y[self.target_index] == self.target_:
                raise DataError(f"the target instance {self.target_index} is already of the target class")
            return int(self.target_index)
        ok = pool.y != self.target_ if source is None else pool.y == source
        right = ok & (self.model_.predict(pool.features) == pool.y)
        choices = np.flatnonzero(right if right.any() else ok)
        if len(choices) == 0:
            raise DataError("no row of the source class to use as the target instance")
        return int(rng.choice(choices))


# --- Label-consistent backdoor --------------------------------------------------------------------------
def pgd_perturb(module: nn.Module, x: torch.Tensor, y: torch.Tensor, eps: float, steps: int = 10,
                step_size: float | None = None, generator: torch.Generator | None = None) -> torch.Tensor:
    """Untargeted L-inf PGD (Madry et al. 2018): maximise the loss on the true labels within ``eps``.

    ``x`` is in [0, 1]; starts at a random point of the ball and stays in it and in [0, 1].
    """
    step_size = 2.5 * eps / steps if step_size is None else step_size
    module.eval()
    loss_fn = nn.CrossEntropyLoss()
    noise = torch.rand(x.shape, generator=generator, dtype=x.dtype) * 2 - 1
    adv = (x + eps * noise).clamp(0.0, 1.0)
    for _ in range(steps):
        adv.requires_grad_(True)
        (grad,) = torch.autograd.grad(loss_fn(module(adv), y), adv)
        with torch.no_grad():
            adv = adv + step_size * grad.sign()
            adv = torch.minimum(torch.maximum(adv, x - eps), x + eps).clamp(0.0, 1.0)
    return adv.detach()


class CleanLabelBackdoor(Attack):
    """Label-consistent backdoor (Turner, Tsipras & Madry 2019): poison only images of class ``target``.

    ``rate`` of the *target class's* rows (drawn by the seed) get an L-inf PGD perturbation of at most
    ``eps`` times the data's value range against the reference CNN, which makes their natural features
    unconvincing, then the BadNets patch of :class:`~mithridate.attacks.backdoor.PatchTrigger` (``size``,
    ``location``, ``pattern``). Every label stays correct. ``add_trigger`` and ``triggered_test`` work as for
    the other backdoors.

    ``eps=0.2`` is about 3 grey levels of sklearn's digits (0-16), where the reference CNN is robust to
    less: it then misclassifies about 90% of the perturbed images of class 0, against 17% at ``eps=0.1``.

    >>> attack = CleanLabelBackdoor(target=0, rate=0.5, eps=0.2, size=3)
    """

    name = "clean-label-backdoor"

    def __init__(self, target: int | str = 0, rate: float = 0.5, eps: float = 0.2, steps: int = 10,
                 size: int = 3, location: Location = "bottom-right", pattern: str = "checkerboard",
                 model: CNNClassifier | None = None, random_state: int = 0):
        self._check_rate(rate)
        if not 0 <= eps <= 1:
            raise DataError(f"eps is a share of the value range, in [0, 1]; got {eps}")
        self.target, self.rate, self.eps, self.steps = target, rate, eps, steps
        self.size, self.location, self.pattern = size, location, pattern
        self.model, self.random_state = model, random_state

    def poison(self, dataset: Dataset) -> Poisoned:
        _check_images(self, dataset)
        self.target_ = resolve_class(dataset, self.target)
        self.trigger_ = PatchTrigger(self.target_, self.rate, self.size, self.location, self.pattern,
                                     self.random_state)
        self.trigger_.target_ = self.target_
        self.trigger_._fit_trigger(dataset)
        candidates = np.flatnonzero(dataset.y == self.target_)
        n = max(1, round(self.rate * len(candidates)))
        rows = np.sort(self._rng().choice(candidates, n, replace=False))
        images = np.array(dataset.features)
        if self.eps > 0:
            self.model_ = _reference(self, dataset)
            lo, hi = dataset.image_range()
            eps = self.eps * (hi - lo) / max(self.model_.hi_ - self.model_.lo_, 1e-12)
            gen = torch.Generator().manual_seed(self.random_state)
            adv = pgd_perturb(self.model_.model_, _to_unit(self.model_, images[rows]),
                              torch.as_tensor(dataset.y[rows]), eps, self.steps, generator=gen)
            images[rows] = _from_unit(self.model_, adv, images, lo, hi)
        images[rows] = self.add_trigger(images[rows])
        mask = (images != np.asarray(dataset.features)).reshape(dataset.n_rows, -1).any(1)
        return Poisoned(dataset.replace(features=images), mask, self, {"target": self.target_})

    def add_trigger(self, features: np.ndarray) -> np.ndarray:
        """A copy of ``features`` with the patch stamped on."""
        return self.trigger_.add_trigger(features)

    def triggered_test(self, test: Dataset) -> Dataset:
        """The test rows outside the target class with the trigger stamped on (labels unchanged)."""
        keep = test.take(test.y != self.target_)
        return keep.replace(features=self.add_trigger(keep.features))
