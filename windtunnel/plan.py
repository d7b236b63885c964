"""From the fitted laws to the configuration of a full run (docs/method.md §1 step 5; paper §3.2, §3.3, §5).

    windtunnel plan micro-1.3m                         # compute-optimal tokens for the model's N
    windtunnel plan micro-1.3m --tokens 9e6            # a token budget
    windtunnel plan micro-1.3m --compute 8e13          # a FLOPs budget: D = C / the target's FLOPs a token

Every number says where it comes from, and a number that would be wrong is left out with the reason — never
guessed — and the plan's status says `incomplete`:
- µP transfer is exact or refused: the ladder's base hyper-parameters hold only for a target in the same µP
  base. d_base, scale_emb, scale_depth and init_std are written into the plan (so the target's per-tensor LR
  and init are exactly µP's from the ladder's optimum); a target of another head width, vocabulary or tokenizer
  (compared by the files' content) is not in the ladder's family, and nothing fitted on the ladder is used for it.
- one FLOP count, the scaling fit's (fit.json `flops`): "full", the trainer's 6·N_total + 12·L·d·T a token, by
  default, or the paper's 6·N·D; `--compute C` plans a run that costs C in it, and the compute-optimal allocation
  uses the same count (f(N) = k·N^b across the ladder). The GPU-hours always follow the trainer's count.
- the predicted loss has a 95% prediction interval of a new run, pooled over the candidate laws the ladder's
  backtests keep and widened with the distance beyond the ladder (windtunnel.predict); the plan states its
  extrapolation in N, D and C and refuses beyond the calibrated limits (predict.LIMITS), naming the one passed.
The `train:` section is a TrainSpec override mapping: `windtunnel launch PLAN.yaml` trains it (windtunnel.launch).
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import typing
from pathlib import Path
from typing import Literal

from windtunnel.checks import FRACTION, POSITIVE, number, spec
from windtunnel.config import ModelSpec
from windtunnel.counts import H100_FLOPS
from windtunnel.errors import WindtunnelError
from windtunnel.runs import tokenizer_sha256
from windtunnel.schedules import batch_steps

__all__ = ["PlanLimits", "make_plan", "render_yaml", "check_budget", "plan_from_fits", "TRANSFERRED", "FAMILY"]

TRANSFERRED = ("d_base", "scale_emb", "scale_depth", "init_std")  # µP base values the plan writes into the target
FAMILY = ("d_head", "vocab_size", "smear_keys")
# the target's own shape: a ladder of another head width, vocabulary or attention (smeared keys) is another family
N_KIND_LABEL = {"total": "N_total (with the tied embedding)", "non_embedding": "non-embedding N"}


_RATIO = number(low=1)  # a high/low ratio of an interval: 1 would accept only an exact value


@spec
class PlanLimits:
    """How uncertain a fitted quantity may be before the plan refuses to use it, and the hardware it is costed on."""

    max_loss_rel_interval: POSITIVE = 0.15
    """largest half-width of the predicted loss's 95% interval, relative to the loss"""
    max_tokens_ratio: _RATIO = 4.0
    """largest high/low ratio of the compute-optimal token budget's 95% interval"""
    max_batch_ratio: _RATIO = 4.0
    """high/low ratio of the batch size's 95% interval beyond which the plan notes the batch's risk in loss"""
    max_lr_ratio: _RATIO = 4.0
    """largest high/low ratio of an LR optimum's 95% interval"""
    mfu: FRACTION = 0.4
    """model FLOPs utilisation the GPU-hours are costed at"""
    gpu_flops: number(low=0, low_open=True, unit="FLOP/s") = H100_FLOPS["bf16"]
    """peak FLOP/s of one GPU (H100 SXM dense bf16)"""
    seq_len: number(low=1, integer=True, unit="tokens") = 4096
    """context length when no fit says at which length the ladder ran (MiniCPM: 4096)"""
    decay_fraction: FRACTION = 0.1
    """WSD: decay over this fraction of the stable stage's tokens, as the ladder's branches (~10% reaches the
    cosine optimum, §4.3)"""
    warmup_fraction: number(low=0, high=1, high_open=True) = 0.01
    """share of the tokens spent warming the LR up"""


def check_budget(tokens: float | None, compute: float | None) -> None:
    """A budget must be one positive, finite number of tokens or FLOPs."""
    if tokens is not None and compute is not None:
        raise WindtunnelError("plan: give a token budget (--tokens) or a FLOPs budget (--compute), not both")
    for flag, value in (("--tokens", tokens), ("--compute", compute)):
        if value is not None and not (math.isfinite(value) and value > 0):
            raise WindtunnelError(f"plan: {flag} {value:g} is not allowed; give a positive number "
                                  f"({'tokens' if flag == '--tokens' else 'FLOPs'}, e.g. {flag} 1e9)")


