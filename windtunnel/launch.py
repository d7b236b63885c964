"""A planned run on Ray Train: `windtunnel launch PLAN.yaml [--workers N] [--gpus-per-worker G] [--set k=v]`.

1) `plan_spec` turns a plan (results/plans/TARGET.yaml) into the target's TrainSpec: its `train:` section (tokens,
   batch and batch warm-up, µP base and LR, WSD schedule, context). An incomplete plan is refused with its gaps
   unless `--set` gives each value it left out (tokens, batch_tokens, lr), and only those; the comparison lists
   them. A plan that predicts no loss launches only with `--no-prediction`. `device`, `dtype`, `compile`,
   `micro_batch_tokens`, `parallel`, `activation_checkpointing`, `eval_every`, `data.eval_tokens` and
   `checkpoint_every` (how, not what, it trains) may always be set.
2) `layout` splits the global batch into workers × micro-batch × gradient accumulation and estimates the memory
   of one worker (parameters, gradients, AdamW state, activations of one micro-batch); the replicated state
   (DDP) must leave half the device to activations, else the run shards it (FSDP; `--set parallel=fsdp` forces
   it). A batch that cannot be split, or
   a micro-batch that does not fit, is refused in one line before anything starts.
3) `launch` runs windtunnel's own trainer on Ray Train's TorchTrainer: one process group (gloo on CPU, NCCL on
   GPU), DistributedDataParallel or FSDP2, the run folder results/runs/<id>/ shared by the workers (shared storage on a
   cluster). When a worker dies, Ray Train restarts the group (`max_failures`) and every worker resumes from
   the newest checkpoint; the same command resumes a stopped launch. Rank 0 logs to MLflow (experiment
   `launch`), tagged with the plan and the fits it came from, with the predicted final loss and interval as
   params, the actual mean held-out loss `actual/bpb` at every evaluation, and `final/actual_minus_predicted` at
   the end; the comparison is written to results/launch/TARGET.json (results/validate/ for `windtunnel validate`)
   and shown in the report.
4) The live check (monitor.Live), when the plan has a predicted curve: at every evaluation the curve's
   `predicted/bpb`, its 95% band `predicted/low` and `predicted/high`, and `monitor/z` (the deviation in log loss,
   ±1.96 at the band's edges). Outside the band for K evaluations in a row (K = 3, `--k`) is an alarm: a console
   line, the MLflow tags monitor=off-prediction, monitor.step and monitor.tokens (monitor=inside until then), and
   with `--stop-off-prediction` a stop at a checkpoint of that step (status "stopped"; the same command resumes it,
   with the monitor's state kept in the run folder's monitor.json).
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import math
import os
import sys
import time
from pathlib import Path


from windtunnel.checks import FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE_INT, number, problem
from windtunnel.errors import WindtunnelError
from windtunnel.monitor import K, Live, alarm_text, curve_frame, read_alarms
from windtunnel.paths import results_dir, write_atomic

__all__ = ["plan_spec", "layout", "launch", "read_comparisons"]

HOW_KEYS = {"device", "dtype", "compile", "micro_batch_tokens", "eval_every", "checkpoint_every", "peak_flops",
            "data.eval_tokens", "parallel", "activation_checkpointing", "keep_checkpoints"}
GPU_MEMORY = 80e9  # bytes per GPU assumed by a dry run (an 80 GB A100/H100) unless --device-memory says otherwise


def load_plan(path: str | Path) -> dict:
    """A plan file as written by `windtunnel plan`, checked against PlanFile (one line naming key and allowed)."""
    from windtunnel.checks import build
    from windtunnel.config import read_yaml
    from windtunnel.plan import PlanFile

    path = Path(path)
    if not path.is_file():
        raise WindtunnelError(f"{path}: no such plan (make plan TARGET=... writes results/plans/TARGET.yaml)")
    plan = read_yaml(path, what="plan")
    build(PlanFile, plan, file=path)
    return plan


def plan_spec(plan: dict, *, source: str, given: list[str] = (), no_prediction: bool = False):
    """The target's TrainSpec from a plan, `given` (key=value) filling exactly what it left out (tokens, batch_tokens,
    lr; a plan without tokens gets its WSD schedule from its `schedule_rule`); returns (spec, given keys). A plan
    without a predicted loss launches only with `no_prediction` (then there is no predicted-vs-actual)."""
    from windtunnel.config import TrainSpec, apply_overrides, check_run, get_model
    from windtunnel.plan import plan_missing, wsd_schedule

    missing = plan_missing(plan)
    keys = {item.partition("=")[0].strip() for item in given}
    if keys - set(missing) - HOW_KEYS:
        raise WindtunnelError(f"--set {', '.join(sorted(keys - set(missing) - HOW_KEYS))}: the plan gives that value; "
                              f"--set may fill what it left out ({', '.join(missing) or 'nothing'}) and "
                              f"choose how it runs ({', '.join(sorted(HOW_KEYS))})")
    unfilled = [k for k in missing if k not in keys]
    why = "; ".join(plan.get("gaps", [])) or "no reason recorded"
    if unfilled:
        raise WindtunnelError(f"the plan for {plan['target']} is incomplete ({why}); {source}: --set "
                              + " --set ".join(f"{k}=..." for k in unfilled) + " fills what it left out")
    if not plan.get("predicted_loss") and not no_prediction:
        raise WindtunnelError(f"{source}: the plan for {plan['target']} predicts no loss ({why}); --no-prediction "
                              "launches it without a predicted-vs-actual comparison")
    spec = apply_overrides(TrainSpec(model=get_model(plan["target"])), plan["train"], source=source)
    spec = apply_overrides(spec, list(given))
    if "tokens" in keys and "schedule" not in plan["train"] and plan.get("schedule_rule"):
        schedule = wsd_schedule(spec.tokens, spec.batch_tokens, **plan["schedule_rule"])
        spec = apply_overrides(spec, {"schedule": schedule}, source=f"{source} schedule_rule")
    return check_run(spec, file=f"{source} with --set" if given else source), keys


# ---------------------------------------------------------------- layout and memory


def memory_per_worker(spec, *, strategy: str, workers: int, micro_tokens: int, dtype: str) -> dict:
    """Bytes one worker holds: fp32 parameters, gradients and AdamW's two moments (sharded W ways under FSDP,
    plus two gathered blocks), and the activations one micro-batch keeps for the backward pass: per token and
    layer the norms' inputs and outputs, q/k/v, the attention output and the SwiGLU's four d_ff-wide tensors
    (flash attention: no T×T scores), plus the LM head's chunked gradient buffers. With activation checkpointing
    a block keeps only its fp32 input, and one block's activations live at a time, while it is recomputed."""
    from windtunnel.counts import n_params

    m = spec.model
    n = n_params(m, embedding=True)
    shard = workers if strategy == "fsdp" else 1
    block = n_params(m) / m.n_layers  # parameters of one block
    act_bytes = 2 if dtype == "bf16" else 4
    per_token_layer = 8 * m.d_model + 2 * m.n_kv_heads * m.d_head + 4 * m.d_ff
    if spec.activation_checkpointing:
        activations = micro_tokens * (m.n_layers * m.d_model * 4 + (per_token_layer + 2 * m.d_model) * act_bytes)
    else:
        activations = micro_tokens * (m.n_layers * per_token_layer + 2 * m.d_model) * act_bytes
    head = micro_tokens * m.d_model * 4 + 4 * m.vocab_size * m.d_model  # grad_h and grad_w of the tied head
    out = {"parameters": 4 * n / shard, "gradients": 4 * n / shard, "optimizer": 8 * n / shard,
           "gathered": 2 * 4 * block if strategy == "fsdp" else 0.0, "activations": activations + head}
    out["total"] = sum(out.values())
    return out


