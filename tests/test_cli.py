"""The `windtunnel` command as a user runs it: models, train, and one-line errors that touch nothing."""

import argparse
import hashlib
import json
import os
import re
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
    out = windtunnel("--models", "models", "models", cwd=tmp_path, results=tmp_path / "results")
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
    (["plan", "minicpm-1.2B"], "model='minicpm-1.2B' is not allowed; did you mean 'minicpm-1.2b'? known models: "),
    (["sweep", "lrr", "--dry-run"], "lrr: sweep file not found (did you mean 'lr'? searched"),
    (["sweep", "lr", "--scale", "micr", "--dry-run"], "scales='micr' is not allowed; did you mean 'micro'? scales "),
    (["fit", "scaling-lw"], "no study 'scaling-lw'; did you mean 'scaling_law'? studies: scaling_law, "),
    (["train", "micro-24k", "--set", "learning_rate=0.1"], "learning_rate=0.1 is not allowed; did you mean 'lr'? known keys"),
    (["train", "micro-24k", "--set", "lr=fast"], "lr='fast' is not allowed; a finite number > 0"),
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


@pytest.mark.parametrize("args, expected", [
    (["train", "micro-24k", "--set", "seq_len=0"], "--set: seq_len=0 is not allowed; an integer ≥ 1 (tokens)"),
    (["train", "micro-24k", "--set", "lr=nan"], "--set: lr='nan' is not allowed; a finite number > 0"),
    (["train", "micro-24k", "--set", "micro_batch_tokens=100"], "--set: micro_batch_tokens=100 is not allowed; a "
     "multiple of seq_len=128"),  # checked before the run's folder or MLflow run is made
    (["train", "micro-24k", "--set", "tokens=8192", "--set", "schedule.warmup_tokens=65536"],
     "--set: schedule.warmup_tokens=65536 is not allowed; at most the run's tokens"),
    (["sweep", "no-such-sweep", "--dry-run"], "no-such-sweep: sweep file not found (searched"),
    (["plan", "micro-24k", "--tokens", "-1"], "plan: --tokens -1 is not allowed; give a positive number"),
    (["plan", "micro-24k", "--compute", "0"], "plan: --compute 0 is not allowed"),
    (["plan", "micro-24k", "--mfu", "1.5"], "argument --mfu: 1.5 is not allowed; a finite number in (0, 1]"),
    (["ui", "--port", "70000"], "argument --port: 70000 is not allowed; an integer in [1, 65535]"),
    (["sweep", "lr", "--num-cpus", "0"], "argument --num-cpus: 0 is not allowed; an integer ≥ 1"),
    (["launch", "plan.yaml", "--workers", "two"], "argument --workers: 'two' is not allowed; an integer ≥ 1"),
    (["--models", "/no/such/ladders", "models"], "/no/such/ladders: no such folder (--models or $WINDTUNNEL_MODELS)"),
])
def test_bad_numbers_are_refused_in_one_line_before_anything_is_written(finished_results, monkeypatch, capsys, args,
                                                                        expected):
    """In-process (fast): the same main() as the command, with the finished results folder as $WINDTUNNEL_RESULTS."""
    from windtunnel import cli

    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(finished_results))
    monkeypatch.setenv("WINDTUNNEL_MODELS", "")  # empty: the packaged ladders; main() may set it, this restores it
    before = _tree_digest(finished_results)
    try:
        code = cli.main(args)
    except SystemExit as stop:  # argparse refuses a bad option before main() runs anything
        code = stop.code
    err = capsys.readouterr().err
    assert code == 2 and err.count("\n") == 1 and expected in err, err
    assert _tree_digest(finished_results) == before


def test_an_empty_models_folder_is_named(tmp_path):
    out = windtunnel("--models", str(tmp_path), "models", cwd=tmp_path, results=tmp_path)
    assert out.returncode == 2 and f"{tmp_path}: no model ladders" in out.stderr and "Traceback" not in out.stderr


@pytest.mark.parametrize("cell, shown", [("abc", "'abc'"), ("", "an empty cell (or NaN)"), ("nan", "an empty cell"),
                                         ("-0.01", "-0.01")])
