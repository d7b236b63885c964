"""One training segment: the loop, evaluation per token and per byte, gradient statistics, divergence
detection, atomic checkpoints and bitwise resume.

`train(spec, run_dir, log=...)` trains `spec` in `run_dir`, resuming from the newest checkpoint there.
It imports neither MLflow nor Ray: metrics leave through the `log(metrics, step)` callback, and
`flush()` (if given) is called before each checkpoint so that what a checkpoint covers is durable.

Data-parallel: when a torch.distributed process group is up (`windtunnel launch` starts one per Ray Train
worker), each of the W workers trains the same model on its share of every batch: micro-batch k of a step is
global window block k·W + rank, so W workers and one process with the same global batch see the same windows
and compute the same update. `spec.parallel` chooses how: "ddp" replicates the model (DistributedDataParallel;
rank 0 writes the one checkpoint file), "fsdp" shards parameters, gradients and AdamW state (FSDP2
`fully_shard` per block and at the root). Every layout checkpoints with torch.distributed.checkpoint, a folder
step_N.dcp keyed by parameter name, so a run resumes in another layout or on another number of workers (one
process, DDP, FSDP). Rank 0 alone writes the status and metrics; every rank resumes from the same checkpoint. A WSD
run keeps the checkpoint at its decay start (a decay can be redone from it), and the newest `keep_checkpoints`
periodic ones.
"""

from __future__ import annotations

import dataclasses
import functools
import json
import math
import os
import sys
import time
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Callable

import torch
import torch.nn.functional as F

from windtunnel.config import TrainSpec, check_run
from windtunnel.data import eval_windows, mixture_tokens, mixture_windows, prepare, sample_windows
from windtunnel.errors import SpecError, WindtunnelError
from windtunnel.counts import flops_per_token, n_params
from windtunnel.model import MiniCPM, param_groups
from windtunnel.paths import write_atomic
from windtunnel.schedules import batch_stage, batch_steps, stepping

__all__ = ["train", "TrainResult", "read_status", "peak_flops", "total_tokens", "total_steps", "batch_at"]

Log = Callable[[dict, int], None]
# dense bf16 peak FLOP/s of known accelerators, by a substring of torch.cuda.get_device_name()
GPU_PEAK_BF16 = {"H200": 989e12, "H100": 989e12, "A100": 312e12, "L40S": 362e12, "A10": 125e12, "4090": 165e12}


@dataclass(frozen=True)
class TrainResult:
    """How a segment ended; also stored in `run_dir/status.json`."""

    status: str           # "finished" | "diverged" | "stopped" (asked to, by train's `stop`: resumable)
    step: int             # optimizer steps done
    tokens: int           # training tokens seen
    train_loss: float     # smoothed train loss at the end, nats per token
    eval: dict            # {set: {"loss": nats/token, "bpb": bits/byte}} at the last evaluation
    tokens_per_s: float   # training throughput of this process, evaluation excluded
    mfu: float | None     # model FLOPs utilisation against peak_flops
    wall_s: float         # wall time of this process's share of the segment
    epochs: float = 0.0   # passes over the training tokens so far (> 1: some tokens were seen twice)


def total_tokens(spec: TrainSpec) -> int:
    """Tokens the segment trains: spec.tokens, or 20 per non-embedding parameter."""
    return spec.tokens if spec.tokens is not None else 20 * n_params(spec.model)


def batch_at(spec: TrainSpec, tokens: int) -> int:
    """The batch (tokens per optimizer step) of the step that starts after `tokens` tokens."""
    return batch_stage(tokens, spec.batch_tokens, spec.batch_warmup)


def total_steps(spec: TrainSpec) -> int:
    """Optimizer steps of the segment: each step takes batch_at(tokens so far), until total_tokens is reached."""
    return batch_steps(total_tokens(spec), spec.batch_tokens, spec.batch_warmup)