def make_plan(model: ModelSpec, *, scaling: dict | None, batch: dict | None, lr: dict | None,
              curve: dict | None = None, tokens: float | None = None, compute: float | None = None,
              limits: PlanLimits = PlanLimits()) -> dict:
    """The plan as a dict (see render_yaml); `scaling`, `batch`, `lr`, `curve` are the studies' fit.json contents or
    None."""
    from windtunnel.counts import counted_flops_per_token, flops_per_token, gpu_hours, n_params
    from windtunnel.fit import PerToken, ScalingLawFit
    from windtunnel.predict import LadderFit

    check_budget(tokens, compute)
    gaps: list[str] = []
    notes: list[str] = []
    fits = {"scaling law": scaling, "batch-size law": batch, "LR transfer": lr}
    tokenizer = _target_tokenizer(model, gaps)
    usable = {name: _in_family(model, fit, name, gaps, tokenizer) for name, fit in fits.items()}
    n_kind = scaling.get("n_kind", "non_embedding") if scaling else "total"
    counts = {"total": n_params(model, embedding=True), "non_embedding": n_params(model)}
    n = counts[n_kind]
    # the law of the allocation: the kept candidate in n_kind whose backtests erred least (studies.laws)
    law = ScalingLawFit.from_dict(scaling.get("prediction", scaling)) if usable["scaling law"] else None
    ladder = None
    if law is not None:
        if "ladder" not in scaling:
            gaps.append("scaling law: the fit predates calibrated intervals — refit it (windtunnel fit scaling_law)")
            law = None
        else:
            ladder = LadderFit.from_dict(scaling["ladder"])
            ratio, limit = n / ladder.extent[n_kind]["n_max"], ladder.limits["n"]
            if ratio > limit:
                gaps.append(f"scaling law: N = {n:,} is {ratio:,.3g}× the ladder's largest, beyond the {limit:g}× "
                            "its calibration was checked to (predict.LIMITS) — fit a ladder that reaches "
                            f"N/{limit:g}")
                law = ladder = None
    seq_len = _ladder_seq_len(scaling, limits)
    per_token = PerToken.from_dict(scaling.get("flops") if scaling else None)  # the count the allocation used
    counted = counted_flops_per_token(model, seq_len=seq_len, count=per_token.count, n_kind=n_kind)
    plan_tokens, basis = _tokens(n, law, limits, per_token, counted, tokens=tokens, compute=compute, gaps=gaps)
    loss = _loss(counts, n_kind, plan_tokens, ladder, law, limits, gaps) if plan_tokens else None
    if not plan_tokens:
        gaps.append("predicted loss: needs a token budget")
    batch_tokens, warmup, batch_hp = (_batch(n, plan_tokens, loss, batch, law, seq_len, limits, gaps, notes)
                                      if batch is None or usable["batch-size law"] else (None, None, None))
    lr_hp = _lr(lr, limits, gaps) if lr is None or usable["LR transfer"] else None
    max_lr = lr_hp["value"] if lr_hp else None
    train: dict = {"seq_len": seq_len}
    if model.tokenizer:  # the file its ladder trained with (checked by content above)
        train["data"] = {"tokenizer": model.tokenizer}
    base = _base(scaling, lr)
    if base is not None and (usable["scaling law"] or usable["LR transfer"]):
        train["model"] = {"parametrization": "mup", **{k: base[k] for k in TRANSFERRED}}
    steps = None
    schedule = {"warmup_fraction": limits.warmup_fraction, "decay_fraction": limits.decay_fraction}
    if plan_tokens:
        steps = max(1, round(plan_tokens / (batch_tokens or seq_len)))
        train["tokens"] = int(steps * (batch_tokens or seq_len))
        train["schedule"] = wsd_schedule(train["tokens"], batch_tokens or seq_len, **schedule)
    if batch_tokens:
        train["batch_tokens"] = batch_tokens
        if len(warmup) > 1:
            train["batch_warmup"] = [[stage["from_tokens"], stage["batch_tokens"]] for stage in warmup]
            steps = batch_steps(train["tokens"], batch_tokens, tuple(map(tuple, train["batch_warmup"])))
    if max_lr:
        train["lr"] = max_lr
        ladder_lrs = (scaling or {}).get("lr") or []
        if ladder_lrs and all(abs(math.log(max_lr / x)) > math.log(1.25) for x in ladder_lrs):
            notes.append(f"the LR study's optimum {max_lr:.3g} differs from the LR the scaling ladder trained at "
                         f"({', '.join(f'{x:.3g}' for x in ladder_lrs)}); the predicted loss assumes the ladder's")
    predicted_curve, decay = _curve(curve, model, train, limits, notes)
    if decay and decay["adopted"]:  # the curve law's better decay: the schedule, and the loss by the law's ratio
        train["schedule"] = decay["schedule"]
        if loss:
            ratio = decay["final"] / decay["plan"]
            loss = {**loss, "value": loss["value"] * ratio, "interval95": [x * ratio for x in loss["interval95"]],
                    "decay": f"{decay['fraction']:g} {decay['shape']} decay: the scaling law's value for "
                             f"{limits.decay_fraction:g} exp × {ratio:.4f}, the curve law's ratio of their final losses"}
    cost = None
    if "tokens" in train:
        trained = flops_per_token(model, seq_len=seq_len) * train["tokens"]  # what the GPUs compute
        cost = {"flops": counted * train["tokens"], "convention": per_token.describe() + (
                    f", N = {N_KIND_LABEL[n_kind]}" if per_token.count == "6nd" else ""),
                "trained_flops": trained, "steps": steps if batch_tokens else None,
                "gpu_hours": gpu_hours(trained, mfu=limits.mfu, peak=limits.gpu_flops),
                "mfu": limits.mfu, "gpu_flops": limits.gpu_flops}
        ladder = (scaling or {}).get("ladder_cost")   # what the wind tunnel cost, beside the run it plans
        if ladder:
            cost["ladder"] = {**ladder, "fraction_of_target": ladder["flops"] / trained}
    return {
        "target": model.name, "n_params": n, "n_kind": n_kind, "made": datetime.date.today().isoformat(),
        "tokenizer_sha256": tokenizer,
        "status": "complete" if not gaps else "incomplete", "gaps": gaps, "notes": notes,
        "train": train,
        "schedule_rule": schedule,   # how `launch --set tokens=T` makes the schedule of a plan without tokens
        "tokens_basis": basis,
        "predicted_loss": loss,
        "predicted_curve": predicted_curve,
        "decay_choice": decay,
        "hyperparameters": {"batch": batch_hp, "lr": lr_hp},
        "cost": cost,
        "paper": None if model.paper_run is None else {"tokens": model.paper_run.tokens,
                                                       "batch_tokens": list(model.paper_run.batch_tokens),
                                                       "lr": model.paper_run.lr},
    }


