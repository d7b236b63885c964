"""The search file (`sweeps/mup_search.yaml`) as a validated SearchSpec, and the TrainSpec of one trial.

Every bad key or value, numeric ones included (ranges, trial counts, concurrency, ASHA, seed, tokens),
raises one SpecError line naming the file, the key, the value and what is allowed, before anything runs.

    spec = load_search("sweeps/mup_search.yaml", scale="micro")
    spec.template, spec.space, spec.trials   # every trial's base spec, the searched ranges, the budget
"""

from __future__ import annotations

import dataclasses
import math
from pathlib import Path
from typing import Literal

from windtunnel.checks import NON_NEGATIVE_INT, POSITIVE_INT, Flag, build, number, refuse, spec
from windtunnel.config import TrainSpec, apply_overrides, get_model, read_yaml, spec_hash
from windtunnel.errors import SpecError

__all__ = ["ParamRange", "AshaSpec", "SearchSpec", "SEARCHABLE", "OBJECTIVES", "load_search", "trial_spec",
           "rounded", "max_evals", "evals_at"]

SEARCHABLE = {  # dotted TrainSpec key → type of its values; the hyper-parameters a search may vary
    "lr": float, "weight_decay": float, "beta1": float, "beta2": float, "grad_clip": float,
    "model.scale_emb": float, "model.scale_depth": float, "model.init_std": float,
    "schedule.warmup_tokens": int, "schedule.decay_fraction": float,
}
OBJECTIVES = {"bpb": "mean held-out bits per byte", "loss": "mean held-out nats per token"}
SIGNIFICANT = 4  # suggested values are rounded to 4 significant digits: readable, and equal suggestions share a run
SEEDS = 2**32  # TPE's numpy RandomState takes seeds in [0, 2**32)


_END = number()  # a finite number


@spec
class ParamRange:
    """One dimension of the search space."""

    name: str
    """a dotted TrainSpec key of SEARCHABLE, e.g. "lr" or "model.scale_emb" """
    low: _END
    """lowest value (inclusive)"""
    high: _END
    """highest value (inclusive)"""
    log: Flag = False
    """sample log-uniformly (needs low > 0)"""

    def __post_init__(self):
        if self.integer and not all(float(v).is_integer() for v in (self.low, self.high)):
            raise refuse("low", (self.low, self.high), "whole numbers: this key counts tokens")
        if not self.low < self.high:
            raise refuse("low", self.low, f"less than high={self.high}")
        if self.log and self.low <= 0:
            raise refuse("low", self.low, "> 0 on a log scale (or log: false)")

    @property
    def integer(self) -> bool:
        """Token counts are integers: sampled as such."""
        return SEARCHABLE[self.name] is int


@spec
class AshaSpec:
    """ASHA early stopping (Li et al. 2020) on the objective reported at each evaluation."""

    enabled: Flag = True
    """False: every trial trains to the end"""
    grace_evals: POSITIVE_INT = 2
    """evaluations every trial gets before it can be stopped"""
    reduction_factor: number(low=1, low_open=True) = 3.0
    """at each rung only the best 1/reduction_factor of the trials go on"""


@spec
class SearchSpec:
    """A search at one scale, validated: everything `run_search` needs."""

    name: str
    """the search's name: its MLflow experiment and its folder results/search/<name>-<scale>/"""
    scale: str
    """the scale section used (micro | paper | ...)"""
    file: str
    """the search file, for messages"""
    description: str = ""
    """what the search is for"""
    template: TrainSpec
    """every trial's spec before the searched values are applied (model, tokens, base and scale overrides)"""
    space: tuple[ParamRange, ...]
    """the searched dimensions"""
    objective: str = "bpb"
    """a key of OBJECTIVES: what is minimised, averaged over the held-out sets at the end"""
    trials: int = 32
    """trials in all"""
    concurrency: int = 2
    """trials at once"""
    seed: int = 0
    """seed of the TPE sampler"""
    startup_trials: int = 10
    """random trials before TPE models the results"""
    asha: AshaSpec = dataclasses.field(default_factory=AshaSpec)
    """early stopping"""

    @property
    def identity(self) -> dict:
        """What makes two invocations the same study (budgets and concurrency excluded)."""
        from windtunnel.runs import data_fingerprint

        return {"template": spec_hash(self.template), "data": data_fingerprint(self.template),
                "objective": self.objective, "seed": self.seed,
                "startup_trials": self.startup_trials, "space": [dataclasses.asdict(p) for p in self.space]}


@spec
class SearchScale:
    """One scale's section of a search file."""

    model: str
    """the model searched"""
    tokens_per_param: number(low=0, low_open=True) | None = None
    """training tokens in units of N (the paper: 10)"""
    tokens: number(low=1, integer=True, unit="tokens") | None = None
    """training tokens, when not given per parameter"""
    trials: POSITIVE_INT = 32
    """trials in all"""
    concurrency: POSITIVE_INT = 2
    """trials at once"""
    set: dict = dataclasses.field(default_factory=dict)
    """TrainSpec overrides of this scale"""

    def __post_init__(self):
        if (self.tokens is None) == (self.tokens_per_param is None):
            raise refuse("tokens_per_param", self.tokens_per_param, "exactly one of tokens_per_param and tokens")


