"""Wall time of windtunnel.fit and windtunnel.predict on synthetic data: the scaling-law bootstrap, curve_fit, the
batch-size law, and `windtunnel fit scaling-law --csv` on a table the size of a published one (issue 20, point 8).

Run from the repository root:  .venv/bin/python bench/fit_timing.py [--points 300] [--bootstrap 4000] [--profile]

1. fit_scaling_law(method="huber") on `--points` (N, D, loss) points (6 sizes over 30× N, D from 10N
   to 60N, 1% multiplicative noise), with bootstrap=0 and bootstrap=`--bootstrap`. Goal: < 60 s for
   300 points × 4000 resamples on 2 cores (the bootstrap refits all resamples in one vectorised pass).
2. fit_scaling_law(method="curve_fit") on the same points, without and with `--bootstrap` resamples
   (curve_fit refits one resample at a time from the full-data optimum).
3. fit_batch_size_law on 3 models × 10 batch sizes × 300 evaluations, with bootstrap=1000.
4. A published table's shape: 245 runs at 142 distinct sizes (N 1e7–3e9 log-uniform, D/N 5–200 log-uniform,
   ungrouped), losses from Kaplan et al.'s law (eq. 1.5: N_c 8.8e13, α_N 0.076, D_c 5.4e13, α_D 0.095) with 1%
   noise, written to a CSV and fitted end to end by `python -m windtunnel.cli fit scaling-law --csv FILE --json`
   with the default bootstrap (1000) in a subprocess that imports this checkout (the process start and imports
   are counted). Goal: < 30 s on 2 cores. Then predict.fit_ladder alone on the same table (bootstrap 1000).
   --profile: also the CLI's run under cProfile, its top entries by cumulative time.
The machine's fp32 matmul peak (best of 5 2048³ torch matmuls) is measured before each timing and printed beside
it, with the load average (the machine is shared) and the CPU seconds of this process and its children (under load
the wall time grows with the other processes' share; the CPU time much less). Prints a table and writes
bench/results/fit_timing.json.
"""

import argparse
import io
import json
import os
import platform
import pstats
import resource
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd
import scipy

from windtunnel import predict
from windtunnel.fit import fit_batch_size_law, fit_scaling_law

from peak import matmul_peak  # bench/, the script's folder

ROOT = Path(__file__).resolve().parents[1]   # this checkout: the CLI's subprocess imports its windtunnel
KAPLAN = {"N_c": 8.8e13, "alpha_N": 0.076, "D_c": 5.4e13, "alpha_D": 0.095}   # Kaplan et al. 2020, eq. 1.5


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


def published_table(runs: int = 245, sizes: int = 142, seed: int = 0) -> pd.DataFrame:
    """`runs` runs at `sizes` distinct N (each size one run, the rest on sizes drawn at random), ungrouped: N 1e7–3e9
    and D/N 5–200 log-uniform, loss from Kaplan et al.'s law with 1% log-normal noise."""
    rng = np.random.default_rng(seed)
    n = np.exp(rng.uniform(np.log(1e7), np.log(3e9), sizes))
    N = np.concatenate([n, rng.choice(n, runs - sizes)])
    D = N * np.exp(rng.uniform(np.log(5), np.log(200), runs))
    p = KAPLAN
    loss = ((p["N_c"] / N) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / D) ** p["alpha_D"]
    return pd.DataFrame({"N": N, "D": D, "loss": loss * np.exp(rng.normal(0, 0.01, runs))})


def cli_command(csv: Path, profile: Path | None = None) -> list[str]:
    """`windtunnel fit scaling-law --csv` with the default bootstrap, as a user runs it (optionally under cProfile)."""
    run = ["-m", "cProfile", "-o", str(profile)] if profile else []
    return [sys.executable, *run, "-m", "windtunnel.cli", "fit", "scaling-law", "--csv", str(csv), "--n-col", "N",
            "--d-col", "D", "--loss-col", "loss", "--json"]


