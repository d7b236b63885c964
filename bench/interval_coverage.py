"""Do the 95% prediction intervals of windtunnel.predict cover new runs beyond the ladder, when the truth is a law
and a noise the fit does not assume? Measured on simulated micro ladders.

    python bench/interval_coverage.py [--replicates 40] [--bootstrap 200] [--truths ...] [--jobs 2] [--quick]

Each replicate draws the micro ladder's shape — 5 sizes (N_total of micro-24k … micro-425k; their non-embedding N
too) × 2 seeds (stable runs) × decay branches at 1.15–9.2M tokens — from one truth, fits it with
`predict.fit_ladder` (both conventions of N, as `make scaling-law` does; groups = stable runs), and predicts a new
run (its own seed and trajectory) at each TARGET: micro-1.3m at the ladder's largest D (2.8× in N), the largest
size at 2× and 4× its D, micro-1.3m at 4× D (11× in C), a 4.2M model (8× in N) and, beyond the guardrails, the
largest size at 32× D (refused: the reason is reported). No truth is a candidate law with the noise the interval
assumes (that simulation was circular: it could only confirm the bootstrap's arithmetic):
- steepening / steepening-2x: the paper's form at the micro values, but the local exponent of its N term grows
  with log N: 0.62 + 2κ·log(N / N_micro-142k), κ = 0.05 (0.49 at micro-24k, 0.71 at micro-425k, 0.92 at 8× it) or
  κ = 0.1. Every candidate is misspecified; noise-free, the best one errs −0.8% at micro-1.3m and −2% at 8× N
  (κ = 0.05), −1.8% and −5% (κ = 0.1): about 1 and 2.5% per e-fold, the range of the public ladders' laws;
- kaplan-t3 / chinchilla-t3: each form at the values fitted to the micro ladder, but every noise heavy-tailed
  (Student-t, 3 dof, scaled to the micro ladder's measured sds) and each run's drift a random walk in log D (one
  step per doubling, sd 1.5% after the ladder's three) instead of the straight line in log D the fit measures;
- interaction: the paper's form plus G·(N·D)^-0.5, a term no candidate has (9% of the smallest run's loss, 1.7%
  of the largest's);
- depth-step: the paper's form with every model of ≥ 3 layers (micro-142k up, and every target) 1.5% lower — a
  size-dependent offset, as a change of the shape rules along a ladder gives.
steepening, interaction and depth-step carry the micro ladder's measured noise (LOG.md: a stable run's offset sd
0.5%, its drift reaching sd 1.5% at the largest D and going on linearly in log D beyond it, each point 0.2%).

Per truth and target: the coverage of fit_ladder's interval (`new`) and of today's interval, the best candidate's
`best.law.predict_interval` (bootstrap + a new run's offset and drift, no misspecification: `old`), their median
relative half-widths, their interval scores (Gneiting & Raftery: width + 2/0.05 × the distance by which the
interval missed, relative to the run's loss; mean over replicates, lower is better), the rms and mean relative
error of fit_ladder's point prediction against the true law; and the same pooled over the truths (`all`). A
refused target shows today's interval, which has no guardrail. Prints a table and writes
bench/results/interval_coverage.json. CPU time ~4 s per replicate: the default (6 truths × 40) takes ~8 min on a
quiet 2-core machine; --quick (8 replicates, bootstrap 100) ~2 min.
"""

from __future__ import annotations

import argparse
import json
import os
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

from windtunnel import predict

