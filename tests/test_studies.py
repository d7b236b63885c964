"""End to end from stored runs to a plan: synthetic sweeps drawn from known laws are logged to a real MLflow store,
then every study of the registry (`windtunnel fit --all`), `windtunnel fit KIND --sweep`, `windtunnel plan` and
`windtunnel report` run on them."""

import json
import os
from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml

from tests import browser
from windtunnel import cli, studies
from windtunnel.config import TrainSpec, apply_overrides, get_model, load_overrides
from windtunnel.fit import PerToken
from windtunnel.tracking import RunLogger

ROOT = Path(__file__).resolve().parents[1]
LAW = {"C_N": 20.0, "alpha": 0.3, "C_D": 60.0, "beta": 0.3, "L0": 1.0}  # the scaling law the runs are drawn from
SIZES = {"s1": 2e4, "s2": 5e4, "s3": 1.2e5, "s4": 2.5e5, "s5": 5e5}  # N_total: the law is drawn in the default convention
WIDTH = {"s1": 8, "s2": 16, "s3": 32, "s4": 48, "s5": 64}  # the tied embedding is WIDTH × 1024 of each N_total
BASE = {"model.vocab_size": 1024, "model.d_head": 16, "model.d_base": 32, "model.scale_emb": 12.0,
        "model.scale_depth": 1.4, "model.init_std": 0.1, "model.parametrization": "mup", "model.smear_keys": True,
        "seq_len": 128, "model.n_layers": 2,
        "data.corpus": "python"}  # the µP base of models/micro.yaml, so its models are in the synthetic ladder's family
K_BS, GAMMA = 3.0e4, 2.0  # batch-size law of the synthetic curves (tokens)


def _log(sweep, name, params, metrics, *, status="finished", steps=(1,), run=None, parent=""):
    model = params.get("model.name")
    if model in WIDTH:  # logged as real runs are: non-embedding N, and the shape that gives the embedding
        params = {**BASE, **params, "N": params["N"] - WIDTH[model] * 1024, "model.d_model": WIDTH[model]}
    logger = RunLogger(experiment=sweep, run_name=name, params=params,
                       tags={"sweep": sweep, "scale": "micro", "windtunnel.run": run or name, "parent": parent})
    for step in steps:
        logger.log(metrics(step), step=step)
    logger.finish("FINISHED" if status == "finished" else "FAILED", tag_status=status)


def _law(n, d):
    return LAW["C_N"] * n ** -LAW["alpha"] + LAW["C_D"] * d ** -LAW["beta"] + LAW["L0"]


def _scaling_law_runs(rng):
    for model, n in SIZES.items():
        gap = {} if model == "s5" else {"eval/code/copy_gap": 0.6, "eval/docs/copy_gap": 0.7}  # s5: stored before
        _log("scaling_law", f"{model} stable", {"N": n, "D": 60 * n, "model.name": model, "coord.stage": "stable",
                                                "batch_tokens": 1024},
             lambda s, gap=gap: {"train/loss": 4.0 - s * 1e-4, "grad/norm": 0.4, "eval/code/bpb": 3.0,
                                 "eval/docs/bpb": 3.0, **{k: v + 0.1 * np.log(s) for k, v in gap.items()}},
             steps=range(1, int(60 * n / 1024) + 1, 50), run=f"{model}-st")
        for at in (10, 20, 30, 40, 50, 60):
            d = 1.1 * at * n
            loss = _law(n, d) * (1 + rng.normal(0, 0.002))
            fork = int(at * n / 1024)
            _log("scaling_law", f"{model} {at}N+10.0% exp",
                 {"N": n, "D": d, "model.name": model, "coord.stage": "decay", "coord.decay_fraction": 0.1,
                  "schedule.decay_shape": "exp", "coord.branch_tokens_per_param": at, "batch_tokens": 1024,
                  "fork_step": fork},
                 lambda s, loss=loss: {"eval/code/bpb": loss * 0.98, "eval/docs/bpb": loss * 1.02, "train/loss": loss,
                                       "grad/norm": 0.3},
                 steps=range(fork + 1, fork + 12), parent=f"{model}-st")
    _log("scaling_law", "s1 broken", {"N": 2e4, "D": 1e6, "model.name": "s1", "coord.stage": "decay"},
         lambda s: {"train/loss": 9.0}, status="failed")
    _log("scaling_law", "s1 exploded", {"N": 2e4, "D": 2e6, "model.name": "s1", "coord.stage": "decay"},
         lambda s: {"train/loss": 99.0}, status="diverged")


def _lr_runs(rng):
    for model, n in list(SIZES.items())[:3]:
        for lr in np.geomspace(0.0025, 0.04, 5):
            loss = 3.0 + 0.3 * (np.log10(lr) - np.log10(0.01)) ** 2 + rng.normal(0, 0.002)
            _log("lr", f"{model} lr={lr:.4g}", {"N": n, "lr": lr, "model.name": model, "model.parametrization": "mup",
                                                "batch_tokens": 1024},
                 lambda s, loss=loss: {"eval/code/bpb": loss, "eval/docs/bpb": loss})
    _log("lr", "s1 lr=0.08", {"N": SIZES["s1"], "lr": 0.08, "model.name": "s1", "model.parametrization": "mup",
                              "batch_tokens": 1024}, lambda s: {"train/loss": 99.0}, status="diverged")  # censored


