"""Scaling law L(N, D) (paper §5; Fig. 10 and 17) and the loss envelope (§4.3, Fig. 6) from the scaling_law sweep.

    python analysis/scaling_law.py [--scale micro] [--bootstrap 1000] [--no-plots]

Fits the decay branches' final losses (mean held-out bits per byte) by Huber/L-BFGS and by curve_fit, in both
conventions of N (with and without the tied embedding; the default one drives the plan), with bootstrap intervals
that resample whole stable runs, the compute-optimal allocation (C = 6·N·D) and the rolling backtests (fit the k
smallest sizes, predict the next). Writes results/scaling_law/fit.json and the figures beside it.
"""

import sys

from windtunnel import plots, studies

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
        plots.iso_loss(law, points.assign(N=points[n_col]), out / "fig10_iso_loss.png")
        plots.loss_vs_tokens(law, points.assign(N=points[n_col]), out / "fig17_loss_vs_tokens.png")
        plots.envelope(points.assign(N=points[n_col]), envelope, out / "fig6_envelope.png")
        plots.backtests(law, points.assign(N=points[n_col]), out / "backtests.png")
    for line in studies.describe_scaling_law(law):
        print(line)
    print(f"written: {out}/fit.json" + ("" if args.no_plots else " and fig6/fig10/fig17/backtests PNGs"))


if __name__ == "__main__":
    sys.exit(studies.run_script(main, __doc__))
