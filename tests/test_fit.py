"""windtunnel.fit: every fitter recovers known parameters from synthetic data drawn from its own law.

Tolerances are stated beside each assert; they were set from the spread of the estimator over
15 noise seeds (not tuned to the one seed used here), so a broken fit fails them.
"""

import json

import numpy as np
import pandas as pd
import pytest

from windtunnel.fit import (FitError, PerToken, ScalingLawFit, compute_optimal, d_over_n,
                            fit_batch_size_law, fit_envelope, fit_lr_transfer, fit_scaling_law,
                            tokens_to_reach, validate)

TRUE = {"C_N": 400.0, "alpha": 0.30, "C_D": 900.0, "beta": 0.28, "L0": 1.7}


def law(N, D, p=TRUE):
    return p["C_N"] * N ** -p["alpha"] + p["C_D"] * D ** -p["beta"] + p["L0"]


def ladder(noise: float, seed: int = 0):
    """60 points: 6 sizes over 30× N, 10 decay points per size from 10N to 60N tokens (6× D)."""
    rng = np.random.default_rng(seed)
    N = np.repeat(np.geomspace(1e7, 3e8, 6), 10)
    D = N * np.tile(np.linspace(10, 60, 10), 6)
    return N, D, law(N, D) * np.exp(rng.normal(0, noise, N.size))


def rel(x, truth):
    return abs(x / truth - 1)


@pytest.fixture(scope="module")
def clean_fit():
    """Huber fit of the ladder with 0.3% multiplicative noise (final losses averaged over eval sets)."""
    return fit_scaling_law(*ladder(0.003))


# ---------------------------------------------------------------- §5 scaling law

def test_scaling_law_recovers_parameters(clean_fit):
    f = clean_fit
    assert rel(f.alpha, TRUE["alpha"]) < 0.10   # 0.3% noise, 60 points: α within 10% (15-seed max 8%)
    assert rel(f.beta, TRUE["beta"]) < 0.05     # β within 5% (15-seed max 3.6%)
    assert rel(f.L0, TRUE["L0"]) < 0.10         # L0 within 10% (15-seed max 9%)
    N, D, _ = ladder(0)
    assert np.abs(f.predict(N, D) / law(N, D) - 1).max() < 0.005   # the curve itself within 0.5% everywhere
    assert f.method == "huber" and f.n_points == 60 and f.intervals == {} and f.samples is None


def test_huber_fit_beats_the_truth_on_its_own_objective():
    """At 1% noise α is poorly identified (15-seed spread ±20%), but the optimiser must still find
    an objective at least as low as the true parameters' — a check of the search, not the statistics."""
    from windtunnel.fit import FORMS, _Problem
    N, D, loss = ladder(0.01, seed=5)
    f = fit_scaling_law(N, D, loss)
    problem = _Problem(N, D, loss, 1e-3, FORMS["chinchilla"])
    w = np.full(N.size, 1 / N.size)

    def theta(p):   # natural parameters -> centred log parametrisation
        return np.array([np.log(p["C_N"]) - p["alpha"] * problem.mN, p["alpha"],
                         np.log(p["C_D"]) - p["beta"] * problem.mD, p["beta"], np.log(p["L0"])])
    fitted = {k: getattr(f, k) for k in TRUE}
    assert problem.objective(theta(fitted), w)[0] <= problem.objective(theta(TRUE), w)[0] + 1e-12


@pytest.mark.parametrize("form", ["chinchilla", "kaplan"])
def test_gradient_matches_finite_differences(form):
    from windtunnel.fit import FORMS, _Problem
    N, D, loss = ladder(0.01)
    problem = _Problem(N, D, loss, 1e-2, FORMS[form])
    w = np.random.default_rng(0).random(N.size)
    th = np.array([0.3, 0.35, 0.5, 0.25, 0.4])
    _, grad = problem.objective(th, w)
    eps = 1e-7
    numeric = [(problem.objective(th + eps * e, w)[0] - problem.objective(th - eps * e, w)[0]) / (2 * eps)
               for e in np.eye(5)]
    np.testing.assert_allclose(grad, numeric, rtol=1e-4, atol=1e-8)   # analytic gradient = central differences


KAPLAN = {"N_c": 3e4, "alpha_N": 0.3, "D_c": 2e6, "alpha_D": 0.25, "L0": 1.0}


def kaplan_law(N, D, p=KAPLAN):
    return ((p["N_c"] / N) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / D) ** p["alpha_D"] + p["L0"]


