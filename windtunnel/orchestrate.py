"""Execute a run graph on Ray: an embedded local Ray by default, a cluster when $RAY_ADDRESS is set.

Each Run trains in a Ray task in `results/runs/<id>/` (shared storage on a cluster). The driver
submits every run whose inputs exist — a root at once, a decay branch as soon as its parent's
checkpoint at the fork step is on disk, not when the parent ends — and keeps a live count of runs
done / running / queued / failed / diverged with tokens and ETA. Finished and diverged runs are
skipped; interrupted ones resume from their last checkpoint; a run that raises is retried
`retries` times, then recorded as failed while the sweep goes on. One MLflow parent run per sweep,
one child per Run, logged by the task itself (metrics are flushed before each checkpoint, and a
resumed run drops the steps MLflow already holds, so each step is stored once).

On a cluster: windtunnel's code reaches every worker through a Ray runtime_env (`py_modules`), each run
reserves its sweep's `resources` (CPUs, fractional GPUs), and each attempt records its host and Ray node
(`attempts.jsonl` in the run folder, MLflow tags `host` and `ray.node`). The run folders, the data cache
and the MLflow store (unless MLFLOW_TRACKING_URI names a server) must be on storage every node shares.
"""

from __future__ import annotations

import contextlib
import logging
import os
import socket
import sys
import time
from dataclasses import dataclass
from pathlib import Path

from windtunnel.counts import flops_per_token
from windtunnel.errors import WindtunnelError, one_line
from windtunnel.paths import results_dir
from windtunnel.runs import Run, resources, run_dir, train_one
from windtunnel.train import checkpoint_path, read_status

__all__ = ["run_graph", "RunOutcome", "init_ray", "runtime_env", "probe_cluster"]

POLL_SECONDS = 0.5  # how often the driver looks for new branch checkpoints and finished tasks
PROBE_SECONDS = 3.0  # how long a cluster at $RAY_ADDRESS may take to accept a TCP connection


@dataclass(frozen=True)
class RunOutcome:
    """What became of one Run in this sweep."""

    run: Run
    status: str          # finished | diverged | failed
    attempts: int        # tasks started for it in this invocation (0 = already done before)
    result: dict | None  # TrainResult fields when it trained to the end
    error: str | None    # the last error of a failed run


# ---------------------------------------------------------------- the driver


def init_ray(num_cpus: int | None) -> bool:
    """The cluster at $RAY_ADDRESS, or else an embedded local Ray started here, unless Ray is already up;
    True when connected here.

    Embedded means `address="local"`: a bare `ray.init()` would first try a cluster still recorded in Ray's
    temp folder (`ray_current_cluster`) and, if that one died, wait minutes on time-outs (docs/method.md §8). A
    cluster at $RAY_ADDRESS is probed first, so one that does not answer fails in seconds."""
    import ray

    if ray.is_initialized():
        return False
    address = os.environ.get("RAY_ADDRESS") or None
    if address:
        probe_cluster(address)
    logging.getLogger("ray._private.authentication.authentication_token_setup").addFilter(_not_auth_notice)
    ray.init(address=address or "local", num_cpus=None if address else num_cpus, include_dashboard=False,
             log_to_driver=False, configure_logging=False, runtime_env=runtime_env())
    return True


def runtime_env() -> dict:
    """What every Ray worker gets: windtunnel's code, shipped by Ray (so a node relies neither on the driver's
    working directory nor on windtunnel installed at the same path), and this process's results and MLflow
    locations (shared storage, or a tracking server, on a cluster)."""
    import windtunnel
    from windtunnel.tracking import tracking_uri

    return {"py_modules": [str(Path(windtunnel.__file__).parent)], "excludes": ["__pycache__/"],
            "env_vars": {"WINDTUNNEL_RESULTS": str(results_dir()), "MLFLOW_TRACKING_URI": tracking_uri()}}


