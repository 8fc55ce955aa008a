"""Shared fixtures: the built-in data sets, split once per session (stratified, seed 0)."""

from __future__ import annotations

import pytest

from mithridate.data import demo, split


@pytest.fixture(scope="session")
def digits_split():
    return split(demo("digits"), test_size=0.25, seed=0)


@pytest.fixture(scope="session")
def breast_cancer_split():
    return split(demo("breast_cancer"), test_size=0.25, seed=0)


@pytest.fixture(scope="session")
def wine_split():
    return split(demo("wine"), test_size=0.25, seed=0)
