"""µP coordinate check (docs/method.md §3 "Checking µP"): does each layer's *update* keep its size as the width
grows?

For one µP base (d_base, d_head, vocab_size, scale_emb, scale_depth, init_std) it builds 2-block models at widths
spanning 16×, under µP and under SP, trains each STEPS AdamW steps on one fixed batch of random tokens, and measures
per layer the RMS per coordinate of h_t − h_0 on that batch for t = 1..STEPS. The log-log slope of that size
against width is ≈ 0 under µP and grows under SP (hidden LR not / m, logits not / m). A sweep over µP models runs
it first (`require_mup`, cached by the base's hash) and refuses to start when µP fails.

    windtunnel check-mup [--model-base micro-24k] [--widths 16 32 64 128 256] [--json]
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import math
from dataclasses import dataclass
from pathlib import Path

from windtunnel.config import ModelSpec
from windtunnel.errors import WindtunnelError
from windtunnel.paths import results_dir, write_atomic

__all__ = ["CheckBase", "CoordCheck", "base_of", "coord_check", "check_cached", "require_mup", "MUP_TOL", "SP_GAP"]

STEPS = 10         # Adam steps; sizes are measured after each
LR = 0.01          # the paper's µP base LR (§3.1); hidden 2-D weights train at LR · lr_scale
ROWS, SEQ = 4, 32  # one fixed batch of 128 random tokens, trained on and measured on
N_LAYERS = 2       # depth is not what µP scales: two blocks show a block feeding another
MAX_VOCAB = 4096   # µP scales nothing by the vocabulary: capped so a full-size vocabulary (73,440) stays cheap
MUP_TOL = 0.3      # |µP slope| allowed: measured ≤ 0.15 on micro, 0.18 on the paper's base (m = ½…8); hidden LR
                   # not / m, logits not / m or init not / √m each drive a layer of micro to ≥ 0.54
SP_GAP = 0.4       # SP's hidden and logit slopes must exceed µP's by this (measured ≥ 0.68), or the check is blind
SIZED_BY_SP = ("hidden", "logits")


@dataclass(frozen=True, kw_only=True)
class CheckBase:
    """What a µP ladder shares and the check depends on (docs/method.md §3 "Transfer"): its µP base."""

    d_base: int
    """µP base width: m = d_model / d_base"""
    d_head: int
    """attention head width; the check's widths are multiples of it"""
    vocab_size: int
    """the check's vocabulary (the ladder's, at most MAX_VOCAB)"""
    scale_emb: float
    """embedding output multiplier"""
    scale_depth: float
    """residual branches × scale_depth / sqrt(n_layers)"""
    init_std: float
    """init std of 2-D weights at the base width"""


@dataclass(frozen=True)
class CoordCheck:
    """One check: the widths, per parametrization and layer the update size at each width and step, the slopes."""

    base: dict
    widths: list[int]
    sizes: dict   # {"mup" | "sp": {layer: [[|h_t − h_0| for t = 1..STEPS] per width]}}
    mup: dict     # layer → log-log slope of update size against width
    sp: dict
    passed: bool
    reason: str   # one line: why it failed ("" when it passed)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)


def base_of(spec: ModelSpec) -> CheckBase:
    """The µP base of a ladder's model (its width, depth and heads are the check's own)."""
    return CheckBase(d_base=spec.d_base, d_head=spec.d_head, vocab_size=min(spec.vocab_size, MAX_VOCAB),
                     scale_emb=spec.scale_emb, scale_depth=spec.scale_depth, init_std=spec.init_std)


def default_widths(base: CheckBase) -> list[int]:
    """16× in width from m ≈ ½, in head multiples: micro 16…256 (~2 s a parametrization on 2 busy cores; one more
    doubling costs 3× the rest), the paper's base 128…2048. Widths far below the base are not what µP promises:
    there the relative weight update lr / (init_std · √m) grows, and the paper's base drifts (its logits' slope is
    −0.30 over m = ¼…4, −0.06 over m = 1…16)."""
    start = base.d_head * 2 ** max(0, math.ceil(math.log2(base.d_base / (2 * base.d_head))))
    return [start * k for k in (1, 2, 4, 8, 16)]


def _spec(base: CheckBase, width: int, parametrization: str) -> ModelSpec:
    return ModelSpec(name=f"coord-check-{width}", d_model=width, n_heads=width // base.d_head, n_layers=N_LAYERS,
                     parametrization=parametrization, **dataclasses.asdict(base))


def _outputs(model, idx) -> dict:
    """Each measured layer's output on idx: the embedding, every block's attention and MLP (before the branch
    multiplier), `hidden` and the logits.

    The embedding is computed here: the model looks it up through `_Embedding.apply`, which no module hook sees.
    `hidden` is the residual stream the final norm reads, not `model.hidden`: that one's RMSNorm bounds its change
    (|Δ| ≤ 2, so SP's slope reads 0.29 instead of 0.70) and its × 1/m is the µP head's multiplier (slope −1)."""
    import torch.nn.functional as F

    out = {"embed": F.embedding(idx, model.embed.weight) * model.emb_scale}
    named = {f"blocks.{i}.{part}": getattr(block, part) for i, block in enumerate(model.blocks)
             for part in ("attn", "mlp")}
    named["hidden"] = model.blocks[-1]
    hooks = [m.register_forward_hook(lambda mod, args, y, n=n: out.__setitem__(n, y)) for n, m in named.items()]
    try:
        out["logits"] = model(idx)
    finally:
        for hook in hooks:
            hook.remove()
    return out


