"""windtunnel launch: data-parallel equivalence, batch warm-up, the layout and its refusals, a launch on Ray Train
from a plan, and a killed worker whose group restarts from the checkpoint."""

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch.multiprocessing as mp
import yaml

from tests.conftest import tiny_spec
from windtunnel import tracking
from windtunnel.config import apply_overrides
from windtunnel.errors import WindtunnelError
from windtunnel.launch import layout, plan_spec
from windtunnel.schedules import make_schedule
from windtunnel.train import checkpoint_path, read_status, total_steps, train

ROOT = Path(__file__).resolve().parents[1]


def _store(tmp_path: Path, name: str) -> str:
    """A file rendezvous for one process group: no TCP store server whose thread rank 0 takes down at exit
    (a TCP store once aborted rank 1 at teardown, "terminate called without an active exception")."""
    return f"file://{tmp_path / name}"


def _ddp_worker(rank: int, workers: int, store: str, folder: str, overrides: list[str], out: str) -> None:
    import torch
    import torch.distributed as dist

    torch.set_num_threads(1)
    dist.init_process_group("gloo", init_method=store, rank=rank, world_size=workers)
    try:
        losses = {}
        train(tiny_spec(*overrides), Path(folder), log=lambda m, step: losses.__setitem__(step, m["train/loss"]))
        Path(f"{out}.{rank}").write_text(json.dumps(losses))
        dist.barrier()  # both done before either tears the group down
    finally:
        dist.destroy_process_group()


def _losses(path: str) -> list[float]:
    return list(json.loads(Path(path).read_text()).values())


def test_two_gloo_workers_match_one_process_with_the_same_global_batch(tmp_path):
    """2 workers × micro-batch 512 × 2 accumulation against one process taking the 2048-token batch at once."""
    common = ["tokens=12288", "compile=false", "eval_every=1000", "checkpoint_every=1000"]
    single = tmp_path / "single.json"
    losses = {}
    train(tiny_spec(*common), tmp_path / "one", log=lambda m, step: losses.__setitem__(step, m["train/loss"]))
    single.write_text(json.dumps(losses))
    out = str(tmp_path / "ddp.json")
    args = (2, _store(tmp_path, "store"), str(tmp_path / "two"), common + ["micro_batch_tokens=512"], out)
    mp.spawn(_ddp_worker, args=args, nprocs=2, join=True)
    one, two, other_rank = _losses(str(single)), _losses(out + ".0"), _losses(out + ".1")
    assert len(one) == len(two) == 6 and other_rank == []  # rank 1 logs nothing
    assert max(abs(a - b) for a, b in zip(one, two)) < 1e-4, (one, two)
    assert one[-1] < one[0] - 0.1  # it trained
    assert read_status(tmp_path / "two")["result"]["tokens"] == 12288


def test_fsdp_workers_match_one_process_and_resume_from_their_sharded_checkpoint(tmp_path):
    """FSDP2 over 2 gloo workers, 2 micro-batches each: the same losses as one process; killed after step 6
    (its status and last checkpoint removed), it resumes from the sharded step_3.dcp and repeats steps 4-6."""
    import shutil

    common = ["tokens=12288", "compile=false", "eval_every=1000", "checkpoint_every=1000", "checkpoint_steps=[3]"]
    losses = {}
    train(tiny_spec(*common), tmp_path / "one", log=lambda m, step: losses.__setitem__(step, m["train/loss"]))
    out = str(tmp_path / "fsdp.json")
    args = (2, _store(tmp_path, "store"), str(tmp_path / "two"), common + ["micro_batch_tokens=512", "parallel=fsdp"], out)
    mp.spawn(_ddp_worker, args=args, nprocs=2, join=True)
    sharded = _losses(out + ".0")
    assert max(abs(a - b) for a, b in zip(losses.values(), sharded)) < 1e-4, (losses, sharded)
    folder = tmp_path / "two" / "checkpoints"
    kept = ["step_00000003.dcp", "step_00000005.dcp", "step_00000006.dcp"]  # asked for, the decay start, the end
    assert sorted(p.name for p in folder.iterdir()) == kept
    assert (folder / "step_00000003.dcp" / "rank1.pt").is_file()
    shutil.rmtree(folder / "step_00000006.dcp")
    shutil.rmtree(folder / "step_00000005.dcp")
    (tmp_path / "two" / "status.json").unlink()
    mp.spawn(_ddp_worker, args=args[:1] + (_store(tmp_path, "store2"),) + args[2:], nprocs=2, join=True)
    resumed = _losses(out + ".0")
    assert resumed == pytest.approx(sharded[3:], abs=1e-6)


