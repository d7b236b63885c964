"""Training throughput: windtunnel's trainer against a plain PyTorch loop of the same shape, side by side.

Run from the repository root:  python bench/train_throughput.py [--quick] [--out bench/results]

For each shape (every rung of the micro ladder, the validate target micro-1.3m, the paper's 9M) it times, interleaved A, B, C, A, B, C... in one
process so that a noisy neighbour hits every variant alike:
  plain     — a nanoGPT-style Llama of the same shape and parameter count (separate q/k/v/o and
              gate/up/down linears, nn.RMSNorm, RoPE, tied embedding), torch.optim.AdamW defaults, fp32,
              loss.backward / opt.step / zero_grad and nothing else;
  wt        — windtunnel.train.train (eager) in a fresh run directory, evaluating only after the last
              step (untimed: TrainResult.tokens_per_s and the per-step log exclude evaluation);
  wt+comp   — the same with compile=true (CPU inductor);
  floor     — the step's kernels alone: the three GEMMs of every linear layer (forward, input and weight
              gradients; the tied LM head too) and causal SDPA forward and backward per layer, at the shape's
              sizes, with nothing between them. No trainer of this model in fp32 on these kernels is faster:
              floor / plain is the most a trainer can gain over the plain loop, and wt+comp / floor how much
              of it windtunnel's compiled step reaches.
Both see the same token windows (windtunnel.data.sample_windows over the prepared train array).
Steady tokens/s leaves out the first warm-up steps; windtunnel's own TrainResult.tokens_per_s (which
counts the compile step) and the compile seconds are reported beside it. Achieved FLOP/s =
tokens/s × flops_per_token, as a fraction of a measured 2048³ fp32 matmul. Each rep first waits (at
most 5 min) for other processes to leave the CPU; the CPU share they took during each measurement and
the minor page faults per step (glibc hands freed 16–512 MB buffers back to the OS, and eager steps
re-fault them) are recorded beside the figures. Writes <out>/train_throughput.json and .md
(default bench/results/).
"""

from __future__ import annotations

import argparse
import datetime
import json
import os
import platform
import resource
import shutil
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without `pip install -e .`

import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
from torch import nn  # noqa: E402

from windtunnel.config import TrainSpec, apply_overrides, get_model  # noqa: E402
from windtunnel.data import prepare, sample_windows  # noqa: E402
from windtunnel.counts import flops_per_token, n_params  # noqa: E402
from windtunnel.train import train  # noqa: E402

from peak import matmul_peak  # noqa: E402  (bench/, the script's folder)

SEQ_LEN = 128
# shape → (tokens per optimizer step, seconds per measurement in full mode, reps in full mode); the 9M
# model (vocab 32768) trains at ~1.5K tokens/s on 2 cores (~3 s a step), so it gets a few steps and two reps
SHAPES = {"micro-24k": (4096, 15.0, 3), "micro-53k": (4096, 15.0, 3), "micro-142k": (4096, 15.0, 3),
          "micro-221k": (4096, 15.0, 3), "micro-425k": (4096, 15.0, 3), "micro-1.3m": (4096, 20.0, 3),
          "9M": (4096, 25.0, 2)}
VARIANTS = ("plain", "wt", "wt+comp", "floor")


# ---------------------------------------------------------------- the plain baseline


