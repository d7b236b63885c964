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


def paper(spec: str, target: str = "minicpm-1.2b"):
    """The paper scale of sweeps/SPEC.yaml in `target`'s family, with provisional ids (the corpus is not here)."""
    sweep, section = load_sweep(ROOT / "sweeps" / f"{spec}.yaml", scale=f"paper@{target}")
    provisional: list = []
    runs = expand(sweep, section, file=f"{spec}.yaml", scale_name=f"paper@{target}", provisional=provisional)
    assert provisional and "fineweb-edu" in provisional[0]   # a real corpus, never the embedded one
    return section, runs


def test_paper_ladder_spans_9m_to_2b_in_each_targets_family(in_target_family):
    """Table 8's 9M–0.5B at 10N…60N, then 1B (to 50N) and 2B (to 20N): within the plan's limits of both targets at
    their 1.1T tokens (N ≤ 15.7×, D ≤ 23.3×, C ≤ 64×), at a fraction of the cost of running 2B to 60N."""
    from windtunnel.config import get_model

    section, runs = paper("scaling_law")
    stables = {r.coords["model"]: r for r in runs if r.coords["stage"] == "stable"}
    assert list(stables) == ["9M", "30M", "70M", "0.1B", "0.17B", "0.2B", "0.5B", "1B", "2B"]
    assert {r.spec.model.vocab_size for r in runs} == {73440}
    assert {Path(r.spec.data.tokenizer).name for r in runs} == {"minicpm-1.2b.json"}
    per_model = {m: sorted(r.coords["branch_tokens_per_param"] for r in runs if r.parent == s.id)
                 for m, s in stables.items()}
    assert per_model["0.5B"] == [10, 20, 30, 40, 50, 60] and per_model["1B"] == [10, 20, 30, 40, 50]
    assert per_model["2B"] == [10, 20] and len(runs) == 58
    d_max = max(r.tokens for r in runs)
    for target in ("minicpm-1.2b", "minicpm-2.4b"):
        model = get_model(target)
        assert count_params(model) / max(count_params(s.spec.model) for s in stables.values()) < 15.7
        assert model.paper_run.tokens / d_max < 23.3
    summary = summarize(runs)
    assert 1.5e21 > summary["flops"] > 1e21 and summary["tokens_from_scratch"] / summary["tokens"] > 2
    other = {r.id for r in paper("scaling_law", "minicpm-2.4b")[1]}
    assert other.isdisjoint(r.id for r in runs)   # another vocabulary and tokenizer: other runs


def test_a_family_scale_needs_its_target_and_the_targets_tokenizer(in_target_family, tmp_path, monkeypatch):
    with pytest.raises(SpecError, match=r"paper@TARGET: this ladder trains in a target's family"):
        load_sweep(ROOT / "sweeps/scaling_law.yaml", scale="paper")
    with pytest.raises(SpecError, match="micro alone: its ladder is its own family"):
        load_sweep(ROOT / "sweeps/scaling_law.yaml", scale="micro@minicpm-1.2b")
    sweep, section = load_sweep(ROOT / "sweeps/scaling_law.yaml", scale="paper@micro-1.3m")
    with pytest.raises(SpecError, match="models.micro-1.3m.tokenizer=None"):   # it names no tokenizer file
        expand(sweep, section, file="s.yaml", scale_name="paper@micro-1.3m", provisional=[])
    (in_target_family / "tokenizers" / "minicpm-2.4b.json").rename(tmp_path / "away.json")
    try:
        sweep, section = load_sweep(ROOT / "sweeps/scaling_law.yaml", scale="paper@minicpm-2.4b")
        with pytest.raises(WindtunnelError, match="minicpm-2.4b's tokenizer file is missing"):
            expand(sweep, section, file="s.yaml", scale_name="paper@minicpm-2.4b", provisional=[])
    finally:
        (tmp_path / "away.json").rename(in_target_family / "tokenizers" / "minicpm-2.4b.json")
    text = SWEEP.replace("micro:", "micro:\n    needs_target: true").replace("models: [micro-24k]", "models: [9M]")
    with pytest.raises(SpecError, match=r"scales.micro.models='micro-24k' .* µP base \(d_head 16 vs 64"):  # micro-24k: another base
        graph(tmp_path, text.replace("[9M]", "[micro-24k]"), scale="micro@minicpm-1.2b")


