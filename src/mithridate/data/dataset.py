"""The one data notion every stage takes and returns: :class:`Dataset`."""

from __future__ import annotations

import dataclasses
import hashlib
from dataclasses import dataclass
from typing import Literal

import numpy as np
import pandas as pd

from mithridate.errors import DataError

Kind = Literal["table", "image"]


def check_finite(frame: pd.DataFrame, name: str, first_row: int = 0) -> None:
    """Refuse infinite values in a table's numeric columns (no model or test can use them; missing values
    are fine).

    >>> check_finite(pd.DataFrame({"x": [1.0, np.inf]}), "t")  # doctest: +ELLIPSIS
    Traceback (most recent call last):
    mithridate.errors.DataError: t: column 'x' holds infinite values (1 rows, first row 1); ...
    """
    numeric = frame.select_dtypes("number")
    if not numeric.shape[1]:
        return
    infinite = np.isinf(numeric.to_numpy(dtype=np.float64, na_value=np.nan))
    if infinite.any():
        row, col = np.argwhere(infinite)[0]
        raise DataError(f"{name}: column {numeric.columns[col]!r} holds infinite values ({int(infinite[:, col].sum())}"
                        f" rows, first row {first_row + row}); replace them or leave them empty (missing)")


def _frozen(a: np.ndarray) -> np.ndarray:
    view = np.asarray(a).view()
    view.flags.writeable = False
    return view


