"""Tests of windtunnel.tracking on real MLflow sqlite stores in temporary results folders, and one real UI server."""

import json
import math
import multiprocessing
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pandas as pd
import pytest

from tests import browser
from windtunnel import tracking
from windtunnel.errors import WindtunnelError
from windtunnel.tracking import RunLogger, metric_history, runs_dataframe, serve_ui, tracking_uri

ROOT = Path(__file__).resolve().parents[1]  # the repository: put on PYTHONPATH of subprocesses


@pytest.fixture
def fresh_store(tmp_path, monkeypatch):
    """A default store not created yet: results/ in a temporary folder, no tracking server."""
    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path / "results"))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    return tmp_path / "results"


@pytest.fixture(scope="session")
def empty_db(tmp_path_factory):
    """An empty MLflow sqlite file, its tables created once (MLflow's migrations take ~8 s on 2 busy cores)."""
    from mlflow import MlflowClient

    path = tmp_path_factory.mktemp("empty-store") / "mlflow.db"
    MlflowClient(f"sqlite:///{path}").search_experiments(max_results=1)
    return path


@pytest.fixture
def store(fresh_store, empty_db):
    """A fresh default store: a copy of the empty one in results/ of a temporary folder."""
    fresh_store.mkdir(parents=True)
    shutil.copy(empty_db, fresh_store / "mlflow.db")
    return fresh_store


def _python(code: str, **kwargs) -> subprocess.Popen:
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    return subprocess.Popen([sys.executable, "-c", code], env=env, **kwargs)


def test_import_does_not_import_mlflow():
    check = _python("import sys, windtunnel.tracking; sys.exit('mlflow' in sys.modules or 'pandas' in sys.modules)")
    assert check.wait(60) == 0


def test_tracking_uri_is_sqlite_in_results_unless_env_set(fresh_store, monkeypatch):
    store = fresh_store
    assert tracking_uri() == f"sqlite:///{store}/mlflow.db"
    assert store.is_dir()
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://127.0.0.1:5999")
    assert tracking_uri() == "http://127.0.0.1:5999"


def test_params_tags_metrics_round_trip(store):
    params = {"lr": 0.01, "n_layers": 4, "schedule": "wsd", "notes": "x" * 7000}
    run = RunLogger(experiment="roundtrip", run_name="w64", params=params, tags={"sweep": "lr", "scale": "micro"})
    for step, loss in enumerate([4.0, 3.5, 3.25]):
        run.log({"train/loss": loss, "lr": 0.01}, step=step)
    run.finish("FINISHED", tag_status="done")

    frame = runs_dataframe(experiment="roundtrip")
    assert len(frame) == 1
    row = frame.iloc[0]
    assert list(frame.columns[:9]) == [
        "run_id", "run_name", "status", "start_time", "parent_run_id",
        "params.lr", "params.n_layers", "params.notes", "params.schedule",
    ]  # fmt: skip
    assert list(frame.columns[-2:]) == ["metrics.lr", "metrics.train/loss"]
    assert (row.run_id, row.run_name, row.status) == (run.run_id, "w64", "FINISHED")
    assert pd.isna(row.parent_run_id)
    assert str(row.start_time.tz) == "UTC"
    assert (row["params.lr"], row["params.n_layers"], row["params.schedule"]) == ("0.01", "4", "wsd")
    assert row["params.notes"] == "x" * tracking.PARAM_CHARS  # truncated to MLflow's limit
    tags = ["tags.sweep", "tags.scale", "tags.status", "tags.mlflow.runName"]
    assert row[tags].tolist() == ["lr", "micro", "done", "w64"]
    assert (row["metrics.train/loss"], row["metrics.lr"]) == (3.25, 0.01)

    history = metric_history(run.run_id, "train/loss")
    assert list(history.columns) == ["step", "value"]
    assert history.step.tolist() == [0, 1, 2]
    assert history.value.tolist() == [4.0, 3.5, 3.25]
    assert (str(history.step.dtype), str(history.value.dtype)) == ("int64", "float64")


def test_missing_experiment_gives_empty_frame_and_history(store):
    frame = runs_dataframe(experiment="nothing-here")
    assert list(frame.columns) == tracking.BASE_COLUMNS
    assert len(frame) == 0
    run = RunLogger(experiment="e", run_name="r", params={}, tags={})
    assert metric_history(run.run_id, "loss").to_dict("list") == {"step": [], "value": []}


