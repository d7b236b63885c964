"""A Run: one training job's identity, folder, MLflow params, Ray resources and execution.

A run is its spec (STYLE 2): `make_run` hashes everything that changes its numbers — the spec without its
runtime settings (config.spec_hash), the content of the data it reads (its corpus, every decay-stage corpus and
a given tokenizer file: data.source_fingerprint) and, for a decay branch, its parent's id and fork step.
`windtunnel train`, `sweep`, `search`, `launch` and `validate` all make their Runs here, so editing a corpus
file (or another Python whose stdlib differs, for the embedded corpus) gives every command new ids instead of
reusing runs trained on other text.
"""

from __future__ import annotations

import json
import os
import socket
import sys
import time
from dataclasses import asdict, dataclass
from pathlib import Path

from windtunnel.config import TrainSpec, spec_hash
from windtunnel.errors import WindtunnelError
from windtunnel.paths import results_dir

__all__ = ["Run", "make_run", "data_fingerprint", "tokenizer_sha256", "run_dir", "run_params", "resources", "record_attempt", "train_one",
           "train_spec"]


@dataclass(frozen=True)
class Run:
    """A node of the run graph: a frozen spec, its id, and what it forks from."""

    id: str                   # make_run's content hash (12 hex digits)
    name: str                 # readable: model and the sweep coordinates
    spec: TrainSpec
    coords: dict              # sweep coordinates (model, grid values, branch point, decay), for tracking
    parent: str | None = None  # id of the run whose checkpoint this one starts from
    fork_step: int | None = None  # that checkpoint's step
    resources: dict | None = None  # {"cpus": ..., "gpus": ...} Ray reserves for it (runtime only: not in the id)

    @property
    def tokens(self) -> int:
        """Total tokens the model has seen at the end (a branch counts its parent's prefix)."""
        return self.spec.tokens

    @property
    def own_tokens(self) -> int:
        """Tokens this node trains itself: a branch only trains its decay."""
        return self.spec.tokens - (self.fork_step or 0) * self.spec.batch_tokens


def data_fingerprint(spec: TrainSpec, *, memo: dict | None = None) -> str:
    """Content hash of every corpus `spec` reads: its own, and each decay-stage corpus (TrainSpec.decay_data).
    `memo` (a dict the caller keeps for one sweep) spares listing the corpus's files again for every run. A memo
    with a "provisional" list (a dry run's) turns a corpus that cannot be read here (a dataset not downloaded yet)
    into the fingerprint "unavailable" and records why in that list: the ids it gives are provisional."""
    import dataclasses

    from windtunnel.data import source_fingerprint

    vocab = spec.model.vocab_size
    names = tuple(sorted({name for name, _ in spec.decay_data} - {spec.data.corpus}))
    key = (spec.data, vocab, names)
    if memo is not None and key in memo:
        return memo[key]
    sources = [dataclasses.replace(spec.data, corpus="python" if name == "python-docstrings" else name) for name in names]
    try:
        found = "-".join(source_fingerprint(data, vocab_size=vocab) for data in [spec.data, *sources])
    except WindtunnelError as err:
        if memo is None or "provisional" not in memo:
            raise
        memo["provisional"].append(str(err))
        found = "unavailable"
    if memo is not None:
        memo[key] = found
    return found


def make_run(spec: TrainSpec, *, name: str, coords: dict, parent: Run | None = None, fork_step: int | None = None,
             memo: dict | None = None) -> Run:
    """The Run of `spec`, its id hashing the spec, its data's content and (a branch) its parent and fork step;
    `memo`: see data_fingerprint."""
    fork = (parent.id, str(fork_step)) if parent is not None else ()
    return Run(id=spec_hash(spec, data_fingerprint(spec, memo=memo), *fork), name=name, spec=spec, coords=coords,
               parent=parent.id if parent is not None else None, fork_step=fork_step)


def run_dir(run: Run) -> Path:
    """results/runs/<id>/: checkpoints, status and the MLflow run id (shared storage on a cluster)."""
    return results_dir() / "runs" / run.id


def _flat(prefix: str, obj: dict) -> dict:
    out = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(_flat(f"{prefix}{key}.", value))
        else:
            out[prefix + key] = value
    return out


def run_params(run: Run) -> dict:
    """MLflow params of a run: its spec flattened, plus N (non-embedding), N_total (with the tied embedding), D,
    the branch step, the sweep coordinates and, on the embedded corpus, the versions its text came from."""
    from windtunnel.counts import n_params
    from windtunnel.train import total_tokens

    tokenizer = run.spec.data.tokenizer
    source = {}
    if run.spec.data.corpus == "python":  # which Python and torch the embedded corpus's text came from
        from windtunnel.data import embedded_source, versions_text

        source = {"data.source": versions_text(embedded_source())}
    return {**_flat("", asdict(run.spec)), **source, "N": n_params(run.spec.model),
            "N_total": n_params(run.spec.model, embedding=True), "D": total_tokens(run.spec),
            "fork_step": run.fork_step, "parent_run": run.parent,
            **({"tokenizer_sha256": tokenizer_sha256(tokenizer)} if tokenizer else {}),
            **{f"coord.{k}": v for k, v in run.coords.items()}}