def wsd_schedule(tokens: int, batch_tokens: int, *, warmup_fraction: float, decay_fraction: float,
                 shape: str = "exp") -> dict:
    """The plan's WSD schedule for `tokens`: warm-up a fraction of the run, a decay (exponential: as the ladder's
    branches) over `decay_fraction` of the stable stage, at a whole step."""
    steps = max(1, round(tokens / batch_tokens))
    stable = round(steps / (1 + decay_fraction))
    return {"kind": "wsd", "warmup_tokens": int(warmup_fraction * tokens),
            "decay_start_tokens": int(stable * batch_tokens), "decay_shape": shape}


CURVE_POINTS = 100  # evaluation points of the predicted curve (and its last step)
DECAYS = (0.025, 0.05, 0.1, 0.2)  # decay fractions of the stable stage the plan weighs: the wsd sweep's
DECAY_SURE = 0.95  # the share of the curve law's bootstrap refits that must put a decay below the plan's own to adopt it
MIN_REFITS = 20    # fewer refits say too little to adopt another decay
DECAY_Z = 1.645    # and its gain must exceed this many times the law's sd on held-out decays (one-sided 95%): every
                   # refit has the law's form, so they agree on a shape preference that form alone may make


def _curve(curve: dict | None, model: ModelSpec, train: dict, limits: PlanLimits,
           notes: list) -> tuple[dict | None, dict | None]:
    """4) the WSD decay — fraction and shape — whose final loss the curve law (results/loss_curve/fit.json) predicts
    least, against the plan's own (limits.decay_fraction, exp: what the scaling law's loss is for); it is adopted
    when its gain exceeds DECAY_Z × the law's error on decays it did not fit (sd_decay) and at least DECAY_SURE of
    the law's bootstrap refits put it below the plan's own (else the gain is within what the law knows). Then the
    loss at CURVE_POINTS evaluations of the schedule (the adopted one) with its 95% band: what `windtunnel monitor`
    and `launch` compare a run with. A plan without them is still complete."""
    if curve is None:  # no loss-curve fit (windtunnel fit loss_curve): predicted_curve is null, said by nothing else
        return None, None
    if not all(k in train for k in ("tokens", "batch_tokens", "lr")):
        notes.append("predicted curve: needs the plan's tokens, batch and LR")
        return None, None
    import numpy as np

    from windtunnel.counts import n_params
    from windtunnel.curve import CurveFit
    from windtunnel.schedules import DECAY_SHAPES

    law, n = CurveFit.from_dict(curve["law"]), n_params(model, embedding=True)
    schedules = {(f, shape): wsd_schedule(train["tokens"], train["batch_tokens"], shape=shape, decay_fraction=f,
                                          warmup_fraction=limits.warmup_fraction)
                 for f in DECAYS for shape in DECAY_SHAPES}
    runs = {key: _planned(n, {**train, "schedule": schedule}, 1) for key, schedule in schedules.items()}
    finals = {key: float(law.predict(run)[0][-1]) for key, run in runs.items()}
    best = min(finals, key=finals.get)
    own_run = _planned(n, train, 1)
    own = float(law.predict(own_run)[0][-1])
    refits = law.draws(runs[best])[:, -1] < law.draws(own_run)[:, -1]
    sure = float(refits.mean()) if refits.size else 0.0
    gain, error = 1 - finals[best] / own, DECAY_Z * law.sd_decay  # the law's error on decays it did not fit
    adopted = bool(gain > error and refits.size >= MIN_REFITS and sure >= DECAY_SURE)
    decay = {"fraction": best[0], "shape": best[1], "final": finals[best], "plan": own, "gain": gain,
             "refits_agreeing": sure, "refits": int(refits.size), "decay_error": error, "adopted": adopted,
             "schedule": schedules[best] if adopted else train["schedule"],
             "by_decay": {f"{f:g} {shape}": v for (f, shape), v in finals.items()},
             "note": ("adopted: " if adopted else f"not adopted (needs a gain above {error:.2%}, {DECAY_Z:g} × the "
                      f"law's error on decays it did not fit, and {DECAY_SURE:.0%} of at least {MIN_REFITS} refits "
                      f"agreeing; the plan keeps {limits.decay_fraction:g} exp): ")
                     + f"gain {gain:.2%}; {sure:.0%} of {refits.size} refits put {best[0]:g} {best[1]} below the "
                       f"plan's {limits.decay_fraction:g} exp; predicted final loss of each decay over a fraction of "
                       "the stable stage"}
    return predicted_curve(law, n, {**train, "schedule": decay["schedule"]}), decay