@functools.cache
def peak_flops(device: str, dtype: str) -> float | None:
    """Declared peak FLOP/s: a table for known GPUs (bf16), a measured fp32 matmul on CPU."""
    if device == "cuda":
        name = torch.cuda.get_device_name()
        return next((v for k, v in GPU_PEAK_BF16.items() if k in name), None) if dtype == "bf16" else None
    a, b = torch.randn(1024, 1024), torch.randn(1024, 1024)
    a @ b  # warm up the BLAS threads
    start, reps = time.perf_counter(), 8
    for _ in range(reps):
        a @ b
    return reps * 2 * 1024**3 / (time.perf_counter() - start)


def read_status(run_dir: Path) -> dict | None:
    path = Path(run_dir) / "status.json"
    return json.loads(path.read_text()) if path.exists() else None


def _write_json(path: Path, obj) -> None:
    write_atomic(path, json.dumps(obj, indent=1, default=str))


def _resolve_runtime(spec: TrainSpec) -> tuple[str, str]:
    device = spec.device if spec.device != "auto" else ("cuda" if torch.cuda.is_available() else "cpu")
    if device == "cuda" and not torch.cuda.is_available():
        raise SpecError("--set", "device", "cuda", "'cpu' or 'auto': no CUDA device is visible")
    dtype = spec.dtype if spec.dtype != "auto" else ("bf16" if device == "cuda" else "fp32")
    return device, dtype


COMPILE_CPU_TOKENS = 5_000_000  # auto-compile on CPU from here: a 22–37 s cold compile pays back after 3–7M tokens


def _use_compile(spec: TrainSpec, device: str, tokens_left: int) -> bool:
    if spec.compile is not None:
        return spec.compile
    return device == "cuda" or tokens_left >= COMPILE_CPU_TOKENS


def _compiled(fn, device: str):
    """torch.compile, with a C++ wrapper calling the kernels on CPU (Python's took ~2 ms a micro-142k step)."""
    return torch.compile(fn, options={"cpp_wrapper": device == "cpu"})


def _check_batch(spec: TrainSpec, workers: int = 1) -> int:
    """Rows (sequences) per micro-batch of one worker: the run's fields together are config.check_run's; here,
    that every batch splits over `workers` whole micro-batches."""
    check_run(spec, file="train spec")
    micro = spec.micro_batch_tokens or spec.batch_tokens // workers
    if micro <= 0 or micro % spec.seq_len:
        raise SpecError("train spec", "micro_batch_tokens", micro, f"a positive multiple of seq_len={spec.seq_len}")
    for batch in {spec.batch_tokens, *(b for _, b in spec.batch_warmup)}:
        if batch % (micro * workers):
            raise SpecError("train spec", "batch_tokens", batch, f"a multiple of {workers} worker(s) × "
                            f"micro_batch_tokens={micro}")
    return micro // spec.seq_len


def _world() -> tuple[int, int]:
    """(rank, workers) of the process group, (0, 1) without one."""
    import torch.distributed as dist

    return (dist.get_rank(), dist.get_world_size()) if dist.is_available() and dist.is_initialized() else (0, 1)


@contextmanager
def _fsdp_no_sync(model):
    """FSDP2's no_sync: keep the unreduced gradients of a micro-batch that is not the step's last."""
    model.set_requires_gradient_sync(False)
    try:
        yield
    finally:
        model.set_requires_gradient_sync(True)


class _Loss(torch.nn.Module):
    """model.loss as a module's forward, so that DistributedDataParallel can wrap it."""

    def __init__(self, model: MiniCPM):
        super().__init__()
        self.model = model

    def forward(self, windows):
        return self.model.loss(windows)


# ---------------------------------------------------------------- checkpoints


def _checkpoints(run_dir: Path) -> list[Path]:
    """Checkpoint folders (step_N.dcp) and files of earlier versions (step_N.pt), oldest first."""
    found = [*(run_dir / "checkpoints").glob("step_*.pt"), *(run_dir / "checkpoints").glob("step_*.dcp")]
    return sorted(found, key=lambda p: (int(p.stem.split("_")[1]), p.suffix == ".dcp"))


def checkpoint_path(run_dir: Path, step: int) -> Path:
    """The checkpoint of `step` in `run_dir`: a step_N.dcp folder, or the step_N.pt file an earlier version wrote."""
    folder = Path(run_dir) / "checkpoints" / f"step_{step:08d}.dcp"
    legacy = folder.with_suffix(".pt")
    return legacy if legacy.is_file() and not folder.is_dir() else folder


