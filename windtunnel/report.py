"""One HTML page with every study's fitted laws, intervals, backtest, figures and the plans (`windtunnel report`).

Reads results/<study>/fit.json, the PNGs beside them and results/plans/*.yaml; writes results/report.html with the
figures embedded (base64), so the page can be mailed or attached on its own.
"""

from __future__ import annotations

import base64
import html
import json
from pathlib import Path

from windtunnel.paths import results_dir, write_atomic

__all__ = ["write_report"]

STYLE = """body{font-family:system-ui,sans-serif;max-width:1100px;margin:2em auto;color:#222}
table{border-collapse:collapse;margin:.5em 0}td,th{border:1px solid #ccc;padding:2px 8px;text-align:right}
img{max-width:100%;border:1px solid #eee;margin:4px 0}code,pre{background:#f4f4f4;white-space:pre-wrap}.gap{color:#a40}
.card{border:1px solid #ccc;border-radius:6px;padding:0 1em;margin:1em 0}.card th{text-align:left;background:#f8f8f8}
.card td:nth-child(2){white-space:nowrap}"""


def write_report(path: Path | None = None) -> Path:
    """Gather everything under results/ into one page: a section per study of the registry (windtunnel.studies),
    in its order; studies that were not run are listed as such."""
    from windtunnel.studies import STUDIES

    root = results_dir()
    path = path or root / "report.html"
    parts = [f"<html><head><meta charset='utf-8'><title>windtunnel report</title><style>{STYLE}</style></head><body>",
             "<h1>windtunnel report</h1>", _findings(root), _plans(root / "plans"), _validations(root)]
    for study in STUDIES.values():
        parts.append(_study(root / study.name, study.title))
    parts += [_search(folder) for folder in sorted((root / "search").glob("*/summary.json"))]
    parts.append(_coord_check(root / "plots" / "coord_check.png"))
    parts.append("</body></html>")
    return write_atomic(path, "\n".join(parts))  # a reader (or a killed command) never sees half a page


def _findings(root: Path) -> str:
    """The paper's findings, each reproduced or not on this ladder, with the numbers (windtunnel.findings)."""
    from windtunnel.findings import findings

    rows = "".join(f"<tr><td>{html.escape(f.section)}</td><td style='text-align:left'>{html.escape(f.paper)}</td>"
                   f"<td class='{'' if f.verdict == 'reproduced' else 'gap'}'>{html.escape(f.verdict)}</td>"
                   f"<td style='text-align:left'>{html.escape(f.here)}</td></tr>" for f in findings(root))
    return ("<h2>The paper's findings on this ladder</h2><table><tr><th>§</th><th>the paper</th><th>here</th>"
            "<th>numbers</th></tr>" + rows + "</table>")


def _study(folder: Path, title: str) -> str:
    fit = folder / "fit.json"
    if not fit.is_file():
        return f"<h2>{title}</h2><p class='gap'>not fitted yet (no {html.escape(str(fit))})</p>"
    data = json.loads(fit.read_text())
    body = [f"<h2>{title}</h2>", f"<p>scale <b>{html.escape(str(data.get('scale', '?')))}</b>; runs left out: "
            f"{html.escape(json.dumps(data.get('excluded', {})))}</p>", _summary(folder.name, data)]
    body.append(_images(folder))
    body.append(f"<details><summary>fit.json</summary><pre>{html.escape(_trimmed(data))}</pre></details>")
    return "\n".join(body)


def _images(folder: Path) -> str:
    return "\n".join(f"<img src='data:image/png;base64,{base64.b64encode(p.read_bytes()).decode()}' alt='{p.name}'>"
                     for p in sorted(folder.glob("*.png")))


def _summary(study: str, data: dict) -> str:
    """The headline numbers of a study, with their 95% intervals where bootstrapped."""
    if study == "scaling_law":
        return _scaling_law(data)
    if study == "batch_size":
        left_out = (f"<p>{data['n_optima']} optima; left out: {data['n_outside']} outside the sampled batch sizes "
                    f"(never extrapolated), {data['n_concave']} parabolas opening downward.</p>")
        return _table([(k, data[k], data.get("intervals", {}).get(k)) for k in ("k", "gamma")]) + left_out
    if study == "lr":
        return _lr(data)
    if study == "loss_curve":
        return _loss_curve(data)
    return ""


