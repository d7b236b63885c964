"""Which FLOP count the allocation should use: the paper's C = 6·N·D or the trainer's (attention included), chosen by
backtest on a stored ladder (issue 20, point 7).

Run from the repository root after `make scaling-law`:  .venv/bin/python bench/flop_count.py [--scale micro]

The law L(N, D) does not depend on the count; what does is everything stated in compute: the compute-optimal
allocation, the loss frontier and the budgets. Attention's share of the trainer's FLOPs, 12·L·d·T against
6·N_total a token, falls with width at a fixed context (29% to 16% across the micro ladder), so the two counts
order the ladder's runs in compute differently. For each count and each origin (the largest size held out, then
the two largest), with only the smaller sizes:

1. law frontier: the law the study would fit (predict.fit_ladder's best candidate) gives the lowest loss reachable
   at a held-out run's compute C, min over N of L(N, C / f(N)), f the count's FLOPs a token as a power of N fitted on
   the training sizes only (windtunnel.fit.PerToken) — what a plan at that budget predicts;
2. power frontier: the Kaplan-style L(C) = E + A·C^-a fitted to the training sizes' frontier (each size's runs, the
   lowest loss at each compute) — a law stated in C itself.

Each is scored against the measured frontier at the held-out runs' C: the lowest loss any size reaches there,
each size's seed-mean loss interpolated in log C within its own runs. Errors are relative, one per held-out
(size, D), the same points under both counts, so the counts' errors pair up.
Rule, fixed before the run: the default is the count whose law-frontier backtests err less (rms over both origins),
unless the paired difference is within 2 standard errors — then "full", since a budget is then spent as the
trainer counts it and the GPU-hours follow it. Prints a table and writes bench/results/flop_count.json.
"""

import argparse
import json
import platform
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
from scipy import optimize

from windtunnel import predict, studies
from windtunnel.fit import PerToken
from windtunnel.studies.laws import N_KINDS, with_compute

ROOT = Path(__file__).resolve().parents[1]
COUNTS = ("6nd", "full")
N_KIND = "total"   # the study's default convention of N


def measured_frontier(points, c: np.ndarray) -> np.ndarray:
    """The lowest seed-mean loss any size reaches at each compute in `c` (log-C interpolation within each size's runs;
    a size whose runs do not span that C does not count)."""
    best = np.full(c.size, np.inf)
    for _, size in points.groupby("model"):
        mean = size.groupby("C")["loss"].mean().sort_index()
        x, y = np.log(mean.index.to_numpy(float)), mean.to_numpy(float)
        inside = (np.log(c) >= x[0] - 1e-9) & (np.log(c) <= x[-1] + 1e-9)
        best[inside] = np.minimum(best[inside], np.interp(np.log(c[inside]), x, y))
    return best


def law_frontier(law, per_token: PerToken, c: np.ndarray, n_range) -> np.ndarray:
    """min over N of L(N, C / f(N)) (bounded in N to 1/100…100× the training sizes)."""
    out = []
    for budget in c:
        res = optimize.minimize_scalar(lambda x: float(law.predict(np.exp(x), budget / per_token(np.exp(x)))),
                                       bounds=(np.log(n_range[0] / 100), np.log(n_range[1] * 100)), method="bounded")
        out.append(res.fun)
    return np.array(out)


def power_frontier(train, c: np.ndarray) -> np.ndarray:
    """E + A·C^-a through the training sizes' frontier (least squares in log loss)."""
    grid = np.sort(train["C"].unique())
    front = measured_frontier(train, grid)
    keep = np.minimum.accumulate(front) == front   # the lower envelope: points no cheaper run beats
    x, y = np.log(grid[keep]), np.log(front[keep])
    x0 = x.mean()

    def resid(p):
        log_e, log_a, a = p
        return np.logaddexp(log_e, log_a - a * (x - x0)) - y

    low = np.exp(y).min()
    fit = optimize.least_squares(resid, [np.log(0.7 * low), np.log(0.3 * low), 0.2], bounds=([-10, -20, 1e-3], [10, 10, 3]))
    log_e, log_a, a = fit.x
    return np.exp(np.logaddexp(log_e, log_a - a * (np.log(c) - x0)))


