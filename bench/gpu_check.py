"""The GPU measurements windtunnel's plans and dry runs rely on, in one prepared run (issue 21, point 6).

    bash bench/gpu_check.sh            # on a machine with one NVIDIA GPU: < 8 minutes on an H100
    bash bench/gpu_check.sh --dry      # anywhere: the same steps on the CPU, tiny shapes (exercises all but CUDA)

For two shapes — minicpm-1.2b's width and vocabulary with 4 of its 52 layers at T = 4096, and the paper ladder's
0.1B in minicpm-1.2b's family at T = 1024 — it measures, in bf16 on the GPU:
  plain   — a plain PyTorch loop of the same shape (bench/train_throughput.py's PlainLlama: same N), bf16 autocast,
            torch.compile, AdamW: the throughput a researcher gets in an afternoon;
  wt      — windtunnel.train.train (compile=true, dtype bf16), as a sweep or launch runs it;
steady tokens/s (the first steps, compilation included, left out), MFU against the H100's bf16 datasheet peak
(counts.H100_FLOPS: the figure every GPU-hour estimate uses), and the trainer's peak allocated memory against
launch.memory_per_worker's estimate for its micro-batch (the dry run's number). Then a 30-step `windtunnel launch`
of the 0.1B shape on 1 Ray Train worker with 1 GPU. The data is a generated corpus of random words under a
tokenizer of the target's vocabulary (tests/conftest.py's stand-in): throughput does not depend on the text, and
the run needs no download. Writes <out>/gpu.json (default bench/results/; --dry: gpu_dry.json).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))  # runs from a checkout without `pip install -e .`

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402
import yaml  # noqa: E402

from train_throughput import PlainLlama, machine  # noqa: E402  (bench/, the script's folder)
from windtunnel.config import TrainSpec, apply_overrides, get_model  # noqa: E402
from windtunnel.counts import H100_FLOPS, flops_per_token, n_params  # noqa: E402

VOCAB = 73440  # minicpm-1.2b's
# shape → (ladder model, layers, seq_len, batch tokens, micro-batch tokens, steps); --dry shrinks them (DRY)
SHAPES = {"minicpm-1.2b x4 layers": ("minicpm-1.2b", 4, 4096, 65536, 16384, 24),
          "0.1B (minicpm-1.2b family)": ("0.1B", 16, 1024, 131072, 32768, 24)}
DRY = {"layers": 1, "seq_len": 64, "batch": 512, "micro": 256, "steps": 4, "vocab": 2048}
WARM = 4  # steps left out of the steady figure (compilation, allocator warm-up); --dry: 1
LAUNCH_STEPS = 30


def corpus(folder: Path, vocab: int, words: int, seed: int = 0) -> tuple[Path, Path]:
    """A tokenizer.json of `vocab` whitespace words and a .jsonl corpus of random documents over them."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    words_ = {"<unk>": 0, "</s>": 1, **{f"w{i}": i + 2 for i in range(vocab - 2)}}
    tokenizer = Tokenizer(models.WordLevel(words_, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(folder / "tokenizer.json"))
    rng = np.random.default_rng(seed)
    with open(folder / "corpus.jsonl", "w") as f:
        for doc in np.array_split(rng.integers(2, vocab, words), max(1, words // 2000)):
            f.write(json.dumps({"text": " ".join(f"w{i - 2}" for i in doc)}) + "\n")
    return folder / "corpus.jsonl", folder / "tokenizer.json"


def shape_spec(name: str, dry: bool, device: str, data: tuple[Path, Path]) -> tuple[TrainSpec, int]:
    model_name, layers, seq_len, batch, micro, steps = SHAPES[name]
    vocab = VOCAB
    if dry:
        layers, seq_len, batch, micro, steps, vocab = (DRY[k] for k in ("layers", "seq_len", "batch", "micro",
                                                                         "steps", "vocab"))
    model = dataclasses.replace(get_model(model_name), n_layers=layers, vocab_size=vocab, tokenizer=None)
    spec = apply_overrides(TrainSpec(model=model), {
        "tokens": steps * batch, "batch_tokens": batch, "micro_batch_tokens": micro, "seq_len": seq_len,
        "device": device, "dtype": "bf16" if device == "cuda" else "fp32", "compile": True,
        "eval_every": 10**9, "checkpoint_every": 10**9, "schedule": {"kind": "constant", "warmup_tokens": batch},
        "data": {"corpus": str(data[0]), "tokenizer": str(data[1]), "eval_tokens": 4 * seq_len}})
    return spec, steps


def _sync(device: str) -> None:
    if device == "cuda":
        torch.cuda.synchronize()


def plain(spec: TrainSpec, train_tokens: np.ndarray, steps: int) -> dict:
    """The plain loop: seconds of each step (after a device sync)."""
    from windtunnel.data import sample_windows

    device, m = spec.device, spec.model
    torch.manual_seed(0)
    model = PlainLlama(m.vocab_size, m.d_model, m.n_layers, m.n_heads, m.d_ff, spec.seq_len, m.n_kv_heads).to(device)
    non_embedding = sum(p.numel() for p in model.parameters()) - model.embed.weight.numel()
    assert non_embedding == n_params(m), (non_embedding, n_params(m))  # same shape, same N
    compiled = torch.compile(model)
    opt = torch.optim.AdamW(model.parameters(), fused=device == "cuda")
    rows, micro_rows = spec.batch_tokens // spec.seq_len, spec.micro_batch_tokens // spec.seq_len
    step_s = []
    for step in range(steps):
        _sync(device)
        t0 = time.perf_counter()
        batch = torch.from_numpy(sample_windows(train_tokens, start=step * rows, count=rows, seq_len=spec.seq_len,
                                                seed=0)).to(device)
        for part in batch.split(micro_rows):
            with torch.autocast(device, dtype=torch.bfloat16, enabled=device == "cuda"):
                logits = compiled(part[:, :-1])
            loss = F.cross_entropy(logits.float().flatten(0, 1), part[:, 1:].flatten()) / (rows // micro_rows)
            loss.backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        _sync(device)
        step_s.append(time.perf_counter() - t0)
    return {"step_s": step_s}


def trainer(spec: TrainSpec, steps: int) -> dict:
    """windtunnel.train.train: seconds of each step from its log, and its peak allocated memory."""
    from windtunnel.train import train

    step_s = []
    if spec.device == "cuda":
        torch.cuda.reset_peak_memory_stats()
    with tempfile.TemporaryDirectory(prefix="wt-gpu-") as run_dir:
        result = train(spec, Path(run_dir), log=lambda m, step: step_s.append(spec.batch_tokens / m["perf/tokens_per_s"]))
    if result.status != "finished" or len(step_s) != steps:
        raise RuntimeError(f"{spec.model.name}: the trainer ended {result.status} after {len(step_s)} steps")
    peak = torch.cuda.max_memory_allocated() if spec.device == "cuda" else None
    return {"step_s": step_s, "peak_memory_bytes": peak, "final_loss": result.train_loss}


def measure(name: str, spec: TrainSpec, steps: int, warm: int) -> dict:
    from windtunnel.data import prepare
    from windtunnel.launch import memory_per_worker

    train_tokens = prepare(spec.data, vocab_size=spec.model.vocab_size, progress=False).train
    flops = flops_per_token(spec.model, seq_len=spec.seq_len)
    peak = H100_FLOPS["bf16" if spec.device == "cuda" else "fp32"]
    out = {"shape": name, "model": spec.model.name, "n_layers": spec.model.n_layers, "N": n_params(spec.model),
           "vocab": spec.model.vocab_size, "seq_len": spec.seq_len, "batch_tokens": spec.batch_tokens,
           "micro_batch_tokens": spec.micro_batch_tokens, "steps": steps, "warm_steps": warm,
           "flops_per_token": flops, "peak_flops": peak, "variants": {}}
    for variant, run in (("plain", lambda: plain(spec, train_tokens, steps)), ("wt", lambda: trainer(spec, steps))):
        t0 = time.perf_counter()
        r = run()
        steady = r["step_s"][warm:]
        tok_s = len(steady) * spec.batch_tokens / sum(steady)
        r.update({"wall_s": time.perf_counter() - t0, "steady_tok_s": tok_s, "mfu": tok_s * flops / peak,
                  "median_step_s": statistics.median(steady)})
        out["variants"][variant] = r
        print(f"  {name:28s} {variant:6s} {tok_s:12,.0f} tok/s  MFU {100 * r['mfu']:5.1f}% of "
              f"{peak / 1e12:.0f} TFLOP/s  ({r['wall_s']:.0f} s with compilation)", flush=True)
    out["wt_vs_plain"] = out["variants"]["wt"]["steady_tok_s"] / out["variants"]["plain"]["steady_tok_s"]
    estimate = memory_per_worker(spec, strategy="ddp", workers=1, micro_tokens=spec.micro_batch_tokens,
                                 dtype="bf16" if spec.device == "cuda" else "fp32")
    measured = out["variants"]["wt"]["peak_memory_bytes"]
    out["memory"] = {"estimate_bytes": estimate["total"], "estimate": estimate, "measured_peak_bytes": measured,
                     "measured_over_estimate": measured / estimate["total"] if measured else None}
    if measured:
        print(f"  {name:28s} memory: peak {measured / 1e9:.2f} GB allocated against the dry run's "
              f"{estimate['total'] / 1e9:.2f} GB ({measured / estimate['total']:.2f}×)", flush=True)
    return out


def launch_check(spec: TrainSpec, folder: Path, *, gpus: int) -> dict:
    """A LAUNCH_STEPS-step `windtunnel launch` of `spec`'s shape on 1 Ray Train worker (`gpus` GPUs each)."""
    from windtunnel.launch import launch

    m = spec.model
    plan = {"target": m.name, "status": "complete", "gaps": [], "predicted_loss": None,
            "train": {"model": {"n_layers": m.n_layers, "vocab_size": m.vocab_size},
                      "tokens": LAUNCH_STEPS * spec.batch_tokens, "batch_tokens": spec.batch_tokens, "lr": 0.01,
                      "seq_len": spec.seq_len, "dtype": spec.dtype, "compile": True,
                      "schedule": {"kind": "constant", "warmup_tokens": spec.batch_tokens},
                      "data": {"corpus": spec.data.corpus, "tokenizer": spec.data.tokenizer,
                               "eval_tokens": spec.data.eval_tokens}}}
    path = folder / "launch_plan.yaml"
    path.write_text(yaml.safe_dump(plan))
    t0 = time.perf_counter()
    out = launch(path, workers=1, gpus_per_worker=gpus, no_prediction=True, experiment="gpu_check")
    result = out.get("result") or {}
    print(f"  launch: {out['status']} after {result.get('step')} steps, {result.get('tokens_per_s', 0):,.0f} tok/s, "
          f"{time.perf_counter() - t0:.0f} s with Ray start-up", flush=True)
    return {"status": out["status"], "steps": result.get("step"), "tokens_per_s": result.get("tokens_per_s"),
            "strategy": out["strategy"], "micro_batch_tokens": out["micro_batch_tokens"],
            "wall_s": time.perf_counter() - t0}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--dry", action="store_true", help="on the CPU with tiny shapes: everything but CUDA")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    args = parser.parse_args(argv)
    if not args.dry and not torch.cuda.is_available():
        print("gpu_check: no CUDA device here; --dry runs the same steps on the CPU", file=sys.stderr)
        return 2
    device = "cpu" if args.dry else "cuda"
    started = time.perf_counter()
    report = {"machine": machine(), "dry": args.dry,
              "device": "cpu (dry run)" if args.dry else torch.cuda.get_device_name(0),
              "peak_basis": "H100 SXM datasheet bf16 989 TFLOP/s (counts.H100_FLOPS), the GPU-hour estimates' basis",
              "shapes": []}
    with tempfile.TemporaryDirectory(prefix="wt-gpu-check-") as tmp:
        folder = Path(tmp)
        os.environ["WINDTUNNEL_RESULTS"] = str(folder / "results")   # nothing lands in the user's results/
        vocab = DRY["vocab"] if args.dry else VOCAB
        steps = max(s[-1] for s in SHAPES.values()) if not args.dry else DRY["steps"]
        batch = max(s[3] for s in SHAPES.values()) if not args.dry else DRY["batch"]
        data = corpus(folder, vocab, words=int(1.3 * (steps + LAUNCH_STEPS) * batch) + 100_000)
        warm = 1 if args.dry else WARM
        specs = {}
        for name in SHAPES:
            specs[name], steps = shape_spec(name, args.dry, device, data)
            report["shapes"].append(measure(name, specs[name], steps, warm))
        report["launch"] = launch_check(specs["0.1B (minicpm-1.2b family)"], folder, gpus=0 if args.dry else 1)
    report["wall_s"] = time.perf_counter() - started
    args.out.mkdir(parents=True, exist_ok=True)
    path = args.out / ("gpu_dry.json" if args.dry else "gpu.json")
    path.write_text(json.dumps(report, indent=1, default=str) + "\n")
    print(f"wrote {path} ({report['wall_s']:.0f} s)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
