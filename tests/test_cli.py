"""The `windtunnel` command as a user runs it: models, train, and one-line errors that touch nothing."""

import hashlib
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
TINY = ["--set", "tokens=8192", "--set", "batch_tokens=2048", "--set", "seq_len=64", "--set", "eval_every=2",
        "--set", "data.eval_tokens=2048"]


def windtunnel(*args, cwd=ROOT, results=None):
    env = {**os.environ, "WINDTUNNEL_RESULTS": str(results or os.environ["WINDTUNNEL_RESULTS"])}
    return subprocess.run([sys.executable, "-m", "windtunnel.cli", *args], cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=300)


def test_models_json_lists_every_shape_with_exact_n():
    out = windtunnel("models", "--json")
    assert out.returncode == 0, out.stderr
    rows = {r["name"]: r for r in json.loads(out.stdout)}
    assert rows["minicpm-1.2b"]["n_params"] == 1_247_442_432
    assert rows["minicpm-2.4b"]["n_params"] == 2_442_057_984
    assert {"9M", "0.5B", "micro-24k"} <= set(rows)
    table = windtunnel("models")
    assert "1,247,442,432" in table.stdout


def test_train_prints_a_summary_and_logs_to_mlflow(tmp_path):
    out = windtunnel("train", "micro-24k", *TINY, results=tmp_path)
    assert out.returncode == 0, out.stderr
    summary = out.stdout.strip().splitlines()[-1]
    assert "finished" in summary and "bpb" in summary and "tok/s" in summary
    assert "tok" in out.stderr  # the progress bar
    from windtunnel import tracking
    os.environ["WINDTUNNEL_RESULTS"], old = str(tmp_path), os.environ["WINDTUNNEL_RESULTS"]
    try:
        runs = tracking.runs_dataframe(experiment="train")
        assert len(runs) == 1 and runs.iloc[0]["params.model.name"] == "micro-24k"
        assert list(tracking.metric_history(runs.iloc[0]["run_id"], "train/loss")["step"]) == [1, 2, 3, 4]
    finally:
        os.environ["WINDTUNNEL_RESULTS"] = old


def _tree_digest(folder: Path) -> str:
    digest = hashlib.sha256()
    for path in sorted(folder.rglob("*")):
        if path.is_file():
            digest.update(str(path).encode() + path.read_bytes())
    return digest.hexdigest()


BAD_LADDER = {
    "unknown key": ("a: {d_model: 32, n_heads: 2, n_layers: 2, n_head: 2}", "models.a.n_head"),
    "wrong type": ("a: {d_model: 32, n_heads: 2, n_layers: two}", "models.a.n_layers"),
    "d_model % d_head": ("a: {d_model: 40, n_heads: 2, n_layers: 2}", "models.a.d_model"),
    "n_heads % n_kv_heads": ("a: {d_model: 48, n_heads: 3, n_kv_heads: 2, n_layers: 2}", "models.a.n_kv_heads"),
}


@pytest.mark.parametrize("case", BAD_LADDER)
def test_bad_ladder_is_one_line_naming_file_and_key(tmp_path, case):
    fields, key = BAD_LADDER[case]
    (tmp_path / "models").mkdir()
    ladder = tmp_path / "models" / "mine.yaml"
    ladder.write_text(f"defaults: {{d_head: 16, vocab_size: 256}}\nmodels:\n  {fields}\n")
    out = windtunnel("models", cwd=tmp_path, results=tmp_path / "results")
    assert out.returncode == 2 and out.stdout == ""
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert str(ladder) in out.stderr and key in out.stderr and "allowed" in out.stderr


@pytest.fixture(scope="module")
def finished_results(tmp_path_factory):
    """A results folder holding one finished run and its MLflow store, to check errors leave it alone."""
    results = tmp_path_factory.mktemp("kept")
    assert windtunnel("train", "micro-24k", *TINY, results=results).returncode == 0
    return results


