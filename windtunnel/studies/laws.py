"""The laws of the paper's studies from their tables of runs: L(N, D) (§5), the batch-size law (§3.2), LR transfer
(§3.3) and the loss envelope (§4.3), each with what a terminal shows of it; windtunnel.fit does the maths.

    law = fit_scaling_law_study(decay_points(frame), bootstrap=1000)     # frame from points.final_points
"""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from windtunnel import plots
from windtunnel.counts import DEFAULT_FLOPS
from windtunnel.errors import WindtunnelError
from windtunnel.studies.points import TRANSITION_RATE, copy_gap_ladder, ladder_facts, loss_curves
from windtunnel.studies.study import BUDGETS, Fitted, Options

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["fit_scaling_law_study", "fit_batch_size_study", "fit_lr_study", "fit_envelope_study", "per_set_laws",
           "describe_scaling_law", "describe_batch_size", "describe_lr", "scaling_law", "batch_size", "lr_transfer",
           "with_compute", "N_KINDS", "N_NAMES", "FORM_NAMES"]

N_KINDS = {"total": "N_total", "non_embedding": "N"}
# the fit's N: every parameter (the tied embedding included) or, as in the paper, all but the embedding
DEFAULT_N_KIND = "total"  # backtests better on the micro ladder, where the embedding is 0.2–1.4× the rest (LOG.md)
N_NAMES = {"total": "N with the tied embedding", "non_embedding": "non-embedding N"}
FORM_NAMES = {"chinchilla": "C_N·N^-α + C_D·D^-β + L0", "kaplan": "((N_c/N)^(α_N/α_D) + D_c/D)^α_D + L0"}


def fit_scaling_law_study(points: pd.DataFrame, *, bootstrap: int, n_kind: str = DEFAULT_N_KIND,
                          form: str | None = None, budgets=BUDGETS, seed: int = 0, flops: str = DEFAULT_FLOPS) -> dict:
    """§5: L(N,D) in every form and convention of N (Huber/L-BFGS, bootstrap over whole groups: a stable run and
    its decay branches share one seed and trajectory), calibrated for extrapolation (windtunnel.predict).

    The top level is the paper's form in the `n_kind` convention, with the paper's curve_fit beside it. `ladder` is
    every candidate with its directional backtests and misspecification sd: the plan's predicted loss and interval
    pool the candidates its backtests do not reject. The law that gives the compute-optimal allocation (C = f(N)·D in
    the FLOP count `flops`, `points`' column C) — `prediction` — is `form`, or by default the kept candidate in
    `n_kind` whose directional backtests erred least; its `backtests` are the ladder's rolling backtests with the
    intervals it would have given. Every convention of N whose column `points` has is a candidate (a CSV gives one)."""
    from windtunnel import fit, predict

    kinds = {k: col for k, col in N_KINDS.items() if col in points}
    if n_kind not in kinds or form not in (None, *fit.FORMS):
        raise WindtunnelError(f"form={form!r}, n_kind={n_kind!r} are not allowed; forms: {', '.join(fit.FORMS)}; "
                              f"N: {', '.join(N_KINDS)}")
    order = [n_kind] + [k for k in kinds if k != n_kind]    # the study's convention first: ratios are stated in it
    Ns = {k: points[kinds[k]].to_numpy(float) for k in order}
    d, loss, groups = points["D"].to_numpy(float), points["loss"].to_numpy(float), _groups(points)
    ladder, tests = predict.fit_and_backtest(Ns, d, loss, groups=groups, bootstrap=bootstrap, seed=seed)
    per_token = fit.PerToken.of_ladder(flops, points[kinds[n_kind]], points["C"] / points["D"])
    chosen, why = _prediction_form(ladder, n_kind, form)
    law = next(c.law for c in ladder.candidates if (c.form, c.n_kind) == (chosen, n_kind))
    paper = next(c.law for c in ladder.candidates if (c.form, c.n_kind) == ("chinchilla", n_kind))
    # the paper's fit beside ours: its point values only (nothing shows an interval of it; 200 scipy refits took
    # half of the demo's scaling-law fit)
    lsq = fit.fit_scaling_law(Ns[n_kind], d, loss, method="curve_fit", bootstrap=0, groups=groups)
    return {**paper.to_dict(samples=True), "n_kind": n_kind, "curve_fit": lsq.to_dict(), "n_max": float(Ns[n_kind].max()),
            "prediction": {**law.to_dict(samples=True), "n_kind": n_kind, "why": why,
                           "backtests": [b.to_dict() for b in tests]},
            "ladder": ladder.to_dict(),
            "flops": per_token.to_dict(),
            "compute_optimal": _allocation(fit.compute_optimal(law, list(budgets), per_token), ladder, n_kind),
            "candidates": [_candidate_summary(c, tests) for c in ladder.candidates],
            "per_set": {**per_set_laws(points, n_col=kinds[n_kind], bootstrap=min(bootstrap, PER_SET_BOOTSTRAP),
                                       seed=seed), "averaged_loss": _exponents(paper)},
            "n_models": int(points["model"].nunique()) if "model" in points else int(np.unique(d).size)}


