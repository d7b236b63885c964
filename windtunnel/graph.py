"""Sweeps: a SweepSpec (sweeps/*.yaml) expands into a graph of Run nodes with content-hashed ids.

A decay branch (docs/method.md §3, §5) is a Run whose `parent` is the stable run and whose `fork_step` is the
step it starts from: its parent keeps a checkpoint at exactly that step, so a scaling-law grid of m
branch points costs the stable run plus m decays (O(m·C)) instead of m runs from scratch (O(m²·C)).

Sweep file layout:

    name: scaling_law
    description: ...
    base: {...}                  # TrainSpec overrides for every run (any `--set` key, nested as YAML)
    scales:
      micro:                     # one section per scale (docs/method.md §4); `--scale` picks one
        models: [micro-24k, ...]
        tokens_per_param: 60     # each run's tokens = this × N (or `tokens:` for a fixed count)
        set: {...}               # overrides for this scale only
        grid: {lr: [...], model.parametrization: [mup, sp]}   # cartesian product of dotted keys
        runs: [{...}, ...]       # extra runs per model, each a mapping of overrides (e.g. baselines; their own
                                 # `tokens` replaces the scale's)
        per_model: {micro-24k: {lr: 0.02, batch_tokens: 2048}}   # overrides for one model (tuned LR, batch), and
                                 # its own branch points: {2B: {branches: {at_tokens_per_param: [10, 20]}}}
        needs_target: true       # a ladder in a target's family: `--scale paper@minicpm-1.2b` gives every model
                                 # the target's vocabulary and tokenizer file (docs/method.md §4)
        seeds: [0, 1]            # every run once per seed (independent stable runs: honest intervals)
        branches:                # decay branches forked from each stable run
          at_tokens_per_param: [10, 20, 30, 40, 50, 60]   # or at_tokens: [1048576, ...] (one grid for all sizes)
          decay_fractions: [0.1]       # decay length as a fraction of the branch point's tokens
          decay_shapes: [exp]
          decay_data: [{}, {python: 0.7, python-docstrings: 0.3}]   # the decay's data mixtures ({}: the run's own)
          min_steps: 250               # refuse a branch point with fewer optimizer steps than this
        resources: {cpus: 1, gpus: 0.25}   # what Ray reserves per run (a runtime setting: run ids do not change);
                                           # without it: a GPU each on a GPU cluster, else 1 CPU (2 above 2M parameters)
"""

from __future__ import annotations

import dataclasses
import itertools
import math
from pathlib import Path
from typing import Literal

from windtunnel.checks import FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT, Flag, build, number, refuse, spec
from windtunnel.config import TrainSpec, apply_overrides, check_run, get_model, ladders, load_overrides, read_yaml
from windtunnel.counts import DEFAULT_FLOPS
from windtunnel.errors import SpecError, WindtunnelError, did_you_mean
from windtunnel.paths import packaged
from windtunnel.runs import Run, make_run

__all__ = ["BranchSpec", "ResourceSpec", "ScaleSpec", "SweepSpec", "find_sweep", "packaged_sweeps", "load_sweep",
           "expand", "summarize"]
_TOKENS = number(low=1, integer=True, unit="tokens")
_PER_PARAM = number(low=0, low_open=True, keep_int=True)  # a run's coordinate: 20 stays 20 in its name and params


@spec
class BranchSpec:
    """WSD decay branches forked from the stable run's checkpoints (paper §4.3, §5)."""

    at_tokens_per_param: tuple[_PER_PARAM, ...] = ()
    """branch points, in tokens per non-embedding parameter (10 = 10N tokens into the stable run)"""
    at_tokens: tuple[_TOKENS, ...] = ()
    """branch points in tokens, the same for every size (so D does not move with N); instead of at_tokens_per_param"""
    min_steps: NON_NEGATIVE_INT = 0
    """the fewest optimizer steps a branch point may have (shorter runs are dominated by warmup and noise)"""
    decay_fractions: tuple[FRACTION, ...] = (0.1,)
    """each decay lasts this fraction of its branch point's tokens (0.1: ~10%, which reaches the cosine optimum)"""
    decay_shapes: tuple[Literal["exp", "linear", "cosine", "sqrt"], ...] = ("exp",)
    """decay shapes of windtunnel.schedules.DECAY_SHAPES"""
    decay_data: tuple[dict[str, float], ...] = ({},)
    """decay-stage data mixtures, each branch once per mixture ({} = the run's own data; {python: 0.7,
    python-docstrings: 0.3} mixes in prose, paper §6; see TrainSpec.decay_data)"""


