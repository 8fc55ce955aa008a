"""Vault ingest throughput: hash + encrypt + store a 1 GB file, against ``sha256sum`` + ``openssl enc``.

Ours: :class:`mithridate.vault.store.ChunkStore` writing into a local vault folder: cut into 8 MiB chunks,
SHA-256 each (the content address), AES-256-GCM each under its own data key, wrap the key, write the
object and its key record (atomic link into place), with and without an fsync per object. The peer is
the two command-line tools doing the same two jobs, one after the other, on the same file in the same
run: ``sha256sum FILE`` then ``openssl enc -aes-256-ctr -in FILE -out OUT``. (OpenSSL 3's ``enc`` refuses
AEAD ciphers, so GCM cannot be asked of it; CTR is GCM without the GHASH authentication, so the peer
does strictly less work than we do.) The file is random bytes, read once first so every contender
reads it from the page cache; each contender runs ``--repeats`` times and the best time counts.

    python -m benchmarks.vault_ingest [--size-mb 1024] [--repeats 3] [--dir /tmp]
"""

from __future__ import annotations

import argparse
import os
import resource
import shutil
import subprocess
import tempfile
import time
from pathlib import Path


def make_file(path: Path, size_mb: int) -> None:
    block = 1 << 20
    with open(path, "wb") as fh:
        for _ in range(size_mb):
            fh.write(os.urandom(block))


def warm(path: Path) -> None:
    with open(path, "rb") as fh:
        while fh.read(8 << 20):
            pass


def timed(fn) -> float:
    start = time.perf_counter()
    fn()
    return time.perf_counter() - start


def peer(path: Path, work: Path) -> tuple[float, float]:
    out = work / "peer.enc"
    t_sha = timed(lambda: subprocess.run(["sha256sum", str(path)], check=True, capture_output=True))
    key, iv = os.urandom(32).hex(), os.urandom(16).hex()
    t_enc = timed(lambda: subprocess.run(["openssl", "enc", "-aes-256-ctr", "-K", key, "-iv", iv, "-in", str(path),
                                          "-out", str(out)], check=True, capture_output=True))
    out.unlink()
    return t_sha, t_enc


def ours(path: Path, work: Path, fsync: bool, workers: int) -> float:
    from mithridate.vault.backends.local import LocalBackend
    from mithridate.vault.crypto import Keyring, MasterKey
    from mithridate.vault.primitives import random_key
    from mithridate.vault.store import ChunkStore

    root = work / "vault"
    backend = LocalBackend(root, fsync=fsync)
    master = MasterKey(random_key())
    store = ChunkStore(backend, Keyring(backend, {master.key_id: master}, master.key_id), workers=workers)
    with open(path, "rb") as fh:
        seconds = timed(lambda: store.write(fh))
    shutil.rmtree(root)
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--size-mb", type=int, default=1024)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--dir", default=None, help="Where to put the file and the vault (same filesystem).")
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="vault-bench-", dir=args.dir))
    try:
        path = work / "data.bin"
        make_file(path, args.size_mb)
        warm(path)
        mb = args.size_mb * (1 << 20) / 1e6
        results: dict[str, list[float]] = {"sha256sum": [], "openssl enc -aes-256-ctr": [], "peer: both": []}
        variants = {"vault, 2 workers, fsync per object": (True, 2), "vault, 2 workers, no fsync": (False, 2),
                    "vault, 1 worker, no fsync": (False, 1)}
        for name in variants:
            results[name] = []
        for _ in range(args.repeats):  # interleaved, so a busy moment on a shared machine hits everyone
            t_sha, t_enc = peer(path, work)
            results["sha256sum"].append(t_sha)
            results["openssl enc -aes-256-ctr"].append(t_enc)
            results["peer: both"].append(t_sha + t_enc)
            for name, (fsync, workers) in variants.items():
                results[name].append(ours(path, work, fsync, workers))
        best = {name: min(times) for name, times in results.items()}
        peer_rate = mb / best["peer: both"]
        print(f"ingest of a {args.size_mb} MiB file ({os.cpu_count()} CPUs; best of {args.repeats}; "
              f"peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MiB)\n")
        print(f"{'contender':40s} {'seconds':>8s} {'MB/s':>8s} {'share of peer':>14s}")
        for name, seconds in best.items():
            share = "" if not name.startswith("vault") else f"{(mb / seconds) / peer_rate:14.0%}"
            print(f"{name:40s} {seconds:8.2f} {mb / seconds:8.0f} {share}")
    finally:
        shutil.rmtree(work, ignore_errors=True)


if __name__ == "__main__":
    main()
