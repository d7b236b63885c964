"""Sweeps: a SweepSpec (sweeps/*.yaml) expands into a graph of Run nodes with content-hashed ids.

A decay branch (DESIGN §3, §5) is a Run whose `parent` is the stable run and whose `fork_step` is the
step it starts from: its parent keeps a checkpoint at exactly that step, so a scaling-law grid of m
branch points costs the stable run plus m decays (O(m·C)) instead of m runs from scratch (O(m²·C)).

Sweep file layout:

    name: scaling_law
    description: ...
    base: {...}                  # TrainSpec overrides for every run (any `--set` key, nested as YAML)
    scales:
      micro:                     # one section per scale (DESIGN §4); `--scale` picks one
        models: [micro-24k, ...]
        tokens_per_param: 60     # each run's tokens = this × N (or `tokens:` for a fixed count)
        set: {...}               # overrides for this scale only
        grid: {lr: [...], model.parametrization: [mup, sp]}   # cartesian product of dotted keys
        runs: [{...}, ...]       # extra runs per model, each a mapping of overrides (e.g. baselines)
        branches:                # decay branches forked from each stable run
          at_tokens_per_param: [10, 20, 30, 40, 50, 60]
          decay_fractions: [0.1]       # decay length as a fraction of the branch point's tokens
          decay_shapes: [exp]
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from dataclasses import dataclass, field
from pathlib import Path

from windtunnel.config import TrainSpec, apply_overrides, build, get_model, load_overrides, read_yaml, spec_hash
from windtunnel.errors import SpecError

__all__ = ["BranchSpec", "ScaleSpec", "SweepSpec", "Run", "load_sweep", "expand", "summarize"]


@dataclass(frozen=True, kw_only=True)
class BranchSpec:
    """WSD decay branches forked from the stable run's checkpoints (paper §4.3, §5)."""

    at_tokens_per_param: tuple[float, ...]
    """branch points, in tokens per non-embedding parameter (10 = 10N tokens into the stable run)"""
    decay_fractions: tuple[float, ...] = (0.1,)
    """each decay lasts this fraction of its branch point's tokens (0.1: ~10%, which reaches the cosine optimum)"""
    decay_shapes: tuple[str, ...] = ("exp",)
    """decay shapes of windtunnel.schedules.DECAY_SHAPES"""


@dataclass(frozen=True, kw_only=True)
class ScaleSpec:
    """One scale's section of a sweep."""

    models: tuple[str, ...]
    """model names from models/*.yaml"""
    tokens_per_param: float | None = None
    """each run's training tokens in units of N; the stable run's length when branching"""
    tokens: int | None = None
    """each run's training tokens, when not given per parameter"""
    set: dict = field(default_factory=dict)
    """TrainSpec overrides for this scale (applied after the sweep's `base`)"""
    grid: dict = field(default_factory=dict)
    """dotted TrainSpec key → list of values; every combination becomes a run"""
    runs: tuple[dict, ...] = ()
    """extra runs per model, each a mapping of overrides"""
    branches: BranchSpec | None = None
    """decay branches forked from each stable run"""


@dataclass(frozen=True, kw_only=True)
class SweepSpec:
    name: str
    """the sweep's name: its MLflow parent run and experiment"""
    description: str = ""
    """what the sweep studies (shown in --dry-run and MLflow)"""
    base: dict = field(default_factory=dict)
    """TrainSpec overrides for every run at every scale"""
    scales: dict = field(default_factory=dict)
    """scale name → ScaleSpec"""


@dataclass(frozen=True)
class Run:
    """A node of the run graph: a frozen spec, its id, and what it forks from."""

    id: str                   # content hash of the spec (+ parent id and fork step for a branch)
    name: str                 # readable: model and the sweep coordinates
    spec: TrainSpec
    coords: dict              # sweep coordinates (model, grid values, branch point, decay), for tracking
    parent: str | None = None  # id of the run whose checkpoint this one starts from
    fork_step: int | None = None  # that checkpoint's step

    @property
    def tokens(self) -> int:
        """Total tokens the model has seen at the end (a branch counts its parent's prefix)."""
        return self.spec.tokens

    @property
    def own_tokens(self) -> int:
        """Tokens this node trains itself: a branch only trains its decay."""
        return self.spec.tokens - (self.fork_step or 0) * self.spec.batch_tokens


