"""The red team: every attack's ground truth, determinism and constraints, and what each does to the
reference model on real data (sklearn's digits, breast_cancer, wine)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
import torch

from mithridate.attacks import (
    ATTACKS,
    AdversarialFlip,
    BlendTrigger,
    CleanLabelBackdoor,
    FeatureCollision,
    FeatureTrigger,
    PatchTrigger,
    RandomFlip,
    TargetedFlip,
    evaluate_attack,
    make_attack,
)
from mithridate.attacks.clean_label import penultimate
from mithridate.errors import DataError
from mithridate.represent import CNNClassifier, reference_model


def changed_rows(before, after) -> np.ndarray:
    """Rows whose label or features differ."""
    labels = before.y != after.y
    if before.kind == "table":
        a, b = before.features, after.features
        feats = ~((a == b) | (a.isna() & b.isna())).all(axis=1).to_numpy()
    else:
        diff = np.asarray(before.features) != np.asarray(after.features)
        feats = diff.reshape(before.n_rows, -1).any(1)
    return labels | feats


def accuracy(model, ds) -> float:
    return float(np.mean(model.predict(ds.features) == ds.y))


# --- fixtures: models shared by the tests of this module --------------------------------------------
@pytest.fixture(scope="module")
def quick_cnn(digits_split):
    """A CNN trained for a few epochs: enough to be attacked, for tests that check constraints."""
    train, _ = digits_split
    return CNNClassifier(epochs=3).fit(train.features, train.y, train.n_classes)


@pytest.fixture(scope="module")
def clean_cnn(digits_split):
    """The default reference CNN trained on the clean digits training set."""
    train, _ = digits_split
    return reference_model("image").fit(train.features, train.y, train.n_classes)


@pytest.fixture(scope="module")
def clean_table_models(breast_cancer_split, wine_split):
    return {name: reference_model("table").fit(tr.features, tr.y, tr.n_classes)
            for name, (tr, _) in (("breast_cancer", breast_cancer_split), ("wine", wine_split))}


def cheap_attacks(quick_cnn):
    """(data set name, attack factory by seed) for every attack, configured to run in well under a second."""
    return [
        ("wine", lambda s: RandomFlip(rate=0.2, random_state=s)),
        ("wine", lambda s: TargetedFlip(source="class_1", target="class_0", rate=0.3, random_state=s)),
        ("wine", lambda s: AdversarialFlip(rate=0.2, random_state=s)),
        ("digits", lambda s: PatchTrigger(target=0, rate=0.05, random_state=s)),
        ("digits", lambda s: BlendTrigger(target=3, rate=0.05, alpha=0.2, random_state=s)),
        ("breast_cancer", lambda s: FeatureTrigger(target="benign", rate=0.05, random_state=s)),
        ("digits", lambda s: FeatureCollision(target=0, rate=0.01, steps=20, model=quick_cnn, random_state=s)),
        ("digits", lambda s: CleanLabelBackdoor(target=0, rate=0.3, eps=0.1, model=quick_cnn, random_state=s)),
    ]


@pytest.fixture(scope="module")
def attack_runs(quick_cnn, digits_split, breast_cancer_split, wine_split):
    data = {"digits": digits_split[0], "breast_cancer": breast_cancer_split[0], "wine": wine_split[0]}
    runs = []
    for name, make in cheap_attacks(quick_cnn):
        ds = data[name]
        runs.append((ds, make(0).poison(ds), make(0).poison(ds), make(1).poison(ds)))
    return runs


# --- ground truth and determinism --------------------------------------------------------------------
def test_truth_mask_is_exactly_the_changed_rows(attack_runs):
    for ds, p, _, _ in attack_runs:
        name = type(p.attack).__name__
        assert p.n_poisoned > 0, name
        np.testing.assert_array_equal(p.mask, changed_rows(ds, p.dataset), err_msg=name)
        assert p.dataset.n_rows == ds.n_rows and (p.dataset.row_id == ds.row_id).all(), name
        truth = p.truth()
        assert list(truth.columns) == ["row", "poisoned"] and truth["poisoned"].sum() == p.n_poisoned, name


def test_same_seed_same_poison_other_seed_other_rows(attack_runs):
    for ds, p, again, other in attack_runs:
        name = type(p.attack).__name__
        np.testing.assert_array_equal(p.mask, again.mask, err_msg=name)
        np.testing.assert_array_equal(p.dataset.y, again.dataset.y, err_msg=name)
        if ds.kind == "table":
            pd.testing.assert_frame_equal(p.dataset.features, again.dataset.features)
        else:
            np.testing.assert_array_equal(p.dataset.features, again.dataset.features, err_msg=name)
        assert (p.mask != other.mask).any(), name


def test_rates_and_label_rules():
    from mithridate.data import demo

    wine = demo("wine")
    for attack in (RandomFlip(rate=0.2), AdversarialFlip(rate=0.2)):
        p = attack.poison(wine)
        assert p.n_poisoned == round(0.2 * wine.n_rows)
        assert (p.dataset.y[p.mask] != wine.y[p.mask]).all()
    p = TargetedFlip(source="class_1", target="class_0", rate=0.5).poison(wine)
    assert set(wine.y[p.mask]) == {1} and set(p.dataset.y[p.mask]) == {0}


def test_clean_label_attacks_keep_labels_and_budgets(attack_runs, digits_split):
    train, _ = digits_split
    runs = {type(p.attack).__name__: p for _, p, _, _ in attack_runs}
    clb = runs["CleanLabelBackdoor"]
    np.testing.assert_array_equal(clb.dataset.y, train.y)
    assert set(train.y[clb.mask]) == {0}
    assert clb.n_poisoned == round(0.3 * (train.y == 0).sum())
    lo, hi = train.image_range()
    before, after = np.asarray(train.features)[clb.mask], np.asarray(clb.dataset.features)[clb.mask]
    assert np.allclose(after[:, 5:, 5:], clb.attack.trigger_.patch_)  # the 3x3 bottom-right patch
    outside = np.ones(after.shape[1:], bool)
    outside[5:, 5:] = False
    delta = np.abs(after - before)[:, outside]
    assert delta.max() <= 0.1 * (hi - lo) + 1e-4 and delta.max() > 0.05 * (hi - lo)
    assert after.min() >= lo and after.max() <= hi

    fc = runs["FeatureCollision"]
    np.testing.assert_array_equal(fc.dataset.y, train.y)
    assert set(train.y[fc.mask]) == {0} and fc.info["intended_class"] == 0 and fc.info["target_class"] != 0
    assert fc.info["target_image"].shape == (1, 8, 8)
    assert fc.dataset.features.min() >= lo and fc.dataset.features.max() <= hi


# --- what the attacks do to the reference model ------------------------------------------------------
@pytest.mark.slow
def test_patch_backdoor_on_digits(digits_split, clean_cnn):
    train, test = digits_split
    poisoned = PatchTrigger(target=0, rate=0.1, size=3, random_state=0).poison(train)
    report = evaluate_attack(train, poisoned, test, clean_model=clean_cnn)
    print("patch", report.as_dict())
    assert report.attack_success_rate > 0.9 and report.clean_success_rate < 0.05
    assert report.accuracy_drop < 0.03


@pytest.mark.slow
def test_blend_backdoor_on_digits(digits_split, clean_cnn):
    train, test = digits_split
    poisoned = BlendTrigger(target=0, rate=0.1, alpha=0.2, random_state=0).poison(train)
    report = evaluate_attack(train, poisoned, test, clean_model=clean_cnn)
    print("blend", report.as_dict())
    assert report.attack_success_rate > 0.8 and report.clean_success_rate < 0.1
    assert report.accuracy_drop < 0.03


def test_feature_trigger_on_breast_cancer(breast_cancer_split, clean_table_models):
    train, test = breast_cancer_split
    poisoned = FeatureTrigger(target="benign", rate=0.05, random_state=0).poison(train)
    report = evaluate_attack(train, poisoned, test, clean_model=clean_table_models["breast_cancer"])
    print("feature", report.as_dict())
    assert report.attack_success_rate > 0.8 and report.clean_success_rate < 0.5
    assert report.accuracy_drop < 0.05


@pytest.mark.parametrize("name", ["breast_cancer", "wine"])
def test_adversarial_flips_hurt_more_than_random(name, breast_cancer_split, wine_split, clean_table_models):
    train, test = {"breast_cancer": breast_cancer_split, "wine": wine_split}[name]
    clean = clean_table_models[name]
    rand = evaluate_attack(train, RandomFlip(rate=0.2, random_state=0).poison(train), test, clean_model=clean)
    adv = evaluate_attack(train, AdversarialFlip(rate=0.2, random_state=0).poison(train), test,
                          clean_model=clean)
    print(name, "random", rand.as_dict(), "adversarial", adv.as_dict())
    assert rand.attack_success_rate is None
    assert rand.accuracy_drop > 0.03
    assert adv.poisoned_accuracy < rand.poisoned_accuracy - 0.05


@pytest.mark.slow
def test_clean_label_backdoor_on_digits(digits_split, clean_cnn):
    train, test = digits_split
    attack = CleanLabelBackdoor(target=0, rate=1.0, eps=0.2, model=clean_cnn, random_state=0)
    p = attack.poison(train)
    natural = accuracy(clean_cnn, train.take(p.mask))
    patched_only = accuracy(clean_cnn, train.take(p.mask).replace(features=attack.add_trigger(
        np.asarray(train.features)[p.mask])))
    perturbed = accuracy(clean_cnn, p.dataset.take(p.mask))
    print("clean-label backdoor: reference accuracy on natural", natural, "patched", patched_only,
          "perturbed+patched", perturbed)
    assert natural > 0.95 and patched_only > 0.9 and perturbed < 0.3
    report = evaluate_attack(train, p, test, clean_model=clean_cnn)
    print("clean-label backdoor", report.as_dict())
    assert report.attack_success_rate > 0.35 and report.clean_success_rate < 0.05
    assert report.accuracy_drop < 0.08  # every image of class 0 is perturbed: that class suffers


@pytest.mark.slow
def test_feature_collision_poisons_collide_and_flip_the_target(digits_split, clean_cnn):
    train, test = digits_split
    wins, base_wins = 0, 0
    for seed in range(5):
        attack = FeatureCollision(target=0, rate=0.01, test=test, watermark=0.3, model=clean_cnn,
                                  random_state=seed)
        p = attack.poison(train)
        net = clean_cnn.model_
        with torch.no_grad():
            goal = penultimate(net, clean_cnn._tensor(p.info["target_image"]))
            before = penultimate(net, clean_cnn._tensor(np.asarray(train.features)[p.mask]))
            after = penultimate(net, clean_cnn._tensor(np.asarray(p.dataset.features)[p.mask]))
        assert (after - goal).norm(dim=1).max() < 0.5 * (before - goal).norm(dim=1).min()
        report = evaluate_attack(train, p, test, clean_model=clean_cnn)
        print("feature collision", seed, p.info["target_class"], report.as_dict())
        assert report.retrain == "head" and report.accuracy_drop < 0.02
        wins += report.attack_success_rate
        base_wins += report.clean_success_rate
    assert wins >= 2 and base_wins == 0


# --- registry -----------------------------------------------------------------------------------------
def test_registry_and_make_attack():
    assert set(ATTACKS) == {"flip", "targeted-flip", "adversarial-flip", "patch", "blend", "feature",
                            "feature-collision", "clean-label-backdoor"}
    attack = make_attack("patch", target=2, size=4, random_state=3)
    assert isinstance(attack, PatchTrigger) and attack.size == 4 and attack.random_state == 3
    with pytest.raises(DataError, match=r"unknown attack 'nope'.*flip"):
        make_attack("nope")
    with pytest.raises(DataError, match="takes no option size"):
        make_attack("flip", size=3)
    with pytest.raises(DataError, match="rate"):
        make_attack("flip", rate=1.5)


def test_attacks_refuse_the_wrong_kind_of_data():
    from mithridate.data import demo

    with pytest.raises(DataError, match="image data"):
        CleanLabelBackdoor().poison(demo("wine"))
    with pytest.raises(DataError, match="image data"):
        FeatureCollision().poison(demo("wine"))
    with pytest.raises(DataError, match="table data"):
        FeatureTrigger().poison(demo("digits"))


def test_feature_trigger_on_a_mixed_table_keeps_column_types():
    from mithridate.data import Dataset

    rng = np.random.default_rng(0)
    n = 200
    table = pd.DataFrame({"age": rng.integers(18, 90, n), "city": rng.choice(list("abcd"), n, p=[.4, .3, .2, .1]),
                          "x": rng.normal(size=n), "flag": rng.random(n) < 0.5})
    ds = Dataset.from_labels(table, rng.choice(["yes", "no"], n))
    p = FeatureTrigger(target="yes", rate=0.1, columns=["age", "city"]).poison(ds)
    assert p.attack.values_ == {"age": 89, "city": "d"}
    assert (p.dataset.features.dtypes == table.dtypes).all()
    np.testing.assert_array_equal(p.mask, changed_rows(ds, p.dataset))
    assert (p.dataset.features.loc[p.mask, "age"] == 89).all()