def test_a_ddp_checkpoint_resumes_on_one_worker_and_as_fsdp(tmp_path):
    """Checkpoints are torch.distributed.checkpoint folders keyed by parameter name: 2 gloo DDP workers' step-3
    checkpoint resumes in one process and as FSDP on 2 workers, and both repeat steps 4-6 of the unbroken run."""
    import shutil

    common = ["tokens=12288", "compile=false", "eval_every=1000", "checkpoint_every=1000", "checkpoint_steps=[3]",
              "micro_batch_tokens=512"]
    out = str(tmp_path / "ddp.json")
    mp.spawn(_ddp_worker, args=(2, _store(tmp_path, "s1"), str(tmp_path / "ddp"), common, out), nprocs=2, join=True)
    unbroken = _losses(out + ".0")
    for step in (5, 6):
        shutil.rmtree(tmp_path / "ddp" / "checkpoints" / f"step_{step:08d}.dcp")
    (tmp_path / "ddp" / "status.json").unlink()
    shutil.copytree(tmp_path / "ddp", tmp_path / "one")
    shutil.copytree(tmp_path / "ddp", tmp_path / "fsdp")
    losses = {}
    train(tiny_spec(*common), tmp_path / "one", log=lambda m, step: losses.__setitem__(step, m["train/loss"]))
    assert list(losses) == [4, 5, 6] and list(losses.values()) == pytest.approx(unbroken[3:], abs=1e-4)
    out = str(tmp_path / "fsdp.json")
    mp.spawn(_ddp_worker, args=(2, _store(tmp_path, "s2"), str(tmp_path / "fsdp"), common + ["parallel=fsdp"], out),
             nprocs=2, join=True)
    assert _losses(out + ".0") == pytest.approx(unbroken[3:], abs=1e-4)


def test_batch_warm_up_changes_only_the_accumulation_and_the_lr_follows_tokens(tmp_path):
    spec = tiny_spec("tokens=16384", "compile=false", "micro_batch_tokens=1024", "eval_every=1000",
                     "batch_warmup=[[0, 1024], [5000, 2048]]", "schedule.warmup_tokens=2048")
    assert total_steps(spec) == 5 + 6  # 5 × 1024 reach 5120 ≥ 5000, then 2048 until 16384
    seen = []
    result = train(spec, tmp_path / "run", log=lambda m, step: seen.append((m["batch_tokens"], m["lr"], m["tokens"])))
    assert [b for b, _, _ in seen] == [1024] * 5 + [2048] * 6 and result.tokens == 5 * 1024 + 6 * 2048
    lr_at = make_schedule(spec.schedule, lr=spec.lr, total_steps=16384, batch_tokens=1)
    before = [0] + [t for _, _, t in seen[:-1]]
    assert [lr for _, lr, _ in seen] == pytest.approx([lr_at(t) for t in before])


def test_bad_warm_up_and_indivisible_batches_are_refused_in_one_line():
    with pytest.raises(WindtunnelError, match="batch_warmup"):
        tiny_spec("batch_warmup=[[100, 1024]]")  # must start at 0
    spec = tiny_spec("batch_warmup=[[0, 1024], [5000, 2048]]")
    with pytest.raises(WindtunnelError, match="cannot be split over 3 workers"):
        layout(spec, workers=3, gpus_per_worker=0)
    with pytest.raises(WindtunnelError, match="exceeds"):
        layout(spec, workers=1, gpus_per_worker=0, device_memory=1e3)


