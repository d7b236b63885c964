"""windtunnel.curve on simulated ladders with a known law: the areas exactly, parameters recovered, held-out
schedules and sizes predicted within the issue's goals, and a band that covers a new run (issue 23)."""

import re

import numpy as np
import pytest

from windtunnel.curve import (FORMS, Curve, CurveError, CurveFit, _Annealing, _runs_of_equal_batch, _Scale, fit_curves,
                              schedule_curve)
from windtunnel.schedules import ScheduleSpec, make_schedule

BATCH, LR, WARMUP = 4096, 0.02, 65536
SCALE = _Scale(lr=LR, tokens=4e6, n=1e5)
TRUTH = {"lra": np.array([np.log(1.6), -0.08, np.log(0.35), -0.15, np.log(0.5), np.log(1.5), 0.1, np.log(0.03), 0, 0]),
         "mpl": np.array([np.log(1.6), -0.08, np.log(0.35), -0.15, np.log(0.5), np.log(0.06), 0.1, np.log(20.0),
                          np.log(1.2), np.log(2.1), 0, 0])}
SIZES = (2e4, 5e4, 1.4e5, 4e5)
RUN_SD, POINT_SD = 0.003, 0.002  # a run's own offset and one evaluation's scatter (relative)


def planned(n, tokens, spec, every=100, lr=LR) -> Curve:
    steps = tokens // BATCH
    return schedule_curve(make_schedule(spec, lr=lr, total_steps=steps, batch_tokens=BATCH), n=n, total_steps=steps,
                          batch_tokens=BATCH, every=every)


def true_loss(curve, form, theta=None):
    law = FORMS[form]
    return law.predict(TRUTH[form] if theta is None else theta, law.prepare([curve], SCALE))


def observed(curve, form, rng, *, offset, group="", after=0, theta=None):
    keep = curve.steps > after
    loss = true_loss(curve, form, theta)[keep] * np.exp(offset + rng.normal(0, POINT_SD, keep.sum()))
    return Curve(n=curve.n, lr=curve.lr, batch=curve.batch, steps=curve.steps[keep], loss=loss, group=group)