def _wsd_runs():
    """One stable run, decay branches from 20N…80N over 5% and 10% in two shapes, and three Cosine(T) baselines."""
    n = SIZES["s2"]
    curve = lambda end: (lambda s: {"eval/code/bpb": 2 + 1 / s, "eval/docs/bpb": 2 + 1 / s, "train/loss": 2 + 1 / s,  # noqa: E731
                                    "grad/norm": 0.4, "grad/D1": -0.2, "grad/D2": 0.1, "grad/curvature": 0.1,
                                    "update/max_abs/embed": 2e-3, "update/max_abs/blocks.0.mlp.w2": 1e-3})
    _log("wsd", "s2 stable", {"N": n, "D": 80 * n, "model.name": "s2", "coord.stage": "stable", "batch_tokens": 1024,
                              "schedule.kind": "constant"}, curve(0), run="w-st",
         steps=sorted({s for at in (20, 40, 60, 80) for s in range(int(at * n / 1024) - 15, int(at * n / 1024) + 1)}))
    for at in (20, 40, 60, 80):
        for fraction in (0.05, 0.1):
            for shape in ("exp", "linear"):
                d = (1 + fraction) * at * n
                loss = _law(n, d) - 0.2 * fraction - (0.01 if shape == "exp" else 0)
                _log("wsd", f"s2 {at}N+{fraction:.1%} {shape}",
                     {"N": n, "D": d, "model.name": "s2", "coord.stage": "decay", "coord.decay_fraction": fraction,
                      "schedule.decay_shape": shape, "coord.branch_tokens_per_param": at, "batch_tokens": 1024,
                      "schedule.kind": "wsd", "fork_step": int(at * n / 1024)},
                     lambda s, loss=loss: {"eval/code/bpb": loss, "eval/docs/bpb": loss, "train/loss": loss + 1 / s,
                                           "grad/norm": 0.3, "grad/cos_prev": 0.1, "update/max_abs": 1e-3,
                                           "grad/D1": -0.1 / s, "grad/D2": 0.5, "grad/curvature": 0.5,
                                           "update/max_abs/embed": 1e-3, "update/max_abs/blocks.0.mlp.w2": 5e-4},
                     steps=range(int(at * n / 1024) + 1, int(at * n / 1024) + 13), parent="w-st")
    for s_per_param, period in ((88, 0.75), (88, 1.0), (88, 1.25), (22, 1.0)):  # Cosine(T) at S = 88N; T = S at 22N
        loss = _law(n, s_per_param * n) + 0.02 * abs(period - 1)
        _log("wsd", f"s2 cosine T={period}S", {"N": n, "D": s_per_param * n, "model.name": "s2", "batch_tokens": 1024,
                                               "schedule.kind": "cosine",
                                               **({"schedule.period_tokens": period * s_per_param * n} if period != 1 else {})},
             lambda s, loss=loss: {"eval/code/bpb": loss, "eval/docs/bpb": loss}, steps=(1, 2))


def _batch_size_runs():
    """Held-out curves whose tokens to reach L at batch B are log-parabolic in B around k / L^γ."""
    for model, floor in (("s1", 1.6), ("s2", 1.5)):
        losses = np.linspace(3.0, floor + 0.1, 40)
        for b in (256, 512, 1024, 2048, 4096, 8192):
            log_t = np.log(3e4) - 3 * np.log((losses - floor) / (3 - floor)) + 0.1 * (np.log(b) - np.log(K_BS / losses ** GAMMA)) ** 2
            steps = np.maximum(1, np.round(np.exp(log_t) / b)).astype(int)
            curve = dict(zip(steps.tolist(), losses.tolist()))  # per step, the lowest loss reached by then
            _log("batch_size", f"{model} batch={b}", {"N": SIZES[model], "batch_tokens": b, "model.name": model},
                 lambda s, curve=curve: {"eval/code/bpb": curve[s], "eval/docs/bpb": curve[s]}, steps=sorted(curve))


@pytest.fixture(scope="module")
def store(tmp_path_factory):
    root = tmp_path_factory.mktemp("studies")
    old = os.environ["WINDTUNNEL_RESULTS"]
    os.environ["WINDTUNNEL_RESULTS"] = str(root)
    rng = np.random.default_rng(0)
    _scaling_law_runs(rng)
    _lr_runs(rng)
    _batch_size_runs()
    _wsd_runs()
    yield root
    os.environ["WINDTUNNEL_RESULTS"] = old


def test_the_fits_read_runs_in_run_id_order_whatever_order_they_trained_in(store, monkeypatch):
    """A sweep that trains its runs in another order (longest first, retries) stores them in another order; the
    points, and so the bootstrap's resamples of them, must not follow it."""
    from windtunnel import tracking

    frame, _ = studies.final_points("scaling_law", scale="micro", current=False)
    real = tracking.runs_dataframe
    monkeypatch.setattr(tracking, "runs_dataframe", lambda *a, **k: real(*a, **k).iloc[::-1])
    reversed_store, _ = studies.final_points("scaling_law", scale="micro", current=False)
    assert list(frame["run"]) == sorted(frame["run"])
    pd.testing.assert_frame_equal(frame, reversed_store)


