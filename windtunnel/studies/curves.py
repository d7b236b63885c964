"""Stored runs → whole loss curves with the LR schedule they trained under (windtunnel.curve.Curve; issue 23).

A run's held-out loss comes from points.loss_curves (the mean held-out bits per byte at each evaluation); its LR and
tokens from the trainer's per-step metrics `lr` and `tokens` (what the run trained under, a batch warm-up included).
A decay branch stores only its own steps: its whole curve is its stable run's up to the fork, then its own.

    frame, _ = final_points("wsd", scale="micro")
    curves = stored_curves(frame, whole=True)          # {MLflow run id: Curve}
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from windtunnel.curve import Curve
from windtunnel.errors import WindtunnelError
from windtunnel.studies.points import loss_curves

__all__ = ["step_history", "eval_history", "stored_curves", "schedule_label"]


def step_history(run_id: str) -> pd.DataFrame:
    """Every update of an MLflow run: columns step (1-based count of updates), tokens (seen after it), lr."""
    from windtunnel.tracking import metric_history

    lr = metric_history(run_id, "lr").drop_duplicates("step", keep="last").set_index("step")["value"]
    tokens = metric_history(run_id, "tokens").drop_duplicates("step", keep="last").set_index("step")["value"]
    both = pd.DataFrame({"tokens": tokens, "lr": lr}).dropna()
    if both.empty:
        raise WindtunnelError(f"MLflow run {run_id}: no per-step 'lr' and 'tokens' metrics (not a windtunnel run?)")
    return both.rename_axis("step").reset_index()


def eval_history(run_id: str) -> pd.DataFrame:
    """Each evaluation of an MLflow run: columns step, loss (the mean held-out bits per byte, as loss_curves)."""
    from windtunnel.tracking import metric_keys

    sets = [k.split("/")[1] for k in metric_keys(run_id, "eval/") if k.endswith("/bpb")]
    if not sets:
        raise WindtunnelError(f"MLflow run {run_id}: no held-out evaluation (metrics eval/<set>/bpb)")
    frame = pd.DataFrame({"run_id": [run_id], "model": "", "N": np.nan, "batch_tokens": 1, "lr": np.nan,
                          **{f"bpb_{s}": np.nan for s in sets}})
    return loss_curves(frame, metric="eval")[["step", "loss"]]


def _curve(steps: pd.DataFrame, evals: pd.DataFrame, *, n: float, group: str) -> Curve:
    """A Curve from per-step and per-evaluation histories that cover updates 1..S without a gap."""
    steps = steps.sort_values("step")
    if not np.array_equal(steps["step"].to_numpy(), np.arange(1, len(steps) + 1)):
        raise WindtunnelError(f"run {group}: its per-step metrics skip updates; cannot rebuild its LR schedule")
    evals = evals[evals["step"] <= len(steps)].sort_values("step")
    batch = np.diff(np.r_[0.0, steps["tokens"].to_numpy()])
    return Curve(n=n, lr=steps["lr"].to_numpy(), batch=batch, steps=evals["step"].to_numpy(),
                 loss=evals["loss"].to_numpy(), group=group)


def stored_curves(frame: pd.DataFrame, *, whole: bool) -> dict[str, Curve]:
    """The curve of every run of `frame` (points.final_points' rows), N = N_total, grouped by stable run.

    A branch's LR history always starts at step 1 (its stable run's prefix); its evaluations are its own
    (whole=False: for a fit, where the stable run's own curve holds the prefix once) or the prefix's too (whole=True:
    a held-out curve).
    """
    by_run = {row.run: row for row in frame.itertuples()}
    out = {}
    for row in frame.itertuples():
        steps, evals = step_history(row.run_id), eval_history(row.run_id)
        parent = by_run.get(row.parent) if row.parent else None
        if row.parent and parent is None:
            raise WindtunnelError(f"run {row.name}: its stable run {row.parent} is not among the runs read")
        if parent is not None:
            fork = int(row.fork_step)
            before = step_history(parent.run_id)
            steps = pd.concat([before[before["step"] <= fork], steps[steps["step"] > fork]])
            if whole:
                prefix = eval_history(parent.run_id)
                evals = pd.concat([prefix[prefix["step"] <= fork], evals[evals["step"] > fork]])
        out[row.run_id] = _curve(steps, evals, n=float(row.N_total), group=row.group)
    return out


def schedule_label(row) -> str:
    """A run's schedule in a few words: "constant", "wsd 10% exp", "cosine T=S", "cosine_loop T=0.25S"."""
    if row.stage == "decay" or row.schedule == "wsd":
        return f"wsd {row.decay_fraction:.3g} {row.decay_shape}" if not np.isnan(row.decay_fraction) \
            else f"wsd {row.decay_shape}"
    if row.schedule in ("cosine", "cosine_loop"):
        period = row.D if np.isnan(row.period_tokens) else row.period_tokens
        return f"{row.schedule} T=S" if abs(period - row.D) <= 0.01 * row.D else f"{row.schedule} T={period / row.D:.2g}S"
    return str(row.schedule)
