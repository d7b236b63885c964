"""The decay studies: WSD against Cosine(T) and the loss envelope (§4, Fig. 4–6), what changes during a decay
(§4.4, Fig. 7–8) and decays on other data (§6), each stated on the stored runs with the numbers.

WSD (sweeps/wsd.yaml) states the paper's findings:
  * WSD with a 10% decay reaches Cosine(T = S) at the same tokens (each Cosine(T = S) against the 10% branches
    that end where it ends);
  * Cosine with T ≠ S (and CosineLoop) ends above Cosine(T = S) at the same S;
  * a 2.5% decay falls short of a 10% one, per decay shape, from the last branch point;
  * the envelope WSD(D, 0.1D) is a power law rather than an exponential (AIC);
  * Fig. 6: a smaller model trained longer against a larger one at equal compute, on the scaling-law ladder's
    WSD(D, 0.1D) points (read when that sweep ran at this scale).
Every comparison is between runs of one seed with one data order, so differences are not seed noise between
initialisations; the gap that counts as "reached" is TIE (relative).

Decay dynamics: the trainer logs, every step, the directional derivatives along the trajectory
D1 = g(t+1)·v(t)/‖v(t)‖ and D2 = (g(t+1) − g(t))·v(t)/‖v(t)‖² (v the parameter update, g the gradient), the
curvature K = |D2|/(1 + D1²)^1.5, the gradient norm, the cosine between consecutive gradients and the max |Δw| of
each weight matrix. For each 10%-exp decay branch of the wsd sweep (or of the scaling_law sweep when the wsd sweep
has not run at that scale), the stable stretch just before the fork (one decay-length of the parent) is compared
with the decay's last fifth, as medians (single steps are minibatch noise).

Decay data: each mixture branch of the decay_data sweep against the plain branch forked from the same stable run
at the same point, per held-out set: the change of its final loss (bits per byte; negative = the mixture helped),
by size and on average over pairs.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd

from windtunnel import plots
from windtunnel.studies.laws import fit_envelope_study, with_compute
from windtunnel.studies.points import NoRuns, decay_points, final_points, loss_curves
from windtunnel.studies.study import Fitted, Options

__all__ = ["wsd", "describe_wsd", "dynamics_points", "decay_dynamics", "describe_decay_dynamics", "decay_data",
           "describe_decay_data"]

# ---------------------------------------------------------------- WSD against Cosine(T) (§4)

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
    larger one's compute (interpolated in log C, inside its own range) minus the larger one's; `points` has C."""
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
        frame, _ = final_points("scaling_law", scale=scale, current=current)
    except NoRuns:
        return pd.DataFrame()
    branches = decay_points(frame)
    return branches[(branches["decay_fraction"] == 0.1) & (branches["decay_shape"] == "exp")
                    & (branches["decay_data"] == "")]


def wsd(frame: pd.DataFrame, o: Options) -> Fitted:
    """Every finding above on the wsd sweep's runs (and the scaling-law ladder's envelopes at the same scale)."""
    branches = decay_points(frame)
    cosines = frame[frame["schedule"].isin(["cosine", "cosine_loop"])].sort_values(["D", "period_tokens"])
    ten_percent = with_compute(branches[(branches["decay_fraction"] == 0.1) & (branches["decay_shape"] == "exp")],
                               o.flops)
    envelope = fit_envelope_study(ten_percent)
    ladder = _ladder_envelopes(o.scale, o.current)
    ladder = with_compute(ladder, o.flops) if len(ladder) else ladder
    findings = {"wsd_vs_cosine": wsd_vs_cosine(cosines, branches), "cosine_periods": cosine_periods(cosines),
                "decay_lengths": decay_lengths(branches), "equal_compute": equal_compute(ladder) if len(ladder) else []}
    result = {"envelope": envelope, "tie": TIE, **findings,
              "cosine": cosines[["name", "D", "period_tokens", "loss"]].to_dict(orient="records"),
              "branches": branches.sort_values(["D", "loss"])[COLUMNS].to_dict(orient="records")}
    if branches.empty:
        return Fitted(result)
    return Fitted(result, {"fig4_wsd_vs_cosine.png": lambda path: _wsd_curves(frame, cosines, ten_percent, path),
                           "fig5_decay_fractions.png": lambda path: plots.decay_fractions(branches, path),
                           "fig6_envelope.png": lambda path: plots.envelope(ten_percent, envelope, path)})


def _wsd_curves(frame: pd.DataFrame, cosines: pd.DataFrame, ten_percent: pd.DataFrame, path) -> Path:
    """Fig. 4: the held-out loss against tokens of each Cosine(T), each 10% WSD branch and the stable run."""
    shown = {**{r.run_id: _cosine_label(r) for r in cosines.itertuples()},
             **{r.run_id: f"WSD {r.branch_tokens_per_param:g}N + 10% exp" for r in ten_percent.itertuples()},
             **{r.run_id: "stable (constant LR)" for r in frame[frame["stage"] == "stable"].itertuples()}}
    return plots.wsd_curves(loss_curves(frame[frame["run_id"].isin(shown)], metric="eval"), shown, path)


