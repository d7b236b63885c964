"""Closed-form parameter counts and FLOPs (windtunnel.counts) against the meta-device count of the real model, and
the commands that count without torch: `sweep --dry-run`, `plan` and `fit` never import it."""

import dataclasses
import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from windtunnel.config import ModelSpec, load_models
from windtunnel.counts import attention_flops_per_token, flops_per_token, n_params
from windtunnel.model import count_params

ROOT = Path(__file__).resolve().parents[1]


@pytest.mark.parametrize("parametrization", ["mup", "sp"])
def test_every_ladder_entry_counts_as_the_real_model(parametrization):
    """Every shape of every models/*.yaml, µP and SP: N and N with the tied embedding, to the parameter."""
    models = load_models()
    assert {"micro-24k", "9M", "minicpm-2.4b"} <= set(models)  # micro.yaml, paper.yaml, minicpm.yaml
    for name, spec in models.items():
        spec = dataclasses.replace(spec, parametrization=parametrization)
        assert n_params(spec) == count_params(spec), name
        assert n_params(spec, embedding=True) == count_params(spec, embedding=True), name


def test_counts_of_shapes_the_ladders_do_not_have():
    """Grouped-query attention, a d_ff off the 2.5·d rule, one layer: the terms a ladder could leave untested."""
    for spec in (ModelSpec(name="gqa", d_model=96, n_heads=6, n_kv_heads=2, d_head=16, n_layers=3, vocab_size=300),
                 ModelSpec(name="ff", d_model=64, n_heads=2, d_head=32, d_ff=100, n_layers=1, vocab_size=17)):
        for embedding in (False, True):
            assert n_params(spec, embedding=embedding) == count_params(spec, embedding=embedding), spec.name


def test_flops_per_token_and_attention():
    spec = ModelSpec(name="t", d_model=32, n_heads=2, d_head=16, n_layers=2, vocab_size=256, d_base=32)
    assert attention_flops_per_token(spec, seq_len=128) == 12 * 2 * 32 * 128
    assert flops_per_token(spec, seq_len=128) == 6 * (count_params(spec) + 32 * 256) + 12 * 2 * 32 * 128


def test_dry_run_plan_and_fit_do_not_import_torch(tmp_path, monkeypatch):
    """One fresh interpreter runs each command (the ladders, a sweep's dry run, a plan, a law from a CSV and from
    stored runs, a study) and then fails if torch was imported; a stored run makes the fits read MLflow and expand
    the sweep."""
    from windtunnel.tracking import RunLogger

    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path / "results"))
    run = RunLogger(experiment="scaling_law", run_name="old", params={"N": 1e4, "D": 1e6, "coord.stage": "decay"},
                    tags={"sweep": "scaling_law", "scale": "micro", "windtunnel.run": "old"})
    run.finish("FINISHED", tag_status="finished")
    rows = ["N,D,loss"] + [f"{n},{d},{20 * n ** -0.3 + 60 * d ** -0.3 + 1.0}"
                           for n in (1e5, 3e5, 1e6, 3e6) for d in (2e6, 5e6, 1e7, 3e7)]
    (tmp_path / "runs.csv").write_text("\n".join(rows))
    commands = [["models", "--json"], ["sweep", "sweeps/scaling_law.yaml", "--dry-run", "--json"],
                ["plan", "micro-425k", "--tokens", "1e7"],
                ["fit", "scaling-law", "--csv", str(tmp_path / "runs.csv"), "--bootstrap", "0", "--json"],
                ["fit", "scaling-law", "--sweep", "--bootstrap", "0"],   # its one run has no evaluation: no point
                ["fit", "lr", "--no-plots"]]                             # a study whose sweep has not run: skipped
    code = ("import json, sys; from windtunnel.cli import main; "
            f"codes = [main(argv) for argv in {commands!r}]; print(json.dumps(codes)); "
            "sys.exit('torch imported' if 'torch' in sys.modules else 0)")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT), os.environ.get("PYTHONPATH", "")])}
    out = subprocess.run([sys.executable, "-c", code], cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-2000:]
    codes = json.loads(out.stdout.strip().splitlines()[-1])
    assert codes == [0, 0, 0, 0, 2, 3], out.stderr[-2000:]
    assert "fit needs at least 6 points (got 0)" in out.stderr and "skipped lr: no runs of sweep 'lr'" in out.stderr
    assert '"n_runs"' in out.stdout and (tmp_path / "results" / "plans" / "micro-425k.yaml").is_file()
