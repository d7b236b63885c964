"""How far apart do two seeds of one micro ladder point land? (issue 22, point 3)

    python bench/seed_spread.py [--out bench/results/seed_spread.json]

Reads the finished decay branches of the scaling-law sweep from the results store: scale `micro` (every size, seeds
0 and 1) and scale `micro-seeds` (the largest size's seeds 2 and 3; `windtunnel sweep scaling_law --scale
micro-seeds`: seeds 2 and 3 of micro-221k and of the largest size). Per (model, branch point) it prints the final
held-out bits per byte of each seed (branches forked mid-transition, which the fits leave out, included and marked)
and their spread = (max − min) / mean; per branch point of a size with four seeds, how far the ladder's 2-seed mean
lies from the 4-seed mean. Goals: every spread ≤ 1%, every 2-seed mean within 0.5% of the 4-seed one. The JSON is one list of
{"model", "tokens", "seeds", "losses", "spread"}: the ladder's rows, then the 4-seed rows (with
"mean_2", "mean_4" and "mean_gap" = mean_2 / mean_4 − 1). It also prints each size's pre-clip gradient norm over
its stable runs' steps after warm-up (median, 99th percentile, max, steps above the clip): issue 22, point 6.
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pandas as pd

from windtunnel.studies.points import TRANSITION_RATE, NoRuns, _stored_points, copy_gap_ladder

SPREAD_GOAL, MEAN_GOAL = 0.01, 0.005
CLIP, WARMUP_STEPS = 1.0, 64  # the trainer's grad_clip; the ladder's warm-up is 65,536 tokens = 13–21 steps


def runs(scale: str):
    """Every finished run of the scaling-law sweep at `scale` (None when it has not run), the decay branches with
    `mid` = forked mid-transition (which the fits leave out; counted here, since the spread is what it explains)."""
    try:
        frame, _, _ = _stored_points("scaling_law", scale=scale, current=True, diverged=False)
    except NoRuns:
        return None
    _, forks = copy_gap_ladder("scaling_law", scale=scale)
    return frame.assign(mid=frame["name"].isin(forks.loc[forks["copy_gap_rate"] > TRANSITION_RATE, "name"]))


def spread_table(frame) -> list[dict]:
    rows = []
    for (model, tokens), part in frame.sort_values(["N", "D", "seed"]).groupby(["model", "D"], sort=False):
        losses = [float(x) for x in part["loss"]]
        mean = sum(losses) / len(losses)
        rows.append({"model": model, "tokens": int(tokens), "seeds": [int(s) for s in part["seed"]],
                     "losses": losses, "spread": (max(losses) - min(losses)) / mean,
                     "mid_transition": [int(s) for s in part.loc[part["mid"], "seed"]]})
    return rows


def grad_norms(frame) -> list[dict]:
    """Per size, the pre-clip gradient norm of every step of its stable runs after the LR warm-up."""
    from windtunnel.tracking import metric_history

    rows = []
    for model, runs in frame[frame["stage"] == "stable"].sort_values("N").groupby("model", sort=False):
        norms = pd.concat([metric_history(r, "grad/norm").set_index("step")["value"].iloc[WARMUP_STEPS:]
                           for r in runs["run_id"]])
        rows.append({"model": model, "steps": len(norms), "median": norms.median(),
                     "p99": norms.quantile(0.99), "max": norms.max(), "above_clip": int((norms > CLIP).sum())})
    return rows


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/seed_spread.json"))
    args = parser.parse_args(argv)

    ladder = runs("micro")
    if ladder is None:
        raise SystemExit("no micro scaling-law runs: run `windtunnel sweep scaling_law --scale micro` first")
    rows = spread_table(ladder[ladder["stage"] == "decay"])
    print(f"{'model':<12}{'tokens':>11}  {'bits/byte per seed':<28}{'spread':>8}")
    for r in rows:
        flag = ("" if r["spread"] <= SPREAD_GOAL else "  > 1%") + "".join(
            f"  (seed {s} mid-transition)" for s in r["mid_transition"])
        print(f"{r['model']:<12}{r['tokens']:>11,}  {' '.join(f'{x:.4f}' for x in r['losses']):<28}"
              f"{r['spread']:>7.2%}{flag}")

    extra = runs("micro-seeds")
    four = []
    for model, more in ([] if extra is None else extra[extra["stage"] == "decay"].groupby("model", sort=False)):
        both = spread_table(pd.concat([ladder[(ladder["model"] == model) & (ladder["stage"] == "decay")], more]))
        print(f"\n{model}, seeds {both[0]['seeds']}:")
        for r in both:
            two = [x for s, x in zip(r["seeds"], r["losses"]) if s in (0, 1)]
            mean2, mean4 = sum(two) / len(two), sum(r["losses"]) / len(r["losses"])
            four.append({**r, "mean_2": mean2, "mean_4": mean4, "mean_gap": mean2 / mean4 - 1})
            print(f"{r['tokens']:>11,}  {' '.join(f'{x:.4f}' for x in r['losses'])}  spread {r['spread']:.2%}; "
                  f"2-seed mean {mean2:.4f} against {len(r['losses'])}-seed {mean4:.4f}: {mean2 / mean4 - 1:+.2%}"
                  + ("" if abs(mean2 / mean4 - 1) <= MEAN_GOAL else "  (> 0.5%)"))
    if extra is None:
        print("\nno seeds 2 and 3: run `windtunnel sweep scaling_law --scale micro-seeds`")

    print(f"\npre-clip gradient norm after warm-up (stable runs, both seeds; clip {CLIP}):")
    for r in grad_norms(ladder):
        print(f"{r['model']:<12}{r['steps']:>6} steps  median {r['median']:.3f}  p99 {r['p99']:.3f}  "
              f"max {r['max']:.3f}  above the clip {r['above_clip']}")

    worst = max(r["spread"] for r in rows)
    top = ladder.loc[ladder["N"].idxmax(), "model"]
    gaps = [abs(r["mean_gap"]) for r in four if r["model"] == top]
    print(f"\nlargest spread {worst:.2%} (goal ≤ 1%): {'met' if worst <= SPREAD_GOAL else 'missed'}"
          + (f"; {top}: largest |2-seed − 4-seed mean| {max(gaps):.2%} (goal ≤ 0.5%)" if gaps else ""))
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(rows + four, indent=1) + "\n")  # one list: the ladder, then the 4-seed rows
    print(f"wrote {args.out}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