def test_kaplan_form_recovers_its_parameters_and_its_size_gap_widens_with_d():
    """Kaplan et al.'s form, whose gap between sizes grows with D (the micro ladder's shape, LOG.md)."""
    rng = np.random.default_rng(0)
    N = np.repeat(np.geomspace(5e4, 5e5, 5), 4)
    D = np.tile(np.array([1, 2, 4, 8]) * 1.1e6, 5)
    f = fit_scaling_law(N, D, kaplan_law(N, D) * np.exp(rng.normal(0, 0.002, N.size)), form="kaplan")
    assert f.form == "kaplan" and rel(f.alpha_N, 0.3) < 0.15 and rel(f.alpha_D, 0.25) < 0.15 and rel(f.L0, 1.0) < 0.1
    assert np.abs(f.predict(1.5e6, 9e6) / kaplan_law(1.5e6, 9e6) - 1) < 0.01   # 3× beyond the largest N: within 1%
    gap = lambda d: kaplan_law(5e4, d) - kaplan_law(5e5, d)   # noqa: E731
    assert gap(8.8e6) > 1.2 * gap(1.1e6)
    table = compute_optimal(f, [1e13, 1e15])                   # closed form = numeric minimum of L(N, C/6N)
    assert np.abs(table["rel_diff"]).max() < 1e-4
    n = table["N_opt_closed"].iloc[0]
    assert f.optimal_tokens(n) == pytest.approx(table["D_opt_closed"].iloc[0], rel=1e-6)
    again = ScalingLawFit.from_dict(json.loads(json.dumps(f.to_dict())))
    assert again.form == "kaplan" and again.predict(1e6, 1e7) == pytest.approx(f.predict(1e6, 1e7))
    with pytest.raises(FitError, match="form='kaplan' is not allowed with method 'curve_fit'"):
        fit_scaling_law(N, D, kaplan_law(N, D), form="kaplan", method="curve_fit")


def test_curve_fit_method_recovers_parameters():
    f = fit_scaling_law(*ladder(0.003), method="curve_fit")
    assert f.method == "curve_fit"
    assert rel(f.alpha, TRUE["alpha"]) < 0.10   # same tolerances as the Huber fit
    assert rel(f.beta, TRUE["beta"]) < 0.05
    assert rel(f.L0, TRUE["L0"]) < 0.10


def test_huber_resists_outliers_where_least_squares_moves(clean_fit):
    N, D, loss = ladder(0.003)
    loss[[5, 25, 47]] *= 1.3                     # 3 gross outliers: +30% (a bad eval, a broken run)
    huber = fit_scaling_law(N, D, loss)
    lsq = fit_scaling_law(N, D, loss, method="curve_fit")
    lsq_clean = fit_scaling_law(*ladder(0.003), method="curve_fit")
    huber_shift, lsq_shift = abs(huber.alpha - clean_fit.alpha), abs(lsq.alpha - lsq_clean.alpha)
    assert huber_shift < 0.01                    # Huber's α moves < 0.01 (5 seeds: 0.000–0.003)
    assert lsq_shift > 3 * huber_shift and lsq_shift > 0.02   # least squares' α moves > 0.02 (5 seeds: 0.071–0.073)
    assert rel(huber.alpha, TRUE["alpha"]) < 0.10


def test_bootstrap_intervals_contain_truth_and_to_dict_is_json():
    f = fit_scaling_law(*ladder(0.01), bootstrap=300, seed=1)
    assert f.n_bootstrap == 300 and f.samples.shape == (300, 5)
    truth = {**TRUE, "K": ScalingLawFit("x", TRUE, 0).K, "eta": (0.28 - 0.30) / 0.58}
    for name, value in truth.items():
        low, high = f.intervals[name]
        assert low <= value <= high, name        # 95% intervals contain the true value (1% noise, 300 resamples)
        assert low <= getattr(f, name) <= high   # and the point estimate
    low, high = f.predict_interval(3e8, 1.8e10)
    assert low < law(3e8, 1.8e10) < high         # prediction interval at the largest size covers the true loss
    d = json.loads(json.dumps(f.to_dict()))
    assert {"alpha", "beta", "C_N", "C_D", "L0", "K", "eta", "n_points", "method", "n_bootstrap"} <= d.keys()
    assert d["intervals"]["alpha"] == list(f.intervals["alpha"])


def test_predict_interval_without_bootstrap_raises(clean_fit):
    with pytest.raises(FitError, match="needs bootstrap samples; refit with bootstrap="):
        clean_fit.predict_interval(1e8, 1e9)


def test_K_and_eta_exact():
    f = ScalingLawFit("x", {"C_N": 2.0, "alpha": 0.5, "C_D": 8.0, "beta": 0.5, "L0": 1.0}, 0)
    assert f.K == pytest.approx((0.5 * 2 / (0.5 * 8)) ** 1.0)   # (α·C_N/(β·C_D))^(1/(α+β)) = 0.25
    assert f.eta == 0.0
    # α = β: N_opt = K·sqrt(C/6) = 0.25·1e5 at C = 6e10, D_opt = C/6/N_opt = 4e5
    row = compute_optimal(f, 6e10).iloc[0]
    assert row["N_opt_closed"] == pytest.approx(2.5e4) and row["D_opt_closed"] == pytest.approx(4e5)


def test_compute_optimal_closed_form_matches_numeric(clean_fit):
    budgets = np.array([1e18, 1e20, 1e22, 1e24])
    table = compute_optimal(clean_fit, budgets)
    assert list(table.columns) == ["C", "N_opt_closed", "D_opt_closed", "N_opt_numeric", "D_opt_numeric",
                                   "ratio_closed", "ratio_numeric", "rel_diff"]
    assert np.abs(table["rel_diff"]).max() < 0.01                      # closed vs numeric N_opt within 1%
    np.testing.assert_allclose(6 * table["N_opt_closed"] * table["D_opt_closed"], budgets)   # C = 6ND
    f = clean_fit                                                      # §5: N/D = K²·(C/6)^η
    np.testing.assert_allclose(1 / table["ratio_closed"], f.K ** 2 * (budgets / 6) ** f.eta, rtol=1e-9)
    assert d_over_n(f, 1e22) == pytest.approx(table["ratio_numeric"].iloc[2])


