"""The wind tunnel's own test: plan a target beyond the ladder from the fits, train it as planned, compare.

    windtunnel validate micro-1.3m --tokens 9227469 [--workers 2]    # make validate

1) `plan_from_fits` plans the target (results/plans/TARGET.yaml); an incomplete plan is refused with its gaps,
   unless `--set key=value` gives each value the plan left out (`launch.plan_spec`: the rest is the plan's),
   which the comparison then lists as given;
2) the target trains with the plan's `train:` section (tokens, batch, µP base and LR, WSD schedule, context)
   through `windtunnel launch` (Ray Train, `--workers` data-parallel workers; `make validate`: 2);
3) its final held-out loss (mean bits per byte over the held-out sets, as the ladder's) is compared with the
   predicted value and 95% prediction interval. The MLflow run (experiment `validate`) holds the prediction as
   params, the actual loss and error as metrics, and tags naming the plan and the fits' file hashes;
   results/validate/TARGET.json holds the comparison (`make validate` copies it to bench/results/validate.json).
"""

from __future__ import annotations

from pathlib import Path

from windtunnel.errors import WindtunnelError

__all__ = ["validate"]


def validate(target: str, *, tokens: float | None = None, compute: float | None = None,
             given: list[str] = (), workers: int = 1) -> dict:
    """Plan `target`, train it as planned through `windtunnel launch` on `workers` Ray Train workers and compare;
    returns the comparison (also in results/validate/TARGET.json). `given`: `key=value` values the plan left out
    (batch_tokens, lr), and only those."""
    from windtunnel.launch import launch
    from windtunnel.plan import plan_from_fits
    from windtunnel.tracking import RunLogger, metric_history

    _, plan_path = plan_from_fits(target, tokens=tokens, compute=compute)
    run = launch(plan_path, workers=workers, given=given, experiment="validate")
    if run["status"] != "finished":
        raise WindtunnelError(f"{target} {run['status']} after {run['result'].get('tokens', 0):,} tokens; "
                              f"see {run['run_dir']}")
    out = run["comparison"]
    with RunLogger.in_folder(Path(run["run_dir"]), experiment="validate", run_name=target, params={}, tags={}) as logger:
        # a later comparison of the same run (refitted laws) is the next point: params keep the first prediction
        earlier = len(metric_history(logger.run_id, "validate/actual"))
        logger.log({"validate/actual": out["actual"], "validate/predicted": out["predicted"], "validate/low": out["low"],
                    "validate/high": out["high"], "validate/rel_error": out["rel_error"],
                    "validate/inside": float(out["inside"])}, step=run["result"]["step"] + earlier)
    path = Path(run["written"])
    _figure(out, sets=list(out["eval"]), path=path.with_suffix(".png"))
    return {**out, "written": str(path)}


def _figure(out: dict, *, sets: list[str], path: Path) -> None:
    import pandas as pd

    from windtunnel import plots
    from windtunnel.tracking import metric_history

    series = [metric_history(out["mlflow_run"], f"eval/{name}/bpb").set_index("step")["value"] for name in sets]
    curve = pd.concat(series, axis=1).dropna().mean(axis=1)
    batch = out["tokens"] / curve.index.max()
    plots.validation(pd.DataFrame({"tokens": curve.index * batch, "loss": curve.to_numpy()}), out, path)
