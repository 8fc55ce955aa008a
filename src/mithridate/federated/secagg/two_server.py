"""The screened mean (our default rule) over secret shares held by two non-colluding servers: robust
aggregation where no server sees a single update.

One server that sees only the sum (:mod:`.protocol`) cannot screen anything; the screens need each update's
norm and direction. Published two-server designs give the servers just those numbers: BREA (So, Güler &
Avestimehr 2021) opens pairwise distances of secret-shared updates to run a robust rule, ELSA (Rathee,
Shen, Wagh & Popa 2023) has two servers check norm bounds on shares, and Prio (Corrigan-Gibbs & Boneh 2017)
shows how servers check that shared inputs are well formed. Here:

1. **Client.** It rounds its update to ``value_bits``-bit integers with ``frac_bits`` fractional bits
   (stochastically, so the sum is unbiased) and splits the *bits* of each value into two additive shares
   modulo 2^64: server A gets a 32-byte seed (its share is AES-256-CTR of it), server B the difference.
2. **Well-formed inputs.** With Beaver squares from a dealer, the servers compute shares of ``b^2 - b``
   for every bit and open ``checks`` random combinations of them per client (the challenge drawn after the
   client's shares arrived): all zero for an honest
   client; a client with any share that is not a bit is caught with chance ``1 - 2^-checks`` and left out
   (``invalid``). This is what makes the rest sound: every value lies in ``[-2^(k-1), 2^(k-1))``, so no
   inner product below wraps modulo 2^64 (without it a value of 2^63 has square 0 and passes any norm
   screen; ``tests/test_federated_two_server.py`` performs that attack).
3. **What is opened.** The Gram matrix of the updates (one Beaver matrix triple), each update's inner
   product with the public reference (last round's aggregate; linear, no triple), then, once the screens
   have run on those numbers in the clear (:func:`~mithridate.federated.aggregators.screened_mean.screen`),
   the weighted sum of the admitted updates. In the first round the reference is the geometric median of
   one update per group, found by Weiszfeld's iterations over the Gram matrix (the plain rule takes the
   coordinate-wise median, which would need the values).

What the servers learn: who sent a malformed message, then, among the clients that passed, the Gram
matrix (each update's norm, and its inner product with every other passing update), each update's inner
product with the reference, who was left out and why, and the aggregate; not an update. The Gram matrix
has a price one-server masking does not: a client the servers (or anyone colluding with them) control
contributes a row, and its row is the projection of every honest update onto a vector it chose, one
coordinate per such client per round if it sends a one-hot vector. The sum is opened only when at least
``min_admitted`` (3) clients were admitted; as with any secure aggregation, clients that are Sybils of the
servers can still subtract their own known updates from it.
Threat model: clients may send anything; the servers follow the protocol and collude neither with each
other nor with the dealer. Not built: Beaver material made by the two servers themselves (oblivious
transfer or homomorphic encryption) instead of a dealer, security against a cheating server (ELSA's
malicious-server variant), and a Flower transport (the simulator runs both servers in one process; each
server's steps read only its own shares and what was opened).

Resolution: values are rounded to ``2^-frac_bits`` (6e-5) and clipped to ``2^(value_bits-frac_bits-1)``
(32). Updates much smaller than the rounding (a median norm near ``2^-frac_bits * sqrt(d/6)``) make the
screens read noise; the round logs a warning, and ``frac_bits`` is a setting.

Cost per client and round: ``value_bits`` ring elements per parameter to server B (160 bytes a parameter
at 20 bits) and 32 bytes to server A; the servers exchange about as much again.

>>> rng = np.random.default_rng(0)
>>> honest = rng.normal(0.05, 0.01, (8, 40))
>>> flipped = -4 * honest[:2]  # two sign-flipping clients
>>> run = TwoServerScreenedMean(seed=0)
>>> agg = run.aggregate(np.vstack([honest, flipped]))
>>> bool(np.abs(agg - honest.mean(axis=0)).max() < 0.01), run.screened_[-2:].tolist()
(True, ['size', 'size'])
"""