def test_child_runs_nest_under_parent(store):
    parent = RunLogger(experiment="sweep", run_name="sweep-lr", params={}, tags={"sweep": "lr"})
    children = [
        RunLogger(experiment="sweep", run_name=f"lr{i}", params={"i": i}, tags={}, parent_run_id=parent.run_id)
        for i in range(2)
    ]
    frame = runs_dataframe(experiment="sweep").set_index("run_name")
    assert frame.parent_run_id.isna().to_dict() == {"sweep-lr": True, "lr0": False, "lr1": False}
    assert frame.loc[["lr0", "lr1"], "parent_run_id"].tolist() == [parent.run_id, parent.run_id]
    assert frame.loc["lr1", "tags.mlflow.parentRunId"] == parent.run_id
    assert frame.loc["lr0", "status"] == "RUNNING"
    assert [child.run_id for child in children] == frame.loc[["lr0", "lr1"], "run_id"].tolist()


def test_reopened_run_stores_each_step_once(store):
    first = RunLogger(experiment="resume", run_name="r", params={"lr": 0.1}, tags={})
    for step in range(10):
        first.log({"loss": float(step), "eval/loss": float(step)}, step=step)
    first.finish("FAILED")  # crashed after step 9

    again = RunLogger(experiment="resume", run_name="r", params={"lr": 0.1}, tags={"resumed": 1}, run_id=first.run_id)
    assert runs_dataframe(experiment="resume").status.tolist() == ["RUNNING"]
    for step in range(15):  # the trainer replays steps 0..9 from its checkpoint, then goes on
        again.log({"loss": 100.0 + step, "new": 1.0}, step=step)
    again.finish("FINISHED")

    history = metric_history(first.run_id, "loss")
    assert history.step.tolist() == list(range(15))
    assert history.value.tolist() == [float(s) for s in range(10)] + [100.0 + s for s in range(10, 15)]
    assert metric_history(first.run_id, "new").step.tolist() == list(range(15))  # a new key starts fresh
    row = runs_dataframe(experiment="resume").iloc[0]
    assert row[["status", "tags.status", "tags.resumed", "params.lr"]].tolist() == ["FINISHED", "finished", "1", "0.1"]


def test_steps_of_a_key_only_move_forward_within_a_run(store):
    run = RunLogger(experiment="e", run_name="r", params={}, tags={})
    for step in [0, 1, 1, 0, 2]:
        run.log({"loss": float(step)}, step=step)
    run.flush()
    assert metric_history(run.run_id, "loss").step.tolist() == [0, 1, 2]


def test_reopening_a_changed_param_warns_and_keeps_the_stored_value(store):
    first = RunLogger(experiment="e", run_name="r", params={"lr": 0.1}, tags={})
    with pytest.warns(UserWarning, match=r"params \['lr'\]"):
        RunLogger(experiment="e", run_name="r", params={"lr": 0.2, "seed": 3}, tags={}, run_id=first.run_id)
    row = runs_dataframe(experiment="e").iloc[0]
    assert (row["params.lr"], row["params.seed"]) == ("0.1", "3")


def test_reopen_errors_name_the_fix(store):
    run = RunLogger(experiment="a", run_name="r", params={}, tags={})
    with pytest.raises(WindtunnelError, match="is in experiment 'a', not 'b'"):
        RunLogger(experiment="b", run_name="r", params={}, tags={}, run_id=run.run_id)
    with pytest.raises(WindtunnelError, match="start a new run"):
        RunLogger(experiment="a", run_name="r", params={}, tags={}, run_id="0" * 32)
    with pytest.raises(WindtunnelError, match="status='DONE' is not allowed"):
        run.finish("DONE")


def test_non_finite_values_are_stored(store):
    run = RunLogger(experiment="e", run_name="r", params={}, tags={})
    for step, value in enumerate([1.0, math.nan, math.inf, -math.inf]):
        run.log({"loss": value}, step=step)
    run.finish("FINISHED")
    values = metric_history(run.run_id, "loss").value.tolist()
    assert values[0] == 1.0 and math.isnan(values[1])
    assert values[2:] == [1.7976931348623157e308, -1.7976931348623157e308]  # MLflow's sql store clamps ±inf


