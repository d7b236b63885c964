"""Do the scaling law's 95% intervals cover the truth? Coverage measured on simulated micro ladders.

    python bench/interval_coverage.py [--replicates 200] [--bootstrap 300] [--forms kaplan chinchilla]

Each replicate draws the micro ladder (5 sizes × 2 seeds × branches at 1.1–8.8M tokens, the N_total of micro-24k …
micro-425k) from a known law — each form at the values fitted to the real micro ladder — with the noise measured
there (LOG.md): every stable run (one seed) gets its own log-loss offset (sd `--sd-group`) and a drift that grows
with log D to sd `--sd-drift` at the largest D (seeds drift apart as they train), shared by all its decay branches,
and each point a small independent offset (sd `--sd-point`). The law is fitted with the group bootstrap (groups =
stable runs), then:
- exponent: does the 95% interval of the N exponent (alpha / alpha_N) contain the true one?
- law@target: at micro-1.3m (2.8× the largest N, at the largest D) does the interval of the law (new_run=False)
  contain the true loss? new run: does the prediction interval contain a new noisy run's loss?
- backtests: the share of held-out points inside their prediction intervals in the rolling backtests.
Prints a table and writes bench/results/interval_coverage.json. The bar (issue 11): ≥ 90% for the exponent and
the target.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from windtunnel.fit import FORMS, fit_scaling_law, rolling_backtests

TRUTH = {  # the values fitted to the micro ladder (results/scaling_law/fit.json, 2026-11-30), N = N_total
    "kaplan": {"N_c": 6.07e6, "alpha_N": 0.173, "D_c": 9.54e7, "alpha_D": 0.184, "L0": 0.0},
    "chinchilla": {"C_N": 506.0, "alpha": 0.620, "C_D": 286.0, "beta": 0.425, "L0": 1.346},
}
SIZES = np.array([56_480, 102_384, 207_296, 303_280, 523_104])  # N_total of micro-24k … micro-425k
TOKENS = np.array([1, 2, 4, 8]) * 1.1 * 2**20                     # branch points at 1-8M tokens + 10% decays
TARGET = (1_451_904, 8.8 * 2**20)                                   # micro-1.3m, N_total, at the largest D


def law(form: str, N, D):
    p = TRUTH[form]
    return FORMS[form].predict(np.array([p[k] for k in FORMS[form].params], dtype=float), N, D)


def run_offsets(rng, n_runs: int, args) -> tuple[np.ndarray, np.ndarray]:
    """Per stable run: a constant offset and a drift per unit of log D progress (0 at the first D, 1 at the last)."""
    return rng.normal(0, args.sd_group, n_runs), rng.normal(0, args.sd_drift, n_runs)


def ladder(rng, form: str, args):
    runs = SIZES.size * args.seeds
    N = np.repeat(np.repeat(SIZES, args.seeds), TOKENS.size)
    D = np.tile(TOKENS, runs)
    groups = np.repeat(np.arange(runs), TOKENS.size)
    progress = np.log(D / TOKENS[0]) / np.log(TOKENS[-1] / TOKENS[0])
    offset, drift = run_offsets(rng, runs, args)
    noise = offset[groups] + drift[groups] * progress + rng.normal(0, args.sd_point, N.size)
    return N, D, law(form, N, D) * np.exp(noise), groups


def replicate(rng, form: str, args) -> dict:
    N, D, loss, groups = ladder(rng, form, args)
    f = fit_scaling_law(N, D, loss, form=form, bootstrap=args.bootstrap, seed=int(rng.integers(1 << 31)), groups=groups)
    exponent = FORMS[form].exponent_names[0]
    low, high = f.intervals[exponent]
    truth = law(form, *TARGET)
    offset, drift = run_offsets(rng, 1, args)
    new_run = truth * np.exp(offset[0] + drift[0] * np.log(TARGET[1] / TOKENS[0]) / np.log(TOKENS[-1] / TOKENS[0])
                             + rng.normal(0, args.sd_point))
    ci, pi = f.predict_interval(*TARGET, new_run=False), f.predict_interval(*TARGET)
    tests = rolling_backtests(N, D, loss, form=form, groups=groups, bootstrap=args.bootstrap, seed=1)
    covered = [c for t in tests for c in t.covered]
    return {"exponent": low <= TRUTH[form][exponent] <= high, "law": ci[0] <= truth <= ci[1],
            "new_run": pi[0] <= new_run <= pi[1], "backtests": float(np.mean(covered)) if covered else np.nan,
            "pi_half_width": float((pi[1] - pi[0]) / 2 / truth), "error": float(f.predict(*TARGET) / truth - 1),
            "run_error": float(f.predict(*TARGET) / new_run - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=300)
    parser.add_argument("--forms", nargs="+", default=["kaplan", "chinchilla"], choices=list(FORMS))
    parser.add_argument("--seeds", type=int, default=2, help="seeds (stable runs) per size")
    parser.add_argument("--sd-group", type=float, default=0.005, help="sd of a stable run's constant log-loss offset")
    parser.add_argument("--sd-drift", type=float, default=0.015, help="sd of its drift, reached at the largest D")
    parser.add_argument("--sd-point", type=float, default=0.002, help="sd of each point's own log-loss offset")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    rows = {}
    for form in args.forms:
        start = time.perf_counter()
        reps = [replicate(rng, form, args) for _ in range(args.replicates)]
        mean = lambda key: float(np.nanmean([r[key] for r in reps]))  # noqa: E731
        rows[form] = {"exponent": mean("exponent"), "law": mean("law"), "new_run": mean("new_run"),
                      "backtests": mean("backtests"),
                      "median_pi_half_width": float(np.median([r["pi_half_width"] for r in reps])),
                      "rms_error_of_law": float(np.sqrt(np.mean([r["error"] ** 2 for r in reps]))),
                      "rms_error_against_a_run": float(np.sqrt(np.mean([r["run_error"] ** 2 for r in reps]))),
                      "seconds": time.perf_counter() - start}
    print(f"{args.replicates} replicates, {args.seeds} seeds per size, bootstrap {args.bootstrap}; noise per stable run: "
          f"offset sd {args.sd_group:.2%}, drift sd {args.sd_drift:.2%} at the largest D; point sd {args.sd_point:.2%}")
    print(f"{'form':>11}{'exponent':>10}{'law@target':>12}{'new run':>9}{'backtests':>11}{'PI ±':>8}"
          f"{'rms err law':>13}{'rms err run':>13}{'s':>6}")
    for form, r in rows.items():
        print(f"{form:>11}{r['exponent']:>10.1%}{r['law']:>12.1%}{r['new_run']:>9.1%}{r['backtests']:>11.1%}"
              f"{r['median_pi_half_width']:>8.2%}{r['rms_error_of_law']:>13.2%}{r['rms_error_against_a_run']:>13.2%}"
              f"{r['seconds']:>6.0f}")
    out = Path(__file__).parent / "results" / "interval_coverage.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "truth": TRUTH, "coverage": rows}, indent=1) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