def test_compute_optimal_under_a_flop_count_with_attention(clean_fit):
    """C = f(N)·D with f = k·N^g (attention's share falls with width: g < 1): the closed form of both forms is the
    numeric minimum of L(N, C/f(N)), the budget is spent exactly, and g = 1, k = 6 is 6·N·D again."""
    N = np.repeat(np.geomspace(5e4, 5e5, 5), 4)
    D = np.tile(np.array([1, 2, 4, 8]) * 1.1e6, 5)
    kaplan = fit_scaling_law(N, D, kaplan_law(N, D), form="kaplan")
    per_token = PerToken.of_ladder("full", N, 6 * N + 200 * N ** 0.5)      # attention ∝ width ∝ N^0.5 here
    assert 0.8 < per_token.b < 1 and per_token.count == "full"
    budgets = np.array([1e16, 1e20, 1e24])
    for f in (clean_fit, kaplan):
        table = compute_optimal(f, budgets, per_token)
        assert np.abs(table["rel_diff"]).max() < 1e-4
        np.testing.assert_allclose(per_token(table["N_opt_closed"]) * table["D_opt_closed"], budgets)
        n = table["N_opt_numeric"].iloc[1]
        assert f.optimal_tokens(n, per_token) == pytest.approx(table["D_opt_numeric"].iloc[1], rel=1e-4)
        six = compute_optimal(f, budgets, PerToken("full", k=6.0, b=1.0))
        np.testing.assert_allclose(six["N_opt_closed"], compute_optimal(f, budgets)["N_opt_closed"], rtol=1e-12)
    assert PerToken.from_dict(per_token.to_dict()) == per_token and PerToken.from_dict(None) == PerToken("6nd")
    assert PerToken.from_dict("C = 6·N·D (an older fit.json's sentence)") == PerToken("6nd")


def grouped_ladder(seed: int, *, sd_group: float = 0.005, sd_point: float = 0.0005, seeds: int = 2):
    """Six sizes × `seeds` stable runs × 6 branches: every stable run's branches share one log-loss offset."""
    rng = np.random.default_rng(seed)
    sizes = np.geomspace(1e7, 3e8, 6)
    N = np.repeat(sizes, seeds * 6)
    D = N * np.tile(np.linspace(10, 60, 6), 6 * seeds)
    groups = np.repeat(np.arange(6 * seeds), 6)
    offsets = rng.normal(0, sd_group, 6 * seeds)[groups] + rng.normal(0, sd_point, N.size)
    return N, D, law(N, D) * np.exp(offsets), groups


def test_group_bootstrap_resamples_whole_stable_runs():
    N, D, loss, groups = grouped_ladder(3)
    f = fit_scaling_law(N, D, loss, bootstrap=200, seed=1, groups=groups)
    assert f.n_groups == 12 and f.group_dof == 12 - 3
    assert 0.002 < f.group_sd < 0.012                                    # the 0.5% offset per stable run, recovered
    ungrouped = fit_scaling_law(N, D, loss, bootstrap=200, seed=1)
    assert ungrouped.n_groups == 72
    width = lambda fit: np.subtract(*fit.intervals["alpha"][::-1])       # noqa: E731
    assert width(f) > 1.5 * width(ungrouped)   # points of one run are not independent: 72 "points" overstate the data
    low, high = f.predict_interval(6e8, 3e10)
    law_low, law_high = f.predict_interval(6e8, 3e10, new_run=False)
    assert low < law_low < law_high < high    # a new run's own offset widens the interval of the law
    assert json.loads(json.dumps(f.to_dict()))["group_dof"] == 9
    again = ScalingLawFit.from_dict(json.loads(json.dumps(f.to_dict(samples=True))))
    assert again.predict_interval(6e8, 3e10) == pytest.approx((low, high))


def test_group_intervals_cover_the_truth():
    """Coverage on simulated ladders (bench/interval_coverage.py measures it on 200 micro-shaped replicates):
    here 30 replicates of the grouped ladder; the 95% intervals of α and of a new run 2× beyond the largest
    size must hold the truth in ≥ 90% of them (27 of 30: binomial sd ~4% around 95%)."""
    alpha_hits = run_hits = 0
    for seed in range(30):
        N, D, loss, groups = grouped_ladder(100 + seed)
        f = fit_scaling_law(N, D, loss, bootstrap=200, seed=seed, groups=groups)
        low, high = f.intervals["alpha"]
        alpha_hits += low <= TRUE["alpha"] <= high
        new = law(6e8, 3e10) * np.exp(np.random.default_rng(seed).normal(0, 0.005))
        low, high = f.predict_interval(6e8, 3e10)
        run_hits += low <= new <= high
    assert alpha_hits >= 27 and run_hits >= 27, (alpha_hits, run_hits)