@pytest.mark.parametrize("args, expected", [
    (["train", "micro-9000"], "model='micro-9000' is not allowed; known models: micro-24k"),
    (["train", "micro-24k", "--set", "learning_rate=0.1"], "learning_rate=0.1 is not allowed; known keys"),
    (["train", "micro-24k", "--set", "lr=fast"], "lr='fast' is not allowed; a value of type float"),
    (["train", "micro-24k", "--set", "model.d_model=40"], "model.d_model=40 is not allowed; a multiple of d_head=16"),
    (["train", "micro-24k", "--set", "model.n_kv_heads=3"], "model.n_kv_heads=3 is not allowed; a divisor of n_heads=2"),
    (["train", "micro-24k", "--set", "data.corpus=/no/such/corpus.jsonl"], "/no/such/corpus.jsonl"),
    (["train", "micro-24k", "--set-file", "/no/such/best.yaml"], "/no/such/best.yaml: override file not found"),
    (["sweep", "sweeps/lr.yaml", "--set-file", "/no/such/best.yaml"], "/no/such/best.yaml: override file not found"),
    (["fit", "lr", "--csv", "/no/such/runs.csv"], "/no/such/runs.csv: cannot read as CSV"),
    (["search", "sweeps/mup_search.yaml", "--scale", "nope"], "scales='nope' is not allowed"),
    (["fit", "scaling-law", "--sweep", "--scale", "nowhere"], "no runs of sweep 'scaling_law' at scale 'nowhere'"),
])
def test_bad_input_is_one_line_and_touches_no_result(finished_results, args, expected):
    before = _tree_digest(finished_results)
    out = windtunnel(*args, results=finished_results)
    assert out.returncode == 2, out.stderr
    assert out.stderr.count("\n") == 1 and "Traceback" not in out.stderr
    assert expected in out.stderr
    assert _tree_digest(finished_results) == before


def test_missing_models_folder(tmp_path):
    out = windtunnel("models", cwd=tmp_path, results=tmp_path)
    assert out.returncode == 2 and "no model ladders" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.slow
def test_sigkill_then_same_command_resumes_and_logs_each_step_once(tmp_path):
    """Kill -9 mid-run, run the same command again: it resumes from the checkpoint, and MLflow holds
    every step exactly once with the same values as an uninterrupted run."""
    import signal
    import time

    from windtunnel import tracking

    args = ["train", "micro-24k", "--set", "tokens=204800", "--set", "batch_tokens=2048", "--set", "seq_len=64",
            "--set", "checkpoint_every=20", "--set", "eval_every=50", "--set", "data.eval_tokens=2048"]
    env = {**os.environ, "WINDTUNNEL_RESULTS": str(tmp_path / "killed")}
    proc = subprocess.Popen([sys.executable, "-m", "windtunnel.cli", *args], cwd=ROOT, env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.time() + 240
    while not list((tmp_path / "killed").glob("runs/*/checkpoints/step_00000040.pt")) and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    checkpoints = list((tmp_path / "killed").glob("runs/*/checkpoints/*.pt"))
    assert checkpoints and all("00000100" not in p.name for p in checkpoints), "killed too late to test resume"
    assert windtunnel(*args, results=tmp_path / "killed").returncode == 0
    assert windtunnel(*args, results=tmp_path / "clean").returncode == 0

    histories = {}
    for name in ("killed", "clean"):
        os.environ["WINDTUNNEL_RESULTS"], old = str(tmp_path / name), os.environ["WINDTUNNEL_RESULTS"]
        try:
            run = tracking.runs_dataframe(experiment="train").iloc[0]
            histories[name] = {key: tracking.metric_history(run["run_id"], key)
                               for key in ("train/loss", "grad/norm", "eval/code/bpb")}
        finally:
            os.environ["WINDTUNNEL_RESULTS"] = old
    for key, clean in histories["clean"].items():
        killed = histories["killed"][key]
        assert killed["step"].is_unique, key  # nothing logged twice
        assert list(killed["step"]) == list(clean["step"]), key  # nothing lost
        assert list(killed["value"]) == list(clean["value"]), key  # bitwise the same curve