def test_micro_ladder_is_tuned_seeded_and_on_one_token_grid():
    """Issue 11: per-size batch (from the batch-size law), the LR study's LR, two seeds, one absolute token grid,
    no branch under 200 steps, and no run past one epoch of the embedded corpus (~30M tokens)."""
    sweep, section = load_sweep(ROOT / "sweeps/scaling_law.yaml", scale="micro")
    runs = expand(sweep, section, file="scaling_law.yaml")
    stables = [r for r in runs if r.coords["stage"] == "stable"]
    assert sorted((r.coords["model"], r.spec.seed) for r in stables) == sorted(
        (m, seed) for m in section.models for seed in (0, 1))
    assert {r.spec.lr for r in runs} == {0.0222}
    batches = {r.coords["model"]: r.spec.batch_tokens for r in stables}
    assert list(batches.values()) == sorted(batches.values()) and batches["micro-24k"] < batches["micro-425k"]
    branches = [r for r in runs if r.coords["stage"] == "decay"]
    for at in (1, 2, 4, 8):   # the same D for every size, to within one of its steps
        forks = [r.fork_step * r.spec.batch_tokens for r in branches if r.coords["branch_tokens"] == at * 2**20]
        assert len(forks) == 10 and max(forks) - min(forks) <= 5120
    assert min(r.fork_step for r in branches) >= 200 and max(r.tokens for r in runs) < 30_000_000
    assert len({r.id for r in runs}) == len(runs) == 50


def test_seeds_per_model_overrides_and_a_token_grid(tmp_path):
    text = SWEEP.replace("    grid: {lr: [0.01, 0.02]}\n    branches: {at_tokens_per_param: [2, 4, 6], decay_fractions: [0.1]}\n",
                         "    seeds: [0, 7]\n    per_model: {micro-24k: {batch_tokens: 1024}}\n"
                         "    branches: {at_tokens: [40960, 81920], min_steps: 40}\n").replace("tokens_per_param: 6", "tokens: 81920")
    runs = graph(tmp_path, text)
    assert [(r.coords["stage"], r.spec.seed) for r in runs] == [("stable", 0), ("decay", 0), ("decay", 0),
                                                                ("stable", 7), ("decay", 7), ("decay", 7)]
    assert {r.spec.batch_tokens for r in runs} == {1024} and [r.fork_step for r in runs[1:3]] == [40, 80]
    assert runs[1].parent == runs[0].id and runs[4].parent == runs[3].id and runs[0].id != runs[3].id
    assert runs[1].name == "micro-24k seed=0 40K+10.0% exp"
    with pytest.raises(SpecError, match=r"≥ min_steps=41 steps; it is 40 steps of micro-24k at batch_tokens=1024"):
        graph(tmp_path, text.replace("min_steps: 40", "min_steps: 41"))
    with pytest.raises(SpecError, match="exactly one of at_tokens and at_tokens_per_param"):
        graph(tmp_path, text.replace("at_tokens: [40960, 81920]", "at_tokens: [40960], at_tokens_per_param: [2]"))
    with pytest.raises(SpecError, match="scales.micro.per_model=.micro-9. is not allowed; models of this scale: micro-24k"):
        graph(tmp_path, text.replace("per_model: {micro-24k:", "per_model: {micro-9:"))


GRAPH_SWEEPS = sorted(p for p in (ROOT / "sweeps").glob("*.yaml") if p.stem != "mup_search")  # that one is a search


@pytest.mark.parametrize("spec", GRAPH_SWEEPS, ids=lambda p: p.stem)
@pytest.mark.parametrize("scale", ["micro", "paper@minicpm-1.2b", "paper@minicpm-2.4b"])
def test_every_sweep_expands_at_every_scale(spec, scale, in_target_family):
    sweep, section = load_sweep(spec, scale=scale)
    runs = expand(sweep, section, file=spec, scale_name=scale, provisional=[])
    assert summarize(runs)["n_runs"] > 0


