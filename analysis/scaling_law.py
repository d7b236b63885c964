"""Scaling law L(N, D) (paper §5; Fig. 10 and 17) and the loss envelope (§4.3, Fig. 6) from the scaling_law sweep.

    python analysis/scaling_law.py [--scale micro] [--bootstrap 1000] [--no-plots]

Fits the decay branches' final losses (mean held-out bits per byte) in the paper's form (Huber/L-BFGS and curve_fit)
and in Kaplan et al.'s, in both conventions of N (with and without the tied embedding), with bootstrap intervals
that resample whole stable runs and rolling backtests (fit the k smallest sizes, predict the next); the form that
backtests better predicts (the plan, the compute-optimal allocation at C = 6·N·D). Writes
results/scaling_law/fit.json and the figures beside it.
"""

import sys

from windtunnel import plots, studies, tracking

COLUMNS = ["model", "N", "N_total", "D", "loss", "seed", "group", "name"]


def main(args) -> None:
    frame, excluded = studies.final_points("scaling_law", scale=args.scale, current=not args.all_runs)
    points = studies.decay_points(frame)
    law = studies.fit_scaling_law_study(points, bootstrap=args.bootstrap)
    envelope = studies.fit_envelope_study(points)
    out = studies.study_dir("scaling_law")
    studies.write_json(out / "fit.json", {**law, **studies.ladder_facts(points), "scale": args.scale,
                                          "excluded": excluded, "envelope": envelope,
                                          "points": points[COLUMNS].to_dict(orient="records")})
    if not args.no_plots:
        n_col = studies.N_KINDS[law["n_kind"]]
        shown = points.assign(N=points[n_col])
        plots.iso_loss(law["prediction"], shown, out / "fig10_iso_loss.png")
        plots.loss_vs_tokens([law, law["prediction"]], shown, out / "fig17_loss_vs_tokens.png")
        plots.envelope(shown, envelope, out / "fig6_envelope.png")
        plots.backtests(law["prediction"], shown, out / "backtests.png")
    for line in studies.describe_scaling_law(law):
        print(line)
    print(f"written: {out}/fit.json" + ("" if args.no_plots else " and fig6/fig10/fig17/backtests PNGs"))
    tracking.log_outputs([out], output="scaling_law", sweep="scaling_law", scale=args.scale)  # on the sweep's MLflow run


if __name__ == "__main__":
    sys.exit(studies.run_script(main, __doc__))