@spec
class ResourceSpec:
    """What Ray reserves for each run of a scale: where a run trains, never what it computes (not in its id)."""

    cpus: number(low=0, low_open=True, unit="CPU cores") = 1
    """CPU cores per run, > 0; the run's torch threads are its whole cores (at least 1)"""
    gpus: NON_NEGATIVE = 0
    """GPUs per run: 0, a fraction below 1 so tiny models share a GPU (0.25: four runs per GPU), or a whole number"""

    def __post_init__(self):
        if self.gpus > 1 and self.gpus != int(self.gpus):  # Ray shares a GPU only in fractions of one
            raise refuse("gpus", self.gpus, "0, a fraction of one GPU below 1 (0.25), or a whole number of GPUs")


@spec
class ScaleSpec:
    """One scale's section of a sweep."""

    models: tuple[str, ...]
    """model names from models/*.yaml"""
    tokens_per_param: number(low=0, low_open=True) | None = None
    """each run's training tokens in units of N; the stable run's length when branching"""
    tokens: _TOKENS | None = None
    """each run's training tokens, when not given per parameter"""
    set: dict = dataclasses.field(default_factory=dict)
    """TrainSpec overrides for this scale (applied after the sweep's `base`)"""
    grid: dict[str, list] = dataclasses.field(default_factory=dict)
    """dotted TrainSpec key → list of values; every combination becomes a run"""
    runs: tuple[dict, ...] = ()
    """extra runs per model, each a mapping of overrides"""
    branches: BranchSpec | None = None
    """decay branches forked from each stable run"""
    per_model: dict[str, dict] = dataclasses.field(default_factory=dict)
    """model name → overrides for that model only (its tuned LR and batch size), after `set`"""
    seeds: tuple[NON_NEGATIVE_INT, ...] = ()
    """run every variant once per seed (each seed its own stable run); empty = the spec's seed only"""
    resources: ResourceSpec | None = None
    """Ray resources per run; None: a GPU each on a GPU cluster, else 1 CPU (2 above 2M parameters)"""
    needs_target: Flag = False
    """the ladder trains in a target's family (docs/method.md §4): run it as `--scale NAME@TARGET`, which gives every
    model the target's vocabulary and tokenizer (models/*.yaml: the target's `tokenizer`)"""
    target: str | None = None
    """the target whose family this run of the scale is in: the TARGET of `--scale NAME@TARGET`"""

    def __post_init__(self):
        if len(set(self.seeds)) != len(self.seeds):
            raise refuse("seeds", list(self.seeds), "distinct seeds")


@spec
class SweepSpec:
    """A sweep file (sweeps/*.yaml)."""

    name: str
    """the sweep's name: its MLflow parent run and experiment"""
    description: str = ""
    """what the sweep studies (shown in --dry-run and MLflow)"""
    base: dict | str = dataclasses.field(default_factory=dict)
    """TrainSpec overrides for every run at every scale, or an override file (results/search/best.yaml)"""
    scales: dict[str, ScaleSpec] = dataclasses.field(default_factory=dict)
    """scale name → its section"""


# ---------------------------------------------------------------- loading


def packaged_sweeps() -> list[str]:
    """Names of the sweeps packaged with windtunnel (the repository's sweeps/*.yaml)."""
    return sorted(p.stem for p in packaged("sweeps").glob("*.yaml"))