def test_final_points_leave_out_failed_and_diverged_runs_and_say_why(store):
    frame, excluded = studies.final_points("scaling_law", scale="micro", current=False)
    assert excluded == {"diverged": 1, "failed": 1}
    assert len(studies.decay_points(frame)) == 30
    assert (frame["stage"] == "stable").sum() == 5
    with pytest.raises(studies.NoRuns, match="no runs of sweep 'wsd' at scale 'paper'"):
        studies.final_points("wsd", scale="paper")
    frame, excluded = studies.final_points("lr", scale="micro")  # these runs are not those sweeps/lr.yaml makes
    assert frame.empty and excluded == {"not in the graph of sweeps/lr.yaml any more (--all-runs keeps them)": 15,
                                        "diverged": 1}
    frame, excluded = studies.final_points("lr", scale="micro", current=False, diverged=True)  # as the LR study reads
    assert excluded == {} and np.isinf(frame.loc[frame["lr"] == 0.08, "loss"]).all() and len(frame) == 16


@pytest.fixture(scope="module")
def fitted(store):
    """Every study of the registry run once on the store, as `make plots` does (decay_data has no runs: skipped)."""
    assert cli.main(["fit", "--all", "--bootstrap", "300", "--all-runs"]) == 0
    assert not (store / "decay_data").exists()
    return store


def test_every_study_recovers_the_laws_the_runs_were_drawn_from(fitted):
    store = fitted
    law = json.loads((store / "scaling_law" / "fit.json").read_text())
    assert law["alpha"] == pytest.approx(0.3, rel=0.15) and law["beta"] == pytest.approx(0.3, rel=0.15)  # 0.2% noise
    assert law["L0"] == pytest.approx(1.0, rel=0.05)
    assert law["intervals"]["alpha"][0] < 0.3 < law["intervals"]["alpha"][1]
    assert law["n_kind"] == "total" and law["n_groups"] == 5 and law["not_identified"] == {}
    tests = law["prediction"]["backtests"]   # rolling: fit 1..k, predict k+1, with the intervals the ladder gives
    assert [t["n_sizes"] for t in tests] == [3, 4] and len(tests[1]["covered"]) == tests[1]["n_test"]
    assert tests[0]["covered"] == []   # 3 stable runs leave no spread between them: errors only
    assert all(t["mean_abs_rel_err"] < 0.01 for t in tests) and law["excluded"] == {"diverged": 1, "failed": 1}
    for p in law["points"]:   # the copy gap rose 0.1 nats per e-fold: no point is mid-transition; s5 has no gap
        assert p["copy_gap_rate"] is None if p["model"] == "s5" else p["copy_gap_rate"] == pytest.approx(0.1)
    assert len(law["copy_gap"]["branch_points"]) == 30 and not any(p["mid_transition"]
                                                                   for p in law["copy_gap"]["branch_points"])
    assert law["prediction"]["form"] == "chinchilla"   # drawn from the paper's form: it backtests better than Kaplan's
    assert "lower directional-backtest error" in law["prediction"]["why"] and law["prediction"]["n_kind"] == "total"
    kinds = {(c["form"], c["n_kind"]) for c in law["candidates"]}   # every form and convention of N, reported
    assert kinds == {(f, k) for f in ("chinchilla", "kaplan") for k in ("total", "non_embedding")}
    assert law["ladder"]["primary"] == "total" and len(law["ladder"]["candidates"]) == 4
    assert law["mup_base"]["d_base"] == 32 and law["seq_len"] == [128]
    assert law["envelope"]["s3"]["better"] in ("power", "exponential")
    flops = law["flops"]   # the trainer's count by default: attention, 12·L·d·T a token, is a falling share of N
    assert flops["count"] == "full" and 0.5 < flops["b"] < 1
    point = next(p for p in law["points"] if p["model"] == "s1")
    assert point["C"] == pytest.approx(point["D"] * (6 * point["N_total"] + 12 * 2 * 8 * 128))
    assert all(r["C"] == pytest.approx(PerToken.from_dict(flops)(r["N_opt_numeric"]) * r["D_opt_numeric"])
               for r in law["compute_optimal"])
    per_token = {m: 6 * n + 12 * 2 * WIDTH[m] * 128 for m, n in SIZES.items()}   # each stable run to its last fork,
    cost = sum(per_token[m] * (int(60 * n / 1024) * 1024 + sum(1.1 * at * n - int(at * n / 1024) * 1024   # each
                                                              for at in range(10, 70, 10)))          # branch past it
               for m, n in SIZES.items())
    assert law["ladder_cost"]["flops"] == pytest.approx(cost) and law["ladder_cost"]["stable_runs"] == 5
    for r in law["compute_optimal"]:   # each allocation states its distance; past a guardrail it says so
        limits = law["ladder"]["limits"]
        assert r["beyond"] == [k for k in ("n", "d", "c") if r["extrapolation"][k] > limits[k]]
        assert r["extrapolation"]["n"] == pytest.approx(r["N_opt_numeric"] / law["ladder"]["extent"]["total"]["n_max"])
    lr = json.loads((store / "lr" / "fit.json").read_text())
    assert all(o["lr_opt"] == pytest.approx(0.01, rel=0.1) and not o["at_edge"] for o in lr["optima"])
    s1 = next(o for o in lr["optima"] if o["model"] == "s1")   # its diverged run is censored: the optimum lies below
    assert s1["n_censored"] == 1 and s1["lr_diverged"] == 0.08 and s1["width"] == 8
    assert lr["spread"]["mup"]["width_ratio"] == 4 and lr["goal"]["holds"] is False   # widths 8–32: under 8×
    per_set = law["per_set"]   # each held-out set on its own (paper Fig. 10/17): drawn with the same exponents
    assert set(per_set["sets"]) == {"code", "docs"} and per_set["mean"]["alpha"] == pytest.approx(0.3, rel=0.15)
    assert per_set["averaged_loss"]["alpha"] == law["alpha"]
    bs = json.loads((store / "batch_size" / "fit.json").read_text())
    assert bs["gamma"] == pytest.approx(GAMMA, rel=0.15) and bs["k"] == pytest.approx(K_BS, rel=0.3)
    wsd = json.loads((store / "wsd" / "fit.json").read_text())
    assert len(wsd["cosine"]) == 4 and len(wsd["branches"]) == 16 and wsd["envelope"]["s2"]["n_points"] == 4
    # the 10% branches end 0.03 below Cosine(T = S) at 22N and 88N; T ≠ S ends 0.005 above T = S
    assert [round(f["tokens"] / SIZES["s2"]) for f in wsd["wsd_vs_cosine"]] == [22, 88]
    assert all(f["reached"] and f["gap"] < 0 for f in wsd["wsd_vs_cosine"])
    assert sorted((f["T_over_S"], f["worse"]) for f in wsd["cosine_periods"]) == [(0.75, True), (1.0, False), (1.25, True)]
    assert wsd["equal_compute"] and all(f["small"] != f["large"] for f in wsd["equal_compute"])  # the ladder's pairs
    for png in ("wsd/fig4_wsd_vs_cosine.png", "wsd/fig5_decay_fractions.png", "wsd/fig6_envelope.png",
                "scaling_law/fig10_iso_loss.png", "scaling_law/fig17_loss_vs_tokens.png", "scaling_law/fig6_envelope.png",
                "scaling_law/backtests.png", "scaling_law/copy_gap.png",
                "lr/fig3_lr_transfer.png", "batch_size/fig1_tokens_vs_batch.png", "batch_size/fig2_batch_size_law.png",
                "decay_dynamics/decay_dynamics.png"):
        assert (store / png).stat().st_size > 10_000, png