def run_cli(command: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": f"{ROOT}{os.pathsep}{os.environ.get('PYTHONPATH', '')}"}
    done = subprocess.run(command, cwd=ROOT, env=env, capture_output=True, text=True)
    if done.returncode:
        raise SystemExit(f"{' '.join(command)} failed ({done.returncode}):\n{done.stderr[-2000:]}")
    return json.loads(done.stdout)


def top_entries(stats: pstats.Stats, n: int = 20) -> str:
    """The `n` entries of largest cumulative time, as pstats prints them."""
    out = io.StringIO()
    stats.stream = out
    stats.sort_stats("cumulative").print_stats(n)
    return out.getvalue()


def timed(fn):
    start = time.perf_counter()
    out = fn()
    return time.perf_counter() - start, out


def cpu_seconds() -> float:
    """CPU time of this process (all its threads) and of its finished children: under load it stays near what a
    quiet machine's wall time would be, where the wall time grows with the other processes' share."""
    children = resource.getrusage(resource.RUSAGE_CHILDREN)
    return time.process_time() + children.ru_utime + children.ru_stime


def measure(results: dict, key: str, fn):
    """Time fn after measuring the matmul peak; record wall and CPU seconds, peak and load average under `key`."""
    peak = matmul_peak()
    cpu = cpu_seconds()
    seconds, out = timed(fn)
    results["timings"][key] = {"seconds": seconds, "cpu_seconds": cpu_seconds() - cpu,
                               "matmul_peak_gflops": peak / 1e9, "load_average": os.getloadavg()}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--points", type=int, default=300)
    parser.add_argument("--bootstrap", type=int, default=4000)
    parser.add_argument("--profile", action="store_true", help="also profile the CLI's fit of the published table")
    args = parser.parse_args()
    N, D, loss = ladder(args.points)
    table = published_table()
    results = {"machine": platform.node(), "cpus": os.cpu_count(), "python": platform.python_version(),
               "numpy": np.__version__, "scipy": scipy.__version__,
               "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "load_average_before": os.getloadavg(), "points": int(N.size), "bootstrap": args.bootstrap,
               "table": {"runs": len(table), "sizes": int(table["N"].nunique()), "truth": KAPLAN, "noise": 0.01},
               "timings": {}}
    fit_scaling_law(N, D, loss)                      # warm-up: first-call imports and caches are not timed
    measure(results, "huber", lambda: fit_scaling_law(N, D, loss))
    boot = measure(results, "huber_bootstrap", lambda: fit_scaling_law(N, D, loss, bootstrap=args.bootstrap))
    results["huber_fit"] = boot.to_dict()
    measure(results, "curve_fit", lambda: fit_scaling_law(N, D, loss, method="curve_fit"))
    measure(results, "curve_fit_bootstrap",
            lambda: fit_scaling_law(N, D, loss, method="curve_fit", bootstrap=args.bootstrap))
    curves = batch_curves()
    bfit = measure(results, "batch_size_law", lambda: fit_batch_size_law(curves, bootstrap=1000))
    results["batch_size_law"] = {"k": bfit.k, "gamma": bfit.gamma, "n_optima": len(bfit.optima), "rows": len(curves)}
    with tempfile.TemporaryDirectory() as tmp:
        csv = Path(tmp) / "published_table.csv"
        table.to_csv(csv, index=False)
        fitted = measure(results, "cli_fit_csv", lambda: run_cli(cli_command(csv)))
        results["cli_fit"] = {"n_points": fitted["n_points"], "prediction_form": fitted["prediction"]["form"],
                              "why": fitted["prediction"]["why"]}
        ladder_fit = measure(results, "fit_ladder",
                             lambda: predict.fit_ladder(table["N"], table["D"], table["loss"], bootstrap=1000))
        results["fit_ladder"] = {"best": ladder_fit.best.name, "kept": [c.name for c in ladder_fit.kept]}
        if args.profile:
            run_cli(cli_command(csv, Path(tmp) / "cli.prof"))
            results["cli_profile"] = top_entries(pstats.Stats(str(Path(tmp) / "cli.prof")))
    results["load_average_after"] = os.getloadavg()
    report(results, args, boot, bfit, curves)
    out = ROOT / "bench" / "results" / "fit_timing.json"
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(results, indent=2) + "\n")
    print(f"wrote {out}")


def report(results: dict, args, boot, bfit, curves) -> None:
    t, table = results["timings"], results["table"]
    n, k, a = results["points"], args.bootstrap, boot.intervals["alpha"]
    rows = [("huber", f"scaling law, huber, {n} points (warm)", ""),
            ("huber_bootstrap", f"scaling law, huber, {n} points, bootstrap={k}",
             f"goal < 60 s; alpha {boot.alpha:.3f} in {a[0]:.3f}–{a[1]:.3f}"),
            ("curve_fit", "scaling law, curve_fit", ""),
            ("curve_fit_bootstrap", f"scaling law, curve_fit, bootstrap={k}", ""),
            ("batch_size_law", f"batch-size law, {len(curves)} rows, bootstrap=1000",
             f"k {bfit.k:.3g}, gamma {bfit.gamma:.2f}"),
            ("cli_fit_csv", f"fit scaling-law --csv, {table['runs']} runs at {table['sizes']} sizes, bootstrap 1000",
             f"goal < 30 s; predicts with {results['cli_fit']['prediction_form']}"),
            ("fit_ladder", "predict.fit_ladder alone, same table, bootstrap 1000",
             f"best {results['fit_ladder']['best']}")]
    print(f"{'what':<72}{'wall s':>8}{'CPU s':>8}{'matmul GFLOP/s':>16}{'load (1 min)':>14}  note")
    for key, what, note in rows:
        r = t[key]
        print(f"{what:<72}{r['seconds']:>8.2f}{r['cpu_seconds']:>8.2f}{r['matmul_peak_gflops']:>16.0f}"
              f"{r['load_average'][0]:>14.1f}  {note}")
    print(f"load average before/after: {results['load_average_before']} / {results['load_average_after']}")
    if "cli_profile" in results:
        print(results["cli_profile"])


if __name__ == "__main__":
    main()
