"""Stored sweeps → the tidy tables the fits take, and each study's fit (the join of tracking and fit).

A study is a sweep of `sweeps/` read back from MLflow: one row per finished run, with its loss = the mean over
the held-out sets of the final bits per byte (DESIGN §3: averaged per byte, so tokenizers compare). Failed,
diverged and unfinished runs are left out and counted with their reason. `windtunnel fit --sweep` and the
scripts in `analysis/` both go through here, so a number in a report and on the command line is the same number.

    frame, excluded = studies.final_points("scaling_law", scale="micro")
    result = studies.fit_scaling_law_study(frame, bootstrap=1000)
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from windtunnel.errors import WindtunnelError
from windtunnel.paths import results_dir, write_atomic

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["final_points", "decay_points", "loss_curves", "fit_scaling_law_study", "fit_batch_size_study",
           "fit_lr_study", "fit_envelope_study", "per_set_laws", "ladder_facts", "describe_scaling_law", "N_KINDS", "write_json", "dumps", "read_fit", "study_dir", "run_script", "NoRuns",
           "SWEEP_OF"]

SWEEP_OF = {"scaling-law": "scaling_law", "batch-size": "batch_size", "lr": "lr", "envelope": "scaling_law"}
# the sweep each `windtunnel fit` kind reads by default; the envelope is the series WSD(D, 0.1D) of each size (§4.3)
NUMERIC = {"N": "params.N", "D": "params.D", "lr": "params.lr", "batch_tokens": "params.batch_tokens",
           "fork_step": "params.fork_step", "decay_fraction": "params.coord.decay_fraction",
           "branch_tokens_per_param": "params.coord.branch_tokens_per_param", "branch_tokens": "params.coord.branch_tokens",
           "epochs": "metrics.data/epochs", "seed": "params.seed", "d_model": "params.model.d_model", "seq_len": "params.seq_len",
           "vocab_size": "params.model.vocab_size", "period_tokens": "params.schedule.period_tokens"}
MUP_BASE = ("d_base", "d_head", "vocab_size", "scale_emb", "scale_depth", "init_std", "parametrization")
# the µP base of a run's model: hyper-parameters found on a ladder transfer only within one base (DESIGN §3)
TEXT = {"model": "params.model.name", "parametrization": "params.model.parametrization",
        "schedule": "params.schedule.kind", "decay_shape": "params.schedule.decay_shape",
        "stage": "params.coord.stage", "run": "tags.windtunnel.run", "parent": "tags.parent", "status": "tags.status",
        "corpus": "params.data.corpus", "decay_data": "params.coord.decay_data"}


class NoRuns(WindtunnelError):
    """The sweep a study reads has not been run at this scale (an analysis script then exits 3: skipped)."""


def study_dir(study: str) -> Path:
    """results/<study>/: where a study's fit.json and figures go."""
    folder = results_dir() / study
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def final_points(sweep: str, *, scale: str, current: bool = True,
                 diverged: bool = False) -> tuple[pd.DataFrame, dict[str, int]]:
    """The finished runs of `sweep` at `scale`, one row each, and {reason: count} of the runs left out.

    current=True keeps only the runs of the graph sweeps/<sweep>.yaml expands to now (when that file is here):
    runs of an earlier version of the spec (another grid, budget or base) are left out and counted.
    diverged=True keeps the diverged runs too, with loss inf: to an LR sweep a divergence is information (the
    optimum lies below that LR), not a failure.
    """
    import pandas as pd

    from windtunnel.tracking import runs_dataframe

    raw = runs_dataframe(experiment=sweep)
    if "tags.kind" in raw:
        raw = raw[raw["tags.kind"] != "sweep"]
    raw = raw[raw["tags.scale"] == scale] if "tags.scale" in raw else raw.iloc[:0]
    if raw.empty:
        raise NoRuns(f"no runs of sweep {sweep!r} at scale {scale!r} in {_store()}; "
                              f"run `windtunnel sweep sweeps/{sweep}.yaml --scale {scale}` first")
    frame = pd.DataFrame({"run_id": raw["run_id"], "name": raw["run_name"]})
    for col, key in NUMERIC.items():
        frame[col] = pd.to_numeric(raw[key], errors="coerce") if key in raw else float("nan")
    for col, key in TEXT.items():
        frame[col] = raw[key].fillna("") if key in raw else ""
    evals = sorted(c for c in raw if c.startswith("metrics.eval/") and c.endswith("/bpb"))
    for col in evals:
        frame[f"bpb_{col.split('/')[1]}"] = raw[col]
    frame["loss"] = raw[evals].mean(axis=1, skipna=False) if evals else float("nan")
    frame["N_total"] = frame["N"] + frame["d_model"] * frame["vocab_size"]  # the tied embedding is vocab × width
    frame["group"] = frame["parent"].where(frame["parent"] != "", frame["run"])  # a stable run and its branches
    for key in MUP_BASE:
        frame[f"base.{key}"] = raw[f"params.model.{key}"] if f"params.model.{key}" in raw else ""
    frame, excluded = _keep_finished(frame.reset_index(drop=True), diverged=diverged)
    from windtunnel.paths import packaged

    spec_file = Path("sweeps") / f"{sweep}.yaml"  # the working directory's, else the packaged sweep of that name
    spec_file = spec_file if spec_file.is_file() else packaged("sweeps") / spec_file.name
    if current and spec_file.is_file():
        from windtunnel.graph import expand, load_sweep

        ids = {run.id for run in expand(*load_sweep(spec_file, scale=scale), file=spec_file, scale_name=scale)}
        stale = ~frame["run"].isin(ids)
        if stale.any():
            excluded[f"not in the graph of {spec_file} any more (--all-runs keeps them)"] = int(stale.sum())
        frame = frame[~stale].reset_index(drop=True)
    return frame, excluded