def _drop_older(run_dir: Path, step: int, keep: set[int], latest: int) -> None:
    """Remove the checkpoints before `step` that are neither among the newest `latest` nor at a kept step."""
    import shutil

    found = _checkpoints(run_dir)
    for old in found[:-latest]:
        at = int(old.stem.split("_")[1])
        if at < step and at not in keep:
            shutil.rmtree(old) if old.is_dir() else old.unlink()


def _save(run_dir: Path, step: int, model, opt, state: dict, mine: dict, *, keep: set[int], latest: int,
          distributed: bool) -> None:
    """One checkpoint in every layout (torch.distributed.checkpoint, keyed by parameter name, so one process, DDP and
    FSDP on any number of workers can resume it): the model and AdamW state (each rank writes its shards; replicated
    tensors once), each rank's `mine` (its gradient and update vectors) and rank 0's `state`, in a temporary folder
    renamed to step_N.dcp once all have written."""
    import shutil

    import torch.distributed as dist
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict

    rank = dist.get_rank() if distributed else 0
    barrier = dist.barrier if distributed else (lambda: None)
    path = Path(run_dir) / "checkpoints" / f"step_{step:08d}.dcp"
    tmp = path.with_suffix(".partial")
    if rank == 0 and tmp.exists():
        shutil.rmtree(tmp)
    barrier()
    model_state, opt_state = get_state_dict(model, opt)
    dcp.save({"model": model_state, "optimizer": opt_state}, checkpoint_id=str(tmp), no_dist=not distributed)
    torch.save(mine, tmp / f"rank{rank}.pt")
    barrier()
    if rank == 0:
        torch.save(state, tmp / "state.pt")
        if path.exists():
            shutil.rmtree(path)
        os.replace(tmp, path)
        _drop_older(run_dir, step, keep, latest)
    barrier()


def _load(path: Path, model, opt, *, layout: dict) -> dict:
    """A checkpoint's state, after loading its weights and optimizer moments into model and opt (resharded to this
    layout: one process, DDP or FSDP on any number of workers). The gradient and update vectors of the statistics
    come back only in the layout that wrote them (`layout`: {"workers", "parallel"}); elsewhere they restart."""
    import torch.distributed as dist

    if path.suffix == ".pt":   # a whole checkpoint of an earlier version: one process or DDP
        if layout["parallel"] == "fsdp" and layout["workers"] > 1:
            raise WindtunnelError(f"{path} was written whole by an earlier windtunnel; resume it with parallel=ddp")
        state = torch.load(path, map_location="cpu", weights_only=True)
        model.load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        return state
    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    distributed = dist.is_available() and dist.is_initialized()
    model_state, opt_state = get_state_dict(model, opt)
    dcp.load({"model": model_state, "optimizer": opt_state}, checkpoint_id=str(path), no_dist=not distributed)
    set_state_dict(model, opt, model_state_dict=model_state, optim_state_dict=opt_state)
    state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    state.setdefault("parallel", "fsdp")   # before every layout wrote step_N.dcp, only FSDP did, without saying so
    rank = dist.get_rank() if distributed else 0
    mine = path / f"rank{rank}.pt"
    same = mine.is_file() and all(state.get(k) == v for k, v in layout.items())
    saved = torch.load(mine, map_location="cpu", weights_only=True) if same else {}
    state["prev_grad"], state["prev_update"] = saved.get("prev_grad"), saved.get("prev_update")
    return state


# ---------------------------------------------------------------- statistics


