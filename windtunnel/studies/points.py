"""Stored sweeps → the tidy tables the fits take (the join of tracking and fit), and fit.json on disk.

A study reads a sweep of `sweeps/` back from MLflow: one row per finished run, with its loss = the mean over the
held-out sets of the final bits per byte (docs/method.md §3: averaged per byte, so tokenizers compare). Failed,
diverged and unfinished runs are left out and counted with their reason, and so are decay branches forked while their
stable run was learning in-context copying (its copy gap rising fast: issue 22), whose loss sits between two regimes.

    frame, excluded = final_points("scaling_law", scale="micro")
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from windtunnel.errors import WindtunnelError
from windtunnel.paths import results_dir, write_atomic

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["final_points", "decay_points", "loss_curves", "ladder_facts", "study_dir", "write_json", "dumps",
           "read_fit", "NoRuns", "transition_rate", "transition_rates", "copy_gap_curves", "copy_gap_ladder",
           "TRANSITION_RATE", "TRANSITION_WINDOW"]

NUMERIC = {"N": "params.N", "D": "params.D", "lr": "params.lr", "batch_tokens": "params.batch_tokens",
           "fork_step": "params.fork_step", "decay_fraction": "params.coord.decay_fraction",
           "branch_tokens_per_param": "params.coord.branch_tokens_per_param", "branch_tokens": "params.coord.branch_tokens",
           "epochs": "metrics.data/epochs", "seed": "params.seed", "d_model": "params.model.d_model", "seq_len": "params.seq_len",
           "n_layers": "params.model.n_layers",
           "vocab_size": "params.model.vocab_size", "period_tokens": "params.schedule.period_tokens"}
MUP_BASE = ("d_base", "d_head", "vocab_size", "scale_emb", "scale_depth", "init_std", "parametrization", "smear_keys")
# the µP base of a run's model: hyper-parameters found on a ladder transfer only within one base (docs/method.md §3)
TEXT = {"model": "params.model.name", "parametrization": "params.model.parametrization",
        "schedule": "params.schedule.kind", "decay_shape": "params.schedule.decay_shape",
        "stage": "params.coord.stage", "run": "tags.windtunnel.run", "parent": "tags.parent", "status": "tags.status",
        "corpus": "params.data.corpus", "decay_data": "params.coord.decay_data", "tokenizer": "params.tokenizer_sha256"}


class NoRuns(WindtunnelError):
    """The sweep a study reads has not been run at this scale (`windtunnel fit STUDY` then exits 3: skipped)."""


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
    A decay branch whose stable run was mid-transition at the fork (column copy_gap_rate above TRANSITION_RATE,
    see transition_rate) is left out and counted too.
    """
    frame, excluded, raw = _stored_points(sweep, scale=scale, current=current, diverged=diverged)
    branches = frame[frame["parent"] != ""]
    rates = transition_rates(branches, copy_gap_curves(raw, set(branches["group"])))
    frame = frame.assign(copy_gap_rate=rates.reindex(frame.index))
    mid = frame["copy_gap_rate"] > TRANSITION_RATE
    if mid.any():
        excluded[TRANSITION_REASON] = int(mid.sum())
    return frame[~mid].reset_index(drop=True), excluded


def _stored_points(sweep: str, *, scale: str, current: bool,
                   diverged: bool) -> tuple[pd.DataFrame, dict[str, int], pd.DataFrame]:
    """final_points before the transition flag, and the stored runs it read (MLflow's rows)."""
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
    frame["base.smear_keys"] = frame["base.smear_keys"].eq("True")  # MLflow's "True"; stored before it: without
    frame, excluded = _keep_finished(frame.reset_index(drop=True), diverged=diverged)
    from windtunnel.graph import expand, find_sweep, load_sweep

    try:  # the working directory's sweeps/NAME.yaml, else the packaged sweep of that name
        spec_file = find_sweep(Path("sweeps") / f"{sweep}.yaml")
    except WindtunnelError:  # a sweep of the user's own, not here: every stored run counts
        spec_file = None
    if current and spec_file is not None:
        ids = {run.id for run in expand(*load_sweep(spec_file, scale=scale), file=spec_file, scale_name=scale)}
        stale = ~frame["run"].isin(ids)
        if stale.any():
            excluded[f"not in the graph of {spec_file} any more (--all-runs keeps them)"] = int(stale.sum())
        frame = frame[~stale].reset_index(drop=True)
    # in run-id order, not the store's (when each run started): the same runs give the same fits and bootstrap
    # intervals whatever order a sweep trained them in
    return frame.sort_values("run", kind="stable").reset_index(drop=True), excluded, raw