from __future__ import annotations

import hashlib
import logging
import os
from dataclasses import dataclass

import numpy as np

from mithridate.errors import MithridateError
from mithridate.federated.aggregators.base import bound_weights, check_updates
from mithridate.federated.aggregators.screened_mean import ScreenedMean, screen
from mithridate.federated.secagg.protocol import prg

logger = logging.getLogger(__name__)


def random_ring(shape: tuple[int, ...], key: bytes | None = None) -> np.ndarray:
    """Uniform values modulo 2^64 (uint64) from AES-256-CTR keyed by ``key`` (a fresh random key if none)."""
    return prg(key or os.urandom(32), int(np.prod(shape)), 64).reshape(shape)


def encode(update: np.ndarray, frac_bits: int, value_bits: int, rng: np.random.Generator) -> np.ndarray:
    """The bits ``(d, value_bits)`` of each value rounded to ``frac_bits`` fractional bits (stochastically:
    unbiased), clipped to ``value_bits`` bits two's-complement and offset by ``2^(value_bits-1)``."""
    scaled = np.asarray(update, dtype=np.float64).reshape(-1) * 2.0 ** frac_bits
    low = np.floor(scaled)
    half = 1 << (value_bits - 1)
    q = np.clip(low + (rng.random(scaled.shape) < scaled - low), -half, half - 1).astype(np.int64) + half
    return ((q[:, None] >> np.arange(value_bits)) & 1).astype(np.uint64)


@dataclass(frozen=True)
class ClientShares:
    """What a client sends: ``seed`` to server A (its share is :func:`random_ring` of it), ``rest`` to B."""

    seed: bytes
    rest: np.ndarray  # (parameters, value_bits) uint64: the bits minus A's share, modulo 2^64


def share(update: np.ndarray, frac_bits: int = 14, value_bits: int = 20,
          rng: np.random.Generator | None = None) -> ClientShares:
    """A client's two shares of its update (see the module docstring)."""
    bits = encode(update, frac_bits, value_bits, rng or np.random.default_rng())
    seed = os.urandom(32)
    return ClientShares(seed, bits - random_ring(bits.shape, seed))


