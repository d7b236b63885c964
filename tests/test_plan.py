"""windtunnel.plan: µP transfer exact or refused, one FLOP convention, bad budgets refused in one line."""

import math

import numpy as np
import pandas as pd
import pytest
import torch

from windtunnel import cli
from windtunnel.config import ModelSpec, TrainSpec, apply_overrides
from windtunnel.counts import flops_per_token
from windtunnel.errors import WindtunnelError
from windtunnel.fit import PerToken, ScalingLawFit
from windtunnel.predict import LIMITS, fit_ladder
from windtunnel.model import MiniCPM, count_params, param_groups
from windtunnel.plan import make_plan

LADDER_BASE = {"d_base": 32, "d_head": 16, "vocab_size": 1024, "scale_emb": 10.0, "scale_depth": 2.0,
               "init_std": 0.05, "parametrization": "mup"}  # deliberately not the ModelSpec defaults
LR_FIT = {"mup_base": LADDER_BASE, "optima": [
    {"parametrization": "mup", "model": m, "lr_opt": 0.02, "low": 0.015, "high": 0.027, "at_edge": False}
    for m in ("a", "b", "c")]}


def target(**fields) -> ModelSpec:
    """A model 8× wider than the ladder's base, written in another base (d_base 256, the paper's defaults)."""
    shape = dict(name="wide", d_model=256, n_heads=16, n_layers=2, d_head=16, vocab_size=1024, d_base=256)
    return ModelSpec(**{**shape, **fields})


def scaling_fit(n_kind: str = "total") -> dict:
    """A bootstrapped scaling-law fit.json of a ladder in LADDER_BASE (six sizes × two seeds × four branches)."""
    rng = np.random.default_rng(0)
    n = np.repeat(np.geomspace(5e4, 5e5, 6), 8)
    d = np.tile(np.array([1, 2, 4, 8]) * 1.1e6, 12)
    groups = np.repeat(np.arange(12), 4)
    loss = (30 * n ** -0.3 + 50 * d ** -0.3 + 1.0) * np.exp(rng.normal(0, 0.003, 12)[groups])
    ladder = fit_ladder({n_kind: n}, d, loss, bootstrap=200, groups=groups)
    law = ladder.best.law.to_dict(samples=True)
    return {**law, "n_kind": n_kind, "n_max": float(n.max()), "mup_base": LADDER_BASE, "seq_len": [128],
            "prediction": {**law, "n_kind": n_kind}, "ladder": ladder.to_dict()}


def test_the_planned_target_has_exactly_the_per_tensor_lr_and_init_that_mup_prescribes():
    model = target()
    plan = make_plan(model, scaling=None, batch=None, lr=LR_FIT, tokens=1e6)
    assert plan["train"]["lr"] == pytest.approx(0.02)
    assert plan["train"]["model"] == {"parametrization": "mup", "d_base": 32, "scale_emb": 10.0, "scale_depth": 2.0,
                                      "init_std": 0.05}
    spec = apply_overrides(TrainSpec(model=model), plan["train"])
    torch.manual_seed(0)
    net = MiniCPM(spec.model)
    m = 256 / 32                                               # width multiplier in the ladder's base
    lr_of = {id(p): spec.lr * g["lr_scale"] for g in param_groups(net, weight_decay=0.1) for p in g["params"]}
    for name, p in net.named_parameters():
        if name == "embed.weight":
            assert lr_of[id(p)] == pytest.approx(0.02)         # Table 7: embedding at the base LR
            assert p.std().item() == pytest.approx(0.05, rel=0.02)   # and a width-independent init
        elif p.dim() == 2:
            assert lr_of[id(p)] == pytest.approx(0.02 / m)     # hidden 2-D weights: lr / m
            assert p.std().item() == pytest.approx(0.05 / math.sqrt(m), rel=0.03)   # init_std / sqrt(m)
        else:
            assert lr_of[id(p)] == pytest.approx(0.02)         # norms
    assert net.emb_scale == 10.0 and net.logit_scale == pytest.approx(1 / m)
    assert all(b.branch_scale == pytest.approx(2.0 / math.sqrt(2)) for b in net.blocks)


