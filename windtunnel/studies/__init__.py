"""The studies of the paper, in one registry: name → the sweep it reads, how its rows come out of the stored
runs, its fit, its figures, what a terminal shows and what the plan takes from it (windtunnel.studies.study.Study).

`windtunnel fit STUDY` and `windtunnel fit --all` (`make fit`, `make plots`), the report's sections and the plan's
inputs all read STUDIES, so a new study is one entry here (the report then shows its fit.json and figures;
windtunnel.findings states the paper's claims on the studies it knows). LAWS are the laws `windtunnel fit KIND
(--sweep NAME | --csv PATH)` fits on their own and prints, writing nothing (docs/method.md §6); each reads its rows
as a study of STUDIES does.

    result, written = studies.run("scaling_law", Options(scale="micro"))   # results/scaling_law/fit.json + figures
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Callable

from windtunnel.errors import WindtunnelError, did_you_mean
from windtunnel.studies import curves, decay, laws
from windtunnel.studies.laws import (FORM_NAMES, N_KINDS, N_NAMES, describe_scaling_law, fit_batch_size_study,
                                     fit_envelope_study, fit_lr_study, fit_scaling_law_study, per_set_laws,
                                     with_compute)
from windtunnel.studies.points import (NoRuns, decay_points, dumps, final_points, ladder_facts, loss_curves, read_fit,
                                       study_dir, write_json)
from windtunnel.studies.study import Fitted, Options, Study

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["STUDIES", "LAWS", "Study", "Law", "Options", "Fitted", "get", "run", "law_points", "planned", "NoRuns",
           "final_points", "decay_points", "loss_curves", "ladder_facts", "fit_scaling_law_study",
           "fit_batch_size_study", "fit_lr_study", "fit_envelope_study", "per_set_laws", "describe_scaling_law",
           "study_dir", "write_json", "dumps", "read_fit", "N_KINDS", "N_NAMES", "FORM_NAMES"]


def runs(sweep: str, o: Options) -> tuple[pd.DataFrame, dict[str, int]]:
    """Every finished run of the sweep, one row each."""
    return final_points(sweep, scale=o.scale, current=o.current)


def runs_and_diverged(sweep: str, o: Options) -> tuple[pd.DataFrame, dict[str, int]]:
    """The finished and the diverged runs (loss inf): to an LR sweep a divergence is a censored point."""
    return final_points(sweep, scale=o.scale, current=o.current, diverged=True)


def branches(sweep: str, o: Options) -> tuple[pd.DataFrame, dict[str, int]]:
    """The decay branches of a branched sweep: the final points L(N, D) of §5."""
    frame, excluded = runs(sweep, o)
    return decay_points(frame), excluded


STUDIES: dict[str, Study] = {s.name: s for s in (  # the order of `windtunnel fit --all` and of the report
    Study(name="scaling_law", title="Scaling law L(N, D) — §5", sweep="scaling_law", points=branches,
          fit=laws.scaling_law, describe=laws.describe_scaling_law, plan="scaling",
          figures=("fig10_iso_loss.png", "fig17_loss_vs_tokens.png", "fig6_envelope.png", "backtests.png",
                   "copy_gap.png")),
    Study(name="batch_size", title="Batch-size law — §3.2", sweep="batch_size", points=runs, fit=laws.batch_size,
          describe=laws.describe_batch_size, plan="batch",
          figures=("fig1_tokens_vs_batch.png", "fig2_batch_size_law.png")),
    Study(name="lr", title="LR transfer, µP against SP — §3.3", sweep="lr", points=runs_and_diverged,
          fit=laws.lr_transfer, describe=laws.describe_lr, plan="lr", figures=("fig3_lr_transfer.png",)),
    Study(name="wsd", title="WSD against Cosine(T) — §4", sweep="wsd", points=runs, fit=decay.wsd,
          describe=decay.describe_wsd,
          figures=("fig4_wsd_vs_cosine.png", "fig5_decay_fractions.png", "fig6_envelope.png")),
    Study(name="decay_dynamics", title="Decay dynamics — §4.4", sweep="wsd", points=decay.dynamics_points,
          fit=decay.decay_dynamics, describe=decay.describe_decay_dynamics, figures=("decay_dynamics.png",)),
    Study(name="decay_data", title="Decays on other data — §6", sweep="decay_data", points=branches,
          fit=decay.decay_data, describe=decay.describe_decay_data),
    Study(name="loss_curve", title="Loss curve L(N, schedule, step) on held-out schedules", sweep="scaling_law",
          points=curves.curve_points, fit=curves.loss_curve, describe=curves.describe_loss_curve, plan="curve",
          figures=("held_out.png",)),
)}


def get(name: str) -> Study:
    """A study by name (hyphens read as underscores: scaling-law is scaling_law)."""
    study = STUDIES.get(name.replace("-", "_"))
    if study is None:
        raise WindtunnelError(f"no study {name!r}; {did_you_mean(name.replace('-', '_'), STUDIES)}studies: "
                              f"{', '.join(STUDIES)}")
    return study


def run(name: str, o: Options = Options(), *, figures: bool = True) -> tuple[dict, list[Path]]:
    """Fit a study on its stored runs: results/<name>/fit.json (written atomically) and, unless figures=False, its
    figures beside it. Returns fit.json's content and the files written. Raises NoRuns when its sweep has not run."""
    study = get(name)
    frame, excluded = study.points(study.sweep, o)
    fitted = study.fit(frame, o)
    result = {**fitted.result, "scale": o.scale, "excluded": excluded}
    folder = study_dir(study.name)
    written = [write_json(folder / "fit.json", result)]
    undeclared = set(fitted.figures) - set(study.figures)
    if undeclared:
        raise WindtunnelError(f"study {study.name} drew {sorted(undeclared)}, not in its registry entry's figures")
    for file in study.figures if figures else ():
        drawn = fitted.figures[file](folder / file) if file in fitted.figures else None
        if drawn is not None:  # a figure without data (no branch to show, no backtest) is left out
            written.append(drawn)
    return result, written


