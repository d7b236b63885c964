"""The loss-curve law's candidates on schedules they never saw (issue 23, point 2).

    WINDTUNNEL_RESULTS=results python bench/curves.py [--scale micro] [--bootstrap 40] [--ladder-only]

Fits each candidate form of windtunnel.curve.FORMS on the runs the loss_curve study fits (studies.curves.fit_rows:
the scaling-law ladder's constant-LR stable runs and WSD-10% exp branches, and the wsd sweep's unless --ladder-only),
then predicts every held-out whole curve (studies.curves.held_out: the wsd sweep's 2.5/5/20% decays and other shapes,
Cosine(T = S), Cosine(T ≠ S), CosineLoop, and the newest `make validate` run). Per curve and form: the median
|predicted / actual − 1| after warm-up and the final evaluation's error (goals 1% and 1.5%), and the share of
evaluations inside the 95% band. The form with the lower median of the curves' median errors is marked chosen
(studies.curves.FORM is what the study and the plan use: set it from this).

The plan picks its decay by the law's predicted final loss (plan.decay_choice): against the wsd sweep's measured
ranking, every decay (fraction × shape) from its last branch point is predicted by the chosen form and ranked.

Writes bench/results/curves.json (a list of {"schedule", "model", "law", "median_abs_error", "final_error",
"median_abs_error_covered" (over the evaluations from the fitted runs' first on), "inside_band", "chosen"}), bench/results/curves_decay.json (per decay from the last branch point: measured and
predicted final loss) and bench/results/curves.png (the chosen form's band against each held-out curve). Reads the
store only (MLflow at $MLFLOW_TRACKING_URI, else $WINDTUNNEL_RESULTS/mlflow.db).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import pandas as pd

from windtunnel import plots
from windtunnel.curve import FORMS, fit_curves
from windtunnel.studies.curves import GOALS, curve_points, held_out, held_out_errors, stored_curves
from windtunnel.studies.points import NoRuns, final_points
from windtunnel.studies.study import Options

OUT = Path(__file__).parent / "results"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="micro", help="scale of the stored sweeps (default: %(default)s)")
    parser.add_argument("--bootstrap", type=int, default=40, help="refits behind the band (default: %(default)s)")
    parser.add_argument("--ladder-only", action="store_true", help="fit the scaling-law ladder's runs only")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of curves.json, curves.png (default: %(default)s)")
    args = parser.parse_args()
    o = Options(scale=args.scale, current=False)  # every stored run: the store is read, never a sweep file expanded
    if args.ladder_only:
        from windtunnel.studies.curves import fit_rows

        frame, _ = final_points("scaling_law", scale=o.scale, current=False)
        frame = frame[fit_rows(frame)]
    else:
        frame, _ = curve_points("scaling_law", o)
    fitted = list(stored_curves(frame, whole=False).values())
    held = held_out(o)
    print(f"fitted on {len(fitted)} curves ({frame['model'].nunique()} sizes, {len({c.group for c in fitted})} stable "
          f"runs); {len(held)} held-out curves" + ("" if any(s.startswith("validate") for s, _, _ in held)
                                                   else " (no finished validate run)"))
    rows, panels, fits = [], {}, {}
    for form in FORMS:
        start = time.perf_counter()
        fit = fits[form] = fit_curves(fitted, form=form, bootstrap=args.bootstrap)
        print(f"{form} ({time.perf_counter() - start:.0f} s): " + ", ".join(f"{k} {v:.3g}" for k, v in fit.theta.items())
              + f"; a run's sd {fit.sd_run:.2%}, an evaluation's {fit.sd_point:.2%}")
        panels[form] = []
        for schedule, model, curve in held:
            errors, panel = held_out_errors(fit, curve)
            rows.append({"schedule": schedule, "model": model, "law": form, **errors})
            panels[form].append({**panel, "title": f"{model}: {schedule} ({errors['median_abs_error']:.2%}, final "
                                                   f"{errors['final_error']:+.2%})"})
    table = pd.DataFrame(rows, columns=["schedule", "model", "law", "median_abs_error", "final_error",
                                        "median_abs_error_covered", "inside_band"])
    chosen = table.groupby("law")["median_abs_error"].median().idxmin() if len(table) else None
    table["chosen"] = table["law"] == chosen
    for r in table.itertuples():
        met = r.median_abs_error <= GOALS["median_abs_error"] and abs(r.final_error) <= GOALS["final_error"]
        print(f"{r.law:<4} {r.model:<11} {r.schedule:<28} median |err| {r.median_abs_error:6.2%} "
              f"({r.median_abs_error_covered:6.2%} where fitted)  final {r.final_error:+6.2%}  inside the band "
              f"{r.inside_band:4.0%}" + ("" if met else "  (misses a goal)"))
    if len(table):
        summary = table.groupby("law").agg(median=("median_abs_error", "median"), worst=("median_abs_error", "max"),
                                           final=("final_error", lambda e: e.abs().median()),
                                           inside=("inside_band", "mean"))
        print(summary.to_string(float_format=lambda x: f"{x:.2%}"))
    print(f"chosen: {chosen}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curves.json").write_text(json.dumps(table.to_dict(orient="records"), indent=1) + "\n")
    if chosen:
        plots.curve_bands(panels[chosen], args.out / "curves.png")
        ranking = decay_ranking(fits[chosen], o)
        (args.out / "curves_decay.json").write_text(json.dumps(ranking, indent=1) + "\n")


def decay_ranking(fit, o: Options) -> list[dict]:
    """Every decay of the wsd sweep from its last branch point: measured and predicted final loss, each ranked."""
    try:
        wsd, _ = final_points("wsd", scale=o.scale, current=False)
    except NoRuns:
        return []
    branches = wsd[wsd["stage"] == "decay"]
    last = branches[branches["branch_tokens_per_param"] == branches["branch_tokens_per_param"].max()]
    curves = stored_curves(pd.concat([last, wsd[wsd["stage"] == "stable"]]), whole=True)
    rows = [{"fraction": float(r.decay_fraction), "shape": r.decay_shape, "measured": float(r.loss),
             "predicted": float(fit.predict(curves[r.run_id])[0][-1])} for r in last.itertuples()]
    table = pd.DataFrame(rows)
    if table.empty:
        return []
    table["measured_rank"] = table["measured"].rank().astype(int)
    table["predicted_rank"] = table["predicted"].rank().astype(int)
    for r in table.sort_values("measured").itertuples():
        print(f"decay {r.fraction:<6g}{r.shape:<7} measured {r.measured:.4f} (rank {r.measured_rank:>2}), predicted "
              f"{r.predicted:.4f} (rank {r.predicted_rank:>2})")
    best = table.loc[table["predicted"].idxmin()]
    gap = best["measured"] / table["measured"].min() - 1
    print(f"the law's best decay {best['fraction']:g} {best['shape']} measured {gap:+.2%} above the measured best; "
          f"Spearman {table['measured'].corr(table['predicted'], method='spearman'):.2f}")
    return table.to_dict(orient="records")


if __name__ == "__main__":
    main()