def test_dry_run_of_the_full_models_on_8_gpus_of_80_gb():
    """minicpm-1.2b's replicated state (16 bytes a parameter) leaves room for activations; 2.4b's does not."""
    from windtunnel.config import TrainSpec, get_model

    for name, strategy in (("minicpm-1.2b", "ddp"), ("minicpm-2.4b", "fsdp")):
        spec = apply_overrides(TrainSpec(model=get_model(name)),
                               ["seq_len=4096", "batch_tokens=4194304", "tokens=1.1e12", "dtype=bf16"])
        out = layout(spec, workers=8, gpus_per_worker=1)
        assert out["strategy"] == strategy, name
        assert out["memory_per_worker_bytes"] <= 80e9
        assert out["micro_batch_tokens"] * out["grad_accum"] * 8 == 4194304
        assert 1e3 < out["expected_hours"] < 1e5


PLAN = {
    "target": "micro-24k", "status": "complete", "gaps": [], "n_params": 50000,
    "train": {"seq_len": 64, "tokens": 12288, "batch_tokens": 2048, "batch_warmup": [[0, 1024], [4096, 2048]],
              "lr": 0.02, "model": {"parametrization": "mup", "d_base": 32},
              "schedule": {"kind": "wsd", "warmup_tokens": 1024, "decay_start_tokens": 10240, "decay_shape": "exp"}},
    "predicted_loss": {"value": 3.0, "interval95": [2.5, 3.5]},
    "predicted_curve": {"tokens": [2048, 12288], "loss": [4.0, 3.0], "low": [2.0, 1.5], "high": [8.0, 6.0]},
    "sources": {},
}
HOW = ["--set", "eval_every=4", "--set", "checkpoint_every=3", "--set", "data.eval_tokens=2048"]


def test_plan_spec_refuses_what_the_plan_gives_and_an_unfilled_gap():
    with pytest.raises(WindtunnelError, match="the plan gives that value"):
        plan_spec(PLAN, source="p.yaml", given=["lr=0.1"])
    train = {k: v for k, v in PLAN["train"].items() if k not in ("batch_tokens", "batch_warmup")}
    gappy = {**PLAN, "gaps": ["batch size: too uncertain"], "train": train}
    with pytest.raises(WindtunnelError, match=r"incomplete \(batch size: too uncertain\); p.yaml: --set batch_tokens=\.\.\."):
        plan_spec(gappy, source="p.yaml")
    spec, keys = plan_spec(gappy, source="p.yaml", given=["batch_tokens=2048", "eval_every=5"])
    assert keys == {"batch_tokens", "eval_every"} and spec.model.d_base == 32 and spec.lr == 0.02


def test_stop_off_prediction_needs_the_plans_curve(tmp_path):
    from windtunnel.launch import launch

    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump({k: v for k, v in PLAN.items() if k != "predicted_curve"}))
    with pytest.raises(WindtunnelError, match="--stop-off-prediction needs the plan's predicted_curve, which it lacks"):
        launch(plan, dry_run=True, stop_off_prediction=True)
    with pytest.raises(WindtunnelError, match="launch: --k 0 is not allowed; an integer ≥ 1"):
        launch(plan, dry_run=True, k=0)
    assert launch(plan, dry_run=True)["target"] == "micro-24k"   # without the flag: no curve, no live check