# ---------------------------------------------------------------- loading


def load_sweep(path: Path, *, scale: str) -> tuple[SweepSpec, ScaleSpec]:
    """The sweep file and its section for `scale`, validated (names file, key and allowed values)."""
    path = Path(path)
    raw = read_yaml(path, what="sweep file")
    if isinstance(raw, dict) and isinstance(raw.get("base"), str):  # `base: results/search/best.yaml`
        raw = {**raw, "base": load_overrides(raw["base"])}  # a path relative to the working directory
    sweep = build(SweepSpec, raw, file=path)
    if scale not in sweep.scales:
        raise SpecError(path, "scales", scale, "scales defined here: " + ", ".join(sweep.scales))
    section = dict(sweep.scales[scale])
    if isinstance(section.get("branches"), dict):
        section["branches"] = build(BranchSpec, section["branches"], file=path, prefix=f"scales.{scale}.branches.")
    return sweep, build(ScaleSpec, section, file=path, prefix=f"scales.{scale}.")


# ---------------------------------------------------------------- expanding


def _variants(scale: ScaleSpec, *, file) -> list[tuple[dict, bool]]:
    """(overrides, branched) per grid combination — branched when the scale has branches — plus the
    extra `runs`, which always train alone (e.g. Cosine(T) baselines beside WSD branches). A scale with
    only `runs` (no grid, no branches) is exactly that list."""
    for key, values in scale.grid.items():
        if not isinstance(values, list) or not values:
            raise SpecError(file, f"grid.{key}", values, "a non-empty list of values")
    keys = list(scale.grid)
    combos = [dict(zip(keys, values)) for values in itertools.product(*(scale.grid[k] for k in keys))]
    if not keys and scale.runs and scale.branches is None:  # only an explicit list of runs: no default run beside it
        combos = []
    return [(c, scale.branches is not None) for c in combos] + [(dict(r), False) for r in scale.runs]


def _coords(model: str, variant: dict) -> dict:
    flat = {}
    for key, value in variant.items():
        if isinstance(value, dict):
            flat.update({f"{key}.{k}": v for k, v in value.items()})
        else:
            flat[key] = value
    return {"model": model, **flat}


def _label(coords: dict) -> str:
    """Readable run name: "micro-24k lr=0.01 sp", "micro-24k stable", "micro-24k 20N+10% exp"."""
    branch = {"stage", "branch_tokens_per_param", "decay_fraction", "decay_shape"}
    words = [str(coords["model"])] + [f"{k.split('.')[-1]}={v}" for k, v in coords.items()
                                       if k != "model" and k not in branch]
    if coords.get("stage") == "stable":
        words.append("stable")
    elif coords.get("stage") == "decay":
        words.append(f"{coords['branch_tokens_per_param']:g}N+{coords['decay_fraction']:.1%} {coords['decay_shape']}")
    return " ".join(words)


def _round_steps(tokens: float, batch_tokens: int) -> int:
    return max(1, round(tokens / batch_tokens))


def _branches(stable: TrainSpec, stable_run: Run, branches: BranchSpec, n: int, *, file) -> list[Run]:
    """One WSD run per (branch point, decay fraction, shape), each forked from the stable run."""
    runs, batch = [], stable.batch_tokens
    for at in branches.at_tokens_per_param:
        fork = _round_steps(at * n, batch)
        for fraction, shape in itertools.product(branches.decay_fractions, branches.decay_shapes):
            decay = max(1, math.ceil(fraction * fork))
            schedule = {"kind": "wsd", "warmup_tokens": stable.schedule.warmup_tokens,
                        "decay_start_tokens": fork * batch, "decay_shape": shape}
            spec = apply_overrides(stable, {"tokens": (fork + decay) * batch, "schedule": schedule,
                                            "checkpoint_steps": []}, source=file)
            coords = {**stable_run.coords, "stage": "decay", "branch_tokens_per_param": at,
                      "decay_fraction": fraction, "decay_shape": shape}
            runs.append(Run(id=spec_hash(spec, stable_run.id, str(fork)), name=_label(coords), spec=spec,
                            coords=coords, parent=stable_run.id, fork_step=fork))
    return runs