def _gap_jumping(step):
    """Issue 22's transition: the copy gap 0.6 nats until step 170, 1.3 from step 230 on, linear in log steps."""
    return 0.6 + 0.7 * float(np.clip(np.log(step / 170) / np.log(230 / 170), 0, 1))


def _transition_ladder():
    """Size t1 in two seeds, evaluated every 20 steps of 1024 tokens, decay branches forked at steps 100, 200 and 400:
    seed 1 learns in-context copying across the fork at 200 (its gap jumps), seed 0's gap is flat; t2, forked at
    200, was stored before the copy gap was logged."""
    for model, seed, gap in (("t1", 0, lambda s: 0.6), ("t1", 1, _gap_jumping), ("t2", 0, None)):
        stable = f"{model}-{seed}"
        _log("transition", f"{stable} stable", {"N": 1e4, "D": 4e5, "model.name": model, "coord.stage": "stable",
                                                  "batch_tokens": 1024, "seed": seed},
             lambda s, gap=gap: {"eval/code/bpb": 3.0, **({"eval/code/copy_gap": gap(s), "eval/docs/copy_gap": gap(s)}
                                                         if gap else {})},
             steps=range(20, 401, 20), run=stable)
        for fork in (100, 200, 400) if gap else (200,):
            _log("transition", f"{stable} fork {fork}",
                 {"N": 1e4, "D": 1.1 * fork * 1024, "model.name": model, "coord.stage": "decay", "batch_tokens": 1024,
                  "seed": seed, "fork_step": fork},
                 lambda s: {"eval/code/bpb": 2.9, "eval/code/copy_gap": 1.5}, steps=(fork + 10,), parent=stable)


def test_points_mid_transition_at_their_fork_are_left_out_and_counted(tmp_path, monkeypatch):
    """Issue 22: exactly the branch forked while its stable run's copy gap jumped is left out, with its count and
    reason; the flat seed's and the runs without a copy gap are kept; the figure marks the flagged point."""
    from windtunnel import plots
    from windtunnel.studies import points

    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path))
    _transition_ladder()
    frame, excluded = studies.final_points("transition", scale="micro")
    assert excluded == {points.TRANSITION_REASON: 1}
    kept = studies.decay_points(frame)
    assert len(kept) == 6 and "t1-1 fork 200" not in set(kept["name"])
    rates = kept.set_index("name")["copy_gap_rate"]
    for name in ("t1-0 fork 100", "t1-0 fork 200", "t1-0 fork 400", "t1-1 fork 100", "t1-1 fork 400"):
        assert rates[name] == pytest.approx(0, abs=1e-9), name   # flat before the jump, and after it
    assert np.isnan(rates["t2-0 fork 200"])   # no copy gap: never flagged
    curves, ladder = points.copy_gap_ladder("transition", scale="micro")
    assert set(curves["group"]) == {"t1-0", "t1-1"} and len(ladder) == 7
    (flagged,) = ladder[ladder["mid_transition"]].itertuples()
    assert (flagged.group, flagged.fork_tokens, flagged.gap) == ("t1-1", 200 * 1024, pytest.approx(_gap_jumping(200)))
    assert flagged.copy_gap_rate == pytest.approx(0.661, abs=1e-3)   # least squares over steps 120…200
    assert plots.copy_gap(curves, ladder, points.TRANSITION_RATE, tmp_path / "copy_gap.png").stat().st_size > 10_000
    (line,) = studies.laws._copy_gap_lines({"threshold": 0.5, "branch_points": studies.laws._records(ladder)})
    assert line.startswith("copy gap: 1 of 7 branch points mid-transition")
    assert "; t1 seed 1 at 204,800 tokens (0.66)" in line
    assert line.endswith("; 1 without copy-gap history or too early to tell")


