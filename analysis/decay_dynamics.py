"""Decay dynamics (paper §4.4, Fig. 7–8): what changes when a WSD run decays, from the trainer's per-step logs.

    python analysis/decay_dynamics.py [--scale micro] [--no-plots]

The trainer logs, every step, the directional derivatives along the trajectory D1 = g(t+1)·v(t)/‖v(t)‖ and
D2 = (g(t+1) − g(t))·v(t)/‖v(t)‖² (v the parameter update, g the gradient), the curvature K = |D2|/(1 + D1²)^1.5,
the gradient norm, the cosine between consecutive gradients and the max |Δw| of each weight matrix. For each
10%-exp decay branch of the wsd sweep (or of the scaling_law sweep when the wsd sweep has not run at that scale),
this compares the stable stretch just before the fork (one decay-length of the parent) with the decay's last
fifth, as medians (single steps are minibatch noise). Writes results/decay_dynamics/fit.json and the figure.
"""

import sys

import numpy as np
import pandas as pd

from windtunnel import plots, studies, tracking

LEAD = 1.0  # the parent's stable stretch shown before each decay, in units of the decay's length
END = 0.2  # the decay's last fifth is compared with the stretch before it
MIN_POINTS = 9  # fewer logged steps than this and the medians are noise: the branch is skipped
QUANTITIES = {"grad/norm": "grad_norm", "grad/cos_prev": "grad_cos", "grad/D1": "D1", "grad/D2": "D2",
              "grad/curvature": "K", "update/max_abs": "max_update"}


def _runs(scale: str, current: bool):
    """The sweep read (wsd, else scaling_law), its 10%-exp decay branches and their stable parents."""
    try:
        frame, excluded = studies.final_points("wsd", scale=scale, current=current)
        sweep = "wsd"
    except studies.NoRuns:
        frame, excluded = studies.final_points("scaling_law", scale=scale, current=current)
        sweep = "scaling_law"
    branches = studies.decay_points(frame)
    branches = branches[(branches["decay_fraction"] == 0.1) & (branches["decay_shape"] == "exp")].sort_values(["N", "D"])
    return sweep, branches, frame[frame["stage"] == "stable"], excluded


def _curve(branch, curves, stable):
    """The branch's own steps, led by the stable run's last LEAD·(decay length) steps before the fork."""
    own = curves[curves["run_id"] == branch.run_id]
    decay_steps = len(own)
    parent = stable[stable["run"] == branch.parent]
    lead = curves[curves["run_id"].isin(parent["run_id"]) & (curves["step"] <= branch.fork_step)
                  & (curves["step"] > branch.fork_step - LEAD * decay_steps)]
    return pd.concat([lead, own], ignore_index=True).sort_values("step")


def _before_and_end(curve: pd.DataFrame, fork_step: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    before = curve[curve["step"] <= fork_step]
    decay = curve[curve["step"] > fork_step]
    return before, decay[decay["step"] > decay["step"].max() - END * len(decay)]


def summarize(curve: pd.DataFrame, fork_step: int) -> dict:
    """Medians before the decay and at its end of every logged quantity, and each matrix's update ratio."""
    before, end = _before_and_end(curve, fork_step)
    out = {"loss_before": float(before["loss"].median()), "loss_end": float(end["loss"].median())}
    for key, name in QUANTITIES.items():
        if key in curve and curve[key].notna().any():
            out[f"{name}_before"], out[f"{name}_end"] = float(before[key].median()), float(end[key].median())
    matrices = [k for k in curve if k.startswith("update/max_abs/")]
    ratios = {k.removeprefix("update/max_abs/"): float(end[k].median() / before[k].median()) for k in matrices
              if before[k].median() > 0}
    if ratios:
        out["max_update_ratio_by_matrix"] = ratios
    return out


def main(args) -> None:
    sweep, branches, stable, excluded = _runs(args.scale, not args.all_runs)
    curves = studies.loss_curves(pd.concat([branches, stable]), metric="train")
    shown, summary, skipped = {}, [], []
    for row in branches.itertuples():
        curve = _curve(row, curves, stable)
        if len(curve) < MIN_POINTS or not (curve["step"] <= row.fork_step).any():
            skipped.append(row.name)
            continue
        shown[row.name] = (curve, int(row.fork_step))
        summary.append({"name": row.name, "fork_step": int(row.fork_step), **summarize(curve, row.fork_step)})
    missing = [s["name"] for s in summary if "D1_before" not in s]
    out = studies.study_dir("decay_dynamics")
    studies.write_json(out / "fit.json", {"scale": args.scale, "sweep": sweep, "excluded": excluded, "lead": LEAD,
                                          "end": END, "skipped_short": skipped, "without_D1": missing,
                                          "branches": summary})
    if not args.no_plots and shown:
        plots.decay_dynamics(shown, out / "decay_dynamics.png")
    for s in summary:
        line = (f"{s['name']:<30} loss {s['loss_before']:.3f} → {s['loss_end']:.3f}; "
                f"grad norm {s.get('grad_norm_before', np.nan):.3g} → {s.get('grad_norm_end', np.nan):.3g}")
        if "D1_before" in s:
            line += (f"; D1 {s['D1_before']:.3g} → {s['D1_end']:.3g}; K {s['K_before']:.3g} → {s['K_end']:.3g}; "
                     f"cos(g, g_prev) {s['grad_cos_before']:.2f} → {s['grad_cos_end']:.2f}")
        if "max_update_ratio_by_matrix" in s:
            ratios = list(s["max_update_ratio_by_matrix"].values())
            line += f"; max |Δw| per matrix × {min(ratios):.2g}…{max(ratios):.2g}"
        print(line)
    if missing:
        print(f"{len(missing)} branches were trained before D1/D2 were logged (no D1, D2, K): {', '.join(missing[:3])}…")
    if skipped:
        print(f"skipped {len(skipped)} branches with fewer than {MIN_POINTS} logged steps: {', '.join(skipped)}")
    print(f"written: {out}/fit.json ({sweep} sweep)")
    tracking.log_outputs([out], output="decay_dynamics", sweep=sweep, scale=args.scale)  # on the sweep's MLflow run


if __name__ == "__main__":
    sys.exit(studies.run_script(main, __doc__))
