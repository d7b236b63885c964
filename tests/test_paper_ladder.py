"""The mission's own path without GPUs: the paper ladder (9M–2B) in each MiniCPM target's family, as its sweeps
would store it, with losses drawn from a known law and one seed offset per stable run; then `windtunnel fit --all`
and `windtunnel plan` must give a complete plan for minicpm-1.2b and minicpm-2.4b whose interval holds the law's
value, and refuse a ladder of another tokenizer."""

from pathlib import Path

import numpy as np
import pytest
import yaml

from windtunnel import cli, runs
from windtunnel.config import get_model
from windtunnel.counts import n_params
from windtunnel.graph import expand, load_sweep
from windtunnel.tracking import RunLogger

from conftest import word_tokenizer

ROOT = Path(__file__).resolve().parents[1]
TARGETS = ("minicpm-1.2b", "minicpm-2.4b")
LAW = {"C_N": 40.0, "alpha": 0.30, "C_D": 60.0, "beta": 0.28, "L0": 0.55}  # bits per byte, in N with the embedding
K_BS, GAMMA = 6.0e5, 3.0   # the batch-size law of the simulated curves: bs_opt = k / L^γ tokens
LR_OPT = 0.01              # the µP optimum at every width


def law(n_total, d):
    return LAW["C_N"] * n_total ** -LAW["alpha"] + LAW["C_D"] * d ** -LAW["beta"] + LAW["L0"]


def graph(spec: str, scale: str):
    sweep, section = load_sweep(ROOT / "sweeps" / f"{spec}.yaml", scale=scale)
    return sweep.name, expand(sweep, section, file=spec, scale_name=scale)


def log(sweep, scale, run, points):
    """One run as a sweep stores it: its params, its tags and its held-out evaluations {step: bits per byte}."""
    logger = RunLogger(experiment=sweep, run_name=run.name, params=runs.run_params(run),
                       tags={"sweep": sweep, "scale": scale, "windtunnel.run": run.id, "parent": run.parent or ""})
    for step, bpb in points.items():
        logger.log({"eval/web/bpb": bpb * 0.99, "eval/code/bpb": bpb * 1.01}, step=step)
    logger.finish("FINISHED", tag_status="finished")