def _loss_curve(data: dict) -> str:
    """Each held-out curve's errors: the median |predicted / actual − 1| after warm-up and the final one's."""
    if not data.get("held_out"):
        return "<p class='gap'>no held-out curve yet (the wsd sweep and `make validate` have not run)</p>"
    goals, rows = data["goals"], []
    for r in data["held_out"]:
        met = r["median_abs_error"] <= goals["median_abs_error"] and abs(r["final_error"]) <= goals["final_error"]
        rows.append(f"<tr><td>{html.escape(r['model'])}</td><td style='text-align:left'>{html.escape(r['schedule'])}"
                    f"</td><td>{r['median_abs_error']:.2%}</td><td>{r['final_error']:+.2%}</td>"
                    f"<td>{r['inside_band']:.0%}</td><td class='{'' if met else 'gap'}'>{'met' if met else 'missed'}</td></tr>")
    return (f"<p>The {data['law']['form']} law, fitted on constant-LR and WSD-10% curves only, predicting whole curves it "
            f"never saw (goals: median |error| ≤ {goals['median_abs_error']:.0%}, final ≤ {goals['final_error']:.1%}).</p>"
            "<table><tr><th>model</th><th>schedule</th><th>median |error|</th><th>final error</th><th>inside the band"
            "</th><th>goals</th></tr>" + "".join(rows) + "</table>")


def _lr(data: dict) -> str:
    """Each width's optimal LR (a diverged run is censored: the optimum lies below it), the spread of the optima
    across widths per parametrization with its 95% interval, and whether µP transfers where SP does not."""
    rows = "".join(f"<tr><td>{o['parametrization']}</td><td>{_num(o.get('width'), 'g')}</td><td>{o['model']}</td>"
                   f"<td>{o['lr_opt']:.4g}</td><td>{_interval(o['low'], o['high'])}</td>"
                   f"<td>{o.get('n_censored', 0)}</td><td>{'edge' if o['at_edge'] else ''}</td></tr>"
                   for o in sorted(data["optima"], key=lambda o: (o["parametrization"], o.get("width") or 0)))
    out = ["<table><tr><th>param.</th><th>width</th><th>model</th><th>optimal LR</th><th>95%</th><th>diverged</th>"
           "<th></th></tr>" + rows + "</table>"]
    spreads = "".join(f"<tr><td>{k}</td><td>{s['ratio']:.3g}×</td><td>{_interval(*(s.get('interval') or [None] * 2))}"
                      f"</td><td>{_interval(*(s.get('widths') or [None] * 2))}</td><td>{s.get('n_open', 0)}</td></tr>"
                      for k, s in data["spread"].items())
    out.append("<table><tr><th>param.</th><th>spread max/min</th><th>95%</th><th>widths</th>"
               "<th>open-ended optima left out</th></tr>" + spreads + "</table>")
    goal = data.get("goal")
    if goal:
        verdict = {True: "holds", False: "does not hold", None: "undecided"}[goal["holds"]]
        out.append(f"<p>µP spread &lt; 2× over ≥ 8× of width, SP clearly more: <b>{verdict}</b> — "
                   f"{html.escape(goal['why'])}</p>")
    return "\n".join(out)