def test_a_plan_without_tokens_or_prediction_launches_with_what_set_gives():
    """A plan beyond the law (no tokens, no predicted loss) is filled by --set tokens, whose WSD schedule follows the
    plan's rule, and launches only with --no-prediction."""
    from windtunnel.plan import wsd_schedule

    rule = {"warmup_fraction": 0.01, "decay_fraction": 0.1}
    train = {k: v for k, v in PLAN["train"].items() if k not in ("tokens", "schedule", "batch_warmup")}
    bare = {**PLAN, "gaps": ["tokens: no usable scaling-law fit", "predicted loss: needs a token budget"],
            "train": train, "predicted_loss": None, "schedule_rule": rule}
    with pytest.raises(WindtunnelError, match=r"--set tokens=\.\.\. fills what it left out"):
        plan_spec(bare, source="p.yaml", no_prediction=True)
    with pytest.raises(WindtunnelError, match="predicts no loss .*--no-prediction launches it"):
        plan_spec(bare, source="p.yaml", given=["tokens=22528"])
    spec, keys = plan_spec(bare, source="p.yaml", given=["tokens=22528"], no_prediction=True)
    assert keys == {"tokens"} and spec.tokens == 22528 and spec.lr == 0.02
    expected = wsd_schedule(22528, 2048, **rule)   # 11 steps: 10 stable, 1 decaying (10% of the stable stage)
    assert expected["decay_start_tokens"] == 20480
    assert (spec.schedule.kind, spec.schedule.warmup_tokens, spec.schedule.decay_start_tokens) == \
        ("wsd", expected["warmup_tokens"], 20480)


def test_one_device_per_worker_and_hours_in_the_runs_dtype():
    """NCCL cannot share a GPU between ranks and a worker trains on one device: fractions and several are refused in
    one line; the hours follow the dtype's peak."""
    from windtunnel.config import TrainSpec, get_model

    spec = apply_overrides(TrainSpec(model=get_model("minicpm-1.2b")),
                           ["seq_len=4096", "batch_tokens=4194304", "tokens=1e11", "dtype=bf16"])
    with pytest.raises(WindtunnelError, match="--gpus-per-worker 0.5 would put 2 NCCL ranks on one GPU"):
        layout(spec, workers=8, gpus_per_worker=0.5)
    with pytest.raises(WindtunnelError, match="--gpus-per-worker 8: a worker trains on one device.*--workers 64"):
        layout(spec, workers=8, gpus_per_worker=8)
    spec = apply_overrides(spec, ["micro_batch_tokens=8192"])   # the same micro-batch: activations compare
    bf16 = layout(spec, workers=8, gpus_per_worker=1)
    fp32 = layout(apply_overrides(spec, ["dtype=fp32"]), workers=8, gpus_per_worker=1)
    assert fp32["expected_hours"] / bf16["expected_hours"] == pytest.approx(989 / 67)
    assert 1.8 < fp32["memory"]["activations"] / bf16["memory"]["activations"] < 2   # 4 against 2 bytes; the head fp32
    assert fp32["memory"]["parameters"] == bf16["memory"]["parameters"]                # fp32 master weights either way
    ckpt = layout(apply_overrides(spec, ["activation_checkpointing=true"]), workers=8, gpus_per_worker=1)
    assert ckpt["memory"]["activations"] < 0.2 * bf16["memory"]["activations"]   # 52 blocks keep only their input
    assert 1.2 < ckpt["expected_hours"] / bf16["expected_hours"] < 1.34          # one more forward of the blocks


def _cli(*args, env, timeout=600):
    return subprocess.run([sys.executable, "-m", "windtunnel.cli", *args], cwd=ROOT, env=env, capture_output=True,
                          text=True, timeout=timeout)


@pytest.fixture()
def launch_env(tmp_path, session_results):
    plan = tmp_path / "plan.yaml"
    plan.write_text(yaml.safe_dump(PLAN))
    env = {**os.environ, "WINDTUNNEL_RESULTS": str(session_results)}
    env.pop("RAY_ADDRESS", None)  # an embedded Ray
    return plan, env


