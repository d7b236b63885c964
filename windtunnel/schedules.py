"""Learning-rate schedules of MiniCPM (arXiv 2404.06395 §4): constant, Cosine(T), CosineLoop(T), WSD(T; D).

Each schedule is a pure function of the integer optimizer step s (0 = the first update) returning the LR.
Shared conventions:
- warmup of W steps: lr(s) = η·(s+1)/W for s < W, so step 0 already trains and step W−1 reaches η;
  from s = W on the schedule's own formula holds, which gives exactly η at s = W;
- final_ratio: the LR the schedule ends at, as a fraction of η.
`ScheduleSpec` is the YAML `schedule:` section (in tokens); `make_schedule` turns it into steps.
"""

import dataclasses
import functools
import math
from typing import Callable, Literal

from windtunnel.checks import FRACTION, number, refuse, spec
from windtunnel.errors import SpecError, WindtunnelError

__all__ = ["constant", "cosine", "cosine_loop", "wsd", "SCHEDULES", "DECAY_SHAPES", "EXP_HALF_LIVES",
           "ScheduleSpec", "make_schedule", "batch_stage", "batch_steps", "stepping"]

EXP_HALF_LIVES = 5  # default exp decay: 5 half-lives over the decay (η/32 at its end); MiniCPM's 10% of
#                     1.1T tokens at 4M tokens/step is ~27K steps ≈ 5.5 half-lives of 5000 steps (docs/method.md §3)

# WSD decay shapes g(x, half_lives): x ∈ [0, 1] is the decay's progress, g falls from 1 (§4.2, docs/method.md §3)
DECAY_SHAPES = {
    "exp": lambda x, half_lives: 0.5 ** (x * half_lives),  # MiniCPM's f = 0.5^((s−T)/half_life)
    "linear": lambda x, half_lives: 1.0 - x,
    "cosine": lambda x, half_lives: (1.0 + math.cos(math.pi * x)) / 2,
    "sqrt": lambda x, half_lives: 1.0 - math.sqrt(x),
}


def _require(ok: bool, name: str, value, allowed: str) -> None:
    if not ok:
        raise WindtunnelError(f"schedule argument {name}={value!r} is not allowed; allowed: {allowed}")


def _check_common(step: int, lr: float, warmup: int) -> None:
    _require(step >= 0, "step", step, "an integer >= 0")
    _require(lr > 0, "lr", lr, "a number > 0")
    _require(warmup >= 0, "warmup", warmup, "an integer number of steps >= 0")


def _blend(lr: float, final_ratio: float, g: float) -> float:
    """η·(final + (1 − final)·g): η at g = 1 (exactly: f + (1 − f) == 1.0 in floats), final·η at g = 0."""
    return lr * (final_ratio + (1.0 - final_ratio) * g)


def constant(step: int, *, lr: float, warmup: int) -> float:
    """Linear warmup, then η for ever."""
    _check_common(step, lr, warmup)
    return lr * (step + 1) / warmup if step < warmup else lr


def _cosine_checked(step, lr, warmup, period, final_ratio) -> float | None:
    """Checks the cosine arguments; returns the warmup LR when step < warmup, else None."""
    _check_common(step, lr, warmup)
    _require(period > warmup, "period", period, f"an integer number of steps > warmup ({warmup})")
    _require(0.0 <= final_ratio <= 1.0, "final_ratio", final_ratio, "a number in [0, 1]")
    return lr * (step + 1) / warmup if step < warmup else None


def cosine(step: int, *, lr: float, warmup: int, period: int, final_ratio: float = 0.1) -> float:
    """Cosine(T) of §4.1 in its intended form (docs/method.md §3): η → final·η over [W, T], then final·η.

    lr(s) = 0.1η + 0.9η·(1 + cos(π(s−W)/(T−W)))/2 for W ≤ s ≤ T (final_ratio 0.1); the paper prints
    0.9η·cos(πs/T) + 0.1η, which would go negative.
    """
    warm = _cosine_checked(step, lr, warmup, period, final_ratio)
    if warm is not None:
        return warm
    g = (1.0 + math.cos(math.pi * (step - warmup) / (period - warmup))) / 2 if step < period else 0.0
    return _blend(lr, final_ratio, g)


def cosine_loop(step: int, *, lr: float, warmup: int, period: int, final_ratio: float = 0.1) -> float:
    """CosineLoop(T) of §4.1: Cosine(T)'s formula for every s ≥ W, so past T it rises back to η.

    It oscillates between η (at s = W + 2k(T−W)) and final·η (at s = W + (2k+1)(T−W)): period 2(T−W) steps.
    """
    warm = _cosine_checked(step, lr, warmup, period, final_ratio)
    if warm is not None:
        return warm
    return _blend(lr, final_ratio, (1.0 + math.cos(math.pi * (step - warmup) / (period - warmup))) / 2)