def _scaling_law(data: dict) -> str:
    """The paper's law and the law that predicts, with their intervals (a parameter the data do not pin down is named,
    not shown as a value), every candidate form and convention of N with its backtests, the predicting law's rolling
    backtests and the compute-optimal allocation."""
    from windtunnel.fit import PerToken
    from windtunnel.studies import N_NAMES

    pred = data["prediction"]
    out = [f"<p>{data['n_points']} points from {data['n_groups']} stable runs; N = {N_NAMES[data['n_kind']]}; the "
           f"bootstrap resamples whole stable runs. FLOPs: {html.escape(PerToken.from_dict(data.get('flops')).describe())}.</p>",
           "<h3>The paper's form</h3>", _law(data),
           f"<p>by curve_fit, as the paper: α {data['curve_fit']['alpha']:.4g}, β {data['curve_fit']['beta']:.4g}.</p>",
           _per_set(data.get("per_set") or {}),
           f"<h3>The law that predicts ({html.escape(pred['why'])})</h3>", _law(pred)]
    ladder = data["ladder"]
    cands = "".join(f"<tr><td>{c['form']}</td><td>{N_NAMES[c['n_kind']]}</td><td>{_pct(c['directional_rms'])}</td>"
                    f"<td>{_pct(c['own_sd'])}</td><td>{_mean_abs(c['backtests'])}</td>"
                    f"<td>{html.escape(c['rejected']) and 'rejected: ' + html.escape(c['rejected']) or 'pooled'}"
                    f"{'; allocation' if (c['form'], c['n_kind']) == (pred['form'], pred['n_kind']) else ''}</td></tr>"
                    for c in data["candidates"])
    out.append(f"<p>Predictions pool the candidates their directional backtests do not reject, each widened by a "
               f"misspecification sd of s per e-fold beyond the ladder (s ≥ {ladder['floor']:.2%}, the floor learned "
               f"from public ladders); they are refused beyond N {ladder['limits']['n']:g}×, D "
               f"{ladder['limits']['d']:g}×, C {ladder['limits']['c']:g}× the ladder's largest.</p>")
    out.append("<table><tr><th>form</th><th>N</th><th>directional backtests: rms log error</th><th>s per e-fold</th>"
               "<th>rolling backtests: mean |error|</th><th></th></tr>" + cands + "</table>")
    tests = "".join(f"<tr><td>1–{t['n_sizes']}</td><td>{t['held_out_N']:,.0f}</td><td>{t['mean_rel_err']:+.2%}</td>"
                    f"<td>{t['mean_abs_rel_err']:.2%}</td><td>{t['max_abs_rel_err']:.2%}</td>"
                    f"<td>{_covered(t)}</td></tr>" for t in pred["backtests"])
    out.append("<table><tr><th>fit sizes</th><th>predict N</th><th>mean error</th><th>mean |error|</th>"
               "<th>max |error|</th><th>inside 95% interval</th></tr>" + tests + "</table>")
    optimal = "".join(f"<tr><td>{r['C']:.3g}</td><td>{r['ratio_closed']:.3g}</td><td>{r['ratio_numeric']:.3g}</td>"
                      f"<td>{_guardrails(r)}</td></tr>" for r in data["compute_optimal"])
    out.append("<table><tr><th>C (FLOPs)</th><th>D/N closed form</th><th>D/N numeric</th><th>beyond the ladder</th>"
               "</tr>" + optimal + "</table>")
    return "\n".join(out)


def _guardrails(row: dict) -> str:
    """An allocation row's extrapolation ratios, and whether it passes the guardrails (then the law's shape only)."""
    ratios = row.get("extrapolation")
    if not ratios:
        return ""
    text = ", ".join(f"{k.upper()} {v:.3g}×" for k, v in ratios.items())
    return text + ("; beyond the guardrails: the law's shape, not a calibrated prediction" if row["beyond"] else "")


def _per_set(per_set: dict) -> str:
    """The paper's form fitted to each held-out set on its own (Fig. 10/17), their mean, and the averaged loss's fit."""
    if not per_set.get("sets"):
        return ""

    def cells(law: dict) -> str:
        iv = law.get("intervals", {})
        return "".join(f"<td>{law[k]:.4g}</td><td>{_interval(*(iv.get(k) or (None, None)))}</td>" for k in ("alpha", "beta"))

    rows = [f"<tr><td>{html.escape(name)}</td>" + (f"<td colspan=4>{html.escape(law['skipped'])}</td>" if "skipped" in law
                                                   else cells(law)) + "</tr>" for name, law in per_set["sets"].items()]
    if per_set.get("mean"):
        rows.append("<tr><td>mean of the sets</td>" + cells(per_set["mean"]) + "</tr>")
    rows.append("<tr><td>fit of the averaged loss</td>" + cells(per_set["averaged_loss"]) + "</tr>")
    return ("<h3>Per held-out set (as the paper)</h3><table><tr><th>set</th><th>α</th><th>95%</th><th>β</th><th>95%</th>"
            "</tr>" + "".join(rows) + "</table>")


def _law(law: dict) -> str:
    from windtunnel.fit import FORMS
    from windtunnel.studies import FORM_NAMES

    missing = law.get("not_identified", {})
    names = FORMS[law["form"]].params + (("K", "eta") if law["form"] == "chinchilla" else ())
    rows = [(k, law[k], law.get("intervals", {}).get(k)) for k in names if k not in missing]
    return (f"<p>L(N, D) = {html.escape(FORM_NAMES[law['form']])}</p>" + _table(rows)
            + "".join(f"<p class='gap'>{k} not identified: {html.escape(why)}</p>" for k, why in missing.items()))


def _covered(test: dict) -> str:
    return "—" if test["coverage"] is None else f"{sum(test['covered'])}/{test['n_test']}"


def _pct(value) -> str:
    return "—" if value is None else f"{value:.2%}"


def _mean_abs(tests: list) -> str:
    if not tests:
        return "—"
    return f"{sum(t['mean_abs_rel_err'] for t in tests) / len(tests):.2%} (largest size {tests[-1]['mean_abs_rel_err']:.2%})"


