"""The one place windtunnel talks to MLflow: log runs' params, per-step metrics and system metrics, log output
files (fits, figures, plans, the report) as artifacts, read runs back as DataFrames, and serve the MLflow UI.

The store is $MLFLOW_TRACKING_URI (a tracking server on a cluster: every process, Ray workers included, logs there),
else the sqlite file results/mlflow.db with artifacts in results/mlartifacts (docs/method.md §5): one parent MLflow
run per sweep, one child per training run (`parent_run_id`). mlflow and pandas are imported inside functions, so
importing this module stays cheap.

    with RunLogger(experiment="sweep-lr", run_name="w64-lr0.01", params=spec, tags={"sweep": "lr"}) as run:
        run.log({"train/loss": 3.21}, step=10)   # the trainer's `log` callback
    log_outputs([fit_json, *figures], output="scaling_law", sweep="scaling_law", scale="micro")
"""

from __future__ import annotations

import contextlib
import functools
import json
import logging
import os
import signal
import subprocess
import sys
import time
import warnings
from pathlib import Path
from typing import TYPE_CHECKING

from windtunnel.errors import WindtunnelError, one_line
from windtunnel.paths import results_dir, write_atomic

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["tracking_uri", "RunLogger", "log_outputs", "close_children", "end_if_running", "ending_family",
           "settle_runs", "runs_dataframe", "metric_history", "serve_ui", "start_ui_server", "stop_ui_server",
           "source_tags"]

FLUSH_POINTS = 200  # buffered points that trigger a flush: one log_batch call
FLUSH_SECONDS = 5.0  # ... or seconds since the last flush, checked on each log()
BATCH_METRICS = 1000  # metrics per log_batch call (MLflow's MAX_METRICS_PER_BATCH)
BATCH_PARAMS_TAGS = 100  # params or tags per log_batch call (MLflow's MAX_PARAMS_TAGS_PER_BATCH)
PARAM_CHARS = 6000  # longest param value MLflow 3.17 stores (MAX_PARAM_VAL_LENGTH; it was 500 before 2.x)
TAG_CHARS = 8000  # longest tag value (MAX_TAG_VAL_LENGTH)
PARENT_TAG = "mlflow.parentRunId"  # the tag the MLflow UI nests child runs under
STATUSES = ("FINISHED", "FAILED", "KILLED")  # the terminal MLflow run statuses
BASE_COLUMNS = ["run_id", "run_name", "status", "start_time", "parent_run_id"]
RUN_ID_FILE = "mlflow_run_id"  # in a run dir or sweep folder: the id of its MLflow run (RunLogger.in_folder)
OUTPUTS_EXPERIMENT = "windtunnel-outputs"  # the plans' and the report's runs, and fits without a sweep run
OUTPUT_TAG = "windtunnel.output"  # names an output run, so a rerun finds and reuses it
SYSTEM_SECONDS = 10.0  # system metrics sampling interval (MLFLOW_SYSTEM_METRICS_SAMPLING_INTERVAL overrides it)
NOTE_TAG = "mlflow.note.content"  # an experiment's description in the MLflow UI
EXPERIMENT_NOTES = {  # the descriptions of the experiments that are not a sweep's or a search's (those give theirs)
    "train": "Single runs of `windtunnel train MODEL` (one run per spec; a rerun resumes it).",
    "launch": "Planned runs trained by `windtunnel launch PLAN` on Ray Train, each compared with its plan's "
              "predicted loss (params predicted_loss, metric final/actual_minus_predicted).",
    "validate": "`windtunnel validate TARGET`: a target beyond the ladder, planned from the fits, trained as planned "
                "and compared with the prediction (the wind tunnel's own test).",
    OUTPUTS_EXPERIMENT: "Files not tied to one sweep run: plans (`windtunnel plan`), the report (`windtunnel "
                        "report`) and fits of sweeps without a stored parent run.",
}


