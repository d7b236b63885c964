"""Tests of windtunnel.schedules: exact LR values at every phase boundary, token→step conversion, errors."""

import dataclasses
import math
import pickle
import typing

import pytest
import yaml

from windtunnel.checks import build
from windtunnel.errors import SpecError, WindtunnelError
from windtunnel.schedules import (DECAY_SHAPES, SCHEDULES, ScheduleSpec, constant, cosine, cosine_loop,
                                  make_schedule, wsd)

exact = lambda value: pytest.approx(value, rel=1e-12, abs=0)


# --- pure functions ---------------------------------------------------------------------------------

def test_constant_warmup_then_flat():
    lr = dict(lr=0.01, warmup=4)
    assert [constant(s, **lr) for s in range(6)] == [exact(0.0025), exact(0.005), exact(0.0075), 0.01, 0.01, 0.01]
    assert constant(10**9, **lr) == 0.01
    assert constant(0, lr=0.01, warmup=0) == 0.01  # no warmup: step 0 is at η


COS = dict(lr=1.0, warmup=10, period=110)  # W = 10, T = 110


def test_cosine_exact_values():
    assert cosine(0, **COS) == exact(0.1)  # η·(0+1)/W
    assert cosine(9, **COS) == 1.0  # warmup's last step reaches η
    assert cosine(10, **COS) == 1.0  # exactly η at s = W
    assert cosine(35, **COS) == exact(0.1 + 0.9 * (1 + math.sqrt(0.5)) / 2)  # a quarter of the way
    assert cosine(60, **COS) == exact(0.55)  # half way: (η + 0.1η)/2
    assert cosine(110, **COS) == 0.1  # reaches 0.1η at T
    assert cosine(111, **COS) == 0.1 and cosine(10**6, **COS) == 0.1  # then stays
    assert cosine(110, **COS, final_ratio=0.0) == 0.0


def test_cosine_never_negative_and_decreasing_after_warmup():
    values = [cosine(s, lr=0.01, warmup=10, period=110) for s in range(10, 400)]
    assert min(values) == pytest.approx(0.001, rel=1e-12) and min(values) > 0
    assert all(a >= b for a, b in zip(values, values[1:]))


def test_cosine_loop_goes_back_up_after_period():
    assert [cosine_loop(s, **COS) for s in (0, 10, 60, 110)] == [cosine(s, **COS) for s in (0, 10, 60, 110)]
    assert cosine_loop(111, **COS) > cosine_loop(110, **COS)  # rises again past T
    assert cosine_loop(160, **COS) == exact(0.55)  # half way back up
    assert cosine_loop(210, **COS) == exact(1.0)  # η again at 2T − W: period 2(T − W)
    assert cosine_loop(310, **COS) == exact(0.1)  # and 0.1η at 3T − 2W


WSD = dict(lr=1.0, warmup=10, decay_start=100, decay_steps=40)  # decay over steps 100..140
HALF = {"exp": 0.5 ** 2.5, "linear": 0.5, "cosine": 0.5, "sqrt": 1 - math.sqrt(0.5)}  # g at x = 0.5
END = {"exp": 1 / 32, "linear": 0.0, "cosine": 0.0, "sqrt": 0.0}  # g at x = 1 (exp: 5 half-lives)


@pytest.mark.parametrize("shape", sorted(DECAY_SHAPES))
def test_wsd_every_shape_exact_values(shape):
    lr = lambda s, **kw: wsd(s, **WSD, shape=shape, **kw)
    assert lr(0) == exact(0.1) and lr(9) == 1.0 and lr(10) == 1.0  # warmup
    assert lr(50) == 1.0 and lr(99) == 1.0 and lr(100) == 1.0  # stable, up to and at the decay start
    assert lr(120) == exact(HALF[shape])  # decay mid
    assert lr(140) == exact(END[shape]) and lr(10**6) == exact(END[shape])  # decay end, then flat
    assert lr(120, final_ratio=0.1) == exact(0.1 + 0.9 * HALF[shape])
    assert lr(140, final_ratio=0.1) == exact(0.1 + 0.9 * END[shape])
    values = [lr(s) for s in range(100, 141)]
    assert all(a > b for a, b in zip(values, values[1:]))  # strictly decreasing during the decay


def test_wsd_exp_is_minicpm_half_life():
    minicpm = dict(lr=0.01, warmup=0, decay_start=1000, decay_steps=10**6, half_life=5000)  # §4.2: half-life 5000
    assert wsd(6000, **minicpm) == exact(0.005)
    assert wsd(11000, **minicpm) == exact(0.0025)
    assert wsd(120, **WSD, half_life=8) == exact(0.5 ** 2.5)  # 20 steps = 2.5 half-lives
    assert wsd(200, **WSD, half_life=8) == exact(0.5 ** 5)  # floors at the decay end (40 steps = 5 half-lives)


