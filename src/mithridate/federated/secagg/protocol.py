"""Secure aggregation (Bonawitz, Ivanov, Kreuter, Marcedone, McMahan, Patel, Ramage, Segal & Seth 2017,
"Practical secure aggregation for privacy-preserving machine learning"), over a sparse share graph as in
SecAgg+ (Bell, Bonawitz, Gascón, Lepoint & Raykova 2020, "Secure single-server aggregation with
(poly)logarithmic overhead"). The server learns the sum of the clients' clipped, quantised updates and
nothing else; clients that drop out are recovered; too many dropouts abort the round without revealing
anything.

Standard primitives from ``cryptography``: X25519 key agreement, HKDF-SHA256, AES-256-CTR as the mask PRG
keyed by the *full* 32-byte agreed secret (no folding into a small seed), ChaCha20-Poly1305 authenticated
encryption of the secret shares (the sender, receiver and session are bound as associated data), and Shamir
sharing over GF(2^521 - 1) (:mod:`.shamir`). This module is federated learning's one fence around them, as
:mod:`mithridate.vault.primitives` is the vault's: no other module of ``federated/`` imports
``cryptography`` (``tests/test_architecture.py`` checks both fences).

Stages (one server request and one client reply each):

0. **advertise**: client ``u`` makes two X25519 pairs, ``c`` (channel) and ``s`` (masks), sends the public keys.
1. **share keys**: ``u`` draws a self-mask seed ``b_u``, Shamir-shares ``b_u`` and ``s_sk_u`` among its
   graph neighbours (threshold ``t``), encrypts each neighbour's shares; the server only routes them.
2. **masked input**: ``u`` clips its update to L2 norm ``clip`` (so every coordinate is in
   ``[-clip, clip]``), optionally adds its share of DP noise, quantises it with stochastic rounding to
   ``value_bits`` bits, and sends ``y_u = x_u + PRG(b_u) + sum_{v>u} PRG(s_uv) - sum_{v<u} PRG(s_uv)`` modulo
   ``2^bits`` with ``bits = value_bits + ceil(log2 n)``, the fewest that keep the sum exact, packed to
   exactly ``bits`` bits per value (not int64).
3. **unmask**: the server names the survivors (sent ``y``) and the dropped (shared keys, sent no ``y``);
   each survivor returns, per neighbour, the ``b`` share of survivors and the ``s_sk`` share of dropped ones.
   A client refuses when the two sets overlap, when fewer than ``t`` survived, or when asked a second time:
   an honest client never gives out both shares of one client, so with ``t > k/2`` the server can never
   reconstruct both ``b_v`` and ``s_sk_v`` and unmask a single client's update.

The share graph (a random Harary graph of even degree ``k``, derived from the public session id) and the
threshold ``t = floor(k/2) + 1`` are chosen by :func:`plan` from the expected dropout rate: the smallest
``k`` for which the chance that some client keeps fewer than ``t`` live neighbours stays below
``max_abort`` (e.g. 100 clients: ``k = 20`` at no dropout, about 40 at 10%, the complete graph at 30%).

Threat model: honest-but-curious server and clients (the server may lie about dropouts, which the
refusals above handle). Not implemented: the consistency-check round and signatures of the actively
malicious version (they need a PKI), and proofs that a client's input is really clipped, so a malicious
client can send any value modulo ``2^bits`` (the norm bound is enforced by the honest client code only).
"""

from __future__ import annotations

import hashlib
import math
import os
import struct
from dataclasses import dataclass, field

import numpy as np
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric.x25519 import X25519PrivateKey, X25519PublicKey
from cryptography.hazmat.primitives.ciphers import Cipher, algorithms, modes
from cryptography.hazmat.primitives.ciphers.aead import ChaCha20Poly1305
from cryptography.hazmat.primitives.kdf.hkdf import HKDF
from scipy.stats import binom

from mithridate.errors import MithridateError
from mithridate.federated.secagg import shamir


class ProtocolAbort(MithridateError, RuntimeError):
    """The round cannot finish safely (too many dropouts, or a request that would reveal an input)."""