def test_a_target_of_another_head_width_or_vocabulary_gets_nothing_from_the_ladder():
    for other in ({"d_head": 64, "n_heads": 4}, {"vocab_size": 4096}):
        plan = make_plan(target(**other), scaling=scaling_fit(), batch=None, lr=LR_FIT, tokens=1e6)
        assert "lr" not in plan["train"] and "model" not in plan["train"] and plan["predicted_loss"] is None
        key = next(iter(other))
        assert any("not wide's family" in g and f"{key} {LADDER_BASE[key]} vs {other[key]}" in g for g in plan["gaps"])
    smeared = make_plan(target(smear_keys=True), scaling=scaling_fit(), batch=None, lr=LR_FIT, tokens=1e6)
    assert smeared["predicted_loss"] is None and "lr" not in smeared["train"]  # a fit from before smeared keys
    assert any("smear_keys False vs True" in g for g in smeared["gaps"])
    sp = make_plan(target(), scaling=None, batch=None, lr={**LR_FIT, "mup_base": {**LADDER_BASE, "parametrization": "sp"}},
                   tokens=1e6)
    assert "lr" not in sp["train"] and any("only µP transfers" in g for g in sp["gaps"])


def test_a_compute_budget_is_the_reported_cost_in_the_fits_convention():
    fit = scaling_fit()
    model = target()
    for n_kind in ("total", "non_embedding"):
        plan = make_plan(model, scaling=scaling_fit(n_kind), batch=None, lr=LR_FIT, compute=3e14)
        n = count_params(model, embedding=n_kind == "total")
        assert plan["n_params"] == n and plan["cost"]["flops"] == pytest.approx(3e14, rel=0.01)
        assert plan["train"]["tokens"] == pytest.approx(3e14 / (6 * n), rel=0.01)      # a fit without `flops`: 6nd
        assert plan["cost"]["convention"].startswith("6nd") and plan["cost"]["trained_flops"] > 3e14   # + attention
    plan = make_plan(model, scaling=fit, batch=None, lr=LR_FIT, tokens=2e7)
    low, high = plan["predicted_loss"]["interval95"]
    assert low < plan["predicted_loss"]["value"] < high and plan["predicted_loss"]["usable"]
    ratios = plan["predicted_loss"]["extrapolation"]                   # stated in N, D and C
    assert ratios["n"] == pytest.approx(count_params(model, embedding=True) / 5e5)
    assert ratios["d"] == pytest.approx(plan["train"]["tokens"] / 8.8e6, rel=1e-3)
    assert ratios["c"] == pytest.approx(ratios["n"] * ratios["d"])
    schedule = plan["train"]["schedule"]                     # the ladder's branches: decay = 10% of the stable stage
    assert schedule["decay_start_tokens"] * 1.1 == pytest.approx(plan["train"]["tokens"], rel=1e-3)
    assert plan["train"]["seq_len"] == 128                   # the context the ladder was trained at


