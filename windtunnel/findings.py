"""The paper's qualitative findings (§3–6), each stated against what the studies under results/ measured.

Reads every study's fit.json (and the µP check's cached result) and says, per finding, whether this ladder
reproduces it, with the numbers; a study that has not run is "not run", never a guess. `windtunnel report` prints
the table and puts it at the top of results/report.html.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

from windtunnel.paths import results_dir

__all__ = ["Finding", "findings", "table"]

YES, NO, PARTLY, NOT_RUN = "reproduced", "not reproduced", "partly", "not run"
NO_BACKTEST = "fitted, too few sizes to backtest"  # the law is fitted; a rolling backtest needs ≥ 4 sizes
DEVIATION = "deviation"  # the ladder departs from MiniCPM on purpose; the row says how and what it buys


@dataclass(frozen=True)
class Finding:
    section: str
    paper: str      # the paper's finding
    verdict: str    # YES | NO | PARTLY | NOT_RUN | NO_BACKTEST | DEVIATION
    here: str       # the numbers behind the verdict (or what is missing)


def _read(root: Path, study: str) -> dict | None:
    path = root / study / "fit.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _mup_check(root: Path) -> Finding:
    paper = "µP keeps each layer's update size width-independent; SP's grows with width"
    checks = sorted((root / "cache" / "mupcheck").glob("*.json"), key=lambda p: p.stat().st_mtime)
    if not checks:
        return Finding("§3 (Table 7)", paper, NOT_RUN, "run `windtunnel check-mup`")
    c = json.loads(checks[-1].read_text())
    worst = max(c["mup"], key=lambda k: abs(c["mup"][k]))
    sp = [c["sp"][k] for k in ("hidden", "logits") if k in c["sp"]]
    return Finding("§3 (Table 7)", paper, YES if c["passed"] else NO,
                   f"widths {c['widths'][0]}–{c['widths'][-1]}: µP slopes within ±{abs(c['mup'][worst]):.2f} "
                   f"({worst}); SP hidden/logits {', '.join(f'{s:+.2f}' for s in sp)}")


def _lr(lr: dict | None) -> Finding:
    paper = "under µP the optimal base LR stays put across widths; under SP it moves"
    if lr is None:
        return Finding("§3.3 (Fig. 3)", paper, NOT_RUN, "make sweep-lr")
    goal, spread = lr.get("goal", {}), lr["spread"]

    def say(kind):
        s = spread.get(kind)
        if not s:
            return f"{kind}: no runs"
        over = f" over widths {s['widths'][0]:g}–{s['widths'][1]:g}" if s.get("widths") else ""
        return f"{kind} spread {s['ratio']:.2f}× {_iv(s.get('interval'))}{over}"

    mup, sp = spread.get("mup", {}), spread.get("sp", {})
    points_hold = mup.get("ratio", 99) < 2 and sp.get("ratio", 0) > max(2, mup.get("ratio", 99))
    costs = mup.get("regret", {}).get("max", 1), sp.get("regret", {}).get("max", 0)
    transfers = costs[0] < 0.01 and costs[1] > 0.05   # the base width's LR is (nearly) optimal at every µP width only
    verdict = YES if goal.get("holds") else PARTLY if points_hold or transfers or goal.get("holds") is None else NO

    def regret(kind):
        r = spread.get(kind, {}).get("regret")
        return f"{kind} {r['max']:+.2%}" if r else f"{kind} —"

    cost = (f"; the LR tuned at width {mup['regret']['tuned_at_width']:g} costs at most {regret('mup')}, "
            f"{regret('sp')} loss at any width" if mup.get("regret") else "")
    return Finding("§3.3 (Fig. 3)", paper, verdict,
                   f"{say('mup')}; {say('sp')}{cost}. {goal.get('why', '')}".strip())


def _batch(bs: dict | None) -> Finding:
    paper = "bs_opt = k / L^γ: lower loss wants larger batches (paper γ 6.24 on C4)"
    if bs is None:
        return Finding("§3.2 (Fig. 1–2)", paper, NOT_RUN, "make sweep-bs")
    interval = bs.get("intervals", {}).get("gamma")
    verdict = YES if interval and interval[0] > 0 else PARTLY
    return Finding("§3.2 (Fig. 1–2)", paper, verdict,
                   f"bs_opt = {bs['k']:.3g} / L^{bs['gamma']:.2f} (γ 95% {_iv(interval) or 'not bootstrapped'}) from {bs['n_optima']} "
                   f"optima; {bs['n_outside']} outside the sampled batches left out, {bs['n_concave']} concave")


def _wsd(wsd: dict | None, ladder_envelopes: dict) -> list[Finding]:
    rows = [("§4.2 (Fig. 4)", "WSD with a ~10% decay reaches Cosine(T = S) at the same tokens"),
            ("§4.1 (Fig. 4)", "Cosine(T) with T ≠ S (and CosineLoop) ends above Cosine(T = S)"),
            ("§4.2 (Fig. 5)", "a 2.5% decay falls short of a 10% one"),
            ("§4.3 (Fig. 6)", "the WSD envelope over compute is a power law, not an exponential"),
            ("§4.3 (Fig. 6)", "a smaller model trained longer beats a larger one at equal compute (while the "
                              "larger is under-trained)")]
    if wsd is None:
        return [Finding(s, p, NOT_RUN, "make sweep-wsd") for s, p in rows]
    out = []
    vs = wsd.get("wsd_vs_cosine", [])
    reached = sum(f["reached"] for f in vs)
    out.append(Finding(*rows[0], _share(reached, len(vs)), "; ".join(
        f"{f['tokens'] / 1e6:.2f}M tokens {f['gap']:+.2%}" for f in vs) + " (best 10% branch vs Cosine(T = S))"))
    periods = [f for f in wsd.get("cosine_periods", []) if f["T_over_S"] != 1.0 or f["kind"] != "cosine"]
    worse = sum(f["worse"] for f in periods)
    out.append(Finding(*rows[1], _share(worse, len(periods)), "; ".join(
        f"{'loop ' if f['kind'] == 'cosine_loop' else ''}T/S {f['T_over_S']:.2f} {f['gap']:+.2%}" for f in periods)))
    shapes = [f for f in wsd.get("decay_lengths", []) if "short_gap" in f]
    short = sum(f["short_falls_short"] for f in shapes)
    out.append(Finding(*rows[2], _share(short, len(shapes)), "; ".join(
        f"{f['shape']} {f['short_gap']:+.2%}" for f in shapes) + " (2.5% vs 10% from the last branch point)"))
    fits = {**{f"{m} (ladder)": f for m, f in ladder_envelopes.items()}, **wsd.get("envelope", {})}
    fits = {m: f for m, f in fits.items() if "skipped" not in f}
    power = sum(f["better"] == "power" for f in fits.values())
    out.append(Finding(*rows[3], _share(power, len(fits)), "; ".join(
        f"{m} {f['n_points']} points: AIC power {f['aic']['power']:.1f}, exponential {f['aic']['exponential']:.1f}"
        for m, f in fits.items())))
    pairs = wsd.get("equal_compute", [])
    lower = sum(f["small_lower"] for f in pairs)
    detail = "; ".join(f"{f['small']} vs {f['large']} at {f['C']:.2g} FLOPs {f['small_loss'] / f['large_loss'] - 1:+.1%}"
                       for f in pairs)
    out.append(Finding(*rows[4], _share(lower, len(pairs)),
                       (detail + " (smaller/larger − 1)") if detail else "no ladder envelopes (make scaling-law)"))
    return out


def _decay_dynamics(dyn: dict | None) -> list[Finding]:
    rows = [("§4.4 (Fig. 7)", "the max weight update of every matrix falls during the decay"),
            ("§4.4 (Fig. 8)", "the gradient norm falls during the decay"),
            ("§4.4 (Fig. 8)", "consecutive gradients stay positively aligned (cos > 0) in the decay"),
            ("§4.4 (Fig. 8)", "the first directional derivative |D1| diminishes during the decay"),
            ("§4.4 (Fig. 8)", "the curvature K = |D2|/(1 + D1²)^1.5 rises by about an order of magnitude")]
    branches = [b for b in (dyn or {}).get("branches", []) if "D1_before" in b]
    if not branches:
        return [Finding(s, p, NOT_RUN, "make sweep-wsd (D1/D2 logged by the trainer)") for s, p in rows]
    matrices = [b["max_update_ratio_by_matrix"] for b in branches if "max_update_ratio_by_matrix" in b]
    lows, highs = [min(m.values()) for m in matrices], [max(m.values()) for m in matrices]
    norm = [b["grad_norm_end"] / b["grad_norm_before"] for b in branches]
    cos = [b["grad_cos_end"] for b in branches]
    d1 = [abs(b["D1_end"]) / abs(b["D1_before"]) for b in branches]
    k = [b["K_end"] / b["K_before"] for b in branches]
    signs = f"; D1 {_range([b['D1_before'] for b in branches])} before, {_range([b['D1_end'] for b in branches])} at the end"
    return [Finding(*rows[0], _share(sum(h < 1 for h in highs), len(highs)),
                    f"end/before {min(lows):.2g}…{max(highs):.2g} across the matrices of {len(highs)} branches"),
            Finding(*rows[1], _share(sum(r < 1 for r in norm), len(norm)), f"end/before {_range(norm)}"),
            Finding(*rows[2], _share(sum(c > 0 for c in cos), len(cos)),
                    f"cos {_range([b['grad_cos_before'] for b in branches])} before, {_range(cos)} at the end"),
            Finding(*rows[3], _share(sum(r < 1 for r in d1), len(d1)), f"|D1| end/before {_range(d1)}" + signs),
            Finding(*rows[4], _share(sum(r >= 3 for r in k), len(k)), f"K end/before {_range(k)}")]


def _scaling_law(law: dict | None) -> list[Finding]:
    rows = [("§5", "L(N, D) = C_N·N^-α + C_D·D^-β + L0 fits the ladder and predicts a larger size (paper: α 0.29, "
                   "β 0.23 on its data)"),
            ("§5 (Fig. 10/17)", "fitting each held-out set alone, the mean of the exponents ≈ the averaged loss's")]
    if law is None:
        return [Finding(s, p, NOT_RUN, "make scaling-law") for s, p in rows]
    iv = law.get("intervals", {})
    errors = {c["form"]: _mean_error(c["backtests"]) for c in law.get("candidates", []) if c["n_kind"] == law["n_kind"]}
    errors = {form: e for form, e in errors.items() if e is not None}  # too few sizes to backtest: none
    paper = errors.get("chinchilla")
    first = Finding(*rows[0], NO_BACKTEST if paper is None else YES if paper < 0.03 else PARTLY,
                    f"α {law['alpha']:.2f} {_iv(iv.get('alpha'))}, β {law['beta']:.2f} {_iv(iv.get('beta'))}; rolling "
                    "backtests, mean |error|: " + (", ".join(f"{k} form {v:.2%}" for k, v in sorted(errors.items()))
                                                   or "none (too few sizes)"))
    per_set = law.get("per_set")
    if not per_set or not per_set.get("mean"):
        return [first, Finding(*rows[1], NOT_RUN, "no per-set fits in results/scaling_law/fit.json")]
    sets = {k: v for k, v in per_set["sets"].items() if "skipped" not in v}
    detail = "; ".join(f"{k} α {v['alpha']:.2f} β {v['beta']:.2f}" for k, v in sets.items())
    mean = per_set["mean"]
    close = abs(mean["alpha"] - law["alpha"]) < 0.1 and abs(mean["beta"] - law["beta"]) < 0.1
    return [first, Finding(*rows[1], YES if close else PARTLY,
                           f"{detail}; mean α {mean['alpha']:.2f} β {mean['beta']:.2f} vs averaged loss "
                           f"α {law['alpha']:.2f} β {law['beta']:.2f}")]


def _attention(law: dict | None) -> Finding:
    """The ladder's attention against MiniCPM's, with the seed spread of its points (what smeared keys are for)."""
    paper = "MiniCPM's attention (no smeared keys); two seeds of one ladder point land well under 1% apart"
    if law is None:
        return Finding("§5 (ladder)", paper, NOT_RUN, "make scaling-law")
    by_point: dict = {}
    for p in law.get("points", []):
        by_point.setdefault((p["model"], p["D"]), []).append(p["loss"])
    spreads = sorted(((max(v) - min(v)) / (sum(v) / len(v)), m, d) for (m, d), v in by_point.items() if len(v) > 1)
    spread = (f"seed spread of the final loss: median {spreads[len(spreads) // 2][0]:.2%}, max {spreads[-1][0]:.2%} "
              f"({spreads[-1][1]} at {spreads[-1][2]:,.0f} tokens) over {len(spreads)} points"
              if spreads else "one seed per point: no seed spread")
    base = law.get("mup_base") if isinstance(law.get("mup_base"), dict) else {}
    if base.get("smear_keys"):
        return Finding("§5 (ladder)", paper, DEVIATION,
                       "smeared keys (models/*.yaml `smear_keys: true`): copying from context is learned before the "
                       f"first branch point instead of at a random step inside the measured window; {spread}")
    worst = spreads[-1][0] if spreads else None
    return Finding("§5 (ladder)", paper, NOT_RUN if worst is None else YES if worst <= 0.01 else PARTLY,
                   f"MiniCPM's attention; {spread}")


def _decay_data(dd: dict | None) -> Finding:
    paper = "high-quality data mixed into the decay improves the loss on data like it"
    pairs = (dd or {}).get("pairs", [])
    if not pairs:
        return Finding("§6 (Table 1)", paper, NOT_RUN, "make sweep-decay-data")
    gains = [p["docstrings_relative"] for p in pairs if "docstrings_relative" in p]
    others = [p[k] for p in pairs for k in ("code_relative", "torch_relative") if k in p]
    return Finding("§6 (Table 1)", paper, _share(sum(g < 0 for g in gains), len(gains)),
                   f"{pairs[0]['mixture']}: docstrings {_range(gains, pct=True)} over {len(gains)} pairs; "
                   f"other sets {_range(others, pct=True)}")


def _mean_error(tests: list) -> float | None:
    return sum(t["mean_abs_rel_err"] for t in tests) / len(tests) if tests else None


def _share(hits: int, total: int) -> str:
    if total == 0:
        return NOT_RUN
    return YES if hits == total else NO if hits == 0 else f"{PARTLY} ({hits} of {total})"


def _range(values, *, pct: bool = False) -> str:
    fmt = (lambda v: f"{v:+.1%}") if pct else (lambda v: f"{v:.2g}")
    return f"{fmt(min(values))}…{fmt(max(values))}" if values else "—"


def _iv(interval) -> str:
    """[low, high] to 2 decimals; "" without an interval, "open" for a side that has none."""
    if not interval or all(v is None for v in interval):
        return ""
    return "[" + ", ".join("open" if v is None else f"{v:.2f}" for v in interval) + "]"


def findings(root: Path | None = None) -> list[Finding]:
    """Every finding, in the paper's order."""
    root = root or results_dir()
    return [_mup_check(root), _batch(_read(root, "batch_size")), _lr(_read(root, "lr")), *_wsd(_read(root, "wsd"), (_read(root, "scaling_law") or {}).get("envelope", {})),
            *_decay_dynamics(_read(root, "decay_dynamics")), *_scaling_law(_read(root, "scaling_law")),
            _attention(_read(root, "scaling_law")),
            _decay_data(_read(root, "decay_data"))]


def table(rows: list[Finding]) -> str:
    """The findings as a Markdown table (LOG.md, the terminal)."""
    lines = ["| § | the paper | here | numbers |", "|---|---|---|---|"]
    cell = lambda text: text.replace("|", "\\|")  # noqa: E731  (|D1| inside a cell)
    lines += [f"| {f.section} | {cell(f.paper)} | {f.verdict} | {cell(f.here)} |" for f in rows]
    return "\n".join(lines)
