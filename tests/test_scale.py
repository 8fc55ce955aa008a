"""The scan on a real Ray cluster (a head and two worker nodes on loopback, started here): the same result as
in this process, a killed worker's task run again, and one-line errors for a bad engine or address."""

from __future__ import annotations

import os
import signal
import threading
import time

import numpy as np
import pytest
from benchmarks.real_data import table
from typer.testing import CliRunner

from mithridate.attacks import PatchTrigger, RandomFlip
from mithridate.cli import app
from mithridate.data import demo
from mithridate.detect import Scan
from mithridate.errors import MithridateError
from mithridate.scale import LocalEngine, RayEngine, make_engine


@pytest.fixture(scope="module")
def cluster():
    ray = pytest.importorskip("ray")
    from ray.cluster_utils import Cluster

    ray.shutdown()
    c = Cluster(initialize_head=True, head_node_args={"num_cpus": 1, "include_dashboard": False})
    for _ in range(2):
        c.add_node(num_cpus=1)
    c.wait_for_nodes()
    ray.init(address=c.address, log_to_driver=False)
    yield ray
    ray.shutdown()
    c.shutdown()


def test_engines_by_name_and_bad_names():
    assert isinstance(make_engine(None), LocalEngine) and isinstance(make_engine("ray", "auto"), RayEngine)
    with pytest.raises(MithridateError, match="unknown engine"):
        make_engine("spark")
    with pytest.raises(MithridateError, match="needs --engine ray"):
        make_engine("local", "10.0.0.1:6379")


def test_a_ray_scan_of_a_real_table_equals_the_local_scan(cluster):
    assert len([n for n in cluster.nodes() if n["Alive"]]) == 3
    poisoned = RandomFlip(rate=0.1, random_state=0).poison(table("biopsy"))
    local = Scan(random_state=0).fit(poisoned.dataset)
    said: list[str] = []
    remote = Scan(random_state=0, engine=RayEngine()).fit(poisoned.dataset, progress=said.append)
    assert sum("done on the Ray cluster" in s for s in said) == 5, said  # the five folds ran as tasks
    np.testing.assert_array_equal(remote.representation_.proba, local.representation_.proba)
    assert remote.report_.findings["flagged"].equals(local.report_.findings["flagged"])
    assert remote.report_.findings["flagged"].sum() > 30  # it found the flips, not an empty scan


def _title(pid: int) -> bytes:
    try:
        with open(f"/proc/{pid}/cmdline", "rb") as f:
            return f.read()
    except OSError:
        return b""


def _descends_from_us(pid: int) -> bool:
    """Whether ``pid`` was started by this test process (the cluster's raylets start the workers)."""
    while pid > 1:
        try:
            with open(f"/proc/{pid}/stat") as f:
                pid = int(f.read().rsplit(")", 1)[1].split()[1])
        except (OSError, ValueError, IndexError):
            return False
        if pid == os.getpid():
            return True
    return False


def _kill_first_running_model(killed: list, stop: threading.Event) -> None:
    """Kill one of this cluster's workers while it trains a model (Ray titles a worker ``ray::<task>``
    while it runs one)."""
    while not stop.is_set():
        for pid in map(int, filter(str.isdigit, os.listdir("/proc"))):
            if _title(pid).startswith(b"ray::_piece") and _descends_from_us(pid):
                time.sleep(0.3)  # mid-training
                if not _title(pid).startswith(b"ray::_piece"):
                    break  # it finished meanwhile: look again
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    break
                killed.append(pid)
                return
        time.sleep(0.1)


@pytest.mark.skipif(not os.path.isdir("/proc"), reason="finds Ray's workers by their process titles in /proc")
def test_a_worker_killed_mid_scan_is_run_again_and_the_result_is_unchanged(cluster):
    poisoned = PatchTrigger(target=0, rate=0.05, random_state=0).poison(demo("digits"))
    reference = Scan(random_state=0, engine=RayEngine()).fit(poisoned.dataset)
    killed: list = []
    stop = threading.Event()
    killer = threading.Thread(target=_kill_first_running_model, args=(killed, stop))
    killer.start()
    try:
        again = Scan(random_state=0, engine=RayEngine()).fit(poisoned.dataset)
    finally:
        stop.set()
        killer.join()
    assert killed, "no model task was seen running"
    np.testing.assert_allclose(again.representation_.proba, reference.representation_.proba, atol=1e-6)
    assert again.report_.findings["flagged"].equals(reference.report_.findings["flagged"])


def test_cli_scan_on_ray_and_a_bad_address(cluster, tmp_path):
    runner = CliRunner()
    source = tmp_path / "biopsy.csv"
    frame = table("biopsy").features.assign(label=np.asarray(table("biopsy").classes)[table("biopsy").y])
    frame.to_csv(source, index=False)
    ok = runner.invoke(app, ["scan", str(source), "--label", "label", "--out", str(tmp_path / "out"),
                             "--engine", "ray", "--no-html"])
    assert ok.exit_code == 0, ok.output
    assert (tmp_path / "out" / "findings.csv").exists()
    bad = runner.invoke(app, ["scan", str(source), "--label", "label", "--out", str(tmp_path / "out2"),
                              "--engine", "spark"])
    assert bad.exit_code == 2 and "unknown engine 'spark'" in bad.output
    for address, said in (("127.0.0.1:1", "cannot reach a Ray cluster at 127.0.0.1:1"),
                          ("nonsense", "a Ray address is host:port")):
        bad = runner.invoke(app, ["scan", str(source), "--label", "label", "--out", str(tmp_path / "out2"),
                                  "--engine", "ray", "--address", address])
        assert bad.exit_code == 2 and said in bad.output, bad.output
    assert not (tmp_path / "out2").exists()


def test_a_failing_task_is_one_line_and_its_own_error_kept(cluster):
    from mithridate.scale.engine import _reachable

    with pytest.raises(MithridateError, match=r"^a Ray address is host:port") as caught:
        RayEngine().map(_reachable, "nonsense", [1.0])
    assert "\n" not in str(caught.value)
    from mithridate.represent.representation import _piece

    with pytest.raises(MithridateError, match=r"^a task failed on the Ray cluster: .*has no attribute 'kind'") \
            as caught:
        RayEngine().map(_piece, ("not a data set", 0, {}), [("fold", [0], [1]), ("fold", [1], [0])])
    assert "\n" not in str(caught.value)


def test_asking_for_another_cluster_while_connected_is_refused(cluster):
    with pytest.raises(MithridateError, match="already connected to another Ray cluster"):
        RayEngine(address="local").connect()
    assert RayEngine().connect().address is None  # the cluster this process is connected to