def ladder_facts(frame: pd.DataFrame) -> dict:
    """What a plan must match to use a study's fits: the runs' µP base (one mapping, or a list when they mix
    bases), context length, corpus, tokenizer files (content fingerprints; none when the runs trained their own)
    and learning rates. Written into each study's fit.json."""
    bases = frame[[f"base.{k}" for k in MUP_BASE]].drop_duplicates().to_dict(orient="records")
    bases = [{k.removeprefix("base."): v if isinstance(v, bool) else _number(v) for k, v in b.items()} for b in bases]
    return {"mup_base": bases[0] if len(bases) == 1 else (bases or None),
            "seq_len": sorted({int(v) for v in frame["seq_len"].dropna()}),
            "corpus": sorted(set(frame["corpus"]) - {""}), "tokenizer": sorted(set(frame["tokenizer"]) - {""}),
            "lr": sorted({float(v) for v in frame["lr"].dropna()})}


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



def decay_points(frame: pd.DataFrame) -> pd.DataFrame:
    """The decay branches of a branched sweep: the final points L(N, D) of §5 and the envelope of §4.3."""
    return frame[frame["stage"] == "decay"].reset_index(drop=True)


# ---------------------------------------------------------------- the copy-gap transition (issue 22)


TRANSITION_RATE = 0.5
"""nats of mean copy gap per e-fold of tokens (transition_rate) above which a fork is mid-transition. Measured on
micro-142k (the micro ladder's lr 0.0222 and batch 4096, evaluated every 32 steps, every fork position re-read at
evaluations every 32, 64 and 192 steps): seed 1 learned in-context copying at 3–4.7M tokens, its gap 0.86 → 1.40
nats from step 768 to 1152 (~0.4 e-folds), and its forks from 3.5M tokens on read 0.48–1.32 (0.61–1.32 at the
sparsest cadence); without a jump — seed 1 before it, seed 0 (no jump in 6.3M tokens), the demo ladder's six
stable runs — every fork read -0.12…+0.26 (eval noise sd 0.026 nats). 0.5 is twice the largest of those, so a
drift of up to ~0.3 nats per e-fold after the jump (issue 22: 1.2–1.4 nats there) is not flagged either."""
TRANSITION_WINDOW = 1.5
"""the rate reads the evaluations from fork / TRANSITION_WINDOW to the fork: 0.4 e-folds, about the jump's length.
Reading from fork / 2 diluted the jump with the flat stretch before it (seed 1 at 4M tokens, every 192 steps:
0.37 against 0.61) and would still hold the whole jump 0.7 e-folds after it."""
TRANSITION_REASON = (f"mid-transition at the branch point (the stable run's copy gap rose > {TRANSITION_RATE:g} "
                     f"nats per e-fold of tokens over its last {np.log(TRANSITION_WINDOW):.1f} e-folds before the fork)")


def transition_rate(steps, gaps, fork: float) -> float:
    """How fast the copy gap rose before a fork: the least-squares slope of `gaps` (nats) on log `steps` over the
    evaluations from the last one at or before fork / TRANSITION_WINDOW to the last one at or before `fork`: nats
    per e-fold of tokens at a constant batch. NaN — never mid-transition — with fewer than two such evaluations
    (no copy-gap history, or none that early)."""
    steps, gaps = np.asarray(steps, float), np.asarray(gaps, float)
    start = steps[steps <= fork / TRANSITION_WINDOW]
    window = (steps >= start.max()) & (steps <= fork) if start.size else np.zeros(steps.size, bool)
    if window.sum() < 2:
        return float("nan")
    return float(np.polyfit(np.log(steps[window]), gaps[window], 1)[0])