def _allocation(table: pd.DataFrame, ladder, n_kind: str) -> list[dict]:
    """The compute-optimal rows, each with its extrapolation ratios over the ladder and the guardrails it passes
    (`beyond`: the directions past their limit, where the row is the law's shape, not a calibrated prediction)."""
    from windtunnel import predict

    rows = table.to_dict(orient="records")
    for r in rows:
        ratios = predict.extrapolation(r["N_opt_numeric"], r["D_opt_numeric"], ladder.extent[n_kind])
        r["extrapolation"] = {k: float(v) for k, v in ratios.items()}
        r["beyond"] = [k for k in predict.DIRECTIONS if ratios[k] > ladder.limits[k]]
    return rows


def _beyond(row: dict) -> str:
    """' — beyond the guardrails (…)' for an allocation row past the calibrated extrapolation, else ''."""
    if not row.get("beyond"):
        return ""
    ratios = ", ".join(f"{k.upper()} {row['extrapolation'][k]:.3g}×" for k in row["beyond"])
    return f"  beyond the guardrails ({ratios} the ladder's largest): the law's shape, not a calibrated prediction"


def _candidate_summary(candidate, tests) -> dict:
    """A candidate law as the report lists it: its parameters, misspecification sd, whether its directional
    backtests reject it, their rms log error, and its mean |error| in each rolling backtest."""
    rms = [float(np.sqrt(np.mean(np.square(b["errors"])))) for b in candidate.backtests]
    return {**candidate.law.to_dict(), "n_kind": candidate.n_kind, "own_sd": candidate.to_dict()["own_sd"],
            "rejected": candidate.rejected, "directional_rms": float(np.mean(rms)) if rms else None,
            "backtests": [{"held_out_N": t.held_out_N, "n_sizes": t.n_sizes,
                           "mean_abs_rel_err": t.by_candidate[candidate.name]} for t in tests]}


def _exponents(law) -> dict:
    return {"alpha": law.alpha, "beta": law.beta,
            "intervals": {k: list(law.intervals[k]) for k in ("alpha", "beta") if k in law.intervals}}


PER_SET_BOOTSTRAP = 200  # resamples behind each held-out set's intervals: a rough interval, at a fifth of the cost


