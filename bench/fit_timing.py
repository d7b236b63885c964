"""Wall time of windtunnel.fit on synthetic data: the scaling-law bootstrap, curve_fit, the batch-size law.

Run from the repository root:  .venv/bin/python bench/fit_timing.py [--points 300] [--bootstrap 4000]

1. fit_scaling_law(method="huber") on `--points` (N, D, loss) points (6 sizes over 30× N, D from 10N
   to 60N, 1% multiplicative noise), with bootstrap=0 and bootstrap=`--bootstrap`. Goal: < 60 s for
   300 points × 4000 resamples on 2 cores (the bootstrap refits all resamples in one vectorised pass).
2. fit_scaling_law(method="curve_fit") on the same points, without and with `--bootstrap` resamples
   (curve_fit refits one resample at a time from the full-data optimum).
3. fit_batch_size_law on 3 models × 10 batch sizes × 300 evaluations, with bootstrap=1000.
Prints the seconds and writes bench/results/fit_timing.json (with load average: the machine is shared).
"""

import argparse
import json
import os
import platform
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import scipy

from windtunnel.fit import fit_batch_size_law, fit_scaling_law


def ladder(points: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    per_size = points // 6
    N = np.repeat(np.geomspace(1e7, 3e8, 6), per_size)
    D = N * np.tile(np.linspace(10, 60, per_size), 6)
    loss = 400 * N ** -0.30 + 900 * D ** -0.28 + 1.7
    return N, D, loss * np.exp(rng.normal(0, 0.01, N.size))


def batch_curves(seed: int = 0) -> pd.DataFrame:
    """log tokens-to-reach = log T0(L) + 0.08·(log B − log(1.21e9 / L^6.24))² (the paper's law)."""
    rng, rows = np.random.default_rng(seed), []
    for model, n, floor in (("9M", 9e6, 2.8), ("30M", 3e7, 2.6), ("170M", 1.7e8, 2.4)):
        losses = np.linspace(4.99, floor + 0.25, 300)
        for b in 2.0 ** np.arange(14, 24):
            log_t = np.log(2e8) - 3 * np.log((losses - floor) / (5 - floor)) + 0.08 * (np.log(b) - np.log(1.21e9 / losses ** 6.24)) ** 2
            noisy = losses * (1 + rng.normal(0, 0.001, losses.size))
            rows += [(model, n, b, t, l) for t, l in zip(np.exp(log_t), noisy)]
    return pd.DataFrame(rows, columns=["model", "N", "batch_tokens", "tokens", "loss"])


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--bootstrap", type=int, default=4000)
    args = parser.parse_args()
    N, D, loss = ladder(args.points)
    results = {"machine": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "numpy": np.__version__, "scipy": scipy.__version__,
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "load_average_before": os.getloadavg(), "points": int(N.size), "bootstrap": args.bootstrap}

    fit_scaling_law(N, D, loss)                      # warm-up: first-call imports and caches are not timed
    t, fit = timed(lambda: fit_scaling_law(N, D, loss))
    results["huber_s"] = t
    t, boot = timed(lambda: fit_scaling_law(N, D, loss, bootstrap=args.bootstrap))
    results["huber_bootstrap_s"] = t
    results["huber_fit"] = boot.to_dict()
    results["curve_fit_s"], _ = timed(lambda: fit_scaling_law(N, D, loss, method="curve_fit"))
    results["curve_fit_bootstrap_s"], _ = timed(lambda: fit_scaling_law(N, D, loss, method="curve_fit", bootstrap=args.bootstrap))
    curves = batch_curves()
    results["batch_size_law_s"], bfit = timed(lambda: fit_batch_size_law(curves, bootstrap=1000))
    results["batch_size_law"] = {"k": bfit.k, "gamma": bfit.gamma, "n_optima": len(bfit.optima), "rows": len(curves)}
    results["load_average_after"] = os.getloadavg()

    print(f"scaling law, huber, {N.size} points (warm):          {results['huber_s']:6.2f} s")
    print(f"scaling law, huber, {N.size} points, bootstrap={args.bootstrap}: {results['huber_bootstrap_s']:6.2f} s"
          f"  (goal < 60 s; alpha {boot.alpha:.3f} in {boot.intervals['alpha'][0]:.3f}–{boot.intervals['alpha'][1]:.3f})")
    print(f"scaling law, curve_fit:                           {results['curve_fit_s']:6.2f} s")
    print(f"scaling law, curve_fit, bootstrap={args.bootstrap}:          {results['curve_fit_bootstrap_s']:6.2f} s")
    print(f"batch-size law, {len(curves)} rows, bootstrap=1000:      {results['batch_size_law_s']:6.2f} s"
          f"  (k {bfit.k:.3g}, gamma {bfit.gamma:.2f})")
    print(f"load average before/after: {results['load_average_before']} / {results['load_average_after']}")
    out = Path("bench/results/fit_timing.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