# -- planning ------------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Plan:
    """Public parameters of one secure-aggregation round."""

    n_clients: int
    dims: int
    degree: int
    threshold: int
    clip: float
    value_bits: int
    bits: int
    session: bytes
    noise_std: float = 0.0
    abort_probability: float = 0.0
    range_: float = field(default=0.0)

    def to_dict(self) -> dict:
        return {"n": self.n_clients, "dims": self.dims, "degree": self.degree, "threshold": self.threshold,
                "clip": float(self.clip), "value-bits": self.value_bits, "bits": self.bits, "session": self.session,
                "noise-std": float(self.noise_std), "abort": float(self.abort_probability), "range": float(self.range_)}

    @classmethod
    def from_dict(cls, d) -> Plan:
        return cls(int(d["n"]), int(d["dims"]), int(d["degree"]), int(d["threshold"]), float(d["clip"]),
                   int(d["value-bits"]), int(d["bits"]), bytes(d["session"]), float(d["noise-std"]),
                   float(d["abort"]), float(d["range"]))

    def neighbours(self, u: int) -> list[int]:
        """``u``'s neighbours in the session's random Harary graph of degree ``degree``."""
        return _graph(self.session, self.n_clients, self.degree)[u]


_GRAPHS: dict = {}


def _graph(session: bytes, n: int, k: int) -> list[list[int]]:
    key = (session, n, k)
    if key not in _GRAPHS:
        seed = int.from_bytes(hashlib.sha256(b"graph" + session).digest()[:8], "big")
        perm = np.random.default_rng(seed).permutation(n)
        pos = np.empty(n, int)
        pos[perm] = np.arange(n)
        half = k // 2
        out = []
        for u in range(n):
            i = pos[u]
            ring = {int(perm[(i + d) % n]) for d in range(-half, half + 1) if d != 0}
            if k % 2 and n % 2 == 0:
                ring.add(int(perm[(i + n // 2) % n]))
            out.append(sorted(ring))
        _GRAPHS.clear()
        _GRAPHS[key] = out
    return _GRAPHS[key]


def plan(n_clients: int, dims: int, clip: float, dropout: float = 0.1, value_bits: int = 16,
         max_abort: float = 1e-3, noise_std: float = 0.0, session: bytes | None = None) -> Plan:
    """Choose the share graph degree ``k`` and threshold ``t`` for ``n_clients`` expecting ``dropout``."""
    if n_clients < 3:
        raise MithridateError(f"secure aggregation needs at least 3 clients, got {n_clients}")
    if not 0 <= dropout < 0.5:
        raise MithridateError(f"expected dropout must be in [0, 0.5), got {dropout}")
    if clip <= 0:
        raise MithridateError(f"clip must be > 0, got {clip}")
    floor = min(n_clients - 1, max(4, math.ceil(3 * math.log2(n_clients))))
    chosen = None
    for k in range(floor, n_clients):
        if k % 2 and k != n_clients - 1:
            continue
        t = k // 2 + 1
        risk = min(1.0, n_clients * float(binom.cdf(t - 1, k, 1 - dropout)))
        chosen = (k, t, risk)
        if risk <= max_abort:
            break
    k, t, risk = chosen
    bits = value_bits + math.ceil(math.log2(n_clients))
    if bits > 62:
        raise MithridateError("value_bits too large for 64-bit arithmetic")
    rng = clip + (6 * noise_std if noise_std > 0 else 0.0)
    return Plan(n_clients, dims, k, t, clip, value_bits, bits, session or os.urandom(16), noise_std, risk, rng)


# -- primitives -------------------------------------------------------------------------------------------

def _hkdf(secret: bytes, info: bytes, salt: bytes) -> bytes:
    return HKDF(algorithm=hashes.SHA256(), length=32, salt=salt, info=info).derive(secret)


def _raw(pub: X25519PublicKey) -> bytes:
    return pub.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)


def prg(key: bytes, dims: int, bits: int) -> np.ndarray:
    """``dims`` uniform values modulo ``2^bits`` from AES-256-CTR keyed by the 32-byte ``key``."""
    width = 4 if bits <= 32 else 8
    enc = Cipher(algorithms.AES(key), modes.CTR(b"\0" * 16)).encryptor()
    raw = enc.update(b"\0" * (dims * width)) + enc.finalize()
    vals = np.frombuffer(raw, dtype="<u4" if width == 4 else "<u8").astype(np.uint64)
    return vals & np.uint64((1 << bits) - 1)


def pack(values: np.ndarray, bits: int) -> bytes:
    """Values below ``2^bits`` packed to exactly ``bits`` bits each."""
    le = np.ascontiguousarray(values.astype("<u8")).view(np.uint8).reshape(-1, 8)
    return np.packbits(np.unpackbits(le, axis=1, bitorder="little")[:, :bits], bitorder="little").tobytes()


def unpack(data: bytes, bits: int, dims: int) -> np.ndarray:
    flat = np.unpackbits(np.frombuffer(data, np.uint8), bitorder="little")[:dims * bits].reshape(dims, bits)
    full = np.zeros((dims, 64), np.uint8)
    full[:, :bits] = flat
    return np.packbits(full, axis=1, bitorder="little").view("<u8").reshape(dims)


def quantise(x: np.ndarray, plan: Plan, rng: np.random.Generator) -> np.ndarray:
    """Stochastic rounding of ``[-range, range]`` to the integers ``0 .. 2^value_bits - 1`` (unbiased)."""
    levels = (1 << plan.value_bits) - 1
    r = plan.range_
    scaled = (np.clip(x, -r, r) + r) / (2 * r) * levels
    low = np.floor(scaled)
    return (low + (rng.random(x.shape) < scaled - low)).astype(np.uint64)


def dequantise_sum(total: np.ndarray, count: int, plan: Plan) -> np.ndarray:
    levels = (1 << plan.value_bits) - 1
    return total.astype(np.float64) / levels * (2 * plan.range_) - count * plan.range_


def _mod_add(a: np.ndarray, b: np.ndarray, mask: np.uint64) -> np.ndarray:
    return (a + b) & mask


def _mod_sub(a: np.ndarray, b: np.ndarray, mask: np.uint64) -> np.ndarray:
    return (a - b) & mask  # uint64 wraps modulo 2^64, a multiple of 2^bits


# -- client -----------------------------------------------------------------------------------------------

class SecAggClient:
    """One client's side of the protocol (state kept between the stages)."""

    def __init__(self, cid: int, plan: Plan, seed: int | None = None):
        self.cid, self.plan = cid, plan
        self._rng = np.random.default_rng(seed)
        self._revealed = False

    def export(self) -> dict:
        """The client's secret state between stages (for a store such as Flower's ``context.state``)."""
        raw = serialization.Encoding.Raw, serialization.PrivateFormat.Raw, serialization.NoEncryption()
        out = {"c": self._c.private_bytes(*raw), "s": self._s.private_bytes(*raw), "revealed": self._revealed}
        if hasattr(self, "_keys"):
            out["key-ids"] = list(self._keys)
            out["c-pk"] = [k[0] for k in self._keys.values()]
            out["s-pk"] = [k[1] for k in self._keys.values()]
            out["b"] = self._b
        if hasattr(self, "_shares"):
            out["share-ids"] = list(self._shares)
            out["shares"] = list(self._shares.values())
        return out

    @classmethod
    def restore(cls, cid: int, plan: Plan, state, seed: int | None = None) -> SecAggClient:
        c = cls(cid, plan, seed)
        c._c = X25519PrivateKey.from_private_bytes(bytes(state["c"]))
        c._s = X25519PrivateKey.from_private_bytes(bytes(state["s"]))
        c._revealed = bool(state["revealed"])
        if "key-ids" in state:
            c._keys = {int(v): (bytes(a), bytes(b)) for v, a, b in
                       zip(state["key-ids"], state["c-pk"], state["s-pk"], strict=True)}
            c._b = bytes(state["b"])
        if "share-ids" in state:
            c._shares = {int(v): bytes(b) for v, b in zip(state["share-ids"], state["shares"], strict=True)}
        return c

    def advertise(self) -> tuple[bytes, bytes]:
        self._c = X25519PrivateKey.generate()
        self._s = X25519PrivateKey.generate()
        return _raw(self._c.public_key()), _raw(self._s.public_key())

    def _channel(self, v: int, c_pk: bytes) -> ChaCha20Poly1305:
        shared = self._c.exchange(X25519PublicKey.from_public_bytes(c_pk))
        return ChaCha20Poly1305(_hkdf(shared, b"mithridate-secagg-channel", self.plan.session))

    def _ad(self, sender: int, receiver: int) -> bytes:
        return self.plan.session + struct.pack(">II", sender, receiver)

    def share_keys(self, keys: dict[int, tuple[bytes, bytes]]) -> dict[int, bytes]:
        """``keys``: the advertised ``(c_pk, s_pk)`` of this client's live neighbours. Returns one
        ciphertext per neighbour holding its shares of ``b_u`` and ``s_sk_u``."""
        p = self.plan
        self._keys = {v: keys[v] for v in p.neighbours(self.cid) if v in keys}
        if len(self._keys) < p.threshold:
            raise ProtocolAbort(f"client {self.cid}: {len(self._keys)} live neighbours < threshold {p.threshold}")
        self._b = os.urandom(32)
        s_raw = self._s.private_bytes(serialization.Encoding.Raw, serialization.PrivateFormat.Raw,
                                      serialization.NoEncryption())
        xs = [v + 1 for v in self._keys]
        b_sh = shamir.split(int.from_bytes(self._b, "big"), p.threshold, xs)
        s_sh = shamir.split(int.from_bytes(s_raw, "big"), p.threshold, xs)
        out = {}
        for v, (c_pk, _) in self._keys.items():
            nonce = os.urandom(12)
            body = struct.pack(">II", self.cid, v) + shamir.to_bytes(b_sh[v + 1]) + shamir.to_bytes(s_sh[v + 1])
            out[v] = nonce + self._channel(v, c_pk).encrypt(nonce, body, self._ad(self.cid, v))
        return out

    def masked_input(self, ciphertexts: dict[int, bytes], update: np.ndarray) -> bytes:
        """Decrypt and keep the neighbours' shares; return the masked, quantised, packed update."""
        p = self.plan
        self._shares = {}
        for v, ct in ciphertexts.items():
            if v not in self._keys:
                raise ProtocolAbort(f"client {self.cid}: shares from a non-neighbour {v}")
            body = self._channel(v, self._keys[v][0]).decrypt(ct[:12], ct[12:], self._ad(v, self.cid))
            src, dst = struct.unpack(">II", body[:8])
            if (src, dst) != (v, self.cid):
                raise ProtocolAbort(f"client {self.cid}: share addressed {src}->{dst} arrived from {v}")
            self._shares[v] = body[8:]
        if len(self._shares) < p.threshold:
            raise ProtocolAbort(f"client {self.cid}: shares from {len(self._shares)} < threshold neighbours")
        x = np.asarray(update, dtype=np.float64).reshape(-1)
        if x.shape[0] != p.dims:
            raise MithridateError(f"update has {x.shape[0]} values, the plan says {p.dims}")
        norm = np.linalg.norm(x)
        if norm > p.clip:
            x = x * (p.clip / norm)
        if p.noise_std > 0:
            x = x + self._rng.normal(0.0, p.noise_std, size=x.shape)
        mask = np.uint64((1 << p.bits) - 1)
        self.quantised_ = quantise(x, p, self._rng)  # kept for tests: this client's own input
        y = _mod_add(self.quantised_, prg(self._b, p.dims, p.bits), mask)
        for v in self._shares:  # pairwise masks with the neighbours that shared keys (the set U2)
            m = prg(pair_key(self._s, self._keys[v][1], p.session), p.dims, p.bits)
            y = _mod_add(y, m, mask) if self.cid < v else _mod_sub(y, m, mask)
        return pack(y, p.bits)

    def unmask(self, survivors: set[int], dropped: set[int]) -> dict[int, tuple[str, bytes]]:
        """Per neighbour: its ``b`` share if it survived, its ``s_sk`` share if it dropped."""
        p = self.plan
        if self._revealed:
            raise ProtocolAbort(f"client {self.cid}: a second unmasking request (refused)")
        if survivors & dropped:
            raise ProtocolAbort(f"client {self.cid}: the server asks for both shares of {sorted(survivors & dropped)}")
        if len(survivors) < p.threshold:
            raise ProtocolAbort(f"client {self.cid}: {len(survivors)} survivors < threshold {p.threshold}")
        self._revealed = True
        out = {}
        for v, body in self._shares.items():
            if v in survivors:
                out[v] = ("b", body[:shamir.SHARE_BYTES])
            elif v in dropped:
                out[v] = ("s", body[shamir.SHARE_BYTES:])
        return out


def pair_key(own: X25519PrivateKey, other_pk: bytes, session: bytes) -> bytes:
    shared = own.exchange(X25519PublicKey.from_public_bytes(other_pk))
    return _hkdf(shared, b"mithridate-secagg-mask", session)


# -- server -----------------------------------------------------------------------------------------------

class SecAggServer:
    """The server's side: route, then reconstruct the sum of the survivors' quantised updates."""

    def __init__(self, plan: Plan):
        self.plan = plan

    def collect_keys(self, keys: dict[int, tuple[bytes, bytes]]) -> dict[int, dict[int, tuple[bytes, bytes]]]:
        """Per client, the keys of its live neighbours (U1)."""
        self.keys_ = dict(keys)
        return {u: {v: keys[v] for v in self.plan.neighbours(u) if v in keys} for u in keys}

    def route_shares(self, shares: dict[int, dict[int, bytes]]) -> dict[int, dict[int, bytes]]:
        """From ``{sender: {receiver: ct}}`` to ``{receiver: {sender: ct}}`` (U2 = the senders)."""
        self.sharers_ = set(shares)
        out: dict[int, dict[int, bytes]] = {u: {} for u in shares}
        for u, cts in shares.items():
            for v, ct in cts.items():
                if v in out:
                    out[v][u] = ct
        return out

    def collect_masked(self, masked: dict[int, bytes]) -> tuple[set[int], set[int]]:
        """Keep the masked inputs (U3); return ``(survivors, dropped)`` for the unmasking request."""
        self.masked_ = {u: y for u, y in masked.items() if u in self.sharers_}
        if len(self.masked_) < self.plan.threshold:
            raise ProtocolAbort(f"only {len(self.masked_)} masked inputs, fewer than the threshold "
                                f"{self.plan.threshold}: round aborted, nothing revealed")
        survivors = set(self.masked_)
        return survivors, self.sharers_ - survivors

    def finish(self, responses: dict[int, dict[int, tuple[str, bytes]]]) -> tuple[np.ndarray, int]:
        """The exact sum (modulo ``2^bits``, as quantised integers) of the survivors' inputs, dequantised,
        and the number of survivors it sums."""
        p = self.plan
        survivors = set(self.masked_)
        dropped = self.sharers_ - survivors
        b_sh: dict[int, dict[int, int]] = {}
        s_sh: dict[int, dict[int, int]] = {}
        for u, shares in responses.items():
            for v, (kind, data) in shares.items():
                (b_sh if kind == "b" else s_sh).setdefault(v, {})[u + 1] = shamir.from_bytes(data)
        mask = np.uint64((1 << p.bits) - 1)
        total = np.zeros(p.dims, np.uint64)
        for y in self.masked_.values():
            total = _mod_add(total, unpack(y, p.bits, p.dims), mask)
        for u in survivors:
            got = b_sh.get(u, {})
            if len(got) < p.threshold:
                raise ProtocolAbort(f"{len(got)} shares of client {u}'s self mask < threshold: round aborted")
            b = shamir.combine(dict(list(got.items())[:p.threshold])).to_bytes(32, "big")
            total = _mod_sub(total, prg(b, p.dims, p.bits), mask)
        for v in dropped:
            got = s_sh.get(v, {})
            if len(got) < p.threshold:
                raise ProtocolAbort(f"{len(got)} shares of dropped client {v}'s key < threshold: round aborted")
            raw = shamir.combine(dict(list(got.items())[:p.threshold])).to_bytes(32, "big")
            s_v = X25519PrivateKey.from_private_bytes(raw)
            for u in p.neighbours(v):
                if u in survivors and u in self.keys_:
                    m = prg(pair_key(s_v, self.keys_[u][1], p.session), p.dims, p.bits)
                    # u added +m if u < v, else subtracted it: undo that
                    total = _mod_sub(total, m, mask) if u < v else _mod_add(total, m, mask)
        self.quantised_sum_ = total
        return dequantise_sum(total, len(survivors), p), len(survivors)
