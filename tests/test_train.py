"""The trainer: a run end to end, checkpoints, bitwise resume, divergence, gradient accumulation."""

import json
import math

import pytest
import torch

from tests.conftest import tiny_spec
from windtunnel.train import GradStats, checkpoint_path, read_status, repeated_pairs, train


class Recorder:
    """A `log` callback keeping every point, and a `flush` counter."""

    def __init__(self, stop_at: int | None = None):
        self.points: list[tuple[int, dict]] = []
        self.flushes, self.stop_at = 0, stop_at

    def log(self, metrics, step):
        self.points.append((step, metrics))
        if step == self.stop_at:
            raise KeyboardInterrupt  # as if the process were stopped here

    def flush(self):
        self.flushes += 1

    def series(self, key):
        return {step: m[key] for step, m in self.points if key in m}


@pytest.mark.parametrize("compiled", [False, True])
def test_grad_stats_clip_cosine_and_max_update(compiled):
    a, b = torch.nn.Parameter(torch.zeros(3, 2)), torch.nn.Parameter(torch.zeros(4))
    stats = GradStats([("a.weight", a), ("b", b)], compiled=compiled)
    a.grad, b.grad = torch.ones(3, 2), torch.ones(4)
    norm, cos, d1, d2 = stats.before_step(math.inf)
    assert norm.item() == pytest.approx(math.sqrt(10))
    assert cos.isnan() and d1.isnan() and d2.isnan()  # no previous gradient or update at the first step
    stats.after_step()
    a.grad, b.grad = torch.ones(3, 2), -torch.arange(4.0)
    want = torch.nn.functional.cosine_similarity(torch.ones(10), torch.cat([torch.ones(6), -torch.arange(4.0)]), dim=0)
    norm, cos, _, _ = stats.before_step(1.0)  # clipped to norm 1, as clip_grad_norm_ does
    assert cos.item() == pytest.approx(want.item())
    assert math.hypot(a.grad.norm(), b.grad.norm()) == pytest.approx(1.0, rel=1e-5)
    with torch.no_grad():
        a += 0.5
        b[2] -= 2.0
    largest = stats.after_step().tolist()
    assert largest == [0.5, 2.0]
    assert stats.named(largest, each=True) == {"update/max_abs": 2.0, "update/max_abs/a": 0.5}  # matrices by name
    assert stats.named(largest, each=False) == {"update/max_abs": 2.0}  # between evaluations: the largest only


@pytest.mark.parametrize("compiled", [False, True])
def test_directional_derivatives_on_a_quadratic(compiled):
    """L(w) = ½ Σ a_i w_i²: g = a·w, so along an update v, D1 = g(t+1)·v/‖v‖ and D2 = vᵀAv/vᵀv exactly."""
    a = torch.tensor([[1.0, 3.0], [0.5, 8.0]])
    w = torch.nn.Parameter(torch.tensor([[1.0, -2.0], [3.0, 0.5]]))
    stats = GradStats([("w", w)], compiled=compiled)
    lr, got = 0.05, []
    for _ in range(3):
        w.grad = a * w.detach()
        got.append(stats.before_step(math.inf))
        before = w.detach().clone()
        with torch.no_grad():
            w -= lr * w.grad
        stats.after_step()
        v = w.detach() - before
    for t in (1, 2):  # the update of step t−1 and the gradient of step t
        w_t = torch.tensor([[1.0, -2.0], [3.0, 0.5]]) * (1 - lr * a) ** t
        v = w_t - w_t / (1 - lr * a)
        g = a * w_t
        assert got[t][2].item() == pytest.approx((g * v).sum().item() / v.norm().item(), rel=1e-5)
        assert got[t][3].item() == pytest.approx((a * v * v).sum().item() / (v * v).sum().item(), rel=1e-5)
        assert got[t][2].item() < 0  # a descent step: the loss falls along the update