def predicted_curve(law, n: float, train: dict) -> dict:
    """A `train:` section's predicted curve from a curve law (curve.CurveFit) for a model of `n` parameters (N_total):
    tokens, lr, loss, low and high at CURVE_POINTS evaluations of its schedule after the warm-up and from the law's
    first fitted evaluation on (before that it is not fitted: micro-1.3m's loss at 256K tokens was predicted 56% too
    high from a ladder first evaluated at 614K); what a plan's `predicted_curve` holds and `launch` checks live."""
    run = _planned(n, train, CURVE_POINTS)
    loss, low, high = law.predict(run)
    after = (run.tokens > run.warmup_tokens) & (run.tokens >= law.tokens_range[0])
    return {"tokens": run.tokens[after].tolist(), "lr": run.lr[run.steps - 1][after].tolist(),
            "loss": loss[after].tolist(), "low": low[after].tolist(), "high": high[after].tolist(), "law": law.form,
            "n_over_ladder": n / law.n_range[1],
            "band": "95%: the law's bootstrap over stable runs + a new run's offset + one evaluation's scatter + ~1% "
                    "per e-fold beyond the ladder's N or tokens; not a wrong form for a schedule unlike the fitted ones"}


def _planned(n: float, train: dict, points: int):
    """The curve.Curve to predict of a `train:` section: `points` evaluations spread over its steps, and its last."""
    import numpy as np

    from windtunnel.curve import Curve

    lr, batch = planned_steps(train)
    steps = np.unique(np.r_[np.linspace(0, lr.size, points + 1)[1:].round().astype(int), lr.size])
    return Curve(n=n, lr=lr, batch=batch, steps=steps[steps > 0])


def planned_steps(train: dict) -> tuple[np.ndarray, np.ndarray]:
    """The LR and the batch (tokens) of every optimizer step of a plan's `train:` section, stepped as windtunnel.train
    steps them (schedules.stepping, batch_stage)."""
    import numpy as np

    from windtunnel.schedules import ScheduleSpec, batch_stage, stepping

    tokens, batch, stages = train["tokens"], train["batch_tokens"], tuple(map(tuple, train.get("batch_warmup", ())))
    lr_of, _, _ = stepping(ScheduleSpec(**train["schedule"]), lr=train["lr"], total=tokens, batch_tokens=batch,
                           stages=stages)
    lrs, batches, seen = [], [], 0
    while seen < tokens:
        lrs.append(lr_of(len(lrs), seen))
        batches.append(batch_stage(seen, batch, stages))
        seen += batches[-1]
    return np.array(lrs), np.array(batches, float)


