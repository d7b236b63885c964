"""What a study is (the rows of the registry in windtunnel.studies) and what its fit gives back."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from windtunnel.counts import DEFAULT_FLOPS

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["Study", "Options", "Fitted"]

BUDGETS = (1e18, 1e20, 1e22, 1e24)  # FLOPs at which the scaling law's compute-optimal N and D are reported


@dataclass(frozen=True, kw_only=True)
class Options:
    """How a study or a law is fitted (`windtunnel fit` options)."""

    scale: str = "micro"
    """the scale section the sweep ran at (micro, demo, paper)"""
    bootstrap: int = 1000
    """resamples behind the 95% intervals (0: none)"""
    current: bool = True
    """only the runs the sweep's file expands to now (False: --all-runs, every stored run of the sweep)"""
    form: str | None = None
    """scaling law: the form that predicts (None: the one whose rolling backtests err less)"""
    n_kind: str = "total"
    """scaling law: N with the tied embedding ("total") or without ("non_embedding"); for a CSV, what its N column counts"""
    budgets: tuple[float, ...] = BUDGETS
    """scaling law: compute budgets (FLOPs, in the count `flops`) of the compute-optimal allocation"""
    flops: str = DEFAULT_FLOPS
    """the FLOP count of the allocation, the envelope and the budgets (windtunnel.fit.FLOP_COUNTS): "full" counts
    attention as the trainer does, "6nd" is the paper's 6·N·D; a CSV, which gives no architecture, counts 6nd"""


@dataclass(frozen=True)
class Fitted:
    """A study's fit: `result` is its fit.json (scale and excluded runs are added by `studies.run`), `figures` maps
    each figure's file name to what draws it there (called only when figures are asked for)."""

    result: dict
    figures: dict[str, Callable[[Path], Path | None]] = field(default_factory=dict)


@dataclass(frozen=True, kw_only=True)
class Study:
    """One study: the sweep it reads, how its rows come out of the stored runs, its fit and figures, what a
    terminal shows of it and what the plan takes from it."""

    name: str
    """results/<name>/ holds its fit.json and figures; `windtunnel fit NAME` runs it"""
    title: str
    """the report's heading, with the paper's section"""
    sweep: str
    """the sweep of sweeps/ it reads (its MLflow experiment)"""
    points: Callable[[str, Options], tuple[pd.DataFrame, dict[str, int]]]
    """(sweep, options) → the rows its fit takes and {reason: count} of the runs left out"""
    fit: Callable[[pd.DataFrame, Options], Fitted]
    """the rows → fit.json and what draws each of its figures"""
    describe: Callable[[dict], list[str]]
    """fit.json → the lines `windtunnel fit NAME` prints"""
    figures: tuple[str, ...] = ()
    """the files its fit draws beside fit.json (the paper's figure numbers), in the order they are drawn"""
    plan: str | None = None
    """the keyword of plan.make_plan its fit.json feeds (scaling, batch, lr, curve); None: the plan does not read it"""
