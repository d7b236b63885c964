"""µP search: bad search files (keys and every numeric field) fail before anything runs; a tiny search runs
end to end on Ray Tune with Optuna's TPE and ASHA, writes best.yaml and the plots, logs MLflow child runs;
the Optuna study is stored in the search's folder and a larger `trials` continues it without retraining;
a diverged trial is failed, never the best; a SIGKILLed search resumes the same stored study."""

import json
import math
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from windtunnel import tracking
from windtunnel.config import TrainSpec, apply_overrides, get_model
from windtunnel.errors import SpecError
from windtunnel.paths import results_dir
from windtunnel.report import write_report
from windtunnel.search import load_search, run_search

ROOT = Path(__file__).resolve().parents[1]
# micro-24k on 20K tokens (10 steps of 2048), evaluated at steps 3, 6, 9, 10. With seed 3 and 4 random
# startup trials, trials 0-3 get lr 1.7, 0.085, 87, 0.052 whatever the timing; lr 87 diverges at step 2,
# before its first evaluation, so ASHA cannot stop it first
SEARCH = """
name: {name}
seed: 3
startup_trials: 4
space:
  lr: {{low: 0.003, high: 300, log: true}}
  model.scale_emb: {{low: 2, high: 20, log: true}}
asha: {{grace_evals: 1, reduction_factor: 2}}
base: {{batch_tokens: 2048, seq_len: 64, eval_every: 3, checkpoint_every: 5, data: {{eval_tokens: 2048}},
        schedule: {{kind: cosine, warmup_tokens: 4096}}}}
scales:
  micro: {{model: micro-24k, tokens: {tokens}, trials: {trials}, concurrency: {concurrency}}}
"""


def write(tmp_path, name="tiny", *, tokens=20480, trials=4, concurrency=2, text=None) -> Path:
    path = tmp_path / f"{name}.yaml"
    path.write_text(text or SEARCH.format(name=name, tokens=tokens, trials=trials, concurrency=concurrency))
    return path


# ---------------------------------------------------------------- validation, before anything runs


def test_the_shipped_search_loads_at_both_scales():
    micro = load_search(ROOT / "sweeps/mup_search.yaml", scale="micro")
    assert micro.template.model.name == "micro-53k" and micro.template.tokens == 130 * 4096  # 10 N, whole steps
    assert {p.name for p in micro.space} >= {"lr", "model.scale_emb", "model.scale_depth", "model.init_std"}
    assert all(p.log for p in micro.space)
    assert load_search(ROOT / "sweeps/mup_search.yaml", scale="paper").template.model.name == "9M"


BAD = [  # (replace this, with that) in SEARCH → expected key and words of the message
    ("lr: {low: 0.003, high: 300, log: true}", "lr: {low: 0.1, high: 0.01}", "space.lr.low", "less than high=0.01"),
    ("lr: {low: 0.003, high: 300, log: true}", "lr: {low: 0, high: 0.1, log: true}", "space.lr.low",
     "> 0 on a log scale"),
    ("model.scale_emb:", "model.scale_embed:", "space.model.scale_embed", "searchable keys: lr"),
    ("model.scale_emb:", "model.d_model:", "space.model.d_model", "searchable keys"),
    ("300, log: true}", "300, lg: true}", "space.lr.lg", "known keys: name, low, high, log"),
    ("seed: 3", "sed: 3", "sed", "known keys: name, description"),
    ("objective", "objective", "objective", "one of 'bpb', 'loss'"),  # see below: objective added
    ("model: micro-24k", "model: micro-99k", "scales.micro.model", "known models: "),
    ("asha: {grace_evals: 1,", "asha: {grace_evals: 0,", "asha.grace_evals", "an integer ≥ 1"),
    ("lr: {low: 0.003, high: 300, log: true}", "schedule.warmup_tokens: {low: 4096, high: 409600}",
     "space.schedule.warmup_tokens.high", "at most the run's tokens"),
    ("high: 300,", "high: .inf,", "space.lr.high", "a finite number"),
    ("low: 0.003,", "low: .nan,", "space.lr.low", "a finite number"),
    ("seed: 3", "seed: -1", "seed", "an integer in [0, 4294967296)"),
    ("startup_trials: 4", "startup_trials: -2", "startup_trials", "an integer ≥ 0"),
    ("trials: 2,", "trials: 0,", "scales.micro.trials", "an integer ≥ 1"),
    ("concurrency: 1}", "concurrency: 0}", "scales.micro.concurrency", "an integer ≥ 1"),
    ("tokens: 20480,", "tokens: 0,", "scales.micro.tokens", "an integer ≥ 1"),
    ("tokens: 20480,", "tokens_per_param: -5,", "scales.micro.tokens_per_param", "a finite number > 0"),
    ("tokens: 20480,", "tokens_per_param: .nan,", "scales.micro.tokens_per_param", "a finite number > 0"),
    ("reduction_factor: 2}", "reduction_factor: 1}", "asha.reduction_factor", "a finite number > 1"),
    ("grace_evals: 1,", "grace_evals: 5,", "asha.grace_evals", "at most the 4 evaluations of a trial"),
]