def test_launch_from_a_plan_on_two_ray_workers_follows_its_schedule_and_logs_the_prediction(launch_env):
    plan, env = launch_env
    dry = _cli("launch", str(plan), "--workers", "2", "--dry-run", "--json", *HOW, env=env)
    assert dry.returncode == 0, dry.stderr
    layout_ = json.loads(dry.stdout)
    assert layout_["strategy"] == "ddp" and layout_["micro_batch_tokens"] == 512
    assert layout_["grad_accum_stages"] == [[0, 1], [4096, 2]] and layout_["spec"]["parallel"] == "ddp"
    shown = _cli("launch", str(plan), "--workers", "2", "--dry-run", *HOW, env=env).stdout  # the resolved spec
    resolved = yaml.safe_load(shown.split("# run id: ")[1].split("\n", 1)[1])
    assert resolved["micro_batch_tokens"] == 512 and resolved["lr"] == 0.02
    done = _cli("launch", str(plan), "--workers", "2", *HOW, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert "finished: actual" in done.stdout
    folder = Path(done.stdout.split("run ")[-1].strip())
    assert folder.name == shown.split("# run id: ")[1].split()[0]  # the dry run named the run it trains
    status = read_status(folder)
    assert status["status"] == "finished" and status["result"]["tokens"] == 4096 + 4 * 2048
    os.environ["WINDTUNNEL_RESULTS"] = env["WINDTUNNEL_RESULTS"]
    frame = tracking.runs_dataframe(experiment="launch")
    row = frame[frame["tags.windtunnel.run"] == folder.name].iloc[0]
    assert row["params.predicted_loss"] == "3.0" and row["tags.windtunnel.plan"] == str(plan)
    lrs = tracking.metric_history(row["run_id"], "lr")
    batches = tracking.metric_history(row["run_id"], "batch_tokens")
    assert list(batches["value"]) == [1024] * 4 + [2048] * 4
    spec, _ = plan_spec(PLAN, source="plan")
    lr_at = make_schedule(spec.schedule, lr=0.02, total_steps=12288, batch_tokens=1)
    tokens = [0, 1024, 2048, 3072, 4096, 6144, 8192, 10240]
    assert list(lrs["value"]) == pytest.approx([lr_at(t) for t in tokens])
    assert not tracking.metric_history(row["run_id"], "final/actual_minus_predicted").empty
    assert row["tags.monitor"] == "inside"   # the live check: the curve and its band at every evaluation
    for key in ("predicted/bpb", "predicted/low", "predicted/high", "monitor/z"):
        assert list(tracking.metric_history(row["run_id"], key)["step"]) == [4, 8]


def test_a_launch_off_its_prediction_stops_at_a_checkpoint_and_resumes(launch_env):
    """Two workers: rank 0's alarm stops both at the same step (--stop-off-prediction); the same command without the
    flag resumes, with the monitor's state."""
    plan, env = launch_env
    low = {**PLAN, "predicted_curve": {"tokens": [2048, 12288], "loss": [1.0, 0.9], "low": [0.99, 0.89],
                                       "high": [1.01, 0.91]}}   # far below any loss a run of 12K tokens reaches
    plan.write_text(yaml.safe_dump(low))
    how = [*HOW, "--set", "eval_every=2", "--k", "2"]
    stopped = _cli("launch", str(plan), "--workers", "2", "--stop-off-prediction", *how, env=env)
    assert stopped.returncode == 0, stopped.stderr[-3000:]
    assert "monitor: micro-24k is OFF PREDICTION at step 4 " in stopped.stderr   # the console line, live
    assert "stopped off prediction at a checkpoint of step 4" in stopped.stdout
    folder = Path(stopped.stdout.split("run ")[-1].strip())
    assert read_status(folder)["status"] == "stopped" and checkpoint_path(folder, 4).exists()
    os.environ["WINDTUNNEL_RESULTS"] = env["WINDTUNNEL_RESULTS"]
    run_id = (folder / tracking.RUN_ID_FILE).read_text()
    tags = tracking.runs_dataframe(experiment="launch").set_index("run_id").loc[run_id]
    assert (tags["tags.monitor"], tags["tags.monitor.step"], tags["tags.status"]) == ("off-prediction", "4", "stopped")
    done = _cli("launch", str(plan), "--workers", "2", *how, env=env)
    assert done.returncode == 0, done.stderr[-3000:]
    assert read_status(folder)["status"] == "finished" and "OFF PREDICTION at step 4 " in done.stdout
    state = json.loads((folder / "monitor.json").read_text())
    assert [e["step"] for e in state["evals"]] == [2, 4, 6, 8] and [a["step"] for a in state["alarms"]] == [4]


def _workers() -> list[int]:
    found = subprocess.run(["pgrep", "-f", "RayTrainWorker"], capture_output=True, text=True).stdout.split()
    return [int(pid) for pid in found]


def test_a_killed_worker_restarts_the_group_from_the_checkpoint_and_the_run_finishes(launch_env, tmp_path):
    plan, env = launch_env
    longer = {**PLAN, "train": {**PLAN["train"], "tokens": 40960, "batch_warmup": [],
                                "schedule": {**PLAN["train"]["schedule"], "decay_start_tokens": 36864}}}
    plan.write_text(yaml.safe_dump(longer))
    proc = subprocess.Popen([sys.executable, "-m", "windtunnel.cli", "launch", str(plan), "--workers", "2", *HOW,
                             "--set", "compile=false"], cwd=ROOT, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    runs = Path(env["WINDTUNNEL_RESULTS"]) / "runs"
    before = set(runs.iterdir()) if runs.exists() else set()
    deadline, killed = time.time() + 300, None
    while time.time() < deadline and killed is None and proc.poll() is None:
        new = [d for d in runs.iterdir() if d not in before] if runs.exists() else []
        if new and list((new[0] / "checkpoints").glob("step_*.dcp")) and _workers():
            killed = _workers()[-1]
            os.kill(killed, signal.SIGKILL)
        time.sleep(0.2)
    out, err = proc.communicate(timeout=600)
    assert killed is not None, err[-3000:]
    assert proc.returncode == 0, err[-3000:]
    folder = Path(out.split("run ")[-1].strip())
    assert read_status(folder)["result"]["tokens"] == 40960


def test_the_decay_switches_to_its_data_mixture_at_the_decay_start(tmp_path):
    prose = tmp_path / "prose.jsonl"
    prose.write_text("".join(json.dumps({"text": f"Return the {i}th value of the sequence, or None.\n" * 20}) + "\n"
                             for i in range(100)))
    spec = tiny_spec("tokens=16384", "compile=false", "eval_every=1000",
                     "schedule={kind: wsd, warmup_tokens: 2048, decay_start_tokens: 10240}",
                     f"decay_data={{python: 0.5, {prose}: 0.5}}")
    mixing = []
    train(spec, tmp_path / "run", log=lambda m, step: mixing.append(m["data/decay_mixture"]))
    assert mixing == [0.0] * 5 + [1.0] * 3  # steps 6-8 start at 10240 tokens: the decay's
    with pytest.raises(WindtunnelError, match="decay_data"):
        train(tiny_spec("decay_data={python: 1}", "schedule={kind: cosine, warmup_tokens: 2048}"),
              tmp_path / "cosine")  # no decay stage to switch at


def test_the_comparison_names_a_plan_given_relative_to_the_working_directory(tmp_path, monkeypatch):
    from windtunnel.launch import _comparison

    monkeypatch.chdir(tmp_path)
    (tmp_path / "mlflow_run_id").write_text("abc")
    result = {"eval": {"code": {"bpb": 2.0}, "docs": {"bpb": 4.0}}, "tokens": 100, "tokens_per_s": 1.0, "wall_s": 1.0}
    out = {"result": result, "workers": 2, "strategy": "ddp", "micro_batch_tokens": 512, "alarms": []}
    c = _comparison(PLAN, Path("plans/micro-24k.yaml"), out, {"lr"}, tmp_path)
    assert c["plan"] == "plans/micro-24k.yaml" and c["actual"] == 3.0 and c["rel_error"] == pytest.approx(0.0)
    assert c["inside"] and c["given"] == ["lr"] and c["mlflow_run"] == "abc"