def split(values: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Two uniformly random additive shares of ``values`` modulo 2^64."""
    first = random_ring(values.shape)
    return first, values - first


def dealer_squares(shape: tuple[int, ...]) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Beaver squares ``(u, u^2)`` for one client's bits, as the two servers' shares. The dealer is a third
    party that colludes with neither server (the offline phase of a two-party computation)."""
    u = random_ring(shape)
    (u_a, u_b), (s_a, s_b) = split(u), split(u * u)
    return (u_a, s_a), (u_b, s_b)


def dealer_gram(n: int, d: int) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """One Beaver matrix triple ``(U, U U^T)`` for the Gram matrix of ``n`` clients' ``d`` values, as shares."""
    big_u = random_ring((n, d))
    (u_a, u_b), (w_a, w_b) = split(big_u), split(big_u @ big_u.T)
    return (u_a, w_a), (u_b, w_b)


def challenge(key: bytes, checks: int, length: int, block: int = 1 << 15):
    """The public random challenge ``(checks, length)``, drawn from ``key`` one column block at a time
    (memory ``checks x block``). Its entries are below 2^32: enough, since a check of a non-bit ``v = 2^t w``
    (w odd) modulo 2^64 passes for at most half of them (the challenge entry must be one of ``2^t``
    residues modulo ``2^(64-t)``)."""
    for number, start in enumerate(range(0, length, block)):
        width = min(block, length - start)
        sub = hashlib.sha256(key + number.to_bytes(8, "little")).digest()
        yield start, prg(sub, checks * width, 32).reshape(checks, width)


def well_formed(sent: object, d: int, k: int) -> bool:
    """Whether a client's message has the shape the servers expect (anything else is left out)."""
    return (isinstance(sent, ClientShares) and isinstance(sent.seed, bytes) and len(sent.seed) == 32
            and isinstance(sent.rest, np.ndarray) and sent.rest.dtype == np.uint64 and sent.rest.shape == (d, k))


class Server:
    """One server's side. It reads only its own shares and what was opened; each method returns this
    server's share of something, and the two shares are added (modulo 2^64) to open it."""

    def __init__(self, index: int, n: int, d: int, value_bits: int):
        self.index, self.value_bits = index, value_bits
        self.values = np.zeros((n, d), np.uint64)  # its share of each client's integer values

    def _public(self, value: np.ndarray) -> np.ndarray:
        """A public constant enters the sum through one server's share only."""
        return value if self.index == 0 else np.zeros_like(value)

    def receive(self, client: int, bits: np.ndarray, square: tuple[np.ndarray, np.ndarray]) -> np.ndarray:
        """Keep a client's bits and values (a linear function of them); return the share of ``e = b - u``
        to open (uniformly random, so it tells nothing)."""
        self._bits, self._square = bits, square
        weights = np.uint64(1) << np.arange(self.value_bits, dtype=np.uint64)
        offset = np.uint64(1 << (self.value_bits - 1))
        self.values[client] = (bits * weights).sum(axis=1, dtype=np.uint64) - self._public(offset)
        return bits - square[0]

    def bit_errors(self, opened: np.ndarray) -> np.ndarray:
        """Share of ``b^2 - b`` for each bit, flattened (zero for a 0 or a 1); ``b^2 = u^2 + 2 e u + e^2``
        with ``e = b - u`` opened. The servers open ``R (b^2 - b)`` for a public challenge ``R``."""
        u, u2 = self._square
        return (u2 + np.uint64(2) * opened * u + self._public(opened * opened) - self._bits).reshape(-1)

    def keep(self, rows: np.ndarray) -> None:
        """Drop the clients that failed the checks: nothing more is computed or opened about them."""
        self.values = self.values[rows]

    def masked_values(self, big_u: np.ndarray) -> np.ndarray:
        """Share of ``C - U`` (opened, uniformly random)."""
        return self.values - big_u

    def gram(self, opened: np.ndarray, big_u: np.ndarray, w: np.ndarray) -> np.ndarray:
        """Share of ``C C^T = W + E U^T + U E^T + E E^T`` with ``E = C - U`` opened."""
        return w + opened @ big_u.T + big_u @ opened.T + self._public(opened @ opened.T)

    def dots(self, vector: np.ndarray) -> np.ndarray:
        """Share of each client's inner product with a public integer vector."""
        return self.values @ vector

    def weighted_sum(self, weights: np.ndarray) -> np.ndarray:
        """Share of ``sum_i weights_i c_i`` for public integer weights."""
        return weights @ self.values


def gram_geometric_median(gram: np.ndarray, iterations: int = 100) -> np.ndarray:
    """Weights ``v`` (summing to 1) such that ``v @ X`` is the geometric median of the rows of ``X``, from
    their Gram matrix alone (Weiszfeld's iterations: each needs only distances to the current point).

    >>> x = np.array([[0.0, 0.0], [1.0, 0.0], [0.0, 1.0], [9.0, 9.0]])
    >>> (gram_geometric_median(x @ x.T) @ x).round(3)  # the far point pulls the mean, not the median
    array([0.5, 0.5])
    """
    n = len(gram)
    v = np.full(n, 1.0 / n)
    floor = 1e-9 * np.sqrt(max(float(np.diag(gram).max()), 1e-300))
    for _ in range(iterations):
        gv = gram @ v
        dist = np.sqrt(np.maximum(np.diag(gram) - 2 * gv + v @ gv, 0.0))
        inverse = 1.0 / np.maximum(dist, floor)
        new = inverse / inverse.sum()
        if np.abs(new - v).max() < 1e-10:
            return new
        v = new
    return v


def signed(opened: np.ndarray) -> np.ndarray:
    """Opened ring values read as two's-complement integers."""
    return np.ascontiguousarray(opened).view(np.int64)


class TwoServerScreenedMean:
    """Aggregate a round's updates with the screened mean run by two servers on secret shares.

    ``rule`` holds the screens' settings and the reference between rounds (``rule.reference_``).
    :meth:`aggregate` shares plain updates as honest clients would; :meth:`combine` takes what clients sent
    (:class:`ClientShares`, any of which may be malformed). After each round ``screened_`` gives the
    reason each client was left out (``invalid``, ``size``, ``direction``; ``""`` kept), and ``opened_``
    what the servers learnt besides the aggregate.
    """

    def __init__(self, rule: ScreenedMean | None = None, frac_bits: int = 14, value_bits: int = 20,
                 checks: int = 40, min_admitted: int = 3, dropout: float = 0.0, seed: int | None = None):
        if not 2 <= value_bits <= 31 or not 0 <= frac_bits < value_bits:
            raise MithridateError(f"need 2 <= value_bits <= 31 and 0 <= frac_bits < value_bits, got {value_bits} "
                                  f"and {frac_bits}")
        if checks < 1 or min_admitted < 2:
            raise MithridateError(f"need checks >= 1 and min_admitted >= 2, got {checks} and {min_admitted}")
        if not 0 <= dropout < 0.5:
            raise MithridateError(f"dropout must be a share in [0, 0.5), got {dropout}")
        self.rule = rule if rule is not None else ScreenedMean()
        self.frac_bits, self.value_bits, self.checks, self.dropout = frac_bits, value_bits, checks, dropout
        self.min_admitted = min_admitted
        self._rng = np.random.default_rng(seed)
        self.log_: list[dict] = []

    def aggregate(self, updates: np.ndarray, rnd: int | None = None) -> np.ndarray:
        """Share each row as its client would (a client drops with chance ``dropout``) and combine."""
        x = check_updates(updates).astype(np.float64)
        live = np.flatnonzero(self._rng.random(len(x)) >= self.dropout)
        sent = [share(x[i], self.frac_bits, self.value_bits, self._rng) for i in live]
        agg = self.combine(sent, x.shape[1])
        screened = np.full(len(x), "dropped", dtype=object)
        screened[live] = self.screened_
        self.screened_ = screened
        self.log_.append({"round": rnd, "survivors": len(live), "left_out": int((self.screened_ != "").sum()),
                          "opened": self.opened_["sum"]})
        return agg

    def combine(self, sent: list, dims: int, counts=None) -> np.ndarray:
        """The aggregate of what clients sent, for a model of ``dims`` parameters (the servers' own
        knowledge, never a client's); ``counts``: the clients' self-reported example counts (bounded)."""
        k, d, n = self.value_bits, int(dims), len(sent)
        if n < 3:
            raise MithridateError(f"the two-server protocol needs at least 3 clients, got {n}")
        if d < 1 or d * 4.0 ** (k - 1) >= 2.0 ** 62:
            raise MithridateError(f"{d} parameters at {k} value bits: need at least 1, and few enough that the "
                                  "Gram matrix cannot overflow (use fewer value bits)")
        self.rule.resolve_malicious(n)
        if self.rule.max_norm_ratio < 1:
            raise MithridateError(f"screened_mean max_norm_ratio must be >= 1, got {self.rule.max_norm_ratio}")
        a, b = Server(0, n, d, k), Server(1, n, d, k)
        valid = np.zeros(n, dtype=bool)
        for i, s in enumerate(sent):
            if not well_formed(s, d, k):
                continue  # left out as invalid
            square_a, square_b = dealer_squares((d, k))
            e = a.receive(i, random_ring((d, k), s.seed), square_a) + b.receive(i, s.rest, square_b)
            error_a, error_b = a.bit_errors(e), b.bit_errors(e)
            coins = hashlib.sha256(os.urandom(32) + os.urandom(32)).digest()  # each server's coin, drawn now
            opened = np.zeros(self.checks, np.uint64)
            for start, block in challenge(coins, self.checks, d * k):  # each server applies it to its share
                end = start + block.shape[1]
                opened += block @ error_a[start:end] + block @ error_b[start:end]
            valid[i] = not opened.any()
        rows = np.flatnonzero(valid)
        reason = np.full(n, "invalid", dtype=object)
        self.screened_, self.opened_ = reason, {"invalid": np.flatnonzero(~valid).tolist(), "gram": None,
                                                "reference_dots": None, "sum": False}
        if not len(rows):
            return np.zeros(d)
        a.keep(rows)
        b.keep(rows)
        (u_a, w_a), (u_b, w_b) = dealer_gram(len(rows), d)
        big_e = a.masked_values(u_a) + b.masked_values(u_b)
        scale = 2.0 ** self.frac_bits
        g = signed(a.gram(big_e, u_a, w_a) + b.gram(big_e, u_b, w_b)).astype(np.float64) / scale ** 2
        norms = np.sqrt(np.maximum(np.diag(g), 0.0))
        if np.median(norms) < 8 * np.sqrt(d / 6) / scale:
            logger.warning("the updates' median norm %.3g is near the rounding of %d fractional bits: the screens "
                           "read rounding noise (use more frac_bits)", np.median(norms), self.frac_bits)
        reference = getattr(self.rule, "reference_", None) if self.rule.stateful else None
        cos = dots = None
        if reference is not None and np.shape(reference) == (d,) and np.any(reference):
            half = 1 << (k - 1)
            r = np.clip(np.round(np.asarray(reference) * scale), -half, half - 1).astype(np.int64)
            if np.any(r):
                ring = r.astype(np.uint64)
                dots = signed(a.dots(ring) + b.dots(ring)).astype(np.float64) / scale ** 2
                cos = cosine(dots, norms, float(np.linalg.norm(r)) / scale)
        reason[rows], groups = screen(
            norms, lambda sub: squared_distances(g[np.ix_(sub, sub)]), cos,
            lambda first: robust_cosines(g, first, norms),
            self.rule.max_norm_ratio, self.rule.duplicate_ratio, self.rule.min_cosine)
        self.opened_.update(gram=g, reference_dots=dots)
        w = bound_weights(None if counts is None else np.asarray(counts)[rows], len(rows), self.rule.max_weight_ratio)
        weights = np.where(reason[rows] == "", w / groups, 0.0)
        if (weights > 0).sum() < self.min_admitted:  # a sum of one or two updates would reveal them
            return np.zeros(d)
        q = np.round(weights / weights.max() * (1 << 16)).astype(np.uint64)
        total = signed(a.weighted_sum(q) + b.weighted_sum(q))
        agg = total.astype(np.float64) / (float(q.sum()) * scale)
        self.opened_["sum"] = True
        if self.rule.stateful and np.any(agg):
            self.rule.reference_ = agg
        return agg


def squared_distances(gram: np.ndarray) -> np.ndarray:
    """Squared distances between the rows whose Gram matrix is given."""
    sq = np.diag(gram)
    return np.maximum(sq[:, None] + sq[None, :] - 2 * gram, 0.0)


def cosine(dots: np.ndarray, norms: np.ndarray, other_norm: float) -> np.ndarray:
    """Cosines from inner products and norms (0 where a norm is 0)."""
    scale = norms * other_norm
    return np.divide(dots, scale, out=np.zeros_like(dots), where=scale > 0)


def robust_cosines(gram: np.ndarray, first: np.ndarray, norms: np.ndarray) -> np.ndarray:
    """Each row's cosine with the geometric median of the rows marked ``first``, from the Gram matrix."""
    sub = np.flatnonzero(first)
    v = np.zeros(len(gram))
    v[sub] = gram_geometric_median(gram[np.ix_(sub, sub)])
    gv = gram @ v
    return cosine(gv, norms, float(np.sqrt(max(v @ gv, 0.0))))