def update_sizes(spec: ModelSpec, *, seed: int = 0, device: str = "cpu") -> dict[str, list[float]]:
    """RMS per coordinate of h_t − h_0 per layer after each of STEPS AdamW steps (no weight decay, per-group
    lr = LR · lr_scale, as the trainer), on one fixed batch of random tokens."""
    import torch

    from windtunnel.model import MiniCPM, param_groups

    with torch.random.fork_rng(devices=[]):  # the caller's RNG stays as it was; drawn on the CPU on any device
        torch.manual_seed(seed)
        model = MiniCPM(spec).to(device)
        windows = torch.randint(0, spec.vocab_size, (ROWS, SEQ + 1)).to(device)
    opt = torch.optim.AdamW(param_groups(model, weight_decay=0.0), lr=LR, betas=(0.9, 0.95), weight_decay=0.0)
    for group in opt.param_groups:
        group["lr"] = LR * group["lr_scale"]
    idx = windows[:, :-1]
    with torch.no_grad():
        start = _outputs(model, idx)
    sizes = {layer: [] for layer in start}
    for _ in range(STEPS):
        model.loss(windows).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        with torch.no_grad():
            now = _outputs(model, idx)
        for layer, h0 in start.items():
            sizes[layer].append((now[layer] - h0).pow(2).mean().sqrt().item())
    return sizes


def slope(widths: list[int], sizes: list[list[float]]) -> float:
    """Least-squares slope of log size against log width, averaged over the steps t (= the slope of the mean log
    size): step 1 alone is a transient (µP logits −0.4 at t = 1, ≈ 0 from t = 4)."""
    xs = [math.log(w) for w in widths]
    ys = [sum(math.log(max(s, 1e-30)) for s in row) / len(row) for row in sizes]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    return sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)


def verdict(mup: dict[str, float], sp: dict[str, float]) -> tuple[bool, str]:
    """Passed when every µP slope is within ±MUP_TOL and SP's hidden and logit slopes exceed µP's by SP_GAP."""
    worst = max(mup, key=lambda layer: abs(mup[layer]) if math.isfinite(mup[layer]) else math.inf)
    if not abs(mup[worst]) < MUP_TOL:
        return False, f"µP update size of {worst} scales as width^{mup[worst]:+.2f} (allowed: |slope| < {MUP_TOL})"
    for layer in SIZED_BY_SP:
        if not sp[layer] - mup[layer] > SP_GAP:
            return False, (f"SP's {layer} slope {sp[layer]:+.2f} is not {SP_GAP} above µP's {mup[layer]:+.2f}: "
                           "the check cannot tell µP from SP")
    return True, ""


def coord_check(base: CheckBase, *, widths: list[int] | None = None) -> CoordCheck:
    """Train every width under µP and SP and fit each layer's slope. On a GPU when there is one; on the CPU with
    one thread: these matmuls are tiny, and two threads on a 2-core box running a sweep were 20× slower."""
    import torch

    widths = sorted(widths or default_widths(base))
    _check_widths(base, widths)
    device = "cuda" if torch.cuda.is_available() else "cpu"
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        sizes = {kind: _per_layer([update_sizes(_spec(base, w, kind), device=device) for w in widths])
                 for kind in ("mup", "sp")}
    finally:
        torch.set_num_threads(threads)
    slopes = {kind: {layer: slope(widths, rows) for layer, rows in by_layer.items()}
              for kind, by_layer in sizes.items()}
    passed, reason = verdict(slopes["mup"], slopes["sp"])
    return CoordCheck(base=dataclasses.asdict(base), widths=widths, sizes=sizes, mup=slopes["mup"], sp=slopes["sp"],
                      passed=passed, reason=reason)


def _per_layer(runs: list[dict]) -> dict[str, list[list[float]]]:
    return {layer: [run[layer] for run in runs] for layer in runs[0]}


def _check_widths(base: CheckBase, widths: list[int]) -> None:
    bad = [w for w in widths if w <= 0 or w % base.d_head]
    if bad or len(widths) < 2 or widths[-1] < 16 * widths[0]:
        example = " ".join(map(str, default_widths(base)))
        raise WindtunnelError(f"--widths {' '.join(map(str, widths))}: give at least two positive multiples of "
                              f"d_head={base.d_head} spanning ≥16× (docs/method.md §3), e.g. {example}")


# ---------------------------------------------------------------- the gate of a sweep


def check_id(base: CheckBase, widths: list[int]) -> str:
    """A hash of the base, the check's settings and the code it checks: a changed model.py checks again."""
    here = Path(__file__).parent
    code = [(here / name).read_text() for name in ("model.py", "mupcheck.py")]
    blob = json.dumps([dataclasses.asdict(base), widths, STEPS, LR, ROWS, SEQ, N_LAYERS, *code], sort_keys=True)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]


def check_cached(base: CheckBase) -> tuple[CoordCheck, Path]:
    """The check of a base from results/cache/mupcheck/<hash>.json, run and written (atomically) when absent."""
    widths = default_widths(base)
    path = results_dir() / "cache" / "mupcheck" / f"{check_id(base, widths)}.json"
    if path.is_file():
        return CoordCheck(**json.loads(path.read_text())), path
    result = coord_check(base, widths=widths)
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(result.to_dict()))
    return result, path


def require_mup(models: list[ModelSpec]) -> list[Path]:
    """Check the µP base of every µP model before a sweep trains them; raise, naming the layer, when one fails."""
    bases = dict.fromkeys(base_of(m) for m in models if m.parametrization == "mup")
    paths = []
    for base in bases:
        result, path = check_cached(base)
        if not result.passed:
            raise WindtunnelError(f"µP coordinate check failed for base {_short(base)}: {result.reason}; see "
                                  "`windtunnel check-mup`, or pass --no-mup-check to sweep anyway")
        paths.append(path)
    return paths


def _short(base: CheckBase) -> str:
    return " ".join(f"{k}={v}" for k, v in dataclasses.asdict(base).items())
