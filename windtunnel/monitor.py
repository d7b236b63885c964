"""A run against a plan's predicted curve: where it left the 95% band, if it did — afterwards or live.

    windtunnel monitor results/plans/micro-1.3m.yaml --csv curve.csv        # columns tokens, lr, loss
    windtunnel monitor results/plans/micro-1.3m.yaml --run 3f2a...          # an MLflow run of this store
    windtunnel launch results/plans/micro-1.3m.yaml [--stop-off-prediction]  # live: Live, at every evaluation

The plan's `predicted_curve` (tokens, loss, low, high and the planned lr at its evaluation points; `windtunnel plan`
writes it from the loss-curve law) is interpolated in log tokens at the run's evaluations. A run has left the band
when K evaluations in a row lie outside it (one stray evaluation is noise: K = 3 by default); the first of them is
where it left. Evaluations before the plan's first point or after its last are not compared, and counted.

Live (what `launch` runs on rank 0) makes the same call one evaluation at a time: it returns the metrics
predicted/bpb, predicted/low, predicted/high and monitor/z, and raises an alarm the evaluation the run has been outside
the band K times in a row. Its state — each evaluation's side of the band and the alarms — is the run folder's
monitor.json, rewritten at every evaluation, so a stopped and resumed run goes on counting where it stopped (an
evaluation replayed after a resume from an earlier checkpoint replaces the one it repeats).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from windtunnel.errors import WindtunnelError
from windtunnel.paths import write_atomic

__all__ = ["K", "LR_TOLERANCE", "Verdict", "Live", "alarm_text", "read_alarms", "plan_curve", "curve_frame", "read_csv",
           "run_curve", "compare"]

K = 3                 # consecutive evaluations outside the band that make an alarm
LR_TOLERANCE = 0.05   # a run's LR further than this (relative) from the plan's at the same tokens is noted
CURVE_KEYS = ("tokens", "loss", "low", "high")
CSV_COLUMNS = ("tokens", "lr", "loss")
STATE = "monitor.json"  # Live's state in the run folder
Z95 = 1.959964        # monitor/z is ±Z95 at the band's edges (the band is symmetric in log loss)


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

    return curve_frame(load_plan(path).get("predicted_curve"), path)


def curve_frame(curve: dict | None, path) -> pd.DataFrame:
    """A plan's `predicted_curve` mapping as a frame (see plan_curve); `path` names the plan in the error."""
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
    _check_k(k)
    span = _in_span(plan, run["tokens"].to_numpy())
    run = run[span].reset_index(drop=True)
    planned = _planned(plan, run["tokens"].to_numpy())
    loss = run["loss"].to_numpy()
    side = _side(loss, planned)
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


def _in_span(plan: pd.DataFrame, tokens: np.ndarray) -> np.ndarray:
    """Which of `tokens` lie within the plan's predicted span (the others are not compared)."""
    return (tokens >= plan["tokens"].iloc[0]) & (tokens <= plan["tokens"].iloc[-1])


def _planned(plan: pd.DataFrame, tokens: np.ndarray) -> dict[str, np.ndarray]:
    """The plan's columns (loss, low, high, lr) interpolated in log tokens at `tokens`."""
    at = np.log(tokens)
    return {c: np.interp(at, np.log(plan["tokens"].to_numpy()), plan[c].to_numpy()) for c in plan if c != "tokens"}


def _side(loss, planned: dict) -> np.ndarray:
    """+1 above the band, -1 below it, 0 inside."""
    return np.where(loss > planned["high"], 1, np.where(loss < planned["low"], -1, 0))


class Live:
    """The live check of one run against a plan's curve (`curve_frame`), its state kept in `folder`/monitor.json.

    observe(step, tokens, loss) → (metrics, alarm): the metrics to log at that evaluation (none beyond the plan's
    span) and, the evaluation the run has been outside the band `k` times in a row, the alarm: where it left, where
    it is, and on which side. A run that comes back inside and leaves again raises a new alarm."""

    def __init__(self, plan: pd.DataFrame, folder: Path, *, k: int = K):
        _check_k(k)
        self.plan, self.path, self.k = plan, Path(folder) / STATE, k
        self.state = _state(folder)

    @property
    def alarms(self) -> list[dict]:
        return self.state["alarms"]

    def observe(self, step: int, tokens: float, loss: float) -> tuple[dict, dict | None]:
        if not _in_span(self.plan, np.array([tokens]))[0]:
            return {}, None
        planned = {c: float(v[0]) for c, v in _planned(self.plan, np.array([float(tokens)])).items()}
        side = int(_side(loss, planned))
        half = np.log(planned["high"] / planned["loss"]) if side >= 0 else np.log(planned["loss"] / planned["low"])
        z = Z95 * float(np.log(loss / planned["loss"]) / half) if half > 0 else 0.0
        state = self.state  # a replayed evaluation (a resume from an earlier checkpoint) replaces what it repeats
        state["evals"] = [e for e in state["evals"] if e["step"] < step] + [
            {"step": step, "tokens": tokens, "loss": loss, "side": side, **planned}]
        state["alarms"] = [a for a in state["alarms"] if a["step"] < step]
        streak = 0
        for e in reversed(state["evals"]):
            if e["side"] == 0:
                break
            streak += 1
        alarm = None
        if streak == self.k:
            first = state["evals"][-self.k]
            alarm = {"step": step, "tokens": tokens, "loss": loss, "left_at_tokens": first["tokens"],
                     "side": "above" if side > 0 else "below", "low": planned["low"], "high": planned["high"],
                     "predicted": planned["loss"], "k": self.k}
            state["alarms"].append(alarm)
        write_atomic(self.path, json.dumps(state))
        metrics = {"predicted/bpb": planned["loss"], "predicted/low": planned["low"], "predicted/high": planned["high"],
                   "monitor/z": z}
        return metrics, alarm


def alarm_text(alarm: dict) -> str:
    """One line for an alarm of Live."""
    return (f"OFF PREDICTION at step {alarm['step']:,} ({alarm['tokens']:,.0f} tokens): held-out loss "
            f"{alarm['loss']:.4f} {alarm['side']} the plan's 95% band [{alarm['low']:.4f}, {alarm['high']:.4f}] for "
            f"{alarm['k']} evaluations in a row, since {alarm['left_at_tokens']:,.0f} tokens")


def read_alarms(folder: Path) -> list[dict]:
    """The alarms Live raised in a run folder (none when it kept no state)."""
    return _state(folder)["alarms"]


def _state(folder: Path) -> dict:
    """Live's state in a run folder: every evaluation compared and the alarms (both empty before the first)."""
    path = Path(folder) / STATE
    return json.loads(path.read_text()) if path.is_file() else {"evals": [], "alarms": []}


def _check_k(k: int) -> None:
    if k < 1:
        raise WindtunnelError(f"monitor: k={k} is not allowed; an integer >= 1 (evaluations in a row)")


def _first_run_of(flags: np.ndarray, k: int) -> int | None:
    """The index starting the first k consecutive True flags, or None."""
    count = 0
    for i, flag in enumerate(flags):
        count = count + 1 if flag else 0
        if count == k:
            return i - k + 1
    return None
