"""µP coordinate check: update sizes against width are flat under µP and grow under SP, a broken µP rule fails,
the --json contract, and the gate that keeps a sweep over a broken µP ladder from starting (cached per base)."""

import dataclasses
import json
import math

import pytest

from windtunnel import cli, mupcheck
from windtunnel.config import get_model
from windtunnel.mupcheck import MUP_TOL, SP_GAP, CoordCheck, base_of, check_cached, coord_check

FEW = [16, 64, 256]  # 16× at three widths: enough to see a broken rule, faster than the default five
LAYERS = ["embed", "blocks.0.attn", "blocks.0.mlp", "blocks.1.attn", "blocks.1.mlp", "hidden", "logits"]
SWEEP = """
name: gate
base: {batch_tokens: 2048, seq_len: 64}
scales:
  micro:
    models: [micro-24k]
    tokens: 4096
    grid: {lr: [0.01]}
"""


@pytest.fixture(scope="module")
def micro():
    return coord_check(base_of(get_model("micro-24k")))


def test_every_layer_is_measured_the_embedding_included(micro):
    assert list(micro.mup) == LAYERS and list(micro.sp) == LAYERS
    assert micro.widths == [16, 32, 64, 128, 256]
    assert all(math.isfinite(micro.mup[k]) and math.isfinite(micro.sp[k]) for k in LAYERS)
    assert all(len(row) == mupcheck.STEPS and min(row) > 0 for row in micro.sizes["mup"]["embed"])


def test_mup_is_flat_and_sp_grows(micro):
    assert micro.passed and micro.reason == ""
    assert max(abs(v) for v in micro.mup.values()) < MUP_TOL
    for layer in ("hidden", "logits"):
        assert micro.sp[layer] > micro.mup[layer] + SP_GAP, layer


def test_hidden_lr_not_divided_by_m_fails(monkeypatch):
    from windtunnel import model

    groups = model.param_groups
    monkeypatch.setattr(model, "param_groups", lambda m, *, weight_decay: [
        {**g, "lr_scale": 1.0} for g in groups(m, weight_decay=weight_decay)])
    check = coord_check(base_of(get_model("micro-24k")), widths=FEW)
    assert not check.passed and check.reason.startswith("µP update size of blocks.")


def test_logits_not_divided_by_m_fail(monkeypatch):
    from windtunnel import model

    class NoLogitScale(model.MiniCPM):
        def __init__(self, spec):
            super().__init__(spec)
            self.logit_scale = 1.0

    monkeypatch.setattr(model, "MiniCPM", NoLogitScale)
    check = coord_check(base_of(get_model("micro-24k")), widths=FEW)
    assert not check.passed and check.mup["logits"] > MUP_TOL and "logits" in check.reason


def test_json_is_one_object_with_the_contract_keys(capsys):
    assert cli.main(["check-mup", "--json", "--widths", *map(str, FEW)]) == 0
    out = json.loads(capsys.readouterr().out)
    assert out["widths"] == FEW and out["passed"] is True
    assert set(out["mup"]) == set(out["sp"]) == set(LAYERS)


def test_table_and_figure(micro, capsys, monkeypatch, tmp_path):
    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path))
    monkeypatch.setattr(mupcheck, "coord_check", lambda base, widths=None: micro)
    assert cli.main(["check-mup"]) == 0
    out = capsys.readouterr().out
    assert "embed" in out and "passed" in out and str(tmp_path / "plots" / "coord_check.png") in out
    assert (tmp_path / "plots" / "coord_check.png").stat().st_size > 0


def test_widths_must_span_16x(capsys):
    assert cli.main(["check-mup", "--widths", "16", "32", "128"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "spanning ≥16×" in err


def test_cache_is_used_the_second_time(micro, monkeypatch, tmp_path):
    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path))
    calls = []
    monkeypatch.setattr(mupcheck, "coord_check", lambda base, widths=None: calls.append(base) or micro)
    base = base_of(get_model("micro-24k"))
    first, path = check_cached(base)
    again, same = check_cached(base)
    assert len(calls) == 1 and path == same and path.parent == tmp_path / "cache" / "mupcheck"
    assert again == first == micro  # read back from the JSON unchanged
    other = dataclasses.replace(base, scale_emb=10.0)
    assert mupcheck.check_id(other, [16]) != mupcheck.check_id(base, [16])


def _sweep(tmp_path, monkeypatch):
    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path / "results"))
    started = []
    monkeypatch.setattr("windtunnel.orchestrate.run_graph", lambda runs, **kw: started.append(runs) or [])
    path = tmp_path / "gate.yaml"
    path.write_text(SWEEP)
    return str(path), started


def test_a_sweep_refuses_to_start_when_mup_fails(micro, tmp_path, monkeypatch, capsys):
    spec, started = _sweep(tmp_path, monkeypatch)
    failed = dataclasses.replace(micro, passed=False, reason="µP update size of blocks.0.mlp scales as width^+0.96")
    monkeypatch.setattr(mupcheck, "check_cached", lambda base: (failed, tmp_path / "x.json"))
    assert cli.main(["sweep", spec]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "blocks.0.mlp" in err and "+0.96" in err and "--no-mup-check" in err
    assert not started


def test_no_mup_check_skips_it_and_a_passing_check_lets_the_sweep_start(micro, tmp_path, monkeypatch):
    spec, started = _sweep(tmp_path, monkeypatch)
    monkeypatch.setattr(mupcheck, "check_cached", lambda base: pytest.fail("checked despite --no-mup-check"))
    assert cli.main(["sweep", spec, "--no-mup-check"]) == 0 and len(started) == 1
    monkeypatch.setattr(mupcheck, "check_cached", lambda base: (micro, tmp_path / "x.json"))
    assert cli.main(["sweep", spec]) == 0 and len(started) == 2


def test_sp_models_are_not_checked(monkeypatch):
    monkeypatch.setattr(mupcheck, "check_cached", lambda base: pytest.fail("an SP ladder has no µP to check"))
    sp = dataclasses.replace(get_model("micro-24k"), parametrization="sp")
    assert mupcheck.require_mup([sp]) == []