def test_transition_rate_is_the_gaps_slope_per_e_fold_before_the_fork():
    from windtunnel.studies.points import transition_rate

    steps = np.arange(10, 501, 10)
    gaps = 0.6 + 0.3 * np.log(steps)
    assert transition_rate(steps, gaps, 400) == pytest.approx(0.3)   # evaluations 260…400
    assert transition_rate(steps, np.where(steps < 300, 0.6, 1.3), 250) == pytest.approx(0, abs=1e-9)   # jump after
    assert np.isnan(transition_rate(steps, gaps, 14))    # no evaluation by fork / 1.5: too early to tell
    assert np.isnan(transition_rate([], [], 400))        # no copy-gap history


def test_decay_dynamics_compares_the_stable_stretch_with_the_decays_end(fitted):
    dyn = json.loads((fitted / "decay_dynamics" / "fit.json").read_text())
    assert dyn["sweep"] == "wsd" and len(dyn["branches"]) == 4 and not dyn["without_D1"]  # the 10%-exp branches
    for b in dyn["branches"]:
        assert b["D1_before"] == pytest.approx(-0.2) and -0.01 < b["D1_end"] < 0   # D1 = -0.1/step in the decay
        assert b["K_before"] == pytest.approx(0.1) and b["K_end"] == pytest.approx(0.5)
        assert b["max_update_ratio_by_matrix"] == pytest.approx({"embed": 0.5, "blocks.0.mlp.w2": 0.5})


def test_findings_state_the_papers_claims_from_the_fits(fitted):
    from windtunnel.findings import findings, table

    rows = findings(fitted)

    def verdict(start):
        (found,) = [f.verdict for f in rows if f.paper.startswith(start)]
        return found

    assert verdict("WSD with a ~10% decay") == "reproduced"              # 0.03 below Cosine(T = S), by construction
    assert verdict("Cosine(T) with T ≠ S") == "reproduced"
    assert verdict("a 2.5% decay") == "not run"                          # the store has 5% and 10% only
    assert verdict("the max weight update") == "reproduced"              # 0.5x in every matrix
    assert verdict("the first directional derivative |D1|") == "reproduced"   # |D1| 0.2 → ~0
    assert verdict("the curvature K") == "reproduced"                    # 0.1 → 0.5
    assert verdict("µP keeps each layer's") == "not run"                 # no check in this store
    assert verdict("high-quality data") == "not run"
    assert table(rows).count("\n") == len(rows) + 1


def test_fit_cli_on_a_sweep_prints_the_design_keys(store, capsys):
    assert cli.main(["fit", "scaling-law", "--sweep", "--all-runs", "--bootstrap", "50", "--budget", "3e21", "--json"]) == 0
    out, err = capsys.readouterr()
    result = json.loads(out)
    (optimal,) = result["compute_optimal"]  # the user's budget: D/N closed form beside the numeric minimum
    assert optimal["C"] == 3e21 and optimal["ratio_closed"] == pytest.approx(optimal["ratio_numeric"], rel=1e-4)
    assert {"alpha", "beta", "C_N", "C_D", "L0", "K", "eta", "n_points", "intervals"} <= set(result)
    assert result["n_points"] == 30 and "left out: 1 diverged, 1 failed" in err
    assert "samples" not in result and "samples" not in result["prediction"]   # fit.json keeps them, not the terminal


def test_plan_from_the_fits_and_the_report(fitted, capsys):
    store = fitted
    assert cli.main(["plan", "s5-target", "--tokens", "3e7"]) == 2  # unknown model: one-line error
    assert "s5-target" in capsys.readouterr().err
    assert cli.main(["plan", "micro-425k", "--tokens", "2.5e7"]) == 0
    plan = yaml.safe_load((store / "plans" / "micro-425k.yaml").read_text())
    assert plan["status"] == "complete", plan["gaps"]
    n = plan["n_params"]
    predicted = _law(n, plan["train"]["tokens"])
    assert plan["predicted_loss"]["value"] == pytest.approx(predicted, rel=0.01)
    low, high = plan["predicted_loss"]["interval95"]
    assert low < plan["predicted_loss"]["value"] < high
    assert plan["train"]["lr"] == pytest.approx(0.01, rel=0.1)
    batch = plan["train"]["batch_tokens"]  # k / L^γ at the predicted loss, rounded to a power of two of sequences
    assert batch / (K_BS / predicted ** GAMMA) == pytest.approx(1, abs=0.5)
    assert plan["train"]["schedule"]["kind"] == "wsd" and plan["cost"]["gpu_hours"] > 0
    spec = apply_overrides(TrainSpec(model=get_model("micro-425k")), load_overrides(store / "plans" / "micro-425k.yaml"))
    assert (spec.tokens, spec.batch_tokens, spec.lr) == (plan["train"]["tokens"], batch, plan["train"]["lr"])
    assert cli.main(["report"]) == 0
    page = (store / "report.html").read_text()
    assert page.count("data:image/png;base64") >= 7 and "micro-425k" in page and "predict N" in page
    assert "The paper's findings on this ladder" in page and "| WSD with a ~10% decay" in capsys.readouterr().out
    assert "<div class='card'><h3>micro-425k <span class=''>(complete)</span>" in page  # a card, not a YAML dump
    assert "href='plans/micro-425k.yaml'" in page and "<th>predicted loss</th>" in page


