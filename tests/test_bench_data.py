"""The public ladders copied into bench/data/public_ladders/ read through bench/public_ladders.py's loaders (no fits)."""

import importlib.util
import sys
from pathlib import Path

import numpy as np
import pytest

BENCH = Path(__file__).resolve().parents[1] / "bench" / "public_ladders.py"


@pytest.fixture(scope="module")
def bench():
    spec = importlib.util.spec_from_file_location("public_ladders", BENCH)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module   # its dataclass looks its module up while the file executes
    spec.loader.exec_module(module)
    yield module
    sys.modules.pop(spec.name)


def test_loaders_read_every_copied_ladder(bench):
    ladders = bench.load_ladders()
    rows = {name: len(frame) for name, frame in ladders.items()}
    assert rows == {bench.OLMO: 32, bench.PORIAN[0]: 131, bench.PORIAN[1]: 121, bench.PORIAN[2]: 123, bench.PORIAN[3]: 116}
    for frame in ladders.values():
        assert {"N", "D", "loss", "group", "name", "role"} <= set(frame.columns)
        assert np.isfinite(frame[["N", "D", "loss"]].to_numpy()).all() and (frame[["N", "D", "loss"]] > 0).all().all()
    olmo = ladders[bench.OLMO]
    assert olmo["group"].nunique() == 32                      # every OLMo row is its own run, reruns too
    assert list(olmo.loc[olmo["role"] == "target", "name"]) == ["peteish7-anneal", "peteish13"]
    assert "anneals" in olmo.set_index("name").loc["peteish7-anneal", "note"]
    for name in bench.PORIAN:
        frame = ladders[name]
        assert frame["group"].nunique() == frame["N"].nunique() == 16   # one run (loss curve) per size
        np.testing.assert_allclose(6 * frame["N"] * frame["D"], frame["flops"], rtol=1e-12)


def test_designs_hold_out_by_rule(bench):
    splits = {(d.ladder, d.design): d for d in bench.designs(bench.load_ladders())}
    olmo = splits[(bench.OLMO, "largest_sizes")]
    assert set(olmo.fitted["model"]) == {"190M", "370M", "760M", "1B"} and len(olmo.fitted) == 24
    assert set(olmo.targets["model"]) == {"3B", "7B", "13B"} and len(olmo.targets) == 8
    for name in bench.PORIAN:
        budgets = splits[(name, "largest_budgets")]
        assert budgets.fitted["flops"].max() == 1.6e18 and budgets.targets["flops"].min() == 3.2e18
        sizes = splits[(name, "largest_sizes")]
        assert sizes.fitted["N"].nunique() == 12 and sizes.targets["N"].nunique() == 4
        assert sizes.fitted["N"].max() < sizes.targets["N"].min()


def test_the_shipped_floor_and_limits_are_the_calibration_rule_on_the_public_ladders(bench):
    """predict.MISSPEC_FLOOR and predict.LIMITS are not tuned by hand: they are `bench/public_ladders.py --calibrate`'s
    rule (medians over the five ladders of their own s and of their backtests' reach), to their printed precision."""
    from windtunnel.predict import LIMITS, MISSPEC_FLOOR

    rule = bench.rule({name: bench.calibrate(rows) for name, rows in bench.load_ladders().items()})
    assert rule["floor"] == pytest.approx(MISSPEC_FLOOR, abs=5e-5)
    assert rule["limits"] == pytest.approx(LIMITS, abs=0.005)