def test_prediction_interval_widens_with_the_drift_between_runs():
    """Seeds drift apart as they train: each stable run's offset grows with log D (2% sd per unit of log D here)."""
    rng = np.random.default_rng(7)
    N, D, _, groups = grouped_ladder(7, sd_group=0.0, sd_point=0.0, seeds=3)
    drift = rng.normal(0, 0.02, groups.max() + 1)[groups] * (np.log(D) - np.log(D).mean())
    f = fit_scaling_law(N, D, law(N, D) * np.exp(drift), bootstrap=100, groups=groups)
    assert 0.01 < f.drift_sd < 0.03 and f.drift_center == pytest.approx(np.log(D).mean())
    near, far = (np.subtract(*f.predict_interval(1e8, d)[::-1]) / law(1e8, d) for d in (np.exp(f.drift_center), 1e12))
    assert far > 1.5 * near   # a run far along in D can have drifted far: a wider interval
    assert ScalingLawFit.from_dict(json.loads(json.dumps(f.to_dict(samples=True)))).drift_sd == f.drift_sd


def test_drift_is_read_where_runs_span_d():
    """Runs spanning 4 e-folds of D and runs spanning 0.1 (two branches): the short ones' slopes are mostly their
    points' noise, and the drift sd (2% per e-fold, true) is read from the long ones."""
    rng = np.random.default_rng(11)
    sizes = np.geomspace(1e7, 3e8, 20)
    spans = [np.linspace(0, 4, 5) if i % 2 == 0 else np.array([2.0, 2.1]) for i in range(sizes.size)]
    N = np.concatenate([np.full(s.size, n) for n, s in zip(sizes, spans)])
    log_d = np.concatenate([np.log(10 * n) + s for n, s in zip(sizes, spans)])
    groups = np.concatenate([np.full(s.size, i) for i, s in enumerate(spans)])
    slope = rng.normal(0, 0.02, sizes.size)[groups]
    offsets = slope * (log_d - log_d.mean()) + rng.normal(0, 0.005, N.size)
    D = np.exp(log_d)
    f = fit_scaling_law(N, D, law(N, D) * np.exp(offsets), groups=groups)
    residuals = np.log(law(N, D) / f.predict(N, D)) + offsets
    short = [np.polyfit(log_d[groups == g], residuals[groups == g], 1)[0] for g in range(1, sizes.size, 2)]
    assert np.std(short) > 0.04              # the short runs' slopes alone: mostly noise over 0.1 e-fold
    assert 0.008 < f.drift_sd < 0.03, f.drift_sd   # unweighted: 0.04–0.07 over seeds


def test_prediction_interval_needs_enough_groups():
    N, D, loss, groups = grouped_ladder(4, seeds=1)
    f = fit_scaling_law(N[:18], D[:18], loss[:18], bootstrap=50, groups=groups[:18])   # 3 stable runs, 3 parameters
    assert f.group_dof == 0
    with pytest.raises(FitError, match="needs the spread between groups; 3 groups leave 0 degrees of freedom"):
        f.predict_interval(1e9, 1e10)
    with pytest.raises(FitError, match="groups has 2 labels for 18 points"):
        fit_scaling_law(N[:18], D[:18], loss[:18], groups=[1, 2])


def test_an_unidentified_floor_is_named_not_reported():
    """Losses that fall as pure power laws (no floor in range) leave L0 at its bound 0: say so."""
    N, D, _ = ladder(0.0)
    f = fit_scaling_law(N, D, 400 * N ** -0.3 + 900 * D ** -0.28)
    assert f.L0 < 1e-3 and set(f.not_identified) == {"L0"}
    assert "lower bound" in f.not_identified["L0"]
    assert fit_scaling_law(*ladder(0.003)).not_identified == {}


@pytest.mark.parametrize("args, message", [
    ((np.ones(4) * 1e8, np.arange(1, 5) * 1e9, np.ones(4) * 3), r"scaling-law fit needs at least 6 points \(got 4\)"),
    (([1e7, 0, 1e8, 1e8, 1e9, 1e9], [1e9] * 3 + [2e9] * 3, [3.0] * 6), r"N must be > 0 \(row 1: N=0\)"),
    (([1e7] * 3 + [1e8] * 3, [1e9, 2e9, -1, 1e9, 2e9, 3e9], [3.0] * 6), r"D must be > 0 \(row 2: D=-1\)"),
    (([1e7] * 3 + [1e8] * 3, [1e9, 2e9, 3e9] * 2, [3, 3, 3, np.nan, 3, np.nan]),
     r"column 'loss' has 2 NaN values \(rows 3, 5\)"),
    (([1e7] * 3 + [1e8] * 3, [1e9, 2e9, 3e9] * 2, [3, 3, 0, 3, 3, 3]), r"loss must be > 0 \(row 2: loss=0\)"),
    (([1e8] * 6, [1e9, 2e9, 3e9] * 2, [3.0] * 6), r"needs at least 2 distinct N values \(got 1\)"),
])
def test_scaling_law_errors(args, message):
    with pytest.raises(FitError, match=message):
        fit_scaling_law(*args)


