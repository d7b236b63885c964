"""TPE against random search at an equal trial budget on the micro µP search (issue 6).

    python bench/search_tpe_vs_random.py [--model micro-24k] [--tokens-per-param 10] [--trials 16]
                                         [--seeds 0 1 2 3 4] [--startup 5] [--workers 2] [--out bench/results]

Both samplers search the space of `sweeps/mup_search.yaml` (micro scale: lr, scale_emb, scale_depth,
init_std) with the search's own objective: `windtunnel.train.train` of the trial's spec in the shared run
storage (results/runs/<spec_hash>), then the mean held-out bits per byte at the end; a diverged trial
scores windtunnel.search.DIVERGED, as in `run_search`. Optuna is called directly (no Ray, no MLflow, no
ASHA) to keep the comparison cheap. TPE (multivariate, `--startup` random trials first) and
RandomSampler share each seed, so their first `--startup` trials are the same runs, trained once. One seed
is one job (TPE, then random) on one core; `--workers` jobs run at once.
Writes bench/results/search_tpe_vs_random.json and .png: best objective reached vs number of trials,
median over seeds (thin lines: each seed).
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import math
import multiprocessing
import os
import platform
import statistics
import sys
import time
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

SAMPLERS = ("tpe", "random")


def _spec(model: str, tokens_per_param: float):
    """The micro search of sweeps/mup_search.yaml on `model`, evaluated only at the end (no ASHA here);
    the warmup keeps its fraction of the run."""
    from windtunnel.config import apply_overrides, get_model
    from windtunnel.model import count_params
    from windtunnel.search import load_search

    spec = load_search(ROOT / "sweeps" / "mup_search.yaml", scale="micro")
    shape, batch = get_model(model), spec.template.batch_tokens
    steps = max(1, round(tokens_per_param * count_params(shape) / batch))
    warmup = round(spec.template.schedule.warmup_tokens / spec.template.tokens * steps) * batch
    template = apply_overrides(dataclasses.replace(spec.template, model=shape),
                               {"tokens": steps * batch, "eval_every": steps, "schedule.warmup_tokens": warmup},
                               source="bench")
    return dataclasses.replace(spec, template=template)


def _objective(spec, record: list):
    """The search's objective for an Optuna trial: train the spec, mean held-out bpb (DIVERGED when diverged)."""
    from windtunnel.runs import run_dir
    from windtunnel.search import DIVERGED, objective_value
    from windtunnel.search.trial import trial_run
    from windtunnel.train import train

    def objective(trial) -> float:
        params = {p.name: (trial.suggest_int if p.integer else trial.suggest_float)(p.name, p.low, p.high, log=p.log)
                  for p in spec.space}
        run = trial_run(spec.template, params)  # the run a search trial with these values would train
        started = time.perf_counter()
        result = train(run.spec, run_dir(run))
        value = objective_value(result.eval, spec.objective)
        diverged = result.status == "diverged" or math.isnan(value)
        record.append({"params": params, "value": None if diverged else value, "status": result.status,
                       "run": run.id, "wall_s": time.perf_counter() - started})
        return DIVERGED if diverged else value

    return objective


def _job(seed: int, args) -> dict:
    """Both samplers on one seed, one core."""
    import optuna
    import torch

    torch.set_num_threads(1)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    spec = _spec(args.model, args.tokens_per_param)
    out = {}
    for name in SAMPLERS:
        sampler = (optuna.samplers.TPESampler(multivariate=True, seed=seed, n_startup_trials=args.startup)
                   if name == "tpe" else optuna.samplers.RandomSampler(seed=seed))
        record: list = []
        started = time.perf_counter()
        study = optuna.create_study(direction="minimize", sampler=sampler)
        study.optimize(_objective(spec, record), n_trials=args.trials)
        out[name] = {"trials": record, "best_so_far": _best_so_far(record), "wall_s": time.perf_counter() - started}
        print(f"seed {seed} {name:<6} best {out[name]['best_so_far'][-1]:.4f} bpb after {args.trials} trials "
              f"({out[name]['wall_s']:.0f} s)", flush=True)
    return out


def _best_so_far(record: list) -> list[float]:
    best, curve = math.inf, []
    for row in record:
        if row["value"] is not None:
            best = min(best, row["value"])
        curve.append(best if math.isfinite(best) else math.nan)
    return curve


