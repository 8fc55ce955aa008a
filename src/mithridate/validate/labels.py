"""Label tests: did the class balance move, and do the labels still go with the features?

- :func:`label_shift`: the batch's class frequencies against the baseline's (chi-square on the 2 x k table
  of counts; Jensen-Shannon distance as effect size);
- :func:`unseen_labels`: labels the baseline never had;
- :func:`label_agreement`: the label-conditional test. Small networks trained on the baseline
  (:class:`LabelModel`) give each row the probability of its label. Flipped labels (Biggio, Nelson & Laskov
  2011) and relabelled backdoor rows (Gu et al. 2017) lower the batch's mean, while clean rows keep it: a
  one-sided Welch t-test of the batch's mean against the held-out baseline's (the probability has lower
  variance than a 0/1 agreement, so fewer rows give the same power). The effect size is the drop in plain
  agreement (share of rows whose top class is the label).

Held-out figures by cross-fitting: the baseline sample is cut into ``folds``; each fold's rows are scored by
the network trained on the other folds, so every sample row is held out once (all of a small baseline counts).
The batch is scored by the same networks, averaged: a fresh row has the same expected score under every
fold's network as that fold's held-out rows, so the two means agree when the batch is clean. (Refitting one
network on all rows would not do: it is calibrated differently from the ones measured.)

The networks (one hidden layer, scikit-learn's MLP, on the baseline's :class:`Encoding`) are stored as plain
weight lists; no pickle.

>>> import numpy as np
>>> rng = np.random.default_rng(0)
>>> z = rng.normal(size=(600, 2)); y = (z[:, 0] > 0).astype(int)
>>> model, held = fit_label_model(z, y, 2, random_state=0)
>>> bool(held["agreement"] > 0.9), held["n"]
(True, 600)
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
from scipy import stats
from scipy.spatial.distance import jensenshannon

from mithridate.validate.results import Check


def folds_for(n_rows: int) -> int:
    """Cross-fitting folds: 5 where rows are few (each held-out row counts), 3 from 5,000 rows (fewer fits)."""
    return 5 if n_rows < 5000 else 3


@dataclass
class Network:
    """A small network as lists of weights: ``relu`` hidden layers, softmax output."""

    weights: list[np.ndarray]
    biases: list[np.ndarray]

    def predict_proba(self, z: np.ndarray) -> np.ndarray:
        a = np.asarray(z, dtype=np.float64)
        for w, b in zip(self.weights[:-1], self.biases[:-1], strict=True):
            a = np.maximum(a @ w + b, 0.0)
        logits = a @ self.weights[-1] + self.biases[-1]
        logits -= logits.max(axis=1, keepdims=True)
        e = np.exp(logits)
        return e / e.sum(axis=1, keepdims=True)

    @classmethod
    def from_sklearn(cls, mlp, n_classes: int) -> Network:
        weights = [np.asarray(w, dtype=np.float64) for w in mlp.coefs_]
        biases = [np.asarray(b, dtype=np.float64) for b in mlp.intercepts_]
        seen = np.asarray(mlp.classes_, dtype=np.int64)
        w_out, b_out = weights[-1], biases[-1]
        if len(seen) == 2:  # one logistic unit: logits (0, z) give the same probabilities as a softmax
            w_out = np.hstack([np.zeros_like(w_out), w_out])
            b_out = np.concatenate([[0.0], b_out])
        full_w = np.zeros((w_out.shape[0], n_classes))
        full_b = np.full(n_classes, -50.0)  # classes absent from the training rows get ~zero probability
        full_w[:, seen], full_b[seen] = w_out, b_out
        return cls([*weights[:-1], full_w], [*biases[:-1], full_b])

    def to_dict(self) -> dict:
        return {"weights": [w.tolist() for w in self.weights], "biases": [b.tolist() for b in self.biases]}

    @classmethod
    def from_dict(cls, d: dict) -> Network:
        return cls([np.asarray(w, dtype=np.float64) for w in d["weights"]],
                   [np.asarray(b, dtype=np.float64) for b in d["biases"]])


@dataclass
class LabelModel:
    """The cross-fitted networks of :func:`fit_label_model`."""

    networks: list[Network]

    def score(self, z: np.ndarray, y: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Per row, averaged over the networks: the probability of label ``y`` and the agreement (share of
        networks whose top class is ``y``)."""
        rows = np.arange(len(y))
        p, agree = np.zeros(len(y)), np.zeros(len(y))
        for net in self.networks:
            proba = net.predict_proba(z)
            p += proba[rows, y]
            agree += proba.argmax(1) == y
        return p / len(self.networks), agree / len(self.networks)

    def to_dict(self) -> dict:
        return {"networks": [n.to_dict() for n in self.networks]}

    @classmethod
    def from_dict(cls, d: dict) -> LabelModel:
        return cls([Network.from_dict(n) for n in d["networks"]])


def _mlp(n_rows: int, random_state: int):
    from sklearn.neural_network import MLPClassifier

    return MLPClassifier((64,), alpha=1e-3, max_iter=200, early_stopping=n_rows >= 1000, n_iter_no_change=5,
                         random_state=random_state)