def test_points_are_buffered_then_sent_in_chunks(store, monkeypatch):
    monkeypatch.setattr(tracking, "FLUSH_POINTS", 10**9)
    monkeypatch.setattr(tracking, "FLUSH_SECONDS", 1e9)
    run = RunLogger(experiment="e", run_name="r", params={}, tags={})
    for step in range(1250):  # 2500 points: three log_batch calls of <= 1000
        run.log({"a": step, "b": -step}, step=step)
    assert len(metric_history(run.run_id, "a")) == 0  # still buffered
    run.flush()
    assert metric_history(run.run_id, "a").step.tolist() == list(range(1250))
    assert metric_history(run.run_id, "b").value.tolist() == [-float(s) for s in range(1250)]


def test_buffer_flushes_itself_when_full(store):
    run = RunLogger(experiment="e", run_name="r", params={}, tags={})
    for step in range(tracking.FLUSH_POINTS // 2):
        run.log({"a": step, "b": step}, step=step)  # the last call fills the buffer
    assert len(metric_history(run.run_id, "a")) == tracking.FLUSH_POINTS // 2


def test_context_manager_marks_failure_and_keeps_points(store):
    with pytest.raises(ValueError, match="diverged"):
        with RunLogger(experiment="e", run_name="r", params={}, tags={}) as run:
            run.log({"loss": 2.0}, step=0)
            raise ValueError("diverged")
    with RunLogger(experiment="e", run_name="ok", params={}, tags={}) as ok:
        ok.log({"loss": 1.0}, step=0)
    frame = runs_dataframe(experiment="e").set_index("run_name")
    assert frame[["status", "tags.status", "metrics.loss"]].to_dict("index") == {
        "r": {"status": "FAILED", "tags.status": "failed", "metrics.loss": 2.0},
        "ok": {"status": "FINISHED", "tags.status": "finished", "metrics.loss": 1.0},
    }


STEPS_PER_PROCESS = 300  # x 2 keys = 600 points: three flushes each, interleaved across processes


def _log_from_process(run_name: str) -> None:
    """Runs in a spawned process: races the others to create the store and the experiment, then logs."""
    with RunLogger(experiment="concurrent", run_name=run_name, params={"worker": run_name}, tags={}) as run:
        for step in range(STEPS_PER_PROCESS):
            run.log({"loss": 1.0 / (step + 1), "tokens": 1000.0 * step}, step=step)


def test_four_processes_lose_and_duplicate_nothing(fresh_store):
    context = multiprocessing.get_context("spawn")
    workers = [context.Process(target=_log_from_process, args=(f"w{i}",)) for i in range(4)]
    for worker in workers:
        worker.start()
    for worker in workers:
        worker.join(120)
    assert [worker.exitcode for worker in workers] == [0, 0, 0, 0]
    frame = runs_dataframe(experiment="concurrent")
    assert sorted(frame.run_name) == ["w0", "w1", "w2", "w3"]
    assert set(frame.status) == {"FINISHED"}
    for run_id in frame.run_id:
        for key in ("loss", "tokens"):
            assert metric_history(run_id, key).step.tolist() == list(range(STEPS_PER_PROCESS))


def _listening_addresses(port: int) -> set[str]:
    """Local addresses of sockets listening on `port`, from Linux's /proc/net/tcp{,6}."""
    found = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        for line in Path(table).read_text().splitlines()[1:]:
            local, state = line.split()[1], line.split()[3]
            address, hex_port = local.split(":")
            if state == "0A" and int(hex_port, 16) == port:  # 0A: LISTEN
                found.add(socket.inet_ntoa(bytes.fromhex(address)[::-1]) if len(address) == 8 else f"ipv6:{address}")
    return found


def _experiment_names(url: str, timeout_s: float) -> list[str]:
    """Poll the REST API until the server answers; the names of its experiments."""
    deadline = time.monotonic() + timeout_s
    while True:
        try:
            with urllib.request.urlopen(f"{url}/api/2.0/mlflow/experiments/search?max_results=100", timeout=5) as reply:
                return [e["name"] for e in json.load(reply)["experiments"]]
        except OSError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.5)