SIZES = np.array([56_480, 102_384, 207_296, 303_280, 523_104])   # N_total of micro-24k … micro-425k
NON_EMBEDDING = np.array([23_712, 53_232, 141_760, 221_360, 424_800])
LAYERS = np.array([2, 2, 3, 3, 4])
TOKENS = np.array([1, 2, 4, 8]) * 1.1 * 2**20                    # branch points at 1-8M tokens + 10% decays
D_MAX = TOKENS[-1]
# name: (N_total, non-embedding N, n_layers, D). The 8× model is hypothetical: d_model 192 (a 196,608-parameter
# embedding of the micro vocabulary of 1024), ≥ 3 layers.
TARGETS = {
    "1.3m@D": (1_451_904, 1_320_832, 7, D_MAX),          # micro-1.3m, as `make validate` trains it
    "425k@2D": (523_104, 424_800, 4, 2 * D_MAX),
    "425k@4D": (523_104, 424_800, 4, 4 * D_MAX),
    "1.3m@4D": (1_451_904, 1_320_832, 7, 4 * D_MAX),
    "8N@D": (8 * 523_104, 8 * 523_104 - 196_608, 8, D_MAX),
    "425k@32D": (523_104, 424_800, 4, 32 * D_MAX),       # beyond predict.LIMITS["d"]: refused
}
MICRO = {  # the values fitted to the micro ladder (results/scaling_law/fit.json, 2026-11-30), N = N_total
    "kaplan": {"N_c": 6.07e6, "alpha_N": 0.173, "D_c": 9.54e7, "alpha_D": 0.184, "L0": 0.0},
    "chinchilla": {"C_N": 506.0, "alpha": 0.620, "C_D": 286.0, "beta": 0.425, "L0": 1.346},
}
NOISE = {"group": 0.005, "drift": 0.015, "point": 0.002}          # sds measured on the micro ladder (LOG.md)
N_MID = 207_296                    # steepening: the N term's local exponent is 0.62 + 2κ·log(N / N_MID)
KAPPA = {"steepening": 0.05, "steepening-2x": 0.1}
G_SHARE, G_EXP = 0.1, 0.5          # interaction: G·(N·D)^-g, G = 10% of the smallest run's chinchilla loss there
DEPTH_STEP = 0.015                 # depth-step: models of ≥ 3 layers lose this much less (log)


def chinchilla(N, D):
    p = MICRO["chinchilla"]
    return p["C_N"] * N ** -p["alpha"] + p["C_D"] * D ** -p["beta"] + p["L0"]


def kaplan(N, D):
    p = MICRO["kaplan"]
    return ((p["N_c"] / N) ** (p["alpha_N"] / p["alpha_D"]) + p["D_c"] / D) ** p["alpha_D"] + p["L0"]


def steepening(N, D, kappa: float):
    p = MICRO["chinchilla"]
    return p["C_N"] * N ** -p["alpha"] * np.exp(-kappa * np.log(N / N_MID) ** 2) + p["C_D"] * D ** -p["beta"] + p["L0"]


_G = G_SHARE * chinchilla(SIZES[0], TOKENS[0]) * (SIZES[0] * TOKENS[0]) ** G_EXP


def interaction(N, D):
    return chinchilla(N, D) + _G * (N * D) ** -G_EXP


def depth_step(N, D, layers):
    return chinchilla(N, D) * np.exp(-DEPTH_STEP * (layers >= 3))


TRUTHS = {  # name: (law of (N_total, D, n_layers), noise)
    "steepening": (lambda N, D, L: steepening(N, D, KAPPA["steepening"]), "gaussian"),
    "steepening-2x": (lambda N, D, L: steepening(N, D, KAPPA["steepening-2x"]), "gaussian"),
    "kaplan-t3": (lambda N, D, L: kaplan(N, D), "t3"),
    "chinchilla-t3": (lambda N, D, L: chinchilla(N, D), "t3"),
    "interaction": (lambda N, D, L: interaction(N, D), "gaussian"),
    "depth-step": (depth_step, "gaussian"),
}


def run_noise(rng, kind: str, D: np.ndarray) -> np.ndarray:
    """Log-loss offsets of one stable run's points at tokens D: its own offset, its drift and each point's own.
    gaussian: drift = slope·log2(D/D_1)/3, linear in log D (sd NOISE["drift"] at the largest D, growing beyond it);
    t3: Student-t(3) draws scaled to the same sds, the drift a random walk of one step per doubling of D."""
    steps = np.log2(D / TOKENS[0])                       # 0, 1, 2, 3 on the ladder
    if kind == "gaussian":
        return (rng.normal(0, NOISE["group"]) + rng.normal(0, NOISE["drift"]) * steps / 3
                + rng.normal(0, NOISE["point"], D.size))
    t = lambda sd, size=None: sd / np.sqrt(3) * rng.standard_t(3, size)  # noqa: E731  (t3 has variance 3)
    whole = int(np.ceil(steps.max()))
    walk = np.concatenate([[0.0], np.cumsum(t(NOISE["drift"] / np.sqrt(3), whole))])  # sd 1.5% after 3 steps
    at = np.interp(steps, np.arange(whole + 1), walk)
    return t(NOISE["group"]) + at + t(NOISE["point"], D.size)