@pytest.mark.skipif(browser.chromium() is None, reason="no Chromium (make test installs Debian's chromium as root)")
def test_the_report_in_a_real_browser_loads_every_image_and_link(fitted, capsys):
    """report.html in headless Chromium: every figure decodes, every link reaches a file; a screenshot is kept."""
    from urllib.parse import unquote, urlparse

    store = fitted
    if not (store / "report.html").is_file():
        assert cli.main(["plan", "micro-425k", "--tokens", "2.5e7"]) == 0 and cli.main(["report"]) == 0
    found = browser.Page.visit((store / "report.html").as_uri(), "document.readyState === 'complete' && "
                               "JSON.stringify({images: [...document.images].map(i => [i.alt, i.complete && "
                               "i.naturalWidth > 0]), links: [...document.links].map(a => a.href), "
                               "text: document.body.innerText})", screenshot=store / "report.png")
    page = json.loads(found)
    assert len(page["images"]) >= 7 and all(ok for _, ok in page["images"]), page["images"]
    assert page["links"] and all(urlparse(u).scheme == "file" and Path(unquote(urlparse(u).path)).is_file()
                                 for u in page["links"]), page["links"]
    assert "micro-425k (complete)" in page["text"] and "predicted loss" in page["text"]
    assert (store / "report.png").stat().st_size > 10_000


def test_plan_without_fits_says_what_is_missing(tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path))
    assert cli.main(["plan", "minicpm-1.2b"]) == 0
    out = capsys.readouterr().out
    assert "incomplete" in out and "no usable scaling-law fit" in out and "no usable LR-transfer fit" in out
    plan = yaml.safe_load((tmp_path / "plans" / "minicpm-1.2b.yaml").read_text())
    assert plan["predicted_loss"] is None and plan["train"] == {   # the target's own tokenizer, which no fit needs
        "seq_len": 4096, "data": {"tokenizer": str(ROOT / "models" / "tokenizers" / "minicpm-1.2b.model")}}
    assert any("minicpm-1.2b.model (models.minicpm-1.2b.tokenizer) is missing" in g for g in plan["gaps"])


def test_fit_cli_on_a_csv_with_compute_column(tmp_path, capsys):
    n = np.repeat([1e5, 3e5, 1e6, 3e6], 4)
    d = np.tile([2e6, 5e6, 1e7, 3e7], 4)
    rows = ["size,flops,final"] + [f"{a},{6 * a * b},{_law(a, b)}" for a, b in zip(n, d)]
    (tmp_path / "runs.csv").write_text("\n".join(rows))
    assert cli.main(["fit", "scaling-law", "--csv", str(tmp_path / "runs.csv"), "--n-col", "size", "--c-col", "flops",
                     "--loss-col", "final", "--bootstrap", "0", "--json"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["alpha"] == pytest.approx(0.3, rel=0.05) and result["n_points"] == 15
    assert result["ladder"]["n_dropped"] == 1   # N 3e6 at D 2e6: fewer tokens than parameters, left out
    assert cli.main(["fit", "scaling-law", "--csv", str(tmp_path / "runs.csv"), "--json"]) == 2
    assert "missing column 'N' (set it with --n-col); columns are: size, flops, final" in capsys.readouterr().err
    assert cli.main(["fit", "lr", "--csv", str(tmp_path / "nope.csv")]) == 2
    assert "nope.csv: cannot read as CSV" in capsys.readouterr().err
    assert cli.main(["fit", "scaling-law", "--csv", str(tmp_path / "runs.csv"), "--n-col", "size", "--c-col", "flops",
                     "--loss-col", "final", "--flops", "full"]) == 2   # a CSV has no layers, width or context
    assert "--flops full counts attention from each run's layers, width and context" in capsys.readouterr().err


def test_fit_cli_predicts_new_runs_and_writes_a_fit_the_plan_reads(tmp_path, monkeypatch, capsys):
    """`fit scaling-law --csv --predict N:D --out FIT.json`, then `plan TARGET --fit FIT.json` (issue 20, point 1)."""
    rng = np.random.default_rng(2)
    n = np.repeat([1e5, 2e5, 4e5, 8e5, 1.6e6, 3.2e6], 8)
    d = np.tile([2e6, 5e6, 1e7, 3e7], 12) * (n / 1e5)
    run = np.repeat(np.arange(12), 4)
    loss = _law(n, d) * np.exp(rng.normal(0, 0.003, 12)[run])
    (tmp_path / "runs.csv").write_text("\n".join(["N,D,loss,run"] + [f"{a},{b},{c},{r}" for a, b, c, r in
                                                                     zip(n, d, loss, run)]))
    out = tmp_path / "fit.json"
    assert cli.main(["fit", "scaling-law", "--csv", str(tmp_path / "runs.csv"), "--group-col", "run", "--bootstrap",
                     "100", "--predict", "6.4e6:2e9", "--predict", "1e9:1e11", "--out", str(out), "--json"]) == 0
    near, far = json.loads(capsys.readouterr().out)["predictions"]
    assert near["low"] < _law(6.4e6, 2e9) < near["high"] and near["extrapolation"]["n"] == pytest.approx(2.0)
    assert far["loss"] is None and "beyond the calibrated extrapolation" in far["reason"]
    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path / "results"))
    assert cli.main(["plan", "micro-1.3m", "--fit", str(out), "--tokens", "2e7"]) == 0
    printed = capsys.readouterr().out
    plan = yaml.safe_load((tmp_path / "results" / "plans" / "micro-1.3m.yaml").read_text())
    assert plan["predicted_loss"]["extrapolation"]["n"] == pytest.approx(plan["n_params"] / 3.2e6)
    assert "N 0.4" in printed and str(out) in plan["sources"]["scaling_law"]
    assert cli.main(["plan", "micro-1.3m", "--fit", str(tmp_path / "none.json")]) == 2
    err = capsys.readouterr().err
    assert "plan --fit" in err and "no such file" in err


