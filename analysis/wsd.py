"""WSD against Cosine(T) (paper §4; Fig. 4 and 5) and the loss envelope (§4.3, Fig. 6) from the wsd sweep.

    python analysis/wsd.py [--scale micro] [--no-plots]

States the paper's findings on the runs, with the numbers:
  * WSD with a 10% decay reaches Cosine(T = S) at the same tokens (each Cosine(T = S) against the 10% branches
    that end where it ends);
  * Cosine with T ≠ S (and CosineLoop) ends above Cosine(T = S) at the same S;
  * a 2.5% decay falls short of a 10% one, per decay shape, from the last branch point;
  * the envelope WSD(D, 0.1D) is a power law rather than an exponential (AIC);
  * Fig. 6: a smaller model trained longer against a larger one at equal compute, on the scaling-law ladder's
    WSD(D, 0.1D) points (read when that sweep ran at this scale).
Every comparison is between runs of one seed with one data order, so differences are not seed noise between
initialisations; the gap that counts as "reached" is TIE (relative). Writes results/wsd/fit.json and the figures.
"""

import sys

import numpy as np
import pandas as pd

from windtunnel import plots, studies, tracking

COLUMNS = ["name", "D", "loss", "branch_tokens_per_param", "decay_fraction", "decay_shape"]
TIE = 0.002        # relative loss gap within which two runs count as equal (0.2%: below the decay-shape spread)
SAME_TOKENS = 0.01  # runs whose token counts differ by less than this (relative) end "at the same tokens"


def _period(row) -> float:
    """T of a cosine run in tokens (unset: T = S, the run's own tokens)."""
    return row.D if np.isnan(row.period_tokens) else row.period_tokens


def _cosine_label(row) -> str:
    """"Cosine(T=22N) S=88N": T and S in tokens per parameter of the run's N."""
    kind = "CosineLoop" if row.schedule == "cosine_loop" else "Cosine"
    return f"{kind}(T={_period(row) / row.N:.0f}N) S={row.D / row.N:.0f}N"


def _same(a, b) -> bool:
    return abs(a - b) <= SAME_TOKENS * max(a, b)


def wsd_vs_cosine(cosines: pd.DataFrame, branches: pd.DataFrame) -> list[dict]:
    """Each Cosine(T = S) against the 10% branches ending at its S: does the best one reach it?"""
    out = []
    for row in cosines[cosines["schedule"] == "cosine"].itertuples():
        if not _same(_period(row), row.D):
            continue
        ten = branches[(branches["decay_fraction"] == 0.1) & branches["D"].map(lambda d: _same(d, row.D))]
        if ten.empty:
            continue
        best = ten.loc[ten["loss"].idxmin()]
        gap = best["loss"] / row.loss - 1
        out.append({"tokens": float(row.D), "cosine": row.name, "cosine_loss": float(row.loss),
                    "wsd": best["name"], "wsd_loss": float(best["loss"]), "gap": float(gap), "reached": bool(gap <= TIE),
                    "by_shape": dict(zip(ten["decay_shape"], ten["loss"].astype(float)))})
    return out


def cosine_periods(cosines: pd.DataFrame) -> list[dict]:
    """At the longest S: every Cosine(T) and CosineLoop(T) against Cosine(T = S)."""
    s = cosines["D"].max()
    at_s = cosines[cosines["D"].map(lambda d: _same(d, s))]
    equal = [r for r in at_s.itertuples() if r.schedule == "cosine" and _same(_period(r), r.D)]
    if not equal:
        return []
    reference = equal[0].loss
    return [{"name": r.name, "kind": r.schedule, "T_over_S": float(_period(r) / r.D), "loss": float(r.loss),
             "gap": float(r.loss / reference - 1), "worse": bool(r.loss > reference * (1 + TIE))}
            for r in at_s.sort_values("period_tokens").itertuples()]


def decay_lengths(branches: pd.DataFrame) -> list[dict]:
    """From the last branch point, each shape's final loss per decay fraction, and 2.5% against 10%."""
    last = branches[branches["branch_tokens_per_param"] == branches["branch_tokens_per_param"].max()]
    out = []
    for shape, group in last.groupby("decay_shape"):
        loss = dict(zip(group["decay_fraction"].astype(float), group["loss"].astype(float)))
        row = {"shape": shape, "loss_by_fraction": loss}
        if 0.025 in loss and 0.1 in loss:
            row["short_gap"] = loss[0.025] / loss[0.1] - 1
            row["short_falls_short"] = bool(row["short_gap"] > TIE)
        out.append(row)
    return out


