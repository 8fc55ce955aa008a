"""Differentially private training, DP-SGD (Abadi et al. 2016, "Deep learning with differential privacy",
CCS), with Opacus: each batch is drawn by Poisson sampling, each row's gradient is clipped to
``max_grad_norm``, and Gaussian noise is added to their sum. The noise is calibrated before training so
that the planned steps spend at most ``epsilon`` at ``delta`` (Opacus' PRV accountant, within 1%), and the
epsilon actually spent is reported.

Why it hardens: no single row can move the weights by more than the clipped gradient, and the noise hides
what is left, so a few poisoned rows have a bounded effect (a row's influence is what differential privacy
bounds; k rows are bounded by group privacy, ``k * epsilon``, which is loose: the attack success of a
backdoor under DP-SGD is measured, not promised, in ``benchmarks/harden_dpsgd.py``). The price is accuracy,
the more so the smaller the data and epsilon.

What the epsilon covers: the network's weights. The member's encoder (a table's column medians, means,
scales and category levels; an image's value range) is read from the same rows without noise, as in most
DP-SGD pipelines; it is in ``model.json`` for anyone to read. Where that matters, encode the data with
public statistics first.

>>> from mithridate.data import demo
>>> trainer = DPSGD(epsilon=8.0, epochs=5, random_state=0).fit(demo("breast_cancer"))
>>> privacy = trainer.report_["privacy"]
>>> privacy["epsilon_spent"] <= 8.0 + 1e-6, privacy["delta"]
(True, 1e-05)
"""

from __future__ import annotations

import secrets
import warnings

import numpy as np
import torch
from torch import nn

from mithridate.data import Dataset
from mithridate.errors import MithridateError
from mithridate.harden.base import Trainer, register
from mithridate.harden.member import Member, encode, fit_encoder, network

EPOCHS = 60


def train_private(net: nn.Module, x: np.ndarray, y: np.ndarray, epsilon: float, delta: float, epochs: int,
                  batch_size: int, max_grad_norm: float, lr: float, seed: int) -> dict:
    """Train ``net`` in place with DP-SGD; returns the noise multiplier, the sampling rate and the epsilon
    spent at ``delta``. ``seed`` drives the batches and the noise: whoever knows it can regenerate both."""
    from opacus import PrivacyEngine  # the harden extra; the CLI names it when missing
    from opacus.accountants.utils import get_noise_multiplier
    from opacus.validators import ModuleValidator

    problems = ModuleValidator.validate(net, strict=False)
    if problems:
        raise MithridateError(f"the network has layers DP-SGD cannot clip per row: {problems[0]}")
    generator = torch.Generator().manual_seed(seed)
    data = torch.utils.data.TensorDataset(torch.from_numpy(np.array(x, dtype=np.float32)),
                                          torch.as_tensor(np.array(y), dtype=torch.long))
    loader = torch.utils.data.DataLoader(data, batch_size=min(batch_size, len(data)), generator=generator)
    steps = epochs * len(loader)  # what runs; calibrating from epochs can count one step short
    with warnings.catch_warnings():  # Opacus' notes on secure RNG (see the docs) and on its own internals
        warnings.simplefilter("ignore")
        try:
            sigma = get_noise_multiplier(target_epsilon=epsilon, target_delta=delta, sample_rate=1 / len(loader),
                                         steps=steps, accountant="prv")
        except ValueError as error:  # "the privacy budget is too low"
            raise MithridateError(f"epsilon={epsilon:g} at delta={delta:g} cannot be reached in {steps:,} steps "
                                  f"({error})") from None
        engine = PrivacyEngine(accountant="prv", secure_mode=False)
        model, optimizer, loader = engine.make_private(
            module=net, optimizer=torch.optim.Adam(net.parameters(), lr=lr), data_loader=loader,
            noise_multiplier=sigma, max_grad_norm=max_grad_norm, noise_generator=generator)
        loss_fn = nn.CrossEntropyLoss()
        model.train()
        for _ in range(epochs):
            for inputs, targets in loader:  # an empty Poisson batch is a step too: the accountant counts it
                optimizer.zero_grad()
                loss_fn(model(inputs), targets).backward()
                optimizer.step()
        spent = float(engine.get_epsilon(delta))
    optimizer.zero_grad(set_to_none=True)  # no per-row gradient stays on the network
    model.eval()
    model.remove_hooks()
    for p in net.parameters():
        for attribute in ("grad_sample", "summed_grad", "_forward_counter"):
            if hasattr(p, attribute):
                delattr(p, attribute)
    return {"noise_multiplier": float(sigma), "sample_rate": float(1 / len(loader)), "steps": steps,
            "epsilon_spent": spent}