def test_the_plan_follows_the_fits_flop_count():
    """With the trainer's count (attention included), a FLOPs budget buys C / flops_per_token tokens, the cost is
    that count, and the compute-optimal D solves the allocation with the ladder's slope of FLOPs a token in N."""
    model = target()
    per_token = PerToken.of_ladder("full", [5e4, 5e5], [6 * 5e4 + 9e5, 6 * 5e5 + 3e6])
    fit = {**scaling_fit(), "flops": per_token.to_dict()}
    plan = make_plan(model, scaling=fit, batch=None, lr=LR_FIT, compute=3e14)
    counted = flops_per_token(model, seq_len=128)
    assert plan["train"]["tokens"] == pytest.approx(3e14 / counted, rel=0.01)
    assert plan["cost"]["flops"] == pytest.approx(3e14, rel=0.01) == plan["cost"]["trained_flops"]
    assert plan["cost"]["convention"].startswith("full")
    laddered = make_plan(model, scaling={**fit, "ladder_cost": {"flops": 6e12, "gpu_hours": 1.0, "stable_runs": 12,
                                                                "branches": 48}}, batch=None, lr=LR_FIT, compute=3e14)
    assert laddered["cost"]["ladder"]["fraction_of_target"] == pytest.approx(6e12 / 3e14, rel=0.01)  # the tunnel's share
    optimal = make_plan(model, scaling=fit, batch=None, lr=LR_FIT)
    law, n = ScalingLawFit.from_dict(fit["prediction"]), count_params(model, embedding=True)
    assert per_token.b < 1 and optimal["train"]["tokens"] == pytest.approx(law.optimal_tokens(n, per_token), rel=0.01)
    shift = per_token.b ** (1 / law.beta) if law.form == "chinchilla" else per_token.b   # α·C_N·N^-α = g·β·C_D·D^-β
    assert law.optimal_tokens(n, per_token) == pytest.approx(shift * law.optimal_tokens(n), rel=1e-9)


def test_a_target_far_beyond_the_ladder_is_not_extrapolated_to():
    """Beyond the calibrated limit in N (predict.LIMITS) nothing of the law is used; within N but beyond D, the loss
    is refused with the direction named."""
    big = target(d_model=4096, n_heads=256, n_layers=8)
    plan = make_plan(big, scaling=scaling_fit(), batch=None, lr=LR_FIT, tokens=1e9)
    limit = LIMITS["n"]
    assert plan["predicted_loss"] is None and any(f"beyond the {limit:g}× its calibration was checked to" in g
                                                  for g in plan["gaps"])
    assert plan["train"]["lr"] == pytest.approx(0.02)        # the LR still transfers exactly: same base
    plan = make_plan(target(), scaling=scaling_fit(), batch=None, lr=LR_FIT, tokens=8.8e6 * (LIMITS["d"] + 1))
    assert plan["predicted_loss"] is None and any("D " in g and "limit" in g for g in plan["gaps"])


def test_the_plan_file_names_the_launch_and_what_set_must_fill():
    """The header is the command that trains it; a plan beyond the law lists what `launch --set` must give."""
    from windtunnel.plan import render_yaml, wsd_schedule

    plan = make_plan(target(), scaling=scaling_fit(), batch=None, lr=LR_FIT, tokens=2e7)
    head = render_yaml(plan).splitlines()[2]
    assert head.startswith("# launch: windtunnel launch <this file> --workers N") and "batch_tokens" in head
    assert plan["train"]["schedule"] == wsd_schedule(plan["train"]["tokens"], plan["train"]["seq_len"],
                                                     **plan["schedule_rule"])
    big = make_plan(target(d_model=4096, n_heads=256, n_layers=8), scaling=scaling_fit(), batch=None, lr=LR_FIT)
    assert "--set fills what it left out: tokens, batch_tokens" in render_yaml({**big, "made": "today"})


@pytest.mark.parametrize("tokens, compute, message", [
    (-5, None, "--tokens -5 is not allowed; give a positive number"),
    (0, None, "--tokens 0 is not allowed"),
    (None, float("nan"), "--compute nan is not allowed"),
    (1e9, 1e20, "not both"),
])
def test_bad_budgets_are_refused_in_one_line(tokens, compute, message, capsys):
    with pytest.raises(WindtunnelError, match=message):
        make_plan(target(), scaling=None, batch=None, lr=None, tokens=tokens, compute=compute)
    argv = ["plan", "micro-24k"] + (["--tokens", str(tokens)] if tokens is not None else []) \
        + (["--compute", str(compute)] if compute is not None else [])
    assert cli.main(argv) == 2
    err = capsys.readouterr().err
    assert message.split(" is")[0] in err and err.count("\n") == 1