def _search(summary: Path) -> str:
    """A µP search (§3.1): its best values, trial counts and optuna's plots."""
    data = json.loads(summary.read_text())
    best = "none complete" if data["best_value"] is None else f"{data['best_value']:.4f}"
    head = (f"<h2>µP hyper-parameter search {html.escape(data['name'])} ({html.escape(data['scale'])}) — §3.1</h2>"
            f"<p>{data['n_trials']} trials: {data['n_complete']} complete, {data['n_pruned']} pruned, "
            f"{data['n_failed']} failed; best {html.escape(data['objective'])} {best}</p>")
    rows = _table([(k, v, None) for k, v in (data["best_params"] or {}).items()])
    return head + rows + _images(summary.parent)


def _interval(low, high) -> str:
    """[low, high]; a side that is None is open (a one-sided bound)."""
    if low is None and high is None:
        return ""
    return "[" + ", ".join("open" if v is None else f"{v:.4g}" for v in (low, high)) + "]"


def _table(rows) -> str:
    cells = "".join(f"<tr><td>{k}</td><td>{v:.5g}</td><td>{_interval(*(iv or (None, None)))}</td></tr>"
                    for k, v, iv in rows)
    return "<table><tr><th>parameter</th><th>value</th><th>95% interval</th></tr>" + cells + "</table>"


def _validations(root: Path) -> str:
    """Predicted against actual for every target trained from its plan (`windtunnel validate` and `launch`)."""
    from windtunnel.launch import read_comparisons

    def live(v: dict) -> str:
        if not v.get("live_check"):
            return "not checked (the plan had no predicted curve)"
        if not v["alarms"]:
            return "inside the curve's band"
        a = v["alarms"][0]
        return (f"<span class='gap'>off prediction at {a['tokens']:,.0f} tokens ({a['k']} evaluations in a row "
                f"{a['side']} the band)</span>")

    def row(v: dict) -> str:
        how = f"{v['kind']}, {v.get('workers', 1)} × {v.get('strategy', 'one process')}"
        if v["predicted"] is None:
            return f"<tr><td>{html.escape(v['target'])}</td><td>{how}</td><td colspan=8>no prediction in its plan</td></tr>"
        return (f"<tr><td>{html.escape(v['target'])}</td><td>{how}</td><td>{_num(v['n_params'], ',')}</td>"
                f"<td>{_num(v['n_extrapolation'], '.2g')}×</td><td>{v['tokens']:,}</td><td>{v['predicted']:.4f}</td>"
                f"<td>[{v['low']:.4f}, {v['high']:.4f}]</td><td>{v['actual']:.4f}</td><td>{v['rel_error']:+.2%}</td>"
                f"<td>{'yes' if v['inside'] else 'NO'}</td><td>{live(v)}</td></tr>")

    rows = "".join(row(v) for v in read_comparisons(root))
    if not rows:
        return "<h2>Predicted against actual</h2><p class='gap'>no target trained from a plan yet (make validate)</p>"
    return ("<h2>Predicted against actual</h2><p>Targets planned from the fits and trained as planned; loss = mean "
            "held-out bits per byte.</p><table><tr><th>target</th><th>how</th><th>N</th><th>beyond the "
            "ladder</th><th>tokens</th><th>predicted</th><th>95% prediction interval</th><th>actual</th>"
            "<th>predicted/actual − 1</th><th>inside</th><th>live check</th></tr>" + rows + "</table>"
            + _images(root / "validate"))


def _coord_check(png: Path) -> str:
    """The µP coordinate check's figure (docs/method.md §3 "Checking µP"), as `windtunnel check-mup` last drew it."""
    head = "<h2>µP coordinate check: update size against width — docs/method.md §3</h2>"
    if not png.is_file():
        return head + "<p class='gap'>not run yet (windtunnel check-mup)</p>"
    return head + f"<img src='data:image/png;base64,{base64.b64encode(png.read_bytes()).decode()}' alt='{png.name}'>"


def _num(value, spec: str) -> str:
    return "—" if value is None else format(value, spec)


