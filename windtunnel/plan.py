"""From the fitted laws to the configuration of a full run (DESIGN §1 step 5; paper §3.2, §3.3, §5).

    windtunnel plan minicpm-1.2b                       # compute-optimal tokens for the model's N
    windtunnel plan minicpm-1.2b --tokens 1.1e12       # a token budget
    windtunnel plan minicpm-1.2b --compute 1e22        # a FLOPs budget: D = C / 6N

Every number says where it comes from. A quantity whose fit is missing, or whose 95% interval is wider than the
stated limit, is left out with the reason — never guessed — and the plan's status says `incomplete`.
The `train:` section is a TrainSpec override mapping: `windtunnel train TARGET --set-file PLAN.yaml` runs it.
"""

from __future__ import annotations

import datetime
import math
from dataclasses import dataclass

from windtunnel.config import ModelSpec
from windtunnel.errors import WindtunnelError

__all__ = ["PlanLimits", "make_plan", "render_yaml"]


@dataclass(frozen=True, kw_only=True)
class PlanLimits:
    """How uncertain a fitted quantity may be before the plan refuses to use it, and the hardware it is costed on."""

    max_loss_rel_interval: float = 0.15
    """largest half-width of the predicted loss's 95% interval, relative to the loss"""
    max_tokens_ratio: float = 4.0
    """largest high/low ratio of the compute-optimal token budget's 95% interval"""
    max_batch_ratio: float = 4.0
    """largest high/low ratio of the batch size's 95% interval"""
    max_lr_ratio: float = 4.0
    """largest high/low ratio of an LR optimum's 95% interval"""
    mfu: float = 0.4
    """model FLOPs utilisation the GPU-hours are costed at"""
    gpu_flops: float = 989e12
    """peak FLOP/s of one GPU (H100 SXM dense bf16)"""
    seq_len: int = 4096
    """context length of the full run (MiniCPM: 4096)"""
    decay_fraction: float = 0.1
    """WSD: share of the tokens spent decaying (~10% reaches the cosine optimum, §4.3)"""
    warmup_fraction: float = 0.01
    """share of the tokens spent warming the LR up"""


def make_plan(model: ModelSpec, *, scaling: dict | None, batch: dict | None, lr: dict | None,
              tokens: float | None = None, compute: float | None = None, limits: PlanLimits = PlanLimits()) -> dict:
    """The plan as a dict (see render_yaml); `scaling`, `batch`, `lr` are the studies' fit.json contents or None."""
    from windtunnel.model import count_params, flops_per_token

    if tokens is not None and compute is not None:
        raise WindtunnelError("plan: give a token budget (--tokens) or a FLOPs budget (--compute), not both")
    from windtunnel.fit import ScalingLawFit

    n = count_params(model)
    law = ScalingLawFit.from_dict(scaling) if scaling is not None else None  # parsed once: 4000 bootstrap rows
    gaps: list[str] = []
    plan_tokens, basis = _tokens(n, law, limits, tokens=tokens, compute=compute, gaps=gaps)
    loss = _loss(n, plan_tokens, law, scaling, limits, gaps) if plan_tokens else None
    if not plan_tokens:
        gaps.append("predicted loss: needs a token budget")
    batch_tokens, warmup = _batch(n, plan_tokens, loss, batch, law, limits, gaps)
    max_lr = _lr(lr, limits, gaps)
    train: dict = {"seq_len": limits.seq_len}
    steps = None
    if plan_tokens:
        steps = max(1, round(plan_tokens / (batch_tokens or 1)))
        train["tokens"] = int(steps * batch_tokens) if batch_tokens else int(plan_tokens)
        train["schedule"] = {"kind": "wsd", "warmup_tokens": int(limits.warmup_fraction * train["tokens"]),
                             "decay_fraction": limits.decay_fraction, "decay_shape": "exp"}
    if batch_tokens:
        train["batch_tokens"] = batch_tokens
    if max_lr:
        train["lr"] = max_lr
    flops = flops_per_token(model, seq_len=limits.seq_len) * train["tokens"] if "tokens" in train else None
    return {
        "target": model.name, "n_params": n, "made": datetime.date.today().isoformat(),
        "status": "complete" if not gaps else "incomplete", "gaps": gaps,
        "train": train,
        "tokens_basis": basis,
        "predicted_loss": loss,
        "batch_warmup": warmup,
        "cost": None if flops is None else {
            "flops": flops, "steps": steps if batch_tokens else None,
            "gpu_hours": flops / (limits.mfu * limits.gpu_flops) / 3600, "mfu": limits.mfu, "gpu_flops": limits.gpu_flops},
        "paper": None if model.paper_run is None else {"tokens": model.paper_run.tokens,
                                                       "batch_tokens": list(model.paper_run.batch_tokens),
                                                       "lr": model.paper_run.lr},
    }


