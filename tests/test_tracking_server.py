"""windtunnel against a real `mlflow server` (as on a cluster): with MLFLOW_TRACKING_URI set, a training run started
from the command line and the output files land on the server, its artifact root holds the files, and the local
results/mlflow.db is never created."""

import os
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from windtunnel import tracking

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "tokens=8192", "--set", "batch_tokens=2048", "--set", "seq_len=64", "--set", "eval_every=2",
        "--set", "data.eval_tokens=2048"]
START_SECONDS = 90  # `mlflow server` answers ~4 s after start on an idle machine; its first start migrates the db


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def _wait_until_up(url: str, server: subprocess.Popen, log: Path) -> None:
    deadline = time.monotonic() + START_SECONDS
    while time.monotonic() < deadline:
        assert server.poll() is None, f"mlflow server exited with {server.returncode}: {log.read_text()[-2000:]}"
        try:
            with urllib.request.urlopen(f"{url}/health", timeout=2) as reply:
                if reply.status == 200:
                    return
        except OSError:
            time.sleep(0.5)
    pytest.fail(f"mlflow server did not answer {url}/health in {START_SECONDS} s: {log.read_text()[-2000:]}")


@pytest.fixture
def server(tmp_path):
    """`mlflow server` on 127.0.0.1 with its own sqlite backend and artifact root in tmp_path; its URL."""
    root = tmp_path / "server"
    root.mkdir()
    port, log = _free_port(), tmp_path / "server.log"
    command = [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
               "--artifacts-destination", str(root / "artifacts"), "--serve-artifacts",
               "--host", "127.0.0.1", "--port", str(port), "--workers", "1"]
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    with log.open("w") as out:
        process = subprocess.Popen(command, env=env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(url, process, log)
        yield url
    finally:
        tracking.stop_ui_server(process)  # its whole process group: mlflow server and uvicorn


@pytest.mark.slow
def test_runs_metrics_and_outputs_go_to_the_tracking_server(server, tmp_path, monkeypatch, session_results):
    from mlflow import MlflowClient

    results = tmp_path / "results"
    results.mkdir()
    (session_results / "cache").mkdir(exist_ok=True)
    (results / "cache").symlink_to(session_results / "cache")  # the session's tokenizer and shards
    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(results))
    monkeypatch.setenv("MLFLOW_TRACKING_URI", server)

    # 1) a training run from the command line, in its own process
    env = os.environ | {"PYTHONPATH": str(ROOT)}
    out = subprocess.run([sys.executable, "-m", "windtunnel.cli", "train", "micro-24k", *TINY], cwd=ROOT,
                         env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    client = MlflowClient(server)
    [run] = client.search_runs([client.get_experiment_by_name("train").experiment_id])
    assert f"MLflow run {run.info.run_id}" in out.stdout
    assert run.info.status == "FINISHED" and run.data.tags["status"] == "finished"
    assert run.data.params["model.name"] == "micro-24k"
    assert [m.step for m in client.get_metric_history(run.info.run_id, "train/loss")] == [1, 2, 3, 4]
    assert "system/cpu_utilization_percentage" in run.data.metrics

    # 2) output files, as `windtunnel fit` and `windtunnel report` log them
    (tmp_path / "fit.json").write_text('{"alpha": 0.3}')
    (tmp_path / "report.html").write_text("<html>report</html>")
    study = tracking.log_outputs([tmp_path / "fit.json"], output="scaling_law", sweep="scaling_law", scale="micro")
    report = tracking.log_outputs([tmp_path / "report.html"], output="report")
    assert [a.path for a in client.list_artifacts(study, "scaling_law")] == ["scaling_law/fit.json"]
    assert [a.path for a in client.list_artifacts(report, "report")] == ["report/report.html"]
    assert client.get_run(report).info.artifact_uri.startswith("mlflow-artifacts:/")  # proxied by the server
    stored = {p.name: p.read_text() for p in (tmp_path / "server" / "artifacts").rglob("*") if p.is_file()}
    assert stored == {"fit.json": '{"alpha": 0.3}', "report.html": "<html>report</html>"}

    # 3) nothing went to the local store
    assert not (results / "mlflow.db").exists() and not (results / "mlartifacts").exists()
    assert not (tmp_path / "mlruns").exists()  # MLflow's default artifact root for a local store: the cwd's