def test_fit_cli_resamples_the_groups_a_csv_names(tmp_path, capsys):
    rng = np.random.default_rng(1)
    n = np.repeat([1e5, 2e5, 4e5, 8e5, 1.6e6, 3.2e6], 8)
    d = np.tile([2e6, 5e6, 1e7, 3e7], 12)
    run = np.repeat(np.arange(12), 4)   # two stable runs per size, four branches each
    loss = _law(n, d) * np.exp(rng.normal(0, 0.004, 12)[run])
    rows = ["N,D,loss,stable_run"] + [f"{a},{b},{c},run{r}" for a, b, c, r in zip(n, d, loss, run)]
    (tmp_path / "runs.csv").write_text("\n".join(rows))
    args = ["fit", "scaling-law", "--csv", str(tmp_path / "runs.csv"), "--bootstrap", "100", "--json"]
    assert cli.main(args + ["--group-col", "stable_run"]) == 0
    grouped = json.loads(capsys.readouterr().out)
    assert grouped["n_groups"] == 12 and grouped["group_dof"] == 9 and grouped["n_kind"] == "total"
    tests = grouped["prediction"]["backtests"]
    assert [t["n_sizes"] for t in tests] == [3, 4, 5] and all(t["low"] for t in tests)
    assert cli.main(args) == 0
    assert json.loads(capsys.readouterr().out)["n_groups"] == 46      # every row its own group (2 with D < N out)
    assert cli.main(args + ["--group-col", "seed"]) == 2
    assert "missing column 'seed' (--group-col)" in capsys.readouterr().err
    assert cli.main(["fit", "lr", "--csv", str(tmp_path / "runs.csv"), "--group-col", "stable_run"]) == 2
    assert "--group-col applies to scaling-law fits only" in capsys.readouterr().err


def test_validate_trains_the_planned_target_and_logs_predicted_against_actual(fitted, capsys):
    """`windtunnel validate`: the plan's train section is what trains; the comparison lands in results/validate/,
    the report and the target's MLflow run (prediction as params, actual and error as metrics, the fits as tags)."""
    from windtunnel.tracking import runs_dataframe

    store = fitted
    assert cli.main(["validate", "micro-24k", "--tokens", "61440", "--set", "lr=0.5"]) == 2   # the plan gives the LR
    assert "--set lr: the plan gives that value" in capsys.readouterr().err
    assert cli.main(["validate", "micro-24k", "--tokens", "61440"]) == 0
    out = capsys.readouterr().out
    result = json.loads((store / "validate" / "micro-24k.json").read_text())
    assert {"target", "n_params", "tokens", "predicted", "low", "high", "actual"} <= set(result)
    plan = yaml.safe_load((store / "plans" / "micro-24k.yaml").read_text())
    assert result["tokens"] == plan["train"]["tokens"] and result["train"] == plan["train"] and result["given"] == []
    assert result["low"] < result["predicted"] < result["high"] and result["actual"] > 0
    assert result["inside"] == (result["low"] <= result["actual"] <= result["high"]) and "predicted" in out
    run = runs_dataframe(experiment="validate").iloc[0]
    assert float(run["params.predicted_loss"]) == pytest.approx(result["predicted"])
    assert float(run["params.lr"]) == pytest.approx(plan["train"]["lr"])
    assert run["metrics.validate/actual"] == pytest.approx(result["actual"])
    assert "sha256" in run["tags.windtunnel.fit.scaling_law"] and run["tags.status"] == "finished"
    assert (store / "validate" / "micro-24k.png").stat().st_size > 10_000   # the curve against the predicted interval
    assert cli.main(["report"]) == 0
    assert "Predicted against actual" in (store / "report.html").read_text()
    assert "not checked (the plan had no predicted curve)" in (store / "report.html").read_text()   # no loss curve here