@pytest.mark.parametrize("old,new,key,words", BAD, ids=[b[2] for b in BAD])
def test_bad_search_files_raise_spec_error_naming_file_key_and_allowed(tmp_path, old, new, key, words):
    text = SEARCH.format(name="bad", tokens=20480, trials=2, concurrency=1)
    text = text.replace("seed: 3", "seed: 3\nobjective: bits") if key == "objective" else text.replace(old, new)
    path = write(tmp_path, text=text)
    with pytest.raises(SpecError) as err:
        load_search(path)
    assert err.value.key == key and str(path) in str(err.value) and words in str(err.value), str(err.value)


@pytest.mark.parametrize("trials", [0, -3])
def test_a_trial_count_below_one_is_refused_before_anything_runs(tmp_path, trials):
    with pytest.raises(SpecError, match=r"--trials=%d is not allowed; an integer ≥ 1" % trials):
        run_search(load_search(write(tmp_path, "refused")), trials=trials, progress=False)
    assert not (results_dir() / "search" / "refused-micro").exists()


def test_a_folder_of_a_search_without_a_stored_study_is_refused(tmp_path):
    from windtunnel.errors import WindtunnelError

    (results_dir() / "search" / "old-micro" / "round-0").mkdir(parents=True)
    with pytest.raises(WindtunnelError, match="before searches stored their Optuna study"):
        run_search(load_search(write(tmp_path, "old")), progress=False)


def test_unknown_scale_names_the_scales_defined(tmp_path):
    with pytest.raises(SpecError, match="scales defined here: micro"):
        load_search(write(tmp_path), scale="paper")


# ---------------------------------------------------------------- the stored study, without Tune