def simulate(rng, truth: str, seeds: int):
    law, noise = TRUTHS[truth]
    runs = SIZES.size * seeds
    which = np.repeat(np.arange(SIZES.size), seeds * TOKENS.size)
    D = np.tile(TOKENS, runs)
    offsets = np.concatenate([run_noise(rng, noise, TOKENS) for _ in range(runs)])
    loss = law(SIZES[which].astype(float), D, LAYERS[which]) * np.exp(offsets)
    N = {"total": SIZES[which].astype(float), "non_embedding": NON_EMBEDDING[which].astype(float)}
    return N, D, loss, np.repeat(np.arange(runs), TOKENS.size)


def replicate(job: tuple) -> dict:
    """One simulated ladder, fitted; for each target: the truth, a new run's loss, both intervals, or the refusal."""
    truth, index, args = job
    rng = np.random.default_rng([2026, list(TRUTHS).index(truth), index])
    N, D, loss, groups = simulate(rng, truth, args.seeds)
    ladder = predict.fit_ladder(N, D, loss, groups=groups, bootstrap=args.bootstrap, seed=index)
    best = ladder.best
    out = {}
    for name, (n_total, n_emb, layers, d) in TARGETS.items():
        law = TRUTHS[truth][0](float(n_total), d, layers)
        actual = float(law * np.exp(run_noise(rng, TRUTHS[truth][1], np.array([d]))[0]))
        (pred,) = ladder.predict({"total": [n_total], "non_embedding": [n_emb]}, [d])
        old = best.law.predict_interval(n_total if best.n_kind == "total" else n_emb, d)
        out[name] = {"truth": float(law), "actual": actual, "loss": pred["loss"], "low": pred["low"],
                     "high": pred["high"], "reason": pred.get("reason", ""), "distance": pred.get("distance"),
                     "extrapolation": pred["extrapolation"], "old_low": float(old[0]), "old_high": float(old[1]),
                     "best": best.name, "kept": [c.name for c in ladder.kept], "own_sd": ladder.own_sd}
    return out


def interval_summary(low, high, actual) -> dict:
    """Coverage, median relative half-width and mean relative interval score (α = 0.05) against the runs' losses."""
    low, high, actual = map(np.asarray, (low, high, actual))
    miss = np.maximum(low - actual, 0) + np.maximum(actual - high, 0)
    return {"coverage": float(np.mean(miss == 0)), "median_half_width": float(np.median((high - low) / 2 / actual)),
            "interval_score": float(np.mean((high - low + 2 / 0.05 * miss) / actual))}


def summarize(rows: list[dict]) -> dict:
    """One target's predictions over replicates (and truths): both intervals' summaries, the point's errors; a
    target the guardrails refuse keeps today's interval (which has none) and the reason."""
    get = lambda key: np.array([r[key] for r in rows], dtype=float)  # noqa: E731
    head = {"extrapolation": rows[0]["extrapolation"], "distance": rows[0]["distance"], "replicates": len(rows),
            "old": interval_summary(get("old_low"), get("old_high"), get("actual"))}
    refused = [r for r in rows if r["loss"] is None]
    if refused:
        return {**head, "refused": len(refused), "reason": refused[0]["reason"]}
    error = get("loss") / get("truth") - 1
    best = [r["best"] for r in rows]
    return {**head, "refused": 0, "new": interval_summary(get("low"), get("high"), get("actual")),
            "rms_error": float(np.sqrt(np.mean(error ** 2))), "mean_error": float(np.mean(error)),
            "best": {name: best.count(name) for name in sorted(set(best))},
            "median_own_sd": float(np.nanmedian([r["own_sd"] for r in rows]))}