@pytest.mark.parametrize("fn, kwargs, name", [
    (constant, dict(lr=0.01, warmup=-1), "warmup"),
    (constant, dict(lr=0.0, warmup=0), "lr"),
    (cosine, dict(lr=0.01, warmup=10, period=10), "period"),
    (cosine_loop, dict(lr=0.01, warmup=10, period=5), "period"),
    (cosine, dict(lr=0.01, warmup=0, period=10, final_ratio=1.5), "final_ratio"),
    (wsd, dict(lr=0.01, warmup=10, decay_start=5, decay_steps=10), "decay_start"),
    (wsd, dict(lr=0.01, warmup=0, decay_start=5, decay_steps=0), "decay_steps"),
    (wsd, dict(lr=0.01, warmup=0, decay_start=5, decay_steps=10, shape="step"), "shape"),
    (wsd, dict(lr=0.01, warmup=0, decay_start=5, decay_steps=10, shape="linear", half_life=3), "half_life"),
    (wsd, dict(lr=0.01, warmup=0, decay_start=5, decay_steps=10, half_life=0), "half_life"),
])
def test_bad_arguments_name_the_argument(fn, kwargs, name):
    with pytest.raises(WindtunnelError, match=rf"argument {name}=.*allowed: "):
        fn(0, **kwargs)


def test_negative_step_rejected():
    with pytest.raises(WindtunnelError, match="step=-1"):
        constant(-1, lr=0.01, warmup=0)


# --- ScheduleSpec and make_schedule ----------------------------------------------------------------

def test_registry_names_every_kind():
    assert SCHEDULES == {"constant": constant, "cosine": cosine, "cosine_loop": cosine_loop, "wsd": wsd}


def test_make_schedule_warmup_and_period_round_up_to_steps():
    spec = ScheduleSpec(kind="cosine", warmup_tokens=1050, period_tokens=50_001)  # 10.5 → 11 steps, 500.01 → 501
    lr = make_schedule(spec, lr=0.01, total_steps=1000, batch_tokens=100)
    assert lr(9) == exact(0.01 * 10 / 11) and lr(10) == 0.01
    assert lr(501) == exact(0.001) and lr(500) > 0.001


def test_make_schedule_cosine_period_defaults_to_run():
    lr = make_schedule(ScheduleSpec(kind="cosine"), lr=0.01, total_steps=1000, batch_tokens=100)
    assert lr(0) == 0.01 and lr(500) == exact(0.0055) and lr(1000) == exact(0.001)


def test_make_schedule_wsd_default_decays_last_tenth():
    lr = make_schedule(ScheduleSpec(), lr=0.01, total_steps=1000, batch_tokens=100)  # wsd, exp, 10%
    assert lr(899) == 0.01 and lr(900) == 0.01  # decay starts at step 900
    assert lr(950) == exact(0.01 * 0.5 ** 2.5) and lr(1000) == exact(0.01 / 32)


def test_make_schedule_decay_fraction_rounds_to_nearest_step():
    lr = make_schedule(ScheduleSpec(decay_shape="linear"), lr=1.0, total_steps=70, batch_tokens=1)
    assert lr(63) == 1.0 and lr(64) == exact(6 / 7)  # 0.1·70 = 7.000000000000001 → 7 steps, not 8


def test_make_schedule_decay_start_tokens_decays_to_the_end():
    spec = ScheduleSpec(decay_start_tokens=80_001, decay_shape="linear", final_ratio=0.1)  # → step 801
    lr = make_schedule(spec, lr=1.0, total_steps=1000, batch_tokens=100)
    assert lr(801) == 1.0 and lr(802) == exact(1 - 0.9 / 199) and lr(1000) == exact(0.1)


def test_make_schedule_half_life_in_tokens():
    spec = ScheduleSpec(half_life_tokens=2_500)  # 25 steps of 100 tokens
    lr = make_schedule(spec, lr=1.0, total_steps=1000, batch_tokens=100)
    assert lr(925) == exact(0.5) and lr(950) == exact(0.25) and lr(1000) == exact(0.5 ** 4)  # 100 steps = 4 half-lives


def test_make_schedule_is_picklable():
    lr = make_schedule(ScheduleSpec(), lr=0.01, total_steps=1000, batch_tokens=100)
    assert pickle.loads(pickle.dumps(lr))(950) == lr(950)  # Ray ships it to workers