def wsd(step: int, *, lr: float, warmup: int, decay_start: int, decay_steps: int, shape: str = "exp",
        half_life: float | None = None, final_ratio: float = 0.0) -> float:
    """WSD(T; D) of §4.2: warmup, η until T = decay_start, then η·f(s − T) over decay_steps, then flat.

    f = final + (1 − final)·g(x), x = (s − T)/decay_steps clipped to [0, 1], g from DECAY_SHAPES.
    With shape "exp" and final 0 this is MiniCPM's f = 0.5^((s−T)/half_life); half_life None means
    decay_steps/EXP_HALF_LIVES. Past T + decay_steps every shape stays at its value there (exp does not
    keep decaying), so the decay length means the same for all shapes.
    """
    _check_common(step, lr, warmup)
    _require(decay_start >= warmup, "decay_start", decay_start, f"an integer number of steps >= warmup ({warmup})")
    _require(decay_steps > 0, "decay_steps", decay_steps, "an integer number of steps > 0")
    _require(shape in DECAY_SHAPES, "shape", shape, " | ".join(DECAY_SHAPES))
    _require(half_life is None or (shape == "exp" and half_life > 0), "half_life", half_life,
             "None, or a number of steps > 0 with shape='exp'")
    _require(0.0 <= final_ratio <= 1.0, "final_ratio", final_ratio, "a number in [0, 1]")
    if step < warmup:
        return lr * (step + 1) / warmup
    if step < decay_start:
        return lr
    x = min((step - decay_start) / decay_steps, 1.0)
    half_lives = EXP_HALF_LIVES if half_life is None else decay_steps / half_life
    return _blend(lr, final_ratio, DECAY_SHAPES[shape](x, half_lives))


SCHEDULES: dict[str, Callable[..., float]] = {  # YAML `kind:` → function (levanter-style registry)
    "constant": constant, "cosine": cosine, "cosine_loop": cosine_loop, "wsd": wsd}

_COSINE = {"period_tokens", "final_ratio"}
_KIND_KEYS = {  # the keys each kind uses beyond kind and warmup_tokens; another one away from its default is refused
    "constant": set(), "cosine": _COSINE, "cosine_loop": _COSINE,
    "wsd": {"decay_start_tokens", "decay_fraction", "decay_shape", "half_life_tokens", "final_ratio"}}
_TOKENS = number(low=0, integer=True, unit="tokens")
_SOME_TOKENS = number(low=1, integer=True, unit="tokens")


@spec
class ScheduleSpec:
    """The `schedule:` section of a run spec, in tokens so it does not depend on the batch size."""

    kind: Literal["constant", "cosine", "cosine_loop", "wsd"] = "wsd"
    """which schedule (a key of SCHEDULES)"""
    warmup_tokens: _TOKENS = 0
    """tokens of linear warmup from 0 to the max LR η"""
    period_tokens: _SOME_TOKENS | None = None
    """cosine, cosine_loop: T in tokens, where the cosine reaches final_ratio·η; None = the run's total tokens (T = S)"""
    decay_start_tokens: _TOKENS | None = None
    """wsd: T in tokens, end of the stable stage; the decay then lasts until the run ends (decay_fraction unused).
    None = start the decay decay_fraction of the run's tokens before its end"""
    decay_fraction: FRACTION = 0.1
    """wsd without decay_start_tokens: fraction of the run's tokens spent decaying, in (0, 1]; 10% reaches the
    cosine optimum, 2.5% falls short (§4.3, docs/method.md §3)"""
    decay_shape: Literal["exp", "linear", "cosine", "sqrt"] = "exp"
    """wsd: the decay's shape (a key of DECAY_SHAPES)"""
    half_life_tokens: _SOME_TOKENS | None = None
    """wsd with decay_shape "exp": half-life of the decay in tokens; None = decay length / EXP_HALF_LIVES"""
    final_ratio: number(low=0, high=1) | None = None
    """the LR at the end, as a fraction of η, in [0, 1]; None = the function's default (cosine 0.1, wsd 0.0)"""

    def __post_init__(self):
        for f in dataclasses.fields(self):  # e.g. decay_shape on a cosine: a value the schedule would ignore
            if f.name not in _KIND_KEYS[self.kind] | {"kind", "warmup_tokens"} and getattr(self, f.name) != f.default:
                raise refuse(f.name, getattr(self, f.name), f"leave it out: kind {self.kind!r} does not use it")
        if self.decay_start_tokens is not None and self.decay_fraction != 0.1:
            raise refuse("decay_fraction", self.decay_fraction, "leave it out when decay_start_tokens is set (the "
                         "decay then lasts until the run ends)")
        if self.half_life_tokens is not None and self.decay_shape != "exp":
            raise refuse("half_life_tokens", self.half_life_tokens, "leave it out: only decay_shape 'exp' has a "
                         "half-life")