def ladder(form, seed=0, lrs=(LR, LR), theta=None):
    """Two seeds per size (at the two peak LRs `lrs`): a constant-LR run and its WSD-10% branches at 1, 2, 4 and 8M
    tokens (their own steps)."""
    rng, curves = np.random.default_rng(seed), []
    for n in SIZES:
        for s, lr in enumerate(lrs):
            group, offset = f"{n:g}-{s}", rng.normal(0, RUN_SD)
            stable = planned(n, 8_192_000, ScheduleSpec(kind="constant", warmup_tokens=WARMUP), lr=lr)
            curves.append(observed(stable, form, rng, offset=offset, group=group, theta=theta))
            for point in (1_024_000, 2_048_000, 4_096_000, 8_192_000):
                branch = planned(n, int(point * 1.1) // BATCH * BATCH,
                                 ScheduleSpec(kind="wsd", warmup_tokens=WARMUP, decay_start_tokens=point), lr=lr)
                curves.append(observed(branch, form, rng, offset=offset, group=group, after=point // BATCH, theta=theta))
    return curves


HELD_OUT = {"cosine": ScheduleSpec(kind="cosine", warmup_tokens=WARMUP),
            "cosine T=S/4": ScheduleSpec(kind="cosine", warmup_tokens=WARMUP, period_tokens=1_200_000),
            "cosine_loop": ScheduleSpec(kind="cosine_loop", warmup_tokens=WARMUP, period_tokens=1_200_000),
            "wsd 20% linear": ScheduleSpec(kind="wsd", warmup_tokens=WARMUP, decay_fraction=0.2, decay_shape="linear")}


@pytest.fixture(scope="module")
def lra_fit():
    return fit_curves(ladder("lra"), form="lra", bootstrap=20)


def test_annealing_area_of_one_drop_is_the_momentum_sum():
    d = np.array([0.0, 0.0, 1.0, 0.0, 0.0])
    b = np.full(5, 2.0)
    tau = 2.0 / np.log(2)  # λ = exp(−B/τ) = 1/2
    s2 = _Annealing([{"d": d, "b": b, "at": np.arange(5)}])(tau)
    np.testing.assert_allclose(s2, [0, 0, 2, 3, 3.5])  # m = 0, 0, 1, 1/2, 1/4; S2 = Σ m·B


def test_annealing_areas_filtered_together_equal_each_curve_filtered_alone():
    """Curves of two batches, one without drops and one whose batch doubles after its first drop (filtered alone,
    carrying m): all at once as each by itself, at the evaluated steps only."""
    rng = np.random.default_rng(3)
    parts = []
    for steps, batch, first in ((50, 1.0, 10), (80, 1.0, 40), (60, 2.0, 5), (30, 1.0, 30), (70, None, 20)):
        d = np.where(np.arange(steps) >= first, rng.uniform(-0.01, 0.03, steps), 0.0)
        b = np.full(steps, batch) if batch else np.where(np.arange(steps) < 35, 1.0, 2.0)
        parts.append({"d": d, "b": b, "at": np.sort(rng.choice(steps, 7, replace=False))})
    for tau in (0.3, 5.0):
        alone = [_runs_of_equal_batch(p, tau) if p["d"].any() else np.zeros(p["at"].size) for p in parts]
        np.testing.assert_allclose(_Annealing(parts)(tau), np.concatenate(alone), rtol=1e-12, atol=1e-15)
    by_hand = _Annealing([{"d": np.array([0, 1.0, 0, 0]), "b": np.array([1.0, 1.0, 2.0, 2.0]), "at": np.arange(4)}])
    lam = np.exp(-2.0 / 1.0)  # after the batch doubles, m decays by λ(B = 2) = exp(−2)
    np.testing.assert_allclose(by_hand(1.0), [0, 1, 1 + 2 * lam, 1 + 2 * lam + 2 * lam ** 2])


def test_forward_area_of_a_constant_run_is_lr_times_tokens():
    curve = planned(1e5, 409_600, ScheduleSpec(kind="constant"), every=25)
    data = FORMS["lra"].prepare([curve], SCALE)
    np.testing.assert_allclose(data["s1"], curve.tokens / SCALE.tokens)  # η = LR: one unit of LR


def test_lra_recovers_the_simulated_law(lra_fit):
    fitted = np.array(list(lra_fit.theta.values()))
    truth = TRUTH["lra"]
    # the units differ (the fit's N_ref, LR and tokens are the ladder's): compare the scale-free parameters
    names = list(lra_fit.theta)
    for name in ("L0_exp", "A_exp", "C_exp"):
        assert fitted[names.index(name)] == pytest.approx(truth[names.index(name)], abs=0.03), name
    assert np.exp(fitted[names.index("log_alpha")]) == pytest.approx(0.5, rel=0.1)
    tau_tokens = np.exp(fitted[names.index("log_tau")]) * lra_fit.scale["tokens"]
    assert tau_tokens == pytest.approx(np.exp(truth[names.index("log_tau")]) * SCALE.tokens, rel=0.3)


@pytest.mark.parametrize("n", [5e4, 1.2e6])  # inside the ladder, and 3× beyond its largest size
def test_held_out_schedules_meet_the_goals(lra_fit, n):
    for name, spec in HELD_OUT.items():
        curve = planned(n, 4_800_000, spec)
        truth = true_loss(curve, "lra")
        loss, low, high = lra_fit.predict(curve)
        assert np.median(np.abs(loss / truth - 1)) < 0.01, name
        assert abs(loss[-1] / truth[-1] - 1) < 0.015, name
        assert np.all((low < loss) & (loss < high))


def test_band_covers_new_runs(lra_fit):
    rng = np.random.default_rng(7)
    inside, half = [], []
    for k in range(40):
        curve = planned(SIZES[k % 4], 4_800_000, list(HELD_OUT.values())[k % 4], every=200)
        new = observed(curve, "lra", rng, offset=rng.normal(0, RUN_SD))
        loss, low, high = lra_fit.predict(curve)
        inside.append((new.loss >= low) & (new.loss <= high))
        half.append(np.median(high / loss - 1))
    assert 0.85 <= np.concatenate(inside).mean() <= 0.995  # a 95% band: neither too narrow nor never missed
    assert np.median(half) < 1.96 * np.hypot(RUN_SD, POINT_SD) * 1.5  # and not needlessly wide


def test_two_peak_lrs_place_the_lr_exponents_and_a_third_lr_is_predicted():
    """A ladder at peak LRs 0.01 and 0.02 identifies how A and the annealing scale move with the peak LR; a cosine
    run at 0.014 is then predicted within the goals (with one LR the exponents stay 0)."""
    theta = TRUTH["lra"].copy()
    theta[8:] = -0.3, 0.8   # A_lr, C_lr
    fit = fit_curves(ladder("lra", lrs=(0.01, 0.02), theta=theta), form="lra")
    assert fit.theta["A_lr"] == pytest.approx(-0.3, abs=0.1) and fit.theta["C_lr"] == pytest.approx(0.8, abs=0.3)
    curve = planned(1e5, 4_800_000, HELD_OUT["cosine"], lr=0.014)
    loss, _, _ = fit.predict(curve)
    assert np.median(np.abs(loss / true_loss(curve, "lra", theta) - 1)) < 0.01


def test_the_decay_backtest_sees_a_wrong_form(lra_fit):
    """Decays held out by length: a law of the right form predicts them within its runs' noise, the other form
    does not (and its band then widens after the LR falls)."""
    wrong = fit_curves(ladder("mpl", seed=1), form="lra")
    assert lra_fit.sd_decay < 0.0015 < wrong.sd_decay


def test_mpl_predicts_its_own_held_out_schedules():
    fit = fit_curves(ladder("mpl", seed=1), form="mpl")
    for spec in HELD_OUT.values():
        curve = planned(1.4e5, 4_800_000, spec)
        loss, _, _ = fit.predict(curve)
        assert np.median(np.abs(loss / true_loss(curve, "mpl") - 1)) < 0.01


def test_lra_nd_predicts_held_out_schedules_inside_the_ladder():
    """The Kaplan-interaction form on a ladder drawn from the plain form: within its sizes, the goals hold."""
    fit = fit_curves(ladder("lra"), form="lra_nd")
    for spec in HELD_OUT.values():
        curve = planned(1e5, 4_800_000, spec)
        loss, _, _ = fit.predict(curve)
        assert np.median(np.abs(loss / true_loss(curve, "lra") - 1)) < 0.01


def test_a_fit_round_trips_through_its_dict(lra_fit):
    curve = planned(1e5, 2_048_000, HELD_OUT["cosine"])
    again = CurveFit.from_dict(lra_fit.to_dict())
    for a, b in zip(lra_fit.predict(curve), again.predict(curve)):
        np.testing.assert_allclose(a, b)


def test_bad_curves_are_refused_in_one_line():
    lr, batch = np.full(10, 0.01), np.full(10, 64.0)
    with pytest.raises(CurveError, match="evaluated steps must rise within 1..10"):
        Curve(n=1e4, lr=lr, batch=batch, steps=np.array([5, 3]))
    with pytest.raises(CurveError, match="one finite loss per evaluated step"):
        Curve(n=1e4, lr=lr, batch=batch, steps=np.array([5, 10]), loss=np.array([2.0, np.nan]))
    with pytest.raises(CurveError, match=re.escape("form='power' is not allowed; allowed: lra | lra_nd | mpl")):
        fit_curves([], form="power")


def test_a_stored_branch_reads_back_whole_with_its_stable_runs_prefix(tmp_path, monkeypatch):
    """studies.curves: a decay branch's LR history is its stable run's up to the fork, then its own; its whole curve
    adds the stable run's evaluations before the fork (a fit's curve does not: the stable run holds them once)."""
    from windtunnel.studies.curves import stored_curves
    from windtunnel.studies.points import final_points
    from windtunnel.tracking import RunLogger

    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path / "results"))
    base = {"N": 20_000, "model.name": "m", "model.d_model": 16, "model.vocab_size": 1024, "batch_tokens": 100}

    def log(name, params, steps, lr, tags):
        run = RunLogger(experiment="scaling_law", run_name=name, params={**base, **params},
                        tags={"scale": "micro", "windtunnel.run": name, **tags})
        for s in steps:
            evaluated = s % 10 == 0 or s == steps[-1]  # as the trainer: every eval_every steps and the last
            run.log({"lr": lr(s), "tokens": 100 * s, **({"eval/a/bpb": 3 - s / 100, "eval/b/bpb": 3 - s / 50}
                                                        if evaluated else {})}, s)
        run.finish("FINISHED", tag_status="finished")

    log("stable", {"coord.stage": "stable"}, range(1, 61), lambda s: 0.01, {"parent": ""})
    log("branch", {"coord.stage": "decay", "fork_step": 40, "coord.decay_fraction": 0.1}, range(41, 45),
        lambda s: 0.01 * (45 - s) / 5, {"parent": "stable"})
    frame, _ = final_points("scaling_law", scale="micro", current=False)
    ids = dict(zip(frame["name"], frame["run_id"]))
    fit, whole = stored_curves(frame, whole=False), stored_curves(frame, whole=True)
    branch = whole[ids["branch"]]
    np.testing.assert_allclose(branch.lr, [0.01] * 40 + [0.008, 0.006, 0.004, 0.002])
    assert branch.batch.tolist() == [100.0] * 44 and branch.n == 20_000 + 16 * 1024  # N_total
    assert branch.steps.tolist() == [10, 20, 30, 40, 44] and fit[ids["branch"]].steps.tolist() == [44]
    np.testing.assert_allclose(branch.loss[:4], 3 - np.array([10, 20, 30, 40]) * 0.015)  # the mean over the sets
    assert branch.group == fit[ids["stable"]].group == "stable"
