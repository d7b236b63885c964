"""The search's Optuna study, stored in a journal file: `results/search/<name>-<scale>/study.journal`.

Ray Tune's OptunaSearch asks and tells this stored study (only the driver writes it; Ray workers never
touch it), so a resumed or extended search continues the same study: trial numbers go on, TPE sees every
earlier trial, and `optuna-dashboard --storage-class JournalFileStorage <folder>/study.journal` (or
`make optuna-dashboard`) shows it while it runs. What the stored trials hold:

- a finished trial: COMPLETE with its objective;
- a diverged one: COMPLETE with the penalty DIVERGED (so TPE learns to avoid the region), user attr
  `status: diverged` and the reason; `plot_view` shows it as FAIL;
- one stopped by ASHA: PRUNED, its value the last reported objective;
- one that raised, or was lost when the search was killed (asked after Tune's last checkpoint): FAIL;
- every one: its intermediate objective per report (step = Tune's training iteration), user attrs `status`,
  `reason`, `evals` and `run` (its run dir results/runs/<run>).

Imports ray and optuna: load it lazily.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import optuna
from optuna.exceptions import UpdateFinishedTrialError
from optuna.storages import JournalStorage
from optuna.storages.journal import JournalFileBackend
from optuna.trial import TrialState
from ray.tune.result import TRAINING_ITERATION
from ray.tune.search.optuna import OptunaSearch

from windtunnel.search.outputs import STUDY_FILE
from windtunnel.search.spec import SearchSpec

__all__ = ["StoredSearch", "storage", "load", "distributions", "close_lost", "plot_view"]

LOST = "lost: its Tune trial was not saved when the search was stopped"


def storage(folder: Path) -> JournalStorage:
    """The study's storage: a journal file, safe for several processes (file lock), absolute so that a
    pickled copy (Tune's searcher checkpoint) opens the same file from any directory."""
    return JournalStorage(JournalFileBackend(str((Path(folder) / STUDY_FILE).resolve())))


def load(folder: Path) -> optuna.Study:
    """The stored study, named after its folder (<name>-<scale>); created empty if the search has not started."""
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    return optuna.create_study(storage=storage(folder), study_name=Path(folder).name, direction="minimize",
                               load_if_exists=True)


def distributions(spec: SearchSpec) -> dict:
    """The search space as Optuna distributions: integers for token counts."""
    return {p.name: (optuna.distributions.IntDistribution(int(p.low), int(p.high), log=p.log) if p.integer else
                     optuna.distributions.FloatDistribution(p.low, p.high, log=p.log)) for p in spec.space}


class StoredSearch(OptunaSearch):
    """OptunaSearch telling the stored study what became of each trial (Ray tells every trial that reported
    a value COMPLETE, ASHA's stopped ones included) and why, as user attrs.

    After a kill, the store may be ahead of Tune's last checkpoint: a trial Tune runs again may already be
    finished in the store, which then keeps its first outcome (the same run dir gives the same numbers).
    """

    def on_trial_result(self, trial_id: str, result: dict):
        try:
            super().on_trial_result(trial_id, result)
        except UpdateFinishedTrialError:
            pass

    def on_trial_complete(self, trial_id: str, result: dict | None = None, error: bool = False):
        ot_trial = self._ot_trials.get(trial_id)
        if ot_trial is None or trial_id in self._completed_trials:
            return super().on_trial_complete(trial_id, result, error)
        status = _status(result or {}, error=error)
        try:
            self._tell(ot_trial, status, result or {}, error)
        except UpdateFinishedTrialError:
            pass
        self._completed_trials.add(trial_id)

    def _tell(self, ot_trial, status: str, result: dict, error: bool) -> None:
        for key in ("reason", "evals", "run"):
            if key in result:
                ot_trial.set_user_attr(key, result[key])
        ot_trial.set_user_attr("status", status)
        if self.metric in result and not error:  # Tune passes the last report here only: an intermediate too
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", message="The reported value is ignored")
                ot_trial.report(result[self.metric], result[TRAINING_ITERATION])
        if status in ("complete", "diverged"):
            self._ot_study.tell(ot_trial, result[self.metric])
        else:  # a pruned trial's value: its last intermediate one
            self._ot_study.tell(ot_trial, state=TrialState.PRUNED if status == "pruned" else TrialState.FAIL)


def _status(result: dict, *, error: bool) -> str:
    """complete | diverged | pruned | failed, from a trial's last report."""
    if error:
        return "failed"
    return {"finished": "complete", "diverged": "diverged"}.get(result.get("status"), "pruned")


def close_lost(study: optuna.Study) -> int:
    """Fail the trials still RUNNING after a search ended: asked before a kill, their Tune trial was not
    saved, so nothing will tell them. Returns how many."""
    lost = [t for t in study.get_trials(deepcopy=False) if t.state == TrialState.RUNNING]
    for t in lost:
        trial = optuna.Trial(study, t._trial_id)
        trial.set_user_attr("status", "failed")
        trial.set_user_attr("reason", LOST)
        study.tell(trial, state=TrialState.FAIL, skip_if_finished=True)
    return len(lost)


def plot_view(study: optuna.Study) -> optuna.Study:
    """An in-memory copy of the stored study for plots, diverged trials as FAIL (their penalty is no loss)."""
    view = optuna.create_study(direction="minimize", study_name=study.study_name)
    for t in study.get_trials(deepcopy=False, states=(TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)):
        if t.user_attrs.get("status") == "diverged":
            t = optuna.trial.create_trial(state=TrialState.FAIL, params=t.params, distributions=t.distributions,
                                          intermediate_values=t.intermediate_values, user_attrs=t.user_attrs)
        view.add_trial(t)
    return view
