"""Concept drift seen through a model's errors: our :class:`~mithridate.monitor.ErrorRate` against river's
ADWIN and Page-Hinkley on the same error streams (issue 13), on river's generators.

- **Streams.** River's SEA (variant 0 to 2, 10% label noise), Agrawal (function 0 to 2), Hyperplane (still,
  then drifting at ``mag_change`` 0.001) and RandomRBF (still, then centroids moving at 0.001).
- **The model.** A gradient-boosting model is trained on 3,000 events of the first concept. Its errors on
  3,000 more are the reference. Ours is calibrated from those errors alone.
- **The peers.** river's detectors read the same 0/1 error stream, which is how river means them to be
  used. Their one setting (ADWIN's ``delta``, Page-Hinkley's ``threshold``) is tuned by bisection on
  simulated Bernoulli streams at the reference error rate, to the same ERT.
- **Reported.** The mean run length on the first concept's errors (streams resampled from the 40,000
  events after the references), and the median delay after the change (``--streams`` streams: 300 events of
  the first concept, then 3,000 of the second, each from its own generator seed). Ours by default
  promises the ERT for 90% of the hold-outs it could have been given, and with ``guarantee=None`` the ERT
  averaged over them; both run, and their run lengths are also measured over ``--references`` hold-outs
  of 3,000 events each (disjoint, ``200 / references`` streams each), with the spread of the single
  hold-outs' means (10th-90th percentile; from few streams each, so mostly sampling noise). The
  peers are tuned on the first hold-out, where all delays are measured.

    python -m benchmarks.monitor_concept [--ert 1000] [--streams 30] [--references 5] [--peers/--no-peers]
"""

from __future__ import annotations

import argparse
import itertools
import time

import numpy as np

from mithridate.monitor.calibrate import censored_mean

PRE = 300


def generators(seed: int):
    from river.datasets import synth

    return {
        "SEA 0->2": (lambda s: synth.SEA(variant=0, noise=0.1, seed=s),
                     lambda s: synth.SEA(variant=2, noise=0.1, seed=s)),
        "Agrawal 0->2": (lambda s: synth.Agrawal(classification_function=0, seed=s),
                         lambda s: synth.Agrawal(classification_function=2, seed=s)),
        # Hyperplane's one seed sets both the plane and the samples: every drifting stream is the same one
        "Hyperplane still->drifting": (lambda s: synth.Hyperplane(seed=seed, mag_change=0.0),
                                       lambda s: synth.Hyperplane(seed=seed, mag_change=0.001)),
        "RandomRBF still->drifting": (lambda s: synth.RandomRBFDrift(seed_model=seed, seed_sample=s, change_speed=0.0),
                                      lambda s: synth.RandomRBFDrift(seed_model=seed, seed_sample=s,
                                                                     change_speed=0.001)),
    }


def draw(make, seed: int, n: int) -> tuple[np.ndarray, np.ndarray]:
    rows = list(itertools.islice(make(seed), n))
    keys = list(rows[0][0])
    return np.array([[x[k] for k in keys] for x, _ in rows], dtype=float), np.array([y for _, y in rows])


class RiverChart:
    def __init__(self, kind: str, setting: float):
        self.kind, self.setting = kind, setting

    def first_alarm(self, errors: np.ndarray) -> int | None:
        from river import drift

        det = (drift.PageHinkley(threshold=self.setting, min_instances=30) if self.kind == "page_hinkley"
               else drift.ADWIN(delta=self.setting))
        for t, e in enumerate(errors):
            det.update(float(e))
            if det.drift_detected:
                return t
        return None


def mean_rl(first_alarm, sample, streams: int, limit: int) -> float:
    """The mean run length of ``first_alarm`` over ``streams`` streams of ``limit`` events from ``sample``."""
    times = np.array([limit if (t := first_alarm(sample(limit))) is None else t + 1 for _ in range(streams)])
    return censored_mean(times, times < limit)


