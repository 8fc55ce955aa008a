"""Streaming monitors against alibi-detect's online detectors at the same ERT (issue 13).

alibi-detect's ``MMDDriftOnline``, ``LSDDDriftOnline`` and ``CVMDriftOnline`` are the only peers that
calibrate to an expected run length; each is configured with the ERT, by its own simulation, on the same
reference as ours. Streams as in ``monitor_streams.py`` (Gaussian, a mean shift in one feature after a
warm-up) and the backdoor stream of the issue: real digits traffic of which 5% carries a BadNets patch
after the warm-up. Reported: the mean run length measured on null streams (censored at 4 x ERT), the
median delay, and events per second.

alibi-detect pins older numpy and pandas than mithridate's test environment, so it runs in a virtual
environment of its own: ``make bench-alibi`` builds ``.venv-alibi`` (mithridate, alibi-detect, PyTorch CPU)
and runs this file there.

``--river`` adds river's Page-Hinkley and ADWIN banks on the Gaussian streams, tuned by simulation to the ERT
as in ``monitor_streams.py``, so all five peers of the issue read the same streams in one run (river must be
installed beside alibi-detect: river 0.23 accepts its numpy).

``--tune`` tunes each peer by simulation to the ERT, as the issue asks, instead of trusting its own
configuration: alibi's ``ert`` setting is bisected on a log scale (null streams of their own seed) until
the measured mean run length is within 15% of the ERT, at most ``--tune-steps`` times; the table then
shows the setting it took.

    python -m benchmarks.monitor_alibi [--ert 1000] [--streams 30] [--dims 1,10] [--reference 5000] [--tune]
        [--shifts 0.25,0.5,1] [--ramps 0,500]
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from benchmarks.monitor_streams import RiverBank, mean_rl, ours_first_alarm, tune_river

WARMUP = 100


class Alibi:
    """One alibi-detect online detector, configured once, reset per stream."""

    def __init__(self, kind: str, reference: np.ndarray, ert: float, window: int, seed: int):
        import torch
        from alibi_detect.cd import CVMDriftOnline, LSDDDriftOnline, MMDDriftOnline

        x = reference.astype(np.float32)
        np.random.seed(seed)
        torch.manual_seed(seed)
        if kind == "mmd":
            self.detector = MMDDriftOnline(x, ert=ert, window_size=window, backend="pytorch",
                                           n_bootstraps=max(3000, int(3 * ert)), verbose=False)
        elif kind == "lsdd":
            self.detector = LSDDDriftOnline(x, ert=ert, window_size=window, backend="pytorch",
                                            n_bootstraps=max(3000, int(3 * ert)), verbose=False)
        else:
            # with d features its threshold is a 1 - 1/(ert d)-ish quantile: it refuses fewer bootstraps
            self.detector = CVMDriftOnline(x, ert=ert, window_sizes=[window],
                                           n_bootstraps=max(3000, int(3 * ert * x.shape[1])), verbose=False)

    def first_alarm(self, x: np.ndarray) -> int | None:
        self.detector.reset_state()
        for t, row in enumerate(x.astype(np.float32)):
            if self.detector.predict(row, return_test_stat=False)["data"]["is_drift"]:
                return t
        return None


def null_lengths(first, draw, streams: int, limit: int, rng) -> np.ndarray:
    out = []
    for _ in range(streams):
        t = first(draw(limit, rng))
        out.append(limit if t is None else t + 1)
    return np.array(out)


def delays(first, draw_changed, streams: int, limit: int, rng) -> np.ndarray:
    out = []
    while len(out) < streams:
        t = first(draw_changed(WARMUP + limit, rng))
        if t is not None and t < WARMUP:
            continue
        out.append(limit if t is None else t - WARMUP + 1)
    return np.array(out)


def tuned(kind: str, ref: np.ndarray, null, ert: float, window: int, seed: int, streams: int, limit: int,
          steps: int) -> tuple[Alibi, float, float]:
    """An alibi detector whose measured null run length is within 15% of ``ert``: (detector, its ``ert``
    setting, the run length measured while tuning)."""
    setting, lo, hi = ert, None, None
    for _ in range(steps):
        peer = Alibi(kind, ref, setting, window, seed)
        rl = mean_rl(null_lengths(peer.first_alarm, null, streams, limit, np.random.default_rng(seed + 5)), limit)
        print(f"  tuning {kind}: setting {setting:,.0f} -> run length {rl:,.0f}", flush=True)
        if abs(rl / ert - 1) <= 0.15:
            break
        lo, hi = (setting, hi) if rl < ert else (lo, setting)
        setting = np.sqrt(lo * hi) if lo and hi else setting * (3.0 if rl < ert else 1 / 3)
    return peer, setting, rl


def digits_streams():
    """Real digits: a 900-row reference, clean traffic, and the same traffic with a BadNets patch."""
    from mithridate.attacks import PatchTrigger
    from mithridate.data import demo

    ds = demo("digits")
    order = np.random.default_rng(0).permutation(ds.n_rows)
    reference = np.asarray(ds.features, float).reshape(ds.n_rows, -1)[order[:900]]
    live = ds.take(order[900:])
    clean = np.asarray(live.features, float).reshape(live.n_rows, -1)
    others = live.take(np.flatnonzero(live.y != 0))
    triggered = np.asarray(PatchTrigger(target=0, rate=0.999, random_state=0).poison(others).dataset.features,
                           float).reshape(others.n_rows, -1)

    def null(n, rng):
        return clean[rng.integers(len(clean), size=n)]

    def changed(n, rng, rate=0.05):
        rows = null(n, rng)
        hit = (np.arange(n) >= WARMUP) & (rng.random(n) < rate)
        rows[hit] = triggered[rng.integers(len(triggered), size=hit.sum())]
        return rows

    return reference, null, changed


def main() -> None:
    from mithridate.monitor import CusumBank

    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--ert", type=float, default=1000)
    parser.add_argument("--streams", type=int, default=30)
    parser.add_argument("--dims", default="1,10")
    parser.add_argument("--reference", type=int, default=5000)
    parser.add_argument("--window", type=int, default=20)
    parser.add_argument("--detectors", default="mmd,lsdd,cvm")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--tune", action="store_true", help="tune each peer by simulation to the ERT")
    parser.add_argument("--tune-steps", type=int, default=6)
    parser.add_argument("--cases", default="gaussian,digits")
    parser.add_argument("--shifts", default="0.5", help="Gaussian mean shifts, in standard deviations")
    parser.add_argument("--ramps", default="0", help="0: the shift comes at once; N: it grows over N events")
    parser.add_argument("--river", action="store_true", help="add river's Page-Hinkley and ADWIN (Gaussian streams)")
    args = parser.parse_args()
    ert, limit = args.ert, int(4 * args.ert)
    cases = []
    for d in (int(v) for v in args.dims.split(",") if v and "gaussian" in args.cases):
        ref = np.random.default_rng(args.seed).normal(size=(args.reference, d))

        def null(n, rng, d=d):
            return rng.normal(size=(n, d))

        def shifted(n, rng, d=d, s=0.5, ramp=0):
            x = rng.normal(size=(n, d))
            x[WARMUP:, 0] += s * (np.minimum(np.arange(1, n - WARMUP + 1) / ramp, 1.0) if ramp else 1.0)
            return x

        cells = {f"{s:g} sd{f', over {r}' if r else ''}": (lambda n, rng, s=s, r=r, f=shifted: f(n, rng, s=s, ramp=r))
                 for r in (int(v) for v in args.ramps.split(",")) for s in (float(v) for v in args.shifts.split(","))}
        cases.append((f"Gaussian d={d}, a shift in one feature", ref, null, cells))
    if "digits" in args.cases:
        reference, null, changed = digits_streams()
        cases.append(("digits", reference, null, {"5% of traffic triggered (BadNets)": changed}))
    print(f"ERT {ert:g}; {args.streams} streams per cell; window {args.window} for alibi-detect; median delays\n")
    for name, ref, null, cells in cases:
        print(f"| {name}: detector | configure s | measured mean run length | {' | '.join(cells)} | events/s |")
        print("|---|---:|---:|" + "---:|" * len(cells) + "---:|")
        t0 = time.perf_counter()
        bank = CusumBank(ert=ert, random_state=args.seed).fit(ref)
        state = bank.state()
        detectors = {"mithridate CusumBank": (lambda x, s=state: ours_first_alarm(s, x), time.perf_counter() - t0)}
        for kind in args.detectors.split(","):
            t0 = time.perf_counter()
            label = f"alibi-detect {kind.upper()}DriftOnline"
            if args.tune:
                peer, setting, _ = tuned(kind, ref, null, ert, args.window, args.seed, args.streams, limit,
                                         args.tune_steps)
                label += f", tuned (ert={setting:,.0f})"
            else:
                peer = Alibi(kind, ref, ert, args.window, args.seed)
            detectors[label] = (peer.first_alarm, time.perf_counter() - t0)
        for kind in ("page_hinkley", "adwin") if args.river and name.startswith("Gaussian") else ():
            t0 = time.perf_counter()
            d = ref.shape[1]
            bank = RiverBank(kind, d, tune_river(kind, d, ert, args.streams, args.seed + 6))  # own streams

            def river_first(x, bank=bank):
                bank.reset()
                return bank.first_alarm(x)

            detectors[f"river {kind}, tuned"] = (river_first, time.perf_counter() - t0)
        for label, (first, configure) in detectors.items():
            rng = np.random.default_rng(args.seed + 1)
            t0 = time.perf_counter()
            lengths = null_lengths(first, null, args.streams, limit, rng)
            speed = lengths.sum() / (time.perf_counter() - t0)
            cols = [f"{np.median(delays(first, changed, args.streams, limit, np.random.default_rng(seed))):.0f}"
                    for changed in cells.values() for seed in [args.seed + 2]]
            print(f"| {label} | {configure:.0f} | {mean_rl(lengths, limit):,.0f} | {' | '.join(cols)} | "
                  f"{speed:,.0f} |", flush=True)
        print()


if __name__ == "__main__":
    main()
