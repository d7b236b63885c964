"""The live check a launch runs (monitor.Live at every evaluation, train's stop at its alarm), on real runs: a ladder of
four tiny runs fits the curve law, the plan's predicted curve for a size inside it follows (plan.predicted_curve);
a new seed trained as planned never raises the alarm, one at 4× the plan's LR raises it within its first quarter,
and a run stopped at its alarm resumes with the monitor's state."""

import dataclasses
import json

import numpy as np
import pytest

from tests.conftest import tiny_spec
from windtunnel.config import get_model
from windtunnel.counts import n_params
from windtunnel.curve import Curve, fit_curves
from windtunnel.monitor import STATE, Live, curve_frame
from windtunnel.plan import predicted_curve
from windtunnel.train import checkpoint_path, read_status, train

TOKENS, BATCH, LR = 163_840, 2048, 0.03   # 80 steps of 2048 tokens; the ladder's LR (µP, near the micro optimum)
SCHEDULE = {"kind": "wsd", "warmup_tokens": 4096, "decay_start_tokens": 147_456, "decay_shape": "exp"}


def spec(model: str, seed: int, lr: float = LR, **how):
    base = tiny_spec(f"tokens={TOKENS}", f"batch_tokens={BATCH}", f"seed={seed}", f"lr={lr}", "eval_every=2",
                     "compile=false", "checkpoint_every=1000", f"schedule={json.dumps(SCHEDULE)}",
                     *(f"{k}={v}" for k, v in how.items()))
    return dataclasses.replace(base, model=get_model(model))


def mean_bpb(metrics: dict) -> float | None:
    bpb = [v for k, v in metrics.items() if k.startswith("eval/") and k.endswith("/bpb")]
    return sum(bpb) / len(bpb) if bpb else None


def trained_curve(s, folder) -> Curve:
    lrs, evals = [], []

    def log(metrics, step):
        lrs.append(metrics["lr"])
        if mean_bpb(metrics) is not None:
            evals.append((step, mean_bpb(metrics)))

    train(s, folder, log=log)
    steps, loss = zip(*evals)
    return Curve(n=n_params(s.model, embedding=True), lr=lrs, batch=np.full(len(lrs), float(BATCH)), steps=np.array(steps),
                 loss=np.array(loss), group=folder.name)


@pytest.fixture(scope="module")
def plan(tmp_path_factory):
    """micro-53k's predicted curve from a ladder of micro-24k and micro-142k, two seeds each."""
    root = tmp_path_factory.mktemp("ladder")
    ladder = [trained_curve(spec(m, seed), root / f"{m}-{seed}") for m in ("micro-24k", "micro-142k") for seed in (0, 1)]
    law = fit_curves(ladder, form="lra_nd", bootstrap=50)
    train_section = {"tokens": TOKENS, "batch_tokens": BATCH, "lr": LR, "schedule": SCHEDULE}
    return curve_frame(predicted_curve(law, n_params(get_model("micro-53k"), embedding=True), train_section), "plan")


def watched(s, folder, plan, *, stop: bool = False):
    """Train `s` as launch's rank 0 does: the live check at every evaluation; returns (result, every alarm raised,
    the evaluations checked)."""
    live, alarms, checked = Live(plan, folder), [], []

    def log(metrics, step):
        if mean_bpb(metrics) is not None:
            out, alarm = live.observe(step, metrics["tokens"], mean_bpb(metrics))
            checked.append(out)
            alarms.extend([alarm] if alarm else [])

    result = train(s, folder, log=log, stop=(lambda: bool(alarms)) if stop else None)
    return result, alarms, checked


def test_a_run_as_planned_never_raises_the_alarm(plan, tmp_path):
    result, alarms, checked = watched(spec("micro-53k", seed=2), tmp_path / "as-planned", plan)
    assert result.status == "finished" and alarms == []
    zs = [c["monitor/z"] for c in checked if c]
    assert len(zs) >= 30 and np.median(np.abs(zs)) < 1   # z: ±1.96 at the band's edges (max 1.91 here)


def test_a_run_at_four_times_the_planned_lr_raises_it_within_its_first_quarter(plan, tmp_path):
    result, alarms, _ = watched(spec("micro-53k", seed=2, lr=4 * LR), tmp_path / "four-x", plan)
    assert alarms, "no alarm"
    first = alarms[0]
    assert first["tokens"] <= TOKENS / 4 and first["k"] == 3 and first["side"] in ("above", "below")
    state = json.loads((tmp_path / "four-x" / STATE).read_text())
    assert state["alarms"][0] == first and first["left_at_tokens"] < first["tokens"]


def test_a_stop_at_the_alarm_resumes_with_the_monitors_state(plan, tmp_path):
    folder = tmp_path / "stopped"
    stopped, alarms, _ = watched(spec("micro-53k", seed=2, lr=4 * LR), folder, plan, stop=True)
    assert stopped.status == "stopped" and read_status(folder)["status"] == "stopped"
    assert stopped.step == alarms[0]["step"] and checkpoint_path(folder, stopped.step).exists()
    before = json.loads((folder / STATE).read_text())
    done, again, _ = watched(spec("micro-53k", seed=2, lr=4 * LR), folder, plan)  # resumed, no stop
    assert done.status == "finished" and done.step == TOKENS // BATCH
    state = json.loads((folder / STATE).read_text())
    assert state["evals"][: len(before["evals"])] == before["evals"]    # kept, then continued
    assert state["alarms"][0] == before["alarms"][0] and [e["step"] for e in state["evals"]] == \
        sorted({e["step"] for e in state["evals"]})
    assert not again or again[0]["step"] > stopped.step   # the one raised before the stop is not raised again
    whole, _, _ = watched(spec("micro-53k", seed=2, lr=4 * LR), tmp_path / "whole", plan)
    assert mean_bpb({f"eval/{k}/bpb": v["bpb"] for k, v in whole.eval.items()}) == pytest.approx(
        mean_bpb({f"eval/{k}/bpb": v["bpb"] for k, v in done.eval.items()}), rel=1e-6)   # a stop changes nothing computed


def test_an_evaluation_replayed_after_a_resume_replaces_the_one_it_repeats(tmp_path):
    plan = curve_frame({"tokens": [1e3, 1e5], "loss": [3.0, 2.0], "low": [2.9, 1.9], "high": [3.1, 2.1]}, "p")
    live = Live(plan, tmp_path, k=2)
    assert live.observe(4, 2e3, 9.0)[1] is None and live.observe(8, 4e3, 9.0)[1]["left_at_tokens"] == 2e3
    assert Live(plan, tmp_path, k=2).observe(8, 4e3, 2.7) == ({
        "predicted/bpb": pytest.approx(3 - np.log(4) / np.log(100)),
        "predicted/low": pytest.approx(2.9 - np.log(4) / np.log(100)),
        "predicted/high": pytest.approx(3.1 - np.log(4) / np.log(100)),
        "monitor/z": pytest.approx(0.0, abs=0.05)}, None)   # step 8 again (a resume from step 4): inside now
    state = json.loads((tmp_path / STATE).read_text())
    assert [e["step"] for e in state["evals"]] == [4, 8] and state["alarms"] == []
    assert live.observe(12, 2e5, 1.0) == ({}, None)   # beyond the plan's tokens: not compared
