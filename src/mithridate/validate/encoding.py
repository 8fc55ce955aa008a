"""How the validator reads a batch the same way it read the baseline, with parameters saved as plain numbers.

- :func:`coerce_table`: numeric columns to float (values that do not parse become missing and are counted
  as invalid), categorical columns to text;
- :class:`Encoding`: numbers centred on the baseline median and divided by a robust scale (IQR / 1.349, the
  standard deviation of a normal with that IQR), clipped, missing values at the centre plus an indicator;
  categories one-hot over the baseline's most frequent levels;
- :class:`ImageProjection`: images flattened, scaled to [0, 1] and projected on the baseline's principal
  axes (PCA), so image batches are validated as a table of projections.

Nothing here needs pickle: every parameter is a list of numbers or strings (see ``to_dict``).

>>> enc = Encoding(["a"], np.array([1.0]), np.array([2.0]), [True], ["b"], [["x", "y"]])
>>> enc.transform(np.array([[3.0], [np.nan]]), np.array([["y"], [None]], dtype=object)).tolist()
[[1.0, 0.0, 0.0, 1.0], [0.0, 1.0, 0.0, 0.0]]
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import pandas as pd

CLIP = 8.0
"""Encoded numbers are clipped to +-CLIP robust scales, so one absurd value cannot dominate a model."""


def _text(v) -> str:
    if isinstance(v, (float, np.floating)) and float(v).is_integer():
        return str(int(v))
    return str(v)


def label_text(values) -> np.ndarray:
    """Values as text, the way the profile stores classes and levels (integral floats lose their ``.0``)."""
    arr = np.asarray(values)
    if arr.dtype.kind in "iubUS":
        return arr.astype(str).astype(object)
    if arr.dtype.kind == "f":
        out = arr.astype(str).astype(object)
        whole = np.isfinite(arr) & (arr == np.round(arr))
        out[whole] = arr[whole].astype(np.int64).astype(str)
        return out
    out = arr.astype(object).copy()
    other = np.fromiter((not isinstance(v, str) for v in out), bool, len(out))
    if other.any():
        out[other] = [_text(v) for v in out[other]]
    return out


def sort_classes(names) -> list[str]:
    """Class names in natural order: numerically when all are numbers, else as text."""
    names = list(names)
    try:
        return sorted(names, key=float)
    except ValueError:
        return sorted(names)


def coerce_table(frame: pd.DataFrame, numeric: list[str], categorical: list[str]
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``(numbers (n, p) float64 with NaN, categories (n, c) object with None, invalid counts (p,))``."""
    n = len(frame)
    num = np.empty((n, len(numeric)))
    invalid = np.zeros(len(numeric), dtype=np.int64)
    for j, col in enumerate(numeric):
        s = frame[col]
        if pd.api.types.is_bool_dtype(s) or not pd.api.types.is_numeric_dtype(s):
            parsed = pd.to_numeric(s, errors="coerce")
            invalid[j] = int((parsed.isna() & s.notna()).sum())
            s = parsed
        num[:, j] = s.to_numpy(dtype=np.float64, na_value=np.nan)
    num[~np.isfinite(num)] = np.nan
    cat = np.empty((n, len(categorical)), dtype=object)
    for j, col in enumerate(categorical):
        s = frame[col]
        if pd.api.types.is_string_dtype(s.dtype) and s.dtype != object:  # pandas' string dtype: text already
            cat[:, j] = s.to_numpy(dtype=object, na_value=None)
        else:
            cat[:, j] = np.where(s.isna().to_numpy(), None, label_text(s.to_numpy()))
    return num, cat, invalid