def tune(kind: str, rate: float, ert: float, seed: int) -> float:
    rng = np.random.default_rng(seed)
    lo, hi = (0.1, 200.0) if kind == "page_hinkley" else (-40.0, 0.0)
    for _ in range(14):
        mid = (lo + hi) / 2
        chart = RiverChart(kind, mid if kind == "page_hinkley" else float(np.exp(mid)))
        rl = mean_rl(chart.first_alarm, lambda n: (rng.random(n) < rate).astype(float), 40, int(4 * ert))
        if (rl < ert) == (kind == "page_hinkley"):
            lo = mid
        else:
            hi = mid
    mid = (lo + hi) / 2
    return mid if kind == "page_hinkley" else float(np.exp(mid))


def main() -> None:
    from sklearn.ensemble import HistGradientBoostingClassifier

    from mithridate.monitor import ErrorRate, load_state

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ert", type=float, default=1000)
    parser.add_argument("--streams", type=int, default=30)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--references", type=int, default=5)
    parser.add_argument("--peers", action=argparse.BooleanOptionalAction, default=True)
    args = parser.parse_args()
    ert, n, refs = args.ert, args.streams, args.references
    print(f"ERT {ert:g}; mean run length over 100 streams of the first concept on the first hold-out, and over "
          f"{refs} hold-outs x {200 // refs} streams; median delay over {n} streams\n")
    print("| stream | model error before / after | detector | measured mean run length | over hold-outs "
          "(one hold-out, 10th-90th) | median delay |")
    print("|---|---|---|---|---|---|")
    for name, (before, after) in generators(args.seed).items():
        t0 = time.perf_counter()
        x, y = draw(before, args.seed, 3000 + 3000 * refs + 40_000)
        model = HistGradientBoostingClassifier(max_iter=100, random_state=0).fit(x[:3000], y[:3000])
        wrong = (model.predict(x) != y).astype(float)
        holdouts = [wrong[3000 * (r + 1):3000 * (r + 2)] for r in range(refs)]
        reference, pool = holdouts[0], wrong[3000 * (refs + 1):]
        posts = []
        for s in range(n):
            xa, ya = draw(after, 1000 + s, 3000)
            posts.append((model.predict(xa) != ya).astype(float))
        rng = np.random.default_rng(args.seed)

        def ours(holdout, **options):
            state = ErrorRate(ert=ert, random_state=args.seed, **options).fit(holdout).state()

            def first_alarm(errors):
                alarms = load_state(state).update(errors)
                return alarms[0].event if alarms else None
            return first_alarm

        def sample(k: int, pool=pool, rng=rng) -> np.ndarray:
            return pool[rng.integers(len(pool), size=k)]

        charts = {"mithridate ErrorRate (default: 90% guarantee)": {},
                  "mithridate ErrorRate, guarantee=None (averaged)": {"guarantee": None}}
        spread = {}
        for label, options in charts.items():
            per = [mean_rl(ours(h, **options), sample, 200 // refs, int(10 * ert)) for h in holdouts]
            charts[label] = ours(reference, **options)
            lo, hi = np.percentile(per, [10, 90])
            spread[label] = f"{np.mean(per):,.0f} ({np.mean(per) / ert - 1:+.0%}; {lo:,.0f}-{hi:,.0f})"
        if args.peers:
            for kind in ("page_hinkley", "adwin"):
                charts[f"river {kind}"] = RiverChart(kind, tune(kind, float(reference.mean()), ert,
                                                                args.seed)).first_alarm
        for label, first in charts.items():
            rl = mean_rl(first, sample, 100, int(10 * ert))
            delays = []
            for post in posts:
                stream = np.concatenate([pool[rng.integers(len(pool), size=PRE)], post])
                t = first(stream)
                while t is not None and t < PRE:  # a false alarm before the change: draw the start again
                    stream[:PRE] = pool[rng.integers(len(pool), size=PRE)]
                    t = first(stream)
                delays.append(len(post) if t is None else t - PRE + 1)
            print(f"| {name} | {reference.mean():.3f} / {np.mean(posts):.3f} | {label} | "
                  f"{rl:,.0f} ({rl / ert - 1:+.0%}) | {spread.get(label, '')} | {np.median(delays):.0f} |", flush=True)
        print(f"<!-- {name}: {time.perf_counter() - t0:.0f} s -->", flush=True)


if __name__ == "__main__":
    main()