def per_set_laws(points: pd.DataFrame, *, n_col: str, bootstrap: int = 0, seed: int = 0) -> dict:
    """§5 as the paper did (Fig. 10/17): the paper's form fitted to each held-out set's final bits per byte (the
    `bpb_<set>` columns) on its own, and the mean of the per-set exponents: sets of different difficulty (code,
    prose) can follow different exponents, which the fit of the averaged loss blends. A set too few runs evaluated
    is named with the reason instead of a fit."""
    from windtunnel import fit

    sets, out = sorted(c.removeprefix("bpb_") for c in points if c.startswith("bpb_")), {}
    for name in sets:
        rows = points[np.isfinite(points[f"bpb_{name}"].to_numpy(float))]
        try:
            out[name] = fit.fit_scaling_law(*(rows[c].to_numpy(float) for c in (n_col, "D", f"bpb_{name}")),
                                            bootstrap=bootstrap, seed=seed, groups=_groups(rows)).to_dict()
        except fit.FitError as err:
            out[name] = {"skipped": str(err)}
    fitted = [law for law in out.values() if "skipped" not in law]
    mean = {k: float(np.mean([law[k] for law in fitted])) for k in ("alpha", "beta")} if fitted else {}
    return {"form": "chinchilla", "n_col": n_col, "n_bootstrap": bootstrap, "sets": out, "mean": mean}


def _prediction_form(ladder, n_kind: str, form: str | None) -> tuple[str, str]:
    """The form that gives the allocation, and why: the one asked for, or the kept candidate in `n_kind` whose
    directional backtests erred least (the paper's form when none could be backtested)."""
    if form is not None:
        return form, "chosen (--form)"
    rms = {c.form: np.mean([np.mean(np.square(b["errors"])) for b in c.backtests]) for c in ladder.kept
           if c.n_kind == n_kind and c.backtests}
    if not rms:
        return "chinchilla", "the paper's form: too few sizes to backtest another"
    best = min(rms, key=rms.get)
    return best, ("lower directional-backtest error: " + ", ".join(f"{f} rms {np.sqrt(v):.2%}" for f, v in
                                                                   sorted(rms.items(), key=lambda kv: kv[1])))


def describe_scaling_law(law: dict) -> list[str]:
    """The scaling-law fit.json as lines for a terminal: the paper's law and the predicting law with their intervals,
    what is not identified, every candidate with its backtests, and the rolling backtests of the predicting law."""
    from windtunnel.fit import PerToken

    lines = [f"paper's form: {_law_line(law)}", f"  by curve_fit (as the paper): alpha {law['curve_fit']['alpha']:.3f}, "
             f"beta {law['curve_fit']['beta']:.3f}"]
    lines += _per_set_lines(law.get("per_set") or {})
    lines += _copy_gap_lines(law.get("copy_gap") or {})
    pred = law["prediction"]
    lines.append(f"predicts ({pred['why']}): {_law_line(pred)}")
    lines += [f"  {k} not identified: {why}" for k, why in pred.get("not_identified", {}).items()]
    ladder = law["ladder"]
    lines.append(f"  intervals: every kept candidate pooled, each widened by s·ρ beyond the ladder (s ≥ the floor "
                 f"{ladder['floor']:.2%} per e-fold; limits N {ladder['limits']['n']:g}×, D {ladder['limits']['d']:g}×, "
                 f"C {ladder['limits']['c']:g}×)" + (f"; {ladder['n_dropped']} runs with D < N left out"
                                                    if ladder["n_dropped"] else ""))
    for c in law["candidates"]:
        tests = c["backtests"]
        rolling = (f"rolling backtests mean |error| {np.mean([t['mean_abs_rel_err'] for t in tests]):.2%}"
                   if tests else "no rolling backtest (≤ 3 sizes)")
        own = "—" if c["own_sd"] is None else f"{c['own_sd']:.2%}"
        directional = "—" if c["directional_rms"] is None else f"{c['directional_rms']:.2%}"
        used = (c["form"], c["n_kind"]) == (pred["form"], pred["n_kind"])
        lines.append(f"  {c['form']:<10} {N_NAMES[c['n_kind']]:<26} directional rms {directional}, s {own}/e-fold, "
                     f"{rolling}" + (f"  REJECTED: {c['rejected']}" if c["rejected"] else "")
                     + ("  <- allocation" if used else ""))
    for t in pred["backtests"]:
        cover = "no interval" if t["coverage"] is None else f"{sum(t['covered'])}/{t['n_test']} inside the 95% interval"
        lines.append(f"  backtest: fit the {t['n_sizes']} smallest sizes, predict N={t['held_out_N']:,.0f}: mean error "
                     f"{t['mean_rel_err']:+.2%}, mean |error| {t['mean_abs_rel_err']:.2%}, {cover}")
    per_token = PerToken.from_dict(law.get("flops"))
    lines.append(f"compute-optimal allocation, FLOPs {per_token.describe()}:")
    lines += [f"  C {r['C']:.3g}: N_opt {r['N_opt_numeric']:.4g}, D_opt {r['D_opt_numeric']:.4g} (D/N {r['ratio_numeric']:.3g})"
              + _beyond(r) for r in law["compute_optimal"]]
    return lines


