"""Tests of windtunnel.uicheck: a real MLflow UI server on a tiny store built with RunLogger (no Ray), and an empty store."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from windtunnel import uicheck
from windtunnel.tracking import RunLogger

ROOT = Path(__file__).resolve().parents[1]  # the repository: put on PYTHONPATH of the subprocess


def _uicheck(results: Path) -> subprocess.CompletedProcess:
    env = os.environ | {"WINDTUNNEL_RESULTS": str(results), "PYTHONPATH": str(ROOT)}
    env.pop("MLFLOW_TRACKING_URI", None)
    return subprocess.run([sys.executable, "-m", "windtunnel.uicheck"], env=env, capture_output=True, text=True,
                          timeout=600)


@pytest.mark.slow
def test_uicheck_lists_every_child_of_the_sweep(tmp_path, monkeypatch):
    results = tmp_path / "results"
    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(results))
    monkeypatch.delenv("MLFLOW_TRACKING_URI", raising=False)
    with RunLogger(experiment="tiny", run_name="tiny (micro)", params={}, tags={"kind": "sweep"}) as parent:
        for name in ("w64 lr=0.01", "w64 lr=0.02"):
            with RunLogger(experiment="tiny", run_name=name, params={}, tags={}, parent_run_id=parent.run_id) as run:
                for step, loss in enumerate([4.0, 3.5, 3.25]):
                    run.log({"train/loss": loss}, step=step)

    check = _uicheck(results)

    assert check.returncode == 0, check.stderr
    assert "2 child runs" in check.stdout
    for name in ("w64 lr=0.01", "w64 lr=0.02"):
        line = next(line for line in check.stdout.splitlines() if name in line)
        assert "finished" in line and "points     3" in line and "last 3.2500" in line
    if shutil.which("chromium"):
        for png in ("runs.png", "compare.png", "loss.png"):
            assert (results / "ui" / png).stat().st_size > 20_000


def test_uicheck_fails_in_one_line_without_a_sweep(tmp_path):
    check = _uicheck(tmp_path / "results")

    assert check.returncode != 0
    assert len(check.stderr.strip().splitlines()) == 1
    assert "no sweep" in check.stderr


@pytest.mark.parametrize(("points", "problem"), [([], "no train/loss points"),
                                                 ([(0, 4.0), (1, 3.5), (1, 3.4)], "duplicated train/loss steps"),
                                                 ([(0, 4.0), (1, 3.5)], None)])
def test_check_child_flags_empty_and_duplicated_histories(points, problem, monkeypatch, capsys):
    monkeypatch.setattr(uicheck, "_loss_steps", lambda base, run_id: points)
    run = {"info": {"run_id": "abc", "run_name": "w64"}, "data": {"tags": [{"key": "status", "value": "finished"}]}}

    found = uicheck._check_child("http://unused", run)

    assert found == (problem and f"run 'w64' has {problem}")
    assert capsys.readouterr().out.split() == ["w64", "finished", "train/loss", "points", str(len(points)), "last",
                                               f"{points[-1][1]:.4f}" if points else "-"]
