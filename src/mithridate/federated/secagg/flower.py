"""Secure aggregation on Flower's Message API: a server loop for ``@app.main()`` and a staged client mod.

Server (in your ``ServerApp``)::

    from mithridate.federated.secagg.flower import secure_fedavg

    @app.main()
    def main(grid, context):
        result = secure_fedavg(grid, initial_arrays, num_rounds=10, clip=1.0, dropout=0.1)

Client (in your ``ClientApp``)::

    from mithridate.federated.secagg.flower import secagg_mod
    app = ClientApp(mods=[secagg_mod])

Each round runs the four stages of :mod:`.protocol` as four ``grid.send_and_receive`` exchanges of
``train`` messages. The mod answers the key, share and unmasking stages itself and calls the app's own
``train`` function only in the masked-input stage, where it turns the reply into an update (reply minus
received model), clips it, adds its share of DP noise if asked, quantises and masks it, and replies with
the packed masked vector: the server never sees a model. The client's secrets live in ``context.state``
between stages. A node that fails or does not answer in time counts as dropped; the protocol recovers it
or aborts the round (the global model then stays as it was).

Only rules linear in what clients send run here: the clipped mean, or centered clipping with one
iteration (``centered=True``: clients clip their deviation from the previous aggregate, sent with the
model). Median, Krum and the other rules that compare individual updates cannot, since individual updates
are exactly what the server must not see.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from logging import INFO, WARNING

import numpy as np
from flwr.app import ArrayRecord, ConfigRecord, Context, Message, MessageType, MetricRecord, RecordDict
from flwr.clientapp.typing import ClientAppCallable
from flwr.serverapp import Grid
from flwr.supercore import log

from mithridate.federated.dp import ClientDP
from mithridate.federated.flower import flatten, unflatten
from mithridate.federated.secagg.protocol import Plan, ProtocolAbort, SecAggClient, SecAggServer, plan

KEY = "mithridate-secagg"
STATE = "mithridate.secagg"


@dataclass
class SecureResult:
    arrays: ArrayRecord
    rounds: list[dict] = field(default_factory=list)


def _send(grid: Grid, per_node: dict[int, RecordDict], timeout: float) -> dict[int, RecordDict]:
    msgs = [Message(content=c, dst_node_id=node, message_type=MessageType.TRAIN) for node, c in per_node.items()]
    out = {}
    for reply in grid.send_and_receive(msgs, timeout=timeout):
        if not reply.has_error():
            out[reply.metadata.src_node_id] = reply.content
    return out


def _stage(p: Plan, cid: int, stage: str, **extra) -> ConfigRecord:
    return ConfigRecord({"stage": stage, "cid": cid, **p.to_dict(), **extra})


def secure_fedavg(grid: Grid, initial_arrays: ArrayRecord, num_rounds: int, clip: float, dropout: float = 0.1,
                  value_bits: int = 16, dp: ClientDP | None = None, centered: bool = False,
                  train_config: ConfigRecord | None = None, timeout: float = 600.0,
                  evaluate_fn=None) -> SecureResult:
    """Federated averaging where the server only learns the sum of the clipped, quantised updates."""
    arrays = initial_arrays
    base = flatten(arrays)
    n_nodes = len(list(grid.get_node_ids()))
    if dp is not None:
        from mithridate.federated.aggregators import CenteredClipping, Mean

        dp.prepare(CenteredClipping(iterations=1) if centered else Mean(), n_nodes, num_rounds)
    center = None
    result = SecureResult(arrays)
    for rnd in range(1, num_rounds + 1):
        t0 = time.perf_counter()
        nodes = sorted(grid.get_node_ids())
        cid = {node: i for i, node in enumerate(nodes)}
        c = dp.clip_ if dp is not None else clip
        pl = plan(len(nodes), base.size, c, dropout=dropout, value_bits=value_bits)
        if dp is not None:
            sigma = dp.update_noise_multiplier_ * c / np.sqrt(pl.threshold)
            pl = plan(len(nodes), base.size, c, dropout, value_bits, noise_std=sigma, session=pl.session)
        server = SecAggServer(pl)
        info = {"round": rnd, "clients": len(nodes), "degree": pl.degree, "threshold": pl.threshold,
                "bits": pl.bits}
        try:
            replies = _send(grid, {n: RecordDict({KEY: _stage(pl, cid[n], "advertise")}) for n in nodes}, timeout)
            keys = {cid[n]: (bytes(r[KEY]["c-pk"]), bytes(r[KEY]["s-pk"])) for n, r in replies.items()}
            per = server.collect_keys(keys)
            msgs = {}
            for n in nodes:
                if cid[n] in per:
                    ids = list(per[cid[n]])
                    msgs[n] = RecordDict({KEY: _stage(pl, cid[n], "share", ids=ids,
                                                      **{"c-pk": [per[cid[n]][v][0] for v in ids],
                                                         "s-pk": [per[cid[n]][v][1] for v in ids]})})
            replies = _send(grid, msgs, timeout)
            routed = server.route_shares({cid[n]: dict(zip(r[KEY]["to"], r[KEY]["ct"], strict=True))
                                          for n, r in replies.items()})
            config = ConfigRecord(dict(train_config or {}))
            config["server-round"] = rnd
            msgs = {}
            for n in nodes:
                if cid[n] in routed and routed[cid[n]]:
                    content = {"arrays": arrays, "config": config,
                               KEY: _stage(pl, cid[n], "masked", ids=list(routed[cid[n]]),
                                           ct=list(routed[cid[n]].values()))}
                    if centered and center is not None:
                        content["center"] = unflatten(center, arrays)
                    msgs[n] = RecordDict(content)
            replies = _send(grid, msgs, timeout)
            survivors, dropped = server.collect_masked({cid[n]: bytes(r[KEY]["masked"]) for n, r in replies.items()})
            msgs = {n: RecordDict({KEY: _stage(pl, cid[n], "unmask", survivors=sorted(survivors),
                                               dropped=sorted(dropped) or [-1])})
                    for n in nodes if cid[n] in survivors}
            replies = _send(grid, msgs, timeout)
            responses = {cid[n]: {int(v): (k, bytes(s)) for v, k, s in
                                  zip(r[KEY]["ids"], r[KEY]["kinds"], r[KEY]["shares"], strict=True) if v != -1}
                         for n, r in replies.items()}
            total, count = server.finish(responses)
        except ProtocolAbort as exc:
            log(WARNING, "secure aggregation round %d aborted: %s", rnd, exc)
            info["aborted"] = str(exc)
            result.rounds.append(info)
            continue
        if dp is not None:
            dp.center_ = center
            agg = dp.finish(total, None, noisy=False)
            info["epsilon"] = dp.epsilon_spent()
        else:
            agg = total / count + (center if center is not None else 0.0)
        if centered:
            center = agg
        base = base + agg
        arrays = unflatten(base, initial_arrays)
        info.update(survivors=count, dropped=len(dropped), seconds=time.perf_counter() - t0)
        if evaluate_fn is not None:
            info["evaluation"] = evaluate_fn(rnd, arrays)
        log(INFO, "secure aggregation round %d: %s", rnd, info)
        result.rounds.append(info)
        result.arrays = arrays
    return result


def secagg_mod(message: Message, context: Context, call_next: ClientAppCallable) -> Message:
    """The client side of :func:`secure_fedavg`; passes any other message through unchanged."""
    if KEY not in message.content.config_records:
        return call_next(message, context)
    cfg = message.content[KEY]
    stage, cid = str(cfg["stage"]), int(cfg["cid"])
    pl = Plan.from_dict(cfg)
    if stage == "advertise":
        client = SecAggClient(cid, pl)
        c_pk, s_pk = client.advertise()
        out = ConfigRecord({"c-pk": c_pk, "s-pk": s_pk})
    else:
        state = context.state.config_records.get(STATE)
        if state is None or bytes(state["session"]) != pl.session:
            raise ProtocolAbort("secure aggregation: no keys for this session on this client")
        client = SecAggClient.restore(cid, pl, state)
        if stage == "share":
            keys = {int(v): (bytes(a), bytes(b)) for v, a, b in zip(cfg["ids"], cfg["c-pk"], cfg["s-pk"], strict=True)}
            cts = client.share_keys(keys)
            out = ConfigRecord({"to": list(cts), "ct": list(cts.values())})
        elif stage == "masked":
            plain = RecordDict({k: v for k, v in message.content.items() if k not in (KEY, "center")})
            reply = call_next(_inner(message, plain), context)
            if reply.has_error():
                return reply
            sent = message.content["arrays"]
            update = flatten(reply.content[next(iter(reply.content.array_records))]) - flatten(sent)
            if "center" in message.content.array_records:
                update = update - flatten(message.content["center"])
            ids = [int(v) for v in cfg["ids"]]
            masked = client.masked_input(dict(zip(ids, [bytes(c) for c in cfg["ct"]], strict=True)), update)
            out = ConfigRecord({"masked": masked})
            metrics = next(iter(reply.content.metric_records.values()), MetricRecord())
            context.state[STATE] = ConfigRecord({**client.export(), "session": pl.session})
            return Message(content=RecordDict({KEY: out, "metrics": metrics}), reply_to=message)
        elif stage == "unmask":
            dropped = {int(v) for v in cfg["dropped"]} - {-1}
            shares = client.unmask({int(v) for v in cfg["survivors"]}, dropped)
            out = ConfigRecord({"ids": list(shares) or [-1], "kinds": [k for k, _ in shares.values()] or ["-"],
                                "shares": [s for _, s in shares.values()] or [b""]})
        else:
            raise ProtocolAbort(f"unknown secure aggregation stage {stage!r}")
    context.state[STATE] = ConfigRecord({**client.export(), "session": pl.session})
    return Message(content=RecordDict({KEY: out}), reply_to=message)


def _inner(message: Message, content: RecordDict) -> Message:
    """The same message with the secure-aggregation records removed, for the app's train function."""
    from flwr.app.message.message import make_message

    return make_message(message.metadata, content)