def test_validate_errors():
    frame = pd.DataFrame({"N": [1.0, 2.0], "loss": [3.0, 4.0]})
    with pytest.raises(FitError, match="missing column 'D'; columns are: N, loss"):
        validate(frame, ["N", "D", "loss"], what="scaling-law fit")
    with pytest.raises(FitError, match=r"column 'N' is not numeric \(row 1: 'big'\)"):
        validate(pd.DataFrame({"N": [1.0, "big"]}), ["N"], what="x")
    assert validate(frame, ["N"], what="x", positive=["N"])["N"].tolist() == [1.0, 2.0]


# ---------------------------------------------------------------- §3.2 batch-size law

K_BS, GAMMA = 1.21e9, 6.24     # the paper's law, batch sizes in tokens
BATCHES = 2.0 ** np.arange(14, 24)   # 16K … 8M tokens


def batch_curves(noise=0.001, seed=0, batches=BATCHES):
    """Loss curves whose tokens-to-reach L at batch B is exactly log-parabolic with vertex k/L^γ:
    log t(L, B) = log T0(L) + c·(log B − log(k/L^γ))², T0 = 2e8·((L − floor)/(5 − floor))^-3.
    c = 0.08 keeps every curve monotone (checked); 3 models differ in their loss floor."""
    rng, rows = np.random.default_rng(seed), []
    for model, n, floor in (("9M", 9e6, 2.8), ("30M", 3e7, 2.6), ("170M", 1.7e8, 2.4)):
        losses = np.linspace(4.99, floor + 0.25, 300)
        for b in batches:
            log_t = np.log(2e8) - 3 * np.log((losses - floor) / (5 - floor)) + 0.08 * (np.log(b) - np.log(K_BS / losses ** GAMMA)) ** 2
            assert np.all(np.diff(log_t) > 0)   # the generator itself: lower loss needs more tokens
            noisy = losses * (1 + rng.normal(0, noise, losses.size))
            rows += [(model, n, b, t, l) for t, l in zip(np.exp(log_t), noisy)]
    return pd.DataFrame(rows, columns=["model", "N", "batch_tokens", "tokens", "loss"])


def test_tokens_to_reach_interpolates_in_log_tokens():
    curves = pd.DataFrame({"model": "m", "N": 1e6, "batch_tokens": 1024, "tokens": [1e3, 1e4, 1e5],
                           "loss": [5.0, 4.0, 4.5]})   # noisy rise at the end: running minimum stays 4.0
    out = tokens_to_reach(curves, [4.5, 4.0, 3.0, 6.0])
    # 4.5 is halfway from 5.0 to 4.0 in loss → halfway in log tokens: 10^3.5; 3.0 never reached; 6.0 at the first eval
    np.testing.assert_allclose(out["tokens"], [10 ** 3.5, 1e4, np.nan, 1e3])
    assert list(out.columns) == ["model", "N", "batch_tokens", "level", "tokens"]


def test_batch_size_law_recovers_k_and_gamma():
    fit = fit_batch_size_law(batch_curves(), bootstrap=200)
    assert rel(fit.k, K_BS) < 0.15             # 0.1% loss noise: k within 15% (k is an extrapolation to L = 1)
    assert abs(fit.gamma - GAMMA) < 0.15       # γ within ±0.15
    assert fit.intervals["k"][0] < K_BS < fit.intervals["k"][1]
    assert fit.intervals["gamma"][0] < GAMMA < fit.intervals["gamma"][1]
    assert fit.optima["model"].nunique() == 3 and len(fit.optima) >= 12
    # each optimum lies on the law within 10% in batch size
    np.testing.assert_allclose(fit.optima["bs_opt"], K_BS / fit.optima["level"] ** GAMMA, rtol=0.10)
    assert fit.predict(3.5) == pytest.approx(fit.k / 3.5 ** fit.gamma)
    assert json.loads(json.dumps(fit.to_dict()))["n_optima"] == len(fit.optima)
    # each parabola's curvature is the generator's c = 0.08 (per (ln B)², ln tokens; 24 optima within 3.6%)
    np.testing.assert_allclose(fit.optima["curvature"], 0.08, rtol=0.05)
    assert fit.curvature_near(2.0) == pytest.approx(0.08, rel=0.05)


def shared_noise_optima(rng, n_models=3, sd_model=0.15, sd_point=0.03):
    """Optima on bs_opt = K_BS / L^GAMMA of models that each cover their own loss range (6 levels): a model's optima
    come from the same curves, so they share one offset (sd 15% in ln bs) besides their own 3%."""
    rows = []
    for m in range(n_models):
        levels = np.geomspace(4.5 - 0.25 * m, 3.7 - 0.25 * m, 6)
        shared = rng.normal(0, sd_model)
        rows += [(f"m{m}", lv, K_BS / lv ** GAMMA * np.exp(shared + rng.normal(0, sd_point))) for lv in levels]
    return pd.DataFrame(rows, columns=["model", "level", "bs_opt"])


