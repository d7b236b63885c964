"""Sweep specs → run graphs: ids, decay branches, token accounting and spec errors."""

import json
import subprocess
import sys
from pathlib import Path

import pytest

from windtunnel.errors import SpecError, WindtunnelError
from windtunnel.graph import expand, load_sweep, summarize
from windtunnel.model import count_params

ROOT = Path(__file__).resolve().parents[1]
SWEEP = """
name: t
base: {batch_tokens: 2048, seq_len: 64, schedule: {kind: constant, warmup_tokens: 4096}}
scales:
  micro:
    models: [micro-24k]
    tokens_per_param: 6
    grid: {lr: [0.01, 0.02]}
    branches: {at_tokens_per_param: [2, 4, 6], decay_fractions: [0.1]}
"""


def graph(tmp_path, text=SWEEP, scale="micro"):
    path = tmp_path / "s.yaml"
    path.write_text(text)
    sweep, section = load_sweep(path, scale=scale)
    return expand(sweep, section, file=path, scale_name=scale)


def test_branches_fork_from_the_stable_runs_checkpoints(tmp_path):
    runs = graph(tmp_path)
    assert len(runs) == 2 * (1 + 3)
    stable = runs[0]
    n = count_params(stable.spec.model)
    forks = [round(at * n / 2048) for at in (2, 4, 6)]
    assert stable.spec.schedule.kind == "constant" and stable.spec.checkpoint_steps == tuple(forks)
    assert stable.spec.tokens == forks[-1] * 2048
    for branch, fork in zip(runs[1:4], forks):
        assert branch.parent == stable.id and branch.fork_step == fork
        assert branch.spec.schedule.kind == "wsd" and branch.spec.schedule.decay_start_tokens == fork * 2048
        assert branch.own_tokens == -(-fork // 10) * 2048  # decay over ~10% of the branch point
    assert len({r.id for r in runs}) == len(runs)


def test_ids_are_content_hashes(tmp_path):
    first, second = graph(tmp_path), graph(tmp_path)
    assert [r.id for r in first] == [r.id for r in second]
    changed = graph(tmp_path, SWEEP.replace("0.02", "0.03"))
    assert first[0].id == changed[0].id and first[4].id != changed[4].id


def test_scaling_law_graph_costs_about_81n_against_231n_from_scratch():
    sweep, section = load_sweep(ROOT / "sweeps/scaling_law.yaml", scale="micro")
    summary = summarize(expand(sweep, section, file="scaling_law.yaml"))
    n_total = sum(count_params(__import__("windtunnel.config").config.get_model(m)) for m in section.models)
    assert summary["tokens"] / n_total == pytest.approx(81, rel=0.02)
    assert summary["tokens_from_scratch"] / n_total == pytest.approx(231, rel=0.02)
    assert summary["n_runs"] == 5 * 7 and summary["n_final_points"] == 30


GRAPH_SWEEPS = sorted(p for p in (ROOT / "sweeps").glob("*.yaml") if p.stem != "mup_search")  # that one is a search


@pytest.mark.parametrize("spec", GRAPH_SWEEPS, ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["micro", "paper"])
def test_every_sweep_expands_at_every_scale(spec, scale):
    sweep, section = load_sweep(spec, scale=scale)
    assert summarize(expand(sweep, section, file=spec, scale_name=scale))["n_runs"] > 0


@pytest.mark.parametrize("edit, key", [
    (("grid: {lr: [0.01, 0.02]}", "grid: {lr: [0.01, 0.02]}\n    colour: red"), "scales.micro.colour"),
    (("models: [micro-24k]", "models: [micro-nope]"), "scales.micro.models"),
    (("at_tokens_per_param: [2, 4, 6]", "at_tokens_per_param: [2, 4, 9]"), "scales.micro.branches.at_tokens_per_param"),
    (("grid: {lr: [0.01, 0.02]}", "grid: {lr: []}"), "grid.lr"),
    (("decay_fractions: [0.1]", "decay_fraction: [0.1]"), "scales.micro.branches.decay_fraction"),
    (("name: t", "name: t\nbase2: {}"), "base2"),
    (("warmup_tokens: 4096", "warmup_tokens: lots"), "schedule.warmup_tokens"),
])
def test_malformed_sweeps_are_rejected_before_anything_trains(tmp_path, edit, key):
    with pytest.raises(SpecError) as err:
        graph(tmp_path, SWEEP.replace(*edit))
    assert err.value.key == key and str(tmp_path / "s.yaml") in str(err.value)


def test_unknown_scale_and_missing_file(tmp_path):
    with pytest.raises(SpecError, match="scales defined here: micro"):
        graph(tmp_path, scale="paper")
    with pytest.raises(WindtunnelError, match="not found"):
        load_sweep(tmp_path / "nope.yaml", scale="micro")


def test_dry_run_json_from_the_cli():
    out = subprocess.run([sys.executable, "-m", "windtunnel.cli", "sweep", "sweeps/scaling_law.yaml", "--dry-run",
                          "--json"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    summary = json.loads(out.stdout)
    assert {"n_runs", "tokens", "tokens_from_scratch", "flops"} <= set(summary)
    assert summary["tokens_from_scratch"] > 2.5 * summary["tokens"]


def test_a_scale_with_only_runs_is_exactly_that_list(tmp_path):
    text = SWEEP.replace("    grid: {lr: [0.01, 0.02]}\n    branches: {at_tokens_per_param: [2, 4, 6], decay_fractions: [0.1]}\n",
                         "    runs: [{batch_tokens: 1024, eval_every: 4}, {batch_tokens: 4096, eval_every: 1}]\n")
    runs = graph(tmp_path, text)
    assert [(r.spec.batch_tokens, r.spec.eval_every) for r in runs] == [(1024, 4), (4096, 1)]


def test_base_may_name_an_override_file(tmp_path):
    best = tmp_path / "best.yaml"
    best.write_text("train: {lr: 0.02, model: {scale_emb: 8.0}}\nvalue: 1.5\n")
    runs = graph(tmp_path, SWEEP.replace("base: {batch_tokens: 2048, seq_len: 64, schedule: {kind: constant, warmup_tokens: 4096}}",
                                         f"base: {best}").replace("grid: {lr: [0.01, 0.02]}", "grid: {seed: [0]}")
                 .replace("tokens_per_param: 6", "tokens_per_param: 60"))
    assert {(r.spec.lr, r.spec.model.scale_emb) for r in runs} == {(0.02, 8.0)}
    best.write_text("[1, 2]\n")
    with pytest.raises(SpecError, match="best.yaml: train=\\[1, 2\\] is not allowed; a mapping"):
        graph(tmp_path, SWEEP.replace("base: {batch_tokens: 2048, seq_len: 64, schedule: {kind: constant, warmup_tokens: 4096}}",
                                      f"base: {best}"))