@pytest.mark.parametrize("edit, key", [
    (("grid: {lr: [0.01, 0.02]}", "grid: {lr: [0.01, 0.02]}\n    colour: red"), "scales.micro.colour"),
    (("models: [micro-24k]", "models: [micro-nope]"), "scales.micro.models"),
    (("at_tokens_per_param: [2, 4, 6]", "at_tokens_per_param: [2, 4, 9]"), "scales.micro.branches.at_tokens_per_param"),
    (("grid: {lr: [0.01, 0.02]}", "grid: {lr: []}"), "grid.lr"),
    (("decay_fractions: [0.1]", "decay_fraction: [0.1]"), "scales.micro.branches.decay_fraction"),
    (("name: t", "name: t\nbase2: {}"), "base2"),
    (("warmup_tokens: 4096", "warmup_tokens: lots"), "schedule.warmup_tokens"),
    (("tokens_per_param: 6", "tokens_per_param: -5"), "scales.micro.tokens_per_param"),
    (("tokens_per_param: 6", "tokens_per_param: .nan"), "scales.micro.tokens_per_param"),
    (("tokens_per_param: 6", "tokens: 0"), "scales.micro.tokens"),
    (("models: [micro-24k]", "models: [micro-24k]\n    seeds: [0, -1]"), "scales.micro.seeds"),
    (("models: [micro-24k]", "models: [micro-24k]\n    seeds: [1, 1]"), "scales.micro.seeds"),
    (("decay_fractions: [0.1]", "decay_fractions: [0.1, 0]"), "scales.micro.branches.decay_fractions"),
    (("decay_fractions: [0.1]", "decay_shapes: [exp, zigzag]"), "scales.micro.branches.decay_shapes"),
    (("at_tokens_per_param: [2, 4, 6]", "at_tokens_per_param: [-2, 4]"), "scales.micro.branches.at_tokens_per_param"),
    (("decay_fractions: [0.1]", "min_steps: -1"), "scales.micro.branches.min_steps"),
    (("grid: {lr: [0.01, 0.02]}", "grid: {lr: [0.01, -0.02]}"), "lr"),  # grid values get the TrainSpec checks
    (("grid: {lr: [0.01, 0.02]}", "grid: {seq_len: [64, 0]}"), "seq_len"),
    (("grid: {lr: [0.01, 0.02]}", "grid: {micro_batch_tokens: [96]}"), "micro_batch_tokens"),  # 96 % 64: a run's fields together
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
    assert {"n_runs", "tokens", "tokens_from_scratch", "flops", "runs"} <= set(summary)
    assert summary["tokens_from_scratch"] > 1.5 * summary["tokens"]
    assert len(summary["runs"]) == summary["n_runs"] and {"id", "name"} <= set(summary["runs"][0])
    six = subprocess.run([sys.executable, "-m", "windtunnel.cli", "sweep", "sweeps/scaling_law.yaml", "--dry-run",
                          "--json", "--flops", "6nd"], cwd=ROOT, capture_output=True, text=True, timeout=120)
    six = json.loads(six.stdout)   # the dry run follows the FLOP count: full = 6·N_total·D + attention
    assert (summary["flops_count"], six["flops_count"]) == ("full", "6nd")
    assert summary["flops"] == pytest.approx(six["flops"] + six["attention_flops"], rel=1e-9)
    hours = summary["flops"] / (0.4 * 989e12) / 3600   # the trainer's FLOPs at 40% of an H100's bf16 peak, stated
    assert summary["gpu_hours"] == pytest.approx(hours) == sum(r["gpu_hours"] for r in summary["runs"])
    assert "H100" in summary["gpu"] and "estimate" in summary["gpu"]


def test_a_scale_with_only_runs_is_exactly_that_list(tmp_path):
    text = SWEEP.replace("    grid: {lr: [0.01, 0.02]}\n    branches: {at_tokens_per_param: [2, 4, 6], decay_fractions: [0.1]}\n",
                         "    runs: [{batch_tokens: 1024, eval_every: 4}, {batch_tokens: 4096, eval_every: 1}]\n")
    runs = graph(tmp_path, text)
    assert [(r.spec.batch_tokens, r.spec.eval_every) for r in runs] == [(1024, 4), (4096, 1)]


def test_a_runs_own_tokens_replace_the_scales(tmp_path):
    text = SWEEP.replace("    grid: {lr: [0.01, 0.02]}\n", "    runs: [{tokens: 40960, schedule: {kind: cosine}}]\n")
    runs = graph(tmp_path, text)
    baseline = [r for r in runs if r.spec.schedule.kind == "cosine"]
    assert [r.spec.tokens for r in baseline] == [40960]  # not the scale's 6N
    assert {r.coords.get("stage") for r in runs} == {"stable", "decay", None}


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


def test_a_sweep_is_found_by_name_or_repository_path_from_any_directory(tmp_path, monkeypatch):
    from windtunnel.graph import find_sweep
    from windtunnel.paths import packaged

    monkeypatch.chdir(tmp_path)
    for given in ("lr", "lr.yaml", "sweeps/lr.yaml"):
        assert find_sweep(given) == packaged("sweeps") / "lr.yaml"
    mine = tmp_path / "sweeps" / "lr.yaml"  # a file that exists wins over the packaged one
    mine.parent.mkdir()
    mine.write_text(SWEEP)
    assert find_sweep("sweeps/lr.yaml") == Path("sweeps/lr.yaml") and load_sweep("sweeps/lr.yaml", scale="micro")[0].name == "t"
    with pytest.raises(WindtunnelError) as err:
        find_sweep("nope")
    assert f"searched {tmp_path / 'nope'} and the packaged sweeps" in str(err.value) and "scaling_law" in str(err.value)
