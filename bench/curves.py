"""The loss-curve law on schedules it never saw (issue 23, point 2).

    WINDTUNNEL_RESULTS=results python bench/curves.py [--scale micro] [--bootstrap 30] [--ladder-only]

Fits each candidate form of windtunnel.curve on the constant-LR stable runs and the WSD-10% exp branches of the
scaling-law ladder (and, unless --ladder-only, the wsd sweep's stable run and its 10% exp branches), then predicts
the whole held-out curves: every other run of the wsd sweep (2.5/5/20% decays and the other shapes, Cosine(T = S),
Cosine(T ≠ S), CosineLoop) and the newest finished `make validate` run (experiment `validate`, a size beyond the
ladder). Per curve and form: the median |predicted / actual − 1| over the evaluations after warm-up and the final
one's error; goals 1% and 1.5%. The form chosen is the one with the lower median of the curves' median errors.

Writes bench/results/curves.json (a list of {"schedule", "model", "law", "median_abs_error", "final_error",
"inside_band", "chosen"}) and bench/results/curves.png (the chosen form's 95% band against each actual curve).
Reads the store only (MLflow at $MLFLOW_TRACKING_URI or $WINDTUNNEL_RESULTS/mlflow.db).
"""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import numpy as np
import pandas as pd

from windtunnel.curve import FORMS, Curve, fit_curves
from windtunnel.studies.curves import eval_history, fit_rows, schedule_label, step_history, stored_curves
from windtunnel.studies.points import NoRuns, final_points

GOALS = {"median_abs_error": 0.01, "final_error": 0.015}
OUT = Path(__file__).parent / "results"


def fit_and_held_out(scale: str, *, ladder_only: bool):
    """(the curves to fit, [(schedule, model, held-out whole curve)])."""
    ladder, _ = final_points("scaling_law", scale=scale, current=False)
    ladder = ladder[fit_rows(ladder)]
    fit = list(stored_curves(ladder, whole=False).values())
    held = []
    try:
        wsd, _ = final_points("wsd", scale=scale, current=False)
    except NoRuns:
        print(f"the wsd sweep has not run at scale {scale!r}: no held-out schedules from it")
        wsd = None
    if wsd is not None:
        seen = fit_rows(wsd)
        if not ladder_only:
            fit += list(stored_curves(wsd[seen], whole=False).values())
        curves = stored_curves(wsd, whole=True)  # a branch's whole curve: its stable run's prefix too
        held += [(schedule_label(r), r.model, curves[r.run_id]) for r in wsd[~seen].itertuples()]
    target = validate_curve()
    if target is None:
        print("no finished run in experiment 'validate': the validate run is not among the held-out curves")
    else:
        held.append(target)
    return fit, held


def validate_curve():
    """(schedule, model, whole curve) of the newest finished run of experiment `validate`, or None."""
    from windtunnel.tracking import runs_dataframe

    raw = runs_dataframe(experiment="validate")
    if raw.empty or "tags.status" not in raw:
        return None
    done = raw[(raw["tags.status"] == "finished") & raw["params.N_total"].notna()].sort_values("start_time")
    if done.empty:
        return None
    row = done.iloc[-1]
    steps, evals = step_history(row["run_id"]), eval_history(row["run_id"])
    curve = Curve(n=float(row["params.N_total"]), lr=steps["lr"].to_numpy(),
                  batch=np.diff(np.r_[0.0, steps["tokens"].to_numpy()]), steps=evals["step"].to_numpy(),
                  loss=evals["loss"].to_numpy(), group="validate")
    return f"validate {row.get('params.schedule.kind', 'wsd')} {row.get('params.schedule.decay_shape', '')}".strip(), \
        row["tags.model"], curve