def scaling_law_runs(scale, rng):
    sweep, graph_runs = graph("scaling_law", scale)
    offsets = {}
    for run in graph_runs:
        n_total = n_params(run.spec.model, embedding=True)
        if run.parent is None:   # a stable run: its own seed, shared by its branches
            offsets[run.id] = rng.normal(0, 0.003)
            loss = law(n_total, run.tokens) + 0.05   # not decayed
        else:
            loss = law(n_total, run.tokens) * (1 + offsets[run.parent] + rng.normal(0, 0.0015))
        log(sweep, scale, run, {run.spec.tokens // run.spec.batch_tokens: loss})
    return graph_runs


def lr_runs(scale, rng):
    sweep, graph_runs = graph("lr", scale)
    for run in graph_runs:
        model = run.spec.model
        best = LR_OPT if model.parametrization == "mup" else LR_OPT * 256 / model.d_model
        loss = law(n_params(model, embedding=True), run.tokens) + 0.08 * np.log10(run.spec.lr / best) ** 2
        log(sweep, scale, run, {run.spec.tokens // run.spec.batch_tokens: loss + rng.normal(0, 0.002)})


def batch_size_runs(scale):
    """Curves whose tokens to reach L at batch B are log-parabolic in B around k / L^γ."""
    sweep, graph_runs = graph("batch_size", scale)
    for run in graph_runs:
        floor = law(n_params(run.spec.model, embedding=True), 1e13)
        losses = np.linspace(floor + 0.6, floor + 0.05, 40)
        log_t = (np.log(2e8) - 2 * np.log((losses - floor) / 0.6)
                 + 0.1 * (np.log(run.spec.batch_tokens) - np.log(K_BS / losses ** GAMMA)) ** 2)
        steps = np.maximum(1, np.round(np.exp(log_t) / run.spec.batch_tokens)).astype(int)
        log(sweep, scale, run, dict(zip(steps.tolist(), losses.tolist())))


@pytest.fixture(scope="module")
def store(tmp_path_factory, target_models):
    """Both families' ladders in one store, as a team running both targets would have them."""
    root = tmp_path_factory.mktemp("paper")
    with pytest.MonkeyPatch.context() as patch:   # undone however the module ends, a failed setup included
        patch.setenv("WINDTUNNEL_RESULTS", str(root))
        patch.setenv("WINDTUNNEL_MODELS", str(target_models))
        patch.setattr(runs, "data_fingerprint", lambda spec, memo=None: "fineweb-edu")  # the corpus (fineweb-edu)
        rng = np.random.default_rng(0)                                                 # is not here: stands in
        ladders = {}
        for target in TARGETS:
            scale = f"paper@{target}"
            ladders[target] = scaling_law_runs(scale, rng)
            lr_runs(scale, rng)
            batch_size_runs(scale)
        yield root, ladders


@pytest.fixture(scope="module")
def fits(store):
    """`windtunnel fit` of the three studies a plan reads, at each family's scale; each family's fit.json files are
    kept apart (a fit writes results/STUDY/fit.json, the plan reads it), to be put back by `use`."""
    root, _ = store
    kept = {}
    for target in TARGETS:
        for study in ("scaling_law", "batch_size", "lr"):
            assert cli.main(["fit", study, "--scale", f"paper@{target}", "--bootstrap", "200", "--no-plots"]) == 0
            kept[target, study] = (root / study / "fit.json").read_text()
    return kept


def use(root, fits, target):
    for (name, study), text in fits.items():
        if name == target:
            (root / study / "fit.json").write_text(text)


@pytest.mark.parametrize("target", TARGETS)
def test_a_complete_plan_for_each_target_from_its_familys_ladder(store, fits, target, capsys):
    root, ladders = store
    use(root, fits, target)
    fit = yaml.safe_load((root / "scaling_law" / "fit.json").read_text())
    assert fit["mup_base"]["vocab_size"] == {"minicpm-1.2b": 73440, "minicpm-2.4b": 122753}[target]
    assert len(fit["tokenizer"]) == 1 and fit["excluded"] == {}
    capsys.readouterr()
    assert cli.main(["plan", target, "--tokens", "1.1e12"]) == 0   # the paper's budget
    out = capsys.readouterr().out
    plan = yaml.safe_load((root / "plans" / f"{target}.yaml").read_text())
    assert plan["status"] == "complete", plan["gaps"]
    assert plan["tokenizer_sha256"] == fit["tokenizer"][0]
    assert Path(plan["train"]["data"]["tokenizer"]).name == f"{target}.json"
    model = get_model(target)
    truth = law(n_params(model, embedding=True), plan["train"]["tokens"])
    low, high = plan["predicted_loss"]["interval95"]
    assert low < truth < high and low < plan["predicted_loss"]["value"] < high
    ratios = plan["predicted_loss"]["extrapolation"]   # stated against the ladder's largest rung (2B), N with embedding
    largest = max(n_params(r.spec.model, embedding=True) for r in ladders[target])
    assert ratios["n"] == pytest.approx(n_params(model, embedding=True) / largest, rel=1e-3)
    assert f"N {ratios['n']:.3g}×" in out and 1 < ratios["d"] < 23.3 and 1 < ratios["c"] < 64
    assert plan["train"]["lr"] == pytest.approx(LR_OPT, rel=0.15)
    batch_truth = K_BS / truth ** GAMMA
    assert plan["hyperparameters"]["batch"]["interval95"][0] < batch_truth < plan["hyperparameters"]["batch"]["interval95"][1]
    assert plan["cost"]["ladder"]["fraction_of_target"] < 0.2


def test_a_ladder_of_another_tokenizer_plans_nothing_for_the_target(store, fits, target_models, tmp_path, monkeypatch):
    """Same vocabulary, other content: the plan compares the files, not their sizes."""
    root, _ = store
    use(root, fits, "minicpm-1.2b")
    other = tmp_path / "models"
    (other / "tokenizers").mkdir(parents=True)
    for ladder in target_models.glob("*.yaml"):
        (other / ladder.name).write_text(ladder.read_text())
    word_tokenizer(other / "tokenizers" / "minicpm-1.2b.json", 73440, prefix="v")
    monkeypatch.setenv("WINDTUNNEL_MODELS", str(other))
    assert cli.main(["plan", "minicpm-1.2b", "--tokens", "1.1e12"]) == 0
    plan = yaml.safe_load((root / "plans" / "minicpm-1.2b.yaml").read_text())
    assert plan["status"] == "incomplete" and plan["predicted_loss"] is None
    assert all(any(g.startswith(f"{study}: the ladder is not minicpm-1.2b's family") and "tokenizer" in g
                   for g in plan["gaps"]) for study in ("scaling law", "batch-size law", "LR transfer"))