def test_run_end_to_end(tmp_path):
    rec = Recorder()
    result = train(tiny_spec(), tmp_path, log=rec.log, flush=rec.flush)
    assert result.status == "finished" and result.step == 20 and result.tokens == 40960
    assert set(result.eval) == {"code", "docstrings", "torch"}
    assert result.epochs == pytest.approx(40960 / 30_553_366, rel=0.2)   # tokens seen / training tokens of the corpus
    for scores in result.eval.values():
        assert 0 < scores["bpb"] < 8 and scores["loss"] > 0
    steps = [s for s, _ in rec.points]
    assert steps == list(range(1, 21))
    first = rec.points[0][1]
    assert {"train/loss", "lr", "grad/norm", "update/max_abs", "tokens", "perf/tokens_per_s"} <= set(first)
    assert "grad/cos_prev" in rec.points[1][1] and -1 <= rec.points[1][1]["grad/cos_prev"] <= 1
    assert {"grad/D1", "grad/D2", "grad/curvature"} <= set(rec.points[1][1]) - set(first)  # from the 2nd step
    evaluated = rec.points[9][1]  # step 10: per-matrix update sizes at evaluations only
    per_matrix = {k for k in evaluated if k.startswith("update/max_abs/")}
    assert "update/max_abs/embed" in per_matrix and "update/max_abs/blocks.0.mlp.w2" in per_matrix
    assert max(evaluated[k] for k in per_matrix) == pytest.approx(evaluated["update/max_abs"])
    assert [s for s, m in rec.points if "update/max_abs/embed" in m] == [10, 20]
    assert set(rec.series("eval/code/bpb")) == {10, 20}
    for name, scores in result.eval.items():  # the copy gap, from the same pass: loss split by repeated pairs
        assert scores["copy_gap"] == pytest.approx(scores["loss_other"] - scores["loss_repeated"])
        assert min(scores["loss_repeated"], scores["loss_other"]) <= scores["loss"] <= max(scores["loss_repeated"],
                                                                                         scores["loss_other"])
    assert rec.series("data/epochs")[20] == pytest.approx(result.epochs)
    assert rec.series("train/loss")[20] < rec.series("train/loss")[1]
    assert read_status(tmp_path)["status"] == "finished"
    assert rec.flushes >= 2  # before each checkpoint


def test_checkpoints_are_atomic_complete_and_pruned(tmp_path):
    train(tiny_spec("checkpoint_steps=[10]", "checkpoint_every=5"), tmp_path)
    names = sorted(p.name for p in (tmp_path / "checkpoints").iterdir())
    # kept: the branch step, the WSD decay start (18 of 20 steps) and the final one; periodic ones pruned
    assert names == ["step_00000010.dcp", "step_00000018.dcp", "step_00000020.dcp"]
    folder = checkpoint_path(tmp_path, 10)
    state = torch.load(folder / "state.pt", weights_only=True)
    assert {"step", "data_position", "rng_cpu", "loss_ema", "loss_min", "workers", "parallel"} <= set(state)
    assert {"prev_grad", "prev_update"} == set(torch.load(folder / "rank0.pt", weights_only=True))
    assert (folder / ".metadata").is_file()   # torch.distributed.checkpoint: weights and AdamW state by name
    assert state["step"] == 10 and state["data_position"] == 10 * 2048 // 64
    train(tiny_spec("checkpoint_steps=[10]", "checkpoint_every=5", "tokens=61440", "keep_checkpoints=3"),
          tmp_path / "three")   # 30 steps, the decay from 27: the three newest stay, and the kept steps
    names = sorted(p.name for p in (tmp_path / "three" / "checkpoints").iterdir())
    assert names == ["step_00000010.dcp", "step_00000025.dcp", "step_00000027.dcp", "step_00000030.dcp"]


def test_finished_run_is_not_trained_again(tmp_path):
    first = train(tiny_spec(), tmp_path)
    rec = Recorder()
    again = train(tiny_spec(), tmp_path, log=rec.log)
    assert again == first and rec.points == []


def test_interrupted_run_resumes_bitwise(tmp_path):
    reference = Recorder()
    train(tiny_spec(), tmp_path / "a", log=reference.log)
    broken = Recorder(stop_at=15)
    with pytest.raises(KeyboardInterrupt):
        train(tiny_spec(), tmp_path / "b", log=broken.log)
    assert read_status(tmp_path / "b")["status"] == "interrupted"
    resumed = Recorder()
    train(tiny_spec(), tmp_path / "b", log=resumed.log)
    assert resumed.points[0][0] == 11  # from the step-10 checkpoint
    for key in ("train/loss", "grad/norm", "grad/cos_prev", "update/max_abs", "eval/code/loss"):
        expected = reference.series(key)
        got = {**broken.series(key), **resumed.series(key)}
        assert got == expected, key  # exact equality: bitwise on CPU