def test_a_bad_budget_or_limit_writes_no_plan(tmp_path, monkeypatch, capsys):
    from windtunnel.plan import PlanLimits, plan_from_fits

    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path))
    for argv in (["--tokens", "-1"], ["--compute", "nan"], ["--tokens", "inf"]):
        assert cli.main(["plan", "micro-1.3m", *argv]) == 2
        assert capsys.readouterr().err.count("\n") == 1
    with pytest.raises(WindtunnelError, match="PlanLimits: mfu=0 is not allowed; a finite number in \\(0, 1\\]"):
        plan_from_fits("micro-1.3m", tokens=1e9, limits=PlanLimits(mfu=0))
    assert list(tmp_path.iterdir()) == []  # no plans/ folder, no plan file
    _, path = plan_from_fits("micro-1.3m", tokens=1e9)  # the same with a good budget writes its plan
    assert path == tmp_path / "plans" / "micro-1.3m.yaml" and path.is_file()
    assert [p.name for p in path.parent.iterdir()] == ["micro-1.3m.yaml"]  # no temporary file left beside it


# ---------------------------------------------------------------- hyper-parameters with their uncertainty

K_BS, GAMMA_BS, TOP_LEVELS = 5.4e5, 3.0, (2.4, 2.6, 2.8)  # bs_opt = k / L^γ tokens; each model's lowest optimum


def batch_fit(sd_log_k: float, n_samples: int = 2000) -> dict:
    """A batch-size-law fit.json with known bootstrap rows: γ = 3 exactly, ln k normal around ln K_BS with sd
    `sd_log_k`; three models' optima from their lowest level (TOP_LEVELS) up to 4, curvature 0.05 + 0.02·level."""
    from windtunnel.fit import BatchSizeFit

    rng = np.random.default_rng(0)
    samples = np.column_stack([K_BS * np.exp(rng.normal(0, sd_log_k, n_samples)), np.full(n_samples, GAMMA_BS)])
    rows = [(f"m{i}", 1e5 * (i + 1), level, K_BS / level ** GAMMA_BS, 1e6, 0.05 + 0.02 * level)
            for i, lowest in enumerate(TOP_LEVELS) for level in np.linspace(lowest, 4.0, 4)]
    optima = pd.DataFrame(rows, columns=["model", "N", "level", "bs_opt", "tokens_at_opt", "curvature"])
    return BatchSizeFit(K_BS, GAMMA_BS, optima, n_bootstrap=n_samples, samples=samples).to_dict(samples=True)


def loss_slope(scaling: dict, n: float, d: float) -> float:
    """s_D = −d ln L / d ln D of L = C_N·N^−α + C_D·D^−β + L0, in closed form."""
    p = scaling
    return p["beta"] * p["C_D"] * d ** -p["beta"] / (p["C_N"] * n ** -p["alpha"] + p["C_D"] * d ** -p["beta"] + p["L0"])


