"""Shamir secret sharing over the prime field GF(2^521 - 1) (Shamir 1979, "How to share a secret").

A secret (an integer below 2^512, e.g. a 32-byte key) is the constant term of a random polynomial of degree
``threshold - 1``; share ``i`` is the polynomial at ``x = i``. Any ``threshold`` shares give the secret back
by Lagrange interpolation at 0; fewer reveal nothing about it.

>>> shares = split(1234567, threshold=3, xs=[1, 2, 3, 4, 5])
>>> combine({x: shares[x] for x in (2, 4, 5)})
1234567
"""

from __future__ import annotations

import secrets

PRIME = (1 << 521) - 1
SHARE_BYTES = 66  # 521 bits


def split(secret: int, threshold: int, xs: list[int]) -> dict[int, int]:
    """Shares ``{x: f(x)}`` of ``secret`` for the nonzero, distinct points ``xs``."""
    if not 0 <= secret < PRIME:
        raise ValueError("secret out of the field")
    if not 1 <= threshold <= len(xs):
        raise ValueError(f"threshold {threshold} impossible with {len(xs)} shares")
    if len(set(xs)) != len(xs) or any(x % PRIME == 0 for x in xs):
        raise ValueError("share points must be distinct and nonzero")
    coeffs = [secret] + [secrets.randbelow(PRIME) for _ in range(threshold - 1)]
    out = {}
    for x in xs:
        y = 0
        for c in reversed(coeffs):
            y = (y * x + c) % PRIME
        out[x] = y
    return out


def combine(shares: dict[int, int]) -> int:
    """The secret from ``{x: y}`` shares (as many as the threshold, any of them)."""
    xs = list(shares)
    secret = 0
    for i in xs:
        num, den = 1, 1
        for j in xs:
            if j != i:
                num = num * (-j) % PRIME
                den = den * (i - j) % PRIME
        secret = (secret + shares[i] * num * pow(den, -1, PRIME)) % PRIME
    return secret


def to_bytes(value: int) -> bytes:
    return value.to_bytes(SHARE_BYTES, "big")


def from_bytes(data: bytes) -> int:
    return int.from_bytes(data, "big")