def make_schedule(spec: ScheduleSpec, *, lr: float, total_steps: int, batch_tokens: int) -> Callable[[int], float]:
    """The spec's schedule as step → LR, for a run of total_steps steps of batch_tokens tokens each.

    A token boundary t becomes step ceil(t / batch_tokens): the first step whose batch starts at or after
    token t. The WSD decay length is round(decay_fraction · total_steps) steps (at least 1), ending at total_steps.
    """
    if total_steps < 1 or batch_tokens < 1:
        raise WindtunnelError(f"make_schedule needs total_steps >= 1 and batch_tokens >= 1, "
                              f"got {total_steps} and {batch_tokens}")
    total_tokens = total_steps * batch_tokens

    def bad(key, allowed):
        raise SpecError("schedule", f"schedule.{key}", getattr(spec, key), f"{allowed} (run of {total_tokens} tokens)")

    warmup = _steps(spec.warmup_tokens, batch_tokens)
    if warmup > total_steps:
        bad("warmup_tokens", "at most the run's tokens")
    kwargs = {} if spec.final_ratio is None else {"final_ratio": spec.final_ratio}
    if spec.kind in ("cosine", "cosine_loop"):
        kwargs["period"] = total_steps if spec.period_tokens is None else _steps(spec.period_tokens, batch_tokens)
        if kwargs["period"] <= warmup:
            bad("period_tokens", f"more than warmup_tokens ({spec.warmup_tokens})")
    elif spec.kind == "wsd":
        kwargs.update(_wsd_steps(spec, warmup, total_steps, batch_tokens, bad))
    schedule = functools.partial(SCHEDULES[spec.kind], lr=lr, warmup=warmup, **kwargs)  # picklable, unlike a lambda
    schedule(0)  # checks every argument now rather than at the first training step
    return schedule


def _steps(tokens: int, batch_tokens: int) -> int:
    return -(-tokens // batch_tokens)  # ceil, in integers (no float rounding)


def _wsd_steps(spec: ScheduleSpec, warmup: int, total_steps: int, batch_tokens: int, bad) -> dict:
    """decay_start, decay_steps, shape and half_life of a WSD spec, in steps."""
    if spec.decay_start_tokens is None:
        decay_steps = max(1, math.floor(spec.decay_fraction * total_steps + 0.5))  # nearest step, halves up
        decay_start = total_steps - decay_steps
        if decay_start < warmup:
            bad("decay_fraction", f"small enough that the decay starts after warmup_tokens ({spec.warmup_tokens})")
    else:
        decay_start = _steps(spec.decay_start_tokens, batch_tokens)
        decay_steps = total_steps - decay_start
        if not warmup <= decay_start < total_steps:
            bad("decay_start_tokens", f">= warmup_tokens ({spec.warmup_tokens}) and less than the run's tokens")
    # a half-life is a rate, not a boundary: kept as a fractional number of steps
    half_life = None if spec.half_life_tokens is None else spec.half_life_tokens / batch_tokens
    return {"decay_start": decay_start, "decay_steps": decay_steps, "shape": spec.decay_shape, "half_life": half_life}


# ---------------------------------------------------------------- batch-size warm-up


def stepping(spec: ScheduleSpec, *, lr: float, total: int, batch_tokens: int,
             stages: tuple[tuple[int, int], ...]) -> tuple[Callable[[int, int], float], int, int]:
    """How a run of `total` tokens steps its LR: lr_of(step, tokens seen before it), and the WSD decay's first step and
    token (0 without a decay). Without a batch warm-up the schedule is in steps of batch_tokens; with one, a step takes
    the LR at the tokens seen before it, so the schedule's token boundaries hold whatever the batch."""
    if stages:
        at_tokens = make_schedule(spec, lr=lr, total_steps=total, batch_tokens=1)
        decay_from = at_tokens.keywords.get("decay_start", 0)
        return (lambda step, tokens: at_tokens(min(tokens, total - 1))), batch_steps(decay_from, batch_tokens,
                                                                                      stages), decay_from
    at_step = make_schedule(spec, lr=lr, total_steps=batch_steps(total, batch_tokens, ()), batch_tokens=batch_tokens)
    decay_step = at_step.keywords.get("decay_start", 0)
    return (lambda step, tokens: at_step(step)), decay_step, decay_step * batch_tokens


def batch_stage(tokens: int, batch_tokens: int, stages: tuple[tuple[int, int], ...]) -> int:
    """The batch of the step that starts after `tokens` tokens: the last [from_tokens, batch] stage begun, else
    batch_tokens (no warm-up)."""
    return next((b for start, b in reversed(stages) if tokens >= start), batch_tokens)


def batch_steps(total: int, batch_tokens: int, stages: tuple[tuple[int, int], ...]) -> int:
    """Optimizer steps until `total` tokens are trained, each step of batch_stage(tokens so far) tokens."""
    if not stages:
        return -(-total // batch_tokens)
    steps = tokens = 0
    ends = [start for start, _ in stages[1:]] + [total]
    for (_, batch), end in zip(stages, ends):
        end = min(end, total)
        if tokens < end:
            n = -(-(end - tokens) // batch)
            steps, tokens = steps + n, tokens + n * batch
    return steps