def test_the_searcher_stores_each_trials_state_value_and_reason(tmp_path):
    """What Tune tells the searcher → the stored trial: finished → COMPLETE; diverged → COMPLETE with the
    penalty (TPE learns from it) and status diverged; stopped by ASHA → PRUNED at its last report; raised →
    FAIL. A second searcher on the storage continues the numbering; a copy restored from before a trial
    ended (a kill) leaves the stored outcome alone; a trial asked and never told is failed at the end."""
    import pickle

    from optuna.trial import TrialState

    from windtunnel.search import DIVERGED
    from windtunnel.search.study import StoredSearch, close_lost, distributions, load, plot_view, storage

    spec, folder = load_search(write(tmp_path)), tmp_path / "tiny-micro"
    folder.mkdir()

    def searcher():
        return StoredSearch(space=distributions(spec), metric="objective", mode="min", storage=storage(folder),
                            study_name=folder.name)

    first = searcher()
    for trial_id in "abcde":
        first.suggest(trial_id)
        first.on_trial_result(trial_id, {"objective": 4.0, "training_iteration": 1})
    last = {"training_iteration": 2, "evals": 2, "run": "r"}
    first.on_trial_complete("a", {**last, "objective": 3.5, "status": "finished", "reason": ""})
    first.on_trial_complete("b", {**last, "objective": DIVERGED, "status": "diverged", "reason": "diverged at 7"})
    first.on_trial_complete("c", {**last, "objective": 3.9, "status": "running", "reason": ""})
    first.on_trial_complete("d", None, error=True)
    before_e = pickle.loads(pickle.dumps(first))  # Tune's checkpoint, then a kill after trial e ended
    first.on_trial_complete("e", {**last, "objective": 3.7, "status": "finished", "reason": ""})
    before_e.on_trial_result("e", {"objective": 3.8, "training_iteration": 2})  # e trained again after resume
    before_e.on_trial_complete("e", {**last, "objective": 3.8, "status": "finished", "reason": ""})
    second = searcher()
    second.suggest("f")  # asked, then lost with the driver
    assert close_lost(load(folder)) == 1
    trials = load(folder).trials
    assert [(t.number, t.state, t.value) for t in trials] == [
        (0, TrialState.COMPLETE, 3.5), (1, TrialState.COMPLETE, DIVERGED), (2, TrialState.PRUNED, 3.9),
        (3, TrialState.FAIL, None), (4, TrialState.COMPLETE, 3.7), (5, TrialState.FAIL, None)]
    assert [t.user_attrs["status"] for t in trials] == ["complete", "diverged", "pruned", "failed", "complete",
                                                       "failed"]
    assert trials[1].user_attrs["reason"] == "diverged at 7" and "lost" in trials[5].user_attrs["reason"]
    assert trials[0].intermediate_values == {1: 4.0, 2: 3.5} and trials[2].intermediate_values == {1: 4.0, 2: 3.9}
    assert trials[0].user_attrs["run"] == "r" and trials[0].user_attrs["evals"] == 2
    assert [t.state for t in plot_view(load(folder)).trials][:2] == [TrialState.COMPLETE, TrialState.FAIL]


# ---------------------------------------------------------------- searching


@pytest.fixture(scope="module")
def ray_cluster():
    import ray

    ray.init(num_cpus=2, include_dashboard=False, log_to_driver=False, configure_logging=False)
    yield
    ray.shutdown()


def status_mtimes(result) -> dict[str, float]:
    runs = results_dir() / "runs"
    return {t.run_id: (runs / t.run_id / "status.json").stat().st_mtime for t in result.trials}


@pytest.fixture(scope="module")
def searched(ray_cluster, tmp_path_factory):
    """The tiny search run with trials=2, then extended to trials=4 in the same folder."""
    path = write(tmp_path_factory.mktemp("search"))
    first = run_search(load_search(path), trials=2, progress=False)
    before = status_mtimes(first)
    second = run_search(load_search(path), trials=4, progress=False)
    return first, before, second