class GradStats:
    """Per step (§4.4, Fig. 7–8): global grad norm (and clipping), the cosine between consecutive gradients,
    the directional derivatives along the trajectory D1 = g(t+1)·v(t)/‖v(t)‖ and D2 = (g(t+1) − g(t))·v(t)/‖v(t)‖²
    (v(t) the parameter update of step t, g the unclipped gradient), and max |Δw| of each weight matrix's
    update — on flat vectors: a few fused ops a step instead of several per tensor.

    `compiled`: both halves run as inductor graphs (~1 ms less a micro-142k CPU step).
    """

    def __init__(self, named: list[tuple[str, torch.Tensor]], *, compiled: bool = False, sharded: bool = False):
        self.params = [p for _, p in named]
        self.matrices = [(name.removesuffix(".weight"), i) for i, (name, p) in enumerate(named) if p.dim() == 2]
        self.sharded = sharded  # FSDP: params and grads are DTensors; statistics of the local shards are all-reduced
        self.prev_grad: torch.Tensor | None = None    # g(t): the last step's flat gradient, kept in checkpoints
        self.prev_update: torch.Tensor | None = None  # v(t): the last step's flat update, kept in checkpoints
        self.before: torch.Tensor | None = None
        device = self.params[0].device.type
        self._clip_and_compare = _compiled(_clip_and_compare, device) if compiled else _clip_and_compare
        self._changes = _compiled(_changes, device) if compiled else _changes

    def before_step(self, max_norm: float) -> torch.Tensor:
        """Clip the gradients to max_norm; returns [norm before clipping, cosine with the last gradient, D1, D2]
        (NaN where the last step's gradient or update is unknown: the first step)."""
        known = self.prev_grad is not None and self.prev_update is not None
        if self.sharded:
            out, self.prev_grad, self.before = _clip_and_compare_shards(self.params, self.prev_grad,
                                                                         self.prev_update, max_norm)
        else:
            if not known:
                zeros = torch.zeros(sum(p.numel() for p in self.params), device=self.params[0].device)
            prev = self.prev_grad if self.prev_grad is not None else zeros
            update = self.prev_update if self.prev_update is not None else zeros
            out, self.prev_grad, self.before = self._clip_and_compare(self.params, prev, update, max_norm)
        return out if known else torch.cat([out[:1], torch.full_like(out[1:], math.nan)])

    def after_step(self) -> torch.Tensor:
        """Max |Δw| of each tensor since before_step (keeps the update for the next step's D1 and D2)."""
        if not self.sharded:
            largest, self.prev_update = self._changes(self.params, self.before)
            return largest
        import torch.distributed as dist

        largest, self.prev_update = _changes([p.to_local() for p in self.params], self.before)
        dist.all_reduce(largest, op=dist.ReduceOp.MAX)
        return largest

    def named(self, largest: list[float], *, each: bool) -> dict[str, float]:
        """The metrics of after_step's values: the largest over all weights, and with `each` each weight matrix's
        (logged at evaluations only: per step they were half of a small model's metric points, and MLflow's
        store spent 5 of a 22-second micro-142k run at 256-token batches writing them)."""
        return {"update/max_abs": max(largest),
                **({f"update/max_abs/{name}": largest[i] for name, i in self.matrices} if each else {})}


@torch.no_grad()
def _clip_and_compare(params, prev, update, max_norm):
    grads = [p.grad for p in params]
    flat = _flat(grads)
    out = _statistics(_dots(flat, prev, update))
    torch._foreach_mul_(grads, (max_norm / (out[0] + 1e-6)).clamp(max=1.0))  # as clip_grad_norm_
    return out, flat, _flat(params)


@torch.no_grad()
def _clip_and_compare_shards(params, prev, update, max_norm):
    """_clip_and_compare over this rank's shards: the sums of squares and the dot products are all-reduced."""
    import torch.distributed as dist

    grads = [p.grad.to_local() for p in params]
    flat = _flat(grads)
    prev = torch.zeros_like(flat) if prev is None or prev.shape != flat.shape else prev
    update = torch.zeros_like(flat) if update is None or update.shape != flat.shape else update
    sums = _dots(flat, prev, update)
    dist.all_reduce(sums)
    out = _statistics(sums)
    torch._foreach_mul_(grads, (max_norm / (out[0] + 1e-6)).clamp(max=1.0))
    return out, flat, _flat([p.to_local() for p in params])


def _dots(flat, prev, update):
    """The sums g·g, g·g_prev, g_prev·g_prev, g·v, g_prev·v, v·v that _statistics needs (of this rank's shard)."""
    return torch.stack([flat.dot(flat), flat.dot(prev), prev.dot(prev), flat.dot(update), prev.dot(update),
                        update.dot(update)])


