"""Scaling law L(N, D) (paper §5; Fig. 10 and 17) and the loss envelope (§4.3, Fig. 6) from the scaling_law sweep.

    python analysis/scaling_law.py [--scale micro] [--bootstrap 1000] [--no-plots]

Fits the decay branches' final losses (mean held-out bits per byte) by Huber/L-BFGS and by curve_fit, with
bootstrap intervals, the compute-optimal allocation and the backtest on the largest size. Writes
results/scaling_law/fit.json and the figures beside it.
"""

import sys

from windtunnel import plots, studies

COLUMNS = ["model", "N", "D", "loss", "branch_tokens_per_param", "name"]


def main(args) -> None:
    frame, excluded = studies.final_points("scaling_law", scale=args.scale, current=not args.all_runs)
    points = studies.decay_points(frame)
    law = studies.fit_scaling_law_study(points, bootstrap=args.bootstrap)
    envelope = studies.fit_envelope_study(points)
    out = studies.study_dir("scaling_law")
    studies.write_json(out / "fit.json", {**law, "scale": args.scale, "excluded": excluded, "envelope": envelope,
                                          "points": points[COLUMNS].to_dict(orient="records")})
    if not args.no_plots:
        plots.iso_loss(law, points, out / "fig10_iso_loss.png")
        plots.loss_vs_tokens(law, points, out / "fig17_loss_vs_tokens.png")
        plots.envelope(points, envelope, out / "fig6_envelope.png")
    bt = law["backtest"]
    print(f"L(N,D) = {law['C_N']:.4g}·N^-{law['alpha']:.3f} + {law['C_D']:.4g}·D^-{law['beta']:.3f} + {law['L0']:.3f}"
          f"  ({law['n_points']} points, {law['n_models']} sizes; curve_fit: alpha {law['curve_fit']['alpha']:.3f}, "
          f"beta {law['curve_fit']['beta']:.3f})")
    print(f"backtest on the largest size: mean |error| {bt['mean_abs_rel_err']:.2%}, max {bt['max_abs_rel_err']:.2%}")
    print(f"written: {out}/fit.json" + ("" if args.no_plots else " and fig6/fig10/fig17 PNGs"))


if __name__ == "__main__":
    sys.exit(studies.run_script(main, __doc__))