@pytest.mark.slow
@pytest.mark.skipif(not Path("/proc/net/tcp").exists(), reason="reads Linux's socket table")
def test_serve_ui_answers_on_loopback_only(store, tmp_path):
    RunLogger(experiment="ui-check", run_name="r", params={}, tags={}).finish("FINISHED")
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    log = tmp_path / "ui.log"
    code = f"from windtunnel.tracking import serve_ui; serve_ui(port={port})"
    with log.open("w") as out:  # the child keeps its own copy of the file
        ui = _python(code, stdout=out, stderr=subprocess.STDOUT)
    try:
        assert "ui-check" in _experiment_names(f"http://127.0.0.1:{port}", timeout_s=60), log.read_text()
        assert _listening_addresses(port) == {"127.0.0.1"}
        ui.send_signal(signal.SIGTERM)  # as `kill`; Ctrl-C takes the same path
        assert ui.wait(30) == 0, log.read_text()
        assert _listening_addresses(port) == set()
        assert f"MLflow UI: http://127.0.0.1:{port}" in log.read_text()
    finally:
        if ui.poll() is None:
            ui.kill()
            ui.wait()


def test_serve_ui_refuses_a_remote_tracking_uri(monkeypatch):
    monkeypatch.setenv("MLFLOW_TRACKING_URI", "http://mlflow.example:5000")
    with pytest.raises(WindtunnelError, match="already a tracking server"):
        serve_ui(port=5000)


def _metric_names(run_id: str) -> list[str]:
    return sorted(tracking._client().get_run(run_id).data.metrics)


def test_a_short_run_gets_system_metrics(store):
    run = RunLogger(experiment="e", run_name="r", params={}, tags={}, system_metrics=True)
    run.log({"loss": 1.0}, step=0)
    run.finish("FINISHED")  # well before the first interval: one sample over the whole run
    names = _metric_names(run.run_id)
    assert {"system/cpu_utilization_percentage", "system/system_memory_usage_megabytes"} <= set(names), names
    assert 0 < metric_history(run.run_id, "system/system_memory_usage_megabytes").value.iloc[0]