@pytest.mark.parametrize("spec, key", [
    (ScheduleSpec(decay_start_tokens=100_000), "schedule.decay_start_tokens"),  # = the run's tokens: no decay
    (ScheduleSpec(decay_start_tokens=200_000), "schedule.decay_start_tokens"),  # beyond the run
    (ScheduleSpec(warmup_tokens=5_000, decay_start_tokens=1_000), "schedule.decay_start_tokens"),
    (ScheduleSpec(warmup_tokens=95_000), "schedule.decay_fraction"),  # decay would start inside warmup
    (ScheduleSpec(kind="cosine", warmup_tokens=1_000, period_tokens=1_000), "schedule.period_tokens"),
    (ScheduleSpec(kind="constant", warmup_tokens=100_001), "schedule.warmup_tokens"),
])
def test_make_schedule_rejects_impossible_specs(spec, key):
    with pytest.raises(SpecError) as err:
        make_schedule(spec, lr=0.01, total_steps=1000, batch_tokens=100)
    assert err.value.key == key and "100000 tokens" in str(err.value)


def schedule(d, file="sweeps/s.yaml"):
    return build(ScheduleSpec, d, file=file, prefix="schedule.")


def test_a_schedule_reads_yaml_in_one_number_syntax():
    d = yaml.safe_load("kind: wsd\nwarmup_tokens: 1_000\ndecay_shape: sqrt\nfinal_ratio: 0.1\n")
    assert schedule(d) == ScheduleSpec(kind="wsd", warmup_tokens=1000, decay_shape="sqrt", final_ratio=0.1)
    assert schedule({}) == ScheduleSpec()
    for given in (1e6, "1e6", "1_000_000", 1_000_000.0):  # YAML reads 1e6 as text, 1.0e6 as a float: all one integer
        assert schedule({"warmup_tokens": given}).warmup_tokens == 1_000_000


@pytest.mark.parametrize("d, key, text", [
    ({"decay_shap": "exp"}, "schedule.decay_shap", "did you mean 'decay_shape'"),
    ({"kind": "cosin"}, "schedule.kind", "did you mean 'cosine'? one of 'constant', 'cosine', 'cosine_loop', 'wsd'"),
    ({"kind": ["wsd"]}, "schedule.kind", "one of 'constant', 'cosine'"),
    ({"warmup_tokens": 1.5e3 + 0.5}, "schedule.warmup_tokens", "an integer ≥ 0 (tokens)"),
    ({"warmup_tokens": True}, "schedule.warmup_tokens", "integer"),
    ({"warmup_tokens": -1}, "schedule.warmup_tokens", "≥ 0"),
    ({"period_tokens": 0, "kind": "cosine"}, "schedule.period_tokens", "≥ 1"),
    ({"decay_fraction": 0}, "schedule.decay_fraction", "(0, 1]"),
    ({"decay_fraction": "10%"}, "schedule.decay_fraction", "(0, 1]"),
    ({"final_ratio": 2}, "schedule.final_ratio", "[0, 1]"),
    ({"decay_shape": "step"}, "schedule.decay_shape", "one of 'exp', 'linear', 'cosine', 'sqrt'"),
    ({"decay_shape": "linear", "half_life_tokens": 10}, "schedule.half_life_tokens", "only decay_shape 'exp'"),
    ({"kind": "cosine", "decay_shape": "linear"}, "schedule.decay_shape", "kind 'cosine' does not use it"),
    ({"kind": "cosine", "decay_fraction": 0.2}, "schedule.decay_fraction", "kind 'cosine' does not use it"),
    ({"kind": "constant", "final_ratio": 0.1}, "schedule.final_ratio", "kind 'constant' does not use it"),
    ({"kind": "wsd", "period_tokens": 10}, "schedule.period_tokens", "kind 'wsd' does not use it"),
    ({"decay_start_tokens": 10, "decay_fraction": 0.2}, "schedule.decay_fraction", "leave it out"),
])
def test_schedule_errors_name_file_key_and_fix(d, key, text):
    with pytest.raises(SpecError) as err:
        schedule(d)
    assert (err.value.file, err.value.key) == ("sweeps/s.yaml", key)
    assert str(err.value).startswith(f"sweeps/s.yaml: {key}=") and text in str(err.value)


def test_a_schedule_is_a_mapping():
    with pytest.raises(SpecError, match=r"x.yaml: schedule='wsd' is not allowed"):
        schedule("wsd", file="x.yaml")


def test_spec_is_frozen_and_keyword_only():
    with pytest.raises(dataclasses.FrozenInstanceError):
        ScheduleSpec().kind = "cosine"
    with pytest.raises(SpecError):
        ScheduleSpec("cosine")


def test_the_spec_offers_every_schedule_and_shape():
    hints = typing.get_type_hints(ScheduleSpec)
    assert set(typing.get_args(hints["kind"])) == set(SCHEDULES)
    assert set(typing.get_args(hints["decay_shape"])) == set(DECAY_SHAPES)
