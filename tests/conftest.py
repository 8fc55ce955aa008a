"""Shared fixtures: the built-in data sets, split once per session (stratified, seed 0); a PostgreSQL server."""

from __future__ import annotations

import itertools
import os
import shutil
import socket
import subprocess
import tempfile
from pathlib import Path

import pytest

from mithridate.data import demo, split


@pytest.fixture(scope="session")
def digits_split():
    return split(demo("digits"), test_size=0.25, seed=0)


@pytest.fixture(scope="session")
def breast_cancer_split():
    return split(demo("breast_cancer"), test_size=0.25, seed=0)


@pytest.fixture(scope="session")
def wine_split():
    return split(demo("wine"), test_size=0.25, seed=0)


# --- a throwaway PostgreSQL cluster -------------------------------------------------------------------
def _pg_bin() -> Path | None:
    found = shutil.which("initdb")
    if found:
        return Path(found).resolve().parent
    candidates = sorted(Path("/usr/lib/postgresql").glob("*/bin/initdb"))
    return candidates[-1].parent if candidates else None


@pytest.fixture(scope="session")
def postgres():
    """A PostgreSQL server of our own on a free loopback port; yields a function making fresh databases."""
    bin_dir = _pg_bin()
    if bin_dir is None:
        pytest.skip("PostgreSQL binaries (initdb, pg_ctl) not installed: apt-get install -y postgresql")
    base = Path(tempfile.mkdtemp(prefix="mithridate-pg-"))  # outside pytest's private (0700) tmp tree
    as_user = []
    if os.geteuid() == 0:  # initdb refuses to run as root: run the cluster as the postgres user
        as_user = ["runuser", "-u", "postgres", "--"]
        shutil.chown(base, "postgres")
    data = base / "data"
    subprocess.run([*as_user, str(bin_dir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres",
                    "--no-sync", "-E", "UTF8"], check=True, capture_output=True, timeout=120)
    sock = socket.socket()
    sock.bind(("127.0.0.1", 0))
    port = sock.getsockname()[1]
    sock.close()
    options = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c max_connections=200"
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-o", options, "-l", str(base / "log"),
                    "-w", "start"], check=True, capture_output=True, timeout=120)
    counter = itertools.count()

    def new_database() -> str:
        import psycopg

        name = f"vault{next(counter)}"
        with psycopg.connect(f"host=127.0.0.1 port={port} user=postgres dbname=postgres", autocommit=True) as conn:
            conn.execute(f"CREATE DATABASE {name}")
        return f"postgresql+psycopg://postgres@127.0.0.1:{port}/{name}"

    yield new_database
    subprocess.run([*as_user, str(bin_dir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                   capture_output=True, timeout=60)
    shutil.rmtree(base, ignore_errors=True)