def test_batch_size_bootstrap_resamples_whole_models():
    """200 simulated sets of optima (3 models, shared per-model noise), the 95% interval of bs_opt at loss 2.5 (an
    extrapolation below every optimum): resampling whole models covered the truth in 91.5–92.5% of them (4 seeds),
    resampling optima one by one in 50–64%, with intervals ~1.17× narrower (high/low 1.5 against 1.8)."""
    from windtunnel.fit import BatchSizeFit, _bootstrap_line, _power_line

    rng, target = np.random.default_rng(2), 2.5
    covered, ratio = {"grouped": [], "per_optimum": []}, {"grouped": [], "per_optimum": []}
    for rep in range(200):
        optima = shared_noise_optima(rng)
        center = _power_line(optima["level"].to_numpy(), optima["bs_opt"].to_numpy())
        one_per_optimum = optima.assign(model=np.arange(len(optima)))   # each optimum its own group
        for name, frame in (("grouped", optima), ("per_optimum", one_per_optimum)):
            fit = BatchSizeFit(np.exp(center[0]), center[1], frame, samples=_bootstrap_line(frame, center, 400, rep))
            low, high = fit.predict_interval(target)
            covered[name].append(low <= K_BS / target ** GAMMA <= high)
            ratio[name].append(high / low)
    assert np.mean(covered["grouped"]) >= 0.85 and np.mean(covered["per_optimum"]) <= 0.75
    assert np.median(ratio["grouped"]) > 1.1 * np.median(ratio["per_optimum"])


def test_batch_size_law_leaves_out_vertices_outside_the_batch_range():
    # only batches ≤ 256K: the optima of the lower loss levels (bs_opt > 256K) fall outside and are counted
    full, fit = fit_batch_size_law(batch_curves()), fit_batch_size_law(batch_curves(batches=BATCHES[:5]))
    outside = (full.optima["bs_opt"] > BATCHES[4]).sum()       # the levels whose optimum lies past 256K
    assert fit.n_outside >= outside > 0 and fit.n_skipped == fit.n_outside + fit.n_concave
    assert fit.optima["bs_opt"].between(BATCHES[0], BATCHES[4]).all()   # never extrapolated, not even one step
    assert json.loads(json.dumps(fit.to_dict()))["n_outside"] == fit.n_outside


def test_batch_size_law_needs_two_levels():
    curves = batch_curves()
    with pytest.raises(FitError, match="batch-size law needs optima at ≥2 loss levels; found 1 — add batch sizes"):
        fit_batch_size_law(curves, levels=[4.0])
    with pytest.raises(FitError, match="missing column 'batch_tokens'"):
        fit_batch_size_law(curves.drop(columns="batch_tokens"))


# ---------------------------------------------------------------- §3.3 LR transfer

def lr_frame(seed=0):
    """µP: every width's optimum at lr 0.01; SP: the optimum falls with width (0.04 → 0.0025)."""
    rng, rows = np.random.default_rng(seed), []
    lrs = np.geomspace(1e-3, 1e-1, 9)
    for param, optima in (("mup", [0.01, 0.01, 0.01]), ("sp", [0.04, 0.01, 0.0025])):
        for model, width, opt in zip(("40M", "100M", "500M"), (512, 768, 1344), optima):
            loss = 3.0 + 0.3 * (np.log10(lrs) - np.log10(opt)) ** 2 + rng.normal(0, 0.003, lrs.size)
            rows += [(param, model, width, lr, l) for lr, l in zip(lrs, loss)]
    return pd.DataFrame(rows, columns=["parametrization", "model", "width", "lr", "loss"])


CLIFF_LRS = 0.00125 * 2.0 ** np.arange(9)   # 0.00125 … 0.32, a factor 2 apart
WIDTHS = (16, 32, 64, 128)                  # 8× of width, as §3.3's goal asks
MUP_OPT = (0.0088, 0.0105, 0.0095, 0.0112)  # µP: optima that wander a little (true spread 1.27×)


def cliff_frame(param, optima, seed=0, cliff=1.0):
    """Final losses with a known optimum per width: 0.4·x² below it and 0.4·x² + cliff·x³ above (x = log10 of
    lr/optimum), a rise that steepens towards divergence; runs 0.45 decades (2.8×) above the optimum diverge (NaN)."""
    rng, rows = np.random.default_rng(seed), []
    for width, opt in zip(WIDTHS, optima):
        x = np.log10(CLIFF_LRS / opt)
        loss = 3 - 0.1 * np.log2(width) + 0.4 * x ** 2 + cliff * np.clip(x, 0, None) ** 3 + rng.normal(0, 0.003, x.size)
        loss[x > 0.45] = np.nan
        rows += [(param, f"w{width}", width, lr, l) for lr, l in zip(CLIFF_LRS, loss)]
    return pd.DataFrame(rows, columns=["parametrization", "model", "width", "lr", "loss"])