def test_system_metrics_are_sampled_during_a_run_and_stop_with_it(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL", "0.2")
    run = RunLogger(experiment="e", run_name="r", params={}, tags={}, system_metrics=True)
    time.sleep(1.5)
    run.finish("FINISHED")
    steps = metric_history(run.run_id, "system/cpu_utilization_percentage").step.tolist()
    assert len(steps) >= 3 and steps == list(range(len(steps)))
    time.sleep(0.5)  # the sampling thread has stopped: nothing more arrives
    assert len(metric_history(run.run_id, "system/cpu_utilization_percentage")) == len(steps)


def test_without_psutil_training_logs_on_without_system_metrics(store, monkeypatch):
    monkeypatch.setitem(sys.modules, "psutil", None)  # `import psutil` raises ImportError
    monkeypatch.setattr(tracking, "_SYSTEM_METRICS_OFF", [])
    with pytest.warns(UserWarning, match="pip install psutil"):
        run = RunLogger(experiment="e", run_name="r", params={}, tags={}, system_metrics=True)
    run.log({"loss": 1.0}, step=0)
    run.finish("FINISHED")
    assert _metric_names(run.run_id) == ["loss"]
    assert runs_dataframe(experiment="e").status.tolist() == ["FINISHED"]


def test_system_metrics_can_be_switched_off(store, monkeypatch):
    monkeypatch.setenv("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "false")
    run = RunLogger(experiment="e", run_name="r", params={}, tags={}, system_metrics=True)
    run.finish("FINISHED")
    assert _metric_names(run.run_id) == []


def _artifacts(run_id: str, folder: str) -> dict[str, str]:
    """{path: text} of the run's artifacts in `folder`, downloaded through MLflow."""
    import mlflow.artifacts

    client = tracking._client()
    found = {}
    for item in client.list_artifacts(run_id, folder):
        local = mlflow.artifacts.download_artifacts(run_id=run_id, artifact_path=item.path,
                                                    tracking_uri=tracking_uri())
        found[item.path] = Path(local).read_text()
    return found


def test_log_outputs_reuses_one_output_run_and_stores_under_results(store, tmp_path):
    report = tmp_path / "report.html"
    report.write_text("<html>1</html>")
    first = tracking.log_outputs([report], output="report")
    report.write_text("<html>2</html>")
    again = tracking.log_outputs([report], output="report")
    assert again == first
    frame = runs_dataframe(experiment=tracking.OUTPUTS_EXPERIMENT)
    assert frame[["run_name", "status", "tags.kind"]].values.tolist() == [["report", "FINISHED", "outputs"]]
    assert _artifacts(first, "report") == {"report/report.html": "<html>2</html>"}  # overwritten, not added
    stored = list((store / "mlartifacts").rglob("report.html"))
    assert len(stored) == 1 and stored[0].read_text() == "<html>2</html>"


def test_log_outputs_of_a_study_go_on_its_sweeps_parent_run(store, tmp_path):
    micro = RunLogger(experiment="lr", run_name="lr (micro)", params={}, tags={"kind": "sweep", "scale": "micro"})
    paper = RunLogger(experiment="lr", run_name="lr (paper)", params={}, tags={"kind": "sweep", "scale": "paper"})
    for run in (micro, paper):
        run.finish("FINISHED")
    (tmp_path / "fit.json").write_text('{"a": 1}')
    (tmp_path / "fig.png").write_text("png")
    files = [tmp_path / "fit.json", tmp_path / "fig.png"]
    (tmp_path / "sub").mkdir()  # a folder in the folder: not logged
    assert tracking.log_outputs([tmp_path], output="lr", sweep="lr", scale="micro") == micro.run_id
    assert _artifacts(micro.run_id, "lr") == {"lr/fig.png": "png", "lr/fit.json": '{"a": 1}'}
    assert _artifacts(paper.run_id, "lr") == {}
    assert runs_dataframe(experiment="lr").status.tolist() == ["FINISHED", "FINISHED"]  # the sweep's state kept
    assert len(runs_dataframe(experiment=tracking.OUTPUTS_EXPERIMENT)) == 0
    elsewhere = tracking.log_outputs(files, output="wsd", sweep="wsd", scale="micro")  # that sweep never ran here
    assert runs_dataframe(experiment=tracking.OUTPUTS_EXPERIMENT).run_name.tolist() == ["wsd (micro)"]
    assert set(_artifacts(elsewhere, "wsd")) == {"wsd/fig.png", "wsd/fit.json"}


def test_log_outputs_refuses_a_missing_file(store, tmp_path):
    with pytest.raises(WindtunnelError, match=r"nope.json is not a file"):
        tracking.log_outputs([tmp_path / "nope.json"], output="plans")


def test_a_sqlite_store_named_by_env_keeps_artifacts_beside_it(tmp_path, monkeypatch, empty_db):
    """As Ray workers see the default store (MLFLOW_TRACKING_URI set by the driver): never ./mlruns of their cwd."""
    (tmp_path / "store").mkdir()
    shutil.copy(empty_db, tmp_path / "store" / "mlflow.db")
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"sqlite:///{tmp_path / 'store' / 'mlflow.db'}")
    monkeypatch.chdir(tmp_path)
    run = RunLogger(experiment="e", run_name="r", params={}, tags={})
    run.finish("FINISHED")
    assert tracking._client().get_run(run.run_id).info.artifact_uri.startswith((tmp_path / "store" / "mlartifacts").as_uri())
    assert not (tmp_path / "mlruns").exists()


def test_a_constructor_that_fails_leaves_no_run_running(store, monkeypatch):
    def refuse(self, params, tags):
        raise ValueError("store refused the params")

    monkeypatch.setattr(RunLogger, "_log_entities", refuse)
    with pytest.raises(ValueError, match="refused"):
        RunLogger(experiment="e", run_name="r", params={"a": 1}, tags={})
    assert runs_dataframe(experiment="e")[["status", "tags.status"]].values.tolist() == [["FAILED", "failed"]]


def test_close_children_ends_only_running_children_of_that_parent(store):
    parent = RunLogger(experiment="e", run_name="p", params={}, tags={})
    other = RunLogger(experiment="e", run_name="q", params={}, tags={})
    open_child = RunLogger(experiment="e", run_name="c1", params={}, tags={}, parent_run_id=parent.run_id)
    done = RunLogger(experiment="e", run_name="c2", params={}, tags={}, parent_run_id=parent.run_id)
    done.finish("FINISHED")
    RunLogger(experiment="e", run_name="c3", params={}, tags={}, parent_run_id=other.run_id)
    closed = tracking.close_children(parent.run_id, status="KILLED", tag_status="interrupted")
    assert closed == [open_child.run_id]
    status = runs_dataframe(experiment="e").set_index("run_name")["status"].to_dict()
    assert status == {"p": "RUNNING", "q": "RUNNING", "c1": "KILLED", "c2": "FINISHED", "c3": "RUNNING"}


def test_runs_carry_their_source_and_experiments_their_description(store):
    """MLflow as its users expect it: the UI's Source/Version columns (windtunnel's version, the git commit of a
    checkout) and each experiment's description, set at creation and kept up to date."""
    from mlflow import MlflowClient

    from windtunnel import __version__

    run = RunLogger(experiment="train", run_name="a", params={}, tags={})
    run.finish("FINISHED", tag_status="finished")
    sweep = RunLogger(experiment="lr", run_name="lr (micro)", params={}, tags={}, note="LR transfer. Sweep file lr.yaml")
    sweep.finish("FINISHED", tag_status="finished")
    client = MlflowClient(tracking_uri())
    tags = client.get_run(run.run_id).data.tags
    assert tags["windtunnel.version"] == __version__ and tags["mlflow.source.name"] == "windtunnel"
    head = subprocess.run(["git", "-C", str(ROOT), "rev-parse", "HEAD"], capture_output=True, text=True)
    if head.returncode == 0:  # a checkout (CI's clean clone): its commit, and whether its code was edited
        assert tags["mlflow.source.git.commit"] == head.stdout.strip()
        assert tags["windtunnel.git.dirty"] in ("true", "false")
    notes = {e.name: e.tags.get("mlflow.note.content") for e in client.search_experiments()}
    assert notes["train"] == tracking.EXPERIMENT_NOTES["train"] and notes["lr"] == "LR transfer. Sweep file lr.yaml"
    again = RunLogger(experiment="lr", run_name="lr (micro)", params={}, tags={}, run_id=sweep.run_id, note="new")
    again.finish("FINISHED", tag_status="finished")
    assert client.get_experiment_by_name("lr").tags["mlflow.note.content"] == "new"


def test_a_run_logs_its_corpus_as_a_dataset_input(store):
    from mlflow import MlflowClient

    from tests.conftest import tiny_spec
    from windtunnel.data import prepare
    from windtunnel.runs import log_corpus

    spec = tiny_spec()
    corpus = prepare(spec.data, vocab_size=spec.model.vocab_size, progress=False)
    run = RunLogger(experiment="train", run_name="a", params={}, tags={})
    log_corpus(run, spec)
    log_corpus(run, spec)  # a resumed run logs it again: still one input
    run.finish("FINISHED", tag_status="finished")
    inputs = MlflowClient(tracking_uri()).get_run(run.run_id).inputs.dataset_inputs
    assert len(inputs) == 1
    dataset = inputs[0].dataset
    assert (dataset.name, dataset.digest, dataset.source_type) == ("python", corpus.fingerprint[:36], "code")
    assert json.loads(dataset.source)["versions"]["torch"] and inputs[0].tags[0].value == "training"
    profile = json.loads(dataset.profile)
    assert profile["train_tokens"] == len(corpus.train) and profile["code_tokens"] == len(corpus.evals["code"])


@pytest.mark.skipif(browser.chromium() is None, reason="no Chromium (make test installs Debian's chromium as root)")
def test_the_mlflow_ui_lists_each_experiment_with_its_description(store, tmp_path):
    """The MLflow UI's experiment list, in headless Chromium, says what each experiment is."""
    RunLogger(experiment="lr", run_name="lr (micro)", params={}, tags={},
              note="LR transfer across widths. Sweep file lr.yaml").finish("FINISHED", tag_status="finished")
    RunLogger(experiment="train", run_name="a", params={}, tags={}).finish("FINISHED", tag_status="finished")
    port = browser._free_port()
    server = tracking.start_ui_server(port=port)
    try:
        text = browser.Page.visit(f"http://127.0.0.1:{port}/#/experiments", "document.body && "
                                  "document.body.innerText.includes('Sweep file lr.yaml') && document.body.innerText",
                                  timeout=120, screenshot=tmp_path / "experiments.png")
    finally:
        tracking.stop_ui_server(server)
    assert text and "Description" in text, text
    assert "LR transfer across widths" in text and tracking.EXPERIMENT_NOTES["train"] in text