def test_a_bad_csv_cell_names_the_file_column_and_line_and_writes_nothing(tmp_path, monkeypatch, capsys, cell,
                                                                         shown):
    from windtunnel import cli

    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path / "results"))
    csv = tmp_path / "runs.csv"
    csv.write_text(f"model,lr,loss\nm,0.01,2.5\n\nm,{cell},2.4\nm,0.04,2.6\n")  # the bad cell: line 4
    assert cli.main(["fit", "lr", "--csv", str(csv)]) == 2
    err = capsys.readouterr().err
    assert f"{csv}: line 4 (the header is line 1), column 'lr': {shown}" in err and err.count("\n") == 1
    assert "is not allowed; a finite number > 0 (learning rate)" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["runs.csv"]  # no fit.json, no results folder


def test_the_ladders_and_sweeps_are_found_from_any_directory(tmp_path):
    results = os.environ["WINDTUNNEL_RESULTS"]  # the session's caches: the dry run fingerprints the corpus
    out = windtunnel("models", "--json", cwd=tmp_path, results=results)
    assert out.returncode == 0, out.stderr
    assert {"micro-24k", "minicpm-1.2b"} <= {r["name"] for r in json.loads(out.stdout)}
    out = windtunnel("sweep", "lr", "--dry-run", "--json", "--scale", "micro", cwd=tmp_path, results=results)
    assert out.returncode == 0, out.stderr  # by name; `sweeps/lr.yaml` too (test_graph: find_sweep)
    assert json.loads(out.stdout)["sweep"] == "lr" and json.loads(out.stdout)["n_runs"] > 0
    ladders = tmp_path / "ladders"  # --models: this folder's shapes beside the packaged ones, in `models` and sweeps
    ladders.mkdir()
    (ladders / "mine.yaml").write_text("defaults: {d_head: 16, vocab_size: 256}\nmodels:\n"
                                       "  tiny-a: {d_model: 32, n_heads: 2, n_layers: 2}\n")
    out = windtunnel("models", "--json", "--models", str(ladders), cwd=tmp_path, results=results)  # after the command
    assert out.returncode == 0, out.stderr
    names = [r["name"] for r in json.loads(out.stdout)]
    assert names[-1] == "tiny-a" and {"micro-24k", "minicpm-1.2b"} <= set(names)
    (tmp_path / "mine.yaml").write_text("name: mine\nscales:\n  micro: {models: [tiny-a, micro-24k], tokens: 65536}\n")
    out = windtunnel("--models", "ladders", "sweep", "mine.yaml", "--dry-run", "--json", cwd=tmp_path, results=results)
    assert out.returncode == 0, out.stderr
    assert json.loads(out.stdout)["n_runs"] == 2
    out = windtunnel("--models", "ladders", "sweep", "lr", "--dry-run", "--json", cwd=tmp_path, results=results)
    assert out.returncode == 0, out.stderr  # the packaged sweeps still find the packaged shapes
    (ladders / "copy.yaml").write_text("defaults: {d_head: 16, vocab_size: 256}\nmodels:\n"   # a packaged name:
                                       "  micro-24k: {d_model: 48, n_heads: 3, n_layers: 2}\n")  # the user's wins
    out = windtunnel("models", "--json", "--models", str(ladders), cwd=tmp_path, results=results)
    row = next(r for r in json.loads(out.stdout) if r["name"] == "micro-24k")
    assert (row["d_model"], row["file"]) == (48, str(ladders / "copy.yaml"))
    table = windtunnel("models", "--models", str(ladders), cwd=tmp_path, results=results).stdout
    assert "from copy.yaml of --models" in table and "replace packaged shapes of the same name" in table
    (ladders / "mine.yaml").write_text("defaults: {d_head: 16, vocab_size: 256}\nmodels:\n"   # one folder, one
                                       "  micro-24k: {d_model: 64, n_heads: 4, n_layers: 2}\n")  # name, two shapes
    out = windtunnel("models", "--models", str(ladders), cwd=tmp_path, results=results)
    assert out.returncode == 2 and out.stderr.count("\n") == 1, out.stderr
    assert f"{ladders / 'mine.yaml'}:3: models.micro-24k='micro-24k' is not allowed" in out.stderr
    assert "copy.yaml does not define otherwise" in out.stderr
    assert not (tmp_path / "results").exists()  # results go to $WINDTUNNEL_RESULTS, nothing beside the cwd


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
    while not list((tmp_path / "killed").glob("runs/*/checkpoints/step_00000040.dcp")) and time.time() < deadline:
        time.sleep(0.2)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    checkpoints = list((tmp_path / "killed").glob("runs/*/checkpoints/step_*.dcp"))
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