def ladder_facts(frame: pd.DataFrame) -> dict:
    """What a plan must match to use a study's fits: the runs' µP base (one mapping, or a list when they mix
    bases), context length, corpus and learning rates. Written into each study's fit.json."""
    bases = frame[[f"base.{k}" for k in MUP_BASE]].drop_duplicates().to_dict(orient="records")
    bases = [{k.removeprefix("base."): _number(v) for k, v in b.items()} for b in bases]
    return {"mup_base": bases[0] if len(bases) == 1 else (bases or None),
            "seq_len": sorted({int(v) for v in frame["seq_len"].dropna()}),
            "corpus": sorted(set(frame["corpus"]) - {""}), "lr": sorted({float(v) for v in frame["lr"].dropna()})}


def _number(value):
    """A param as stored by MLflow (a string) back to a number where it is one."""
    try:
        number = float(value)
    except (TypeError, ValueError):
        return value
    return int(number) if number.is_integer() and "." not in str(value) else number


def _keep_finished(frame: pd.DataFrame, *, diverged: bool = False) -> tuple[pd.DataFrame, dict[str, int]]:
    excluded: dict[str, int] = {}
    keep = {"finished", "diverged"} if diverged else {"finished"}
    for status in sorted(set(frame["status"]) - keep):
        excluded[status or "unfinished"] = int((frame["status"] == status).sum())
    frame = frame[frame["status"].isin(keep)]
    frame = frame.assign(loss=frame["loss"].where(frame["status"] == "finished", float("inf")))  # not a final eval
    no_eval = frame["loss"].isna()
    if no_eval.any():
        excluded["finished without a held-out evaluation"] = int(no_eval.sum())
    repeated = frame["epochs"] > 1  # a token seen twice: the loss is no longer that of D fresh tokens
    if repeated.any():
        excluded["past one epoch of the corpus"] = int(repeated.sum())
    return frame[~no_eval & ~repeated].reset_index(drop=True), excluded