class PlainBlock(nn.Module):
    def __init__(self, d: int, n_heads: int, d_ff: int, n_kv_heads: int | None = None):
        super().__init__()
        self.n_heads, n_kv = n_heads, n_kv_heads or n_heads
        self.attn_norm, self.mlp_norm = nn.RMSNorm(d, eps=1e-5), nn.RMSNorm(d, eps=1e-5)
        self.q, self.o = nn.Linear(d, d, bias=False), nn.Linear(d, d, bias=False)
        self.k, self.v = (nn.Linear(d, d // n_heads * n_kv, bias=False) for _ in range(2))  # grouped-query
        self.gate, self.up = nn.Linear(d, d_ff, bias=False), nn.Linear(d, d_ff, bias=False)
        self.down = nn.Linear(d_ff, d, bias=False)

    def forward(self, x, cos, sin):
        b, t, d = x.shape
        h = self.attn_norm(x)
        d_head = d // self.n_heads
        q, k, v = (w(h).view(b, t, -1, d_head).transpose(1, 2) for w in (self.q, self.k, self.v))
        q, k = rotate(q, cos, sin), rotate(k, cos, sin)
        y = F.scaled_dot_product_attention(q, k, v, is_causal=True, enable_gqa=k.shape[1] != q.shape[1])
        x = x + self.o(y.transpose(1, 2).reshape(b, t, d))
        h = self.mlp_norm(x)
        return x + self.down(F.silu(self.gate(h)) * self.up(h))


def rotate(x, cos, sin):
    """Llama's RoPE (rotate_half form) on [batch, heads, seq, d_head]."""
    x1, x2 = x.chunk(2, dim=-1)
    return x * cos + torch.cat((-x2, x1), dim=-1) * sin


class PlainLlama(nn.Module):
    """What a researcher writes in an afternoon: no µP multipliers, std-0.02 init, tied LM head."""

    def __init__(self, vocab: int, d: int, n_layers: int, n_heads: int, d_ff: int, seq_len: int,
                 n_kv_heads: int | None = None):
        super().__init__()
        self.embed = nn.Embedding(vocab, d)
        self.blocks = nn.ModuleList(PlainBlock(d, n_heads, d_ff, n_kv_heads) for _ in range(n_layers))
        self.norm = nn.RMSNorm(d, eps=1e-5)
        inv_freq = 1.0 / 10000 ** (torch.arange(0, d // n_heads, 2).float() / (d // n_heads))
        angles = torch.outer(torch.arange(seq_len).float(), inv_freq).repeat(1, 2)  # [T, d_head]
        self.register_buffer("cos", angles.cos(), persistent=False)
        self.register_buffer("sin", angles.sin(), persistent=False)
        for p in self.parameters():
            if p.dim() == 2:
                nn.init.normal_(p, std=0.02)

    def forward(self, idx):
        t = idx.shape[1]
        x = self.embed(idx)
        for block in self.blocks:
            x = block(x, self.cos[:t], self.sin[:t])
        return self.norm(x) @ self.embed.weight.T


def plain_run(spec, train_tokens, *, steps: int, batch_tokens: int) -> dict:
    """Seconds and cumulative minor page faults at the end of each step of the plain loop."""
    torch.manual_seed(0)
    m = spec.model
    model = PlainLlama(m.vocab_size, m.d_model, m.n_layers, m.n_heads, m.d_ff, spec.seq_len)
    non_embedding = sum(p.numel() for p in model.parameters()) - model.embed.weight.numel()
    assert non_embedding == n_params(m), (non_embedding, n_params(m))  # same shape, same N
    opt = torch.optim.AdamW(model.parameters())
    rows, step_s, faults = batch_tokens // spec.seq_len, [], []
    for step in range(steps):
        t0 = time.perf_counter()
        batch = torch.from_numpy(sample_windows(train_tokens, start=step * rows, count=rows,
                                                seq_len=spec.seq_len, seed=0))
        logits = model(batch[:, :-1])
        loss = F.cross_entropy(logits.flatten(0, 1), batch[:, 1:].flatten())
        loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        step_s.append(time.perf_counter() - t0)
        faults.append(_minor_faults())
    return {"step_s": step_s, "faults": faults, "final_loss": loss.item()}


def floor_run(spec, *, steps: int, batch_tokens: int) -> dict:
    """Seconds per step of the shape's GEMMs and attention kernels alone (see the module docstring)."""
    m = spec.model
    rows, t = batch_tokens // spec.seq_len, spec.seq_len
    d_qkv = (m.n_heads + 2 * m.n_kv_heads) * m.d_head
    linears = [(m.d_model, d_qkv), (m.n_heads * m.d_head, m.d_model), (m.d_model, 2 * m.d_ff), (m.d_ff, m.d_model)]
    tensors = [(torch.randn(batch_tokens, k), torch.randn(k, n), torch.randn(batch_tokens, n))
               for k, n in linears * m.n_layers + [(m.d_model, m.vocab_size)]]
    q, k, v = (torch.randn(rows, m.n_heads, t, m.d_head, requires_grad=True) for _ in range(3))
    grad = torch.randn(rows, m.n_heads, t, m.d_head)
    step_s = []
    for _ in range(steps):
        t0 = time.perf_counter()
        for x, w, g in tensors:
            x @ w, g @ w.T, x.T @ g
        for _ in range(m.n_layers):
            F.scaled_dot_product_attention(q, k, v, is_causal=True).backward(grad)
        step_s.append(time.perf_counter() - t0)
    return {"step_s": step_s, "faults": [_minor_faults()] * steps, "final_loss": float("nan")}


# ---------------------------------------------------------------- windtunnel's trainer


def wt_run(spec: TrainSpec, *, steps: int, compile: bool) -> dict:
    """windtunnel.train.train in a fresh run directory; per-step seconds (and page faults) come from its log."""
    if compile:
        torch._dynamo.reset()  # a fresh compile each time (else new module instances pile up recompiles)
    run_spec = apply_overrides(spec, [f"tokens={steps * spec.batch_tokens}", f"compile={str(compile).lower()}"])
    step_s, faults = [], []

    def log(metrics, step):
        step_s.append(spec.batch_tokens / metrics["perf/tokens_per_s"])
        faults.append(_minor_faults())

    with tempfile.TemporaryDirectory(prefix="wt-bench-") as run_dir:
        t0 = time.perf_counter()
        result = train(run_spec, Path(run_dir), log=log)
        call_s = time.perf_counter() - t0
    if result.status != "finished" or len(step_s) != steps:
        raise RuntimeError(f"{spec.model.name}: the benchmark run ended {result.status} after {len(step_s)} steps")
    return {"step_s": step_s, "faults": faults, "reported_tok_s": result.tokens_per_s, "call_s": call_s,
            "final_loss": result.train_loss}


# ---------------------------------------------------------------- measuring


def _minor_faults() -> int:
    """Minor page faults of this process so far: eager CPU training re-faults freed 16-512 MB buffers."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_minflt


class OtherLoad:
    """Share of the machine's CPU time (0..1) that processes outside this one and its children (inductor's
    compile workers) used while the block ran; 0 where /proc is missing."""

    def __enter__(self):
        self.start = _cpu_jiffies(), _tree_jiffies(), _reaped_s()
        return self

    def __exit__(self, *exc):
        (busy0, total0), tree0, reaped0 = self.start
        (busy1, total1), tree1, reaped1 = _cpu_jiffies(), _tree_jiffies(), _reaped_s()
        own = sum(t - tree0.get(pid, 0) for pid, t in tree1.items())
        own += (reaped1 - reaped0) * os.sysconf("SC_CLK_TCK")  # finished children: the C++ compiler
        self.share = max(0.0, (busy1 - busy0 - own) / max(1, total1 - total0))


def _cpu_jiffies() -> tuple[int, int]:
    """(busy, total) jiffies of all CPUs from /proc/stat."""
    try:
        ticks = [int(x) for x in Path("/proc/stat").read_text().split("\n", 1)[0].split()[1:]]
    except OSError:
        return 0, 0
    return sum(ticks) - ticks[3] - ticks[4], sum(ticks)  # idle and iowait are not busy


def _reaped_s() -> float:
    times = os.times()
    return times.children_user + times.children_system


def _tree_jiffies() -> dict[int, int]:
    """utime + stime of this process and its descendants, by pid."""
    stats = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        stats[int(stat.parent.name)] = (int(fields[1]), int(fields[11]) + int(fields[12]))  # ppid, utime+stime
    tree, todo = {}, [os.getpid()]
    while todo:
        pid = todo.pop()
        tree[pid] = stats.get(pid, (0, 0))[1]
        todo += [child for child, (ppid, _) in stats.items() if ppid == pid]
    return tree


def wait_for_quiet(*, limit: float = 0.1, max_s: float = 300.0) -> float:
    """Wait (at most max_s) until other processes use under `limit` of the CPU over 2 s; returns seconds waited.
    Two threads on 2 cores collapse 10× or more when a neighbour takes a core, so measure when it is quiet."""
    start = time.perf_counter()
    while time.perf_counter() - start < max_s:
        with OtherLoad() as load:
            time.sleep(2.0)
        if load.share < limit:
            break
    return time.perf_counter() - start - 2.0


def machine() -> dict:
    cpu = next((line.split(":", 1)[1].strip() for line in Path("/proc/cpuinfo").read_text().splitlines()
                if line.startswith("model name")), platform.processor()) if Path("/proc/cpuinfo").exists() else ""
    return {"nproc": os.cpu_count(), "affinity": len(os.sched_getaffinity(0)), "cpu": cpu,
            "torch": torch.__version__, "threads": torch.get_num_threads(), "python": platform.python_version(),
            "date": datetime.datetime.now().isoformat(timespec="seconds")}


def warm_steps(steps: int) -> int:
    """Steps left out of the steady figure: two (the compiled model compiles at step 1 and recompiles at
    step 2, when its RoPE cache appears) and ~10% in all."""
    return max(2, steps // 10)


def calibrate(spec, train_tokens, *, target_s: float, min_steps: int) -> int:
    """Steps that make one plain measurement last about target_s seconds."""
    step_s = plain_run(spec, train_tokens, steps=2, batch_tokens=spec.batch_tokens)["step_s"][-1]
    return max(min_steps, round(target_s / step_s))


def bench_shape(name: str, batch_tokens: int, *, reps: int, target_s: float, peak: float) -> dict:
    """Every variant `reps` times, interleaved, with steps sized so a plain measurement takes ~target_s."""
    base = [f"batch_tokens={batch_tokens}", f"seq_len={SEQ_LEN}", "eval_every=1000000000",
            "checkpoint_every=1000000000", "data.eval_tokens=1024", "peak_flops=1.0", "device=cpu"]
    spec = apply_overrides(TrainSpec(model=get_model(name)), base)
    corpus = prepare(spec.data, vocab_size=spec.model.vocab_size, progress=False)
    wait_for_quiet()
    steps = calibrate(spec, corpus.train, target_s=target_s, min_steps=3 if reps == 1 else 4)
    warm = warm_steps(steps)
    runs = {v: [] for v in VARIANTS}
    for rep in range(reps):  # interleaved: each rep runs every variant once, back to back
        waited = wait_for_quiet()
        if waited > 1:
            print(f"  waited {waited:.0f} s for other processes to quiet down", flush=True)
        for variant in VARIANTS:
            with OtherLoad() as load:
                if variant == "plain":
                    r = plain_run(spec, corpus.train, steps=steps, batch_tokens=batch_tokens)
                elif variant == "floor":
                    r = floor_run(spec, steps=steps, batch_tokens=batch_tokens)
                else:
                    r = wt_run(spec, steps=steps, compile=variant == "wt+comp")
            r["others_cpu"] = load.share
            steady = r["step_s"][warm:]
            r["steady_tok_s"] = len(steady) * batch_tokens / sum(steady)
            r["warmup_extra_s"] = sum(r["step_s"][:warm]) - warm * statistics.median(steady)  # compile time
            r["faults_per_step"] = (r["faults"][-1] - r["faults"][warm - 1]) / len(steady)
            runs[variant].append(r)
            print(f"  {name} rep {rep + 1}/{reps} {variant:8s} {r['steady_tok_s']:10,.0f} tok/s steady, warm-up "
                  f"+{r['warmup_extra_s']:.1f} s, {r['faults_per_step']:,.0f} page faults/step, other processes "
                  f"{100 * r['others_cpu']:.0f}% CPU", flush=True)
    return summarize(spec, steps, warm, runs, peak)


def summarize(spec, steps, warm, runs, peak) -> dict:
    flops = flops_per_token(spec.model, seq_len=spec.seq_len)
    out = {"shape": spec.model.name, "n_params": n_params(spec.model), "vocab": spec.model.vocab_size,
           "flops_per_token": flops, "batch_tokens": spec.batch_tokens, "seq_len": spec.seq_len,
           "steps": steps, "warm_steps": warm, "reps": len(runs["plain"]), "variants": {}}
    for variant, rs in runs.items():
        tok_s = statistics.median(r["steady_tok_s"] for r in rs)
        ratios = [r["steady_tok_s"] / p["steady_tok_s"] for r, p in zip(rs, runs["plain"])]
        v = {"steady_tok_s": tok_s, "steady_tok_s_each": [r["steady_tok_s"] for r in rs],
             "ratio_vs_plain": statistics.median(ratios), "ratio_each": ratios,
             "gflop_s": tok_s * flops / 1e9, "frac_of_matmul_peak": tok_s * flops / peak,
             "warmup_extra_s_each": [r["warmup_extra_s"] for r in rs],
             "faults_per_step_each": [r["faults_per_step"] for r in rs],
             "others_cpu_each": [r["others_cpu"] for r in rs], "final_loss_each": [r["final_loss"] for r in rs]}
        if variant.startswith("wt"):  # windtunnel's own figures: TrainResult.tokens_per_s counts step 1 too
            v["reported_tok_s_each"] = [r["reported_tok_s"] for r in rs]
            v["train_call_s_each"] = [r["call_s"] for r in rs]
            v["end_to_end_tok_s_each"] = [steps * spec.batch_tokens / r["call_s"] for r in rs]
        out["variants"][variant] = v
    return out


# ---------------------------------------------------------------- reporting


def table(results: list[dict]) -> str:
    """The figures, then the conditions they were taken under (compile, page faults, other load)."""
    head = ("| shape | N | steps × reps | plain tok/s | wt tok/s | wt+comp tok/s | wt / plain | wt+comp / plain "
            "| floor / plain | wt+comp / floor | GFLOP/s plain · wt · comp · floor "
            "| % of matmul peak plain · wt · comp · floor |")
    cond = ("| shape | compile s (cold, warm) | wt+comp TrainResult tok/s | page faults/step plain · wt · comp "
            "| other processes, max % CPU |")
    rows, conds = [head, "|---" * head.count("| ") + "|"], [cond, "|---" * cond.count("| ") + "|"]
    for r in results:
        v = r["variants"]
        each = lambda get, fmt: " · ".join(format(get(v[k]), fmt) for k in VARIANTS)  # noqa: E731
        comp = v["wt+comp"]
        later = comp["warmup_extra_s_each"][1:]
        warm_compile = f"{statistics.median(later):.1f}" if later else "n/a"
        rows.append(
            f"| {r['shape']} | {r['n_params']:,} | {r['steps']} × {r['reps']} | {v['plain']['steady_tok_s']:,.0f} "
            f"| {v['wt']['steady_tok_s']:,.0f} | {comp['steady_tok_s']:,.0f} | {v['wt']['ratio_vs_plain']:.2f}× "
            f"| {comp['ratio_vs_plain']:.2f}× | {v['floor']['ratio_vs_plain']:.2f}× "
            f"| {comp['steady_tok_s'] / v['floor']['steady_tok_s']:.2f} | {each(lambda x: x['gflop_s'], '.1f')} "
            f"| {each(lambda x: 100 * x['frac_of_matmul_peak'], '.1f')} |")
        conds.append(
            f"| {r['shape']} | {comp['warmup_extra_s_each'][0]:.1f}, {warm_compile} "
            f"| {statistics.median(comp['reported_tok_s_each']):,.0f} "
            f"| {' · '.join(format(statistics.median(v[k]['faults_per_step_each']), ',.0f') for k in VARIANTS[:3])} "
            f"| {100 * max(max(x['others_cpu_each']) for x in v.values()):.0f} |")
    return "\n".join(rows) + "\n\n" + "\n".join(conds)


def write(out: Path, report: dict, text: str) -> None:
    out.mkdir(parents=True, exist_ok=True)
    (out / "train_throughput.json").write_text(json.dumps(report, indent=1) + "\n")
    m = report["machine"]
    md = (f"# Training throughput ({m['date']})\n\n"
          f"Machine: {m['cpu']}, nproc {m['nproc']} (affinity {m['affinity']}), torch {m['torch']} "
          f"({m['threads']} threads), Python {m['python']}. fp32 2048³ matmul peak: "
          f"{report['matmul_peak_flops'] / 1e9:.0f} GFLOP/s. Mode: {report['mode']}, "
          f"T={SEQ_LEN}, 4096-token batches, fp32. tok/s: medians over interleaved reps of steady-state "
          f"steps (warm-up steps left out); ratios: medians of per-rep ratios. Compile s: the compiled run's "
          f"warm-up steps minus steady ones (cold = first rep, fresh inductor cache; warm = later reps in "
          f"the same process after torch._dynamo.reset(), in-memory and FX graph caches; a fresh process with "
          f"a warm disk cache takes ~2 s on micro-24k). TrainResult tok/s: windtunnel's own figure, which "
          f"counts the compile steps.\n\n"
          f"{text}\n")
    (out / "train_throughput.md").write_text(md)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--quick", action="store_true", help="one rep of ~4 s per measurement")
    parser.add_argument("--out", type=Path, default=Path("bench/results"), help="folder for the JSON and markdown")
    parser.add_argument("--shapes", nargs="+", default=list(SHAPES), help="subset of: " + " ".join(SHAPES))
    args = parser.parse_args(argv)
    # a fresh inductor cache: the first compile is cold, the later ones show what the FX graph cache saves
    fresh_cache = None if "TORCHINDUCTOR_CACHE_DIR" in os.environ else tempfile.mkdtemp(prefix="wt-bench-inductor-")
    if fresh_cache:
        os.environ["TORCHINDUCTOR_CACHE_DIR"] = fresh_cache
    info = machine()
    peak = matmul_peak()
    print(f"{info['cpu']}, {info['nproc']} cores, torch {info['torch']}: fp32 matmul peak {peak / 1e9:.0f} GFLOP/s",
          flush=True)
    results = []
    for shape in args.shapes:
        batch_tokens, target_s, reps = SHAPES[shape]
        reps, target_s = (1, target_s / 4) if args.quick else (reps, target_s)
        results.append(bench_shape(shape, batch_tokens, reps=reps, target_s=target_s, peak=peak))
    peak_after = matmul_peak()
    text = table(results)
    print(text)
    write(args.out, {"machine": info, "mode": "quick" if args.quick else "full",
                     "matmul_peak_flops": peak, "matmul_peak_flops_after": peak_after, "shapes": results}, text)
    print(f"wrote {args.out}/train_throughput.json and .md", flush=True)
    if fresh_cache:
        shutil.rmtree(fresh_cache, ignore_errors=True)


if __name__ == "__main__":
    main()