def _statistics(sums):
    """[‖g‖, cos(g, g_prev), D1, D2] from the sums g·g, g·g_prev, g_prev·g_prev, g·v, g_prev·v, v·v.
    Scale-free in g's clipping: every quantity uses the unclipped gradients."""
    gg, gp, pp, gv, pv, vv = sums
    norm, v_norm = gg.sqrt(), vv.sqrt().clamp_min(1e-30)
    cos = gp / (norm * pp.sqrt()).clamp_min(1e-16)
    return torch.stack([norm, cos, gv / v_norm, (gv - pv) / (v_norm * v_norm)])


@torch.no_grad()
def _changes(params, before):
    """(max |Δw| of each tensor, the flat update Δw)."""
    update = _flat(params) - before
    parts = update.split([p.numel() for p in params])
    return torch.stack([part.abs().max() if part.numel() else part.new_zeros(()) for part in parts]), update


def _flat(tensors: list[torch.Tensor]) -> torch.Tensor:
    return torch.cat([t.detach().flatten().float() for t in tensors])


# ---------------------------------------------------------------- evaluation


def repeated_pairs(windows: torch.Tensor) -> torch.Tensor:
    """[rows, seq_len] bool: whether each target's (previous token, token) pair already occurred earlier in its
    window — the positions in-context copying (an induction head) can predict. A stable sort of the pairs' codes
    marks every occurrence after the first: O(T log T) a window, once per evaluation set."""
    prev, token = windows[:, :-1], windows[:, 1:]
    codes = prev * (int(windows.max()) + 1) + token
    ordered, order = codes.sort(dim=1, stable=True)
    later = torch.zeros_like(ordered, dtype=torch.bool)
    later[:, 1:] = ordered[:, 1:] == ordered[:, :-1]
    return torch.zeros_like(later).scatter_(1, order, later)


@torch.no_grad()
def evaluate(model, windows: dict[str, torch.Tensor], repeated: dict[str, torch.Tensor],
             bytes_per_token: dict[str, float], *, rows: int, autocast) -> dict[str, float]:
    """Mean loss per token (nats) and per byte (bits) on every held-out set, and the copy gap: the loss on positions
    whose (previous token, token) pair did not occur earlier in the window minus the loss on those where it did
    (`repeated`, from repeated_pairs). It doubles when a model learns in-context copying (issue 22), so a run's
    jump in it marks that transition. From the same forward pass: one masked sum more per chunk."""
    model.eval()
    metrics = {}
    for name, w in windows.items():
        sums = torch.zeros(2, device=w.device, dtype=torch.float64)   # all positions, repeated positions
        for chunk, mask in zip(w.split(rows), repeated[name].split(rows)):
            with autocast():
                logits = model(chunk[:, :-1])
            losses = F.cross_entropy(logits.flatten(0, 1), chunk[:, 1:].flatten(), reduction="none")
            sums += torch.stack([losses.sum(), (losses * mask.flatten()).sum()]).double()
        total, on_repeated = sums.tolist()
        count, n_repeated = repeated[name].numel(), int(repeated[name].sum())
        loss = total / count
        metrics[f"eval/{name}/loss"] = loss
        metrics[f"eval/{name}/bpb"] = loss / math.log(2) / bytes_per_token[name]  # bits per UTF-8 byte
        if 0 < n_repeated < count:
            copied, other = on_repeated / n_repeated, (total - on_repeated) / (count - n_repeated)
            metrics.update({f"eval/{name}/loss_repeated": copied, f"eval/{name}/loss_other": other,
                            f"eval/{name}/copy_gap": other - copied})
    model.train()
    return metrics


# ---------------------------------------------------------------- the loop


