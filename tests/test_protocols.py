"""Every registered algorithm keeps its family's protocol, checked mechanically (as scikit-learn's
``parametrize_with_checks`` and river's ``check_estimator`` do): a new detector, attack, aggregation rule
or malicious-client behaviour added to a registry is checked here with no edit to this file.

- the registry key is the class's ``name``;
- ``fit``/``poison``/aggregation returns what the protocol says, with the right shapes and dtypes;
- the same seed gives the same result; the configuration (``get_params``) is left as it was given and
  survives ``clone``; the input is untouched.
"""

from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone

from mithridate.attacks import ATTACKS, make_attack
from mithridate.data import Dataset, demo
from mithridate.detect.registry import DETECTORS, detector_class
from mithridate.federated.aggregators import AGGREGATORS, make_aggregator
from mithridate.federated.attacks import ATTACKS as CLIENT_ATTACKS
from mithridate.federated.attacks import make_client_attack
from mithridate.represent import Representation, TableEncoder

IMAGE_ONLY_DETECTORS = {"spectre", "spectral", "activation_clustering"}
IMAGE_ATTACKS = {"patch", "blend", "feature-collision", "clean-label-backdoor"}


def config(obj) -> dict:
    """The configuration an object was given (``get_params``), compared before and after use; and a clone
    (scikit-learn's ``clone``, as ``Scan`` makes of its detectors) has the very same."""
    params = obj.get_params(deep=False)
    assert repr(clone(obj).get_params(deep=False)) == repr(params)
    return {k: (v.copy() if isinstance(v, (list, dict, np.ndarray)) else v) for k, v in params.items()}


@pytest.fixture(scope="module")
def table() -> tuple[Dataset, Representation]:
    ds = demo("wine")
    proba = np.random.default_rng(0).dirichlet(np.ones(ds.n_classes), ds.n_rows)
    return ds, Representation(TableEncoder().fit_transform(ds.features), proba, "table")


@pytest.fixture(scope="module")
def images() -> tuple[Dataset, Representation]:
    ds = demo("digits")
    rows = np.random.default_rng(0).choice(ds.n_rows, 400, replace=False)
    ds = ds.take(np.sort(rows))
    pixels = np.asarray(ds.features, dtype=np.float64).reshape(ds.n_rows, -1)
    proba = np.eye(ds.n_classes)[ds.y] * 0.8 + 0.2 / ds.n_classes
    return ds, Representation(pixels, proba, "image", pixels)


# --- detectors ------------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(DETECTORS))
def test_detector_protocol(name, table, images):
    cls = detector_class(name)
    assert cls.name == name
    ds, rep = images if name in IMAGE_ONLY_DETECTORS else table
    detector = cls()
    given = config(detector)
    assert detector.fit(ds, rep) is detector
    n = ds.n_rows
    for attr, kind in (("scores_", "f"), ("flags_", "b"), ("severity_", "O"), ("evidence_", "O"),
                       ("suggested_label_", "i"), ("pvalues_", "f")):
        value = getattr(detector, attr)
        assert value.shape == (n,) and value.dtype.kind == kind, (attr, value.shape, value.dtype)
    assert set(detector.severity_) <= {"", "note", "suspect", "poison"}
    assert np.array_equal(detector.flags_, np.isin(detector.severity_, ("poison", "suspect")))
    assert all(bool(e) for e in detector.evidence_[detector.found_])  # every finding says why
    assert config(detector) == given  # fitting leaves the configuration alone
    again = cls().fit(ds, rep)
    assert np.array_equal(again.scores_, detector.scores_) and np.array_equal(again.severity_, detector.severity_)


# --- attacks --------------------------------------------------------------------------------------------
def attack_options(name: str) -> dict:
    return {"targeted-flip": {"source": 0, "target": 1}, "feature-collision": {"source": 1, "target": 0},
            "adversarial-flip": {"rounds": 1}, "clean-label-backdoor": {"steps": 2, "rate": 0.2}}.get(name, {})


@pytest.mark.parametrize("name", list(ATTACKS))
def test_attack_protocol(name):
    cls = ATTACKS[name]
    assert cls.name == name
    ds = demo("digits") if name in IMAGE_ATTACKS else demo("wine")
    if name in {"feature-collision", "clean-label-backdoor"}:
        ds = ds.take(np.flatnonzero(np.isin(ds.y, [0, 1, 2])))
    before = (ds.y.copy(), np.array(ds.features, copy=True))
    attack = make_attack(name, random_state=0, **attack_options(name))
    given = config(attack)
    poisoned = attack.poison(ds)
    assert poisoned.mask.shape == (ds.n_rows,) and poisoned.mask.dtype == bool and poisoned.mask.any()
    assert poisoned.dataset.n_rows == ds.n_rows
    assert np.array_equal(ds.y, before[0]) and np.array_equal(np.asarray(ds.features), before[1])  # input untouched
    assert config(attack) == given
    again = make_attack(name, random_state=0, **attack_options(name)).poison(ds)
    assert np.array_equal(again.mask, poisoned.mask) and np.array_equal(again.dataset.y, poisoned.dataset.y)