def probe_cluster(address: str, *, timeout: float = PROBE_SECONDS) -> None:
    """Raise a one-line WindtunnelError unless a Ray cluster answers at `address` within seconds, where
    `ray.init` would retry for minutes: a TCP connect to host:port, then (not for Ray Client, "ray://") one
    request to its GCS, which also catches a port some other server holds and a missing auth token.
    "auto" and "local" are Ray's to resolve."""
    import socket

    host, _, port = address.removeprefix("ray://").rpartition(":")
    if not host or not port.isdigit():
        return
    try:
        socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
        if not address.startswith("ray://"):
            from ray._raylet import GcsClient  # Ray's own client: one request, no retries

            GcsClient(address=f"{host}:{port}").cluster_id
    except Exception as err:  # OSError: nothing listens; a Ray error: not a GCS, or it refused our token
        reason = (err.strerror if isinstance(err, OSError) else None) or one_line(err)
        raise WindtunnelError(f"RAY_ADDRESS={address}: no Ray cluster answers at {host}:{port} ({reason}); start it "
                              f"(`ray start --head --port={port}` there), check its auth token (RAY_AUTH_TOKEN or "
                              "~/.ray/auth_token), or unset RAY_ADDRESS to run on an embedded local Ray") from None


def _not_auth_notice(record: logging.LogRecord) -> bool:
    """Ray announces its default (token auth on) at every start; its warning when auth is off still shows."""
    return not record.getMessage().startswith("Token authentication is enabled")


def _check_fits(ray, runs: list[Run], *, gpus: bool) -> None:
    """Refuse a sweep whose runs ask more CPUs or GPUs than any one node has: Ray would queue them forever."""
    nodes = [n["Resources"] for n in ray.nodes() if n["Alive"]]
    for run in runs:
        need = resources(run, gpus=gpus)
        for key, name in (("num_cpus", "CPU"), ("num_gpus", "GPU")):
            most = max((n.get(name, 0) for n in nodes), default=0)
            if need.get(key, 0) > most:
                raise WindtunnelError(f"run {run.name} needs {key}={need[key]:g} but the largest Ray node has {most:g} "
                                      f"{name}; lower the sweep's scales.<scale>.resources or add a bigger node")


def _parent_logger(sweep: str, scale: str, runs: list[Run], description: str, note: str | None):
    from windtunnel.tracking import RunLogger

    folder = results_dir() / "sweeps" / f"{sweep}-{scale}"
    folder.mkdir(parents=True, exist_ok=True)
    return RunLogger.in_folder(folder, experiment=sweep, run_name=f"{sweep} ({scale})",
                               params={"scale": scale, "description": description}, note=note,
                               tags={"sweep": sweep, "scale": scale, "kind": "sweep", "n_runs": str(len(runs))})  # may grow


class _Board:
    """The live view: runs done / running / queued / failed / diverged, tokens trained and ETA."""

    def __init__(self, runs: list[Run], outcomes: dict, *, enabled: bool):
        from tqdm.auto import tqdm

        self.runs, self.outcomes = runs, outcomes
        total = sum(r.own_tokens for r in runs if r.id not in outcomes)
        self.bar = tqdm(total=total, unit="tok", unit_scale=True, disable=not enabled, dynamic_ncols=True,
                        desc="sweep", smoothing=0.05, mininterval=0.5 if sys.stderr.isatty() else 30)

    def update(self, pending: dict) -> None:
        new = [r for r in self.runs if self.outcomes.get(r.id) is None or self.outcomes[r.id].attempts]
        trained = 0
        for run in new:
            status = read_status(run_dir(run)) or {}
            done = run.tokens if status.get("status") in ("finished", "diverged") else status.get("tokens", 0)
            trained += max(0, done - (run.fork_step or 0) * run.spec.batch_tokens)
        counts = {s: sum(o.status == s for o in self.outcomes.values()) for s in ("finished", "failed", "diverged")}
        running = sum((read_status(run_dir(r)) or {}).get("status") == "running" for r in pending.values())
        queued = len(self.runs) - len(self.outcomes) - running
        self.bar.set_postfix_str(f"done {counts['finished']} running {running} queued {queued} "
                                 f"failed {counts['failed']} diverged {counts['diverged']}", refresh=False)
        self.bar.update(min(trained, self.bar.total) - self.bar.n)  # redraws at most every mininterval

    def close(self) -> None:
        self.bar.close()