def describe_wsd(result: dict) -> list[str]:
    """Each finding as a line, with its numbers."""
    lines, findings, envelope = [], result, result["envelope"]
    for f in findings["wsd_vs_cosine"]:
        lines.append(f"{f['tokens']:>12,.0f} tokens: best WSD 10% {f['wsd_loss']:.4f} ({f['wsd']}) vs Cosine(T=S) "
                     f"{f['cosine_loss']:.4f}: {f['gap']:+.2%} -> {'reaches' if f['reached'] else 'does not reach'}")
    for f in findings["cosine_periods"]:
        lines.append(f"  {f['kind']:<11} T/S {f['T_over_S']:.2f}: {f['loss']:.4f} ({f['gap']:+.2%} vs T = S)")
    for f in findings["decay_lengths"]:
        gap = f" 2.5% vs 10%: {f['short_gap']:+.2%}" if "short_gap" in f else ""
        lines.append(f"  decay {f['shape']:<7} " + " ".join(f"{k:.1%}: {v:.4f}" for k, v in sorted(f["loss_by_fraction"].items())) + gap)
    for model, fit in envelope.items():
        lines.append(f"envelope {model}: " + (fit.get("skipped") or f"{fit['better']} fits better "
                     f"(AIC power {fit['aic']['power']:.1f}, exponential {fit['aic']['exponential']:.1f})"))
    for f in findings["equal_compute"]:
        lines.append(f"equal compute C={f['C']:.3g}: {f['small']} {f['small_loss']:.4f} vs {f['large']} {f['large_loss']:.4f}"
                     f" -> the smaller one is {'lower' if f['small_lower'] else 'higher'}")
    return lines


# ---------------------------------------------------------------- decay dynamics (§4.4)


LEAD = 1.0  # the parent's stable stretch shown before each decay, in units of the decay's length
END = 0.2  # the decay's last fifth is compared with the stretch before it
MIN_POINTS = 9  # fewer logged steps than this and the medians are noise: the branch is skipped
QUANTITIES = {"grad/norm": "grad_norm", "grad/cos_prev": "grad_cos", "grad/D1": "D1", "grad/D2": "D2",
              "grad/curvature": "K", "update/max_abs": "max_update"}


def dynamics_points(sweep: str, o: Options) -> tuple[pd.DataFrame, dict[str, int]]:
    """The 10%-exp decay branches of `sweep` (the scaling_law sweep's when it has not run at this scale) and their
    stable parents; the column `sweep` says which was read."""
    try:
        frame, excluded = final_points(sweep, scale=o.scale, current=o.current)
    except NoRuns:
        sweep = "scaling_law"
        frame, excluded = final_points(sweep, scale=o.scale, current=o.current)
    branches = decay_points(frame)
    branches = branches[(branches["decay_fraction"] == 0.1) & (branches["decay_shape"] == "exp")].sort_values(["N", "D"])
    return pd.concat([branches, frame[frame["stage"] == "stable"]]).assign(sweep=sweep), excluded


def _curve(branch, curves, stable):
    """The branch's own steps, led by the stable run's last LEAD·(decay length) steps before the fork."""
    own = curves[curves["run_id"] == branch.run_id]
    decay_steps = len(own)
    parent = stable[stable["run"] == branch.parent]
    lead = curves[curves["run_id"].isin(parent["run_id"]) & (curves["step"] <= branch.fork_step)
                  & (curves["step"] > branch.fork_step - LEAD * decay_steps)]
    return pd.concat([lead, own], ignore_index=True).sort_values("step")


def _before_and_end(curve: pd.DataFrame, fork_step: int) -> tuple[pd.DataFrame, pd.DataFrame]:
    before = curve[curve["step"] <= fork_step]
    decay = curve[curve["step"] > fork_step]
    return before, decay[decay["step"] > decay["step"].max() - END * len(decay)]


def summarize(curve: pd.DataFrame, fork_step: int) -> dict:
    """Medians before the decay and at its end of every logged quantity, and each matrix's update ratio."""
    before, end = _before_and_end(curve, fork_step)
    out = {"loss_before": float(before["loss"].median()), "loss_end": float(end["loss"].median())}
    for key, name in QUANTITIES.items():
        if key in curve and curve[key].notna().any():
            out[f"{name}_before"], out[f"{name}_end"] = float(before[key].median()), float(end[key].median())
    matrices = [k for k in curve if k.startswith("update/max_abs/")]  # logged at evaluations only
    ratios = {k.removeprefix("update/max_abs/"): float(end[k].median() / before[k].median()) for k in matrices
              if before[k].median() > 0 and end[k].notna().any()}
    if ratios:
        out["max_update_ratio_by_matrix"] = ratios
    return out