def loss_curves(frame: pd.DataFrame, *, metric: str = "eval") -> pd.DataFrame:
    """Per run of `frame`, its loss against tokens: columns run_id, model, N, batch_tokens, lr, tokens, loss.

    metric "eval": the mean held-out bits per byte at each evaluation (the sets of the `bpb_*` columns);
    "train": the training loss of every step (nats per token), with the step's statistics (TRAIN_STATISTICS and
    each weight matrix's max |Δw|, `update/max_abs/<matrix>`) as further columns, NaN where a run lacks one.
    """
    import pandas as pd

    from windtunnel.tracking import metric_history, metric_keys

    parts = []
    for row in frame.itertuples():
        keys = ([f"eval/{c[4:]}/bpb" for c in frame if c.startswith("bpb_")] if metric == "eval"
                else ["train/loss", *TRAIN_STATISTICS, *metric_keys(row.run_id, "update/max_abs/")])
        series = [metric_history(row.run_id, key).set_index("step")["value"].rename(key) for key in keys]
        curve = pd.concat(series, axis=1).sort_index()
        curve = curve.dropna(subset=keys if metric == "eval" else ["train/loss"])
        loss = curve[keys].mean(axis=1) if metric == "eval" else curve["train/loss"]
        part = pd.DataFrame({"run_id": row.run_id, "model": row.model, "N": row.N, "batch_tokens": row.batch_tokens,
                             "lr": row.lr, "step": curve.index, "tokens": curve.index * row.batch_tokens,
                             "loss": loss.to_numpy()})
        if metric == "train":
            part = part.assign(**{k: curve[k].to_numpy() for k in keys[1:]})
        parts.append(part)
    return pd.concat(parts, ignore_index=True)


TRAIN_STATISTICS = ("lr", "grad/norm", "grad/cos_prev", "grad/D1", "grad/D2", "grad/curvature", "update/max_abs")


# ---------------------------------------------------------------- the studies


N_KINDS = {"total": "N_total", "non_embedding": "N"}
# the fit's N: every parameter (the tied embedding included) or, as in the paper, all but the embedding
DEFAULT_N_KIND = "total"  # backtests better on the micro ladder, where the embedding is 0.2–1.4× the rest (LOG.md)
N_NAMES = {"total": "N with the tied embedding", "non_embedding": "non-embedding N", "given": "N as given"}
FORM_NAMES = {"chinchilla": "C_N·N^-α + C_D·D^-β + L0", "kaplan": "((N_c/N)^(α_N/α_D) + D_c/D)^α_D + L0"}


def fit_scaling_law_study(points: pd.DataFrame, *, bootstrap: int, n_kind: str = DEFAULT_N_KIND,
                          form: str | None = None, budgets=(1e18, 1e20, 1e22, 1e24), seed: int = 0) -> dict:
    """§5: L(N,D) in every form and convention of N (Huber/L-BFGS, bootstrap over whole groups: a stable run and
    its decay branches share one seed and trajectory), each with its rolling backtests.

    The top level is the paper's form in the `n_kind` convention, with the paper's curve_fit beside it. The law
    that predicts — `prediction`, which the plan and the compute-optimal allocation (C = 6·N·D with its N) use —
    is `form`, or by default the form with the lower mean |error| over the rolling backtests in that convention
    (the paper's when there are too few sizes to backtest). n_kind "given": a CSV's own N column."""
    from windtunnel import fit

    kinds = {"given": "N"} if n_kind == "given" else N_KINDS
    if n_kind not in kinds or form not in (None, *fit.FORMS):
        raise WindtunnelError(f"form={form!r}, n_kind={n_kind!r} are not allowed; forms: {', '.join(fit.FORMS)}; "
                              f"N: {', '.join(N_KINDS)}")
    candidates = {(f, k): _law_and_backtests(points, col, form=f, bootstrap=bootstrap, seed=seed)
                  for f in fit.FORMS for k, col in kinds.items()}
    chosen, why = _prediction_form(candidates, n_kind, form)
    paper, paper_tests = candidates[("chinchilla", n_kind)]
    law, tests = candidates[(chosen, n_kind)]
    n, d, loss = (points[c].to_numpy(float) for c in (kinds[n_kind], "D", "loss"))
    lsq = fit.fit_scaling_law(n, d, loss, method="curve_fit", bootstrap=bootstrap, seed=seed, groups=_groups(points))
    return {**paper.to_dict(samples=True), "n_kind": n_kind, "curve_fit": lsq.to_dict(), "n_max": float(n.max()),
            "backtests": [b.to_dict() for b in paper_tests],
            "prediction": {**law.to_dict(samples=True), "n_kind": n_kind, "why": why,
                           "backtests": [b.to_dict() for b in tests]},
            "flops": "C = 6·N·D with N of n_kind (the tied LM head's matmul counted; attention scores not)",
            "compute_optimal": fit.compute_optimal(law, list(budgets)).to_dict(orient="records"),
            "candidates": [{**c.to_dict(), "n_kind": k, "backtests": [_backtest_summary(b) for b in bt]}
                           for (_, k), (c, bt) in candidates.items()],
            "per_set": {**per_set_laws(points, n_col=kinds[n_kind], bootstrap=min(bootstrap, PER_SET_BOOTSTRAP),
                                       seed=seed), "averaged_loss": _exponents(paper)},
            "n_models": int(points["model"].nunique()) if "model" in points else int(np.unique(n).size)}


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