def _tokens(n: int, law, limits: PlanLimits, *, tokens, compute, gaps: list) -> tuple[float | None, str]:
    """1) the token budget: given, from a FLOPs budget (D = C/6N), or compute-optimal for N from the fit."""
    if tokens is not None:
        return float(tokens), "given (--tokens)"
    if compute is not None:
        return compute / (6 * n), f"FLOPs budget {compute:.3g} (D = C / 6N)"
    if law is None:
        gaps.append("tokens: no scaling-law fit (make scaling-law fit), and no --tokens or --compute given")
        return None, "missing"
    d = law.optimal_tokens(n)
    if law.samples is None:
        gaps.append("tokens: the scaling-law fit has no bootstrap interval (fit with --bootstrap); give --tokens")
        return None, "missing"
    low, high = law.optimal_tokens_interval(n)
    basis = f"compute-optimal for N from the fit: D/N = {d / n:.3g}, 95% [{low / n:.3g}, {high / n:.3g}]"
    if not high / low <= limits.max_tokens_ratio:
        gaps.append(f"tokens: {basis} spans more than {limits.max_tokens_ratio:g}× — give --tokens or --compute")
        return None, basis
    return d, basis


def _loss(n: int, d: float, law, scaling: dict | None, limits: PlanLimits, gaps: list) -> dict | None:
    """2) the predicted final loss (mean held-out bits per byte) with its bootstrap interval."""
    if law is None:
        gaps.append("predicted loss: no scaling-law fit (make scaling-law fit)")
        return None
    value = float(law.predict(n, d))
    if not law.n_bootstrap:
        gaps.append("predicted loss: the scaling-law fit has no bootstrap interval (fit with --bootstrap)")
        return None
    low, high = (float(x) for x in law.predict_interval(n, d))
    half = (high - low) / 2 / value
    extrapolation = n / scaling["n_max"] if scaling.get("n_max") else None
    out = {"value": value, "interval95": [low, high], "unit": "bits per byte, mean over held-out sets",
           "n_extrapolation": extrapolation}
    if not math.isfinite(half) or half > limits.max_loss_rel_interval:
        gaps.append(f"predicted loss: 95% interval [{low:.3g}, {high:.3g}] is ±{half:.0%} of {value:.3g}, "
                    f"wider than the ±{limits.max_loss_rel_interval:.0%} limit — fit more sizes or larger ones")
        return {**out, "usable": False}
    return {**out, "usable": True}


def _batch(n: int, d: float | None, loss: dict | None, batch: dict | None, law,
           limits: PlanLimits, gaps: list) -> tuple[int | None, list | None]:
    """3) batch size from bs_opt = k / L^γ at the predicted loss (§3.2), and a warmup from the losses on the way."""
    if batch is None:
        gaps.append("batch size: no batch-size-law fit (make sweep-bs fit)")
        return None, None
    if not loss or not loss["usable"]:
        gaps.append("batch size: needs a usable predicted loss")
        return None, None
    from windtunnel.fit import BatchSizeFit

    bs_law = BatchSizeFit.from_dict(batch)
    best = float(bs_law.predict(loss["value"]))
    low, high = (float(x) for x in bs_law.predict_interval(loss["value"]))
    if not high / low <= limits.max_batch_ratio:
        gaps.append(f"batch size: 95% interval [{low:,.0f}, {high:,.0f}] tokens spans more than "
                    f"{limits.max_batch_ratio:g}× — add batch sizes or loss levels to the batch-size sweep")
        return None, None
    final = _round_batch(best, limits.seq_len)
    # the loss early in training is higher, so its optimal batch is smaller: start at half the final batch
    # until the predicted optimum passes the geometric middle (the paper's 1.2B run: 2M → 4M tokens)
    switch = next((t for t in (d * f for f in (0.01, 0.02, 0.05, 0.1, 0.2, 0.3, 0.5))
                   if bs_law.predict(float(law.predict(n, t))) >= final / math.sqrt(2)), None)
    if switch is None or switch <= 0.01 * d:
        return final, [{"from_tokens": 0, "batch_tokens": final}]
    return final, [{"from_tokens": 0, "batch_tokens": final // 2}, {"from_tokens": int(switch), "batch_tokens": final}]


def _round_batch(tokens: float, seq_len: int) -> int:
    """Whole sequences, a power of two of them (the shapes data-parallel launches divide evenly)."""
    rows = max(1, 2 ** round(math.log2(max(tokens / seq_len, 1))))
    return int(rows * seq_len)


def _lr(lr: dict | None, limits: PlanLimits, gaps: list) -> float | None:
    """4) the max LR: the µP optimum, which transfers across widths (§3.3)."""
    if lr is None:
        gaps.append("lr: no LR-transfer fit (make sweep-lr fit)")
        return None
    optima = [o for o in lr["optima"] if o["parametrization"] == "mup"]
    usable = [o for o in optima if not o["at_edge"] and o["low"] and o["high"] / o["low"] <= limits.max_lr_ratio]
    if not usable:
        gaps.append(f"lr: none of the {len(optima)} µP optima is inside the sampled LRs with a 95% interval "
                    f"under {limits.max_lr_ratio:g}× — widen the LR grid")
        return None
    return float(math.exp(sum(math.log(o["lr_opt"]) for o in usable) / len(usable)))


def render_yaml(plan: dict, *, sources: dict) -> str:
    """The plan as commented YAML: the header says how to launch it and what it was made from."""
    import yaml

    head = [f"# windtunnel plan for {plan['target']} (N = {plan['n_params']:,}), made {plan['made']}",
            f"# status: {plan['status']}" + ("" if not plan["gaps"] else " — " + "; ".join(plan["gaps"])),
            f"# launch: windtunnel train {plan['target']} --set-file <this file>",
            "# made from: " + ", ".join(f"{k} {v}" for k, v in sources.items())]
    return "\n".join(head) + "\n" + yaml.safe_dump({**plan, "sources": sources}, sort_keys=False, allow_unicode=True, width=120)
