"""Do the scaling law's 95% intervals cover the truth? Coverage measured on simulated micro ladders.

    python bench/interval_coverage.py [--replicates 200] [--bootstrap 500] [--seeds 1 2] [--sd-group 0.005]

Each replicate draws a ladder from a known law L(N, D) with realistic noise: every stable run (one seed) gets
its own log-loss offset (sd `--sd-group`), shared by all its decay branches, and each point a small
independent one (sd `--sd-point`). The law is fitted with the group bootstrap (groups = stable runs), then:
- α: does its 95% interval contain the true α?
- the law at a held-out size 2.8× the largest (N, D of the micro validation target): does the 95% interval
  of the law (new_run=False) contain the true loss, and does the prediction interval (new_run=True) contain a
  new noisy run's loss?
- the rolling backtests: the share of held-out points inside their prediction intervals.
Prints one table and writes bench/results/interval_coverage.json. Needs ≥ 90% everywhere (issue 11).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np

from windtunnel.fit import fit_scaling_law, rolling_backtests

TRUE = {"C_N": 26.6, "alpha": 0.30, "C_D": 52.4, "beta": 0.30, "L0": 1.0}  # bits/byte ~2.2-3.0 on the micro grid
SIZES = np.array([56_480, 102_384, 207_296, 303_280, 523_104])  # N_total of micro-24k … micro-425k
TOKENS = np.array([1, 2, 4, 8]) * 1.1 * 2**20                     # branch points at 1-8M tokens + 10% decays
TARGET = (1_451_904, 8.8 * 2**20)                                   # micro-1.3m, N_total, at the largest D


def law(N, D):
    return TRUE["C_N"] * N ** -TRUE["alpha"] + TRUE["C_D"] * D ** -TRUE["beta"] + TRUE["L0"]


def ladder(rng, n_seeds: int, sd_group: float, sd_point: float):
    N = np.repeat(np.repeat(SIZES, n_seeds), TOKENS.size)
    D = np.tile(TOKENS, SIZES.size * n_seeds)
    groups = np.repeat(np.arange(SIZES.size * n_seeds), TOKENS.size)
    offsets = rng.normal(0, sd_group, groups.max() + 1)[groups] + rng.normal(0, sd_point, N.size)
    return N, D, law(N, D) * np.exp(offsets), groups


def replicate(rng, args, n_seeds: int) -> dict:
    N, D, loss, groups = ladder(rng, n_seeds, args.sd_group, args.sd_point)
    f = fit_scaling_law(N, D, loss, bootstrap=args.bootstrap, seed=int(rng.integers(1 << 31)), groups=groups)
    low, high = f.intervals["alpha"]
    truth = law(*TARGET)
    new_run = truth * np.exp(rng.normal(0, args.sd_group) + rng.normal(0, args.sd_point))
    ci = f.predict_interval(*TARGET, new_run=False)
    pi = f.predict_interval(*TARGET)
    tests = rolling_backtests(N, D, loss, groups=groups, bootstrap=args.bootstrap, seed=1)
    covered = [c for t in tests for c in t.covered]
    return {"alpha": low <= TRUE["alpha"] <= high, "law": ci[0] <= truth <= ci[1], "new_run": pi[0] <= new_run <= pi[1],
            "backtests": float(np.mean(covered)) if covered else np.nan, "pi_half_width": float((pi[1] - pi[0]) / 2 / truth),
            "alpha_hat": f.alpha, "error": float(f.predict(*TARGET) / truth - 1)}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=200)
    parser.add_argument("--bootstrap", type=int, default=500)
    parser.add_argument("--seeds", type=int, nargs="+", default=[1, 2], help="seeds (stable runs) per size")
    parser.add_argument("--sd-group", type=float, default=0.005, help="sd of a stable run's log-loss offset")
    parser.add_argument("--sd-point", type=float, default=0.001, help="sd of each point's own log-loss offset")
    args = parser.parse_args()
    rng = np.random.default_rng(2026)
    rows = {}
    for n_seeds in args.seeds:
        start = time.perf_counter()
        reps = [replicate(rng, args, n_seeds) for _ in range(args.replicates)]
        rows[n_seeds] = {
            "alpha": float(np.mean([r["alpha"] for r in reps])), "law": float(np.mean([r["law"] for r in reps])),
            "new_run": float(np.mean([r["new_run"] for r in reps])),
            "backtests": float(np.nanmean([r["backtests"] for r in reps])),
            "median_pi_half_width": float(np.median([r["pi_half_width"] for r in reps])),
            "rms_error_at_target": float(np.sqrt(np.mean([r["error"] ** 2 for r in reps]))),
            "alpha_sd": float(np.std([r["alpha_hat"] for r in reps])), "seconds": time.perf_counter() - start}
    print(f"{args.replicates} replicates, bootstrap {args.bootstrap}, group sd {args.sd_group:.2%}, point sd {args.sd_point:.2%}")
    print(f"{'seeds/size':>10}{'α':>8}{'law@target':>12}{'new run':>9}{'backtests':>11}{'PI ±':>8}{'rms err':>9}{'s':>7}")
    for n_seeds, r in rows.items():
        print(f"{n_seeds:>10}{r['alpha']:>8.1%}{r['law']:>12.1%}{r['new_run']:>9.1%}{r['backtests']:>11.1%}"
              f"{r['median_pi_half_width']:>8.2%}{r['rms_error_at_target']:>9.2%}{r['seconds']:>7.0f}")
    out = Path(__file__).parent / "results" / "interval_coverage.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({"args": vars(args), "truth": TRUE, "coverage": rows}, indent=1) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