def find_sweep(given) -> Path:
    """A sweep file: `given` when it is a file, else the packaged sweep of that name (`lr`, `lr.yaml` or
    `sweeps/lr.yaml` from any working directory)."""
    path = Path(given)
    if path.is_file():
        return path
    if len(path.parts) == 1 or path.parent.name == "sweeps":  # a name, or the repository's sweeps/NAME.yaml
        candidate = packaged("sweeps") / f"{path.name.removesuffix('.yaml')}.yaml"
        if candidate.is_file():
            return candidate
    hint = did_you_mean(path.name.removesuffix(".yaml"), packaged_sweeps())
    raise WindtunnelError(f"{given}: sweep file not found ({hint}searched {path.resolve()} and the packaged sweeps in "
                          f"{packaged('sweeps')}: {', '.join(packaged_sweeps())})")


def load_sweep(path: Path, *, scale: str) -> tuple[SweepSpec, ScaleSpec]:
    """The sweep file (find_sweep) and its section for `scale`, validated (names file, key and allowed values).
    `scale` may be NAME@TARGET: the section NAME in TARGET's family (ScaleSpec.target)."""
    path = find_sweep(path)
    scale, _, target = scale.partition("@")
    raw = read_yaml(path, what="sweep file")
    if isinstance(raw, dict) and isinstance(raw.get("base"), str):  # `base: results/search/best.yaml`
        raw = {**raw, "base": load_overrides(raw["base"])}  # a path relative to the working directory
    for name, section in (raw.get("scales") or {}).items() if isinstance(raw, dict) else ():
        if isinstance(section, dict) and "target" in section:
            raise SpecError(path, f"scales.{name}.target", section["target"], "no target key: give --scale "
                            f"{name}@TARGET (with needs_target: true in the section)")
    sweep = build(SweepSpec, raw, file=path)
    if scale not in sweep.scales:
        raise SpecError(path, "scales", scale, did_you_mean(scale, sweep.scales) + "scales defined here: "
                        + ", ".join(sweep.scales))
    section = dataclasses.replace(sweep.scales[scale], target=target or None)
    if section.needs_target and not target:
        raise SpecError(path, f"scales.{scale}", scale, f"{scale}@TARGET: this ladder trains in a target's family "
                        f"(its vocabulary and tokenizer), e.g. --scale {scale}@minicpm-1.2b (make: SCALE={scale} "
                        "TARGET=minicpm-1.2b)")
    if target and not section.needs_target:
        raise SpecError(path, f"scales.{scale}", f"{scale}@{target}", f"{scale} alone: its ladder is its own family "
                        "(scales marked needs_target: true take @TARGET)")
    return sweep, section


FAMILY_BASE = ("d_head", "d_base", "scale_emb", "scale_depth", "init_std", "parametrization", "smear_keys")
# what a ladder model shares with its target beside the vocabulary: µP transfers within one base (docs/method.md §3)


def _target(scale: ScaleSpec, *, file, scale_name: str):
    """The ModelSpec of the target whose family the scale trains in (None: its own family), with its tokenizer file."""
    if scale.target is None:
        return None
    try:
        target = get_model(scale.target)
    except SpecError as err:
        raise SpecError(file, f"scales.{scale_name}@TARGET", scale.target, err.allowed) from None
    if target.tokenizer is None:
        raise SpecError(ladders()[1][target.name], f"models.{target.name}.tokenizer", None,
                        "the target's tokenizer file (sentencepiece .model or tokenizer.json), which its ladder "
                        "trains with")
    if not Path(target.tokenizer).is_file():
        raise WindtunnelError(f"{target.tokenizer}: {target.name}'s tokenizer file is missing (models.{target.name}"
                              ".tokenizer); put the model's tokenizer.model or tokenizer.json there (from its "
                              "Hugging Face repository; see models/tokenizers/README.md)")
    return target


