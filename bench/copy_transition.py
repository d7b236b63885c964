"""Which runs of the old micro ladder had learned in-context copying, and by which branch point? (issue 22)

    WINDTUNNEL_RESULTS=/path/to/results python bench/copy_transition.py [--threads 1] [--out FILE.json]

The micro scaling-law ladder in the store (sweep `scaling_law`, scale micro: five sizes × seeds 0 and 1, one stable
run each and WSD decay branches forked at 1, 2, 4 and 8M tokens) was trained before the trainer logged the copy gap.
Every run's newest checkpoint is still in its folder, so the gap is measured again here: each run's spec is the one
the sweep's graph gives its id; its checkpoint is loaded by the trainer's own resume code (`train._load`: the whole
step_N.pt files of earlier versions and step_N.dcp folders); the held-out windows are rebuilt as training built them
(`data.prepare` from the cached shards, `data.eval_windows`, `train.repeated_pairs`) and scored by `train.evaluate`
(fp32 on the CPU, as the runs were evaluated). The recomputed bits per byte are checked against the store's final
ones. Nothing is written to the store.

Prints (1) per run: its final mean bpb (the store's), its mean copy gap over the held-out sets, and which seed of each
(model, stage, branch) pair copies more (the larger gap) and which has the lower loss; (2) the seed spread of the decay
branches from the store alone: (max − min) / mean of the two seeds' final mean bpb. ~50 checkpoints × 3 sets of
32K tokens: 109–118 s on the shared 2-core machine.
"""

from __future__ import annotations

import argparse
import functools
import json
import os
import platform
import sys
import time
from contextlib import nullcontext
from datetime import datetime, timezone
from pathlib import Path

import pandas as pd
import torch

from windtunnel.config import TrainSpec
from windtunnel.data import eval_windows, prepare
from windtunnel.model import MiniCPM, param_groups
from windtunnel.paths import results_dir
from windtunnel.studies.points import final_points
from windtunnel.train import _check_batch, _checkpoints, _load, evaluate, repeated_pairs

SWEEP, SCALE = "scaling_law", "micro"


# ---------------------------------------------------------------- one run's checkpoint, scored again


def sweep_specs() -> dict[str, TrainSpec]:
    """Every run's TrainSpec by run id, from the sweep's graph (the spec its id hashes; a run's spec.json is the
    dataclass dumped whole, defaults included, which the YAML loader rejects: a constant schedule's decay_fraction)."""
    from windtunnel.graph import expand, find_sweep, load_sweep

    file = find_sweep(Path("sweeps") / f"{SWEEP}.yaml")  # the file final_points reads: ./sweeps, else packaged
    return {run.id: run.spec for run in expand(*load_sweep(file, scale=SCALE), file=file, scale_name=SCALE)}


def load_run(run: str, spec: TrainSpec) -> tuple[MiniCPM, int]:
    """A run's model at its newest checkpoint, and that checkpoint's step."""
    model = MiniCPM(spec.model)
    opt = torch.optim.AdamW(param_groups(model, weight_decay=spec.weight_decay))  # _load restores it too: unused
    state = _load(_checkpoints(results_dir() / "runs" / run)[-1], model, opt, layout={"workers": 1, "parallel": "ddp"})
    return model, state["step"]


@functools.lru_cache(maxsize=4)
def held_out(data, *, vocab_size: int, seq_len: int) -> tuple[dict, dict, dict]:
    """The held-out windows, their repeated-pair masks and bytes per token, as train._train builds them."""
    corpus = prepare(data, vocab_size=vocab_size, progress=False)
    windows = {k: torch.from_numpy(eval_windows(v, seq_len=seq_len, max_tokens=data.eval_tokens))
               for k, v in corpus.evals.items()}
    return windows, {k: repeated_pairs(w) for k, w in windows.items()}, corpus.bytes_per_token


def measure(run: str, spec: TrainSpec) -> dict:
    """The run's per-set bpb and copy gap (nats) at its newest checkpoint."""
    model, step = load_run(run, spec)
    windows, repeated, bytes_per_token = held_out(spec.data, vocab_size=spec.model.vocab_size, seq_len=spec.seq_len)
    metrics = evaluate(model, windows, repeated, bytes_per_token, rows=_check_batch(spec), autocast=nullcontext)
    sets = sorted(windows)
    return {"step": step, "bpb": {s: metrics[f"eval/{s}/bpb"] for s in sets},
            "copy_gap": {s: metrics[f"eval/{s}/copy_gap"] for s in sets}}


# ---------------------------------------------------------------- the tables


