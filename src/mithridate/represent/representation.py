"""One representation per scan, computed once and shared by every detector (it is the expensive part)."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np
from sklearn.model_selection import StratifiedKFold
from sklearn.neighbors import NearestNeighbors

from mithridate.data import Dataset
from mithridate.errors import DataError
from mithridate.represent.cnn import layer_embeddings, to_nchw
from mithridate.represent.models import reference_model
from mithridate.represent.table import TableEncoder
from mithridate.scale.engine import Engine, LocalEngine

Progress = Callable[[str], None]


@dataclass(frozen=True, eq=False)
class Representation:
    """What detectors look at.

    - ``features``: (n, d) float32 geometry of each row: the encoded table, the penultimate layer of a
      network trained on *all* rows (so a backdoor it learned shows there), or user-supplied embeddings.
    - ``proba``: (n, k) out-of-fold class probabilities (each row predicted by a model that never saw it).
    - ``description``: where ``features`` came from, for the report.
    - ``label_features``: a geometry that never saw the labels, for judging labels by their neighbours
      (``None``: ``features`` is one, as an encoded table or user embeddings are). A network trained on
      all rows has learned their labels, flipped ones included: its neighbourhoods vouch for them.
    """

    features: np.ndarray
    proba: np.ndarray
    description: str
    label_features: np.ndarray | None = None
    _neighbours: dict = field(default_factory=dict, init=False, repr=False)

    def __post_init__(self) -> None:
        if len(self.features) != len(self.proba):
            raise DataError(f"{len(self.features)} feature rows but {len(self.proba)} probability rows")
        if self.label_features is not None and len(self.label_features) != len(self.proba):
            raise DataError(f"{len(self.label_features)} label-feature rows but {len(self.proba)} probability rows")

    @property
    def label_geometry(self) -> np.ndarray:
        """The geometry labels are judged in: ``label_features``, or ``features`` when that is ``None``."""
        return self.features if self.label_features is None else self.label_features

    def take(self, rows: np.ndarray) -> Representation:
        """The representation of a subset of rows (positions or a boolean mask)."""
        label = None if self.label_features is None else self.label_features[rows]
        return Representation(self.features[rows], self.proba[rows], self.description, label)

    def neighbours(self, k: int, geometry: str = "features") -> tuple[np.ndarray, np.ndarray]:
        """:func:`nearest_neighbours` of ``features`` (or, ``geometry="labels"``, of :attr:`label_geometry`),
        computed once per representation (the search is the costliest step of a big table's scan, and
        several detectors read it)."""
        if geometry not in ("features", "labels"):
            raise ValueError(f"geometry is 'features' or 'labels', not {geometry!r}")
        key = "labels" if geometry == "labels" and self.label_features is not None else "features"
        cache = self._neighbours.setdefault(key, {})
        x = self.features if key == "features" else self.label_features
        if cache.get("k", -1) < min(k, len(x) - 1):
            cache.update(k=k, result=nearest_neighbours(x, k))
        distances, positions = cache["result"]
        return distances[:, :k], positions[:, :k]


MAX_REFERENCE = 100_000
"""Beyond this many rows, neighbours are looked for among a random sample of this many."""


def standardise(features: np.ndarray) -> np.ndarray:
    """``features`` as (n, d) float64, each dimension centred and divided by its standard deviation, or by
    the median of the dimensions' standard deviations if that is larger: near-constant dimensions
    (background pixels, rare one-hot levels, dead units) are not blown up until their noise dominates.

    >>> standardise(np.array([[0.0, 1.0], [2.0, 1.0]])).tolist()
    [[-1.0, 0.0], [1.0, 0.0]]
    """
    x = np.asarray(features, dtype=np.float64).reshape(len(features), -1)
    if not np.isfinite(x).all():
        raise DataError("the representation's features contain missing or infinite values")
    scale = x.std(axis=0)
    return (x - x.mean(axis=0)) / np.maximum(scale, max(float(np.median(scale)), 1e-12))


def nearest_neighbours(features: np.ndarray, k: int, max_reference: int = MAX_REFERENCE,
                       random_state: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """``(distances, positions)``, each (n, min(k, n - 1)): each row's nearest *other* rows in the
    ``features`` (scaled by :func:`standardise`), nearest first. The search is exact and its cost grows with
    rows squared, so beyond ``max_reference`` rows the neighbours are drawn from a
    random sample of that many rows (time then grows linearly; the neighbourhoods stay dense enough for
    label votes, but a near copy whose twin is outside the sample is missed)."""
    x = standardise(features)
    n = len(x)
    m = min(k, n - 1)
    if m < 1:
        return np.zeros((n, 0)), np.zeros((n, 0), np.int64)
    reference = np.arange(n) if n <= max_reference else \
        np.sort(np.random.default_rng(random_state).choice(n, max_reference, replace=False))
    distances, index = NearestNeighbors(n_neighbors=m + 1).fit(x[reference]).kneighbors(x)
    index = reference[index]
    # drop each row itself (usually the first neighbour, but exact duplicates may come first); rows
    # outside the reference sample drop their farthest neighbour instead
    own = index == np.arange(n)[:, None]
    drop = np.where(own.any(axis=1), own.argmax(axis=1), m)
    keep = np.ones(index.shape, dtype=bool)
    keep[np.arange(n), drop] = False
    return distances[keep].reshape(n, m), index[keep].reshape(n, m)


def _folds(dataset: Dataset, folds: int, random_state: int) -> list[tuple[np.ndarray, np.ndarray]]:
    counts = np.bincount(dataset.y, minlength=dataset.n_classes)
    folds = int(min(folds, counts[counts > 0].min()))
    if folds < 2:
        raise DataError(f"{dataset.name}: a class has a single row; cross-validation needs two per class")
    splitter = StratifiedKFold(folds, shuffle=True, random_state=random_state)
    return list(splitter.split(np.zeros(dataset.n_rows), dataset.y))


def _piece(shared: tuple, item: tuple) -> np.ndarray:
    """One independent piece of a representation, wherever an engine runs it: ``("fold", train, held)``
    gives the held-out rows' probabilities of a model fitted on ``train``; ``("network", layer)`` the
    features of an image network fitted on all rows."""
    dataset, random_state, options = shared
    model = reference_model(dataset.kind, random_state=random_state, **options)
    if item[0] == "fold":
        _, train, held = item
        part = dataset.take(train)
        model.fit(part.features, part.y, dataset.n_classes)
        return model.predict_proba(dataset.take(held).features)
    model.fit(dataset.features, dataset.y, dataset.n_classes)
    return model.embed(dataset.features, item[1])


def out_of_fold_proba(dataset: Dataset, folds: int = 5, random_state: int = 0,
                      progress: Progress | None = None, engine: Engine | None = None,
                      **model_options) -> np.ndarray:
    """Cross-validated class probabilities from the reference model of the dataset's kind (the folds run
    on ``engine``: this process by default)."""
    return _fitted(dataset, folds, random_state, progress, engine, model_options)[0]


def _fitted(dataset, folds, random_state, progress, engine, options, network: bool = False,
            layer: str | None = None) -> tuple[np.ndarray, np.ndarray | None]:
    """The out-of-fold probabilities and, with ``network``, an image network's ``layer`` on all rows, every
    model fitted as one piece on ``engine``."""
    splits = _folds(dataset, folds, random_state)
    pieces = [("fold", train, held) for train, held in splits]
    labels = [f"cross-validation fold {i + 1}/{len(splits)}" for i in range(len(splits))]
    if network:
        pieces.append(("network", layer))
        labels.append("training the representation network on all rows")
    results = (engine or LocalEngine()).map(_piece, (dataset, random_state, options), pieces, progress, labels)
    proba = np.zeros((dataset.n_rows, dataset.n_classes))
    for (_, held), part in zip(splits, results, strict=False):
        proba[held] = part
    return proba, (results[-1] if network else None)


def represent(dataset: Dataset, *, embeddings: np.ndarray | None = None, model=None, layer: str | None = None,
              folds: int = 5, random_state: int = 0, progress: Progress | None = None,
              engine: Engine | None = None) -> Representation:
    """Build the representation of ``dataset``.

    ``embeddings``: user-supplied (n, d) features. ``model``: a user's ``torch.nn.Module`` taking
    (n, C, H, W) float images scaled to [0, 1]; ``layer`` names the module to read (default: the input of
    the last linear layer, i.e. the penultimate representation). Both are taken to have been made without
    these labels (a pretrained model, an unsupervised embedding). Without either, images are represented by
    a small CNN trained on all rows, and their labels are judged in the pixels' principal components
    (:func:`pixel_components`), which never saw the labels. ``engine``: where the models are fitted, each
    fold and the network one piece (:mod:`mithridate.scale`; default: this process, one after the other).
    """
    own_network = dataset.kind == "image" and embeddings is None and model is None
    proba, network_features = _fitted(dataset, folds, random_state, progress, engine, {}, own_network, layer)
    label_features = None  # the features never saw the labels, except for the network trained below
    if embeddings is not None:
        features = np.asarray(embeddings, dtype=np.float32).reshape(len(embeddings), -1)
        if len(features) != dataset.n_rows:
            raise DataError(f"embeddings have {len(features)} rows but the data has {dataset.n_rows}")
        description = f"user embeddings ({features.shape[1]} dims)"
    elif model is not None:
        import torch

        if dataset.kind != "image":
            raise DataError("a torch model representation needs image data")
        lo, hi = dataset.image_range()
        images = torch.from_numpy((to_nchw(dataset.features) - lo) / max(hi - lo, 1e-12))
        features = layer_embeddings(model, images, layer)
        description = f"user model, layer {layer or 'penultimate'}"
    elif dataset.kind == "table":
        features = TableEncoder().fit_transform(dataset.features)
        description = "encoded table"
    else:
        features = network_features
        description = f"small CNN trained on the data, layer {layer or 'penultimate'}"
        label_features = pixel_components(dataset, random_state=random_state)
    return Representation(np.asarray(features, dtype=np.float32), proba, description, label_features)


def pixel_components(dataset: Dataset, dims: int = 64, random_state: int = 0) -> np.ndarray:
    """Images as their first ``dims`` principal components of the range-scaled pixels (all pixels when
    there are fewer): a geometry that never saw the labels."""
    from sklearn.decomposition import PCA

    lo, hi = dataset.image_range()
    x = (np.asarray(dataset.features, dtype=np.float32).reshape(dataset.n_rows, -1) - lo) / max(hi - lo, 1e-12)
    if x.shape[1] <= dims or dataset.n_rows <= dims:
        return x
    return PCA(dims, random_state=random_state).fit_transform(x).astype(np.float32)