def train(spec: TrainSpec, run_dir: Path, *, init_from: Path | None = None, log: Log | None = None,
          flush: Callable[[], None] | None = None, progress: bool = False,
          stop: Callable[[], bool] | None = None) -> TrainResult:
    """Train `spec` in `run_dir`, resuming from its newest checkpoint; a finished run returns its result.

    `init_from`: a checkpoint of another run to start from when this run has none of its own (a decay
    branch forks from its stable run's checkpoint: model, optimizer, step, data position, RNG).
    `stop`: asked after each evaluation's log (rank 0's answer holds for every rank, so all must pass one); True
    saves a checkpoint at that step and returns status "stopped", which the same call resumes.
    """
    run_dir = Path(run_dir)
    status = read_status(run_dir)
    if status and status["status"] in ("finished", "diverged"):
        return TrainResult(**status["result"])
    lead = _world()[0] == 0  # the one process that writes the run's files
    if lead:
        run_dir.mkdir(parents=True, exist_ok=True)
        _write_json(run_dir / "spec.json", dataclasses.asdict(spec))
        _write_json(run_dir / "status.json", {"status": "running"})
    try:
        result = _train(spec, run_dir, init_from, log or (lambda metrics, step: None), flush or (lambda: None),
                        progress and lead, stop)
    except BaseException as err:
        stopped = isinstance(err, (KeyboardInterrupt, SystemExit))  # SystemExit: asked to stop (Tune, ASHA)
        state = "interrupted" if stopped else "failed"
        if lead:
            _write_json(run_dir / "status.json", {"status": state, "error": f"{type(err).__name__}: {err}"})
        raise
    if lead:
        _write_json(run_dir / "status.json", {"status": result.status, "result": dataclasses.asdict(result)})
    return result