def _prediction_form(candidates: dict, n_kind: str, form: str | None) -> tuple[str, str]:
    """The form that predicts, and why: the one asked for, or the one whose rolling backtests err less."""
    if form is not None:
        return form, "chosen (--form)"
    scores = {f: np.mean([t.mean_abs_rel_err for t in tests]) for (f, k), (_, tests) in candidates.items()
              if k == n_kind and tests}
    if len(scores) < 2:
        return "chinchilla", "the paper's form: too few sizes to backtest another"
    best = min(scores, key=scores.get)
    return best, ("lower rolling-backtest error: " + ", ".join(f"{f} {v:.2%}" for f, v in sorted(scores.items(),
                                                                                              key=lambda kv: kv[1])))


def describe_scaling_law(law: dict) -> list[str]:
    """The scaling-law fit.json as lines for a terminal: the paper's law and the predicting law with their intervals,
    what is not identified, every candidate with its backtests, and the rolling backtests of the predicting law."""
    lines = [f"paper's form: {_law_line(law)}", f"  by curve_fit (as the paper): alpha {law['curve_fit']['alpha']:.3f}, "
             f"beta {law['curve_fit']['beta']:.3f}"]
    lines += _per_set_lines(law.get("per_set") or {})
    pred = law["prediction"]
    lines.append(f"predicts ({pred['why']}): {_law_line(pred)}")
    lines += [f"  {k} not identified: {why}" for k, why in pred.get("not_identified", {}).items()]
    for c in law["candidates"]:
        tests = c["backtests"]
        score = (f"rolling backtests mean |error| {np.mean([t['mean_abs_rel_err'] for t in tests]):.2%}, "
                 f"largest size {tests[-1]['mean_rel_err']:+.2%}") if tests else "no backtest (≤ 3 sizes)"
        used = (c["form"], c["n_kind"]) == (pred["form"], pred["n_kind"])
        lines.append(f"  {c['form']:<10} {N_NAMES[c['n_kind']]:<26} {score}" + ("  <- predicts" if used else ""))
    for t in pred["backtests"]:
        cover = "no interval" if t["coverage"] is None else f"{sum(t['covered'])}/{t['n_test']} inside the 95% interval"
        lines.append(f"  backtest: fit the {t['n_sizes']} smallest sizes, predict N={t['held_out_N']:,.0f}: mean error "
                     f"{t['mean_rel_err']:+.2%}, mean |error| {t['mean_abs_rel_err']:.2%}, {cover}")
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


def _law_line(law: dict) -> str:
    from windtunnel.fit import FORMS

    iv, missing = law.get("intervals", {}), law.get("not_identified", {})
    params = "  ".join(f"{k} {law[k]:.4g}" + (f" [{iv[k][0]:.3g}, {iv[k][1]:.3g}]" if k in iv else "")
                       if k not in missing else f"{k} not identified" for k in FORMS[law["form"]].params)
    return (f"L(N,D) = {FORM_NAMES[law['form']]}, N = {N_NAMES[law['n_kind']]} ({law['n_points']} points, "
            f"{law['n_groups']} stable runs): {params}")