def test_the_batch_interval_joins_the_loss_and_the_law_and_the_batch_is_their_least_cost_one():
    """ln bs_opt = ln k − γ·ln L with ln k ~ N(ln K_BS, 0.04²) and ln L normal through the loss's 95% interval
    (σ_L ≈ 0.0106, so γ·σ_L ≈ 0.032: the two sources weigh about the same): ln bs_opt is normal with variance
    0.04² + γ²·σ_L², so the interval, the geometric-mean batch and its expected loss cost
    s_D·c2·E[(ln b − ln bs_opt)²] are known in closed form."""
    from windtunnel.fit import BatchSizeFit, batch_loss_cost

    scaling, batch = scaling_fit(), batch_fit(0.04)
    plan = make_plan(target(), scaling=scaling, batch=batch, lr=LR_FIT, tokens=2e7)
    assert plan["status"] == "complete" and not plan["notes"]
    hp, loss = plan["hyperparameters"]["batch"], plan["predicted_loss"]["interval95"]
    sigma_loss = math.log(loss[1] / loss[0]) / (2 * 1.959964)
    mean = math.log(K_BS) - GAMMA_BS * math.log(loss[0] * loss[1]) / 2
    sd = math.sqrt(0.04 ** 2 + (GAMMA_BS * sigma_loss) ** 2)
    low, high = hp["interval95"]
    assert math.log(high / low) / 2 == pytest.approx(1.96 * sd, rel=0.05)    # both sources, not either alone
    assert math.sqrt(low * high) == pytest.approx(math.exp(mean), rel=0.01)
    law_low, law_high = hp["law_interval95"]                  # the law alone at the point loss: ~0.8× as wide
    assert math.log(law_high / law_low) < 0.85 * math.log(high / low)
    # the batch: the geometric mean of the draws, in whole 8-sequence multiples (1,024 tokens at seq_len 128)
    assert plan["train"]["batch_tokens"] == hp["value"] and abs(hp["value"] - math.exp(mean)) <= 1024
    draws = BatchSizeFit.from_dict(batch).draws(loss)
    near = batch_loss_cost([hp["value"] - 1024, hp["value"], hp["value"] + 1024], draws, slope=1.0, curvature=1.0)
    assert near[1] == near.min()                              # no neighbouring batch costs less
    # c2: per model the optimum nearest the target's loss (each model's lowest), the median; s_D of the law
    assert hp["curvature"] == pytest.approx(0.05 + 0.02 * TOP_LEVELS[1])
    assert hp["loss_slope"] == pytest.approx(loss_slope(scaling, plan["n_params"], 2e7), rel=1e-3)
    expected = hp["loss_slope"] * hp["curvature"] * ((math.log(hp["value"]) - mean) ** 2 + sd ** 2)
    assert hp["expected_cost"] == pytest.approx(expected, rel=0.05)
    assert all(c > hp["expected_cost"] for c in hp["cost_at_ends"])


def test_a_batch_interval_over_the_limit_still_names_the_batch_with_its_risk():
    plan = make_plan(target(), scaling=scaling_fit(), batch=batch_fit(0.6), lr=LR_FIT, tokens=2e7)
    hp = plan["hyperparameters"]["batch"]
    assert hp["interval95"][1] / hp["interval95"][0] > 4        # 2·1.96·0.6 in ln: ~10×
    assert plan["status"] == "complete" and plan["gaps"] == [] and plan["train"]["batch_tokens"] == hp["value"]
    note = next(n for n in plan["notes"] if n.startswith("batch size:"))
    assert "over the 4× limit" in note and f"{hp['value']:,} tokens costs least" in note
    assert f"+{hp['expected_cost']:.2%} of loss expected" in note and hp["expected_cost"] > 0
    from windtunnel.launch import plan_spec                     # nothing left for --set to fill (make validate)
    with pytest.raises(WindtunnelError, match="--set batch_tokens: the plan gives that value"):
        plan_spec(plan, source="plan.yaml", given=["batch_tokens=8192"])


def lr_fit(optima: list[tuple[float, float, float]]) -> dict:
    """An LR fit.json of µP optima (lr_opt, low, high), each a parabola of curvature 0.3 loss per decade² at loss 3."""
    return {**LR_FIT, "optima": [
        {"parametrization": "mup", "model": f"w{i}", "lr_opt": o, "low": lo, "high": hi, "at_edge": False,
         "curvature": 0.3, "loss_opt": 3.0} for i, (o, lo, hi) in enumerate(optima)]}