def runs_table(frame: pd.DataFrame, measured: dict[str, dict]) -> pd.DataFrame:
    """One row per run: model, seed, stage, tokens (a branch's fork point, a stable run's total), the store's bpb,
    the mean copy gap, and whether it is the pair's copier (larger gap) and the pair's lower loss."""
    table = pd.DataFrame({
        "run": frame["run"], "model": frame["model"], "N": frame["N"], "seed": frame["seed"].astype(int),
        "stage": frame["stage"], "tokens": frame["branch_tokens"].fillna(frame["D"]).astype(int),
        "bpb": frame["loss"], "copy_gap_mean": [pd.Series(measured[r]["copy_gap"]).mean() for r in frame["run"]]})
    pair = table.groupby(["model", "stage", "tokens"])
    table["copier"] = table["copy_gap_mean"] == pair["copy_gap_mean"].transform("max")
    table["lower"] = table["bpb"] == pair["bpb"].transform("min")
    return table.sort_values(["N", "stage", "tokens", "seed"]).reset_index(drop=True)


def seed_spread(frame: pd.DataFrame) -> pd.DataFrame:
    """Per (model, branch) of the decay branches: the seeds' final mean bpb and (max − min) / mean."""
    decay = frame[frame["stage"] == "decay"].sort_values(["N", "branch_tokens", "seed"])
    rows = [{"model": model, "tokens": int(tokens), "losses": list(group["loss"]),
             "spread": (group["loss"].max() - group["loss"].min()) / group["loss"].mean()}
            for (_, model, tokens), group in decay.groupby(["N", "model", "branch_tokens"], sort=True)]
    return pd.DataFrame(rows)


def print_tables(table: pd.DataFrame, spread: pd.DataFrame) -> None:
    print(f"{'model':<11} {'seed':>4} {'stage':<6} {'tokens':>7} {'bpb':>7} {'gap':>7}  copies  lower-bpb")
    for r in table.itertuples():
        print(f"{r.model:<11} {r.seed:>4} {r.stage:<6} {r.tokens / 2**20:>6.0f}M {r.bpb:>7.4f} {r.copy_gap_mean:>7.4f}"
              f"  {'*' if r.copier else ' ':^6}  {'*' if r.lower else ' ':^9}")
    print(f"\n{'model':<11} {'tokens':>7} {'seed 0':>7} {'seed 1':>7} {'spread':>7}")
    for r in spread.itertuples():
        print(f"{r.model:<11} {r.tokens / 2**20:>6.0f}M " + " ".join(f"{v:>7.4f}" for v in r.losses)
              + f" {r.spread:>7.2%}")


def dumps(out: dict) -> str:
    """JSON with one line per record of a list (14 KB for the 50 runs, against 20 KB indented)."""
    def value(v):
        if isinstance(v, list) and v and isinstance(v[0], dict):
            return "[\n  " + ",\n  ".join(json.dumps(r) for r in v) + "\n ]"
        return json.dumps(v)
    return "{\n" + ",\n".join(f" {json.dumps(k)}: {value(v)}" for k, v in out.items()) + "\n}\n"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("bench/results/copy_transition_old_ladder.json"))
    parser.add_argument("--threads", type=int, default=1, help="torch threads (2 ran 4-5x slower than 1 on the "
                        "shared 2-core machine under load 8)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    start = time.perf_counter()
    frame, excluded = final_points(SWEEP, scale=SCALE)
    specs = sweep_specs()
    measured = {}
    for run in frame["run"]:
        measured[run] = measure(run, specs[run])
        print(f"  {len(measured)}/{len(frame)} {run} {time.perf_counter() - start:.0f} s", end="\r", file=sys.stderr)
    # the recomputed bpb against the store's: the newest checkpoint is the state the final evaluation scored
    check = max(abs(v - frame.loc[i, f"bpb_{s}"]) for i, run in frame["run"].items()
                for s, v in measured[run]["bpb"].items())
    table, spread = runs_table(frame, measured), seed_spread(frame)
    print_tables(table, spread)
    print(f"\n{len(frame)} runs ({excluded or 'none left out'}), max |recomputed - stored bpb| {check:.2e}, "
          f"{time.perf_counter() - start:.0f} s")
    out = {"runs": [{"model": r.model, "seed": r.seed, "stage": r.stage, "tokens": r.tokens, "bpb": round(r.bpb, 5),
                     "copy_gap": {k: round(v, 4) for k, v in measured[r.run]["copy_gap"].items()},
                     "copy_gap_mean": round(r.copy_gap_mean, 4), "run": r.run, "step": measured[r.run]["step"]}
                    for r in table.itertuples()],
           "seed_spread": [{"model": r.model, "tokens": r.tokens, "losses": [round(v, 5) for v in r.losses],
                            "spread": round(r.spread, 5)} for r in spread.itertuples()],
           "machine": {"node": platform.node(), "cpus": os.cpu_count(), "torch": torch.__version__,
                       "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
                       "seconds": time.perf_counter() - start, "threads": args.threads},
           "note": f"sweep {SWEEP!r} at scale {SCALE!r} as stored in {results_dir()}; each run's newest checkpoint "
                   "scored again by train.evaluate (fp32, CPU) on the held-out windows training used. tokens: a decay "
                   "branch's fork point (it decays over 10% more), a stable run's total (constant LR, not decayed). "
                   "bpb: the store's final mean over the held-out sets; copy_gap: loss on unrepeated minus repeated "
                   f"(previous token, token) pairs, nats. Recomputed bpb within {check:.1e} of the store's."}
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(dumps(out))
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