def tracking_uri() -> str:
    """$MLFLOW_TRACKING_URI, else the sqlite file results_dir()/mlflow.db (its folder is created)."""
    if uri := os.environ.get("MLFLOW_TRACKING_URI"):
        return uri
    root = results_dir()
    root.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{root / 'mlflow.db'}"


_OPENED: set[str] = set()  # sqlite store URIs this process has opened (MLflow caches the store per process)


def _client():
    from mlflow import MlflowClient

    uri = tracking_uri()
    if not uri.startswith("sqlite:///") or uri in _OPENED:
        return MlflowClient(uri)
    with _sqlite_init_lock(uri):  # MlflowClient() opens the store, creating a new file's tables
        client = MlflowClient(uri)
        client.search_experiments(max_results=1)
    _OPENED.add(uri)
    return client


@contextlib.contextmanager
def _sqlite_init_lock(uri: str):
    """A file lock beside the sqlite file: MLflow 3.17 creates a new file's tables without one, so processes
    opening a fresh store at once fail with "table ... already exists" (seen with 4 spawned processes)."""
    path = uri.removeprefix("sqlite:///").split("?")[0]  # a sqlite URL may carry ?timeout=... options
    if os.name == "nt" or path in ("", ":memory:"):  # no fcntl; nothing shared
        yield
        return
    import fcntl

    Path(path).parent.mkdir(parents=True, exist_ok=True)
    with open(f"{path}.lock", "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)  # released when the file closes
        yield


def _artifact_location() -> str | None:
    """mlartifacts/ beside a local sqlite store (results/mlflow.db: results/mlartifacts), whoever opens it (Ray
    workers get the store as $MLFLOW_TRACKING_URI); else None: a tracking server's own artifact root. Never MLflow's
    default for a local store, ./mlruns of whatever directory the process runs in."""
    uri = tracking_uri()
    path = uri.removeprefix("sqlite:///").split("?")[0] if uri.startswith("sqlite:///") else ""
    if path in ("", ":memory:"):
        return None
    return (Path(path).resolve().parent / "mlartifacts").as_uri()


def _experiment_id(client, name: str, *, create: bool, note: str | None = None) -> str | None:
    """The id of live experiment `name`; created when missing if `create` (safe when processes race to create it).
    `note` (default: EXPERIMENT_NOTES's) becomes its description in the MLflow UI, kept up to date."""
    from mlflow.exceptions import MlflowException

    note = note or EXPERIMENT_NOTES.get(name)
    experiment = client.get_experiment_by_name(name)
    if experiment is None and create:
        try:
            return client.create_experiment(name, artifact_location=_artifact_location(),
                                            tags={NOTE_TAG: note} if note else None)
        except MlflowException as err:  # another process created it between our read and our write
            if err.error_code != "RESOURCE_ALREADY_EXISTS":
                raise
            experiment = client.get_experiment_by_name(name)
    if create and note and experiment is not None and experiment.tags.get(NOTE_TAG) != note:
        client.set_experiment_tag(experiment.experiment_id, NOTE_TAG, note)
    if experiment is not None and experiment.lifecycle_stage == "deleted":
        if not create:
            return None
        raise WindtunnelError(
            f"MLflow experiment {name!r} (id {experiment.experiment_id}) is deleted in {tracking_uri()}; "
            f"restore it with `mlflow experiments restore --experiment-id {experiment.experiment_id}` "
            "or use another name"
        )
    return experiment.experiment_id if experiment else None


@functools.lru_cache(maxsize=1)
def source_tags() -> dict[str, str]:
    """What made a run, as MLflow's source tags (the UI's Source and Version columns): windtunnel's version and,
    from a git checkout, its commit and whether its code had uncommitted changes (tag windtunnel.git.dirty)."""
    from windtunnel import __version__

    tags = {"windtunnel.version": __version__, "mlflow.source.name": "windtunnel", "mlflow.source.type": "LOCAL"}
    root = Path(__file__).resolve().parents[1]
    if not (root / ".git").exists():  # an installed wheel: its version is all there is
        return tags
    git = ["git", "-C", str(root)]
    try:
        commit = subprocess.run([*git, "rev-parse", "HEAD"], capture_output=True, text=True, timeout=10)
        dirty = subprocess.run([*git, "status", "--porcelain", "--untracked-files=no", "--", "windtunnel", "models",
                                "sweeps"], capture_output=True, text=True, timeout=10)
    except (OSError, subprocess.SubprocessError):  # no git here
        return tags
    if commit.returncode == 0:
        tags["mlflow.source.git.commit"] = commit.stdout.strip()
        tags["windtunnel.git.dirty"] = "true" if dirty.stdout.strip() else "false"
    return tags


def _strings(values: dict, limit: int) -> dict[str, str]:
    """MLflow stores params and tags as strings of at most `limit` characters."""
    return {str(key): str(value)[:limit] for key, value in values.items()}


class RunLogger:
    """One MLflow run: params and tags set at the start, metrics buffered and sent with log_batch.

    Each metric key's steps only move forward: a point whose step is <= the last step stored or logged for that key
    is dropped. A trainer resumed from a checkpoint on a reopened run (`run_id=...`) replays steps already logged;
    they are dropped, so every step is stored exactly once.
    Non-finite values are stored, not dropped: NaN as NaN, ±inf as ±1.8e308 (MLflow's sql store clamps them).
    As a context manager the run ends FINISHED, or FAILED (KILLED on Ctrl-C) when the block raises; a constructor
    that fails once the run is RUNNING ends it the same way, so no error leaves a run RUNNING.
    `system_metrics=True` samples CPU, memory, disk, network (and NVIDIA GPUs, through nvidia-ml-py's pynvml) into
    `system/...` metrics every SYSTEM_SECONDS in a background thread, stopped when the run ends.
    """

    def __init__(
        self,
        *,
        experiment: str,
        run_name: str,
        params: dict,
        tags: dict,
        parent_run_id: str | None = None,
        run_id: str | None = None,
        system_metrics: bool = False,
        note: str | None = None,
    ):
        self._client = _client()
        self._buffer: list[tuple[str, float, int, int]] = []  # (key, value, timestamp in ms, step) not yet sent
        self._last_step: dict[str, float] = {}  # key -> highest step stored or buffered
        self._stored_keys: set[str] = set()  # keys a reopened run already holds; their last step is read on first use
        self._last_flush = time.monotonic()
        self._finished = False
        self._monitor = None  # mlflow's SystemMetricsMonitor while system metrics are sampled
        tags = _strings(tags, TAG_CHARS) | ({PARENT_TAG: parent_run_id} if parent_run_id else {})
        params = _strings(params, PARAM_CHARS)
        if run_id is None:
            experiment_id = _experiment_id(self._client, experiment, create=True, note=note)
            tags = source_tags() | tags
            self.run_id: str = self._client.create_run(experiment_id, tags=tags, run_name=run_name).info.run_id
            tags = {}
        else:
            self.run_id = run_id
            params = self._reopen(experiment, params)  # RUNNING from here on
            if note:
                _experiment_id(self._client, experiment, create=True, note=note)
        try:
            self._log_entities(params, tags)
            if system_metrics:
                self._monitor = _system_monitor(self.run_id, resume=run_id is not None)
        except BaseException as err:
            self.__exit__(type(err), err, err.__traceback__)
            raise

    @classmethod
    def in_folder(cls, folder: Path, **kwargs) -> RunLogger:
        """The MLflow run whose id `folder`/mlflow_run_id holds, reopened (a new run when there is none); the
        file then holds this run's id. How a run dir or sweep folder keeps one MLflow run across restarts."""
        id_file = Path(folder) / RUN_ID_FILE
        logger = cls(**kwargs, run_id=id_file.read_text().strip() if id_file.exists() else None)
        try:
            write_atomic(id_file, logger.run_id)
        except BaseException as err:
            logger.__exit__(type(err), err, err.__traceback__)
            raise
        return logger

    def _reopen(self, experiment: str, params: dict[str, str]) -> dict[str, str]:
        """Mark the stored run RUNNING again; return the params it does not hold yet (stored params cannot change)."""
        run = self._get_run()
        stored_in = self._client.get_experiment(run.info.experiment_id).name
        if stored_in != experiment:
            raise WindtunnelError(
                f"MLflow run {self.run_id} is in experiment {stored_in!r}, not {experiment!r}; "
                "pass the right run_id or experiment"
            )
        self._stored_keys = set(run.data.metrics)
        self._client.update_run(self.run_id, status="RUNNING")
        stored = run.data.params
        changed = sorted(key for key in params.keys() & stored.keys() if params[key] != stored[key])
        if changed:
            message = f"MLflow run {self.run_id} keeps its stored values of params {changed} (params are immutable)"
            warnings.warn(message, stacklevel=3)
        return {key: value for key, value in params.items() if key not in stored}

    def log_corpus(self, *, name: str, fingerprint: str, source: str, kind: str, profile: dict,
                   context: str = "training") -> None:
        """The corpus a run read, as an MLflow dataset input (the run's Datasets in the UI): its name, content
        fingerprint, source, kind (MLflow's source type: "code" for the embedded corpus, "hugging_face", "local")
        and profile (tokens per split, bytes per token)."""
        from mlflow.entities import Dataset, DatasetInput, InputTag

        dataset = Dataset(name=name[:500], digest=fingerprint[:36], source_type=kind, source=source,
                          profile=json.dumps(profile))
        self._client.log_inputs(self.run_id, [DatasetInput(dataset, tags=[InputTag("mlflow.data.context", context)])])

    def _get_run(self):
        from mlflow.exceptions import MlflowException

        try:
            return self._client.get_run(self.run_id)
        except MlflowException as err:
            if err.error_code != "RESOURCE_DOES_NOT_EXIST":
                raise
            raise WindtunnelError(
                f"MLflow run {self.run_id} is not in {tracking_uri()}; start a new run (run_id=None) "
                "or point MLFLOW_TRACKING_URI / WINDTUNNEL_RESULTS at the store that holds it"
            ) from err

    def _log_entities(self, params: dict[str, str], tags: dict[str, str]) -> None:
        """Store params and tags, BATCH_PARAMS_TAGS entities per log_batch call."""
        from mlflow.entities import Param, RunTag

        entities = [Param(k, v) for k, v in params.items()] + [RunTag(k, v) for k, v in tags.items()]
        for start in range(0, len(entities), BATCH_PARAMS_TAGS):
            chunk = entities[start : start + BATCH_PARAMS_TAGS]
            self._client.log_batch(
                self.run_id,
                params=[e for e in chunk if isinstance(e, Param)],
                tags=[e for e in chunk if isinstance(e, RunTag)],
                synchronous=True,
            )

    def _max_step(self, key: str) -> float:
        """The highest step logged for `key`; read from the store once for keys a reopened run already holds."""
        if key not in self._last_step:
            history = self._client.get_metric_history(self.run_id, key) if key in self._stored_keys else []
            self._last_step[key] = max((m.step for m in history), default=float("-inf"))
        return self._last_step[key]

    def log(self, metrics: dict[str, float], step: int) -> None:
        """Buffer one point per metric at `step`, dropping steps already logged for a key; flush when full or stale."""
        step, now_ms = int(step), int(time.time() * 1000)
        for key, value in metrics.items():
            if step > self._max_step(key):
                self._last_step[key] = step
                self._buffer.append((key, float(value), now_ms, step))
        if len(self._buffer) >= FLUSH_POINTS or time.monotonic() - self._last_flush >= FLUSH_SECONDS:
            self.flush()

    def flush(self) -> None:
        """Send every buffered point, BATCH_METRICS per log_batch call; points stay buffered if a call fails."""
        from mlflow.entities import Metric

        while self._buffer:
            chunk = self._buffer[:BATCH_METRICS]
            self._client.log_batch(self.run_id, metrics=[Metric(*point) for point in chunk], synchronous=True)
            del self._buffer[: len(chunk)]
        self._last_flush = time.monotonic()

    def tag(self, tags: dict) -> None:
        """Set (or overwrite) tags of the run now."""
        self._log_entities({}, _strings(tags, TAG_CHARS))

    def finish(self, status: str, *, tag_status: str | None = None) -> None:
        """Flush, set tag `status` (windtunnel's status, default status.lower()) and end the run as `status`."""
        if status not in STATUSES:
            raise WindtunnelError(f"RunLogger.finish: status={status!r} is not allowed; allowed: {', '.join(STATUSES)}")
        self.flush()
        self._end(status, tag_status or status.lower())

    def _end(self, status: str, tag_status: str) -> None:
        self._stop_monitor()
        _terminate(self._client, self.run_id, status=status, tag_status=tag_status)
        self._finished = True

    def _stop_monitor(self) -> None:
        """Stop sampling; a run shorter than one interval gets one sample over its whole length."""
        monitor, self._monitor = self._monitor, None
        if monitor is None:
            return
        try:
            monitor.finish()  # wakes the sampling thread, joins it, sends what it recorded
            if monitor._logging_step == 0:  # nothing sent yet: the thread sends its first sample after an interval
                for part in monitor.monitors:
                    part.clear_metrics()  # psutil's first cpu_percent() is a meaningless 0.0
                monitor.collect_metrics()
                monitor.publish_metrics(monitor.aggregate_metrics())
                monitor.mlflow_logger.flush()
        except Exception as err:  # noqa: BLE001 - monitoring must never fail a run
            warnings.warn(f"MLflow run {self.run_id}: system metrics not stored ({one_line(err)})", stacklevel=3)

    def __enter__(self) -> RunLogger:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if self._finished:
            return
        if exc_type is None:
            self.finish("FINISHED")
            return
        killed = issubclass(exc_type, KeyboardInterrupt)
        try:
            self.flush()
        except Exception as err:  # the block's own error propagates; a logging error must not replace it
            lost = len(self._buffer)
            warnings.warn(f"MLflow run {self.run_id}: {lost} metric points not stored ({err})", stacklevel=2)
        self._end("KILLED" if killed else "FAILED", "interrupted" if killed else "failed")


_SYSTEM_METRICS_OFF: list[str] = []  # why system metrics are off in this process (warned once)


def _system_monitor(run_id: str, *, resume: bool):
    """mlflow's SystemMetricsMonitor for the run, started; None when switched off or when psutil is missing.

    Off when $MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING is set to false. Without psutil (a dependency; a lean image may
    lack it) training goes on without system metrics and one warning per process says how to get them back: a
    monitor is a nicety, a failed training run is not."""
    if os.environ.get("MLFLOW_ENABLE_SYSTEM_METRICS_LOGGING", "").strip().lower() in ("false", "0"):
        return None
    try:
        import psutil  # noqa: F401 - mlflow's CPU, disk and network monitors need it

        from mlflow.system_metrics.system_metrics_monitor import SystemMetricsMonitor
    except ImportError as err:
        if not _SYSTEM_METRICS_OFF:
            _SYSTEM_METRICS_OFF.append(str(err))
            warnings.warn(f"no MLflow system metrics: {err}; `pip install psutil` turns them on", stacklevel=4)
        return None
    logging.getLogger("mlflow.system_metrics").setLevel(logging.WARNING)  # not "Started monitoring" for every run
    monitor = SystemMetricsMonitor(run_id, sampling_interval=SYSTEM_SECONDS, resume_logging=resume,
                                   tracking_uri=tracking_uri())
    monitor.start()
    return monitor


def close_children(parent_run_id: str, *, status: str, tag_status: str) -> list[str]:
    """End the child runs of `parent_run_id` still RUNNING as `status`; return their ids.

    A driver calls it when it stops: a child still RUNNING then belongs to a task whose process was killed (Ctrl-C,
    Ray shutting its workers down, a worker lost to the OOM killer) and will never end its run itself."""
    if status not in STATUSES:
        raise WindtunnelError(f"close_children: status={status!r} is not allowed; allowed: {', '.join(STATUSES)}")
    client = _client()
    parent = client.get_run(parent_run_id)
    where = f"tags.`{PARENT_TAG}` = '{parent_run_id}' and attributes.status = 'RUNNING'"
    runs = _all_runs(client, parent.info.experiment_id, where)  # asked again one by one: a child may end meanwhile
    return [run.info.run_id for run in runs if end_if_running(run.info.run_id, status=status, tag_status=tag_status)]


def end_if_running(run_id: str, *, status: str, tag_status: str) -> bool:
    """End run `run_id` as `status` (tag status=`tag_status`) if it is still RUNNING; True when it was.
    For a driver whose worker was killed before it could end its own run."""
    client = _client()
    if client.get_run(run_id).info.status != "RUNNING":
        return False
    _terminate(client, run_id, status=status, tag_status=tag_status)
    return True


def _terminate(client, run_id: str, *, status: str, tag_status: str) -> None:
    """End a run as MLflow `status`, with windtunnel's reason in its tag `status` (what the fits read)."""
    client.set_tag(run_id, "status", tag_status)
    client.set_terminated(run_id, status=status)


def settle_runs(experiment: str, statuses: dict[str, str]) -> int:
    """Runs done on disk (windtunnel run id → finished | diverged, from status.json) whose MLflow run says
    otherwise — RUNNING or KILLED because the process died between writing its status and ending its run — end
    as the trainer would have ended them, so the fits do not leave them out. Returns how many were mended."""
    client = _client()
    experiment_id = _experiment_id(client, experiment, create=False)
    if experiment_id is None or not statuses:
        return 0
    mended = 0
    for run in _all_runs(client, experiment_id, "attributes.status != 'FINISHED'"):
        status = statuses.get(run.data.tags.get("windtunnel.run"))
        if status is None or run.data.tags.get("status") == status:
            continue
        _terminate(client, run.info.run_id, status="FINISHED" if status == "finished" else "FAILED", tag_status=status)
        mended += 1
    return mended


@contextlib.contextmanager
def ending_family(parent: RunLogger):
    """A driver's block: `parent` ends FAILED if the block raises, KILLED on Ctrl-C (the block itself finishes it
    otherwise). Either way its children still RUNNING on the way out are ended as well (close_children)."""
    try:
        with parent:
            yield parent
    except BaseException as err:
        killed = isinstance(err, KeyboardInterrupt)
        with contextlib.suppress(Exception):  # the block's own error is the one to report
            close_children(parent.run_id, status="KILLED" if killed else "FAILED",
                           tag_status="interrupted" if killed else "failed")
        raise
    close_children(parent.run_id, status="FAILED", tag_status="failed")


def log_outputs(paths, *, output: str, sweep: str | None = None, scale: str | None = None) -> str:
    """Log files (a fit.json and its figures, a plan, report.html) as MLflow artifacts in folder `output`/ of one
    run; returns that run's id. A folder in `paths` stands for the files in it. A rerun overwrites the same
    artifacts in the same run.

    With `sweep`: that sweep's parent run (experiment `sweep`, tag kind=sweep, at `scale` when given, the newest),
    beside the runs the files were fitted on. Otherwise, or when the store holds no such run, the run named `output`
    (" (scale)" added when given) of experiment windtunnel-outputs, created on first use and reused after.
    """
    from mlflow.exceptions import MlflowException

    files = [f for p in map(Path, paths) for f in (sorted(p.iterdir()) if p.is_dir() else [p]) if not f.is_dir()]
    if missing := [str(f) for f in files if not f.is_file()]:
        raise WindtunnelError(f"log_outputs: {', '.join(missing)} is not a file; pass files that exist")
    client = _client()
    run_id = _sweep_run(client, sweep, scale) if sweep else None
    own = run_id is None  # an output run of ours: its status says whether the last logging went through
    run_id = run_id or _output_run(client, output + (f" ({scale})" if scale else ""))
    try:
        for file in files:
            client.log_artifact(run_id, str(file), artifact_path=output)
    except (MlflowException, OSError) as err:
        if own:
            client.set_terminated(run_id, status="FAILED")
        raise WindtunnelError(f"{', '.join(str(f) for f in files)} written, but not logged to MLflow run {run_id} "
                              f"in {tracking_uri()}: {one_line(err)}") from err
    if own:
        client.set_terminated(run_id, status="FINISHED")
    return run_id


def _sweep_run(client, sweep: str, scale: str | None) -> str | None:
    """The id of the newest parent run of `sweep` (at `scale`), or None."""
    experiment_id = _experiment_id(client, sweep, create=False)
    if experiment_id is None:
        return None
    where = "tags.kind = 'sweep'" + (f" and tags.scale = '{scale}'" if scale else "")
    runs = client.search_runs([experiment_id], where, order_by=["attributes.start_time DESC"], max_results=1)
    return runs[0].info.run_id if runs else None


def _output_run(client, name: str) -> str:
    """The id of output run `name` in experiment windtunnel-outputs, created when missing."""
    experiment_id = _experiment_id(client, OUTPUTS_EXPERIMENT, create=True)
    where = f"tags.`{OUTPUT_TAG}` = '{name}'"
    runs = client.search_runs([experiment_id], where, order_by=["attributes.start_time DESC"], max_results=1)
    if runs:
        return runs[0].info.run_id
    return client.create_run(experiment_id, tags={OUTPUT_TAG: name, "kind": "outputs"}, run_name=name).info.run_id


def _all_runs(client, experiment_id: str, where: str = "") -> list:
    """Every live run of the experiment (that matches `where`), oldest first, paging through search_runs (1000 runs
    a page)."""
    runs, token = [], None
    while True:
        page = client.search_runs(
            [experiment_id], where, max_results=1000, order_by=["attributes.start_time ASC"], page_token=token
        )
        runs.extend(page)
        token = page.token
        if not token:
            return runs


def _run_row(run) -> dict:
    tags = run.data.tags
    row = {
        "run_id": run.info.run_id,
        "run_name": run.info.run_name,
        "status": run.info.status,
        "start_time": run.info.start_time,  # ms since the epoch; made a UTC timestamp below
        "parent_run_id": tags.get(PARENT_TAG),
    }
    row |= {f"params.{k}": v for k, v in run.data.params.items()}
    row |= {f"tags.{k}": v for k, v in tags.items()}
    return row | {f"metrics.{k}": v for k, v in run.data.metrics.items()}  # latest value: that of the highest step


def runs_dataframe(*, experiment: str) -> pd.DataFrame:
    """One row per run of `experiment`: BASE_COLUMNS, then params.*, tags.*, metrics.* (latest values) in name order.

    Empty, with BASE_COLUMNS only, when the experiment does not exist.
    """
    import pandas as pd

    client = _client()
    experiment_id = _experiment_id(client, experiment, create=False)
    rows = [_run_row(run) for run in _all_runs(client, experiment_id)] if experiment_id else []
    frame = pd.DataFrame(rows, columns=None if rows else BASE_COLUMNS)
    extra = [c for prefix in ("params.", "tags.", "metrics.") for c in sorted(frame.columns) if c.startswith(prefix)]
    frame = frame[BASE_COLUMNS + extra]
    frame["start_time"] = pd.to_datetime(frame["start_time"], unit="ms", utc=True)
    return frame


def metric_history(run_id: str, key: str) -> pd.DataFrame:
    """Every stored point of metric `key` of a run: columns step (int64), value (float64), sorted by step."""
    import pandas as pd

    points = sorted(_client().get_metric_history(run_id, key), key=lambda m: (m.step, m.timestamp))  # MLflow pages
    steps = pd.Series([m.step for m in points], dtype="int64")
    return pd.DataFrame({"step": steps, "value": pd.Series([m.value for m in points], dtype="float64")})


def metric_keys(run_id: str, prefix: str = "") -> list[str]:
    """The names of a run's metrics that start with `prefix`, sorted."""
    return sorted(k for k in _client().get_run(run_id).data.metrics if k.startswith(prefix))


def start_ui_server(*, port: int, stdout=None) -> subprocess.Popen:
    """Start `mlflow server` on tracking_uri(), bound to 127.0.0.1:PORT only, in its own process group
    (stop it with `stop_ui_server`)."""
    uri = tracking_uri()
    if uri.startswith(("http://", "https://", "databricks")):
        raise WindtunnelError(
            f"MLFLOW_TRACKING_URI={uri} is already a tracking server: open it in a browser, "
            f"or unset MLFLOW_TRACKING_URI to serve {results_dir()}"
        )
    command = [
        sys.executable, "-m", "mlflow", "server",
        "--backend-store-uri", uri,
        "--host", "127.0.0.1",  # loopback only; MLflow's default host check then allows just localhost names
        "--port", str(port),
        "--workers", "1",  # one reader is plenty for a local UI; the default 4 slows start-up on 2 cores
        "--artifacts-destination", str(results_dir() / "mlartifacts"),
    ]  # fmt: skip
    # The job runner (GenAI jobs, a pool of huey processes) is unused here and outlives `mlflow server` on SIGTERM.
    env = os.environ | {"MLFLOW_SERVER_ENABLE_JOB_EXECUTION": "false"}
    return subprocess.Popen(command, env=env, stdout=stdout, stderr=subprocess.STDOUT if stdout else None,
                            start_new_session=True)  # own process group: stopped as a whole


def serve_ui(*, port: int = 5000) -> None:
    """Serve the MLflow UI of tracking_uri() on http://127.0.0.1:PORT only; block until Ctrl-C or SIGTERM."""
    server = start_ui_server(port=port)
    print(f"MLflow UI: http://127.0.0.1:{port}  (store {tracking_uri()}; Ctrl-C to stop)", flush=True)
    _wait_then_stop(server, port)


def _raise_interrupt(signum, frame):
    raise KeyboardInterrupt


def _wait_then_stop(server: subprocess.Popen, port: int) -> None:
    """Wait for the server; on Ctrl-C or SIGTERM stop its whole process group (mlflow server + uvicorn)."""
    previous = signal.signal(signal.SIGTERM, _raise_interrupt)
    try:
        code = server.wait()
    except KeyboardInterrupt:
        code = 0
    finally:
        signal.signal(signal.SIGTERM, previous)
        stop_ui_server(server)
    if code != 0:
        raise WindtunnelError(f"mlflow server exited with code {code}; if port {port} is in use, pick another port")


def stop_ui_server(server: subprocess.Popen) -> None:
    """Stop the server's whole process group (mlflow server + uvicorn): SIGTERM, then SIGKILL."""
    for sig, wait_s in ((signal.SIGTERM, 15), (signal.SIGKILL, 5)):
        try:
            os.killpg(server.pid, sig)
        except ProcessLookupError:  # the group is already gone
            return
        try:
            server.wait(wait_s)
            return
        except subprocess.TimeoutExpired:
            continue
