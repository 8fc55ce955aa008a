"""Robustness matrix: final test accuracy on digits in our in-process simulator (20 clients, 15 rounds by
default, as ``mithridate fl simulate`` runs it), for

- **rules**: ours (``default`` and any of :data:`mithridate.federated.aggregators.NAMES`), **Flower's shipped
  rules** run as Flower runs them (the Message-API strategies ``FedAvg``, ``FedMedian``, ``FedTrimmedAvg``,
  ``Krum``, ``MultiKrum`` and ``Bulyan`` from flwr, fed the round's client replies with their example counts;
  ``num_malicious_nodes`` set to the true count, which favours them; Flower's Bulyan takes about 3.5 s a
  round here, so the default list runs ours, ``bulyan``, which gives the same aggregate to the last bit
  (``benchmarks.federated_parity``): ``--rules flower:Bulyan`` runs Flower's), and ``honest_only``: the mean of the
  honest clients' updates, an oracle no rule can know, whose accuracy is the ceiling a defence can reach
  once the malicious clients' data is lost to training; ``secure:<rule>`` runs ``<rule>`` as
  ``fl simulate --secure`` does (``default``: the screened mean on secret shares held by two servers),
  ``masking:<rule>`` as ``--secure-protocol masking`` does (one server sees only the sum; ``default``
  becomes one-round centered clipping);
- **attacks**: none, label flip, targeted flip, sign flip, Gaussian, ALIE, IPM, min-max, min-sum and the
  model-replacement backdoor (its attack success after the slash);
- **malicious share** (10%, 20%, 30%), **heterogeneity** (IID shards, Dirichlet label skew 1.0, 0.5, 0.1),
  and seeds (cells are means over seeds).

It prints one table per (heterogeneity, share): rules by attacks, with each rule's worst case over the
attacks, and a summary of the worst cases; ``--csv`` keeps every run. A rule that refuses a configuration
(Bulyan needs n >= 4f + 3) shows ``refused``.

    python -m benchmarks.federated_robustness [--rules default,mean,...] [--shares 0.1,0.2,0.3]
        [--alphas iid,1.0,0.5,0.1] [--seeds 0,1,2] [--rounds 15] [--csv bench-out/federated_matrix.csv]
"""

from __future__ import annotations

import argparse
import logging
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd

from mithridate.federated.aggregators import AggregationError, Aggregator

OURS = ("default", "mean", "centered_clipping", "fltrust", "bulyan")
FLOWER = ("flower:FedAvg", "flower:FedMedian", "flower:FedTrimmedAvg", "flower:Krum", "flower:MultiKrum")
ATTACKS = ("none", "label_flip", "targeted_flip", "sign_flip", "gaussian", "alie", "ipm", "min_max", "min_sum",
           "backdoor")


class FlowerRule(Aggregator):
    """One of Flower's Message-API strategies as an aggregator of the round's updates: each client's update
    is sent as a reply (four arrays, ``num-examples`` its shard size) to ``aggregate_train``. The rules are
    translation-equivariant, so aggregating updates equals Flower aggregating the parameters."""

    def __init__(self, strategy: str, counts: np.ndarray, n_malicious: int):
        super().__init__(None, None)
        self.strategy, self.counts, self.n_malicious = strategy, counts, n_malicious
        self.name = f"flower:{strategy}"

    def max_malicious(self, n: int) -> int:
        return n - 1

    def make(self, n: int):
        from flwr.serverapp import strategy as fs

        f, common = self.n_malicious, {"fraction_evaluate": 0.0}
        if self.strategy == "Bulyan" and n < 4 * f + 3:
            raise AggregationError(f"Flower's Bulyan needs n >= 4f + 3 ({n} < {4 * f + 3})")
        return {"FedAvg": lambda: fs.FedAvg(**common), "FedMedian": lambda: fs.FedMedian(**common),
                "FedTrimmedAvg": lambda: fs.FedTrimmedAvg(beta=0.2, **common),
                "Krum": lambda: fs.Krum(num_malicious_nodes=f, **common),
                "MultiKrum": lambda: fs.MultiKrum(num_malicious_nodes=f, num_nodes_to_select=n - f, **common),
                "Bulyan": lambda: fs.Bulyan(num_malicious_nodes=f, **common)}[self.strategy]()

    def _aggregate(self, x, w, **context):
        from benchmarks.federated_parity import replies
        from mithridate.federated.flower import flatten

        arrays, _ = self.make(len(x)).aggregate_train(1, replies(x, np.asarray(self.counts)))
        return flatten(arrays).astype(x.dtype)