def check_epochs(runs: list[Run], train_tokens: dict) -> None:
    """One line naming the run that reads its corpus most often, when any would read it more than once (repeated
    data bends a scaling law: the fits leave such points out)."""
    epochs = {r.id: r.tokens / train_tokens[r.spec.data, r.spec.model.vocab_size] for r in runs}
    worst = max(runs, key=lambda r: epochs[r.id], default=None)
    if worst is not None and epochs[worst.id] > 1:
        over = sum(e > 1 for e in epochs.values())
        raise WindtunnelError(f"{over} run(s) would repeat their data: {worst.name} reads {epochs[worst.id]:.3g} epochs "
                              f"of data.corpus={worst.spec.data.corpus!r} ({worst.tokens:,} tokens of a "
                              f"{train_tokens[worst.spec.data, worst.spec.model.vocab_size]:,}-token training split); "
                              "give a larger corpus, or --allow-repeat")


def run_graph(runs: list[Run], *, sweep: str, scale: str, description: str = "", retries: int = 2,
              num_cpus: int | None = None, progress: bool = True, allow_repeat: bool = False,
              note: str | None = None, keep_ray: bool = False) -> list[RunOutcome]:
    """Train every run of the graph not yet done; returns one outcome per run, in graph order. A run that would read
    its corpus's training split more than once is refused before anything trains, unless `allow_repeat`. `note`:
    the sweep's MLflow experiment description (what it studies, its scales, what reads it). `keep_ray`: leave an
    embedded Ray started here running for the next sweep (its workers keep their imports: ~10 s a sweep on 2 cores);
    the caller shuts it down."""
    with _only_driver(sweep, scale):
        return _run_graph(runs, sweep=sweep, scale=scale, description=description, retries=retries,
                          num_cpus=num_cpus, progress=progress, allow_repeat=allow_repeat, note=note,
                          keep_ray=keep_ray)


@contextlib.contextmanager
def _only_driver(sweep: str, scale: str):
    """One driver per sweep and scale at a time: a second `windtunnel sweep` of the same graph would train its
    unfinished runs twice over, in the same folders. An exclusive lock (flock) on results/sweeps/SWEEP-SCALE/lock,
    released when the driver ends, however it ends; the file names the holder's process."""
    import fcntl

    folder = results_dir() / "sweeps" / f"{sweep}-{scale}"
    folder.mkdir(parents=True, exist_ok=True)
    with open(folder / "lock", "a+") as lock:
        try:
            fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            lock.seek(0)
            holder = lock.read().strip() or "another process"
            raise WindtunnelError(f"sweep {sweep!r} at scale {scale!r} is already running ({holder}); wait for it "
                                  f"to end, or stop it, then run the same command again") from None
        lock.seek(0)
        lock.truncate()
        lock.write(f"pid {os.getpid()} on {socket.gethostname()}\n")
        lock.flush()
        yield


def _run_graph(runs: list[Run], *, sweep: str, scale: str, description: str, retries: int, num_cpus: int | None,
               progress: bool, allow_repeat: bool, note: str | None, keep_ray: bool) -> list[RunOutcome]:
    from windtunnel.data import prepare
    from windtunnel.tracking import ending_family, settle_runs

    outcomes: dict[str, RunOutcome] = {}
    for run in runs:
        status = read_status(run_dir(run))
        if status and status["status"] in ("finished", "diverged"):
            outcomes[run.id] = RunOutcome(run, status["status"], 0, status.get("result"), None)
    todo = [r for r in runs if r.id not in outcomes]
    train_tokens = {}
    for data, vocab in {(r.spec.data, r.spec.model.vocab_size) for r in todo}:  # once, not per task; bad data
        train_tokens[data, vocab] = len(prepare(data, vocab_size=vocab, progress=progress).train)  # fails here,
    if not allow_repeat:                                                    # before the sweep's MLflow run exists
        check_epochs(todo, train_tokens)
    if todo and os.environ.get("RAY_ADDRESS"):  # so does a cluster that does not answer
        probe_cluster(os.environ["RAY_ADDRESS"])
    settle_runs(sweep, {r.run.id: r.status for r in outcomes.values()})
    parent = _parent_logger(sweep, scale, runs, description, note)
    with ending_family(parent):  # the parent ends FAILED on an error, KILLED on Ctrl-C; so do orphaned children
        board = _Board(runs, outcomes, enabled=progress)
        try:
            if todo:
                _drive(todo, {r.id: r for r in runs}, outcomes, board, sweep=sweep, scale=scale, parent=parent,
                       retries=retries, num_cpus=num_cpus, keep_ray=keep_ray)
        finally:
            board.close()
        failed = any(o.status == "failed" for o in outcomes.values())
        parent.log({"runs/finished": sum(o.status == "finished" for o in outcomes.values()),
                    "runs/failed": sum(o.status == "failed" for o in outcomes.values()),
                    "runs/diverged": sum(o.status == "diverged" for o in outcomes.values())}, step=0)
        parent.finish("FAILED" if failed else "FINISHED", tag_status="failed" if failed else "finished")
    return [outcomes[r.id] for r in runs]