@dataclass
class Encoding:
    """Robust scaling of numbers and one-hot encoding of categories, fitted on the baseline."""

    numeric: list[str]
    center: np.ndarray
    scale: np.ndarray
    indicate: list[bool]
    categorical: list[str]
    levels: list[list[str]]

    def transform_numeric(self, num: np.ndarray) -> np.ndarray:
        """Robust z-scores, unclipped, NaN kept."""
        return (np.asarray(num, dtype=np.float64) - self.center) / self.scale

    def transform(self, num: np.ndarray, cat: np.ndarray) -> np.ndarray:
        z = np.clip(self.transform_numeric(num), -CLIP, CLIP)
        missing = np.isnan(z)
        parts = [np.where(missing, 0.0, z), missing[:, np.flatnonzero(self.indicate)].astype(np.float64)]
        for j, levels in enumerate(self.levels):
            parts.append((cat[:, j][:, None] == np.asarray(levels, dtype=object)[None, :]).astype(np.float64))
        return np.hstack(parts) if parts else np.zeros((len(num), 0))

    def names(self) -> list[str]:
        return ([*self.numeric, *(f"{c} missing" for c, i in zip(self.numeric, self.indicate, strict=True) if i)]
                + [f"{c}={v}" for c, levels in zip(self.categorical, self.levels, strict=True) for v in levels])

    def to_dict(self) -> dict:
        return {"numeric": self.numeric, "center": self.center.tolist(), "scale": self.scale.tolist(),
                "indicate": self.indicate, "categorical": self.categorical, "levels": self.levels}

    @classmethod
    def from_dict(cls, d: dict) -> Encoding:
        return cls(list(d["numeric"]), np.asarray(d["center"], dtype=np.float64),
                   np.asarray(d["scale"], dtype=np.float64), [bool(v) for v in d["indicate"]],
                   list(d["categorical"]), [list(v) for v in d["levels"]])


def robust_scale(q25: np.ndarray, q75: np.ndarray, std: np.ndarray) -> np.ndarray:
    """IQR / 1.349, falling back to the standard deviation, then to 1, where the IQR is zero."""
    scale = (np.asarray(q75) - np.asarray(q25)) / 1.349
    scale = np.where(scale > 0, scale, std)
    return np.where(np.isfinite(scale) & (scale > 0), scale, 1.0)


@dataclass
class ImageProjection:
    """Flatten, scale to [0, 1] by the baseline's value range, subtract the mean, project on PCA axes."""

    shape: list[int]
    lo: float
    hi: float
    mean: np.ndarray
    components: np.ndarray

    @classmethod
    def fit(cls, images: np.ndarray, lo: float, hi: float, n_components: int = 32, max_rows: int = 2000,
            random_state: int = 0) -> ImageProjection:
        from sklearn.decomposition import PCA

        rng = np.random.default_rng(random_state)
        rows = np.sort(rng.choice(len(images), min(max_rows, len(images)), replace=False))
        flat = cls._flat(np.asarray(images)[rows], lo, hi)
        k = max(1, min(n_components, flat.shape[1], len(flat) - 1))
        pca = PCA(k, random_state=random_state).fit(flat)
        return cls(list(np.shape(images)[1:]), lo, hi, pca.mean_, pca.components_)

    @staticmethod
    def _flat(images: np.ndarray, lo: float, hi: float) -> np.ndarray:
        flat = np.asarray(images, dtype=np.float64).reshape(len(images), -1)
        return (flat - lo) / max(hi - lo, 1e-12)

    @property
    def columns(self) -> list[str]:
        return [f"pc{i}" for i in range(len(self.components))]

    def transform(self, images: np.ndarray) -> pd.DataFrame:
        flat = self._flat(images, self.lo, self.hi)
        return pd.DataFrame((flat - self.mean) @ self.components.T, columns=self.columns)

    def to_dict(self) -> dict:
        return {"shape": self.shape, "lo": self.lo, "hi": self.hi, "mean": self.mean.tolist(),
                "components": self.components.tolist()}

    @classmethod
    def from_dict(cls, d: dict) -> ImageProjection:
        return cls(list(d["shape"]), float(d["lo"]), float(d["hi"]), np.asarray(d["mean"], dtype=np.float64),
                   np.asarray(d["components"], dtype=np.float64))
