"""Orchestration overhead and the token savings of decay branches (issue: sweeps on Ray).

Run from the repository root:  python bench/sweep_overhead.py [--runs 16] [--tokens 600000]

1. Overhead: a sweep of `--runs` tiny runs (micro-24k, a grid of learning rates) on an embedded Ray
   with 2 CPUs, one run per CPU. Ideal wall time = Σ(time inside each run's training loop) / 2; the
   overhead is wall / ideal − 1 and covers Ray start-up, worker start-up (importing torch), data
   loading, MLflow run creation and scheduling gaps. Goal ≤ 10%.
2. Tokens: the scaling-law graph (6 branches at 10N…60N, ~10% decays) against training every final
   point from scratch, at the micro and paper scales (about 81N against 231N tokens per size).
Prints both and writes bench/results/sweep_overhead.json.
"""

import argparse
import json
import os
import tempfile
import time
from pathlib import Path

from windtunnel.graph import expand, load_sweep, summarize


def overhead(n_runs: int, tokens: int) -> dict:
    lrs = [round(0.002 * 1.2 ** i, 6) for i in range(n_runs)]
    with tempfile.TemporaryDirectory() as tmp:
        os.environ["WINDTUNNEL_RESULTS"] = str(Path(tmp) / "results")
        spec = Path(tmp) / "bench.yaml"
        spec.write_text(f"name: bench\nbase: {{eval_every: 100000, checkpoint_every: 100000}}\n"
                        f"scales:\n  micro:\n    models: [micro-24k]\n    tokens: {tokens}\n    grid: {{lr: {lrs}}}\n")
        sweep, section = load_sweep(spec, scale="micro")
        runs = expand(sweep, section, file=spec)
        from windtunnel.data import prepare
        prepare(runs[0].spec.data, vocab_size=runs[0].spec.model.vocab_size, progress=False)  # not ours to time
        from windtunnel.orchestrate import run_graph

        start = time.perf_counter()
        outcomes = run_graph(runs, sweep="bench", scale="micro", num_cpus=2, progress=False)
        wall = time.perf_counter() - start
    loops = [o.result["tokens"] / o.result["tokens_per_s"] for o in outcomes]
    inside = [o.result["wall_s"] for o in outcomes]
    ideal = sum(loops) / 2
    return {"runs": n_runs, "tokens_per_run": tokens, "wall_s": wall, "sum_loop_s": sum(loops),
            "sum_train_call_s": sum(inside), "overhead_vs_loops": wall / ideal - 1,
            "overhead_vs_train_calls": wall / (sum(inside) / 2) - 1}


def token_savings() -> dict:
    out = {}
    for scale in ("micro", "paper"):
        sweep, section = load_sweep(Path("sweeps/scaling_law.yaml"), scale=scale)
        summary = summarize(expand(sweep, section, file="sweeps/scaling_law.yaml", scale_name=scale))
        out[scale] = {**summary, "ratio": summary["tokens_from_scratch"] / summary["tokens"]}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=16)
    parser.add_argument("--tokens", type=int, default=2_000_000, help="tokens per run (~30 s each on one quiet core)")
    args = parser.parse_args()
    savings = token_savings()
    for scale, s in savings.items():
        print(f"scaling-law graph ({scale}): {s['tokens']:,} tokens vs {s['tokens_from_scratch']:,} from scratch "
              f"= {s['ratio']:.2f}x fewer; {s['flops']:.3g} vs {s['flops_from_scratch']:.3g} FLOPs")
    result = overhead(args.runs, args.tokens)
    print(f"sweep of {result['runs']} runs on 2 CPUs: wall {result['wall_s']:.1f} s, Σ training loops "
          f"{result['sum_loop_s']:.1f} s → overhead {result['overhead_vs_loops']:.1%} "
          f"(vs whole train() calls: {result['overhead_vs_train_calls']:.1%}); goal ≤ 10%")
    out = Path("bench/results/sweep_overhead.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps({"date": time.strftime("%Y-%m-%d %H:%M"), "nproc": os.cpu_count(),
                               "overhead": result, "token_savings": savings}, indent=1))
    print(f"wrote {out}")


if __name__ == "__main__":
    main()