def test_per_set_laws_recover_each_held_out_sets_exponents():
    """Two held-out sets drawn from laws with swapped exponents (paper Fig. 10/17 fits each set on its own)."""
    truth = {"code": (20.0, 0.25, 60.0, 0.35, 0.8), "docs": (20.0, 0.35, 60.0, 0.25, 1.1)}
    rng = np.random.default_rng(0)
    n = np.repeat(np.geomspace(2e4, 5e5, 6), 6)
    d = n * np.tile(np.arange(10, 70, 10), 6) * 1.1
    points = pd.DataFrame({"N": n, "D": d, "group": np.repeat(np.arange(6), 6),
                           "bpb_few": np.where(np.arange(n.size) < 3, 2.0, np.nan)})   # a set only 3 runs evaluated
    for name, (c_n, a, c_d, b, l0) in truth.items():
        points[f"bpb_{name}"] = (c_n * n ** -a + c_d * d ** -b + l0) * np.exp(rng.normal(0, 0.002, n.size))
    out = studies.per_set_laws(points, n_col="N")
    code, docs = out["sets"]["code"], out["sets"]["docs"]
    # 0.2% noise; tolerances from 15 seeds (max |error|: code α 0.010, β 0.018; docs α 0.054, β 0.010)
    assert code["alpha"] == pytest.approx(0.25, abs=0.02) and code["beta"] == pytest.approx(0.35, abs=0.03)
    assert docs["alpha"] == pytest.approx(0.35, abs=0.07) and docs["beta"] == pytest.approx(0.25, abs=0.02)
    assert out["mean"]["alpha"] == pytest.approx((code["alpha"] + docs["alpha"]) / 2)
    assert out["mean"]["beta"] == pytest.approx(0.30, abs=0.02)
    assert "at least 6 points (got 3)" in out["sets"]["few"]["skipped"]
    lines = studies.laws._per_set_lines({**out, "averaged_loss": {"alpha": 0.3, "beta": 0.3}})
    assert lines[0].startswith("  per held-out set") and any("mean of sets" in line for line in lines)


def test_the_registry_drives_the_cli_the_plan_and_the_report(tmp_path, monkeypatch, capsys):
    """Every law reads a registered study; the plan's studies feed make_plan's keywords; the report has a section per
    study; a name that is neither a study nor a law, or a law without its source, is one line naming the choices."""
    import inspect

    from windtunnel.plan import make_plan
    from windtunnel.report import write_report

    assert {law.study for law in studies.LAWS.values()} <= set(studies.STUDIES)
    assert set(studies.planned()) == {"scaling", "batch", "lr", "curve"} <= set(inspect.signature(make_plan).parameters)
    assert studies.get("scaling-law") is studies.STUDIES["scaling_law"]
    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path))
    page = write_report().read_text()
    assert all(f"<h2>{s.title}</h2><p class='gap'>not fitted yet" in page for s in studies.STUDIES.values())
    for argv, expected in ((["fit", "nope"], "no study 'nope'; studies: scaling_law, batch_size, lr, wsd"),
                           (["fit", "wsd", "--csv", "x.csv"], "fit wsd --sweep/--csv: not a law; laws: scaling-law"),
                           (["fit", "envelope"], "fit envelope: a law, fitted with --sweep [NAME] or --csv PATH"),
                           (["fit", "--all", "--sweep"], "give one STUDY or LAW, or --all"),
                           (["fit"], "give one STUDY or LAW, or --all")):
        assert cli.main(argv) == 2, argv
        assert expected in capsys.readouterr().err, argv
    assert cli.main(["fit", "decay_data"]) == 3   # its sweep has not run: skipped, as `make fit` skips it
    assert "skipped decay_data: no runs of sweep 'decay_data'" in capsys.readouterr().err
    assert not (tmp_path / "decay_data").exists()


def test_one_study_without_figures_rewrites_only_its_fit(fitted, capsys):
    drawn = {f"{s.name}/{f}" for s in studies.STUDIES.values() for f in s.figures   # what `fit --all` drew (these
             if s.name != "loss_curve"}   # runs have no per-step LR history: the loss curve is skipped)
    assert len(drawn) == 12 and all((fitted / f).stat().st_size > 10_000 for f in drawn)
    folder = fitted / "batch_size"
    before = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert cli.main(["fit", "batch-size", "--no-plots", "--all-runs", "--bootstrap", "300"]) == 0
    out = capsys.readouterr().out
    assert out.startswith("== batch_size (Batch-size law — §3.2)\nbs_opt = ") and f"written: {folder}/fit.json\n" in out
    after = {p.name: p.stat().st_mtime_ns for p in folder.iterdir()}
    assert after["fit.json"] > before["fit.json"]
    assert {k: v for k, v in after.items() if k != "fit.json"} == {k: v for k, v in before.items() if k != "fit.json"}


def test_a_figure_with_nothing_to_draw_is_neither_listed_nor_logged(tmp_path, monkeypatch):
    """A small ladder has no backtests (fewer than four sizes): `fit --all` must not list, or log to MLflow, the
    figure it did not draw (make demo's `make plots` failed on exactly that)."""
    from windtunnel.studies.study import Fitted, Study

    def drawn(path):
        path.write_bytes(b"png")
        return path

    study = Study(name="sparse", title="t", sweep="sparse", points=lambda sweep, o: (pd.DataFrame(), {}),
                  fit=lambda frame, o: Fitted({"n": 3}, {"a.png": drawn, "b.png": lambda path: None}),
                  describe=lambda result: [], figures=("a.png", "b.png"))
    monkeypatch.setitem(studies.STUDIES, "sparse", study)
    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path))
    logged = []
    monkeypatch.setattr("windtunnel.tracking.log_outputs", lambda paths, **kw: logged.extend(paths))
    assert cli.main(["fit", "sparse"]) == 0
    assert [p.name for p in logged] == ["fit.json", "a.png"] and all(p.is_file() for p in logged)
    assert not (tmp_path / "sparse" / "b.png").exists()