def test_the_lr_interval_spans_the_widths_and_its_ends_are_priced_from_the_curves():
    # tight optima that move across widths: the interval is their range, each end costs 0.3·Δ²/3 of loss
    plan = make_plan(target(), scaling=None, batch=None, lr=lr_fit([(0.008, 0.0078, 0.0082), (0.01, 0.0098, 0.0102),
                                                                   (0.0125, 0.0122, 0.0128)]), tokens=1e6)
    hp = plan["hyperparameters"]["lr"]
    assert plan["train"]["lr"] == hp["value"] == pytest.approx(0.01)   # the geometric mean
    np.testing.assert_allclose(hp["interval95"], [0.008, 0.0125])
    np.testing.assert_allclose(hp["cost_at_ends"], [0.1 * math.log10(0.8) ** 2, 0.1 * math.log10(1.25) ** 2])
    # equal optima, each known to a factor 2 either way: the mean of three draws, sd log10(2)/1.96/sqrt(3) decades
    hp = make_plan(target(), scaling=None, batch=None, lr=lr_fit([(0.01, 0.005, 0.02)] * 3),
                   tokens=1e6)["hyperparameters"]["lr"]
    half = 1.96 * math.log10(2) / 1.96 / math.sqrt(3)                     # 0.174 decades
    np.testing.assert_allclose(np.log10(np.array(hp["interval95"]) / 0.01), [-half, half], atol=0.01)  # 4000 draws: ±0.004
    np.testing.assert_allclose(hp["cost_at_ends"], 0.1 * np.log10(np.array(hp["interval95"]) / 0.01) ** 2)
    assert "widened to the optima's range" in hp["basis"]