@register
class DPSGD(Trainer):
    """One network trained with DP-SGD to ``epsilon`` at ``delta`` (see the module docstring).

    ``delta`` defaults to 1e-5, or a tenth of 1/rows on larger data. ``random_state=None`` (the default)
    draws the batches and the noise from the operating system's entropy and records no seed: with a seed,
    which ``model.json`` records, anyone can regenerate the noise and subtract it, and there is no privacy
    left. Fix it for reproducible experiments only. ``batch_size`` is the expected batch (the sampling rate
    is about ``batch_size / rows``; default an eighth of the rows, 32 to 1,024); ``epochs`` defaults to 60.
    After :meth:`fit`, ``report_["privacy"]`` holds epsilon spent, delta, the noise multiplier, the
    clipping norm, the sampling rate, the steps and how the seed was chosen.
    """

    name = "dpsgd"
    #: the noise is added to every weight's gradient, so fewer weights learn more under it: on a
    #: 5,000-image MNIST sample the pixels' one-hidden-layer network reached 0.82 / 0.89 at epsilon 1 / 8
    #: against the small CNN's 0.64 / 0.82 (one-off runs; batches of an eighth of the rows, a rate of 5e-3
    #: and 60 epochs then gave 0.85 / 0.91; digits, the benchmark's set, was not looked at)
    image_network = "mlp"

    def __init__(self, epsilon: float = 3.0, delta: float | None = None, max_grad_norm: float = 1.0,
                 batch_size: int | None = None, lr: float = 5e-3, classes: list | None = None, network: str = "auto",
                 epochs: int | None = None, random_state: int | None = None):
        super().__init__(classes, network, epochs, random_state)
        self.epsilon, self.delta, self.max_grad_norm = epsilon, delta, max_grad_norm
        self.batch_size, self.lr = batch_size, lr

    def _fit(self, dataset: Dataset) -> tuple[list[Member], dict]:
        delta = min(1e-5, 0.1 / dataset.n_rows) if self.delta is None else self.delta
        if not 0 < self.epsilon <= 100 or not 0 < delta < 1:
            raise MithridateError(f"epsilon must be in (0, 100] (beyond, it promises nothing) and delta in (0, 1), "
                                  f"got {self.epsilon} and {delta}")
        if delta >= 1 / dataset.n_rows:
            raise MithridateError(f"delta={delta:g} is not below 1/rows ({1 / dataset.n_rows:.2g}): such a "
                                  "guarantee allows a row to be published whole")
        batch = int(np.clip(dataset.n_rows // 8, 32, 1024)) if self.batch_size is None else self.batch_size
        if self.max_grad_norm <= 0 or batch < 1:
            raise MithridateError("max_grad_norm must be > 0 and batch_size >= 1")
        epochs = self.epochs or EPOCHS
        encoder = fit_encoder(dataset.features)
        x = encode(dataset.features, encoder)
        width = x.shape[1] if x.ndim == 2 else 0
        seed = secrets.randbits(63) if self.random_state is None else self.random_state * 1_000_003
        with torch.random.fork_rng():
            torch.manual_seed(seed)
            net = network(encoder, width, dataset.n_classes, self.arch_)
            privacy = train_private(net, x, dataset.y, self.epsilon, delta, epochs, batch, self.max_grad_norm,
                                    self.lr, seed)
        member = Member(encoder, net, dataset.n_classes, width, self.arch_)
        privacy.update(delta=delta, target_epsilon=self.epsilon, max_grad_norm=self.max_grad_norm,
                       epochs=epochs, accountant="prv",
                       seed="drawn from the operating system, not recorded" if self.random_state is None else
                       "fixed and recorded: the noise can be regenerated, so this model is reproducible, not private",
                       covers="the network's weights; the encoder's statistics are read without noise")
        return [member], {"privacy": privacy}
