"""Any run against a plan's predicted curve: where it left the 95% band, if it did (issue 23, point 5).

    windtunnel monitor results/plans/micro-1.3m.yaml --csv curve.csv        # columns tokens, lr, loss
    windtunnel monitor results/plans/micro-1.3m.yaml --run 3f2a...          # an MLflow run of this store

The plan's `predicted_curve` (tokens, loss, low, high and the planned lr at its evaluation points; `windtunnel plan`
writes it from the loss-curve law) is interpolated in log tokens at the run's evaluations. A run has left the band
when K evaluations in a row lie outside it (one stray evaluation is noise: K = 3 by default); the first of them is
where it left. Evaluations before the plan's first point or after its last are not compared, and counted.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from windtunnel.errors import WindtunnelError

__all__ = ["K", "LR_TOLERANCE", "Verdict", "plan_curve", "read_csv", "run_curve", "compare"]

K = 3                 # consecutive evaluations outside the band that make an alarm
LR_TOLERANCE = 0.05   # a run's LR further than this (relative) from the plan's at the same tokens is noted
CURVE_KEYS = ("tokens", "loss", "low", "high")
CSV_COLUMNS = ("tokens", "lr", "loss")


@dataclass(frozen=True)
class Verdict:
    """What monitor found: evaluations compared, outside the band, and where the run left it (None: it did not)."""

    compared: int
    outside: int
    not_compared: int           # evaluations beyond the plan's span of tokens
    left: dict | None           # the first of K outside: {"tokens", "loss", "predicted", "low", "high", "side"}
    lr_departs: dict | None     # {"tokens", "lr", "planned"} where the run's LR first left the plan's by LR_TOLERANCE
    k: int


def plan_curve(path) -> pd.DataFrame:
    """The plan's predicted curve as columns tokens, loss, low, high (and lr when it has one)."""
    from windtunnel.launch import load_plan

    curve = load_plan(path).get("predicted_curve")
    if not isinstance(curve, dict) or any(k not in curve for k in CURVE_KEYS):
        raise WindtunnelError(f"{path}: predicted_curve is missing or lacks one of {', '.join(CURVE_KEYS)}; plan the "
                              "target again (`windtunnel plan TARGET`) once results/loss_curve/fit.json exists")
    frame = pd.DataFrame({k: curve[k] for k in (*CURVE_KEYS, "lr") if k in curve}, dtype=float)
    if frame.empty or not np.all(np.diff(frame["tokens"]) > 0):
        raise WindtunnelError(f"{path}: predicted_curve.tokens must be a rising, non-empty list")
    return frame


def read_csv(path) -> pd.DataFrame:
    """A run's curve from a CSV with the columns tokens, lr, loss: every cell a finite number (tokens and loss > 0,
    lr ≥ 0), tokens rising; else one line naming the file, the line and the column."""
    from windtunnel.checks import csv_cells, read_csv

    raw = read_csv(path)
    missing = [c for c in CSV_COLUMNS if c not in raw]
    if missing:
        raise WindtunnelError(f"{path}: missing column {missing[0]!r}; the columns must be {', '.join(CSV_COLUMNS)} "
                              f"(found: {', '.join(map(str, raw.columns))})")
    if raw.empty:
        raise WindtunnelError(f"{path}: no rows under the header")
    def cells(name: str) -> pd.Series:
        positive = name != "lr"  # an LR may be 0 (the end of a decay)
        return csv_cells(raw[name], lambda v: np.isfinite(v) & ((v > 0) if positive else (v >= 0)), path=path,
                         name=name, allowed="a finite number > 0" if positive else "a finite number >= 0")

    out = pd.DataFrame({c: cells(c) for c in CSV_COLUMNS})
    falls = np.flatnonzero(np.diff(out["tokens"].to_numpy()) <= 0)
    if falls.size:
        line = out.index[falls[0] + 1]
        raise WindtunnelError(f"{path}: line {line} (the header is line 1), column 'tokens': "
                              f"{out['tokens'][line]:g} is not allowed; tokens must rise from line to line "
                              f"(the line before has {out['tokens'].iloc[falls[0]]:g})")
    return out.reset_index(drop=True)


def run_curve(run_id: str) -> pd.DataFrame:
    """An MLflow run's evaluations as columns tokens, lr, loss (the LR of the update before each evaluation)."""
    from windtunnel.studies.curves import eval_history, step_history

    steps = step_history(run_id).set_index("step")
    evals = eval_history(run_id)
    evals = evals[evals["step"].isin(steps.index)]
    return pd.DataFrame({"tokens": steps.loc[evals["step"], "tokens"].to_numpy(),
                         "lr": steps.loc[evals["step"], "lr"].to_numpy(), "loss": evals["loss"].to_numpy()})


def compare(plan: pd.DataFrame, run: pd.DataFrame, *, k: int = K) -> Verdict:
    """Where `run` (tokens, lr, loss) left the band of `plan` (plan_curve): the first of k evaluations in a row
    outside it."""
    if k < 1:
        raise WindtunnelError(f"monitor: k={k} is not allowed; an integer >= 1 (evaluations in a row)")
    span = (run["tokens"] >= plan["tokens"].iloc[0]) & (run["tokens"] <= plan["tokens"].iloc[-1])
    run = run[span].reset_index(drop=True)
    at = np.log(run["tokens"].to_numpy())
    planned = {c: np.interp(at, np.log(plan["tokens"].to_numpy()), plan[c].to_numpy()) for c in plan if c != "tokens"}
    loss = run["loss"].to_numpy()
    side = np.where(loss > planned["high"], 1, np.where(loss < planned["low"], -1, 0))
    left = _first_run_of(side != 0, k)
    where = None
    if left is not None:
        where = {"tokens": float(run["tokens"][left]), "loss": float(loss[left]),
                 "predicted": float(planned["loss"][left]), "low": float(planned["low"][left]),
                 "high": float(planned["high"][left]), "side": "above" if side[left] > 0 else "below"}
    lr = None
    if "lr" in planned:
        off = np.abs(run["lr"].to_numpy() / np.maximum(planned["lr"], 1e-30) - 1) > LR_TOLERANCE
        first = _first_run_of(off, 1)
        if first is not None:
            lr = {"tokens": float(run["tokens"][first]), "lr": float(run["lr"][first]),
                  "planned": float(planned["lr"][first])}
    return Verdict(compared=len(run), outside=int((side != 0).sum()), not_compared=int((~span).sum()), left=where,
                   lr_departs=lr, k=k)


def _first_run_of(flags: np.ndarray, k: int) -> int | None:
    """The index starting the first k consecutive True flags, or None."""
    count = 0
    for i, flag in enumerate(flags):
        count = count + 1 if flag else 0
        if count == k:
            return i - k + 1
    return None
