"""Batch-size law bs_opt = k / L^γ (paper §3.2; Fig. 1 and 2) from the batch_size sweep.

    python analysis/batch_size.py [--scale micro] [--bootstrap 1000] [--no-plots]

From every run's held-out loss curve, the tokens needed to reach each loss level against batch size; a parabola
in log–log space per model and level gives that loss's optimal batch size (left out, and counted, where its vertex
lies outside the sampled batch sizes: never extrapolated); a line through all optima gives the law. Writes
results/batch_size/fit.json and the figures beside it.
"""

import sys

import pandas as pd

from windtunnel import plots, studies, tracking


def main(args) -> None:
    frame, excluded = studies.final_points("batch_size", scale=args.scale, current=not args.all_runs)
    curves = studies.loss_curves(frame, metric="eval")
    law = studies.fit_batch_size_study(curves, bootstrap=args.bootstrap)
    out = studies.study_dir("batch_size")
    studies.write_json(out / "fit.json", {**law, **studies.ladder_facts(frame), "scale": args.scale, "excluded": excluded})
    if not args.no_plots:
        optima = pd.DataFrame(law["optima"])
        plots.batch_size_curves(pd.DataFrame(law["reach"]), optima, out / "fig1_tokens_vs_batch.png")
        plots.batch_size_law(optima, law, out / "fig2_batch_size_law.png")
    low, high = law["intervals"].get("gamma", (float("nan"),) * 2)
    print(f"bs_opt = {law['k']:.4g} / L^{law['gamma']:.3f} tokens (gamma 95% [{low:.3f}, {high:.3f}]; "
          f"{len(law['optima'])} optima from {len(frame)} runs)")
    if law["n_skipped"]:
        print(f"left out {law['n_skipped']} (model, loss) parabolas: {law['n_outside']} with the optimum outside the "
              f"sampled batch sizes (not extrapolated: add batch sizes beyond them), {law['n_concave']} opening "
              "downward (no minimum)")
    print(f"written: {out}/fit.json" + ("" if args.no_plots else " and fig1/fig2 PNGs"))
    tracking.log_outputs([out], output="batch_size", sweep="batch_size", scale=args.scale)  # on the sweep's MLflow run


if __name__ == "__main__":
    sys.exit(studies.run_script(main, __doc__))