def _family(model, target, *, file, scale_name: str) -> dict:
    """The overrides that put a ladder model in its target's family (the target's vocabulary and tokenizer file),
    after checking that it shares the target's µP base; {} without a target."""
    if target is None:
        return {}
    differ = [f"{k} {getattr(model, k)} vs {getattr(target, k)}" for k in FAMILY_BASE
              if getattr(model, k) != getattr(target, k)]
    if differ:
        raise SpecError(file, f"scales.{scale_name}.models", model.name,
                        f"models of {target.name}'s µP base ({', '.join(differ)})")
    return {"model": {"vocab_size": target.vocab_size}, "data": {"tokenizer": target.tokenizer}}


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
    variants = [(c, scale.branches is not None) for c in combos] + [(dict(r), False) for r in scale.runs]
    return [({**v, "seed": seed}, b) for v, b in variants for seed in scale.seeds] if scale.seeds else variants


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
    branch = {"stage", "branch_tokens_per_param", "branch_tokens", "decay_fraction", "decay_shape", "decay_data"}
    words = [str(coords["model"])] + [f"{k.split('.')[-1]}={v}" for k, v in coords.items()
                                       if k != "model" and k not in branch]
    if coords.get("stage") == "stable":
        words.append("stable")
    elif coords.get("stage") == "decay":
        tokens = coords.get("branch_tokens", 0)
        at = (f"{coords['branch_tokens_per_param']:g}N" if "branch_tokens_per_param" in coords
              else f"{tokens / 2**20:g}M" if tokens >= 2**20 else f"{tokens / 2**10:g}K")
        words.append(f"{at}+{coords['decay_fraction']:.1%} {coords['decay_shape']}")
        if coords.get("decay_data"):
            words.append(coords["decay_data"])
    return " ".join(words)


def _round_steps(tokens: float, batch_tokens: int) -> int:
    return max(1, round(tokens / batch_tokens))


def _fork_steps(branches: BranchSpec, n: int, batch_tokens: int) -> list[int]:
    """The branch points in optimizer steps, in the order given."""
    points = branches.at_tokens or [at * n for at in branches.at_tokens_per_param]
    return [_round_steps(tokens, batch_tokens) for tokens in points]


def _branches(stable: TrainSpec, stable_run: Run, branches: BranchSpec, n: int, *, file, memo: dict) -> list[Run]:
    """One WSD run per (branch point, decay fraction, shape), each forked from the stable run."""
    runs, batch = [], stable.batch_tokens
    per_param = not branches.at_tokens
    for at, fork in zip(branches.at_tokens_per_param if per_param else branches.at_tokens,
                        _fork_steps(branches, n, batch)):
        for fraction, shape, data in itertools.product(branches.decay_fractions, branches.decay_shapes,
                                                       branches.decay_data):
            decay = max(1, math.ceil(fraction * fork))
            schedule = {"kind": "wsd", "warmup_tokens": stable.schedule.warmup_tokens,
                        "decay_start_tokens": fork * batch, "decay_shape": shape}
            spec = apply_overrides(stable, {"tokens": (fork + decay) * batch, "schedule": schedule,
                                            "checkpoint_steps": [], **({"decay_data": data} if data else {})},
                                   source=file)
            check_run(spec, file=file)
            point = {"branch_tokens_per_param": at} if per_param else {"branch_tokens": at}
            coords = {**stable_run.coords, "stage": "decay", **point, "decay_fraction": fraction, "decay_shape": shape,
                      **({"decay_data": _mixture_label(spec)} if data else {})}
            runs.append(make_run(spec, name=_label(coords), coords=coords, parent=stable_run, fork_step=fork, memo=memo))
    return runs


def _mixture_label(spec: TrainSpec) -> str:
    """"+30% python-docstrings": the shares of the corpora a decay mixes in beside the run's own."""
    total = sum(w for _, w in spec.decay_data)
    return " ".join(f"+{w / total:.0%} {name}" for name, w in spec.decay_data if name != spec.data.corpus)


def _check_branches(branches: BranchSpec, stable_tokens: int, n: int, batch_tokens: int, *, file, scale: str,
                    model: str) -> None:
    key = f"scales.{scale}.branches"
    if bool(branches.at_tokens) == bool(branches.at_tokens_per_param):
        raise SpecError(file, key, dataclasses.asdict(branches), "exactly one of at_tokens and at_tokens_per_param")
    if not branches.decay_fractions or not branches.decay_shapes or not branches.decay_data:
        raise SpecError(file, key, dataclasses.asdict(branches), "non-empty decay_fractions, decay_shapes and decay_data")
    field_name = "at_tokens" if branches.at_tokens else "at_tokens_per_param"
    given = branches.at_tokens or branches.at_tokens_per_param
    last = _round_steps(stable_tokens, batch_tokens)
    for at, steps in zip(given, _fork_steps(branches, n, batch_tokens)):  # compared in whole steps, as the runs are
        if at <= 0 or steps > last:
            unit = "tokens" if branches.at_tokens else "tokens per parameter"
            top = stable_tokens if branches.at_tokens else stable_tokens / n
            raise SpecError(file, f"{key}.{field_name}", at, f"branch points within the stable run: 0 < at ≤ {top:g} {unit}")
        if steps < branches.min_steps:
            raise SpecError(file, f"{key}.{field_name}", at, f"≥ min_steps={branches.min_steps} steps; it is {steps} "
                            f"steps of {model} at batch_tokens={batch_tokens}")