def _in_family(model: ModelSpec, fit: dict | None, name: str, gaps: list, tokenizer: str | None) -> bool:
    """Whether a fit's ladder is the target's family: one µP base, the target's head width and vocabulary, µP, and
    the target's tokenizer by content (`tokenizer`: the target's file's fingerprint; None when it names none)."""
    if fit is None or fit.get("mup_base") is None:
        return fit is not None  # a fit without ladder facts (a CSV) is taken as given
    base = fit["mup_base"]
    if isinstance(base, list):
        gaps.append(f"{name}: its ladder mixes µP bases ({len(base)} of them); hyper-parameters transfer only within one")
        return False
    target = {k: getattr(model, k) for k in FAMILY}
    base = {"smear_keys": False, **base}  # fits written before smeared keys existed trained without them
    differ = [f"{k} {base[k]} vs {target[k]}" for k in FAMILY if base[k] != target[k]]
    if base.get("parametrization") != "mup":
        differ.append(f"parametrization {base.get('parametrization')} (only µP transfers across widths)")
    ladder = fit.get("tokenizer") or []  # fingerprints of the tokenizer files the ladder trained with
    if ladder != ([tokenizer] if tokenizer else []):
        differ.append(f"tokenizer {', '.join(ladder) or 'trained by the ladder'} vs "
                      f"{tokenizer or 'trained by the target'} (SHA-256 of the files)")
    if differ:
        gaps.append(f"{name}: the ladder is not {model.name}'s family (ladder vs target: {', '.join(differ)}); "
                    "nothing fitted on it transfers — fit a ladder with the target's head width, tokenizer and attention")
        return False
    return True


def _target_tokenizer(model: ModelSpec, gaps: list) -> str | None:
    """The fingerprint of the target's tokenizer file (ModelSpec.tokenizer), which its family's ladders share."""
    if model.tokenizer is None:
        return None
    if not Path(model.tokenizer).is_file():
        gaps.append(f"tokenizer: {model.tokenizer} (models.{model.name}.tokenizer) is missing, so no fit can be "
                    "checked to share it — see models/tokenizers/README.md")
        return "missing"
    return tokenizer_sha256(model.tokenizer)


def _base(scaling: dict | None, lr: dict | None) -> dict | None:
    """The ladder's µP base (the LR fit's, else the scaling fit's) when it is one mapping."""
    for fit in (lr, scaling):
        if fit and isinstance(fit.get("mup_base"), dict):
            return fit["mup_base"]
    return None


def _ladder_seq_len(scaling: dict | None, limits: PlanLimits) -> int:
    """The context length the ladder was trained at (the law holds at it), else the default."""
    lengths = (scaling or {}).get("seq_len") or []
    return int(lengths[0]) if len(lengths) == 1 else limits.seq_len


def _tokens(n: int, law, limits: PlanLimits, per_token, counted: float, *, tokens, compute,
            gaps: list) -> tuple[float | None, str]:
    """1) the token budget: given, from a FLOPs budget (D = C / the target's FLOPs a token in the fit's count), or
    compute-optimal for N from the fit (along C = f(N)·D, f the fit's count across its ladder)."""
    if tokens is not None:
        return float(tokens), "given (--tokens)"
    if compute is not None:
        return compute / counted, f"FLOPs budget {compute:.3g} (D = C / {counted:.4g} FLOPs a token, {per_token.count})"
    if law is None:
        gaps.append("tokens: no usable scaling-law fit, and no --tokens or --compute given")
        return None, "missing"
    if law.samples is None:
        gaps.append("tokens: the scaling-law fit has no bootstrap interval (fit with --bootstrap); give --tokens")
        return None, "missing"
    d = law.optimal_tokens(n, per_token)
    low, high = law.optimal_tokens_interval(n, per_token)
    basis = (f"compute-optimal for N from the fit ({per_token.count} FLOPs): D/N = {d / n:.3g}, 95% "
             f"[{low / n:.3g}, {high / n:.3g}]")
    if not high / low <= limits.max_tokens_ratio:
        gaps.append(f"tokens: {basis} spans more than {limits.max_tokens_ratio:g}× — give --tokens or --compute")
        return None, basis
    return d, basis