@spec
class SearchFile:
    """A search file (sweeps/mup_search.yaml)."""

    name: str
    """the search's name"""
    description: str = ""
    """what the search is for"""
    objective: Literal[tuple(OBJECTIVES)] = "bpb"
    """what is minimised (OBJECTIVES)"""
    seed: number(low=0, high=SEEDS, high_open=True, integer=True) = 0
    """seed of the TPE sampler"""
    startup_trials: NON_NEGATIVE_INT = 10
    """random trials before TPE models the results"""
    space: dict[str, dict] = dataclasses.field(default_factory=dict)
    """searched key (SEARCHABLE) → {low, high, log}"""
    asha: AshaSpec = dataclasses.field(default_factory=AshaSpec)
    """early stopping"""
    base: dict = dataclasses.field(default_factory=dict)
    """TrainSpec overrides of every scale"""
    scales: dict[str, SearchScale] = dataclasses.field(default_factory=dict)
    """scale name → its section"""


def load_search(path, *, scale: str = "micro") -> SearchSpec:
    """The search file at `scale`, validated: every bad key or value raises SpecError before anything runs."""
    path = Path(path)
    top = build(SearchFile, read_yaml(path, what="search file"), file=path)
    if scale not in top.scales:
        raise SpecError(path, "scales", scale, "scales defined here: " + ", ".join(map(str, top.scales)))
    key = f"scales.{scale}"
    section = top.scales[scale]
    template = _template(path, key, top, section)
    if top.asha.enabled and top.asha.grace_evals > max_evals(template):
        raise SpecError(path, "asha.grace_evals", top.asha.grace_evals,
                        f"at most the {max_evals(template)} evaluations of a trial (eval_every, tokens)")
    space = tuple(_param(path, name, value, template) for name, value in top.space.items())
    if not space:
        raise SpecError(path, "space", top.space, "at least one dimension, e.g. lr: {low: 0.001, high: 0.1, log: true}")
    return SearchSpec(name=str(top.name), scale=scale, file=str(path), description=top.description, template=template,
                      space=space, objective=top.objective, trials=section.trials, concurrency=section.concurrency,
                      seed=top.seed, startup_trials=top.startup_trials, asha=top.asha)


def _template(path: Path, key: str, top: SearchFile, section: SearchScale) -> TrainSpec:
    """Every trial's spec: the model, base and scale overrides, tokens rounded to whole steps."""
    from windtunnel.counts import n_params

    try:
        model = get_model(section.model)
    except SpecError as err:
        raise SpecError(path, f"{key}.model", section.model, err.allowed) from None
    template = apply_overrides(apply_overrides(TrainSpec(model=model), top.base, source=str(path)),
                               section.set, source=str(path))
    tokens = section.tokens or section.tokens_per_param * n_params(model)
    steps = max(1, round(tokens / template.batch_tokens))
    return apply_overrides(template, {"tokens": steps * template.batch_tokens}, source=str(path))


def _param(path: Path, name, value, template: TrainSpec) -> ParamRange:
    """One dimension, checked: a searchable key, finite ends, low < high, low > 0 on a log scale, both ends valid."""
    key = f"space.{name}"
    if name not in SEARCHABLE:
        raise SpecError(path, key, value, "searchable keys: " + ", ".join(SEARCHABLE))
    param = build(ParamRange, {**value, "name": name} if isinstance(value, dict) else value, file=path,
                  prefix=f"{key}.")
    for end in ("low", "high"):  # each end must build a trainable spec (types, schedule fits the run, ...)
        try:
            _check_trainable(trial_spec(template, {name: getattr(param, end)}))
        except SpecError as err:
            raise SpecError(path, f"{key}.{end}", getattr(param, end), f"{err.key}: {err.allowed}") from None
    return param


def _check_trainable(spec: TrainSpec) -> None:
    """The checks the trainer would make at its first step, made now."""
    from windtunnel.schedules import make_schedule

    steps = math.ceil(spec.tokens / spec.batch_tokens)
    make_schedule(spec.schedule, lr=spec.lr, total_steps=steps, batch_tokens=spec.batch_tokens)


# ---------------------------------------------------------------- one trial's spec


def rounded(value):
    """4 significant digits for floats; ints stay ints."""
    if isinstance(value, int) or not math.isfinite(value) or value == 0:
        return value
    return float(f"{value:.{SIGNIFICANT}g}")


def trial_spec(template: TrainSpec, params: dict) -> TrainSpec:
    """The TrainSpec of one trial: the template with the searched values (rounded) applied."""
    values = {k: int(round(v)) if SEARCHABLE.get(k) is int else rounded(float(v)) for k, v in params.items()}
    return apply_overrides(template, values, source="search space")


def evals_at(step: int, steps: int, every: int) -> int:
    """Evaluations done by `step`: every `every` steps, and always at the last step."""
    return step // every + (1 if step == steps and steps % every else 0)


def max_evals(spec: TrainSpec) -> int:
    """Evaluations of a trial trained to the end: ASHA's max_t."""
    steps = math.ceil(spec.tokens / spec.batch_tokens)
    return evals_at(steps, steps, spec.eval_every)