def expand(sweep: SweepSpec, scale: ScaleSpec, *, file, scale_name: str = "micro",
           provisional: list | None = None) -> list[Run]:
    """Every Run of the sweep at one scale; parents come before their branches. `provisional` (a dry run's list):
    a corpus that cannot be read here gives provisional ids, and why is appended to the list."""
    from windtunnel.counts import n_params  # closed form: a dry run does not import torch

    scale_name = scale_name.partition("@")[0]  # the section's name in error keys (paper@minicpm-1.2b: paper)
    if not scale.models:
        raise SpecError(file, f"scales.{scale_name}.models", [], "a non-empty list of model names")
    if (scale.tokens is None) == (scale.tokens_per_param is None):
        raise SpecError(file, f"scales.{scale_name}.tokens_per_param", scale.tokens_per_param,
                        "exactly one of tokens_per_param and tokens")
    runs: list[Run] = []
    memo: dict = {} if provisional is None else {"provisional": provisional}  # each corpus listed once per sweep
    target = _target(scale, file=file, scale_name=scale_name)
    for name in scale.models:
        try:
            model = get_model(name)
        except SpecError as err:
            raise SpecError(file, f"scales.{scale_name}.models", name, err.allowed) from None
        family = _family(model, target, file=file, scale_name=scale_name)
        base = apply_overrides(apply_overrides(TrainSpec(model=model), sweep.base, source=file), scale.set, source=file)
        base = apply_overrides(base, family, source=file)
        own = _per_model(scale, name, file=file, scale_name=scale_name)
        branches = _own_branches(scale.branches, own.pop("branches", None), file=file, key=f"scales.{scale_name}."
                                 f"per_model.{name}.branches")
        base = apply_overrides(base, own, source=file)
        n = n_params(base.model)
        tokens = scale.tokens or scale.tokens_per_param * n
        for variant, branched in _variants(scale, file=file):
            spec = apply_overrides(base, variant, source=file)
            steps = _round_steps(spec.tokens if "tokens" in variant else tokens, spec.batch_tokens)  # a run's own wins
            spec = apply_overrides(spec, {"tokens": steps * spec.batch_tokens}, source=file)
            coords = _coords(name, variant)
            if not branched:
                check_run(spec, file=file)  # the run's fields together, now that every override is in
                runs.append(make_run(spec, name=_label(coords), coords=coords, memo=memo))
                continue
            _check_branches(branches, spec.tokens, n, spec.batch_tokens, file=file, scale=scale_name, model=name)
            forks = sorted(set(_fork_steps(branches, n, spec.batch_tokens)))
            stable = apply_overrides(spec, {"schedule": {"kind": "constant", "warmup_tokens": spec.schedule.warmup_tokens},
                                            "tokens": forks[-1] * spec.batch_tokens, "checkpoint_steps": forks}, source=file)
            check_run(stable, file=file)
            stable_coords = {**coords, "stage": "stable"}
            stable_run = make_run(stable, name=_label(stable_coords), coords=stable_coords, memo=memo)
            runs += [stable_run, *_branches(stable, stable_run, branches, n, file=file, memo=memo)]
    _check_unique(runs, file=file)
    if scale.resources is not None:  # after the ids: where a run trains is not what it computes
        runs = [dataclasses.replace(r, resources=dataclasses.asdict(scale.resources)) for r in runs]
    return runs