def _check_branches(branches: BranchSpec, stable_tokens: int, n: int, batch_tokens: int, *, file, scale: str) -> None:
    key = f"scales.{scale}.branches"
    if not branches.at_tokens_per_param or not branches.decay_fractions or not branches.decay_shapes:
        raise SpecError(file, key, dataclasses.asdict(branches), "non-empty at_tokens_per_param, decay_fractions, decay_shapes")
    beyond = [at for at in branches.at_tokens_per_param  # compared in whole steps, as the runs are
              if at <= 0 or _round_steps(at * n, batch_tokens) > _round_steps(stable_tokens, batch_tokens)]
    if beyond:
        raise SpecError(file, f"{key}.at_tokens_per_param", beyond[0],
                        f"branch points within the stable run: 0 < at ≤ {stable_tokens / n:g} tokens per parameter")
    bad = [f for f in branches.decay_fractions if not 0 < f <= 1]
    if bad:
        raise SpecError(file, f"{key}.decay_fractions", bad[0], "fractions in (0, 1]")


def expand(sweep: SweepSpec, scale: ScaleSpec, *, file, scale_name: str = "micro") -> list[Run]:
    """Every Run of the sweep at one scale; parents come before their branches."""
    from windtunnel.model import count_params  # meta-device count: no memory, but torch

    if not scale.models:
        raise SpecError(file, f"scales.{scale_name}.models", [], "a non-empty list of model names")
    if (scale.tokens is None) == (scale.tokens_per_param is None):
        raise SpecError(file, f"scales.{scale_name}.tokens_per_param", scale.tokens_per_param,
                        "exactly one of tokens_per_param and tokens")
    runs: list[Run] = []
    for name in scale.models:
        try:
            model = get_model(name)
        except SpecError as err:
            raise SpecError(file, f"scales.{scale_name}.models", name, err.allowed) from None
        n = count_params(model)
        base = apply_overrides(apply_overrides(TrainSpec(model=model), sweep.base, source=file), scale.set, source=file)
        tokens = scale.tokens or scale.tokens_per_param * n
        for variant, branched in _variants(scale, file=file):
            spec = apply_overrides(base, variant, source=file)
            steps = _round_steps(tokens, spec.batch_tokens)
            spec = apply_overrides(spec, {"tokens": steps * spec.batch_tokens}, source=file)
            coords = _coords(name, variant)
            if not branched:
                runs.append(Run(id=spec_hash(spec), name=_label(coords), spec=spec, coords=coords))
                continue
            _check_branches(scale.branches, spec.tokens, n, spec.batch_tokens, file=file, scale=scale_name)
            forks = sorted({_round_steps(at * n, spec.batch_tokens) for at in scale.branches.at_tokens_per_param})
            stable = apply_overrides(spec, {"schedule": {"kind": "constant", "warmup_tokens": spec.schedule.warmup_tokens},
                                            "tokens": forks[-1] * spec.batch_tokens, "checkpoint_steps": forks}, source=file)
            stable_run = Run(id=spec_hash(stable), name=_label({**coords, "stage": "stable"}), spec=stable,
                             coords={**coords, "stage": "stable"})
            runs += [stable_run, *_branches(stable, stable_run, scale.branches, n, file=file)]
    _check_unique(runs, file=file)
    return runs


def _check_unique(runs: list[Run], *, file) -> None:
    seen: dict[str, Run] = {}
    for run in runs:
        if run.id in seen:
            raise SpecError(file, "grid", run.name, f"distinct runs; it repeats {seen[run.id].name!r}")
        seen[run.id] = run


def summarize(runs: list[Run]) -> dict:
    """Runs, tokens and FLOPs of the graph, against training every final point from scratch (DESIGN §6)."""
    from windtunnel.model import flops_per_token

    parents = {r.parent for r in runs if r.parent}
    finals = [r for r in runs if r.id not in parents]
    flops = sum(r.own_tokens * flops_per_token(r.spec.model, seq_len=r.spec.seq_len) for r in runs)
    flops_scratch = sum(r.tokens * flops_per_token(r.spec.model, seq_len=r.spec.seq_len) for r in finals)
    return {"n_runs": len(runs), "n_final_points": len(finals), "tokens": sum(r.own_tokens for r in runs),
            "tokens_from_scratch": sum(r.tokens for r in finals), "flops": flops, "flops_from_scratch": flops_scratch}