def _loss(counts: dict, n_kind: str, d: float, ladder, law, limits: PlanLimits, gaps: list) -> dict | None:
    """2) the predicted final loss (mean held-out bits per byte) with its 95% prediction interval, pooled over the
    candidate laws the ladder keeps, and how far it lies beyond the ladder in N, D and C."""
    if ladder is None:
        gaps.append("predicted loss: no usable scaling-law fit (make scaling-law fit)")
        return None
    if not law.n_bootstrap or not law.group_dof:
        gaps.append("predicted loss: the scaling-law fit has no bootstrap prediction interval (fit with --bootstrap, "
                    "≥ 4 stable runs)")
        return None
    (pred,) = ladder.predict({k: [v] for k, v in counts.items() if k in ladder.extent}, [d])
    ratios = pred["extrapolation"]
    if pred["loss"] is None:
        gaps.append(f"predicted loss: {pred['reason']}")
        return None
    value, low, high = pred["loss"], pred["low"], pred["high"]
    half = (high - low) / 2 / value
    out = {"value": value, "interval95": [low, high], "unit": "bits per byte, mean over held-out sets",
           "interval": "prediction interval of a new run, pooled over the candidate laws the backtests keep "
                       f"({', '.join(pred['candidates'])}): law bootstrap over stable runs + a new run's offset + "
                       f"misspecification growing with the {pred['distance']:.2f} e-folds beyond the ladder",
           "form": law.form, "extrapolation": ratios, "n_extrapolation": ratios["n"],
           "not_identified": sorted(law.not_identified)}
    if not math.isfinite(half) or half > limits.max_loss_rel_interval:
        gaps.append(f"predicted loss: 95% interval [{low:.3g}, {high:.3g}] is ±{half:.0%} of {value:.3g}, "
                    f"wider than the ±{limits.max_loss_rel_interval:.0%} limit — fit more sizes or larger ones")
        return {**out, "usable": False}
    return {**out, "usable": True}


def _batch(n: int, d: float | None, loss: dict | None, batch: dict | None, law, seq_len: int, limits: PlanLimits,
           gaps: list, notes: list) -> tuple[int | None, list | None, dict | None]:
    """3) the batch size (§3.2) when both the loss and the law are uncertain, and a warm-up from the losses on the way.

    Draws of bs_opt = k / L^γ: the loss through its 95% prediction interval × the law's bootstrap (k, γ) rows
    (`BatchSizeFit.draws`); their 2.5–97.5% points are the batch's interval. A batch Δ = ln b − ln bs_opt off its
    optimum costs s_D·c2·Δ² of relative loss (`fit.batch_loss_cost`: s_D = −d ln L / d ln D of the scaling law at
    the target, c2 the median curvature of the optima nearest the target's loss); the expectation is least at the
    draws' geometric mean, which is the plan's batch whatever s_D and c2 are. An interval wider than
    `max_batch_ratio` is a note with that risk, not a gap: the least-cost batch is still the best one to train at.
    Returns (batch tokens, warm-up stages, the plan's `hyperparameters.batch`)."""
    if batch is None:
        gaps.append("batch size: no usable batch-size-law fit (make sweep-bs fit)")
        return None, None, None
    if not loss or not loss["usable"]:
        gaps.append("batch size: needs a usable predicted loss")
        return None, None, None
    import numpy as np

    from windtunnel.fit import BatchSizeFit, batch_loss_cost

    bs_law = BatchSizeFit.from_dict(batch)
    if bs_law.samples is None:
        gaps.append("batch size: the batch-size-law fit has no bootstrap interval (fit with --bootstrap)")
        return None, None, None
    draws = bs_law.draws(loss["interval95"])
    low, high = (float(x) for x in np.percentile(draws, [2.5, 97.5]))
    final = _round_batch(float(np.exp(np.log(draws).mean())), seq_len)
    slope, curvature = (_loss_slope(law, n, d) if law is not None else math.nan), bs_law.curvature_near(loss["value"])
    cost = [float(c) for c in batch_loss_cost([final, low, high], draws, slope=slope, curvature=curvature)]
    priced = all(map(math.isfinite, cost))
    risk = (f"+{cost[0]:.2%} of loss expected (+{cost[1]:.2%} training at the interval's low end, +{cost[2]:.2%} "
            f"at its high end)" if priced else "not priced: " + ("no scaling law for s_D" if law is None else
                                                          "the batch-size fit has no curvatures (refit it)"))
    lowest = min(o["level"] for o in batch["optima"])
    out = {"value": final, "interval95": [low, high],
           "law_interval95": [float(x) for x in bs_law.predict_interval(loss["value"])],
           "expected_cost": cost[0] if priced else None, "cost_at_ends": cost[1:] if priced else None,
           "loss_slope": slope if math.isfinite(slope) else None,
           "curvature": curvature if math.isfinite(curvature) else None,
           "basis": f"bs_opt = {bs_law.k:.4g} / L^{bs_law.gamma:.3g}, the loss drawn lognormal through its 95% "
                    f"interval × the law's bootstrap over models; the draws' geometric mean (least expected loss "
                    f"cost s_D·c2·E[Δ²], s_D = {slope:.3g}, c2 = {curvature:.3g}), in whole 8-sequence multiples; "
                    f"risk {risk}"}
    if not high / low <= limits.max_batch_ratio:
        notes.append(f"batch size: its 95% interval [{low:,.0f}, {high:,.0f}] tokens spans {high / low:.1f}×, over "
                     f"the {limits.max_batch_ratio:g}× limit (optima measured down to loss {lowest:.3g}, the target's "
                     f"is {loss['value']:.3g}); {final:,} tokens costs least when the optimum is uncertain: {risk}")
    return final, _batch_warmup(n, d, final, bs_law, law, seq_len), out