def _per_model(scale: ScaleSpec, name: str, *, file, scale_name: str) -> dict:
    unknown = sorted(set(scale.per_model) - set(scale.models))
    if unknown:
        raise SpecError(file, f"scales.{scale_name}.per_model", unknown[0], "models of this scale: " + ", ".join(scale.models))
    overrides = scale.per_model.get(name, {})
    if not isinstance(overrides, dict):
        raise SpecError(file, f"scales.{scale_name}.per_model.{name}", overrides, "a mapping of overrides")
    return dict(overrides)


def _own_branches(branches: BranchSpec | None, own, *, file, key: str) -> BranchSpec | None:
    """A model's branch points: the scale's, with the fields its per_model `branches:` gives (the top rungs of a
    ladder branch at fewer tokens per parameter: chosen per budget)."""
    if own is None:
        return branches
    if branches is None or not isinstance(own, dict):
        raise SpecError(file, key, own, "a mapping of branch fields, in a scale with branches")
    return build(BranchSpec, {**dataclasses.asdict(branches), **own}, file=file, prefix=key + ".")


def _check_unique(runs: list[Run], *, file) -> None:
    seen: dict[str, Run] = {}
    for run in runs:
        if run.id in seen:
            raise SpecError(file, "grid", run.name, f"distinct runs; it repeats {seen[run.id].name!r}")
        seen[run.id] = run


def summarize(runs: list[Run], flops: str = DEFAULT_FLOPS) -> dict:
    """Runs, tokens and FLOPs of the graph, against training every final point from scratch (docs/method.md §6).
    FLOPs in the count `flops` (windtunnel.fit.FLOP_COUNTS: "full" the trainer's, "6nd" 6·N_total·D) — the count of
    the scaling law's allocation and the plan; attention's share is given apart. GPU-hours (per run, of its own
    tokens, and in total) are the trainer's FLOPs at DEFAULT_MFU of an H100's bf16 peak: an estimate, stated as one.
    Each run's epochs over its corpus's training split when the corpus is prepared (None until it is tokenized)."""
    from windtunnel.counts import (DEFAULT_MFU, H100_FLOPS, attention_flops_per_token, counted_flops_per_token,
                                   flops_per_token, gpu_hours)
    from windtunnel.data import prepared_train_tokens

    parents = {r.parent for r in runs if r.parent}
    finals = [r for r in runs if r.id not in parents]
    per_token = {r.id: counted_flops_per_token(r.spec.model, seq_len=r.spec.seq_len, count=flops) for r in runs}
    attention = sum(r.own_tokens * attention_flops_per_token(r.spec.model, seq_len=r.spec.seq_len) for r in runs)
    hours = {r.id: gpu_hours(r.own_tokens * flops_per_token(r.spec.model, seq_len=r.spec.seq_len)) for r in runs}
    corpus = {key: prepared_train_tokens(key[0], vocab_size=key[1])
              for key in {(r.spec.data, r.spec.model.vocab_size) for r in runs}}
    epochs = {r.id: None if corpus[r.spec.data, r.spec.model.vocab_size] is None
              else r.tokens / corpus[r.spec.data, r.spec.model.vocab_size] for r in runs}
    return {"n_runs": len(runs), "n_final_points": len(finals), "tokens": sum(r.own_tokens for r in runs),
            "tokens_from_scratch": sum(r.tokens for r in finals), "flops_count": flops,
            "flops": sum(r.own_tokens * per_token[r.id] for r in runs),
            "flops_from_scratch": sum(r.tokens * per_token[r.id] for r in finals), "attention_flops": attention,
            "gpu_hours": sum(hours.values()),
            "gpu": f"H100 SXM bf16 at {DEFAULT_MFU:.0%} MFU of {H100_FLOPS['bf16']:.3g} FLOP/s (datasheet; an estimate)",
            "max_epochs": max((e for e in epochs.values() if e is not None), default=None),
            "unprepared": sorted({data.corpus for (data, _), n in corpus.items() if n is None}),
            "runs": [{"id": r.id, "name": r.name, "tokens": r.tokens, "own_tokens": r.own_tokens, "parent": r.parent,
                      "gpu_hours": hours[r.id], "epochs": epochs[r.id]} for r in runs]}