def test_lr_transfer_finds_vertices_and_contrasts_sp():
    fit = fit_lr_transfer(lr_frame())
    mup = fit.optima[fit.optima["parametrization"] == "mup"]
    np.testing.assert_allclose(mup["lr_opt"], 0.01, rtol=0.15)   # 3-point vertex within 15% (3 mLoss noise; 15 seeds: 13%)
    assert ((mup["low"] < 0.01) & (0.01 < mup["high"])).all()            # delta-method intervals cover it
    assert not fit.optima["at_edge"].any() and (fit.optima["n_censored"] == 0).all()
    assert (fit.optima["n_fit"] == 3).all() and (fit.optima["n_points"] == 9).all()   # the minimum and its neighbours
    assert fit.best_lr("mup") == pytest.approx(0.01, rel=0.07)           # geometric mean within 7% (15-seed max 5.1%)
    assert fit.spread["mup"]["ratio"] < 1.4 and fit.spread["sp"]["ratio"] > 10   # µP transfers, SP moves 16×
    assert fit.spread["sp"]["interval"][0] > 5 and fit.spread["mup"]["width_ratio"] == pytest.approx(1344 / 512)
    assert fit.goal["holds"] is False and "µP widths span 2.6x, not ≥ 8x" in fit.goal["why"]   # too narrow a ladder
    assert "width" in fit.optima.columns and fit.interval_method == "delta"
    # each width's parabola curvature is the curves' 0.3 loss per (log10 lr)²: the median of 3 widths within 25%
    # (3-point parabolas 0.25 decades apart, 3 mLoss noise; 8 seeds: 0.26–0.35)
    assert mup["curvature"].median() == pytest.approx(0.3, rel=0.25)
    assert json.loads(json.dumps(fit.to_dict()))["best_lr"]["sp"] == pytest.approx(fit.best_lr("sp"))


def test_lr_transfer_bootstrap_intervals():
    fit = fit_lr_transfer(lr_frame(), bootstrap=300)
    mup = fit.optima[fit.optima["parametrization"] == "mup"]   # each covers at ~95%: all three in 13 of 15 seeds
    assert fit.interval_method == "bootstrap" and ((mup["low"] < 0.01) & (0.01 < mup["high"])).all()


@pytest.mark.parametrize("bootstrap", [0, 300])
def test_lr_transfer_recovers_optima_below_an_asymmetric_cliff(bootstrap):
    frame = cliff_frame("mup", MUP_OPT, cliff=2.0)   # at the upper neighbour the rise is 2.5× the lower one's
    fit = fit_lr_transfer(frame, bootstrap=bootstrap)
    rows = fit.optima.set_index("width").loc[list(WIDTHS)]
    truth = np.array(MUP_OPT)
    assert ((rows["low"] <= truth) & (truth <= rows["high"])).all()     # every interval holds its optimum (15/15 seeds)
    np.testing.assert_allclose(rows["lr_opt"], truth, rtol=0.20)         # the local vertex within 20% (15-seed max 16%)
    diverged = (CLIFF_LRS[None, :] > truth[:, None] * 10 ** 0.45)
    assert (rows["n_censored"] == diverged.sum(axis=1)).all()            # censored, not dropped: 4 per width
    np.testing.assert_allclose(rows["lr_diverged"], [CLIFF_LRS[d].min() for d in diverged])
    assert (rows["high"] <= rows["lr_diverged"]).all() and not rows["at_edge"].any()
    # the asymmetry pulls a parabola through the whole finite grid further off than the local one
    whole = [10 ** _vertex(np.log10(g["lr"]), g["loss"]) for _, g in frame.dropna().groupby("width")]
    error = np.abs(np.log(rows["lr_opt"] / truth)).mean()
    assert np.abs(np.log(np.array(whole) / truth)).mean() > 1.25 * error   # 15 seeds: ≥ 1.4× the local error


def _vertex(x, y):
    a, b, _ = np.polyfit(x, y, 2)
    return -b / (2 * a)


def test_lr_transfer_spread_interval_and_the_goal():
    """µP: optima that wander 1.27× over 8× of width; SP: the optimum moves as 1/width (8×). Over 15 seeds µP's
    upper end stays ≤ 1.61×, SP's lower end ≥ 6.5×, and both intervals cover the true spread."""
    sp_opt = tuple(0.01 * 128 / w for w in WIDTHS)
    fit = fit_lr_transfer(pd.concat([cliff_frame("mup", MUP_OPT), cliff_frame("sp", sp_opt, seed=1)]))
    mup, sp = fit.spread["mup"], fit.spread["sp"]
    assert mup["interval"][0] <= max(MUP_OPT) / min(MUP_OPT) <= mup["interval"][1] < 2     # covers the truth, < 2×
    assert 2 < sp["interval"][0] <= 8 <= sp["interval"][1]                                   # covers 8×, clearly > 2×
    assert mup["width_ratio"] == sp["width_ratio"] == 8 and mup["n_open"] == 0 and mup["widths"] == [16, 128]
    assert fit.goal["holds"] is True and fit.goal["why"].startswith("µP spread ≤")
    assert fit.best_lr("mup") == pytest.approx(np.exp(np.log(MUP_OPT).mean()), rel=0.15)   # what the plan reads


