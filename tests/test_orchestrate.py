"""Sweeps on Ray: branches fork from checkpoints, four concurrent runs log to MLflow exactly once,
failed runs are retried then recorded, diverged runs are recorded, finished runs are skipped, and a
SIGKILLed sweep resumes. Resources per run come from the sweep without changing run ids; an embedded
Ray ignores a dead cluster recorded in Ray's temp folder; an unreachable $RAY_ADDRESS fails in seconds."""

import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import pytest

from windtunnel import tracking
from windtunnel.errors import SpecError, WindtunnelError
from windtunnel.graph import expand, load_sweep
from windtunnel.orchestrate import _check_fits, init_ray, run_graph
from windtunnel.runs import resources, run_dir

ROOT = Path(__file__).resolve().parents[1]
SWEEP = """
name: {name}
base: {{batch_tokens: 2048, seq_len: 64, eval_every: 10, checkpoint_every: 10, data: {{eval_tokens: 2048}},
        schedule: {{kind: constant, warmup_tokens: 4096}}}}
scales:
  micro:
    models: [micro-24k]
    tokens_per_param: {tpp}
    grid: {{lr: {lrs}}}
    branches: {{at_tokens_per_param: {at}, decay_fractions: [0.2]}}
"""


@pytest.fixture()
def results(tmp_path, monkeypatch):
    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path / "results"))
    return tmp_path / "results"


def sweep_runs(tmp_path, *, name="t", lrs="[0.01, 0.02]", tpp=2, at="[1, 2]"):
    path = tmp_path / f"{name}.yaml"
    path.write_text(SWEEP.format(name=name, lrs=lrs, tpp=tpp, at=at))
    sweep, section = load_sweep(path, scale="micro")
    return expand(sweep, section, file=path), path


def ample_corpus(*args, **kwargs):
    """A stand-in for data.prepare where the corpus is not the point: a training split no run repeats."""
    from types import SimpleNamespace

    return SimpleNamespace(train=range(10**12))