def _groups(points: pd.DataFrame):
    return points["group"].to_numpy() if "group" in points else None


def _law_and_backtests(points: pd.DataFrame, n_col: str, *, form: str, bootstrap: int, seed: int):
    from windtunnel import fit

    n, d, loss = (points[c].to_numpy(float) for c in (n_col, "D", "loss"))
    law = fit.fit_scaling_law(n, d, loss, form=form, bootstrap=bootstrap, seed=seed, groups=_groups(points))
    tests = fit.rolling_backtests(n, d, loss, form=form, groups=_groups(points), bootstrap=bootstrap, seed=seed) \
        if np.unique(n).size > 3 else []
    return law, tests


def _backtest_summary(test) -> dict:
    """A backtest without its fit and per-point lists: what the report's table shows."""
    return {k: v for k, v in test.to_dict().items() if k not in ("fit", "rel_errors", "low", "high", "covered")}


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


def fit_envelope_study(points: pd.DataFrame, *, n_kind: str = DEFAULT_N_KIND) -> dict:
    """§4.3: per model, the series WSD(D, 0.1D) fit by a power law and by an exponential in compute C = 6ND
    (N of `n_kind`: the same FLOP count as the scaling law's compute-optimal allocation and the plan's cost)."""
    from windtunnel import fit

    out = {}
    for model, group in points.groupby("model"):
        if len(group) < 4:  # three parameters per form: a fit needs one point to spare
            out[model] = {"skipped": f"{len(group)} points; the envelope needs at least 4"}
            continue
        compute = 6 * group[N_KINDS[n_kind]].to_numpy(float) * group["D"].to_numpy(float)
        out[model] = fit.fit_envelope(compute, group["loss"].to_numpy(float)).to_dict()
    return out


def decay_points(frame: pd.DataFrame) -> pd.DataFrame:
    """The decay branches of a branched sweep: the final points L(N, D) of §5 and the envelope of §4.3."""
    return frame[frame["stage"] == "decay"].reset_index(drop=True)


# ---------------------------------------------------------------- fit.json


def write_json(path: Path, payload: dict) -> Path:
    """Write atomically (temporary file, then rename): a report never reads half a fit."""
    path.parent.mkdir(parents=True, exist_ok=True)
    return write_atomic(path, dumps(payload) + "\n")


def dumps(payload: dict, *, indent: int | None = 1) -> str:
    """JSON of a fit result (numpy scalars and arrays included)."""
    return json.dumps(payload, indent=indent, default=_jsonable)


def _jsonable(value):
    if hasattr(value, "item"):  # numpy scalars
        return value.item()
    if hasattr(value, "tolist"):
        return value.tolist()
    raise TypeError(f"not JSON-serialisable: {type(value).__name__}")


def read_fit(study: str) -> dict | None:
    """results/<study>/fit.json, or None when that study has not been fitted."""
    path = results_dir() / study / "fit.json"
    return json.loads(path.read_text()) if path.is_file() else None


def _store() -> str:
    from windtunnel.tracking import tracking_uri

    return tracking_uri()


# ---------------------------------------------------------------- analysis scripts


def run_script(main, doc: str, argv: list[str] | None = None) -> int:
    """Parse an analysis script's options and run `main(args)`: exit 0 done, 2 bad input, 3 sweep not run (skipped)."""
    parser = argparse.ArgumentParser(description=doc.splitlines()[0])
    parser.add_argument("--scale", default="micro", help="the sweep's scale (micro, demo, paper)")
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples for the intervals")
    parser.add_argument("--no-plots", action="store_true", help="write fit.json only")
    parser.add_argument("--all-runs", action="store_true",
                        help="also use stored runs that the sweep's spec file no longer produces")
    args = parser.parse_args(argv)
    try:
        main(args)
    except NoRuns as err:
        print(f"skipped: {err}", file=sys.stderr)
        return 3
    except WindtunnelError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    return 0