def test_search_runs_end_to_end_and_writes_best_yaml_and_plots(searched):
    _, _, result = searched
    assert result.n_trials == 4 and result.n_complete + result.n_pruned + result.n_failed == 4
    assert result.n_complete >= 1 and result.best_value is not None
    assert {p.name for p in result.plots} == {"history.png", "importances.png", "slice.png"}
    best = yaml.safe_load(result.best_yaml.read_text())
    assert best == {"lr": result.best_params["lr"], "model": {"scale_emb": result.best_params["model.scale_emb"]}}
    assert (result.folder.parent / "best.yaml").read_text() == result.best_yaml.read_text()
    spec = apply_overrides(TrainSpec(model=get_model("micro-53k")), best, source="best.yaml")  # as --set-file does
    assert spec.lr == best["lr"] and spec.model.scale_emb == best["model"]["scale_emb"]
    summary = json.loads((result.folder / "summary.json").read_text())
    assert summary["n_trials"] == 4 and summary["best_value"] == result.best_value
    frame = tracking.runs_dataframe(experiment="tiny")  # one parent run, a child per trial
    parent = frame[frame["tags.kind"] == "search"]
    children = frame[frame["tags.kind"] == "trial"]
    assert len(parent) == 1 and len(children) == 4
    assert set(children["parent_run_id"]) == {parent.iloc[0]["run_id"]}
    assert parent.iloc[0]["metrics.best/objective"] == pytest.approx(result.best_value)
    page = write_report().read_text()  # the report shows the search with its best values and optuna's plots
    assert "µP hyper-parameter search tiny" in page and page.count("data:image/png") >= 3
    statuses = dict(zip(children["tags.windtunnel.run"], children["tags.status"]))
    for trial in result.trials:
        expected = {"complete": "finished", "pruned": "pruned"}.get(trial.status, "diverged")
        assert statuses[trial.run_id] == expected, trial


def test_more_trials_continue_the_same_study_without_retraining(searched):
    first, before, second = searched
    assert first.n_trials == 2 and [t.number for t in second.trials] == [0, 1, 2, 3]
    assert second.trials[:2] == first.trials  # the first two are read back, not trained again
    after = status_mtimes(second)
    assert {k: after[k] for k in before} == before  # their run dirs were not touched


def stored_study(folder: Path):
    import optuna
    from optuna.storages import JournalStorage
    from optuna.storages.journal import JournalFileBackend

    storage = JournalStorage(JournalFileBackend(str(folder / "study.journal")))
    assert optuna.get_all_study_names(storage) == [folder.name]  # one study, named <name>-<scale>
    return optuna.load_study(study_name=folder.name, storage=storage)


def test_the_study_is_stored_and_an_extension_continues_it(searched):
    """Both rounds asked one stored study: trial numbers 0-3 once each, with the states, values, intermediate
    values and runs of the search's outcomes (a diverged trial: COMPLETE with the penalty, for TPE)."""
    from optuna.trial import TrialState

    from windtunnel.search import DIVERGED
    from windtunnel.search.spec import rounded

    first, _, result = searched
    trials = stored_study(result.folder).trials
    assert [t.number for t in trials] == [0, 1, 2, 3]
    assert [t.user_attrs["run"] for t in trials] == [t.run_id for t in result.trials]
    assert [t.user_attrs["run"] for t in trials[:2]] == [t.run_id for t in first.trials]  # asked in round 0
    for stored, mine in zip(trials, result.trials):
        assert {k: rounded(v) for k, v in stored.params.items()} == mine.params
        if mine.status == "complete":
            assert stored.state == TrialState.COMPLETE and stored.value == pytest.approx(mine.value)
        elif mine.status == "pruned":
            assert stored.state == TrialState.PRUNED and stored.value == pytest.approx(mine.value)
            assert stored.user_attrs["status"] == "pruned"
        elif "diverged" in mine.reason:
            assert stored.state == TrialState.COMPLETE and stored.value == DIVERGED
            assert stored.user_attrs == {**stored.user_attrs, "status": "diverged", "reason": mine.reason}
        else:
            assert stored.state == TrialState.FAIL
        if mine.status != "failed":  # Tune reports one value per evaluation (step = report number)
            assert sorted(stored.intermediate_values.values()) == pytest.approx(sorted(mine.intermediate.values()))
    summary = json.loads((result.folder / "summary.json").read_text())
    assert summary["storage"] == str(result.folder / "study.journal") and summary["study"] == "tiny-micro"


@pytest.fixture(scope="module")  # module scope: set up (or skip) before the module's `searched`
def dashboard() -> str:
    """The optuna-dashboard command (skips the test where it is not installed: `make optuna-dashboard`
    installs it into .venv on first use)."""
    import shutil

    exe = shutil.which("optuna-dashboard", path=os.pathsep.join([str(Path(sys.executable).parent),
                                                                 os.environ.get("PATH", "")]))
    if exe is None:
        pytest.skip("optuna-dashboard is not installed")
    return exe