def _loss_slope(law, n: int, d: float) -> float:
    """s_D = −d ln L / d ln D of the scaling law at (n, d), by a central difference over ±1% of D."""
    step = 0.01
    up, down = (float(law.predict(n, d * f)) for f in (1 + step, 1 / (1 + step)))
    return -math.log(up / down) / (2 * math.log(1 + step))


def _batch_warmup(n: int, d: float, final: int, bs_law, law, seq_len: int) -> list:
    """The loss early in training is higher, so its optimal batch is smaller: start at half the final batch until
    the predicted optimum passes the geometric middle (the paper's 1.2B run: 2M → 4M tokens)."""
    switch = None if law is None else next(
        (t for t in (d * f for f in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5))
         if bs_law.predict(float(law.predict(n, t))) >= final / math.sqrt(2)), None)
    if switch is None or switch <= 0.01 * d or final // 2 < seq_len:
        return [{"from_tokens": 0, "batch_tokens": final}]
    return [{"from_tokens": 0, "batch_tokens": final // 2}, {"from_tokens": int(switch), "batch_tokens": final}]


def _round_batch(tokens: float, seq_len: int) -> int:
    """Whole sequences, a multiple of 8 of them (data-parallel launches on 1, 2, 4 or 8 workers divide it evenly),
    or a power of two under 8 sequences. Rounding to powers of two would move the batch up to 1.4× off the law,
    and at a fixed token budget a batch 2× off its optimum costs ~1–4% of loss (results/batch_size)."""
    rows = tokens / seq_len
    if rows < 6:
        return int(2 ** round(math.log2(max(rows, 1))) * seq_len)
    return int(8 * max(1, round(rows / 8)) * seq_len)


def _lr(lr: dict | None, limits: PlanLimits, gaps: list) -> dict | None:
    """4) the max LR: the ladder's µP optimum, which transfers across widths within its base (§3.3), with its 95%
    interval and the loss it would cost across it (`fit.lr_for_target`); the plan's `hyperparameters.lr`."""
    if lr is None:
        gaps.append("lr: no usable LR-transfer fit (make sweep-lr fit)")
        return None
    optima = [o for o in lr["optima"] if o["parametrization"] == "mup"]
    usable = [o for o in optima if not o["at_edge"] and o["low"] and o["high"] / o["low"] <= limits.max_lr_ratio]
    if not usable:
        gaps.append(f"lr: none of the {len(optima)} µP optima is inside the sampled LRs with a 95% interval "
                    f"under {limits.max_lr_ratio:g}× — widen the LR grid")
        return None
    import pandas as pd

    from windtunnel.fit import lr_for_target

    out = lr_for_target(pd.DataFrame(usable))
    cost = ("relative loss curvature·Δlog10(lr)²/loss_opt at each end from the LR study's parabolas, median over "
            "widths" if out["cost_at_ends"] else "cost not priced: the LR fit has no curvatures (refit it)")
    return {"value": out["value"], "interval95": out["interval95"], "cost_at_ends": out["cost_at_ends"],
            "basis": f"geometric mean of the {len(usable)} µP optima (of {len(optima)}) inside the grid with 95% "
                     f"intervals under {limits.max_lr_ratio:g}×; interval: that mean over draws of each optimum, "
                     f"widened to the optima's range (the target's width is outside the ladder); {cost}"}


def plan_from_fits(target: str, *, tokens: float | None = None, compute: float | None = None,
                   limits: PlanLimits = PlanLimits(), fit: str | None = None) -> tuple[dict, Path]:
    """Plan `target` (a model name) from the studies' fit.json files (`fit`: the scaling law's from that file
    instead); write results/plans/TARGET.yaml atomically. The plan's `sources` name each fit with the hash of its
    file, so a run launched from it says what it came from."""
    import hashlib

    from windtunnel.config import get_model
    from windtunnel.paths import results_dir, write_atomic
    from windtunnel.studies import planned

    check_budget(tokens, compute)  # before anything is read
    model = get_model(target)
    studies = planned()  # make_plan's keyword → the study whose fit.json feeds it
    files = {s.name: results_dir() / s.name / "fit.json" for s in studies.values()}
    if fit is not None:
        files["scaling_law"] = Path(fit)
        if not files["scaling_law"].is_file():
            raise WindtunnelError(f"plan --fit {fit}: no such file; write one with `windtunnel fit scaling-law --csv "
                                  "FILE ... --out PATH` or give a results/scaling_law/fit.json")
    fits = {name: json.loads(path.read_text()) if path.is_file() else None for name, path in files.items()}
    plan = make_plan(model, **{key: fits[s.name] for key, s in studies.items()}, tokens=tokens, compute=compute,
                     limits=limits)
    plan["sources"] = {name: "missing" if data is None else
                       f"{fit if fit and name == 'scaling_law' else f'results/{name}/fit.json'} ("
                       f"{data['scale'] + ' scale' if 'scale' in data else data.get('source', '?')}, sha256 "
                       f"{hashlib.sha256(files[name].read_bytes()).hexdigest()[:12]})" for name, data in fits.items()}
    path = results_dir() / "plans" / f"{target}.yaml"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, render_yaml(plan))
    return plan, path


@spec
class PlanFile:
    """A plan file (results/plans/TARGET.yaml, written by `windtunnel plan`): `target`, `train`, `schedule_rule` and
    `predicted_loss` are what `windtunnel launch` reads; the rest records how the plan was made, for people."""

    target: str
    """the planned model (a name of models/*.yaml)"""
    train: dict
    """the run's TrainSpec overrides (tokens, batch_tokens, lr, schedule, ...); `launch --set` fills what it left out"""
    schedule_rule: dict[str, float] | None = None
    """how `launch --set tokens=T` makes the WSD schedule of a plan without tokens: warmup_fraction, decay_fraction"""
    predicted_loss: dict | None = None
    """the scaling law's prediction: value, interval95 and how they were made; None: nothing to compare with"""
    predicted_curve: dict | None = None
    """the predicted loss at every evaluation of the planned schedule (tokens, lr, loss, low, high): what
    `windtunnel monitor` compares a run with"""
    decay_choice: dict | None = None
    """the WSD decay (fraction and shape) of least predicted final loss at the budget, its gain over 10% exp, and
    whether the plan adopted it (`adopted`, `note`)"""
    status: Literal["complete", "incomplete"] = "incomplete"
    """complete when every value of WHAT_KEYS and the prediction were planned"""
    gaps: list[str] = dataclasses.field(default_factory=list)
    """what the plan could not decide, and why"""
    notes: list[str] = dataclasses.field(default_factory=list)
    """risks and departures worth reading before a launch"""
    n_params: int | None = None
    n_kind: str | None = None
    made: typing.Any = None
    tokenizer_sha256: str | None = None
    tokens_basis: typing.Any = None
    hyperparameters: dict | None = None
    cost: dict | None = None
    paper: dict | None = None
    sources: dict[str, str] = dataclasses.field(default_factory=dict)


WHAT_KEYS = ("tokens", "batch_tokens", "lr")   # what a plan decides for its run; `launch --set` fills what it left out


def plan_missing(plan: dict) -> list[str]:
    """The train keys of WHAT_KEYS a plan left out."""
    return [k for k in WHAT_KEYS if k not in plan["train"]]


def render_yaml(plan: dict) -> str:
    """The plan as commented YAML: the header says how to launch it and what it was made from."""
    import yaml

    head = [f"# windtunnel plan for {plan['target']} (N = {plan['n_params']:,}, {N_KIND_LABEL[plan['n_kind']]}), "
            f"made {plan['made']}",
            f"# status: {plan['status']}" + ("" if not plan["gaps"] else " — " + "; ".join(plan["gaps"])),
            f"# launch: windtunnel launch <this file> --workers N [--gpus-per-worker 1] [--dry-run]"
            + (f"  (--set fills what it left out: {', '.join(plan_missing(plan))})" if plan_missing(plan) else ""),
            "# made from: " + ", ".join(f"{k} {v}" for k, v in plan.get("sources", {}).items())]
    return "\n".join(head) + "\n" + yaml.safe_dump(plan, sort_keys=False, allow_unicode=True, width=120)
