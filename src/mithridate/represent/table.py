"""Encoding tables of mixed column types (numbers, categories, missing values) into a numeric matrix."""

from __future__ import annotations

import numpy as np
import pandas as pd
from sklearn.base import BaseEstimator, TransformerMixin
from sklearn.compose import ColumnTransformer
from sklearn.impute import SimpleImputer
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler


def column_kinds(table: pd.DataFrame) -> tuple[list[str], list[str]]:
    """Split columns into numeric and categorical (strings, categories and booleans)."""
    numeric = [c for c in table.columns if pd.api.types.is_numeric_dtype(table[c])
               and not pd.api.types.is_bool_dtype(table[c])]
    categorical = [c for c in table.columns if c not in numeric]
    return numeric, categorical


class TableEncoder(TransformerMixin, BaseEstimator):
    """Numbers: median-imputed, standardised, plus a missing-value indicator where values were missing.
    Categories: most-frequent-imputed and one-hot encoded, rare levels pooled (at most ``max_categories``).

    >>> enc = TableEncoder().fit(pd.DataFrame({"a": [1.0, None, 3.0], "b": ["x", "y", "x"]}))
    >>> enc.transform(pd.DataFrame({"a": [2.0], "b": ["z"]})).shape
    (1, 4)
    """

    def __init__(self, max_categories: int = 20):
        self.max_categories = max_categories

    def fit(self, table: pd.DataFrame, y=None) -> TableEncoder:
        numeric, categorical = column_kinds(table)
        parts = []
        if numeric:
            parts.append(("num", make_pipeline(
                SimpleImputer(strategy="median", add_indicator=True, keep_empty_features=True),
                StandardScaler(),
            ), numeric))
        if categorical:
            parts.append(("cat", make_pipeline(
                SimpleImputer(strategy="most_frequent", keep_empty_features=True),
                OneHotEncoder(handle_unknown="infrequent_if_exist", max_categories=self.max_categories,
                              sparse_output=False),
            ), categorical))
        self.numeric_, self.categorical_ = numeric, categorical
        self.transformer_ = ColumnTransformer(parts, sparse_threshold=0.0).fit(self._prepare(table))
        return self

    def _prepare(self, table: pd.DataFrame) -> pd.DataFrame:
        table = table.copy()
        for c in getattr(self, "categorical_", []):
            table[c] = table[c].astype(object).where(table[c].notna(), np.nan).astype(str).where(
                table[c].notna(), np.nan)
        return table

    def transform(self, table: pd.DataFrame) -> np.ndarray:
        return np.asarray(self.transformer_.transform(self._prepare(table)), dtype=np.float32)