def decay_dynamics(frame: pd.DataFrame, o: Options) -> Fitted:
    """Per decay branch, the medians of every logged quantity before the decay and at its end."""
    branches, stable = frame[frame["stage"] == "decay"], frame[frame["stage"] == "stable"]
    curves = loss_curves(frame, metric="train")
    shown, summary, skipped = {}, [], []
    for row in branches.itertuples():
        curve = _curve(row, curves, stable)
        if len(curve) < MIN_POINTS or not (curve["step"] <= row.fork_step).any():
            skipped.append(row.name)
            continue
        shown[row.name] = (curve, int(row.fork_step))
        summary.append({"name": row.name, "fork_step": int(row.fork_step), **summarize(curve, row.fork_step)})
    missing = [s["name"] for s in summary if "D1_before" not in s]
    result = {"sweep": frame["sweep"].iloc[0], "lead": LEAD, "end": END, "skipped_short": skipped,
              "without_D1": missing, "branches": summary}
    return Fitted(result, {"decay_dynamics.png": lambda path: plots.decay_dynamics(shown, path)} if shown else {})


def describe_decay_dynamics(result: dict) -> list[str]:
    """Per branch: loss, gradient norm, D1, K, gradient alignment and max |Δw|, before the decay → at its end."""
    lines = []
    for s in result["branches"]:
        line = (f"{s['name']:<30} loss {s['loss_before']:.3f} → {s['loss_end']:.3f}; "
                f"grad norm {s.get('grad_norm_before', np.nan):.3g} → {s.get('grad_norm_end', np.nan):.3g}")
        if "D1_before" in s:
            line += (f"; D1 {s['D1_before']:.3g} → {s['D1_end']:.3g}; K {s['K_before']:.3g} → {s['K_end']:.3g}; "
                     f"cos(g, g_prev) {s['grad_cos_before']:.2f} → {s['grad_cos_end']:.2f}")
        if "max_update_ratio_by_matrix" in s:
            ratios = list(s["max_update_ratio_by_matrix"].values())
            line += f"; max |Δw| per matrix × {min(ratios):.2g}…{max(ratios):.2g}"
        lines.append(line)
    missing, skipped = result["without_D1"], result["skipped_short"]
    if missing:
        lines.append(f"{len(missing)} branches were trained before D1/D2 were logged (no D1, D2, K): {', '.join(missing[:3])}…")
    if skipped:
        lines.append(f"skipped {len(skipped)} branches with fewer than {MIN_POINTS} logged steps: {', '.join(skipped)}")
    lines.append(f"(read from the {result['sweep']} sweep)")
    return lines


# ---------------------------------------------------------------- decays on other data (§6)


KEYS = ["parent", "branch_tokens", "decay_fraction", "decay_shape"]  # a mixture branch and its plain twin share these


def decay_data(branches: pd.DataFrame, o: Options) -> Fitted:
    """Per pair of a mixture decay and the plain decay from one stable run and point, each held-out set's change."""
    sets = sorted(c for c in branches if c.startswith("bpb_"))
    plain = branches[branches["decay_data"] == ""].set_index(KEYS)
    pairs = []
    for row in branches[branches["decay_data"] != ""].itertuples():
        key = tuple(getattr(row, k) for k in KEYS)
        if key not in plain.index:
            continue
        base = plain.loc[key]
        pairs.append({"model": row.model, "seed": row.seed, "D": row.D, "mixture": row.decay_data,
                      **{s[4:]: getattr(row, s) - base[s] for s in sets},
                      **{f"{s[4:]}_relative": getattr(row, s) / base[s] - 1 for s in sets}})
    if not pairs:
        raise NoRuns("no pair of a plain and a mixture decay from one stable run and point; "
                     "run `windtunnel sweep sweeps/decay_data.yaml` first")
    overall = pd.DataFrame(pairs)[[f"{s[4:]}_relative" for s in sets]].agg(["mean", "std"])
    return Fitted({"pairs": pairs, "mean_relative_change": overall.loc["mean"].to_dict(),
                   "sd_relative_change": overall.loc["std"].to_dict()})


def describe_decay_data(result: dict) -> list[str]:
    """The relative change per held-out set, by model and mixture and over all pairs."""
    table = pd.DataFrame(result["pairs"])
    names = list(result["mean_relative_change"])
    lines = [f"{'model':<12}{'mixture':<26}" + "".join(f"{n.removesuffix('_relative'):>12}" for n in names)]
    for (model, mixture), row in table.groupby(["model", "mixture"])[names].mean().iterrows():
        lines.append(f"{model:<12}{mixture:<26}" + "".join(f"{row[n]:>+12.2%}" for n in names))
    lines.append(f"{'all':<12}{f'mean of {len(table)} pairs':<26}"
                 + "".join(f"{result['mean_relative_change'][n]:>+12.2%}" for n in names))
    lines.append("(final loss of the mixture decay / the plain decay − 1, per held-out set: negative = the mixture helped)")
    return lines
