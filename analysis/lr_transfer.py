"""LR transfer across widths, µP against SP (paper §3.3, Fig. 3) from the lr sweep.

    python analysis/lr_transfer.py [--scale micro] [--bootstrap 1000] [--no-plots]

Per width, a parabola of the final loss in log LR through the grid's minimum and its neighbours gives the optimal
base LR and its interval; a diverged run is a censored point (the optimum lies below it). The spread of the optima
across widths, with its 95% interval, says whether the LR transfers: under µP within 2x over >= 8x of width, and
clearly more under SP. Writes results/lr/fit.json and fig3_lr_transfer.png.
"""

import sys

from windtunnel import plots, studies, tracking


def main(args) -> None:
    frame, excluded = studies.final_points("lr", scale=args.scale, current=not args.all_runs, diverged=True)
    result = studies.fit_lr_study(frame, bootstrap=args.bootstrap)
    out = studies.study_dir("lr")
    facts = studies.ladder_facts(frame[frame["parametrization"] == "mup"])  # the base the µP optimum transfers in
    studies.write_json(out / "fit.json", {**result, **facts, "scale": args.scale, "excluded": excluded})
    if not args.no_plots:
        plots.lr_transfer(frame, result["optima"], out / "fig3_lr_transfer.png")
    for line in table(result):
        print(line)
    print(f"written: {out}/fit.json" + ("" if args.no_plots else " and fig3_lr_transfer.png"))
    tracking.log_outputs([out], output="lr", sweep="lr", scale=args.scale)  # on the sweep's MLflow run


def table(result: dict) -> list[str]:
    """One line per width with the µP and SP optima side by side, then each spread and the verdict."""
    kinds = [k for k in ("mup", "sp") if k in result["spread"]]
    rows = {}
    for o in result["optima"]:
        rows.setdefault((o.get("width") or 0, o["model"]), {})[o["parametrization"]] = o
    lines = [f"{'width':>5} {'model':<12}" + "".join(f"{kind + ' lr_opt [95%]':<34}" for kind in kinds)]
    for (width, model), by_kind in sorted(rows.items()):
        cells = "".join(f"{_optimum(by_kind.get(kind)):<34}" for kind in kinds)
        lines.append(f"{width:>5g} {model:<12}{cells}" if width else f"{'?':>5} {model:<12}{cells}")
    for kind in kinds:
        lines.append(f"{kind}: {_spread(result['spread'][kind])}")
        regret = result["spread"][kind].get("regret")
        if regret:
            lines.append(f"{kind}: the LR tuned at width {regret['tuned_at_width']:g} ({regret['lr']:g}) costs at most "
                         f"{regret['max']:+.2%} loss at any width (" + ", ".join(
                             f"{w}: {r:+.2%}" for w, r in regret["by_width"].items()) + ")")
    goal = result["goal"]
    verdict = {True: "holds", False: "does not hold", None: "undecided"}[goal["holds"]]
    lines.append(f"goal (µP spread < 2x over >= 8x width, SP clearly more): {verdict} — {goal['why']}")
    return lines


def _optimum(o: dict | None) -> str:
    if o is None:
        return "—"
    low, high = (f"{v:.3g}" if v is not None else "open" for v in (o["low"], o["high"]))
    notes = (["edge"] if o["at_edge"] else []) + ([f"{o['n_censored']} diverged"] if o["n_censored"] else [])
    return f"{o['lr_opt']:.3g} [{low}, {high}]" + (f" ({', '.join(notes)})" if notes else "")


def _spread(s: dict) -> str:
    interval = "no interval" if s["interval"] is None else f"95% [{s['interval'][0]:.2f}, {s['interval'][1]:.2f}]"
    widths = "" if s["widths"] is None else \
        f" over widths {s['widths'][0]:g}–{s['widths'][1]:g} ({s['width_ratio']:.2g}x)"
    open_ = f"; {s['n_open']} width(s) with an open-ended optimum left out" if s["n_open"] else ""
    return f"optima span {s['ratio']:.2f}x, {interval}{widths}{open_}"


if __name__ == "__main__":
    sys.exit(studies.run_script(main, __doc__))