def planned() -> dict[str, Study]:
    """The studies whose fit.json the plan reads, by the make_plan keyword each feeds."""
    return {s.plan: s for s in STUDIES.values() if s.plan}


# ---------------------------------------------------------------- the laws `windtunnel fit KIND` prints


@dataclass(frozen=True, kw_only=True)
class Law:
    """A law fitted on its own, from a study's rows or a CSV: printed, nothing written."""

    study: str
    """the study whose rows it takes from a stored sweep (and whose sweep is the default of --sweep)"""
    columns: tuple[str, ...]
    """the columns a CSV must have (renamed with --*-col)"""
    fit: Callable[[pd.DataFrame, Options], dict]
    """the rows → the law"""
    table: Callable[[pd.DataFrame], pd.DataFrame] = lambda frame: frame
    """the study's rows → the rows the law takes (a CSV gives those directly)"""


LAWS: dict[str, Law] = {
    "scaling-law": Law(study="scaling_law", columns=("N", "D", "loss"),
                       fit=lambda t, o: fit_scaling_law_study(with_compute(t, o.flops, o.n_kind), bootstrap=o.bootstrap,
                                                              form=o.form, n_kind=o.n_kind, budgets=o.budgets,
                                                              flops=o.flops)),
    "batch-size": Law(study="batch_size", columns=("model", "batch_tokens", "tokens", "loss"),
                      fit=lambda t, o: fit_batch_size_study(t, bootstrap=o.bootstrap),
                      table=lambda frame: loss_curves(frame, metric="eval")),
    "lr": Law(study="lr", columns=("model", "lr", "loss"), fit=lambda t, o: fit_lr_study(t, bootstrap=o.bootstrap)),
    "envelope": Law(study="scaling_law", columns=("C", "loss"),
                    fit=lambda t, o: fit_envelope_study(t if "C" in t else with_compute(t, o.flops, o.n_kind))),
}


def law_points(kind: str, sweep: str | None, o: Options) -> tuple[pd.DataFrame, dict[str, int]]:
    """The rows of law `kind` from a stored sweep (default: its study's), as that study reads them."""
    law = LAWS[kind]
    study = STUDIES[law.study]
    frame, excluded = study.points(sweep or study.sweep, o)
    return law.table(frame), excluded