@dataclass(frozen=True, eq=False)
class Dataset:
    """Features, labels, a stable row id and optional per-row provenance.

    Immutable: stages return new datasets (:meth:`take`, :meth:`replace`), never edit one in place.

    - ``features``: a :class:`pandas.DataFrame` (tables, any mix of column types and missing values) or an
      array of images of shape ``(n, H, W)`` or ``(n, H, W, C)``.
    - ``y``: integer class codes ``0..k-1``; ``classes[y]`` are the labels as the user wrote them.
    - ``row_id``: a stable id per row that survives attacks, subsets and sanitization (by default the
      0-based position in the file the data came from).
    - ``source``: optional provenance per row (who or what supplied it).
    """

    features: pd.DataFrame | np.ndarray
    y: np.ndarray
    classes: tuple
    row_id: np.ndarray | None = None
    source: np.ndarray | None = None
    label_name: str = "label"
    name: str = "data"
    id_name: str | None = None
    source_name: str | None = None

    def __post_init__(self) -> None:
        n = len(self.features)
        y = np.asarray(self.y)
        if y.ndim != 1 or len(y) != n:
            raise DataError(f"{self.name}: {n} feature rows but {len(y)} labels (shapes disagree)")
        if n == 0:
            raise DataError(f"{self.name}: the dataset is empty")
        if not np.issubdtype(y.dtype, np.integer):
            raise DataError(f"{self.name}: labels must be integer class codes; use Dataset.from_labels")
        if len(self.classes) < 2:
            raise DataError(f"{self.name}: only one class ({self.classes[0]!r}); need at least two")
        if y.min() < 0 or y.max() >= len(self.classes):
            raise DataError(f"{self.name}: label codes outside 0..{len(self.classes) - 1}")
        if isinstance(self.features, np.ndarray):
            if self.features.ndim not in (3, 4):
                raise DataError(
                    f"{self.name}: image arrays must be (n, H, W) or (n, H, W, C), got {self.features.shape}"
                )
            if np.issubdtype(self.features.dtype, np.floating) and not np.isfinite(self.features).all():
                raise DataError(f"{self.name}: the images hold infinite or NaN pixel values")
            object.__setattr__(self, "features", _frozen(self.features))
        elif not isinstance(self.features, pd.DataFrame):
            raise DataError(f"{self.name}: features must be a DataFrame or an image array")
        else:
            check_finite(self.features, self.name)
        row_id = np.arange(n) if self.row_id is None else np.asarray(self.row_id)
        if len(row_id) != n:
            raise DataError(f"{self.name}: {n} rows but {len(row_id)} row ids")
        if len(np.unique(row_id)) != n:
            raise DataError(f"{self.name}: row ids are not unique")
        object.__setattr__(self, "y", _frozen(y.astype(np.int64, copy=False)))
        object.__setattr__(self, "row_id", _frozen(row_id))
        object.__setattr__(self, "classes", tuple(self.classes))
        if self.source is not None:
            source = np.asarray(self.source, dtype=object)
            if len(source) != n:
                raise DataError(f"{self.name}: {n} rows but {len(source)} source entries")
            object.__setattr__(self, "source", _frozen(source))

    @classmethod
    def from_labels(cls, features, labels, **kw) -> Dataset:
        """Build a dataset from labels as the user wrote them (strings, ints, ...)."""
        labels = np.asarray(labels)
        if pd.isna(pd.Series(labels)).any():
            missing = int(pd.isna(pd.Series(labels)).sum())
            raise DataError(f"{kw.get('name', 'data')}: {missing} rows have no label")
        classes, y = np.unique(labels, return_inverse=True)
        return cls(features=features, y=y.reshape(-1), classes=tuple(classes.tolist()), **kw)

    # --- views -------------------------------------------------------------------------------------
    @property
    def kind(self) -> Kind:
        return "table" if isinstance(self.features, pd.DataFrame) else "image"

    @property
    def n_rows(self) -> int:
        return len(self.y)

    @property
    def n_classes(self) -> int:
        return len(self.classes)

    @property
    def labels(self) -> np.ndarray:
        """Labels as the user wrote them."""
        return np.asarray(self.classes, dtype=object)[self.y]

    def __len__(self) -> int:
        return self.n_rows

    def class_code(self, label) -> int:
        """The code of a class given by its name (or its code, as a string or int)."""
        for code, c in enumerate(self.classes):
            if label == c or str(label) == str(c):
                return code
        raise DataError(f"{self.name}: unknown class {label!r}; classes are {list(self.classes)}")

    def fingerprint(self) -> str:
        """SHA-256 of the content (features and their types, labels as written, row ids), in hex: the same
        file read again gives the same fingerprint; one changed value, label or row gives another.

        >>> a = Dataset.from_labels(pd.DataFrame({"x": [1.0, 2.0]}), ["p", "q"])
        >>> a.fingerprint() == a.replace(y=a.y[::-1].copy()).fingerprint()
        False
        """
        digest = hashlib.sha256()
        if isinstance(self.features, pd.DataFrame):
            digest.update(repr([(str(c), str(t)) for c, t in self.features.dtypes.items()]).encode())
            digest.update(pd.util.hash_pandas_object(self.features, index=False).to_numpy().tobytes())
        else:
            digest.update(repr((self.features.shape, str(self.features.dtype))).encode())
            digest.update(np.ascontiguousarray(self.features).tobytes())
        digest.update("\x1f".join(map(str, self.labels)).encode())
        digest.update("\x1f".join(map(str, self.row_id)).encode())
        return digest.hexdigest()

    # --- new datasets ------------------------------------------------------------------------------
    def take(self, index) -> Dataset:
        """The rows at ``index`` (positions or a boolean mask), with their ids and provenance."""
        index = np.asarray(index)
        if index.dtype == bool:
            index = np.flatnonzero(index)
        features = (
            self.features.iloc[index].reset_index(drop=True)
            if isinstance(self.features, pd.DataFrame)
            else np.array(self.features[index])
        )
        return self.replace(
            features=features,
            y=self.y[index],
            row_id=self.row_id[index],
            source=None if self.source is None else self.source[index],
        )

    def replace(self, **changes) -> Dataset:
        """A copy with some fields changed (``y=...``, ``features=...``)."""
        return dataclasses.replace(self, **changes)

    def image_range(self) -> tuple[float, float]:
        """The value range images live in: [0, 1], [0, 255] or the data's own min/max."""
        x = np.asarray(self.features)
        lo, hi = float(x.min()), float(x.max())
        if lo >= 0 and hi <= 1:
            return 0.0, 1.0
        if x.dtype == np.uint8:
            return 0.0, 255.0
        return lo, hi


def split(dataset: Dataset, test_size: float = 0.25, seed: int = 0) -> tuple[Dataset, Dataset]:
    """A stratified train/test split (row ids and provenance travel with the rows)."""
    from sklearn.model_selection import train_test_split

    idx = np.arange(dataset.n_rows)
    train, test = train_test_split(idx, test_size=test_size, random_state=seed, stratify=dataset.y)
    return dataset.take(np.sort(train)), dataset.take(np.sort(test))