def errors(fit, curve: Curve) -> dict:
    """The held-out curve's errors after warm-up, and the share of its evaluations inside the band."""
    loss, low, high = fit.predict(curve)
    after = curve.tokens > curve.warmup_tokens
    rel = loss[after] / curve.loss[after] - 1
    inside = (curve.loss[after] >= low[after]) & (curve.loss[after] <= high[after])
    return {"median_abs_error": float(np.median(np.abs(rel))), "final_error": float(rel[-1]),
            "inside_band": float(inside.mean())}


def figure(fit, held, path: Path) -> None:
    """One panel per held-out curve (at most 16): the actual evaluations against the predicted 95% band."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    from windtunnel.paths import atomic_path

    shown, cols = held[:16], 4
    rows = -(-len(shown) // cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.2 * rows), squeeze=False)
    for ax, (schedule, model, curve) in zip(axes.flat, shown):
        loss, low, high = fit.predict(curve)
        after = curve.tokens > curve.warmup_tokens
        t = curve.tokens[after]
        ax.fill_between(t, low[after], high[after], color="tab:blue", alpha=0.25, lw=0, label="95% band")
        ax.plot(t, loss[after], "-", color="tab:blue", lw=1, label=f"predicted ({fit.form})")
        ax.plot(t, curve.loss[after], "k.", ms=3, label="actual")
        ax.set_ylim(curve.loss[after].min() * 0.98, np.percentile(curve.loss[after], 60) * 1.03)
        ax.set_title(f"{model}: {schedule}", fontsize=9)
        ax.tick_params(labelsize=7)
    for ax in axes.flat[len(shown):]:
        ax.set_visible(False)
    axes.flat[0].legend(fontsize=7)
    fig.supxlabel("tokens")
    fig.supylabel("held-out loss (bits/byte)")
    fig.tight_layout()
    with atomic_path(path) as tmp:
        fig.savefig(tmp, format="png", dpi=90)
    plt.close(fig)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--scale", default="micro", help="scale of the stored sweeps (default: %(default)s)")
    parser.add_argument("--bootstrap", type=int, default=30, help="refits for the band (default: %(default)s)")
    parser.add_argument("--ladder-only", action="store_true", help="fit the scaling-law ladder's curves only")
    parser.add_argument("--out", type=Path, default=OUT, help="folder of curves.json and curves.png (default: %(default)s)")
    args = parser.parse_args()
    fit_set, held = fit_and_held_out(args.scale, ladder_only=args.ladder_only)
    print(f"fitted on {len(fit_set)} curves ({len({c.group for c in fit_set})} stable runs), "
          f"{len(held)} held-out curves")
    rows, fits = [], {}
    for form in FORMS:
        fits[form] = fit_curves(fit_set, form=form, bootstrap=args.bootstrap)
        print(f"{form}: " + ", ".join(f"{k} {v:.3g}" for k, v in fits[form].theta.items())
              + f"; run sd {fits[form].sd_run:.2%}, point sd {fits[form].sd_point:.2%}")
        rows += [{"schedule": s, "model": m, "law": form, **errors(fits[form], c)} for s, m, c in held]
    table = pd.DataFrame(rows)
    chosen = table.groupby("law")["median_abs_error"].median().idxmin() if len(table) else "lra"
    table["chosen"] = table["law"] == chosen
    for row in table.itertuples():
        print(f"{row.law:<4} {row.model:<11} {row.schedule:<24} median |err| {row.median_abs_error:6.2%}  "
              f"final {row.final_error:+6.2%}  inside band {row.inside_band:4.0%}"
              + ("" if row.median_abs_error <= GOALS["median_abs_error"] and abs(row.final_error) <= GOALS["final_error"]
                 else "  (misses a goal)"))
    if len(table):
        print(table.groupby("law")[["median_abs_error", "inside_band"]].median().to_string())
    print(f"chosen: {chosen}")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "curves.json").write_text(json.dumps(table.to_dict(orient="records"), indent=1) + "\n")
    if held:
        figure(fits[chosen], held, args.out / "curves.png")


if __name__ == "__main__":
    main()
