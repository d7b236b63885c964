"""The wind tunnel's own test: plan a target beyond the ladder from the fits, train it as planned, compare.

    windtunnel validate micro-1.3m --tokens 9227469 [--set batch_tokens=8192]     # make validate

1) `plan_from_fits` plans the target (results/plans/TARGET.yaml); an incomplete plan is refused with its gaps,
   unless `--set key=value` gives each value the plan left out (`launch.plan_spec`: the rest is the plan's),
   which the comparison then lists as given;
2) the target trains with the plan's `train:` section (tokens, batch, µP base and LR, WSD schedule, context);
3) its final held-out loss (mean bits per byte over the held-out sets, as the ladder's) is compared with the
   predicted value and 95% prediction interval. The MLflow run (experiment `validate`) holds the prediction as
   params, the actual loss and error as metrics, and tags naming the plan and the fits' file hashes;
   results/validate/TARGET.json holds the comparison (`make validate` copies it to bench/results/validate.json).
"""

from __future__ import annotations

import json
from pathlib import Path

from windtunnel.errors import WindtunnelError
from windtunnel.paths import results_dir, write_atomic

__all__ = ["validate"]


def validate(target: str, *, tokens: float | None = None, compute: float | None = None,
             given: list[str] = ()) -> dict:
    """Plan, train and compare `target`; returns the comparison (also written to results/validate/TARGET.json).
    `given`: `key=value` overrides for the values the plan left out (batch_tokens, lr), and only those."""
    from windtunnel.launch import plan_spec
    from windtunnel.orchestrate import run_dir, train_spec
    from windtunnel.plan import plan_from_fits
    from windtunnel.tracking import RunLogger, metric_history

    plan, plan_path = plan_from_fits(target, tokens=tokens, compute=compute)
    spec, _ = plan_spec(plan, source=str(plan_path), given=given)
    predicted = plan["predicted_loss"]
    plan_path = plan_path.relative_to(Path.cwd()) if plan_path.is_relative_to(Path.cwd()) else plan_path
    tags = {"windtunnel.plan": str(plan_path), **{f"windtunnel.fit.{k}": v for k, v in plan["sources"].items()}}
    params = {"predicted_loss": predicted["value"], "predicted_low": predicted["interval95"][0],
              "predicted_high": predicted["interval95"][1]}
    run, result = train_spec(spec, experiment="validate", tags=tags, params=params)
    if result["status"] != "finished":
        raise WindtunnelError(f"{target} {result['status']} after {result['tokens']:,} tokens; see {run_dir(run)}")
    actual = sum(v["bpb"] for v in result["eval"].values()) / len(result["eval"])
    low, high = predicted["interval95"]
    out = {"target": target, "n_params": plan["n_params"], "n_kind": plan["n_kind"], "tokens": result["tokens"],
           "predicted": predicted["value"], "low": low, "high": high, "actual": actual,
           "rel_error": predicted["value"] / actual - 1, "inside": low <= actual <= high,
           "n_extrapolation": predicted["n_extrapolation"], "eval": {k: v["bpb"] for k, v in result["eval"].items()},
           "plan": str(plan_path), "sources": plan["sources"], "train": plan["train"], "given": list(given),
           "form": predicted["form"],
           "tokens_per_s": result["tokens_per_s"], "wall_s": result["wall_s"]}
    with RunLogger.in_folder(run_dir(run), experiment="validate", run_name=run.name, params={}, tags={}) as logger:
        # a later comparison of the same run (refitted laws) is the next point: params keep the first prediction
        earlier = len(metric_history(logger.run_id, "validate/actual"))
        logger.log({"validate/actual": actual, "validate/predicted": predicted["value"], "validate/low": low,
                    "validate/high": high, "validate/rel_error": out["rel_error"],
                    "validate/inside": float(out["inside"])}, step=result["step"] + earlier)
        out["mlflow_run"] = logger.run_id
    path = results_dir() / "validate" / f"{target}.json"
    path.parent.mkdir(parents=True, exist_ok=True)
    write_atomic(path, json.dumps(out, indent=1) + "\n")
    _figure(out, sets=list(result["eval"]), path=path.with_suffix(".png"))
    return {**out, "written": str(path)}


def _figure(out: dict, *, sets: list[str], path: Path) -> None:
    import pandas as pd

    from windtunnel import plots
    from windtunnel.tracking import metric_history

    series = [metric_history(out["mlflow_run"], f"eval/{name}/bpb").set_index("step")["value"] for name in sets]
    curve = pd.concat(series, axis=1).dropna().mean(axis=1)
    batch = out["tokens"] / curve.index.max()
    plots.validation(pd.DataFrame({"tokens": curve.index * batch, "loss": curve.to_numpy()}), out, path)


def read_validations(root: Path | None = None) -> list[dict]:
    """Every results/validate/*.json, for the report."""
    folder = (root or results_dir()) / "validate"
    return [json.loads(p.read_text()) for p in sorted(folder.glob("*.json"))] if folder.is_dir() else []