def equal_compute(points: pd.DataFrame) -> list[dict]:
    """Fig. 6 on a ladder's WSD(D, 0.1D) points: for each smaller/larger pair, the smaller model's loss at the
    larger one's compute (interpolated in log C, inside its own range) minus the larger one's."""
    points = points.assign(C=6 * points["N_total"] * points["D"])
    sizes = points.groupby("model")["N_total"].first().sort_values()
    out = []
    for small, large in zip(sizes.index[:-1], sizes.index[1:]):
        a = points[points["model"] == small].groupby("C")["loss"].mean().sort_index()
        b = points[points["model"] == large].groupby("C")["loss"].mean().sort_index()
        inside = b[(b.index >= a.index.min()) & (b.index <= a.index.max())]
        for c, loss in inside.items():
            small_loss = float(np.interp(np.log(c), np.log(a.index.to_numpy()), a.to_numpy()))
            out.append({"small": small, "large": large, "C": float(c), "small_loss": small_loss,
                        "large_loss": float(loss), "small_lower": bool(small_loss < loss)})
    return out


def _ladder_envelopes(scale: str, current: bool) -> pd.DataFrame:
    try:
        frame, _ = studies.final_points("scaling_law", scale=scale, current=current)
    except studies.NoRuns:
        return pd.DataFrame()
    branches = studies.decay_points(frame)
    return branches[(branches["decay_fraction"] == 0.1) & (branches["decay_shape"] == "exp")
                    & (branches["decay_data"] == "")]


def main(args) -> None:
    frame, excluded = studies.final_points("wsd", scale=args.scale, current=not args.all_runs)
    branches = studies.decay_points(frame)
    cosines = frame[frame["schedule"].isin(["cosine", "cosine_loop"])].sort_values(["D", "period_tokens"])
    ten_percent = branches[(branches["decay_fraction"] == 0.1) & (branches["decay_shape"] == "exp")]
    envelope = studies.fit_envelope_study(ten_percent)
    ladder = _ladder_envelopes(args.scale, not args.all_runs)
    findings = {"wsd_vs_cosine": wsd_vs_cosine(cosines, branches), "cosine_periods": cosine_periods(cosines),
                "decay_lengths": decay_lengths(branches), "equal_compute": equal_compute(ladder) if len(ladder) else []}
    out = studies.study_dir("wsd")
    studies.write_json(out / "fit.json", {
        "scale": args.scale, "excluded": excluded, "envelope": envelope, "tie": TIE, **findings,
        "cosine": cosines[["name", "D", "period_tokens", "loss"]].to_dict(orient="records"),
        "branches": branches.sort_values(["D", "loss"])[COLUMNS].to_dict(orient="records")})
    if not args.no_plots and not branches.empty:
        shown = {**{r.run_id: _cosine_label(r) for r in cosines.itertuples()},
                 **{r.run_id: f"WSD {r.branch_tokens_per_param:g}N + 10% exp" for r in ten_percent.itertuples()},
                 **{r.run_id: "stable (constant LR)" for r in frame[frame["stage"] == "stable"].itertuples()}}
        curves = studies.loss_curves(frame[frame["run_id"].isin(shown)], metric="eval")
        plots.wsd_curves(curves, shown, out / "fig4_wsd_vs_cosine.png")
        plots.decay_fractions(branches, out / "fig5_decay_fractions.png")
        plots.envelope(ten_percent, envelope, out / "fig6_envelope.png")
    _print(findings, envelope)
    print(f"written: {out}/fit.json")
    tracking.log_outputs([out], output="wsd", sweep="wsd", scale=args.scale)  # on the sweep's MLflow run


def _print(findings: dict, envelope: dict) -> None:
    for f in findings["wsd_vs_cosine"]:
        print(f"{f['tokens']:>12,.0f} tokens: best WSD 10% {f['wsd_loss']:.4f} ({f['wsd']}) vs Cosine(T=S) "
              f"{f['cosine_loss']:.4f}: {f['gap']:+.2%} -> {'reaches' if f['reached'] else 'does not reach'}")
    for f in findings["cosine_periods"]:
        print(f"  {f['kind']:<11} T/S {f['T_over_S']:.2f}: {f['loss']:.4f} ({f['gap']:+.2%} vs T = S)")
    for f in findings["decay_lengths"]:
        gap = f" 2.5% vs 10%: {f['short_gap']:+.2%}" if "short_gap" in f else ""
        print(f"  decay {f['shape']:<7} " + " ".join(f"{k:.1%}: {v:.4f}" for k, v in sorted(f["loss_by_fraction"].items())) + gap)
    for model, fit in envelope.items():
        print(f"envelope {model}: " + (fit.get("skipped") or f"{fit['better']} fits better "
              f"(AIC power {fit['aic']['power']:.1f}, exponential {fit['aic']['exponential']:.1f})"))
    for f in findings["equal_compute"]:
        print(f"equal compute C={f['C']:.3g}: {f['small']} {f['small_loss']:.4f} vs {f['large']} {f['large_loss']:.4f}"
              f" -> the smaller one is {'lower' if f['small_lower'] else 'higher'}")


if __name__ == "__main__":
    sys.exit(studies.run_script(main, __doc__))