# --- aggregation rules ----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(AGGREGATORS))
def test_aggregator_protocol(name):
    cls = AGGREGATORS[name]
    assert cls.name == name
    rng = np.random.default_rng(0)
    updates = rng.normal(size=(15, 40)).astype(np.float32)
    context = {"server_update": updates.mean(0)} if name == "fltrust" else {}
    rule = make_aggregator(name)
    given = config(rule)
    kept = updates.copy()
    out = rule(updates, **context)
    assert out.shape == (40,) and out.dtype == updates.dtype and np.isfinite(out).all()
    assert np.array_equal(updates, kept)  # the clients' updates are not modified
    assert config(rule) == given
    assert np.array_equal(make_aggregator(name)(updates, **context), out)
    assert 0 <= rule.max_malicious(15) < 15


# --- malicious federated clients ------------------------------------------------------------------------
@pytest.mark.parametrize("name", list(CLIENT_ATTACKS))
def test_client_attack_protocol(name):
    cls = CLIENT_ATTACKS[name]
    assert cls.name == name
    ds = demo("digits").take(np.arange(300))
    rng = np.random.default_rng(0)
    benign, own = rng.normal(size=(8, 30)).astype(np.float32), rng.normal(size=(3, 30)).astype(np.float32)
    attack = make_client_attack(name, random_state=0)
    given = config(attack)
    local = attack.poison_data(ds, client=0)
    assert isinstance(local, Dataset) and local.n_rows > 0
    crafted = attack.craft(benign.copy(), own.copy(), n_clients=10)
    assert crafted.shape == own.shape and np.isfinite(crafted).all()
    assert config(attack) == given
    again = make_client_attack(name, random_state=0)
    again.poison_data(ds, client=0)
    assert np.array_equal(again.craft(benign.copy(), own.copy(), n_clients=10), crafted)


def test_every_registered_name_also_answers_to_its_other_spelling():
    for name in DETECTORS:
        assert detector_class(name.replace("_", "-")) is detector_class(name)
    for name in ATTACKS:
        assert type(make_attack(name.replace("-", "_"), **attack_options(name))) is ATTACKS[name]
    for name in AGGREGATORS:
        assert type(make_aggregator(name.replace("_", "-"))) is AGGREGATORS[name]
    for name in CLIENT_ATTACKS:
        assert type(make_client_attack(name.replace("_", "-"))) is CLIENT_ATTACKS[name]


def test_every_validation_test_a_policy_can_name_is_in_exactly_one_table():
    from mithridate.validate.columns import CATEGORICAL, NUMERIC
    from mithridate.validate.gate import ALL_TESTS, LABEL_TESTS
    from mithridate.validate.multivariate import MULTIVARIATE, TESTS

    tables = [set(NUMERIC) | set(CATEGORICAL), set(MULTIVARIATE), set(LABEL_TESTS)]
    assert set().union(*tables) == set(ALL_TESTS) and sum(map(len, tables)) == len(ALL_TESTS)
    assert tuple(MULTIVARIATE) == TESTS


@pytest.mark.parametrize("name", sorted(__import__("mithridate.monitor", fromlist=["MONITORS"]).MONITORS))
def test_monitor_protocol(name):
    """fit calibrates (``threshold_``), update returns alarms with event numbers in order over the whole
    stream, the state is plain JSON and a monitor rebuilt from it continues exactly, the input is untouched."""
    import json

    from mithridate.monitor import MONITORS, Alarm, load_state

    cls = MONITORS[name]
    assert cls.name == name
    monitor = cls(ert=200, random_state=0)
    given = config(monitor)
    rng = np.random.default_rng(0)
    reference, stream = cls.example(rng)
    kept = stream.copy()
    monitor.fit(reference)
    assert np.isfinite(monitor.threshold_)
    first = monitor.update(stream[:250])
    rebuilt = load_state(json.loads(json.dumps(monitor.state())))
    rest, again = monitor.update(stream[250:]), rebuilt.update(stream[250:])
    assert [a.to_dict() for a in rest] == [a.to_dict() for a in again]
    alarms = first + rest
    assert alarms and all(isinstance(a, Alarm) for a in alarms)
    assert [a.event for a in alarms] == sorted(a.event for a in alarms) and alarms[-1].event < 600
    assert config(monitor) == given and np.array_equal(stream, kept)
