"""windtunnel.plan: µP transfer exact or refused, one FLOP convention, bad budgets refused in one line."""

import math

import numpy as np
import pytest
import torch

from windtunnel import cli
from windtunnel.config import ModelSpec, TrainSpec, apply_overrides
from windtunnel.errors import WindtunnelError
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
        assert plan["train"]["tokens"] == pytest.approx(3e14 / (6 * n), rel=0.01)
        assert plan["cost"]["convention"].startswith("C = 6·N·D") and plan["cost"]["attention_flops"] > 0
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