def test_optuna_dashboard_serves_the_stored_study(dashboard, searched):
    """What `make optuna-dashboard` runs, on the stored study."""
    import socket

    _, _, result = searched
    with socket.socket() as probe:  # a free port
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    proc = subprocess.Popen([dashboard, "--host", "127.0.0.1", "--port", str(port), "--storage-class", "JournalFileStorage",
                             str(result.folder / "study.journal")], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        studies = _get_json(f"http://127.0.0.1:{port}/api/studies", deadline=time.time() + 60)["study_summaries"]
        assert [s["study_name"] for s in studies] == ["tiny-micro"]
        study = _get_json(f"http://127.0.0.1:{port}/api/studies/{studies[0]['study_id']}", deadline=time.time() + 10)
    finally:
        proc.terminate()
        proc.wait(timeout=10)
    assert [t["number"] for t in study["trials"]] == [0, 1, 2, 3]
    assert {t["state"] for t in study["trials"]} <= {"Complete", "Pruned", "Fail"}


def _get_json(url: str, *, deadline: float) -> dict:
    import urllib.error
    import urllib.request

    while True:
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return json.loads(response.read())
        except (urllib.error.URLError, ConnectionError):
            if time.time() > deadline:
                raise
            time.sleep(0.2)


def test_a_diverged_trial_is_failed_with_a_reason_and_never_best(searched):
    _, _, result = searched
    diverged = [t for t in result.trials if "diverged" in t.reason]
    assert any(t.params["lr"] > 50 for t in diverged)  # lr 87: diverged before ASHA saw it
    assert all(t.status == "failed" and t.value is None for t in diverged)
    assert result.best_run not in {t.run_id for t in diverged}
    complete = [t.value for t in result.trials if t.status == "complete"]
    assert result.best_value == min(complete) and all(math.isfinite(v) for v in complete)


@pytest.mark.slow
def test_sigkill_of_the_search_then_the_same_call_resumes_it(ray_cluster, tmp_path):
    path = write(tmp_path, "killed", tokens=40960, trials=4, concurrency=1)
    folder = results_dir() / "search" / "killed-micro"
    code = f"from windtunnel.search import *; run_search(load_search({str(path)!r}), num_cpus=1, progress=False)"
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, stdout=subprocess.DEVNULL,
                            stderr=subprocess.DEVNULL, env={**os.environ, "TUNE_GLOBAL_CHECKPOINT_S": "0.5"})
    deadline = time.time() + 180
    while time.time() < deadline and not (list(folder.glob("round-0/experiment_state-*.json")) and any(
            '"finished"' in p.read_text() for p in folder.glob("round-0/trial-*/result.json"))):
        time.sleep(0.1)
    os.kill(proc.pid, signal.SIGKILL)
    proc.wait()
    done = [p for p in folder.glob("round-0/trial-*/result.json") if '"finished"' in p.read_text()]
    assert 0 < len(done) < 4, "killed too early or too late to test resume"
    runs = results_dir() / "runs"
    finished = {p.name: (p / "status.json").stat().st_mtime for p in runs.iterdir()
                if (p / "status.json").exists() and '"finished"' in (p / "status.json").read_text()}
    time.sleep(2)  # let Ray's reaper stop the killed driver's workers
    result = run_search(load_search(path), progress=False)
    assert result.n_trials == 4 and not (folder / "round-1").exists()  # the same Tune experiment, restored
    for run_id, mtime in finished.items():
        assert (runs / run_id / "status.json").stat().st_mtime == mtime  # not trained again
    stored = stored_study(folder).trials  # the same stored study, nothing left RUNNING by the kill
    assert all(t.state.is_finished() for t in stored)
    assert {t.run_id for t in result.trials} <= {t.user_attrs.get("run") for t in stored}
