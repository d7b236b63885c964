"""windtunnel monitor: a run against a plan's predicted curve; where it left the band, and bad CSVs in one line."""

import json

import numpy as np
import pytest
import yaml

from windtunnel import cli, monitor

TOKENS = np.arange(1, 41) * 100_000.0   # the plan's evaluation points
PLANNED = 2.0 + 3.0 * (TOKENS / 1e5) ** -0.5   # a falling curve
HALF = 0.01                               # the band's relative half-width


@pytest.fixture
def plan(tmp_path):
    path = tmp_path / "plan.yaml"
    curve = {"tokens": TOKENS.tolist(), "loss": PLANNED.tolist(), "low": (PLANNED * (1 - HALF)).tolist(),
             "high": (PLANNED * (1 + HALF)).tolist(), "lr": [0.01] * TOKENS.size}
    path.write_text(yaml.safe_dump({"target": "micro-1.3m", "train": {}, "predicted_curve": curve}))
    return path


def write_csv(path, tokens, loss, lr=0.01):
    lines = ["tokens,lr,loss"] + [f"{t:.0f},{lr},{x:.6f}" for t, x in zip(tokens, loss)]
    path.write_text("\n".join(lines) + "\n")
    return path


def monitor_cli(capsys, *args):
    code = cli.main(["monitor", *map(str, args)])
    out = capsys.readouterr()
    return code, out.out, out.err


def test_a_run_as_planned_stays_inside(plan, tmp_path, capsys):
    rng = np.random.default_rng(0)
    tokens = TOKENS[::2] + 50_000  # evaluated between the plan's points: interpolated there
    loss = np.interp(np.log(tokens), np.log(TOKENS), PLANNED) * (1 + rng.normal(0, HALF / 4, tokens.size))
    code, out, _ = monitor_cli(capsys, plan, "--csv", write_csv(tmp_path / "ok.csv", tokens, loss))
    assert code == 0 and "inside the band" in out


def test_a_run_that_stalls_is_caught_where_it_left(plan, tmp_path, capsys):
    loss = PLANNED.copy()
    loss[5] *= 1.05               # one stray evaluation: not an alarm with k = 3
    loss[20:] = loss[20]          # from the 21st evaluation the loss stops falling
    csv = write_csv(tmp_path / "stall.csv", TOKENS, loss)
    verdict = monitor.compare(monitor.plan_curve(plan), monitor.read_csv(csv), k=3)
    first_out = np.flatnonzero(loss > PLANNED * (1 + HALF))[1]  # [0] is the stray one
    assert verdict.left["tokens"] == TOKENS[first_out] and verdict.left["side"] == "above"
    code, out, _ = monitor_cli(capsys, plan, "--csv", csv, "--json")
    assert code == 1 and json.loads(out)["left"]["tokens"] == TOKENS[first_out]
    assert monitor.compare(monitor.plan_curve(plan), monitor.read_csv(csv), k=1).left["tokens"] == TOKENS[5]


def test_an_lr_unlike_the_plan_is_noted(plan, tmp_path):
    verdict = monitor.compare(monitor.plan_curve(plan), monitor.read_csv(write_csv(tmp_path / "lr.csv", TOKENS, PLANNED,
                                                                                   lr=0.04)))
    assert verdict.left is None and verdict.lr_departs == {"tokens": TOKENS[0], "lr": 0.04, "planned": 0.01}


@pytest.mark.parametrize("text, message", [
    ("tokens,loss\n1,2\n", "missing column 'lr'; the columns must be tokens, lr, loss (found: tokens, loss)"),
    ("tokens,lr,loss\n100000,0.01,3.0\n200000,0.01,\n",
     "line 3 (the header is line 1), column 'loss': an empty cell (or NaN) is not allowed; a finite number > 0"),
    ("tokens,lr,loss\n100000,0.01,3.0\n200000,0.01,nan\n", "line 3 (the header is line 1), column 'loss': an empty cell"),
    ("tokens,lr,loss\n100000,abc,3.0\n", "line 2 (the header is line 1), column 'lr': 'abc' is not allowed; a finite "
                                          "number >= 0"),
    ("tokens,lr,loss\n200000,0.01,3.0\n100000,0.01,2.9\n",
     "line 3 (the header is line 1), column 'tokens': 100000 is not allowed; tokens must rise from line to line "
     "(the line before has 200000)"),
])
def test_a_bad_csv_is_one_line_naming_file_and_column(plan, tmp_path, capsys, text, message):
    csv = tmp_path / "bad.csv"
    csv.write_text(text)
    code, _, err = monitor_cli(capsys, plan, "--csv", csv)
    assert code == 2 and err.count("\n") == 1 and f"{csv}: {message}" in err


def test_a_plan_without_a_curve_says_how_to_get_one(tmp_path, capsys):
    path = tmp_path / "old.yaml"
    path.write_text("target: micro-1.3m\ntrain: {}\n")
    code, _, err = monitor_cli(capsys, path, "--csv", write_csv(tmp_path / "c.csv", TOKENS, PLANNED))
    assert code == 2 and "predicted_curve is missing" in err and "windtunnel plan" in err


def test_an_mlflow_run_is_read_by_its_id(plan, tmp_path, monkeypatch, capsys):
    monkeypatch.setenv("WINDTUNNEL_RESULTS", str(tmp_path / "results"))
    from windtunnel.tracking import RunLogger

    run = RunLogger(experiment="launch", run_name="micro-1.3m", params={}, tags={})
    batch = 50_000
    for step in range(1, 81):
        metrics = {"lr": 0.01, "tokens": step * batch}
        if step % 4 == 0:  # an evaluation every 200,000 tokens, 3% above the plan from 2M tokens on
            planned = float(np.interp(np.log(step * batch), np.log(TOKENS), PLANNED))
            metrics["eval/code/bpb"] = planned * (1.03 if step * batch >= 2_000_000 else 1.0)
        run.log(metrics, step)
    run.finish("FINISHED")
    code, out, _ = monitor_cli(capsys, plan, "--run", run.run_id)
    assert code == 1 and "LEFT THE BAND at 2,000,000 tokens" in out