def _per_set_lines(per_set: dict) -> list[str]:
    """Each held-out set's exponents with their intervals, their mean, and the fit of the averaged loss beside them."""
    if not per_set.get("sets"):
        return []

    def exponents(law: dict) -> str:
        iv = law.get("intervals", {})
        return "  ".join(f"{k} {law[k]:.3f}" + (f" [{iv[k][0]:.3f}, {iv[k][1]:.3f}]" if k in iv else "")
                         for k in ("alpha", "beta"))

    lines = ["  per held-out set (as the paper, Fig. 10/17):"]
    lines += [f"    {name:<13} " + (law["skipped"] if "skipped" in law else exponents(law) + "".join(
        f"  ({k} not identified)" for k in law.get("not_identified", {}))) for name, law in per_set["sets"].items()]
    if per_set.get("mean"):
        lines.append(f"    {'mean of sets':<13} {exponents(per_set['mean'])}")
    lines.append(f"    {'averaged loss':<13} {exponents(per_set['averaged_loss'])}")
    return lines


def _copy_gap_lines(copy_gap: dict) -> list[str]:
    """How many branch points were mid-transition (left out of the fits), which, and how many had no copy gap."""
    points = copy_gap.get("branch_points") or []
    if not points:
        return []
    mid = [p for p in points if p["mid_transition"]]
    unread = sum(p["copy_gap_rate"] is None for p in points)
    named = [f"{p['model']}" + ("" if p["seed"] is None else f" seed {p['seed']:g}")
             + f" at {p['fork_tokens']:,.0f} tokens ({p['copy_gap_rate']:.2f})" for p in mid]
    return [f"copy gap: {len(mid)} of {len(points)} branch points mid-transition (rising > {copy_gap['threshold']:g} "
            "nats per e-fold before the fork: left out of the fits)" + "".join(f"; {n}" for n in named)
            + (f"; {unread} without copy-gap history or too early to tell" if unread else "")]


def _law_line(law: dict) -> str:
    from windtunnel.fit import FORMS

    iv, missing = law.get("intervals", {}), law.get("not_identified", {})
    params = "  ".join(f"{k} {law[k]:.4g}" + (f" [{iv[k][0]:.3g}, {iv[k][1]:.3g}]" if k in iv else "")
                       if k not in missing else f"{k} not identified" for k in FORMS[law["form"]].params)
    return (f"L(N,D) = {FORM_NAMES[law['form']]}, N = {N_NAMES[law['n_kind']]} ({law['n_points']} points, "
            f"{law['n_groups']} stable runs): {params}")


def _groups(points: pd.DataFrame):
    return points["group"].to_numpy() if "group" in points else None


def fit_batch_size_study(curves: pd.DataFrame, *, bootstrap: int, seed: int = 0) -> dict:
    """§3.2: tokens to reach each loss against batch size, its optima, and bs_opt = k / L^γ."""
    from windtunnel import fit

    return fit.fit_batch_size_law(curves, bootstrap=bootstrap, seed=seed).to_dict(samples=True)


