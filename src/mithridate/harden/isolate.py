"""Backdoor isolation: train, find the backdoor's rows in the network's own penultimate layer, train again
without them (the retraining defence of Tran, Li & Madry 2018, "Spectral signatures in backdoor attacks",
with the robust statistics of SPECTRE and the scan's poisoned-class verdict in place of the top singular
vector and a poison rate).

A network trained on a dirty-label backdoor learns the trigger as one feature, so in its penultimate layer
each poisoned row is its source row moved by one common shift. :class:`~mithridate.detect.spectre.Spectre`
reads exactly that: per class, a robustly whitened outlier score, a group, and the verdict "these rows are
shifted copies of other classes" (:mod:`mithridate.detect.backdoor_base`); images' rows are then decided in
their pixels, where a stamped or blended trigger is one shift too. The rows of a class declared poisoned
that are such copies are set aside, and a fresh network trains on the rest. A class is declared only when
its outlying rows look like two source classes or more, so on clean data nothing is set aside, and the
second network is the first one's twin.

What it does not do: a backdoor fed from a single source class (two classes in all: most tables) has no
copies of several classes to show, and is not found (on five real tables with a feature trigger, nothing was
set aside, see docs/harden.md); label flips are :class:`~mithridate.harden.trimmed.TrimmedLoss`'s job.

>>> from mithridate.data import demo
>>> trainer = BackdoorIsolation(random_state=0).fit(demo("wine"))   # clean: nothing is set aside
>>> trainer.report_["set_aside"], trainer.report_["networks_trained"]
({"a backdoor's copies in the network's own features": 0}, 1)
"""

from __future__ import annotations

import numpy as np
import torch

from mithridate.data import Dataset
from mithridate.harden.base import Trainer, register
from mithridate.harden.member import encode
from mithridate.represent import Representation, TableEncoder
from mithridate.represent.cnn import layer_embeddings
from mithridate.represent.representation import pixel_components


@register
class BackdoorIsolation(Trainer):
    """Train one network, set aside the rows SPECTRE finds to be a backdoor's copies in its penultimate
    layer, train a fresh network on the rest.

    After :meth:`fit`: ``set_aside_`` (bool per row of the data, less any row whose label is not among
    declared ``classes``), ``poisoned_classes_`` (class codes declared
    poisoned), ``members_`` (the second network).
    """

    name = "isolate"

    def _fit(self, dataset: Dataset):
        from mithridate.detect.spectre import Spectre

        first = self._member(dataset)
        x = torch.from_numpy(encode(dataset.features, first.encoder))
        features = np.asarray(layer_embeddings(first.net, x), dtype=np.float32)
        # the geometry the copies are decided in: pixels (or the encoded table), which never saw the labels
        geometry = (pixel_components(dataset, random_state=self.random_state or 0) if dataset.kind == "image"
                    else TableEncoder().fit_transform(dataset.features))
        representation = Representation(features, first.proba(dataset.features), "the first network's "
                                        "penultimate layer", geometry)
        detector = Spectre(random_state=self.random_state or 0).fit(dataset, representation)
        aside = np.asarray(detector.flags_, dtype=bool)
        self.set_aside_, self.poisoned_classes_ = aside, list(detector.poisoned_classes_)
        member = self._member(dataset, np.flatnonzero(~aside)) if aside.any() else first
        report = {"set_aside": {"a backdoor's copies in the network's own features": int(aside.sum())},
                  "rows_trained": int((~aside).sum()),
                  "classes_declared_poisoned": [str(dataset.classes[c]) for c in self.poisoned_classes_],
                  "networks_trained": 2 if aside.any() else 1}
        return [member], report
