"""Decay dynamics (paper §4.4): during each WSD decay, the loss's slope D1, second derivative D2 and curvature
K = |D2| / (1 + D1²)^1.5, beside the logged gradient norm, max weight update and gradient cosine.

    python analysis/decay_dynamics.py [--scale micro] [--no-plots]

Reads the 10%-exp decay branches of the wsd sweep, or of the scaling_law sweep when the wsd sweep has not run
at that scale; each curve starts one decay-length before the fork, on the stable run. Writes results/decay_dynamics/fit.json and decay_dynamics.png.
"""

import sys

import pandas as pd

from windtunnel import fit, plots, studies


LEAD = 1.0  # the parent's stable stretch shown before each decay, in units of the decay's length
MIN_POINTS = 9  # fewer logged steps than this and the derivatives are noise: the branch is skipped


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


def main(args) -> None:
    sweep, branches, stable, excluded = _runs(args.scale, not args.all_runs)
    curves = studies.loss_curves(pd.concat([branches, stable]), metric="train")
    dynamics, summary, skipped = {}, [], []
    for row in branches.itertuples():
        curve = _curve(row, curves, stable)
        if len(curve) < MIN_POINTS:
            skipped.append(row.name)
            continue
        frame = fit.decay_dynamics(curve["tokens"].to_numpy(float), curve["loss"].to_numpy(float))
        frame.attrs["curve"] = curve
        dynamics[row.name] = frame
        decay = frame[frame["tokens"] > row.fork_step * row.batch_tokens]
        peak = decay.loc[decay["K"].idxmax()]
        summary.append({"name": row.name, "decay_start_tokens": float(row.fork_step * row.batch_tokens),
                        "tokens_at_max_K": float(peak["tokens"]), "max_K": float(peak["K"]),
                        "loss_drop": float(curve["loss"].iloc[:3].mean() - curve["loss"].iloc[-3:].mean()),
                        "grad_norm_before": float(curve["grad/norm"].iloc[:3].mean()),
                        "grad_norm_end": float(curve["grad/norm"].iloc[-3:].mean())})
    out = studies.study_dir("decay_dynamics")
    studies.write_json(out / "fit.json", {"scale": args.scale, "sweep": sweep, "excluded": excluded,
                                          "skipped_short": skipped, "branches": summary})
    if not args.no_plots and dynamics:
        plots.decay_dynamics(dynamics, out / "decay_dynamics.png")
    for s in summary:
        print(f"{s['name']:<36} loss {-s['loss_drop']:+.3f} nats/token across the decay; grad norm "
              f"{s['grad_norm_before']:.3g} → {s['grad_norm_end']:.3g}; max curvature {s['max_K']:.3g}")
    if skipped:
        print(f"skipped {len(skipped)} branches with fewer than {MIN_POINTS} logged steps: {', '.join(skipped)}")
    print(f"written: {out}/fit.json ({sweep} sweep)")


if __name__ == "__main__":
    sys.exit(studies.run_script(main, __doc__))