def fit_lr_study(points: pd.DataFrame, *, bootstrap: int, seed: int = 0) -> dict:
    """§3.3: optimal LR per width (d_model) under µP and SP, the spread of the optima with its interval, and whether
    the LR transfers. Diverged runs in `points` (`final_points(..., diverged=True)`) are censored points."""
    from windtunnel import fit

    if "width" not in points and "d_model" in points and points["d_model"].notna().all():  # older runs lack it
        points = points.assign(width=points["d_model"])
    return fit.fit_lr_transfer(points, bootstrap=bootstrap, seed=seed).to_dict()


def fit_envelope_study(points: pd.DataFrame) -> dict:
    """§4.3: per model, the series WSD(D, 0.1D) fit by a power law and by an exponential in compute (`points`' column
    C: the FLOP count of the scaling law's compute-optimal allocation and the plan's cost)."""
    from windtunnel import fit

    out = {}
    for model, group in points.groupby("model"):
        if len(group) < 4:  # three parameters per form: a fit needs one point to spare
            out[model] = {"skipped": f"{len(group)} points; the envelope needs at least 4"}
            continue
        out[model] = fit.fit_envelope(group["C"].to_numpy(float), group["loss"].to_numpy(float)).to_dict()
    return out


# ---------------------------------------------------------------- the studies of these laws (windtunnel.studies.STUDIES)


SCALING_COLUMNS = ["model", "N", "N_total", "D", "C", "loss", "seed", "group", "name", "copy_gap_rate"]
# fit.json's table of points (copy_gap_rate: nats per e-fold before the fork, points.transition_rate)


def with_compute(points: pd.DataFrame, flops: str, n_kind: str = DEFAULT_N_KIND) -> pd.DataFrame:
    """`points` with each run's training FLOPs C in the count `flops` (windtunnel.fit.FLOP_COUNTS): "6nd" 6·N·D with
    N of `n_kind`, "full" the trainer's count D·(6·N_total + 12·L·d·T), which needs each run's layers, width and
    context (a stored sweep has them; a CSV does not)."""
    d = points["D"].to_numpy(float)
    if flops == "6nd":
        return points.assign(C=6 * points[N_KINDS[n_kind]].to_numpy(float) * d)
    missing = [c for c in ("N_total", "n_layers", "d_model", "seq_len") if c not in points or points[c].isna().any()]
    if missing:
        raise WindtunnelError(f"--flops full counts attention from each run's layers, width and context; these runs "
                              f"lack {', '.join(missing)} — use --flops 6nd")
    return points.assign(C=_trainer_flops_per_token(points).to_numpy(float) * d)


def _trainer_flops_per_token(points: pd.DataFrame) -> pd.Series:
    """Each run's training FLOPs a token as the trainer counts them (counts.flops_per_token from the stored shape):
    6·N_total + 12·L·d·T."""
    return 6 * points["N_total"] + 12 * points["n_layers"] * points["d_model"] * points["seq_len"]


def ladder_cost(points: pd.DataFrame) -> dict | None:
    """What the ladder's training cost, from its decay branches: each stable run trained to its last fork, each
    branch its own tokens past its fork, at the trainer's FLOPs a token (6·N_total + 12·L·d·T), and the GPU-hours
    of that at counts.DEFAULT_MFU of an H100's bf16 peak (an estimate). None without the runs' shapes (a CSV)."""
    from windtunnel.counts import gpu_hours

    need = ("N_total", "n_layers", "d_model", "seq_len", "fork_step", "batch_tokens", "group")
    if any(c not in points or points[c].isna().any() for c in need):
        return None
    per_token = _trainer_flops_per_token(points)
    fork = points["fork_step"] * points["batch_tokens"]
    stable = (fork * per_token).groupby(points["group"]).max().sum()   # one stable run per group, to its last fork
    flops = float(stable + ((points["D"] - fork) * per_token).sum())
    return {"flops": flops, "gpu_hours": gpu_hours(flops), "stable_runs": int(points["group"].nunique()),
            "branches": len(points)}