LAUNCH_NUMBERS = {"workers": POSITIVE_INT, "gpus_per_worker": NON_NEGATIVE, "device_memory": number(
    low=0, low_open=True, unit="bytes"), "mfu": FRACTION, "max_failures": NON_NEGATIVE_INT, "k": POSITIVE_INT}


def _check_numbers(**values) -> None:
    """One line naming the option, its value and what is allowed, for the first number not of LAUNCH_NUMBERS."""
    for name, value in values.items():
        allowed = None if value is None else problem(LAUNCH_NUMBERS[name], value)
        if allowed:
            raise WindtunnelError(f"launch: --{name.replace('_', '-')} {value} is not allowed; {allowed}")


def layout(spec, *, workers: int, gpus_per_worker: float, device_memory: float | None = None,
           mfu: float = 0.4) -> dict:
    """How `spec` runs on `workers`: strategy, micro-batch, accumulation, memory per worker and expected hours.
    The micro-batch is spec.micro_batch_tokens, else the most whole sequences that divide a worker's share of
    every warm-up stage's batch and whose memory fits."""
    from windtunnel.counts import H100_FLOPS, attention_flops_per_token, flops_per_token, gpu_hours, n_params
    from windtunnel.train import total_steps, total_tokens

    _check_numbers(workers=workers, gpus_per_worker=gpus_per_worker, device_memory=device_memory, mfu=mfu)
    _check_one_device(workers, gpus_per_worker)
    gpu = gpus_per_worker > 0
    dtype = spec.dtype if spec.dtype != "auto" else ("bf16" if gpu else "fp32")
    device_memory = device_memory or (GPU_MEMORY if gpu else _host_memory() / workers)
    batches = sorted({spec.batch_tokens, *(b for _, b in spec.batch_warmup)})
    for batch in batches:
        if batch % (workers * spec.seq_len):
            raise WindtunnelError(f"launch: a batch of {batch:,} tokens cannot be split over {workers} workers in whole "
                                  f"sequences of {spec.seq_len}; choose --workers dividing {batch // spec.seq_len:,}")
    state = memory_per_worker(spec, strategy="ddp", workers=workers, micro_tokens=0, dtype=dtype)
    strategy = "ddp" if state["total"] <= device_memory / 2 and spec.parallel == "ddp" else "fsdp"
    if spec.micro_batch_tokens:
        micro = spec.micro_batch_tokens
        if any(b % (workers * micro) for b in batches):
            raise WindtunnelError(f"launch: micro_batch_tokens={micro:,} × {workers} workers does not divide the "
                                  f"batch ({', '.join(f'{b:,}' for b in batches)} tokens)")
    else:  # a divisor of every stage's rows per worker, so that only the accumulation changes between stages
        rows = math.gcd(*(b // workers // spec.seq_len for b in batches))
        candidates = [r for r in range(1, rows + 1) if rows % r == 0]
        fits = [r for r in candidates if memory_per_worker(spec, strategy=strategy, workers=workers,
                                                           micro_tokens=r * spec.seq_len, dtype=dtype)["total"]
                <= 0.9 * device_memory]
        micro = (fits[-1] if fits else 1) * spec.seq_len
    memory = memory_per_worker(spec, strategy=strategy, workers=workers, micro_tokens=micro, dtype=dtype)
    if memory["total"] > device_memory:
        raise WindtunnelError(f"launch: {memory['total'] / 1e9:.1f} GB per worker ({strategy}, micro-batch {micro:,} "
                              f"tokens) exceeds the {device_memory / 1e9:.1f} GB of a device; add workers or devices")
    tokens = total_tokens(spec)
    flops = flops_per_token(spec.model, seq_len=spec.seq_len) * tokens
    # checkpointing recomputes every block's forward (2 FLOPs a weight, a third of attention's) in the backward pass:
    # at the same hardware utilisation the run takes that much longer (MFU, as PaLM counts it, excludes it)
    recompute = ((2 * n_params(spec.model) + attention_flops_per_token(spec.model, seq_len=spec.seq_len) / 3) * tokens
                 if spec.activation_checkpointing else 0.0)
    peak = H100_FLOPS[dtype] if gpu else _cpu_peak()
    return {"strategy": strategy, "workers": workers, "gpus_per_worker": gpus_per_worker, "dtype": dtype,
            "activation_checkpointing": spec.activation_checkpointing,
            "micro_batch_tokens": micro, "grad_accum": spec.batch_tokens // (workers * micro),
            "grad_accum_stages": [[t, b // (workers * micro)] for t, b in spec.batch_warmup],
            "batch_tokens": spec.batch_tokens, "memory_per_worker_bytes": memory["total"], "memory": memory,
            "device_memory_bytes": device_memory, "steps": total_steps(spec), "tokens": tokens,
            "flops": flops, "mfu": mfu, "peak_flops_per_worker": peak,
            "recompute_flops": recompute, "expected_hours": gpu_hours(flops + recompute, mfu=mfu, peak=peak) / workers}


def _check_one_device(workers: int, gpus_per_worker: float) -> None:
    """One device per Ray Train worker: NCCL cannot share a GPU between ranks, and a worker trains on one device."""
    if 0 < gpus_per_worker < 1:
        raise WindtunnelError(f"launch: --gpus-per-worker {gpus_per_worker:g} would put {1 / gpus_per_worker:.3g} NCCL "
                              "ranks on one GPU, which NCCL refuses; give --gpus-per-worker 1 and --workers = the GPUs")
    if gpus_per_worker > 1:
        raise WindtunnelError(f"launch: --gpus-per-worker {gpus_per_worker:g}: a worker trains on one device, so the "
                              f"rest would idle; give --workers {math.ceil(workers * gpus_per_worker)} "
                              "--gpus-per-worker 1")


def _host_memory() -> float:
    return os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES")


def _cpu_peak() -> float:
    from windtunnel.train import peak_flops

    return peak_flops("cpu", "fp32")


# ---------------------------------------------------------------- the launch


def launch(plan_path: str | Path, *, workers: int = 1, gpus_per_worker: float = 0, given: list[str] = (),
           device_memory: float | None = None, dry_run: bool = False, max_failures: int = 3,
           experiment: str = "launch", no_prediction: bool = False, k: int = K,
           stop_off_prediction: bool = False) -> dict:
    """Dry run: the layout, with the TrainSpec the workers would train (`spec`). Otherwise train the planned target
    on Ray Train and return the outcome (the run's folder, status, final held-out loss against the prediction, and
    the live check's `alarms`); `k` and `stop_off_prediction`: the live check's alarm and whether it stops the run."""
    from windtunnel.data import prepare
    from windtunnel.runs import make_run, run_dir

    _check_numbers(max_failures=max_failures, k=k)
    plan_path = Path(plan_path)
    plan = load_plan(plan_path)
    curve = plan.get("predicted_curve")
    if curve is not None:
        curve_frame(curve, plan_path)  # a malformed curve is refused before anything starts
    elif stop_off_prediction:
        raise WindtunnelError(f"{plan_path}: --stop-off-prediction needs the plan's predicted_curve, which it lacks; plan "
                              "the target again once results/loss_curve/fit.json exists (windtunnel fit loss_curve)")
    spec, keys = plan_spec(plan, source=str(plan_path), given=given, no_prediction=no_prediction)
    out = layout(spec, workers=workers, gpus_per_worker=gpus_per_worker, device_memory=device_memory)
    out["target"] = plan["target"]
    spec = dataclasses.replace(spec, micro_batch_tokens=out["micro_batch_tokens"], parallel=out["strategy"],
                               device="cuda" if gpus_per_worker > 0 else "cpu")
    if dry_run:
        return {**out, "spec": spec}
    prepare(spec.data, vocab_size=spec.model.vocab_size)  # once here, before the workers start
    run = make_run(spec, name=plan["target"], coords={"model": plan["target"]})
    folder = run_dir(run).resolve()  # the workers' working directory is not this one
    predicted = plan.get("predicted_loss") or {}
    context = {"plan": str(plan_path), "sources": plan.get("sources", {}), "given": sorted(keys),
               "predicted": predicted, "experiment": experiment, "curve": curve, "k": k,
               "stop_off_prediction": stop_off_prediction,
               "threads": None if gpus_per_worker > 0 else max(1, (os.cpu_count() or 1) // workers)}
    _fit_on_ray(run, folder, context, workers=workers, gpus_per_worker=gpus_per_worker, max_failures=max_failures)
    from windtunnel.train import read_status

    status = read_status(folder) or {}
    out.update({"run_dir": str(folder), "status": status.get("status"), "result": status.get("result") or {},
                "alarms": read_alarms(folder)})
    if out["status"] == "finished":
        out["comparison"] = _comparison(plan, plan_path, out, keys, folder)
        path = results_dir() / experiment / f"{plan['target']}.json"
        path.parent.mkdir(parents=True, exist_ok=True)
        write_atomic(path, json.dumps(out["comparison"], indent=1) + "\n")
        out["written"] = str(path)
    return out


def _comparison(plan: dict, plan_path: Path, out: dict, given: set, folder: Path) -> dict:
    """The finished run against its plan's prediction: what results/launch/TARGET.json and the report hold."""
    from windtunnel.tracking import RUN_ID_FILE

    result, predicted = out["result"], plan.get("predicted_loss") or {}
    actual = _mean_bpb(result["eval"])
    low, high = predicted.get("interval95") or (None, None)
    value = predicted.get("value")
    full = plan_path.resolve()
    shown = full.relative_to(Path.cwd()) if full.is_relative_to(Path.cwd()) else full
    return {"target": plan["target"], "n_params": plan.get("n_params"), "n_kind": plan.get("n_kind"),
            "tokens": result["tokens"], "predicted": value, "low": low, "high": high, "actual": actual,
            "rel_error": value / actual - 1 if value else None,
            "inside": low <= actual <= high if value else None,
            "n_extrapolation": predicted.get("n_extrapolation"),
            "eval": {k: v["bpb"] for k, v in result["eval"].items()}, "plan": str(shown),
            "sources": plan.get("sources", {}), "train": plan["train"], "given": sorted(given),
            "form": predicted.get("form"), "workers": out["workers"], "strategy": out["strategy"],
            "micro_batch_tokens": out["micro_batch_tokens"], "tokens_per_s": result["tokens_per_s"],
            "wall_s": result["wall_s"], "run_dir": str(folder), "mlflow_run": (folder / RUN_ID_FILE).read_text(),
            "live_check": bool(plan.get("predicted_curve")), "alarms": out["alarms"]}


def _mean_bpb(evals: dict[str, dict[str, float]]) -> float:
    """The loss the laws predict: mean bits per byte over the held-out sets of a TrainResult's eval."""
    return sum(v["bpb"] for v in evals.values()) / len(evals)


def read_comparisons(root: Path | None = None) -> list[dict]:
    """Every results/launch/*.json and results/validate/*.json (predicted against actual), for the report."""
    root = root or results_dir()
    found = []
    for kind in ("validate", "launch"):
        folder = root / kind
        found += [{**json.loads(p.read_text()), "kind": kind} for p in sorted(folder.glob("*.json"))] \
            if folder.is_dir() else []
    return found


def _fit_on_ray(run, folder: Path, context: dict, *, workers: int, gpus_per_worker: float, max_failures: int) -> None:
    from ray.train import FailureConfig, RunConfig, ScalingConfig
    from ray.train.torch import TorchTrainer

    from windtunnel.orchestrate import init_ray
    from windtunnel.train import total_tokens

    started = init_ray(num_cpus=None)
    try:
        trainer = TorchTrainer(
            _worker, train_loop_config={"run": run, "folder": str(folder), **context},
            scaling_config=ScalingConfig(num_workers=workers, use_gpu=gpus_per_worker > 0,
                                         resources_per_worker={"CPU": context["threads"] or 1,
                                                               **({"GPU": gpus_per_worker} if gpus_per_worker else {})}),
            run_config=RunConfig(name=f"launch-{run.id}", storage_path=str(results_dir() / "launch"),
                                 failure_config=FailureConfig(max_failures=max_failures)),
        )
        _with_progress(trainer.fit, folder, total=total_tokens(run.spec), desc=run.name)
    except BaseException as err:
        from windtunnel.errors import one_line

        _end_rank0_run(folder, killed=isinstance(err, KeyboardInterrupt))
        if not isinstance(err, Exception):
            raise
        raise WindtunnelError(f"launch of {run.name} failed: {one_line(err)} (run folder {folder}; the same command "
                              "resumes from its newest checkpoint)") from err
    finally:
        if started:
            import ray

            ray.shutdown()


def _end_rank0_run(folder: Path, *, killed: bool) -> None:
    """End rank 0's MLflow run if it is still RUNNING: its worker was stopped before it could end the run."""
    from windtunnel.tracking import RUN_ID_FILE, end_if_running

    id_file = folder / RUN_ID_FILE
    if id_file.is_file():
        with contextlib.suppress(Exception):  # the launch's own error is the one to report
            end_if_running(id_file.read_text().strip(), status="KILLED" if killed else "FAILED",
                           tag_status="interrupted" if killed else "failed")


PROGRESS = "progress.json"  # rank 0's latest tokens, loss and throughput, for the driver's progress bar


def _with_progress(fit, folder: Path, *, total: int, desc: str) -> None:
    """Run `fit` (blocking) in a thread while a progress bar follows rank 0's folder/progress.json."""
    import threading

    from tqdm.auto import tqdm

    failure: list[BaseException] = []

    def body() -> None:
        try:
            fit()
        except BaseException as err:  # handed to the caller's thread
            failure.append(err)

    shown = len(read_alarms(folder))  # those of an earlier segment were shown then
    thread = threading.Thread(target=body, daemon=True)
    thread.start()
    with tqdm(total=total, unit="tok", unit_scale=True, desc=desc, dynamic_ncols=True,
              mininterval=0.5 if sys.stderr.isatty() else 30) as bar:
        while True:
            thread.join(timeout=1.0)
            seen = json.loads((folder / PROGRESS).read_text()) if (folder / PROGRESS).is_file() else None
            if seen:
                bar.update(max(0, min(seen["tokens"], total) - bar.n))
                bar.set_postfix(loss=f"{seen['loss']:.3f}", tok_s=f"{seen['tokens_per_s']:,.0f}", refresh=False)
            alarms = read_alarms(folder)
            for alarm in alarms[shown:]:  # the live check's console line
                bar.write(f"monitor: {desc} is {alarm_text(alarm)}", file=sys.stderr)
            shown = max(shown, len(alarms))
            if not thread.is_alive():  # one last look after the run ended
                break
    if failure:
        raise failure[0]


def _worker(config: dict) -> None:
    """One Ray Train worker: the trainer in the shared run folder; rank 0 logs to MLflow and runs the live check."""
    import ray.train
    import torch

    from windtunnel.train import train

    if config["threads"]:
        torch.set_num_threads(config["threads"])
    run, folder = config["run"], Path(config["folder"])
    stopping = config["stop_off_prediction"]  # then every rank takes part in rank 0's answer
    if ray.train.get_context().get_world_rank() != 0:
        train(run.spec, folder, stop=(lambda: False) if stopping else None)
        return
    from windtunnel.runs import log_corpus, run_params
    from windtunnel.tracking import RunLogger

    predicted = config["predicted"]
    params = dict(run_params(run))
    if predicted:
        params.update({"predicted_loss": predicted["value"], "predicted_low": predicted["interval95"][0],
                       "predicted_high": predicted["interval95"][1]})
    live = Live(curve_frame(config["curve"], config["plan"]), folder, k=config["k"]) if config["curve"] else None
    tags = {"windtunnel.run": run.id, "windtunnel.plan": config["plan"], "model": run.name,
            "given": ", ".join(config["given"]), **{f"windtunnel.fit.{k}": v for k, v in config["sources"].items()}}
    if live is not None and not live.alarms:
        tags["monitor"] = "inside"
    folder.mkdir(parents=True, exist_ok=True)
    logger = RunLogger.in_folder(folder, experiment=config["experiment"], run_name=run.name, params=params, tags=tags,
                                 system_metrics=True)

    shown, alarmed = [0.0], []

    def log(metrics: dict, step: int) -> None:
        if time.monotonic() - shown[0] > 2:  # the driver's progress bar reads this
            shown[0] = time.monotonic()
            write_atomic(folder / PROGRESS, json.dumps({"step": step, "tokens": metrics["tokens"],
                                                        "loss": metrics["train/loss"],
                                                        "tokens_per_s": metrics["perf/tokens_per_s"]}))
        bpb = [v for k, v in metrics.items() if k.startswith("eval/") and k.endswith("/bpb")]
        if bpb:
            metrics = {**metrics, "actual/bpb": sum(bpb) / len(bpb)}
            if live is not None:
                checked, alarm = live.observe(step, metrics["tokens"], metrics["actual/bpb"])
                metrics.update(checked)
                if alarm is not None:  # the driver's progress bar prints it
                    alarmed.append(alarm)
                    logger.tag({"monitor": "off-prediction", "monitor.step": alarm["step"],
                                "monitor.tokens": alarm["tokens"]})
        logger.log(metrics, step)

    try:
        log_corpus(logger, run.spec)
        result = train(run.spec, folder, log=log, flush=logger.flush, progress=True,
                       stop=(lambda: bool(alarmed)) if stopping else None)
    except BaseException:
        logger.finish("FAILED", tag_status="failed")
        raise
    if predicted and result.eval and result.status == "finished":
        actual = _mean_bpb(result.eval)
        logger.log({"final/actual_minus_predicted": actual - predicted["value"],
                    "final/inside_interval": float(predicted["interval95"][0] <= actual <= predicted["interval95"][1])},
                   result.step)
    if result.status == "stopped":
        logger.finish("KILLED", tag_status="stopped")
    else:
        logger.finish("FINISHED" if result.status == "finished" else "FAILED", tag_status=result.status)