def fit_label_model(z: np.ndarray, y: np.ndarray, n_classes: int, folds: int | None = None,
                    random_state: int = 0) -> tuple[LabelModel, dict]:
    """The baseline's cross-fitted label model and its held-out figures over all rows: ``n``, ``mean`` and
    ``var`` of the probability given to the label, and ``agreement`` (share of rows whose top class is it)."""
    import warnings

    from sklearn.exceptions import ConvergenceWarning
    from sklearn.model_selection import KFold, StratifiedKFold
    from threadpoolctl import threadpool_limits

    y = np.asarray(y, dtype=np.int64)
    folds = folds or folds_for(len(y))
    counts = np.bincount(y, minlength=n_classes)
    splitter = (StratifiedKFold(folds, shuffle=True, random_state=random_state) if counts[counts > 0].min() >= folds
                else KFold(folds, shuffle=True, random_state=random_state))
    p, agree, networks = np.zeros(len(y)), np.zeros(len(y)), []
    # Mini-batches of 200 rows: BLAS threads cost more than they give, and oversubscribe a busy machine.
    with warnings.catch_warnings(), threadpool_limits(1, user_api="blas"):
        warnings.simplefilter("ignore", ConvergenceWarning)
        for train, held in splitter.split(z, y):
            net = Network.from_sklearn(_mlp(len(train), random_state).fit(z[train], y[train]), n_classes)
            networks.append(net)
            proba = net.predict_proba(z[held])
            p[held], agree[held] = proba[np.arange(len(held)), y[held]], proba.argmax(1) == y[held]
    return LabelModel(networks), {"n": len(y), "mean": float(p.mean()), "var": float(p.var(ddof=1)),
                                  "agreement": float(agree.mean())}


# --- tests --------------------------------------------------------------------------------------------
def label_shift(baseline_counts: np.ndarray, batch_y: np.ndarray, classes: list[str]) -> Check:
    """Chi-square test of the batch's class counts against the baseline's; JS distance as effect size."""
    base = np.asarray(baseline_counts, dtype=np.float64)
    batch = np.bincount(batch_y[batch_y >= 0], minlength=len(base)).astype(np.float64)
    keep = (base + batch) > 0
    table = np.vstack([base[keep], batch[keep]])
    if keep.sum() < 2 or batch.sum() == 0:
        return Check("label_shift", "label_shift", "label", None, 0.0, 1.0, 0.0, "js_distance",
                     "too few labelled rows to test")
    stat, p, _, _ = stats.chi2_contingency(table, correction=False)
    js = float(jensenshannon(base / base.sum(), batch / batch.sum(), base=2))
    worst = int(np.argmax(np.abs(batch / batch.sum() - base / base.sum())))
    detail = (f"class {classes[worst]!r}: {batch[worst] / batch.sum():.1%} of the batch, "
              f"{base[worst] / base.sum():.1%} of the baseline")
    return Check("label_shift", "label_shift", "label", None, float(stat), float(p), js, "js_distance", detail)


def unseen_labels(unknown: dict[str, int], n_rows: int, n_baseline: int) -> Check:
    """Rows whose label the baseline never had. Under the null a new label is as likely as an unseen value
    of a column (Good-Turing: at most about 1 / (N + 1) per row for a baseline of N rows)."""
    k = int(sum(unknown.values()))
    p = float(stats.binom.sf(k - 1, n_rows, 1.0 / (n_baseline + 1))) if k else 1.0
    detail = ", ".join(f"{name!r} ({count} rows)" for name, count in sorted(unknown.items())[:5])
    return Check("unseen_labels", "unseen", "label", None, float(k), p, k / max(n_rows, 1), "share_unseen",
                 f"labels not in the baseline: {detail}" if k else "")


def label_agreement(held: dict, p: np.ndarray, agree: np.ndarray, batch_y: np.ndarray) -> Check:
    """One-sided Welch t-test: do the baseline's networks give the batch's labels a lower probability ``p``
    than they gave held-out baseline labels? Effect size: the drop in agreement (baseline minus batch)."""
    known = batch_y >= 0
    if known.sum() < 2:
        return Check("label_agreement", "label_agreement", "label", None, 0.0, 1.0, 0.0, "agreement_drop",
                     "too few labelled rows to test")
    p, agree = p[known], agree[known]
    n1, m1, v1 = len(p), float(p.mean()), float(p.var(ddof=1))
    n0, m0, v0 = int(held["n"]), float(held["mean"]), float(held["var"])
    se2 = v0 / n0 + v1 / n1
    t = (m0 - m1) / np.sqrt(max(se2, 1e-300))
    df = se2**2 / max((v0 / n0) ** 2 / max(n0 - 1, 1) + (v1 / n1) ** 2 / max(n1 - 1, 1), 1e-300)
    pval = float(stats.t.sf(t, df))
    agreement = float(agree.mean())
    drop = float(held["agreement"]) - agreement
    detail = (f"the baseline model agrees with {agreement:.1%} of the batch's labels, {held['agreement']:.1%} of "
              f"held-out baseline labels (mean probability of the label {m1:.3f} vs {m0:.3f})")
    return Check("label_agreement", "label_agreement", "label", None, float(t), pval, drop, "agreement_drop",
                 detail)