def _train(spec: TrainSpec, run_dir: Path, init_from: Path | None, log: Log, flush: Callable[[], None],
           progress: bool, stop: Callable[[], bool] | None) -> TrainResult:
    from contextlib import nullcontext

    import torch.distributed as dist
    from torch.nn.parallel import DistributedDataParallel
    from tqdm.auto import tqdm

    # 1) runtime, sizes, schedule
    started = time.perf_counter()
    device, dtype = _resolve_runtime(spec)
    rank, workers = _world()
    lead = rank == 0
    rows = _check_batch(spec, workers)
    total, steps = total_tokens(spec), total_steps(spec)
    lr_of, decay_step, decay_from = stepping(spec.schedule, lr=spec.lr, total=total, batch_tokens=spec.batch_tokens,
                                             stages=spec.batch_warmup)
    keep = set(spec.checkpoint_steps) | {steps} | ({decay_step} if decay_step else set())
    autocast = lambda: torch.autocast(device, dtype=torch.bfloat16, enabled=dtype == "bf16")  # noqa: E731

    # 2) data, model, optimizer
    corpus = prepare(spec.data, vocab_size=spec.model.vocab_size, progress=progress)
    mixture = [mixture_tokens(name, spec.data, corpus, progress=progress) for name, _ in spec.decay_data]
    weights = [w for _, w in spec.decay_data]

    def windows(start: int, count: int, tokens: int) -> torch.Tensor:
        """Training windows start.. of the run's data, or of the decay mixture once the decay has begun."""
        if mixture and tokens >= decay_from:
            w = mixture_windows(mixture, weights, start=start, count=count, seq_len=spec.seq_len, seed=spec.seed)
        else:
            w = sample_windows(corpus.train, start=start, count=count, seq_len=spec.seq_len, seed=spec.seed)
        return torch.from_numpy(w).to(device)
    evals = {k: torch.from_numpy(eval_windows(v, seq_len=spec.seq_len, max_tokens=spec.data.eval_tokens)).to(device)
             for k, v in corpus.evals.items()}
    repeated = {k: repeated_pairs(w) for k, w in evals.items()}
    torch.manual_seed(spec.seed)
    model = MiniCPM(spec.model).to(device)
    model.checkpoint_blocks = spec.activation_checkpointing
    sharded = workers > 1 and spec.parallel == "fsdp"
    compiled = _use_compile(spec, device, total)
    if sharded:  # every block's parameters gathered for its forward and backward, then freed
        from torch.distributed.fsdp import fully_shard, register_fsdp_forward_method

        for block in model.blocks:
            if compiled:
                block.compile()
            fully_shard(block)
        fully_shard(model)
        register_fsdp_forward_method(model, "loss")  # the training entry point is loss(), not forward()
    groups = param_groups(model, weight_decay=spec.weight_decay)
    if spec.independent_wd:  # decay ∝ schedule(step)/lr, not ∝ lr: lr·wd_eff = wd·schedule/lr_max
        for g in groups:
            g["weight_decay"] /= spec.lr * g["lr_scale"]
    opt = torch.optim.AdamW(groups, lr=spec.lr, betas=(spec.beta1, spec.beta2), eps=spec.eps,
                            fused=True)  # one kernel for all tensors: 1.0 → 0.3 ms a step on micro-142k
    named = list(model.named_parameters())
    flops = flops_per_token(spec.model, seq_len=spec.seq_len)
    peak = spec.peak_flops or peak_flops(device, dtype)

    # 3) resume
    step, tokens, ema, best, prev_grad, prev_update = 0, 0, None, math.inf, None, None
    found = _checkpoints(run_dir) or ([Path(init_from)] if init_from is not None else [])
    layout = {"workers": workers, "parallel": spec.parallel if workers > 1 else "ddp"}
    ckpt = _load(found[-1], model, opt, layout=layout) if found else None
    if ckpt is not None:
        step, ema, best = ckpt["step"], ckpt["loss_ema"], ckpt["loss_min"]
        tokens = ckpt.get("tokens", step * spec.batch_tokens)
        torch.set_rng_state(ckpt["rng_cpu"])
        prev_grad, prev_update = (ckpt.get(k).to(device) if ckpt.get(k) is not None else None
                                  for k in ("prev_grad", "prev_update"))
    position = ckpt["data_position"] if ckpt else 0  # windows consumed: the whole data position
    compiled = compiled and _use_compile(spec, device, total - tokens)
    if sharded:  # gradients reduce-scattered after the last micro-batch's backward
        loss_fn = model.loss  # the instance's method, which register_fsdp_forward_method wrapped
        no_sync = functools.partial(_fsdp_no_sync, model)
    elif workers > 1:  # gradients averaged over the workers in buckets, overlapped with the backward pass
        ddp = DistributedDataParallel(_Loss(model), gradient_as_bucket_view=True)
        loss_fn = _compiled(ddp, device) if compiled else ddp
        no_sync = ddp.no_sync
    else:
        loss_fn = functools.partial(_compiled(MiniCPM.loss, device) if compiled else MiniCPM.loss, model)  # one graph
        no_sync = nullcontext
    stats = GradStats(named, compiled=compiled and not sharded, sharded=sharded)
    stats.prev_grad, stats.prev_update = prev_grad, prev_update

    # 4) loop
    bar = tqdm(total=total, initial=min(tokens, total), unit="tok", unit_scale=True,
               disable=not progress, dynamic_ncols=True, desc=spec.model.name,
               mininterval=0.5 if sys.stderr.isatty() else 30)  # a log file gets a line per 30 s
    status, metrics, train_time, trained = "finished", {}, 0.0, 0
    while step < steps:
        t0 = time.perf_counter()
        lr = lr_of(step, tokens)
        for g in opt.param_groups:
            g["lr"] = lr * g["lr_scale"]
        batch_tokens = batch_at(spec, tokens)
        accum = batch_tokens // (rows * spec.seq_len * workers)
        loss_sum = torch.zeros((), device=device)
        for k in range(accum):
            batch = windows(position + (k * workers + rank) * rows, rows, tokens)
            with no_sync() if k < accum - 1 else nullcontext():  # DDP: reduce once, after the last micro-batch
                with autocast():
                    loss = loss_fn(batch)
                (loss / accum).backward()
            loss_sum += loss.detach()
        position += accum * workers * rows
        if workers > 1:  # the global batch's mean loss, so that every rank logs and decides alike
            dist.all_reduce(loss_sum)
            loss_sum /= workers
        grad = stats.before_step(spec.grad_clip or math.inf)
        opt.step()
        opt.zero_grad(set_to_none=True)
        loss_v, grad_norm_v, grad_cos_v, d1, d2, *largest = torch.cat(
            [(loss_sum / accum)[None], grad, stats.after_step()]).tolist()
        step, tokens = step + 1, tokens + batch_tokens
        dt = time.perf_counter() - t0
        train_time, trained = train_time + dt, trained + batch_tokens

        # 5) divergence: non-finite, or the smoothed loss far above its minimum (§ runaway LR)
        ema = loss_v if ema is None else 0.9 * ema + 0.1 * loss_v
        best = min(best, ema)
        tok_s = batch_tokens / dt
        if not math.isfinite(loss_v) or ema > spec.diverge_ratio * best:
            status = "diverged"
        evaluated = status == "diverged" or step % spec.eval_every == 0 or step == steps
        metrics = {"train/loss": loss_v, "lr": lr, "grad/norm": grad_norm_v, "grad/cos_prev": grad_cos_v,
                   "grad/D1": d1, "grad/D2": d2, "grad/curvature": abs(d2) / (1 + d1 * d1) ** 1.5,
                   **stats.named(largest, each=evaluated), "tokens": tokens, "perf/tokens_per_s": tok_s}
        if spec.batch_warmup:
            metrics["batch_tokens"] = batch_tokens
        if mixture:  # 1 once the step trained on the decay mixture
            metrics["data/decay_mixture"] = float(tokens - batch_tokens >= decay_from)
        if peak:
            metrics["perf/mfu"] = tok_s * flops / (peak * workers)
        if (lead or sharded) and evaluated:
            metrics.update(evaluate(model, evals, repeated, corpus.bytes_per_token, rows=rows, autocast=autocast)
                           if status != "diverged" else {})  # sharded: every rank joins the gathers
            metrics["data/epochs"] = position * spec.seq_len / len(corpus.train)
        if lead:
            log({k: v for k, v in metrics.items() if math.isfinite(v)}, step)
        bar.update(batch_tokens)
        if step % 10 == 0 or step == steps:
            bar.set_postfix(loss=f"{ema:.3f}", tok_s=f"{trained / train_time:,.0f}")
        if status == "diverged":
            break
        stopping = stop is not None and evaluated and step < steps and _agree(stop() if lead else False, workers,
                                                                              device)

        # 6) checkpoint: metrics first (flush), then the state they lead up to
        if step % spec.checkpoint_every == 0 or step in keep or stopping:
            state = {"step": step, "tokens": tokens, "data_position": position, "loss_ema": ema, "loss_min": best,
                     "rng_cpu": torch.get_rng_state(), **layout}
            mine = {k: v.cpu() if v is not None else None
                    for k, v in (("prev_grad", stats.prev_grad), ("prev_update", stats.prev_update))}
            if lead:
                flush()
            _save(run_dir, step, model, opt, state, mine, keep=keep, latest=spec.keep_checkpoints,
                  distributed=workers > 1)
            if lead:
                _write_json(run_dir / "status.json", {"status": "running", "step": step, "tokens": tokens})
        if stopping:
            status = "stopped"
            break
    bar.close()
    if (lead or sharded) and status == "finished" and not any(k.startswith("eval/") for k in metrics):  # at the end
        metrics = evaluate(model, evals, repeated, corpus.bytes_per_token, rows=rows, autocast=autocast)
    flush()
    tok_s = trained / train_time if train_time else 0.0
    return TrainResult(
        status=status, step=step, tokens=tokens, train_loss=ema if ema is not None else math.nan,
        eval=_eval_table(metrics), tokens_per_s=tok_s, mfu=tok_s * flops / (peak * workers) if peak and tok_s else None,
        wall_s=time.perf_counter() - started, epochs=position * spec.seq_len / len(corpus.train),
    )


def _agree(flag: bool, workers: int, device: str) -> bool:
    """Rank 0's `flag`, on every rank."""
    if workers == 1:
        return flag
    import torch.distributed as dist

    value = torch.tensor([float(flag)], device=device)
    dist.broadcast(value, 0)
    return bool(value.item())


def _eval_table(metrics: dict) -> dict[str, dict[str, float]]:
    table: dict[str, dict[str, float]] = {}
    for key, value in metrics.items():
        if key.startswith("eval/"):
            _, name, kind = key.split("/")
            table.setdefault(name, {})[kind] = value
    return table