class HonestOnly(Aggregator):
    """The oracle: the mean of the honest clients' updates (the ceiling of any defence)."""

    name = "honest_only"

    def __init__(self, malicious_ids=()):
        super().__init__(None, None)
        self.malicious_ids = malicious_ids

    def max_malicious(self, n: int) -> int:
        return n - 1

    def _aggregate(self, x, w, **context):
        return x[np.setdiff1d(np.arange(len(x)), np.asarray(self.malicious_ids, dtype=int))].mean(axis=0)


def run_one(job: tuple) -> dict:
    from mithridate.federated.simulate import Simulation, rule_for, secure_protocol

    logging.getLogger("flwr").setLevel(logging.ERROR)
    rule, attack, alpha, share, seed, rounds, clients = job
    options = dict(malicious=share, clients=clients, rounds=rounds, alpha=alpha, seed=seed)
    row = {"rule": rule, "attack": attack, "alpha": "iid" if alpha is None else alpha, "share": share,
           "seed": seed, "accuracy": np.nan, "attack_success": np.nan, "refused": ""}
    t0 = time.perf_counter()
    try:
        if rule.startswith("flower:") or rule == "honest_only":
            probe = Simulation("mean", attack, **options)
            probe._setup()  # the same seeded split and malicious ids the run will use
            agg = (HonestOnly(probe.malicious_ids_) if rule == "honest_only" else
                   FlowerRule(rule.split(":")[1], [len(y) for _, y in probe.shards_], len(probe.malicious_ids_)))
            result = Simulation(agg, attack, **options).run()
        elif rule.split(":")[0] in ("secure", "two-server", "masking"):  # as fl simulate --secure runs it
            how, base = rule.split(":", 1)
            secure = True if how == "secure" else how
            name, agg_options, _ = rule_for(base, private=secure_protocol(base, secure) == "masking")
            result = Simulation(name, attack, secure=secure, aggregator_options=agg_options, **options).run()
        else:
            result = Simulation(rule, attack, **options).run()
    except AggregationError as error:
        row["refused"] = str(error)
        return row
    row["accuracy"] = result.final_accuracy
    if result.attack_success_rate is not None:
        row["attack_success"] = result.attack_success_rate
    row["seconds"] = time.perf_counter() - t0
    return row


def tables(runs: pd.DataFrame, rules: list[str], attacks: list[str]) -> str:
    """Markdown: per (heterogeneity, share) a rules x attacks table with the worst case; then the summary."""
    out = []
    cells = runs.groupby(["alpha", "share", "rule", "attack"], sort=False).agg(
        accuracy=("accuracy", "mean"), attack_success=("attack_success", "mean"), refused=("refused", "first"))
    summary = {}
    for (alpha, share), block in cells.groupby(level=[0, 1], sort=False):
        out.append(f"\n### {'IID' if alpha == 'iid' else f'Dirichlet {alpha}'}, {share:.0%} malicious\n")
        out.append("| rule | " + " | ".join(attacks) + " | worst |")
        out.append("|---" * (len(attacks) + 2) + "|")
        for rule in rules:
            line, accs = [], []
            for attack in attacks:
                key = (alpha, share, rule, attack)
                if key not in block.index:
                    line.append("")
                    continue
                c = block.loc[key]
                if c["refused"]:
                    line.append("refused")
                    continue
                accs.append(c["accuracy"]) if attack != "none" else None
                asr = "" if np.isnan(c["attack_success"]) else f" / {c['attack_success']:.2f}"
                line.append(f"{c['accuracy']:.3f}{asr}")
            worst = min(accs) if accs else np.nan
            summary[rule, alpha, share] = worst
            out.append(f"| {rule} | " + " | ".join(line) + f" | {worst:.3f} |")
    settings = list(dict.fromkeys((a, s) for _, a, s in summary))
    out.append("\n### Worst case over the attacks\n")
    out.append("| rule | " + " | ".join(f"{'IID' if a == 'iid' else f'Dir {a}'} {s:.0%}" for a, s in settings)
               + " |")
    out.append("|---" * (len(settings) + 1) + "|")
    for rule in rules:
        out.append(f"| {rule} | " + " | ".join(f"{summary.get((rule, a, s), np.nan):.3f}" for a, s in settings)
                   + " |")
    return "\n".join(out)