def _commands() -> dict:
    from windtunnel.cli import parser

    sub = next(a for a in parser()._actions if isinstance(a, argparse._SubParsersAction))
    return dict(sub.choices)


@pytest.mark.parametrize("command", sorted(_commands()))
def test_every_command_has_a_help_with_its_description_and_defaults(command, capsys):
    from windtunnel import cli

    with pytest.raises(SystemExit) as stop:
        cli.main([command, "--help"])
    out = capsys.readouterr().out
    assert stop.value.code == 0 and out.startswith(f"usage: windtunnel {command}")
    description = out.split("\n\n")[1]  # usage, description, arguments
    assert description[0].isupper() and description.rstrip().endswith("."), description
    assert "--results DIR" in out and "--models DIR" in out  # the global options, after the command too
    flat = re.sub(r"\s+", " ", out)
    for action in _commands()[command]._actions:  # each option's default, unless its help says it in words
        if action.option_strings and action.default not in (None, False, [], "==SUPPRESS==") and action.help:
            assert f"(default: {cli.shown(action.default)})" in flat or "default" in action.help, action.dest


def test_the_command_line_follows_the_conventions(tmp_path, capsys, monkeypatch):
    from windtunnel import __version__, cli

    with pytest.raises(SystemExit) as stop:
        cli.main(["--version"])
    assert stop.value.code == 0 and capsys.readouterr().out == f"windtunnel {__version__}\n"
    with pytest.raises(SystemExit) as stop:  # no prefix matching: --set is not read as sweep's --set-file
        cli.main(["sweep", "lr", "--set", "data.corpus=x.jsonl"])
    err = capsys.readouterr().err
    assert stop.value.code == 2 and "unrecognized arguments: --set data.corpus=x.jsonl" in err and err.count("\n") == 1


def test_results_and_fit_all_exit_codes(tmp_path):
    """--results after the command; `fit --all` that fits nothing is an error naming the scales with runs."""
    results = tmp_path / "mine"
    out = windtunnel("train", "micro-24k", *TINY, "--results", str(results), cwd=tmp_path, results=tmp_path / "env")
    assert out.returncode == 0, out.stderr
    assert len(list((results / "runs").iterdir())) == 1 and not (tmp_path / "env").exists()
    out = windtunnel("fit", "--all", "--scale", "micro", "--results", str(results), cwd=tmp_path)
    assert out.returncode == 2 and out.stderr.count("\n") == 1 + out.stderr.count("skipped"), out.stderr
    assert "no study's sweep has runs at that scale; no sweep has run yet" in out.stderr


def test_train_and_launch_dry_runs_print_the_resolved_spec_with_its_run_id(tmp_path):
    import yaml

    out = windtunnel("train", "micro-24k", *TINY, "--dry-run", cwd=tmp_path, results=tmp_path / "r")
    assert out.returncode == 0, out.stderr
    head, body = out.stdout.split("\n", 1)
    spec = yaml.safe_load(body)
    assert head.startswith("# run id: ") and len(head.split()[3]) == 12
    assert spec["tokens"] == 8192 and spec["model"]["d_model"] == 32 and spec["schedule"]["kind"] == "wsd"
    assert sorted(p.name for p in (tmp_path / "r").iterdir()) == ["cache"]  # the corpus's fingerprint, no run
    again = windtunnel("train", "micro-24k", *TINY, cwd=tmp_path, results=tmp_path / "r")
    assert again.returncode == 0 and (tmp_path / "r" / "runs" / head.split()[3]).is_dir()  # the id it trains under