def test_lr_transfer_censors_diverged_runs_and_brackets_edges():
    frame = lr_frame()[lambda f: f["parametrization"] == "mup"].drop(columns="parametrization")
    frame.loc[frame.index[[7, 8]], "loss"] = [np.nan, np.inf]             # 40M diverged at the two largest lr
    frame = frame[~((frame["model"] == "500M") & (frame["lr"] > 0.004))]  # 500M: only lr below its optimum
    frame = frame[~((frame["model"] == "100M") & (frame["lr"] < 0.02))]   # 100M: only lr above its optimum
    frame = frame.assign(status=np.where((frame["model"] == "100M") & (frame["lr"] == frame["lr"].max()),
                                         "diverged", "finished"))         # a status alone censors a run too
    fit = fit_lr_transfer(frame)
    rows = fit.optima.set_index("model")
    assert rows.loc["40M", "n_censored"] == 2 and rows.loc["40M", "n_points"] == 7
    assert rows.loc["40M", "lr_diverged"] == pytest.approx(frame["lr"].iloc[7])
    assert not rows.loc["40M", "at_edge"] and rows.loc["40M", "lr_opt"] == pytest.approx(0.01, rel=0.15)
    lrs = np.sort(frame["lr"][frame["model"] == "500M"].to_numpy())       # the loss still falls at the largest lr
    assert rows.loc["500M", "at_edge"] and rows.loc["500M", "lr_opt"] == lrs[-1]
    assert rows.loc["500M", "low"] == pytest.approx(lrs[-2]) and np.isnan(rows.loc["500M", "high"])   # one-sided
    lrs = np.sort(frame["lr"][frame["model"] == "100M"].to_numpy())       # the loss rises from the smallest lr
    assert rows.loc["100M", "at_edge"] and rows.loc["100M", "n_censored"] == 1
    assert np.isnan(rows.loc["100M", "low"]) and rows.loc["100M", "high"] == pytest.approx(lrs[1])
    assert fit.spread["mup"]["n_open"] == 2 and fit.spread["mup"]["interval"] is None   # one bounded optimum
    assert set(fit.optima["parametrization"]) == {"mup"}
    with pytest.raises(FitError, match="no runs with parametrization 'sp'; have: mup"):
        fit.best_lr("sp")


def test_lr_transfer_caps_the_optimum_at_the_smallest_diverged_lr():
    """A run can diverge at an lr below one that finished (divergence is stochastic): the optimum stays below it."""
    lrs = np.array([0.0025, 0.005, 0.01, 0.02, 0.04])
    loss = 3.0 + 0.3 * (np.log10(lrs) - np.log10(0.018)) ** 2
    frame = pd.DataFrame({"model": "m", "lr": lrs, "loss": np.where(lrs == 0.02, np.nan, loss)})
    row = fit_lr_transfer(frame).optima.iloc[0]
    assert row["n_censored"] == 1 and row["lr_diverged"] == 0.02
    assert row["lr_opt"] <= 0.02 and row["high"] <= 0.02 and not row["at_edge"]   # the parabola's vertex is ~0.018


def test_transfer_regret_is_zero_when_the_optimum_stays_and_grows_when_it_moves():
    lrs = [0.005, 0.01, 0.02, 0.04]
    rows = []
    for width in (16, 32, 64, 128):
        for lr in lrs:  # "mup": optimum 0.01 at every width; "sp": optimum 0.01·16/width
            rows.append(("mup", f"w{width}", width, lr, 3 + 0.3 * np.log10(lr / 0.01) ** 2))
            rows.append(("sp", f"w{width}", width, lr, 3 + 0.3 * np.log10(lr / (0.16 / width)) ** 2))
    frame = pd.DataFrame(rows, columns=["parametrization", "model", "width", "lr", "loss"])
    spread = fit_lr_transfer(frame).spread
    assert spread["mup"]["regret"]["lr"] == 0.01 and spread["mup"]["regret"]["max"] == pytest.approx(0, abs=1e-12)
    sp = spread["sp"]["regret"]   # tuned at width 16 (0.01); at width 128 the best is 0.005 (0.3 log-decades off)
    assert sp["by_width"]["128"] == pytest.approx((3 + 0.3 * np.log10(8) ** 2) / (3 + 0.3 * np.log10(4) ** 2) - 1)


def test_lr_transfer_all_diverged_raises():
    frame = pd.DataFrame({"model": "m", "lr": [0.1, 0.2, 0.3], "loss": [np.nan] * 3})
    with pytest.raises(FitError, match="every run of model 'm' \\(mup\\) diverged; add smaller learning rates"):
        fit_lr_transfer(frame)


# ---------------------------------------------------------------- §4.3 envelope

def test_envelope_prefers_the_law_that_made_the_data():
    rng = np.random.default_rng(0)
    C = np.geomspace(1e17, 1e19, 12)
    power = 40 * (C / 1e15) ** -0.35 + 2.5                   # β·C^-α + L0 written with C in 1e15 units
    power_fit = fit_envelope(C, power * (1 + rng.normal(0, 0.002, C.size)))
    assert power_fit.better == "power"
    assert abs(power_fit.power["alpha"] - 0.35) < 0.05      # 0.2% noise: α within ±0.05
    assert power_fit.predict("power", 1e18) == pytest.approx(40 * 1000 ** -0.35 + 2.5, rel=0.005)
    expo = 1.5 * np.exp(-3e-19 * C) + 2.8
    expo_fit = fit_envelope(C, expo * (1 + rng.normal(0, 0.002, C.size)))
    assert expo_fit.better == "exponential"
    assert expo_fit.exponential["beta"] == pytest.approx(3e-19, rel=0.10)   # rate within 10%
    assert expo_fit.aic["exponential"] < expo_fit.aic["power"]
    assert json.loads(json.dumps(expo_fit.to_dict()))["better"] == "exponential"
    with pytest.raises(FitError, match=r"envelope fit needs at least 4 points \(got 3\)"):
        fit_envelope(C[:3], power[:3])