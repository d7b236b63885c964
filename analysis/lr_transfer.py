"""LR transfer across widths, µP against SP (paper §3.3, Fig. 3) from the lr sweep.

    python analysis/lr_transfer.py [--scale micro] [--bootstrap 1000] [--no-plots]

Per width, a parabola of the final loss in log LR gives the optimal base LR and its interval; the spread of the
optima across widths says whether the LR transfers. Writes results/lr/fit.json and fig3_lr_transfer.png.
"""

import sys

from windtunnel import plots, studies


def main(args) -> None:
    frame, excluded = studies.final_points("lr", scale=args.scale, current=not args.all_runs)
    result = studies.fit_lr_study(frame, bootstrap=args.bootstrap)
    out = studies.study_dir("lr")
    facts = studies.ladder_facts(frame[frame["parametrization"] == "mup"])  # the base the µP optimum transfers in
    studies.write_json(out / "fit.json", {**result, **facts, "scale": args.scale, "excluded": excluded})
    if not args.no_plots:
        plots.lr_transfer(frame, result["optima"], out / "fig3_lr_transfer.png")
    for o in result["optima"]:
        edge = "  (at the edge of the grid)" if o["at_edge"] else ""
        interval = "no interval" if o["low"] is None else f"[{o['low']:.3g}, {o['high']:.3g}]"
        print(f"{o['parametrization']:>4} {o['model']:<12} lr_opt {o['lr_opt']:.4g} {interval}{edge}")
    for kind, spread in result["spread"].items():
        print(f"{kind}: optima span {spread['ratio']:.2f}x across widths")
    print(f"written: {out}/fit.json" + ("" if args.no_plots else " and fig3_lr_transfer.png"))


if __name__ == "__main__":
    sys.exit(studies.run_script(main, __doc__))