def _plans(folder: Path) -> str:
    """Each plan as a card: what it decides, how sure it is and what it costs, its gaps in words; the YAML linked."""
    import yaml

    plans = sorted(folder.glob("*.yaml")) if folder.is_dir() else []
    if not plans:
        return "<h2>Plans</h2><p class='gap'>no plan yet (windtunnel plan minicpm-1.2b)</p>"
    cards = []
    for path in plans:
        try:
            plan = yaml.safe_load(path.read_text())
            cards.append(_plan_card(plan, f"{folder.name}/{path.name}"))
        except (yaml.YAMLError, KeyError, TypeError, AttributeError) as err:  # a hand-edited plan: shown as it is
            cards.append(f"<div class='card'><h3>{html.escape(path.stem)}</h3><p class='gap'>not a plan windtunnel "
                         f"reads ({html.escape(type(err).__name__)}): <a href='{folder.name}/{path.name}'>"
                         f"{html.escape(path.name)}</a></p></div>")
    return "<h2>Plans</h2>" + "".join(cards)


def _plan_card(plan: dict, link: str) -> str:
    """One plan's card: target and status, then a row per decision (tokens, predicted loss, batch, LR, schedule,
    cost, extrapolation), each with its interval or basis; '—' where the plan left the value out."""
    train, hp, loss, cost = plan["train"], plan.get("hyperparameters") or {}, plan.get("predicted_loss"), plan["cost"]
    n_kind = {"total": "N with the embedding", "non_embedding": "non-embedding N"}.get(plan.get("n_kind"), "N")
    rows = [("tokens", _num(train.get("tokens"), ",.0f"), plan.get("tokens_basis") or "")]
    if loss:
        low, high = loss["interval95"]
        rows.append(("predicted loss", f"{loss['value']:.4f} [{low:.4f}, {high:.4f}]",
                     f"{loss.get('unit', '')}; 95% prediction interval"
                     + ("" if loss.get("usable", True) else " — too wide to use")))
    else:
        rows.append(("predicted loss", "—", ""))
    for key, label, spec in (("batch_tokens", "batch (tokens)", ",.0f"), ("lr", "max LR", ".4g")):
        value, fitted = train.get(key), hp.get("batch" if key == "batch_tokens" else "lr") or {}
        interval = fitted.get("interval95")
        rows.append((label, _num(value, spec),
                     f"95% interval [{interval[0]:{spec}}, {interval[1]:{spec}}]" if interval and value else ""))
    schedule = train.get("schedule") or {}
    if schedule:
        decay = train["tokens"] - schedule.get("decay_start_tokens", train["tokens"])
        rows.append(("schedule", f"{schedule.get('kind', '?').upper()}", f"warm-up {schedule.get('warmup_tokens', 0):,}"
                     f" tokens, {schedule.get('decay_shape', '')} decay over the last {decay:,} tokens"))
    if cost:
        ladder = cost.get("ladder") or {}
        rows.append(("cost", f"{cost['gpu_hours']:,.3g} GPU-hours",
                     f"{cost['trained_flops']:.3g} FLOPs at {cost['mfu']:.0%} MFU of {cost['gpu_flops']:.3g} FLOP/s"
                     + (f"; the ladder cost {ladder['gpu_hours']:,.3g} GPU-hours, "
                        f"{ladder['fraction_of_target']:.2%} of this run" if ladder else "")))
    if loss and loss.get("extrapolation"):
        ratios = loss["extrapolation"]
        rows.append(("beyond the ladder", f"{ratios['n']:.3g}× N",
                     f"{ratios['d']:.3g}× D, {ratios['c']:.3g}× C over the largest fitted"))
    table = "".join(f"<tr><th>{html.escape(k)}</th><td>{html.escape(v)}</td><td style='text-align:left'>"
                    f"{html.escape(w)}</td></tr>" for k, v, w in rows)
    gaps = "".join(f"<li>{html.escape(g)}</li>" for g in plan.get("gaps") or [])
    notes = "".join(f"<li>{html.escape(n)}</li>" for n in plan.get("notes") or [])
    status = plan.get("status", "?")
    return (f"<div class='card'><h3>{html.escape(plan['target'])} <span class='{'' if status == 'complete' else 'gap'}'>"
            f"({html.escape(status)})</span></h3><p>N = {plan['n_params']:,} ({n_kind}); "
            f"<a href='{html.escape(link)}'>{html.escape(link)}</a></p><table>{table}</table>"
            + (f"<p>What it leaves out, and why:</p><ul class='gap'>{gaps}</ul>" if gaps else "")
            + (f"<p>Notes:</p><ul>{notes}</ul>" if notes else "") + "</div>")


def _trimmed(data: dict) -> str:
    """fit.json without its long arrays (bootstrap samples, per-point tables)."""
    short = {k: v for k, v in data.items() if not (isinstance(v, list) and len(v) > 20) and k != "samples"}
    return json.dumps(short, indent=1)