def bars(runs: pd.DataFrame, rule: str = "default") -> str:
    """The issue's quality bars for ``rule``, checked on this run (each line says holds or FAILS)."""
    ok = runs[runs["refused"].fillna("") == ""]
    mean = ok.groupby(["alpha", "share", "rule", "attack"])[["accuracy", "attack_success"]].mean()
    worst = mean.drop(index="none", level="attack")["accuracy"].groupby(level=[0, 1, 2]).min()
    lines = ["\n### Bars (issue 16)\n"]

    def say(text: str, holds: bool) -> None:
        lines.append(f"- {text}: {'holds' if holds else 'FAILS'}")

    for alpha, floor in (("iid", 0.85), (0.5, 0.80)):
        if (alpha, 0.3, rule) in worst.index:
            w = worst[alpha, 0.3, rule]
            say(f"worst case at 30%, {'IID' if alpha == 'iid' else f'Dirichlet {alpha}'}: {w:.3f} >= {floor}",
                w >= floor)
            flower = {r: worst[alpha, 0.3, r] for r in worst.loc[alpha, 0.3].index if r.startswith("flower:")}
            if flower:
                best = max(flower, key=flower.get)
                say(f"  above every Flower rule's worst case (best: {best} {flower[best]:.3f})", w > flower[best])
    for alpha in dict.fromkeys(ok["alpha"]):
        try:
            ours, fedavg = mean.loc[(alpha, slice(None), rule, "none"), "accuracy"].mean(), \
                mean.loc[(alpha, slice(None), "mean", "none"), "accuracy"].mean()
        except KeyError:
            continue
        say(f"no attack, {alpha}: {ours:.3f} vs mean {fedavg:.3f} (within 2 points)", ours >= fedavg - 0.02)
    for name in (rule, f"secure:{rule}"):
        if (name, "backdoor") not in mean.droplevel([0, 1]).index:
            continue
        asr = mean.xs((name, "backdoor"), level=("rule", "attack"))["attack_success"]
        at_alpha, at_share = asr.idxmax()
        say(f"{name}: backdoor success at most 5% everywhere (highest {asr.max():.3f}: {at_alpha}, "
            f"{float(at_share):.0%})", asr.max() <= 0.05)
    for (alpha, share, name), plain in worst.items():
        if name == rule and (alpha, share, f"secure:{rule}") in worst.index:
            secured = worst[alpha, share, f"secure:{rule}"]
            say(f"--secure worst case, {alpha} {share:.0%}: {secured:.3f} against {plain:.3f} without (within 5 "
                "points)", secured >= plain - 0.05)
    return "\n".join(lines)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rules", default=",".join((*OURS, *FLOWER, "honest_only")))
    parser.add_argument("--attacks", default=",".join(ATTACKS))
    parser.add_argument("--shares", default="0.1,0.2,0.3")
    parser.add_argument("--alphas", default="iid,1.0,0.5,0.1")
    parser.add_argument("--seeds", default="0,1,2")
    parser.add_argument("--rounds", type=int, default=15)
    parser.add_argument("--clients", type=int, default=20)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--csv", type=Path, default=None, help="write every run here")
    args = parser.parse_args()
    rules, attacks = args.rules.split(","), args.attacks.split(",")
    alphas = [None if a == "iid" else float(a) for a in args.alphas.split(",")]
    shares = [float(s) for s in args.shares.split(",")]
    seeds = [int(s) for s in args.seeds.split(",")]
    jobs = [(r, a, al, sh, s, args.rounds, args.clients) for al in alphas for sh in shares for r in rules
            for a in attacks for s in seeds]
    t0 = time.perf_counter()
    from tqdm import tqdm

    with ProcessPoolExecutor(args.workers) as pool:
        rows = list(tqdm(pool.map(run_one, jobs, chunksize=4), total=len(jobs), desc="runs"))
    runs = pd.DataFrame(rows)
    if args.csv:
        args.csv.parent.mkdir(parents=True, exist_ok=True)
        runs.to_csv(args.csv, index=False)
    print(f"Final accuracy (/ attack success: targeted flip, backdoor) on digits, {args.clients} clients, "
          f"{args.rounds} rounds, seeds {seeds}; cells are means over seeds. ({time.perf_counter() - t0:.0f} s)")
    print(tables(runs, rules, attacks))
    if "default" in rules:
        print(bars(runs))


if __name__ == "__main__":
    main()