def test_a_whole_checkpoint_of_an_earlier_version_still_resumes(tmp_path):
    """Runs stored before torch.distributed.checkpoint wrote step_N.pt (one torch.save of everything): a resume
    from one repeats the steps after it exactly as a resume from the same state in the new format."""
    import shutil

    import torch.distributed.checkpoint as dcp
    from torch.distributed.checkpoint.state_dict import get_state_dict, set_state_dict

    from windtunnel.model import MiniCPM, param_groups

    spec = tiny_spec("tokens=24576", "checkpoint_steps=[6]")
    train(spec, tmp_path / "new")
    folder = checkpoint_path(tmp_path / "new", 6)
    for later in (tmp_path / "new" / "checkpoints").iterdir():
        if later != folder:
            shutil.rmtree(later)
    (tmp_path / "new" / "status.json").unlink()
    model = MiniCPM(spec.model)   # the same state, written whole as the earlier version did
    opt = torch.optim.AdamW(param_groups(model, weight_decay=spec.weight_decay), lr=spec.lr, fused=True)
    model_state, opt_state = get_state_dict(model, opt)
    dcp.load({"model": model_state, "optimizer": opt_state}, checkpoint_id=str(folder), no_dist=True)
    set_state_dict(model, opt, model_state_dict=model_state, optim_state_dict=opt_state)
    legacy = {**torch.load(folder / "state.pt", weights_only=True), **torch.load(folder / "rank0.pt", weights_only=True),
              "model": model.state_dict(), "optimizer": opt.state_dict()}
    shutil.copytree(tmp_path / "new", tmp_path / "old", ignore=shutil.ignore_patterns("step_*"))
    torch.save(legacy, tmp_path / "old" / "checkpoints" / "step_00000006.pt")
    assert checkpoint_path(tmp_path / "old", 6).suffix == ".pt"   # where a decay branch forks from
    new, old = Recorder(), Recorder()
    train(spec, tmp_path / "new", log=new.log)
    train(spec, tmp_path / "old", log=old.log)
    assert old.points[0][0] == 7 and old.series("train/loss") == new.series("train/loss")


def test_exploding_lr_ends_as_diverged_without_crash(tmp_path):
    result = train(tiny_spec("lr=30.0", "schedule.warmup_tokens=0"), tmp_path)
    assert result.status == "diverged" and result.step < 20
    status = json.loads((tmp_path / "status.json").read_text())
    assert status["status"] == "diverged"


def test_gradient_accumulation_matches_one_big_batch(tmp_path):
    whole, accumulated = Recorder(), Recorder()
    train(tiny_spec("tokens=8192"), tmp_path / "a", log=whole.log)
    train(tiny_spec("tokens=8192", "micro_batch_tokens=512"), tmp_path / "b", log=accumulated.log)
    for step, loss in whole.series("train/loss").items():
        assert accumulated.series("train/loss")[step] == pytest.approx(loss, rel=1e-4)


def test_activation_checkpointing_trains_the_same_numbers(tmp_path):
    plain, checkpointed = Recorder(), Recorder()
    train(tiny_spec("tokens=8192"), tmp_path / "a", log=plain.log)
    train(tiny_spec("tokens=8192", "activation_checkpointing=true"), tmp_path / "b", log=checkpointed.log)
    a, b = plain.series("train/loss"), checkpointed.series("train/loss")
    assert a.keys() == b.keys() and all(b[s] == pytest.approx(a[s], abs=1e-6) for s in a)


def test_compiled_model_and_loss_train_like_eager(tmp_path):
    """compile=true (model + loss in one inductor graph) follows the eager loss curve to float tolerance."""
    eager, compiled = Recorder(), Recorder()
    train(tiny_spec("tokens=20480", "compile=false"), tmp_path / "eager", log=eager.log)
    result = train(tiny_spec("tokens=20480", "compile=true"), tmp_path / "compiled", log=compiled.log)
    assert result.status == "finished"
    a, b = eager.series("train/loss"), compiled.series("train/loss")
    assert a.keys() == b.keys() and all(b[s] == pytest.approx(a[s], rel=2e-3) for s in a)


def test_compile_auto_is_on_for_long_cpu_runs_only():
    from windtunnel.train import COMPILE_CPU_TOKENS, _use_compile

    assert not _use_compile(tiny_spec(), "cpu", COMPILE_CPU_TOKENS - 1)
    assert _use_compile(tiny_spec(), "cpu", COMPILE_CPU_TOKENS) and _use_compile(tiny_spec(), "cuda", 1)
    assert not _use_compile(tiny_spec("compile=false"), "cuda", 10**9)


def test_repeated_pairs_mark_every_later_occurrence_of_a_pair():
    window = torch.tensor([[5, 1, 2, 3, 1, 2, 3, 1, 2]])
    # pairs (5,1) (1,2) (2,3) (3,1) then (1,2) (2,3) (3,1) (1,2) again: an induction head could copy the last four
    assert repeated_pairs(window).tolist() == [[False, False, False, False, True, True, True, True]]
    windows = torch.randint(0, 7, (16, 65), generator=torch.Generator().manual_seed(0))
    brute = [[any((w[j], w[j + 1]) == (w[i], w[i + 1]) for j in range(i)) for i in range(64)] for w in windows.tolist()]
    assert repeated_pairs(windows).tolist() == brute