def tokenizer_sha256(path: str) -> str:
    """A tokenizer file's content fingerprint (16 hex of its SHA-256): how a plan tells that a ladder and its target
    share a tokenizer (windtunnel.plan), whatever the files are called."""
    import hashlib

    file = Path(path).expanduser()
    if not file.is_file():
        raise WindtunnelError(f"{path}: tokenizer file not found")
    return hashlib.sha256(file.read_bytes()).hexdigest()[:16]


def resources(run: Run, *, gpus: bool) -> dict:
    """Ray resources of one run: its sweep's `resources` when set; else a GPU each when the cluster has GPUs,
    else 1 CPU (2 above 2M parameters)."""
    from windtunnel.counts import n_params

    if run.resources:
        return {"num_cpus": run.resources["cpus"], "num_gpus": run.resources["gpus"]}
    if gpus and run.spec.device != "cpu":
        return {"num_gpus": 1, "num_cpus": 1}
    return {"num_cpus": 1 if n_params(run.spec.model) < 2_000_000 else 2}


def train_one(run: Run, *, init_from: str | None, experiment: str, parent_mlflow_id: str | None, tags: dict,
              threads: int | None = None, progress: bool = False, params: dict | None = None) -> dict:
    """Train one Run with MLflow logging (the body of a sweep's Ray task; `windtunnel train` calls it directly).
    `params` are logged beside the run's own (a validation's prediction)."""
    import torch

    from windtunnel.tracking import RunLogger
    from windtunnel.train import train

    if threads:
        torch.set_num_threads(threads)
    folder = run_dir(run)
    folder.mkdir(parents=True, exist_ok=True)
    where = record_attempt(folder)
    logger = RunLogger.in_folder(folder, experiment=experiment, run_name=run.name, params={**run_params(run), **(params or {})},
                                 tags={**tags, "windtunnel.run": run.id, "model": run.spec.model.name,
                                       "parent": run.parent or "", **where},
                                 parent_run_id=parent_mlflow_id, system_metrics=True)
    try:
        log_corpus(logger, run.spec)
        result = train(run.spec, folder, init_from=Path(init_from) if init_from else None,
                       log=logger.log, flush=logger.flush, progress=progress)
    except BaseException as err:
        stopped = isinstance(err, KeyboardInterrupt)
        logger.finish("KILLED" if stopped else "FAILED", tag_status="interrupted" if stopped else "failed")
        raise
    logger.finish("FINISHED" if result.status == "finished" else "FAILED", tag_status=result.status)
    return asdict(result)


def log_corpus(logger, spec: TrainSpec) -> None:
    """The run's corpus as its MLflow dataset input: name, content fingerprint, source and tokens per split."""
    from windtunnel.data import embedded_source, prepare

    corpus = prepare(spec.data, vocab_size=spec.model.vocab_size, progress=False)  # prepared already: reopened
    name = spec.data.corpus
    if name == "python":
        kind, source = "code", {"corpus": name, "versions": embedded_source()}
    elif name.startswith("hf:"):
        kind, source = "hugging_face", {"corpus": name}
    else:
        kind, source = "local", {"corpus": str(Path(name).expanduser().resolve())}
    tokens = {"train_tokens": len(corpus.train), **{f"{k}_tokens": len(v) for k, v in corpus.evals.items()}}
    logger.log_corpus(name=name, fingerprint=corpus.fingerprint, kind=kind, source=json.dumps(source),
                      profile={**tokens, "vocab_size": spec.model.vocab_size,
                               "bytes_per_token": {k: round(v, 4) for k, v in corpus.bytes_per_token.items()}})


def record_attempt(folder: Path) -> dict:
    """Where this attempt trains — host, and the Ray node when in a Ray task — appended to `attempts.jsonl` in
    the run folder (one line per attempt: a retry may land elsewhere) and returned as MLflow tags."""
    where = {"host": socket.gethostname()}
    ray = sys.modules.get("ray")  # imported in every Ray worker; never imported here for a plain `train`
    if ray is not None and ray.is_initialized():
        where["ray.node"] = ray.get_runtime_context().get_node_id()
    with open(folder / "attempts.jsonl", "a") as f:
        f.write(json.dumps({**where, "pid": os.getpid(), "started": time.time()}) + "\n")
    return where


def train_spec(spec: TrainSpec, *, experiment: str, tags: dict, params: dict | None = None,
               progress: bool = True) -> tuple[Run, dict]:
    """Train one spec outside a sweep (`windtunnel train`); returns the Run and its TrainResult fields."""
    from windtunnel.data import prepare

    prepare(spec.data, vocab_size=spec.model.vocab_size)  # bad data fails here, before any run exists
    run = make_run(spec, name=spec.model.name, coords={"model": spec.model.name})
    result = train_one(run, init_from=None, experiment=experiment, parent_mlflow_id=None,
                       tags={"parametrization": spec.model.parametrization, **tags}, progress=progress, params=params)
    return run, result
