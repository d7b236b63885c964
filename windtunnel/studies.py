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

from windtunnel.errors import WindtunnelError
from windtunnel.paths import results_dir, write_atomic

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["final_points", "decay_points", "loss_curves", "fit_scaling_law_study", "fit_batch_size_study",
           "fit_lr_study", "fit_envelope_study", "write_json", "dumps", "read_fit", "study_dir", "run_script", "NoRuns",
           "SWEEP_OF"]

SWEEP_OF = {"scaling-law": "scaling_law", "batch-size": "batch_size", "lr": "lr", "envelope": "scaling_law"}
# the sweep each `windtunnel fit` kind reads by default; the envelope is the series WSD(D, 0.1D) of each size (§4.3)
NUMERIC = {"N": "params.N", "D": "params.D", "lr": "params.lr", "batch_tokens": "params.batch_tokens",
           "fork_step": "params.fork_step", "decay_fraction": "params.coord.decay_fraction",
           "branch_tokens_per_param": "params.coord.branch_tokens_per_param"}
TEXT = {"model": "params.model.name", "parametrization": "params.model.parametrization",
        "schedule": "params.schedule.kind", "decay_shape": "params.schedule.decay_shape",
        "stage": "params.coord.stage", "run": "tags.windtunnel.run", "parent": "tags.parent", "status": "tags.status"}


class NoRuns(WindtunnelError):
    """The sweep a study reads has not been run at this scale (an analysis script then exits 3: skipped)."""


def study_dir(study: str) -> Path:
    """results/<study>/: where a study's fit.json and figures go."""
    folder = results_dir() / study
    folder.mkdir(parents=True, exist_ok=True)
    return folder


def final_points(sweep: str, *, scale: str, current: bool = True) -> tuple[pd.DataFrame, dict[str, int]]:
    """The finished runs of `sweep` at `scale`, one row each, and {reason: count} of the runs left out.

    current=True keeps only the runs of the graph sweeps/<sweep>.yaml expands to now (when that file is here):
    runs of an earlier version of the spec (another grid, budget or base) are left out and counted.
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
    frame, excluded = _keep_finished(frame.reset_index(drop=True))
    spec_file = Path("sweeps") / f"{sweep}.yaml"
    if current and spec_file.is_file():
        from windtunnel.graph import expand, load_sweep

        ids = {run.id for run in expand(*load_sweep(spec_file, scale=scale), file=spec_file, scale_name=scale)}
        stale = ~frame["run"].isin(ids)
        if stale.any():
            excluded[f"not in the graph of {spec_file} any more (--all-runs keeps them)"] = int(stale.sum())
        frame = frame[~stale].reset_index(drop=True)
    return frame, excluded


def _keep_finished(frame: pd.DataFrame) -> tuple[pd.DataFrame, dict[str, int]]:
    excluded: dict[str, int] = {}
    for status in sorted(set(frame["status"]) - {"finished"}):
        excluded[status or "unfinished"] = int((frame["status"] == status).sum())
    frame = frame[frame["status"] == "finished"]
    no_eval = frame["loss"].isna()
    if no_eval.any():
        excluded["finished without a held-out evaluation"] = int(no_eval.sum())
    return frame[~no_eval].reset_index(drop=True), excluded


def loss_curves(frame: pd.DataFrame, *, metric: str = "eval") -> pd.DataFrame:
    """Per run of `frame`, its loss against tokens: columns run_id, model, N, batch_tokens, lr, tokens, loss.

    metric "eval": the mean held-out bits per byte at each evaluation (the sets of the `bpb_*` columns);
    "train": the training loss of every step (nats per token). Gradient statistics come along with "train".
    """
    import pandas as pd

    from windtunnel.tracking import metric_history

    keys = ([f"eval/{c[4:]}/bpb" for c in frame if c.startswith("bpb_")] if metric == "eval"
            else ["train/loss", "grad/norm", "grad/cos_prev", "update/max_abs", "lr"])
    parts = []
    for row in frame.itertuples():
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


# ---------------------------------------------------------------- the studies


def fit_scaling_law_study(points: pd.DataFrame, *, bootstrap: int, budgets=(1e18, 1e20, 1e22, 1e24), seed: int = 0) -> dict:
    """§5: L(N,D) by Huber/L-BFGS and by curve_fit, the compute-optimal allocation and the backtest."""
    from windtunnel import fit

    n, d, loss = points["N"].to_numpy(float), points["D"].to_numpy(float), points["loss"].to_numpy(float)
    robust = fit.fit_scaling_law(n, d, loss, method="huber", bootstrap=bootstrap, seed=seed)
    paper = fit.fit_scaling_law(n, d, loss, method="curve_fit", bootstrap=bootstrap, seed=seed)
    return {**robust.to_dict(samples=True), "curve_fit": paper.to_dict(), "n_max": float(n.max()),
            "compute_optimal": fit.compute_optimal(robust, list(budgets)).to_dict(orient="records"),
            "backtest": fit.backtest_scaling_law(n, d, loss).to_dict(),
            "n_models": int(points["model"].nunique()) if "model" in points else None}


def fit_batch_size_study(curves: pd.DataFrame, *, bootstrap: int, seed: int = 0) -> dict:
    """§3.2: tokens to reach each loss against batch size, its optima, and bs_opt = k / L^γ."""
    from windtunnel import fit

    return fit.fit_batch_size_law(curves, bootstrap=bootstrap, seed=seed).to_dict(samples=True)


def fit_lr_study(points: pd.DataFrame, *, bootstrap: int, seed: int = 0) -> dict:
    """§3.3: optimal LR per width under µP and SP, and the spread of the optima."""
    from windtunnel import fit

    return fit.fit_lr_transfer(points, bootstrap=bootstrap, seed=seed).to_dict()


def fit_envelope_study(points: pd.DataFrame) -> dict:
    """§4.3: per model, the series WSD(D, 0.1D) fit by a power law and by an exponential in compute C = 6ND."""
    from windtunnel import fit

    out = {}
    for model, group in points.groupby("model"):
        if len(group) < 4:  # three parameters per form: a fit needs one point to spare
            out[model] = {"skipped": f"{len(group)} points; the envelope needs at least 4"}
            continue
        compute = 6 * group["N"].to_numpy(float) * group["D"].to_numpy(float)
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