def print_table(summary: dict) -> None:
    print(f"{'truth':>14} {'target':>9} {'n×':>5} {'d×':>5} {'c×':>5} | {'cover new':>9} {'old':>6} | "
          f"{'±new':>6} {'±old':>6} | {'score new':>9} {'old':>6} | {'rms err':>7} {'bias':>6}")
    for truth, targets in summary.items():
        for target, s in targets.items():
            x = s["extrapolation"]
            ratios = f"{truth:>14} {target:>9} {x['n']:>5.1f} {x['d']:>5.1f} {x['c']:>5.1f} |"
            new, old = s.get("new"), s["old"]
            if s["refused"]:
                print(f"{ratios} {'-':>9} {old['coverage']:>6.0%} | {'-':>6} {old['median_half_width']:>6.2%} | "
                      f"{'-':>9} {old['interval_score']:>6.3f} | refused {s['refused']}×: {s['reason']}")
                continue
            print(f"{ratios} {new['coverage']:>9.0%} {old['coverage']:>6.0%} | {new['median_half_width']:>6.2%} "
                  f"{old['median_half_width']:>6.2%} | {new['interval_score']:>9.3f} {old['interval_score']:>6.3f} | "
                  f"{s['rms_error']:>7.2%} {s['mean_error']:>+6.2%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--replicates", type=int, default=40)
    parser.add_argument("--bootstrap", type=int, default=200)
    parser.add_argument("--truths", nargs="+", default=list(TRUTHS), choices=list(TRUTHS))
    parser.add_argument("--seeds", type=int, default=2, help="seeds (stable runs) per size")
    parser.add_argument("--jobs", type=int, default=os.cpu_count(), help="processes fitting replicates in parallel")
    parser.add_argument("--quick", action="store_true", help="8 replicates, bootstrap 100 (~2 min)")
    args = parser.parse_args()
    if args.quick:
        args.replicates, args.bootstrap = 8, 100
    start, load = time.perf_counter(), os.getloadavg()
    jobs = [(truth, i, args) for truth in args.truths for i in range(args.replicates)]
    with ProcessPoolExecutor(max(1, args.jobs)) as pool:
        results = list(pool.map(replicate, jobs))
    by_truth = {truth: results[k * args.replicates:(k + 1) * args.replicates] for k, truth in enumerate(args.truths)}
    by_truth["all"] = results
    summary = {truth: {target: summarize([r[target] for r in reps]) for target in TARGETS}
               for truth, reps in by_truth.items()}
    seconds = time.perf_counter() - start
    print(f"{args.replicates} replicates per truth, bootstrap {args.bootstrap}, {args.seeds} seeds per size; "
          f"{seconds:.0f} s on {args.jobs} processes, load average {load[0]:.1f} before, "
          f"{os.getloadavg()[0]:.1f} after")
    print("coverage of a new run's 95% interval (new: predict.fit_ladder; old: best.law.predict_interval), median "
          "relative half-width, mean relative interval score, rms and mean error of the point prediction vs the law")
    print_table(summary)
    out = Path(__file__).parent / "results" / "interval_coverage.json"
    out.parent.mkdir(exist_ok=True)
    out.write_text(json.dumps({
        "args": vars(args), "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "seconds": seconds, "load_average_before": load, "load_average_after": os.getloadavg(),
        "misspec_floor": predict.MISSPEC_FLOOR, "limits": predict.LIMITS,
        "truths": {"micro": MICRO, "noise": NOISE, "steepening_kappa": KAPPA, "steepening_n_mid": N_MID,
                   "interaction": {"G": _G, "g": G_EXP, "share_of_smallest_run": G_SHARE}, "depth_step": DEPTH_STEP,
                   "noise_of": {t: noise for t, (_, noise) in TRUTHS.items()}},
        "targets": {name: {"n_total": t[0], "n_non_embedding": t[1], "n_layers": t[2], "d": t[3]}
                    for name, t in TARGETS.items()},
        "coverage": summary}, indent=1) + "\n")
    print(f"written: {out}")


if __name__ == "__main__":
    main()