def _median_curves(per_seed: dict, trials: int) -> dict:
    return {name: [statistics.median(per_seed[s][name]["best_so_far"][i] for s in per_seed) for i in range(trials)]
            for name in SAMPLERS}


def _figure(per_seed: dict, medians: dict, path: Path, *, title: str) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(6.4, 4.4))
    x = range(1, len(medians["tpe"]) + 1)
    for name, color in zip(SAMPLERS, ("tab:blue", "tab:orange")):
        for seed in per_seed:
            ax.plot(x, per_seed[seed][name]["best_so_far"], color=color, alpha=0.25, lw=0.8)
        ax.plot(x, medians[name], color=color, lw=2.2, marker="o", ms=3,
                label=f"{'TPE (multivariate)' if name == 'tpe' else 'random'}: median over {len(per_seed)} seeds")
    ax.set(xlabel="trials", ylabel="best held-out bits per byte so far", title=title)
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--model", default="micro-24k")
    p.add_argument("--tokens-per-param", type=float, default=10.0, help="training tokens per trial, in units of N")
    p.add_argument("--trials", type=int, default=16, help="trials per sampler and seed")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2, 3, 4])
    p.add_argument("--startup", type=int, default=5, help="TPE's random trials before it models the results")
    p.add_argument("--workers", type=int, default=2, help="seeds at once (one core each)")
    p.add_argument("--out", type=Path, default=ROOT / "bench" / "results")
    args = p.parse_args(argv)

    from windtunnel.data import prepare
    from windtunnel.model import count_params

    spec = _spec(args.model, args.tokens_per_param)
    prepare(spec.template.data, vocab_size=spec.template.model.vocab_size)  # tokenize once, before the workers
    started = time.perf_counter()
    with ProcessPoolExecutor(max_workers=args.workers, mp_context=multiprocessing.get_context("spawn")) as pool:
        jobs = {seed: pool.submit(_job, seed, args) for seed in args.seeds}
        per_seed = {seed: job.result() for seed, job in jobs.items()}
    wall = time.perf_counter() - started
    medians = _median_curves(per_seed, args.trials)
    finals = {name: [per_seed[s][name]["best_so_far"][-1] for s in per_seed] for name in SAMPLERS}
    wins = sum(t < r for t, r in zip(finals["tpe"], finals["random"]))
    n = count_params(spec.template.model)
    summary = {
        "model": args.model, "N": n, "tokens_per_trial": spec.template.tokens, "trials": args.trials,
        "seeds": args.seeds, "tpe_startup_trials": args.startup, "objective": "mean held-out bits per byte",
        "space": [dataclasses.asdict(p) for p in spec.space],
        "median_best_so_far": medians, "final_best_per_seed": finals,
        "median_final_best": {name: statistics.median(v) for name, v in finals.items()},
        "tpe_better_in_median": statistics.median(finals["tpe"]) < statistics.median(finals["random"]),
        "tpe_wins_seeds": wins,
        "diverged": {name: sum(row["status"] == "diverged" for s in per_seed for row in per_seed[s][name]["trials"])
                     for name in SAMPLERS},
        "wall_s": wall, "machine": {"cpu_count": os.cpu_count(), "platform": platform.platform(),
                                    "python": platform.python_version(), "date": time.strftime("%Y-%m-%d %H:%M")},
        "per_seed": per_seed,
    }
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "search_tpe_vs_random.json").write_text(json.dumps(summary, indent=1, default=str))
    _figure(per_seed, medians, args.out / "search_tpe_vs_random.png",
            title=f"µP search on {args.model} (N={n:,}), {spec.template.tokens:,} tokens/trial")
    print(f"{'trials':>6} {'TPE median':>11} {'random median':>14}")
    for i in range(args.trials):
        print(f"{i + 1:>6} {medians['tpe'][i]:>11.4f} {medians['random'][i]:>14.4f}")
    print(f"TPE better than random on {wins}/{len(args.seeds)} seeds; median final best "
          f"{summary['median_final_best']['tpe']:.4f} vs {summary['median_final_best']['random']:.4f} bpb; "
          f"wall {wall:.0f} s; {args.out / 'search_tpe_vs_random.png'}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
