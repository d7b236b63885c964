"""WSD against Cosine(T) (paper §4; Fig. 4 and 5) and the loss envelope (§4.3, Fig. 6) from the wsd sweep.

    python analysis/wsd.py [--scale micro] [--no-plots]

Compares each Cosine(T) baseline's final loss with the WSD decay branches, the final loss against the decay's
length and shape, and fits the series WSD(D, 0.1D) by a power law and by an exponential (AIC decides).
Writes results/wsd/fit.json and the figures beside it.
"""

import sys

from windtunnel import plots, studies

COLUMNS = ["name", "D", "loss", "branch_tokens_per_param", "decay_fraction", "decay_shape"]


def main(args) -> None:
    frame, excluded = studies.final_points("wsd", scale=args.scale, current=not args.all_runs)
    branches = studies.decay_points(frame)
    cosines = frame[frame["schedule"] == "cosine"].sort_values("loss")
    ten_percent = branches[(branches["decay_fraction"] == 0.1) & (branches["decay_shape"] == "exp")]
    envelope = studies.fit_envelope_study(ten_percent)
    out = studies.study_dir("wsd")
    studies.write_json(out / "fit.json", {
        "scale": args.scale, "excluded": excluded, "envelope": envelope,
        "cosine": cosines[["name", "D", "loss"]].to_dict(orient="records"),
        "branches": branches.sort_values(["D", "loss"])[COLUMNS].to_dict(orient="records")})
    if not args.no_plots and not branches.empty:
        shown = {**dict(zip(cosines["run_id"], cosines["name"])),
                 **dict(zip(ten_percent["run_id"], ten_percent["name"])),
                 **dict(zip(frame.loc[frame["stage"] == "stable", "run_id"], frame.loc[frame["stage"] == "stable", "name"]))}
        curves = studies.loss_curves(frame[frame["run_id"].isin(shown)], metric="eval")
        plots.wsd_curves(curves, shown, out / "fig4_wsd_vs_cosine.png")
        plots.decay_fractions(branches, out / "fig5_decay_fractions.png")
        plots.envelope(ten_percent, envelope, out / "fig6_envelope.png")
    for row in cosines.itertuples():
        print(f"{row.name:<48} {row.D:>12,.0f} tokens  loss {row.loss:.4f}")
    best = branches.loc[branches.groupby("branch_tokens_per_param")["loss"].idxmin()] if not branches.empty else branches
    for row in best.itertuples():
        print(f"{row.name:<48} {row.D:>12,.0f} tokens  loss {row.loss:.4f}  (best decay from {row.branch_tokens_per_param:g}N)")
    for model, fit in envelope.items():
        print(f"envelope {model}: " + (fit.get("skipped") or f"{fit['better']} fits better "
              f"(AIC power {fit['aic']['power']:.1f}, exponential {fit['aic']['exponential']:.1f})"))
    print(f"written: {out}/fit.json")


if __name__ == "__main__":
    sys.exit(studies.run_script(main, __doc__))