def backtest(points, count: str, held: int) -> dict:
    frame = with_compute(points, count, N_KIND)
    sizes = frame.groupby("model")[N_KINDS[N_KIND]].first().sort_values()
    train = frame[frame["model"].isin(sizes.index[:-held])]
    test = frame[frame["model"].isin(sizes.index[-held:])]
    n_train = train[N_KINDS[N_KIND]].to_numpy(float)
    per_token = PerToken.of_ladder(count, n_train, (train["C"] / train["D"]).to_numpy(float))
    ladder = predict.fit_ladder({N_KIND: n_train}, train["D"].to_numpy(float), train["loss"].to_numpy(float),
                                groups=train["group"].to_numpy(), bootstrap=0)
    runs = test.groupby(["model", "D"])["C"].first().sort_index()   # one point per held-out (size, D): both counts'
    c = runs.to_numpy(float)                                          # errors pair up by it
    actual = measured_frontier(frame, c)
    law = law_frontier(ladder.best.law, per_token, c, (n_train.min(), n_train.max()))
    power = power_frontier(train, c)
    return {"count": count, "held_out_sizes": held, "per_token": per_token.to_dict(),
            "runs": [f"{m} D={d:.4g}" for m, d in runs.index], "C": c.tolist(), "actual": actual.tolist(),
            "law_frontier_error": (law / actual - 1).tolist(), "power_frontier_error": (power / actual - 1).tolist()}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--scale", default="micro")
    args = ap.parse_args()
    points, _ = studies.STUDIES["scaling_law"].points("scaling_law", studies.Options(scale=args.scale))
    rows = [backtest(points, count, held) for count in COUNTS for held in (1, 2)]
    share = (12 * points["n_layers"] * points["d_model"] * points["seq_len"]
             / (6 * points["N_total"])).groupby(points["model"]).first()
    print(f"ladder {args.scale}: {points['model'].nunique()} sizes, {len(points)} runs; attention / 6·N_total a token: "
          + ", ".join(f"{m} {s:.0%}" for m, s in share.sort_values(ascending=False).items()))
    print(f"{'count':<6}{'held out':>9}{'points':>8}{'f(N) = k·N^b':>22}{'law frontier rms':>18}{'power frontier rms':>20}")
    summary = {}
    for count in COUNTS:
        mine = [r for r in rows if r["count"] == count]
        law = np.concatenate([r["law_frontier_error"] for r in mine])
        power = np.concatenate([r["power_frontier_error"] for r in mine])
        for r in mine:
            pt = r["per_token"]
            print(f"{count:<6}{r['held_out_sizes']:>9}{len(r['C']):>8}{pt['k']:>14.3g}·N^{pt['b']:.3f}"
                  f"{np.sqrt(np.mean(np.square(r['law_frontier_error']))):>18.2%}"
                  f"{np.sqrt(np.mean(np.square(r['power_frontier_error']))):>20.2%}")
        summary[count] = {"law_frontier_rms": float(np.sqrt(np.mean(law ** 2))),
                          "power_frontier_rms": float(np.sqrt(np.mean(power ** 2))), "n": int(law.size),
                          "law_sq": (law ** 2).tolist()}
    a, b = (np.array(summary[c]["law_sq"]) for c in COUNTS)
    if a.size == b.size and a.size > 1:
        diff = a - b   # paired over the same held-out sizes (the counts order the same runs differently in C)
        se = diff.std(ddof=1) / np.sqrt(diff.size)
        decided = abs(diff.mean()) > 2 * se
    else:
        decided = False
    best = min(COUNTS, key=lambda c: summary[c]["law_frontier_rms"])
    choice = best if decided else "full"
    why = (f"{best} errs less, beyond 2 SE of the paired difference" if decided else
           "the counts' law-frontier errors differ by less than 2 SE: full, as the trainer counts and the GPU-hours "
           "follow")
    print(f"default: {choice} ({why})")
    out = {"when": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": platform.processor() or
           platform.machine(), "scale": args.scale, "rows": rows,
           "summary": {c: {k: v for k, v in s.items() if k != "law_sq"} for c, s in summary.items()},
           "choice": choice, "why": why}
    path = ROOT / "bench" / "results" / "flop_count.json"
    path.write_text(json.dumps(out, indent=1) + "\n")
    print(f"written {path.relative_to(ROOT)}")


if __name__ == "__main__":
    main()