def test_the_plan_writes_its_predicted_curve_and_weighs_the_decay(tmp_path):
    """With a loss-curve law, the plan predicts the loss and its band at every evaluation of its schedule (what
    `windtunnel monitor` reads) and the final loss of each decay fraction and shape against its own."""
    import yaml

    from windtunnel import monitor
    from windtunnel.curve import FORMS, CurveFit
    from windtunnel.plan import CURVE_POINTS, PlanLimits, _curve, planned_steps, wsd_schedule
    from windtunnel.schedules import ScheduleSpec, make_schedule

    theta = [np.log(1.6), -0.08, np.log(0.35), -0.15, np.log(0.5), np.log(1.5), 0.1, np.log(0.03), 0.0, 0.0]
    law = CurveFit(form="lra", theta=dict(zip(FORMS["lra"].names, theta)), scale={"lr": 0.02, "tokens": 4e6, "n": 1e5},
                   sd_run=0.003, sd_point=0.002, sd_decay=0.0, groups=8, n_range=(2e4, 4e5),
                   tokens_range=(4e5, 8e6))
    tokens, batch = 4096 * 1000, 4096
    train = {"tokens": tokens, "batch_tokens": batch, "lr": 0.02,
             "schedule": wsd_schedule(tokens, batch, warmup_fraction=0.01, decay_fraction=0.1)}
    notes = []
    curve, decay = _curve({"law": law.to_dict()}, target(), train, PlanLimits(), notes)
    assert len(curve["tokens"]) == CURVE_POINTS - 9 and curve["tokens"][-1] == tokens and notes == []  # 40,960 apart
    assert curve["tokens"][0] >= 4e5   # nothing before the law's first fitted evaluation
    assert all(lo < x < hi for lo, x, hi in zip(curve["low"], curve["loss"], curve["high"]))
    assert curve["lr"][0] == pytest.approx(0.02) and curve["lr"][-1] < 0.002  # the decay's end
    assert decay["plan"] == curve["loss"][-1] and len(decay["by_decay"]) == 16
    assert decay["final"] == min(decay["by_decay"].values()) and decay["gain"] == 1 - decay["final"] / decay["plan"]
    assert decay["by_decay"]["0.025 exp"] > decay["by_decay"]["0.1 exp"]  # a 2.5% decay anneals less (§4.3)
    path = tmp_path / "plan.yaml"
    path.write_text(yaml.safe_dump({"target": "wide", "train": train, "predicted_curve": curve}))
    assert monitor.plan_curve(path)["tokens"].iloc[-1] == tokens
    warm = {**train, "batch_warmup": [[0, 2048], [tokens // 2, batch]]}   # as the trainer steps a batch warm-up
    lr, batches = planned_steps(warm)
    assert batches.sum() == tokens and batches[0] == 2048 and batches[-1] == batch and lr.size == 1000 + 500
    assert planned_steps(train)[0].tolist() == [make_schedule(ScheduleSpec(**train["schedule"]), lr=0.02,
                                                              total_steps=1000, batch_tokens=batch)(s) for s in range(1000)]
    assert _curve(None, target(), train, PlanLimits(), notes) == (None, None) and notes == []
    assert not decay["adopted"] and decay["refits"] == 0 and decay["schedule"] == train["schedule"]  # no refits
    del train["lr"]
    assert _curve({"law": law.to_dict()}, target(), train, PlanLimits(), notes) == (None, None)
    assert notes == ["predicted curve: needs the plan's tokens, batch and LR"]


def test_the_plan_adopts_the_decay_the_curve_laws_refits_agree_on(tmp_path):
    """The curve law's best decay becomes the plan's schedule, with its predicted loss scaled by the law's ratio,
    when 95% of its bootstrap refits put it below the plan's own; refits that disagree keep the ladder's decay."""
    from windtunnel.curve import FORMS, CurveFit

    theta = [np.log(1.6), -0.08, np.log(0.35), -0.15, np.log(0.5), np.log(1.5), 0.1, np.log(0.03), 0.0, 0.0]
    rng = np.random.default_rng(0)
    agreeing = [list(np.array(theta) + rng.normal(0, 0.002, len(theta))) for _ in range(40)]
    weak_anneal = [list(np.r_[theta[:5], np.log(0.01), theta[6:]]) for _ in range(10)]  # C small: decays hardly differ

    def law(boot, sd_decay=0.0):
        return CurveFit(form="lra", theta=dict(zip(FORMS["lra"].names, theta)),
                        scale={"lr": 0.02, "tokens": 4e6, "n": 1e5}, sd_run=0.003, sd_point=0.002, sd_decay=sd_decay,
                        groups=8, n_range=(2e4, 4e5), tokens_range=(4e5, 8e6), boot=boot).to_dict()

    batch = batch_fit(0.1)
    sure = make_plan(target(), scaling=scaling_fit(), lr=LR_FIT, tokens=4e6, curve={"law": law(agreeing)}, batch=batch)
    decay, train = sure["decay_choice"], sure["train"]
    assert decay["adopted"] and decay["refits_agreeing"] >= 0.95 and decay["gain"] > 0
    assert train["schedule"] == decay["schedule"] and (decay["fraction"], decay["shape"]) != (0.1, "exp")
    assert train["schedule"]["decay_shape"] == decay["shape"]
    kept = make_plan(target(), scaling=scaling_fit(), batch=batch, lr=LR_FIT, tokens=4e6, curve=None)
    ratio = decay["final"] / decay["plan"]
    assert sure["predicted_loss"]["value"] == pytest.approx(kept["predicted_loss"]["value"] * ratio)
    assert sure["predicted_loss"]["interval95"] == pytest.approx([x * ratio for x in kept["predicted_loss"]["interval95"]])
    assert sure["predicted_curve"]["loss"][-1] == pytest.approx(decay["final"])   # the curve of the adopted decay
    unsure = make_plan(target(), scaling=scaling_fit(), batch=batch, lr=LR_FIT, tokens=4e6,
                       curve={"law": law(agreeing[:30] + weak_anneal)})
    assert not unsure["decay_choice"]["adopted"] and unsure["decay_choice"]["refits_agreeing"] < 0.95
    assert unsure["train"]["schedule"] == kept["train"]["schedule"] and "not adopted" in unsure["decay_choice"]["note"]
    assert unsure["predicted_loss"] == kept["predicted_loss"]
    gain = decay["gain"]   # the same refits, but a law that erred more than the gain on decays it did not fit
    vague = make_plan(target(), scaling=scaling_fit(), batch=batch, lr=LR_FIT, tokens=4e6,
                      curve={"law": law(agreeing, sd_decay=gain / 1.5)})
    assert not vague["decay_choice"]["adopted"] and vague["decay_choice"]["decay_error"] > gain
    assert vague["train"]["schedule"] == kept["train"]["schedule"]