def scaling_law(points: pd.DataFrame, o: Options) -> Fitted:
    """§5 and §4.3 on the decay branches: the law in every form and convention of N, and each size's envelope."""
    points = with_compute(points, o.flops, o.n_kind)
    law = fit_scaling_law_study(points, bootstrap=o.bootstrap, n_kind=o.n_kind, form=o.form, budgets=o.budgets,
                                flops=o.flops)
    envelope = fit_envelope_study(points)
    curves, branch_points = copy_gap_ladder("scaling_law", scale=o.scale, current=o.current)
    result = {**law, **ladder_facts(points), "envelope": envelope, "ladder_cost": ladder_cost(points),
              "points": _records(points[SCALING_COLUMNS]),
              "copy_gap": {"threshold": TRANSITION_RATE, "branch_points": _records(branch_points)}}
    shown = points.assign(N=points[N_KINDS[law["n_kind"]]])  # the figures' N: the predicting law's convention
    return Fitted(result, {"fig10_iso_loss.png": lambda path: plots.iso_loss(law["prediction"], shown, law["flops"],
                                                                             path),
                           "copy_gap.png": lambda path: plots.copy_gap(curves, branch_points, TRANSITION_RATE, path),
                           "fig17_loss_vs_tokens.png": lambda path: plots.loss_vs_tokens([law, law["prediction"]],
                                                                                         shown, path),
                           "fig6_envelope.png": lambda path: plots.envelope(shown, envelope, path),
                           "backtests.png": lambda path: plots.backtests(law["prediction"], shown, path)})


def _records(table: pd.DataFrame) -> list[dict]:
    """A table as fit.json's list of rows, a missing number (a run without copy-gap history) as null."""
    return table.astype(object).where(table.notna(), None).to_dict(orient="records")


def batch_size(frame: pd.DataFrame, o: Options) -> Fitted:
    """§3.2 from every run's held-out loss curve: tokens to reach each loss against batch size, its optima, the law."""
    import pandas as pd

    law = fit_batch_size_study(loss_curves(frame, metric="eval"), bootstrap=o.bootstrap)
    optima = pd.DataFrame(law["optima"])
    return Fitted({**law, **ladder_facts(frame)},
                  {"fig1_tokens_vs_batch.png": lambda path: plots.batch_size_curves(pd.DataFrame(law["reach"]),
                                                                                    optima, path),
                   "fig2_batch_size_law.png": lambda path: plots.batch_size_law(optima, law, path)})


def lr_transfer(frame: pd.DataFrame, o: Options) -> Fitted:
    """§3.3: each width's optimal LR under µP and SP (diverged runs censored) and the spread across widths."""
    result = fit_lr_study(frame, bootstrap=o.bootstrap)
    facts = ladder_facts(frame[frame["parametrization"] == "mup"])  # the base the µP optimum transfers in
    return Fitted({**result, **facts},
                  {"fig3_lr_transfer.png": lambda path: plots.lr_transfer(frame, result["optima"], path)})


def describe_batch_size(law: dict) -> list[str]:
    low, high = law["intervals"].get("gamma", (float("nan"),) * 2)
    n_models = len({o["model"] for o in law["optima"]})
    lines = [f"bs_opt = {law['k']:.4g} / L^{law['gamma']:.3f} tokens (gamma 95% [{low:.3f}, {high:.3f}], bootstrap "
             f"over the {n_models} models; {len(law['optima'])} optima)"]
    if law["n_skipped"]:
        lines.append(f"left out {law['n_skipped']} (model, loss) parabolas: {law['n_outside']} with the optimum outside "
                     f"the sampled batch sizes (not extrapolated: add batch sizes beyond them), {law['n_concave']} "
                     "opening downward (no minimum)")
    return lines


def describe_lr(result: dict) -> list[str]:
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