def transition_rates(branches: pd.DataFrame, curves: pd.DataFrame) -> pd.Series:
    """transition_rate of each decay branch (columns group, fork_step) on its stable run's curve (copy_gap_curves),
    indexed as `branches`; NaN where the stable run has no copy-gap history."""
    import pandas as pd

    by_group = {group: curve for group, curve in curves.groupby("group")}
    rates = [transition_rate(by_group[g]["step"], by_group[g]["gap"], fork) if g in by_group else float("nan")
             for g, fork in zip(branches["group"], branches["fork_step"])]
    return pd.Series(rates, index=branches.index, dtype=float)


def copy_gap_curves(raw: pd.DataFrame, groups: set[str]) -> pd.DataFrame:
    """The mean over held-out sets of the copy gap (`eval/<set>/copy_gap`, nats) at every evaluation of the stable
    runs `groups` (windtunnel run ids) among MLflow's rows `raw`: columns group, step, tokens, gap. A run stored
    before the metric existed has no rows. One history read per run and held-out set: a study of ~50 runs reads
    its ~10 stable runs only."""
    import pandas as pd

    from windtunnel.tracking import metric_history

    rows = raw[raw["tags.windtunnel.run"].isin(groups)] if "tags.windtunnel.run" in raw else raw.iloc[:0]
    rows = rows.drop_duplicates("tags.windtunnel.run", keep="last")  # oldest first: the newest run of that id
    keys = [c for c in rows if c.startswith("metrics.eval/") and c.endswith("/copy_gap")]
    parts = []
    for _, row in rows.iterrows():
        sets = [k.removeprefix("metrics.") for k in keys if pd.notna(row[k])]
        if not sets:
            continue
        gap = pd.concat([metric_history(row["run_id"], k).set_index("step")["value"] for k in sets], axis=1)
        gap = gap.dropna().mean(axis=1)
        parts.append(pd.DataFrame({"group": row["tags.windtunnel.run"], "step": gap.index,
                                   "tokens": gap.index * float(row.get("params.batch_tokens", "nan")), "gap": gap.to_numpy()}))
    return pd.concat(parts, ignore_index=True) if parts else pd.DataFrame(columns=["group", "step", "tokens", "gap"])


def copy_gap_ladder(sweep: str, *, scale: str, current: bool = True) -> tuple[pd.DataFrame, pd.DataFrame]:
    """A branched sweep's copy gap, for its figure and fit.json: every stable run's curve (copy_gap_curves, with
    its model, N and seed) and every decay branch's branch point — columns name, model, N, seed, group,
    fork_tokens, gap (at the fork, interpolated in log tokens), copy_gap_rate, mid_transition — those final_points
    leaves out included."""
    frame, _, raw = _stored_points(sweep, scale=scale, current=current, diverged=False)
    branches = decay_points(frame)
    curves = copy_gap_curves(raw, set(frame.loc[frame["stage"] == "stable", "run"]) | set(branches["group"]))
    info = frame.drop_duplicates("group")[["group", "model", "N", "seed"]]
    forks = branches["fork_step"] * branches["batch_tokens"]
    points = branches[["name", "model", "N", "seed", "group"]].assign(
        fork_tokens=forks, gap=[_gap_at(curves[curves["group"] == g], t) for g, t in zip(branches["group"], forks)],
        copy_gap_rate=transition_rates(branches, curves))
    points = points.assign(mid_transition=points["copy_gap_rate"] > TRANSITION_RATE)
    return curves.merge(info, on="group"), points.sort_values(["N", "seed", "fork_tokens"]).reset_index(drop=True)


def _gap_at(curve: pd.DataFrame, tokens: float) -> float:
    """The copy gap of `curve` at `tokens`, interpolated in log tokens; NaN without a curve."""
    if curve.empty:
        return float("nan")
    return float(np.interp(np.log(tokens), np.log(curve["tokens"].to_numpy(float)), curve["gap"].to_numpy(float)))


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

