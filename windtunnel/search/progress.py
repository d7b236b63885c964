"""The search's progress on stderr: one line per ended trial above a bar of trials done and the best objective
so far. Tune reports trial ends to the driver through `Relay`, a stateless (picklable, restorable) callback.
"""

from __future__ import annotations

import math
import sys

from windtunnel.search.outputs import TrialOutcome, best
from windtunnel.search.spec import SearchSpec, rounded
from windtunnel.search.trial import METRIC

__all__ = ["Relay", "Board", "tag_index"]

_BOARD: Board | None = None  # the driver's progress display, found by the (pickled, restorable) Tune callback


def tag_index(trial) -> int:
    """The trial's 0-based index within its round (Tune's experiment tag starts with the 1-based one)."""
    return int(trial.experiment_tag.split("_")[0]) - 1


class Relay:
    """A Tune callback forwarding trial ends to the driver's board; stateless, so Tuner.restore can unpickle it."""

    def __getattr__(self, name):  # every other Callback hook does nothing
        if name.startswith("on_") or name in ("setup", "get_state", "set_state"):
            return lambda *args, **kwargs: None
        raise AttributeError(name)

    def on_trial_complete(self, iteration, trials, trial, **info):
        if _BOARD:
            _BOARD.trial_end(trial, error=None)

    def on_trial_error(self, iteration, trials, trial, **info):
        if _BOARD:
            _BOARD.trial_end(trial, error=getattr(trial, "error_file", None) or "raised")


class Board:
    """One line per ended trial above a bar of trials done with the best objective so far."""

    def __init__(self, spec: SearchSpec, *, total: int, enabled: bool):
        from tqdm.auto import tqdm

        global _BOARD
        self.spec, self.offset, self.best = spec, 0, math.inf
        self.bar = tqdm(total=total, unit="trial", desc=f"search {spec.name}", disable=not enabled,
                        dynamic_ncols=True, file=sys.stderr, mininterval=0.5 if sys.stderr.isatty() else 30)
        _BOARD = self

    def round(self, done: list[TrialOutcome]) -> None:
        """A round starts after the trials `done` (of earlier rounds)."""
        top = best(done)
        self.offset, self.best = len(done), min(self.best, top.value if top else math.inf)
        self.bar.n = len(done)
        self.bar.refresh()

    def trial_end(self, trial, *, error) -> None:
        last = trial.last_result or {}
        number = self.offset + tag_index(trial)
        params = " ".join(f"{k.split('.')[-1]}={rounded(v):g}" for k, v in (trial.config or {}).items())
        if not self.bar.disable:
            self.bar.write(f"trial {number:>4}  {self._text(last, error)}  {params}", file=sys.stderr)
        self.bar.set_postfix_str(f"best {self.best:.4f} {self.spec.objective}" if math.isfinite(self.best) else "")
        self.bar.update(1)

    def _text(self, last: dict, error) -> str:
        value, status = last.get(METRIC), last.get("status")
        if error:
            return f"failed    (raised; see {error})"
        if status == "diverged":
            return f"failed    ({last.get('reason')})"
        if status == "finished":
            self.best = min(self.best, value)
            return f"complete  {value:.4f}"
        return f"pruned    {value:.4f} after {last.get('evals')} evals" if value is not None else "pruned"

    def close(self) -> None:
        global _BOARD
        self.bar.close()
        _BOARD = None
