"""The findings table: every row from whatever the studies wrote, sparse or complete, never a crash or a guess."""

import json

from windtunnel.findings import NO_BACKTEST, NOT_RUN, findings, table


def _write(root, study, payload):
    (root / study).mkdir(parents=True)
    (root / study / "fit.json").write_text(json.dumps(payload))


def test_an_empty_results_folder_is_not_run_everywhere(tmp_path):
    rows = findings(tmp_path)
    assert len(rows) == 17 and {f.verdict for f in rows} == {NOT_RUN}
    assert table(rows).count("\n") == 18


def test_a_small_ladder_without_backtests_or_bootstrap_still_reads(tmp_path):
    """What `make demo` writes: two sizes (no backtest), no bootstrap interval, an LR spread without interval."""
    _write(tmp_path, "scaling_law", {"alpha": 0.5, "beta": 0.4, "n_kind": "total", "intervals": {},
                                     "prediction": {"form": "chinchilla", "backtests": []},
                                     "candidates": [{"form": "chinchilla", "n_kind": "total", "backtests": []}]})
    _write(tmp_path, "batch_size", {"k": 3e4, "gamma": 3.0, "intervals": {}, "n_optima": 4, "n_outside": 0,
                                    "n_concave": 0})
    _write(tmp_path, "lr", {"spread": {"mup": {"ratio": 1.2, "interval": None, "widths": None}}, "goal": {
        "holds": None, "why": "no µP spread interval"}})
    _write(tmp_path, "wsd", {"wsd_vs_cosine": [], "cosine_periods": [], "decay_lengths": [], "envelope": {},
                             "equal_compute": []})
    _write(tmp_path, "decay_dynamics", {"branches": [{"name": "b", "loss_before": 3.0, "loss_end": 2.9}]})
    rows = findings(tmp_path)

    def row(start):
        (found,) = [f for f in rows if f.paper.startswith(start)]
        return found

    assert row("L(N, D)").verdict == NO_BACKTEST and "too few sizes" in row("L(N, D)").here  # fitted, not "not run"
    assert "not bootstrapped" in row("bs_opt").here
    assert row("under µP").verdict == "partly" and "spread 1.20×" in row("under µP").here
    assert row("the curvature K").verdict == NOT_RUN  # branches trained before D1/D2 were logged


def test_the_mup_check_row_reads_the_cached_check(tmp_path):
    (tmp_path / "cache" / "mupcheck").mkdir(parents=True)
    check = {"widths": [16, 256], "mup": {"embed": 0.01, "logits": -0.12}, "sp": {"hidden": 0.7, "logits": 0.6},
             "passed": True}
    (tmp_path / "cache" / "mupcheck" / "abc.json").write_text(json.dumps(check))
    (row,) = [f for f in findings(tmp_path) if f.section == "§3 (Table 7)"]
    assert row.verdict == "reproduced" and "±0.12 (logits)" in row.here and "+0.70, +0.60" in row.here


def test_the_ladder_row_states_smeared_keys_as_a_deviation_with_the_seed_spread(tmp_path):
    points = [{"model": m, "D": d, "seed": s, "loss": loss} for m, d, s, loss in [
        ("a", 1e6, 0, 2.00), ("a", 1e6, 1, 2.02), ("a", 2e6, 0, 1.900), ("a", 2e6, 1, 1.901), ("b", 1e6, 0, 1.8)]]
    law = {"alpha": 0.5, "beta": 0.4, "n_kind": "total", "intervals": {}, "candidates": [], "points": points,
           "prediction": {"backtests": []}, "mup_base": {"d_head": 16, "smear_keys": True}}
    _write(tmp_path, "scaling_law", law)
    (row,) = [f for f in findings(tmp_path) if f.section == "§5 (ladder)"]
    assert row.verdict == "deviation" and "smeared keys" in row.here
    assert "max 1.00% (a at 1,000,000 tokens) over 2 points" in row.here  # b has one seed: no spread
    law["mup_base"]["smear_keys"] = False
    (tmp_path / "scaling_law" / "fit.json").write_text(json.dumps(law))
    (row,) = [f for f in findings(tmp_path) if f.section == "§5 (ladder)"]
    assert row.verdict == "reproduced" and row.here.startswith("MiniCPM's attention")
