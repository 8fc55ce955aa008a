"""Certificates of vote ensembles whose members each saw only some training rows: how many rows could be
inserted or removed without changing a prediction. The functional core under :mod:`.finite` and
:mod:`.dpa`.

Ties go to the smaller class index, so a tie is a deterministic prediction an attacker must still beat.
"""

from __future__ import annotations

import numpy as np


def vote_counts(votes: np.ndarray, n_classes: int) -> np.ndarray:
    """``(members, n)`` predicted classes to ``(n, classes)`` vote counts.

    >>> vote_counts(np.array([[0, 1], [0, 2], [1, 2]]), 3).tolist()
    [[2, 1, 0], [0, 1, 2]]
    """
    counts = np.zeros((votes.shape[1], n_classes), dtype=np.int64)
    for row in votes:
        counts[np.arange(votes.shape[1]), row] += 1
    return counts


def certified_radius(votes: np.ndarray, members_of_bucket: np.ndarray, n_classes: int) -> tuple[np.ndarray, np.ndarray]:
    """Predictions and certified radii of a finite aggregation (Wang, Levine & Feizi 2022, Theorem 2).

    ``votes``: ``(members, n)`` classes; ``members_of_bucket``: ``(buckets, d)``, the members trained on each
    bucket of rows (a row lives in one bucket, chosen by a hash of its content, so inserting or removing it
    touches one bucket). Corrupting bucket ``b`` can cut the lead of the prediction ``c`` over a class
    ``c'`` by at most ``s_b(c') = 2 #{members of b voting c} + #{members of b voting neither}``; the radius
    is the largest ``r`` for which, for every ``c'``, the ``r`` largest ``s_b(c')`` stay within the lead
    ``n_c - n_c' - [c' < c]``. A member shared by two corrupted buckets is counted twice there, so that sum
    bounds the damage from above; so does the damage of the ``r d`` most damaging members (``r`` buckets
    reach no more), and the smaller of the two bounds is used: the certificate stays sound. With one
    member per bucket this is Deep Partition Aggregation's certificate (Levine & Feizi 2021):
    ``floor(lead / 2)``.

    >>> votes = np.array([[0], [0], [0], [1], [2]])  # five partitions, one test row
    >>> certified_radius(votes, np.arange(5)[:, None], 3)
    (array([0]), array([1]))
    """
    counts = vote_counts(votes, n_classes)
    n, spread = votes.shape[1], members_of_bucket.shape[1]
    pred = counts.argmax(axis=1)  # argmax takes the first maximum: ties to the smaller class
    radius = np.full(n, np.iinfo(np.int64).max)
    on_bucket = votes[members_of_bucket]  # (buckets, d, n)
    for other in range(n_classes):
        rival = pred != other
        if not rival.any():
            continue
        lead = counts[np.arange(n), pred] - counts[:, other] - (other < pred)
        damage = (2 * (on_bucket == pred).sum(axis=1) + ((on_bucket != pred) & (on_bucket != other)).sum(axis=1))
        cumulative = np.cumsum(-np.sort(-damage, axis=0), axis=0)  # (buckets, n): top-r damage for r = 1..
        # r buckets also reach at most r * d distinct members: the top r * d members' damage bounds it too
        per_member = 2 * (votes == pred) + ((votes != pred) & (votes != other))
        by_member = np.cumsum(-np.sort(-per_member, axis=0), axis=0)
        reach = np.minimum(np.arange(1, len(cumulative) + 1) * spread, len(votes)) - 1
        cumulative = np.minimum(cumulative, by_member[reach])
        within = (cumulative <= lead[None, :]).sum(axis=0)  # the largest r whose damage stays within the lead
        radius = np.where(rival, np.minimum(radius, within), radius)
    return pred, np.where(radius == np.iinfo(np.int64).max, 0, radius)