def _drive(todo: list[Run], by_id: dict[str, Run], outcomes: dict, board: _Board, *, sweep, scale, parent,
           retries: int, num_cpus: int | None, keep_ray: bool) -> None:
    import ray

    started_ray = init_ray(num_cpus)
    try:
        _loop(ray, todo, by_id, outcomes, board, sweep=sweep, scale=scale, parent=parent, retries=retries)
    except BaseException:
        if started_ray:  # an error or Ctrl-C ends the session, kept or not
            ray.shutdown()
        raise
    if started_ray and not keep_ray:
        ray.shutdown()


def _loop(ray, todo: list[Run], by_id: dict[str, Run], outcomes: dict, board: _Board, *, sweep, scale, parent,
          retries: int) -> None:
    gpus = ray.cluster_resources().get("GPU", 0) > 0
    _check_fits(ray, todo, gpus=gpus)
    task = ray.remote(max_retries=0)(train_one)  # retries are ours: a retry resumes from the checkpoint
    # longest first (stable: graph order among equals): a sweep ends on short runs, not on one long run beside
    # idle workers
    todo.sort(key=_cost, reverse=True)
    pending: dict = {}
    attempts: dict[str, int] = {}
    errors: dict[str, str] = {}
    while todo or pending:
        for run in list(todo):
            init_from = _fork_point(run, by_id, outcomes)
            if init_from is False:
                continue
            if isinstance(init_from, str) and init_from.startswith("blocked:"):
                todo.remove(run)
                outcomes[run.id] = RunOutcome(run, "failed", 0, None, init_from.removeprefix("blocked: "))
                continue
            need = resources(run, gpus=gpus)
            ref = task.options(**need).remote(run, init_from=init_from, experiment=sweep,
                                               parent_mlflow_id=parent.run_id, threads=max(1, int(need["num_cpus"])),
                                               tags={"sweep": sweep, "scale": scale})
            pending[ref] = run
            attempts[run.id] = attempts.get(run.id, 0) + 1
            todo.remove(run)
        done, _ = ray.wait(list(pending), num_returns=1, timeout=POLL_SECONDS) if pending else ([], [])
        for ref in done:
            run = pending.pop(ref)
            try:
                result = ray.get(ref)
            except Exception as err:  # the task raised or its worker died: resume it from its checkpoint
                errors[run.id] = one_line(err)
                if attempts[run.id] <= retries:
                    todo.append(run)
                else:
                    outcomes[run.id] = RunOutcome(run, "failed", attempts[run.id], None, errors[run.id])
                continue
            outcomes[run.id] = RunOutcome(run, result["status"], attempts[run.id], result, None)
        if not pending and todo and all(_fork_point(r, by_id, outcomes) is False for r in todo):
            time.sleep(POLL_SECONDS)  # branches waiting on a checkpoint of a parent that is not running
        board.update(pending)


def _cost(run: Run) -> float:
    """The training FLOPs a run does itself (after its fork): how long it will hold its worker, relatively."""
    return run.own_tokens * flops_per_token(run.spec.model, seq_len=run.spec.seq_len)


def _fork_point(run: Run, by_id: dict[str, Run], outcomes: dict):
    """None for a root; the parent's checkpoint path once it exists; False while waiting for it;
    "blocked: ..." when it will never exist (the parent failed, diverged before it, or is gone)."""
    if run.parent is None:
        return None
    path = checkpoint_path(run_dir(by_id[run.parent]), run.fork_step)
    if path.exists():
        return str(path)
    parent = outcomes.get(run.parent)
    if parent is not None:
        return f"blocked: parent {run.parent} ended {parent.status} before step {run.fork_step}"
    return False