def assert_each_step_once(experiment: str, runs) -> None:
    frame = tracking.runs_dataframe(experiment=experiment)
    children = frame[frame["tags.kind"] != "sweep"]
    assert len(children) == len(runs)
    for _, row in children.iterrows():
        history = tracking.metric_history(row["run_id"], "train/loss")
        run = next(r for r in runs if r.id == row["tags.windtunnel.run"])
        first = (run.fork_step or 0) + 1
        assert list(history["step"]) == list(range(first, run.spec.tokens // 2048 + 1)), run.name
        assert row["parent_run_id"] == frame[frame["tags.kind"] == "sweep"].iloc[0]["run_id"]


def test_sweep_runs_forks_logs_once_and_skips_when_done(tmp_path, results):
    runs, _ = sweep_runs(tmp_path)
    outcomes = run_graph(runs, sweep="t", scale="micro", num_cpus=4, progress=False)  # 4 runs at once
    assert [o.status for o in outcomes] == ["finished"] * 6
    assert_each_step_once("t", runs)
    stable, branch = runs[0], runs[1]
    assert (run_dir(stable) / "checkpoints" / f"step_{branch.fork_step:08d}.dcp").is_dir()
    assert not (run_dir(branch) / "checkpoints" / f"step_{branch.fork_step:08d}.dcp").exists()  # started from the parent's
    again = run_graph(runs, sweep="t", scale="micro", progress=False)
    assert all(o.attempts == 0 and o.status == "finished" for o in again)


def test_raising_run_is_retried_then_failed_and_diverged_is_recorded(tmp_path, results):
    runs, _ = sweep_runs(tmp_path, name="bad", lrs="[0.01, 30.0]")
    broken = runs[0].spec.__class__(**{**runs[0].spec.__dict__, "micro_batch_tokens": 100})  # not a multiple of seq_len
    runs[0] = runs[0].__class__(**{**runs[0].__dict__, "spec": broken})
    outcomes = {o.run.name: o for o in run_graph(runs, sweep="bad", scale="micro", retries=1, progress=False)}
    stable = outcomes["micro-24k lr=0.01 stable"]
    assert stable.status == "failed" and stable.attempts == 2 and "micro_batch_tokens" in stable.error
    assert outcomes["micro-24k lr=0.01 1N+20.0% exp"].status == "failed"  # its parent never made the checkpoint
    assert outcomes["micro-24k lr=30.0 stable"].status == "diverged"
    assert outcomes["micro-24k lr=30.0 stable"].attempts == 1  # not retried


@pytest.mark.slow
def test_sigkill_of_the_sweep_then_the_same_command_finishes_everything_once(tmp_path, results):
    runs, path = sweep_runs(tmp_path, name="kill", tpp=24, at="[4, 24]")
    cmd = [sys.executable, "-m", "windtunnel.cli", "sweep", str(path), "--num-cpus", "2"]
    proc = subprocess.Popen(cmd, cwd=ROOT, env=dict(os.environ), stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while time.time() < deadline and not any(
            (run_dir(r) / "status.json").exists() and "finished" in (run_dir(r) / "status.json").read_text()
            for r in runs):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    finished_before = {r.id: (run_dir(r) / "status.json").stat().st_mtime for r in runs
                       if (run_dir(r) / "status.json").exists()
                       and '"finished"' in (run_dir(r) / "status.json").read_text()}
    assert 0 < len(finished_before) < len(runs), "killed too early or too late to test resume"
    time.sleep(3)  # let Ray's reaper stop the orphaned workers
    out = subprocess.run(cmd, cwd=ROOT, env=dict(os.environ), capture_output=True, text=True, timeout=600)
    assert out.returncode == 0, out.stderr[-2000:]
    assert "Token authentication" not in out.stderr  # Ray's notice, once per sweep, is kept off the terminal
    for run_id, mtime in finished_before.items():
        assert (results / "runs" / run_id / "status.json").stat().st_mtime == mtime  # not trained again
    assert_each_step_once("kill", runs)


RESOURCES = """
name: res
base: {{batch_tokens: 2048, seq_len: 64, eval_every: 5, checkpoint_every: 5, data: {{eval_tokens: 2048}},
        schedule: {{kind: constant, warmup_tokens: 2048}}}}
scales:
  micro:
    models: [micro-24k]
    tokens: 8192
    grid: {{lr: [0.01, 0.02]}}
    {resources}
"""


def resource_runs(tmp_path, resources_line: str):
    path = tmp_path / "res.yaml"
    path.write_text(RESOURCES.format(resources=resources_line))
    sweep, section = load_sweep(path, scale="micro")
    return expand(sweep, section, file=path)


def test_resources_per_run_come_from_the_sweep_and_leave_run_ids_alone(tmp_path):
    plain = resource_runs(tmp_path, "")
    shared = resource_runs(tmp_path, "resources: {cpus: 1, gpus: 0.25}")
    assert [r.id for r in shared] == [r.id for r in plain]  # where a run trains is not what it computes
    assert all(r.resources == {"cpus": 1.0, "gpus": 0.25} for r in shared)
    assert resources(shared[0], gpus=True) == {"num_cpus": 1.0, "num_gpus": 0.25}
    assert resources(plain[0], gpus=False) == {"num_cpus": 1}  # today's rule without the key
    assert resources(plain[0], gpus=True) == {"num_cpus": 1, "num_gpus": 1}
    assert resource_runs(tmp_path, "resources: {gpus: 2}")[0].resources == {"cpus": 1, "gpus": 2.0}


@pytest.mark.parametrize("line, key", [
    ("{cpus: 0}", "cpus"), ("{cpus: -1}", "cpus"), ("{cpus: .nan}", "cpus"), ("{cpus: two}", "cpus"),
    ("{gpus: -0.5}", "gpus"), ("{gpus: 1.5}", "gpus"), ("{gpus: .inf}", "gpus"), ("{tpus: 1}", "tpus"),
])
def test_bad_resources_are_refused_in_one_line(tmp_path, line, key):
    with pytest.raises(SpecError) as err:
        resource_runs(tmp_path, f"resources: {line}")
    message = str(err.value)
    assert "res.yaml" in message and f"scales.micro.resources.{key}" in message and "\n" not in message


def test_runs_asking_more_than_any_node_has_are_refused():
    runs = resource_runs(Path(tempfile.mkdtemp()), "resources: {cpus: 1, gpus: 0.5}")

    class FakeRay:  # two CPU nodes, no GPU
        @staticmethod
        def nodes():
            return [{"Alive": True, "Resources": {"CPU": 1.0}}, {"Alive": True, "Resources": {"CPU": 1.0}}]

    with pytest.raises(WindtunnelError, match="needs num_gpus=0.5 but the largest Ray node has 0 GPU"):
        _check_fits(FakeRay, runs, gpus=False)
    _check_fits(FakeRay, resource_runs(Path(tempfile.mkdtemp()), "resources: {cpus: 1}"), gpus=False)


def closed_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


@pytest.mark.parametrize("address", ["127.0.0.1:{port}", "ray://127.0.0.1:{port}", "10.255.255.1:6379"])
def test_unreachable_ray_address_fails_in_seconds_naming_it(monkeypatch, address):
    address = address.format(port=closed_port())
    monkeypatch.setenv("RAY_ADDRESS", address)
    start = time.time()
    with pytest.raises(WindtunnelError) as err:
        init_ray(None)
    assert time.time() - start < 10
    assert f"RAY_ADDRESS={address}" in str(err.value) and "\n" not in str(err.value)


@pytest.fixture()
def dead_recorded_cluster(monkeypatch):
    """Ray's temp folder (a short private one: Ray's socket paths have a length limit) recording a cluster
    whose GCS port is closed, as a `ray start` that died leaves /tmp/ray/ray_current_cluster."""
    root = tempfile.mkdtemp(prefix="windtunnel-ray-", dir="/tmp")
    (Path(root) / "ray").mkdir()
    (Path(root) / "ray" / "ray_current_cluster").write_text(f"127.0.0.1:{closed_port()}")
    monkeypatch.setenv("RAY_TMPDIR", root)
    monkeypatch.delenv("RAY_ADDRESS", raising=False)
    yield root
    shutil.rmtree(root, ignore_errors=True)


def test_embedded_ray_starts_its_own_despite_a_dead_recorded_cluster(tmp_path, results, dead_recorded_cluster):
    import ray

    runs = resource_runs(tmp_path, "")[:1]
    start = time.time()  # a bare ray.init() waits on the dead GCS (>35 s), then fails
    assert init_ray(None)  # None: the CLI's default, all CPUs
    started = time.time() - start
    try:
        outcomes = run_graph(runs, sweep="res", scale="micro", progress=False)  # on the Ray started above
    finally:
        ray.shutdown()
    assert started < 30 and [o.status for o in outcomes] == ["finished"]
    assert list(Path(dead_recorded_cluster, "ray").glob("session_*"))  # the embedded Ray ran in that temp folder
    attempt = json.loads((run_dir(runs[0]) / "attempts.jsonl").read_text().splitlines()[-1])
    assert attempt["host"] == socket.gethostname() and len(attempt["ray.node"]) == 56  # a Ray node id: 28 bytes hex

def _statuses(experiment: str) -> dict[str, str]:
    frame = tracking.runs_dataframe(experiment=experiment)
    return dict(zip(frame["run_name"], frame["status"]))


def test_a_sweep_that_fails_after_its_parent_run_exists_leaves_no_run_running(tmp_path, results, monkeypatch):
    from windtunnel import cli, orchestrate
    from windtunnel.errors import WindtunnelError

    def no_cluster(num_cpus):
        raise WindtunnelError("RAY_ADDRESS=10.0.0.9:6379 does not answer")

    _, path = sweep_runs(tmp_path, name="fails")
    monkeypatch.setattr("windtunnel.data.prepare", ample_corpus)  # the corpus is not the point
    monkeypatch.setattr(orchestrate, "init_ray", no_cluster)  # after the parent run is created
    assert cli.main(["sweep", str(path), "--no-mup-check"]) == 2
    assert _statuses("fails") == {"fails (micro)": "FAILED"}


def test_ctrl_c_ends_the_sweep_and_its_orphaned_children_killed(tmp_path, results, monkeypatch):
    from windtunnel import orchestrate

    def interrupted(ray, todo, by_id, outcomes, board, *, sweep, scale, parent, retries):
        """A task whose worker is killed with the driver: its run never ends itself."""
        tracking.RunLogger(experiment=sweep, run_name="child", params={}, tags={}, parent_run_id=parent.run_id)
        raise KeyboardInterrupt

    runs, _ = sweep_runs(tmp_path, name="stop")
    monkeypatch.setattr("windtunnel.data.prepare", ample_corpus)
    monkeypatch.setattr(orchestrate, "init_ray", lambda num_cpus: False)
    monkeypatch.setattr(orchestrate, "_loop", interrupted)
    with pytest.raises(KeyboardInterrupt):
        run_graph(runs, sweep="stop", scale="micro", progress=False)
    assert _statuses("stop") == {"stop (micro)": "KILLED", "child": "KILLED"}
    assert set(tracking.runs_dataframe(experiment="stop")["tags.status"]) == {"interrupted"}


def test_a_run_done_on_disk_but_not_in_mlflow_is_settled_by_the_next_sweep(tmp_path, results):
    """The process died between writing status.json and ending its MLflow run: the fits would leave it out."""
    import json

    runs, _ = sweep_runs(tmp_path, name="settle")
    for run in runs:  # every run done on disk: the sweep needs no Ray
        run_dir(run).mkdir(parents=True, exist_ok=True)
        (run_dir(run) / "status.json").write_text(json.dumps({"status": "finished", "result": None}))
    killed = tracking.RunLogger(experiment="settle", run_name="killed", params={},
                                tags={"windtunnel.run": runs[0].id})
    killed.finish("KILLED", tag_status="interrupted")
    tracking.RunLogger(experiment="settle", run_name="running", params={}, tags={"windtunnel.run": runs[1].id})
    run_graph(runs, sweep="settle", scale="micro", progress=False)
    frame = tracking.runs_dataframe(experiment="settle").set_index("run_name")
    assert frame.loc[["killed", "running"], "status"].tolist() == ["FINISHED", "FINISHED"]
    assert frame.loc[["killed", "running"], "tags.status"].tolist() == ["finished", "finished"]


def test_runs_that_would_repeat_their_data_are_refused_before_anything_trains(tmp_path, results):
    """A run reading its corpus's training split more than once is named in one line (unless --allow-repeat); the
    dry run gives each run's epochs once the corpus is tokenized."""
    from windtunnel.data import prepare
    from windtunnel.graph import summarize
    from windtunnel.orchestrate import check_epochs

    runs, _ = sweep_runs(tmp_path)
    longest = max(runs, key=lambda r: r.tokens)
    key = (longest.spec.data, longest.spec.model.vocab_size)
    check_epochs(runs, {key: longest.tokens})                       # exactly one epoch: allowed
    with pytest.raises(WindtunnelError, match=rf"would repeat their data: {re.escape(longest.name)} reads 2 epochs "
                                              r"of data.corpus='python' .*--allow-repeat$"):
        check_epochs(runs, {key: longest.tokens // 2})
    train_tokens = len(prepare(key[0], vocab_size=key[1]).train)
    summary = summarize(runs)
    mine = next(r for r in summary["runs"] if r["id"] == longest.id)
    assert mine["epochs"] == pytest.approx(longest.tokens / train_tokens) and summary["unprepared"] == []


def test_a_second_driver_of_the_same_sweep_is_refused_naming_the_first(tmp_path, results):
    """Two `windtunnel sweep` of one graph would train its unfinished runs twice in the same folders."""
    from windtunnel.errors import WindtunnelError
    from windtunnel.orchestrate import _only_driver

    runs, _ = sweep_runs(tmp_path)
    with _only_driver("t", "micro"):  # the first driver, holding the lock
        with pytest.raises(WindtunnelError, match=f"sweep 't' at scale 'micro' is already running \\(pid {os.getpid()}"):
            run_graph(runs, sweep="t", scale="micro", progress=False)
        with _only_driver("t", "demo"):  # another scale is another graph
            pass
    assert not (results / "runs").exists()  # nothing trained, nothing written but the lock
    with _only_driver("t", "micro"):  # released when the first driver ended
        pass


def test_several_sweeps_in_one_command_share_one_ray_session(tmp_path, results, monkeypatch, capsys):
    """`windtunnel sweep A B` trains A's graph, then B's, starting Ray once (its workers keep their imports), and
    shuts it down at the end; each sweep keeps its own parent run."""
    import ray

    from windtunnel import cli, orchestrate

    starts = []
    real_init = orchestrate.init_ray
    monkeypatch.setattr(orchestrate, "init_ray", lambda num_cpus: starts.append(real_init(num_cpus)) or starts[-1])
    (a_runs, a), (b_runs, b) = (sweep_runs(tmp_path, name=name, lrs=lrs, at="[1]")  # runs of their own
                                for name, lrs in (("a", "[0.01]"), ("b", "[0.02]")))
    assert cli.main(["sweep", str(a), str(b), "--num-cpus", "2", "--no-mup-check"]) == 0
    assert starts == [True, False]  # the second sweep found the first's Ray up
    assert not ray.is_initialized()
    out = capsys.readouterr().out
    assert out.index("sweep a (") < out.index("sweep b (")
    for name, runs in (("a", a_runs), ("b", b_runs)):
        assert _statuses(name) == {f"{name} (micro)": "FINISHED", **{r.name: "FINISHED" for r in runs}}


def test_the_costliest_runs_are_started_first(tmp_path, results):
    """Longest first (LPT): on one CPU the larger model's run, listed second in the graph, trains first."""
    path = tmp_path / "order.yaml"
    path.write_text("name: order\nbase: {batch_tokens: 2048, seq_len: 64, eval_every: 10, data: {eval_tokens: 2048}}\n"
                    "scales:\n  micro:\n    models: [micro-24k, micro-53k]\n    tokens: 8192\n")
    sweep, section = load_sweep(path, scale="micro")
    runs = expand(sweep, section, file=path)
    assert [r.spec.model.name for r in runs] == ["micro-24k", "micro-53k"]
    run_graph(runs, sweep="order", scale="micro", num_cpus=1, progress=False)
    frame = tracking.runs_dataframe(experiment="order")
    started = frame[frame["tags.kind"] != "sweep"].sort_values("start_time")["run_name"].tolist()
    assert started == [runs[1].name, runs[0].name]
