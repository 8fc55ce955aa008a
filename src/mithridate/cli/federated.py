"""``mithridate fl``: federated learning defences (simulate robust aggregation, DP and secure aggregation)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated

import typer

from mithridate.cli.app import app, check_writable, console, user_errors
from mithridate.errors import MithridateError

fl_app = typer.Typer(rich_markup_mode="markdown", no_args_is_help=True,
                     help="Federated learning defences: robust aggregation, DP and secure aggregation under "
                     "simulated malicious clients.")
app.add_typer(fl_app, name="fl")


@fl_app.command("simulate")
def simulate_cmd(
    out: Annotated[Path, typer.Option("--out", help="Folder for results.json and accuracy.png.")],
    aggregator: Annotated[str, typer.Option(help="Aggregation rule: default (screened_mean), mean, median, "
                                            "trimmed_mean, krum, multi_krum, bulyan, geometric_median, "
                                            "centered_clipping, norm_bound, fltrust, nnm_<rule>.")] = "default",
    attack: Annotated[str, typer.Option(help="Malicious clients: none, label_flip, targeted_flip, sign_flip, "
                                        "gaussian, alie, ipm, min_max, min_sum, backdoor.")] = "none",
    malicious: Annotated[float, typer.Option(help="Share of malicious clients.")] = 0.2,
    clients: Annotated[int, typer.Option(help="Number of clients.")] = 20,
    rounds: Annotated[int, typer.Option(help="Federated rounds.")] = 20,
    num_malicious: Annotated[int | None, typer.Option(
        help="Malicious clients the rule should withstand (default: the most it can).")] = None,
    alpha: Annotated[float | None, typer.Option(help="Dirichlet label skew (default: IID shards).")] = None,
    dp_epsilon: Annotated[float | None, typer.Option(help="Client-level DP: target epsilon over all rounds.")] = None,
    dp_delta: Annotated[float, typer.Option(help="Client-level DP: delta.")] = 1e-5,
    dp_clip: Annotated[float, typer.Option(help="Client-level DP: L2 clip of each update.")] = 0.5,
    dp_adaptive_clip: Annotated[bool, typer.Option(help="Adapt the clip to the median update norm.")] = False,
    secure: Annotated[bool, typer.Option(help="Secure aggregation: no server sees a client's update.")] = False,
    protocol: Annotated[str, typer.Option("--secure-protocol", help=(
        "With --secure: two-server (the default rule's screens run on secret shares held by two "
        "non-colluding servers, which learn the updates' inner products, not the updates), masking (one "
        "server that sees only the sum; linear rules only) or auto (two-server for the default rule "
        "without DP, masking otherwise)."))] = "auto",
    dropout: Annotated[float, typer.Option(help="With --secure: share of clients that drop each round.")] = 0.0,
    dataset: Annotated[str, typer.Option(help="Image demo dataset.")] = "digits",
    seed: Annotated[int, typer.Option(help="Random seed.")] = 0,
    allow_beyond: Annotated[bool, typer.Option(help="Train even when the malicious share is beyond what the rule "
                                               "is built to withstand (a red-team demonstration).")] = False,
) -> None:
    """Simulate federated training on digits with malicious clients; print accuracy and attack success per
    round; write OUT/results.json (final_accuracy, attack_success_rate, epsilon, per-round history) and
    OUT/accuracy.png."""
    with user_errors():
        from mithridate.federated.dp import ClientDP
        from mithridate.federated.simulate import Simulation

        check_writable("--out", out, folder=True)
        from mithridate.federated.simulate import rule_for, secure_protocol

        if protocol != "auto" and not secure:
            raise MithridateError("--secure-protocol chooses how --secure runs: add --secure")
        chosen = secure_protocol(aggregator, (True if protocol == "auto" else protocol) if secure else False,
                                 dp=dp_epsilon is not None)
        name, agg_options, why = rule_for(aggregator, private=dp_epsilon is not None or chosen == "masking",
                                          num_malicious=num_malicious)
        if chosen == "two-server":
            why = ("under --secure the default rule's screens run on secret shares held by two non-colluding "
                   "servers: they learn the updates' inner products with one another, not the updates "
                   "(docs/federated.md); --secure-protocol masking for one server that sees only the sum")
        if why:
            console.print(f"note: {why}", highlight=False)
        if dropout and not secure:
            raise MithridateError("--dropout simulates clients dropping out of secure aggregation: add --secure")
        if attack != "none":
            from mithridate.federated.aggregators import make_aggregator

            rule = make_aggregator(name, **agg_options)
            n_bad, most = round(malicious * clients), rule.max_malicious(clients)
            if n_bad > most:
                beyond = (f"{n_bad} malicious clients of {clients} is beyond what {rule.name} is built to withstand "
                          f"(at most {most}: {rule.requirement()})")
                if not allow_beyond:
                    raise MithridateError(f"{beyond}: choose a rule that tolerates more, fewer malicious clients, "
                                          "or --allow-beyond to watch it fail")
                console.print(f"note: {beyond}; expect it to fail", highlight=False)
        dp = None
        if dp_epsilon is not None:
            dp = ClientDP(dp_epsilon, dp_delta, clip=dp_clip, adaptive_clip=dp_adaptive_clip, random_state=seed)
        sim = Simulation(name, attack, malicious=malicious, clients=clients, rounds=rounds, alpha=alpha,
                         dp=dp, secure=chosen or False, dropout=dropout, dataset=dataset, seed=seed,
                         aggregator_options=agg_options)

        def show(r) -> None:
            parts = [f"round {r.round:3d}", f"accuracy {r.accuracy:.3f}"]
            if r.attack_success is not None:
                parts.append(f"attack success {r.attack_success:.3f}")
            if r.epsilon is not None:
                parts.append(f"epsilon {r.epsilon:.3f}")
            if r.excluded:
                parts.append(f"excluded {r.excluded}")
            typer.echo("  ".join(parts))

        result = sim.run(show)
    out.mkdir(parents=True, exist_ok=True)
    from mithridate.data import atomic_path

    with atomic_path(out / "results.json") as tmp:
        tmp.write_text(json.dumps(result.to_dict(), indent=2, default=str))
    from mithridate.report.plots import training_curve

    training_curve(result.history, out / "accuracy.png", f"{result.aggregator} vs {result.attack} "
                   f"({len(result.malicious_ids)}/{clients} malicious)")
    summary = f"final accuracy {result.final_accuracy:.3f}"
    if result.attack_success_rate is not None:
        summary += f", attack success {result.attack_success_rate:.3f}"
    if result.epsilon is not None:
        summary += f", epsilon {result.epsilon:.3f} (delta {dp_delta:g})"
    typer.echo(f"{summary}; wrote {out / 'results.json'} and {out / 'accuracy.png'}")
