"""The `windtunnel` command: parse, call one function, print. Bad input is one line on stderr, exit 2.

    windtunnel [--version] COMMAND [--models DIR] [--results DIR] ...   (the two global options go before or after
        the command; --models adds DIR's ladder files to the packaged ones, replacing a packaged shape of the same
        name, $WINDTUNNEL_MODELS; --results is where
        everything is written, $WINDTUNNEL_RESULTS, default ./results)
    windtunnel models [--json]
    windtunnel peak
    windtunnel train MODEL [--set-file FILE] [--set key=value ...] [--dry-run]
    windtunnel sweep SPEC.yaml|NAME [--scale micro|demo|paper] [--set-file FILE] [--dry-run] [--json] [--no-mup-check]
                     [--allow-repeat]
    windtunnel search SPEC.yaml|NAME [--scale micro|demo|paper] [--trials N]
    windtunnel fit STUDY [--scale S] [--no-plots] | fit --all [--scale S] [--no-plots]
    windtunnel fit scaling-law|batch-size|lr|envelope (--sweep NAME [--scale S] | --csv PATH [--n-col ...]) [--json]
    windtunnel plan TARGET [--tokens T | --compute FLOPS]
    windtunnel validate TARGET [--tokens T | --compute FLOPS]
    windtunnel launch PLAN.yaml [--workers N] [--gpus-per-worker 0|1] [--set key=value ...] [--no-prediction]
                      [--k 3] [--stop-off-prediction] [--dry-run [--json]]
                      (a dry run prints the layout and the resolved spec, with its run id)
    windtunnel monitor PLAN.yaml (--run MLFLOW_RUN_ID | --csv CURVE.csv) [--k 3] [--json]
    windtunnel report
    windtunnel check-mup [--model-base NAME] [--widths W ...] [--json]
    windtunnel ui [--port 5000]
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path

from windtunnel.checks import FRACTION, NON_NEGATIVE, NON_NEGATIVE_INT, PORT, POSITIVE, POSITIVE_INT, option
from windtunnel.counts import DEFAULT_FLOPS, H100_FLOPS
from windtunnel.errors import WindtunnelError, one_line

__all__ = ["main"]


def cmd_models(args) -> None:
    from windtunnel.config import ladders, models_dir
    from windtunnel.counts import n_params

    models, files = ladders()
    mine = models_dir()
    rows = [{"name": name, "n_params": n_params(spec), "n_params_with_embedding": n_params(spec, embedding=True),
             "d_model": spec.d_model, "d_ff": spec.d_ff, "d_head": spec.d_head, "n_heads": spec.n_heads,
             "n_kv_heads": spec.n_kv_heads, "n_layers": spec.n_layers, "vocab_size": spec.vocab_size,
             "paper_n": spec.paper_n, "file": str(files[name])} for name, spec in models.items()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'name':<14}{'N (non-emb.)':>16}{'paper N':>10}{'d_model':>9}{'d_ff':>7}{'heads':>7}{'kv':>5}{'layers':>8}{'vocab':>8}")
    for r in rows:
        paper = f"{r['paper_n']:.3f}B" if r["paper_n"] else ""
        print(f"{r['name']:<14}{r['n_params']:>16,}{paper:>10}{r['d_model']:>9}{r['d_ff']:>7}{r['n_heads']:>7}"
              f"{r['n_kv_heads']:>5}{r['n_layers']:>8}{r['vocab_size']:>8}"
              + (f"  from {Path(r['file']).name} of --models" if mine and Path(r["file"]).parent == mine else ""))
    if mine:
        print(f"--models {mine}: its shapes are added, and replace packaged shapes of the same name")


def cmd_peak(args) -> None:
    import os

    import torch

    from windtunnel.train import peak_flops

    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    print(f"this machine: fp32 matmul peak {peak_flops('cpu', 'fp32') / 1e9:.0f} GFLOP/s on {torch.get_num_threads()} "
          f"threads ({cores} cores); compare wall times only at a like peak (here: ~125 to ~340 GFLOP/s)")


def cmd_schema(args) -> None:
    from windtunnel.schema import schemas

    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for kind, schema in schemas().items():
        path = out / f"{kind}.schema.json"
        path.write_text(json.dumps(schema, indent=1, ensure_ascii=False) + "\n")
        print(path)
    print(f"point your editor's YAML support at them, e.g. a first line '# yaml-language-server: $schema="
          f"{(out / 'sweep.schema.json').resolve()}' in a sweep file")


def cmd_train(args) -> None:
    from windtunnel.config import TrainSpec, apply_overrides, check_run, get_model, load_overrides
    from windtunnel.counts import n_params
    from windtunnel.runs import run_dir, train_spec
    from windtunnel.tracking import RUN_ID_FILE

    spec = TrainSpec(model=get_model(args.model))
    if args.set_file:
        spec = apply_overrides(spec, load_overrides(args.set_file), source=args.set_file)
    spec = check_run(apply_overrides(spec, args.set), file="--set" if args.set else args.set_file or "defaults")
    if args.dry_run:
        print(resolved_yaml(spec, name=spec.model.name), end="")
        return
    if spec.data.corpus == "python":
        from windtunnel.data import source_note

        print(source_note())
    run, result = train_spec(spec, experiment="train", tags={})  # the spec is checked: nothing is written before
    evals = "  ".join(f"{k} {v['loss']:.3f} nats/tok {v['bpb']:.3f} bpb" for k, v in result["eval"].items())
    mfu = f", MFU {result['mfu']:.1%}" if result["mfu"] else ""
    mlflow_id = (run_dir(run) / RUN_ID_FILE).read_text()
    print(f"{spec.model.name} N={n_params(spec.model):,} {result['status']}: {result['step']} steps, "
          f"{result['tokens']:,} tokens, train loss {result['train_loss']:.3f}; eval {evals}; "
          f"{result['tokens_per_s']:,.0f} tok/s{mfu}; run {run_dir(run)}, MLflow run {mlflow_id} (windtunnel ui)")


def resolved_yaml(spec, *, name: str) -> str:
    """A TrainSpec, every field resolved, as YAML headed by the run id it trains under (provisional, and why, when
    its data cannot be read here to fingerprint it): what `train` and `launch` print for --dry-run."""
    import yaml

    from windtunnel.runs import make_run

    memo = {"provisional": []}
    run = make_run(spec, name=name, coords={"model": name}, memo=memo)
    head = f"# run id: {run.id}" + (" (provisional: " + "; ".join(memo["provisional"]) + ")" if memo["provisional"] else "")
    return head + "\n" + yaml.safe_dump(_plain(dataclasses.asdict(spec)), sort_keys=False, allow_unicode=True)


def _plain(value):
    """Tuples as lists, all the way down: YAML's safe dumper writes lists, mappings and scalars only."""
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


def cmd_sweep(args) -> None:
    """Each sweep in turn, in one embedded Ray session: its workers keep their imports from one sweep to the next."""
    from windtunnel.graph import find_sweep

    files = [find_sweep(spec) for spec in args.spec]  # files, or packaged sweeps by name (`lr`, `sweeps/lr.yaml`)
    ray_up = lambda: "ray" in sys.modules and sys.modules["ray"].is_initialized()  # noqa: E731
    ours = not ray_up()  # a Ray this command starts is shut down at its end; one it found up is left so
    failed: dict[str, int] = {}
    try:
        for file in files:
            failed[file.stem] = _sweep_one(args, file, named=len(files) > 1)
    finally:
        if ours and ray_up():
            sys.modules["ray"].shutdown()
    if any(failed.values()):
        where = f" (sweep {', '.join(f'{k}: {n}' for k, n in failed.items() if n)})" if len(files) > 1 else ""
        raise WindtunnelError(f"{sum(failed.values())} run(s) failed{where}; run the same command again to retry them "
                              "(finished runs are kept)")


def _sweep_one(args, file: Path, *, named: bool) -> int:
    """Dry-run or train one sweep's graph; returns how many of its runs failed. `named`: a line names the sweep
    first (one of several)."""
    from windtunnel.graph import expand, load_sweep, summarize

    sweep, scale = load_sweep(file, scale=args.scale)
    if args.set_file:  # e.g. the search's best µP hyper-parameters as the base of every run
        from windtunnel.config import load_overrides, merge_overrides

        sweep = dataclasses.replace(sweep, base=merge_overrides(sweep.base, load_overrides(args.set_file)))
    provisional: list[str] = []
    runs = expand(sweep, scale, file=file, scale_name=args.scale, provisional=provisional if args.dry_run else None)
    summary = {"sweep": sweep.name, "scale": args.scale, **summarize(runs, args.flops),
               "provisional_ids": sorted(set(provisional))}
    if named and not args.json:
        print(f"sweep {sweep.name} ({file}), scale {args.scale}: {len(runs)} runs")
    if any(r.spec.data.corpus == "python" for r in runs) and not args.json:
        from windtunnel.data import source_note

        print(source_note())
    if args.dry_run:
        if args.json:
            print(json.dumps(summary))
        else:
            _print_graph(runs, summary)
        return 0
    if not args.no_mup_check:  # a broken µP would make every run of the ladder a wasted run
        from windtunnel.mupcheck import require_mup

        for path in require_mup([r.spec.model for r in runs]):
            print(f"µP coordinate check passed ({path})")
    from windtunnel.orchestrate import run_graph

    outcomes = run_graph(runs, sweep=sweep.name, scale=args.scale, description=sweep.description,
                         note=_experiment_note(sweep, file), retries=args.retries, num_cpus=args.num_cpus,
                         allow_repeat=args.allow_repeat, keep_ray=True)
    _print_outcomes(outcomes)
    return sum(o.status == "failed" for o in outcomes)


def _experiment_note(sweep, file: Path) -> str:
    """A sweep's MLflow experiment description: what it studies, its file and scales, and the studies that read it."""
    from windtunnel.studies import STUDIES

    fed = [f"`windtunnel fit {s.name}` ({s.title})" for s in STUDIES.values() if s.sweep == sweep.name]
    reads = "read by " + ", ".join(fed) if fed else "no study reads it: fit its laws with `windtunnel fit KIND --sweep`"
    return (f"{(sweep.description or sweep.name).rstrip('.')}. Sweep file {Path(file).name}, scales "
            f"{', '.join(sweep.scales)}; one parent run per scale, one child per training run; {reads}.")


def _print_graph(runs, summary) -> None:
    facts = {r["id"]: r for r in summary["runs"]}
    print(f"{'run id':<14}{'name':<40}{'tokens':>17}{'own tokens':>17}{'GPU-h':>10}{'epochs':>8}  forks from")
    for r in runs:
        fork = f"{r.parent} step {r.fork_step}" if r.parent else ""
        epochs = "?" if facts[r.id]["epochs"] is None else f"{facts[r.id]['epochs']:.3g}"
        print(f"{r.id:<14}{r.name[:38]:<40}{r.tokens:>17,}{r.own_tokens:>17,}{facts[r.id]['gpu_hours']:>10.3g}"
              f"{epochs:>8}  {fork}")
    print(f"{summary['n_runs']} runs; {summary['tokens']:,} tokens ({summary['flops']:.3g} FLOPs, {summary['flops_count']}; "
          f"attention {summary['attention_flops']:.3g}) against "
          f"{summary['tokens_from_scratch']:,} from scratch ({summary['tokens_from_scratch'] / summary['tokens']:.2f}x); "
          f"{summary['gpu_hours']:,.3g} GPU-hours on {summary['gpu']}")
    if summary["unprepared"]:
        print(f"epochs ?: {', '.join(summary['unprepared'])} not tokenized yet; the sweep checks them before training")
    for reason in summary["provisional_ids"]:
        print(f"run ids are provisional (they hash the data's content, which is not here): {reason}")
    if (summary["max_epochs"] or 0) > 1:
        print(f"up to {summary['max_epochs']:.3g} epochs: the sweep refuses runs that repeat data unless --allow-repeat")


def _print_outcomes(outcomes) -> None:
    print(f"{'status':<10}{'name':<44}{'tokens':>12}{'train loss':>12}  {'eval bits/byte':<22}{'tok/s':>9}")
    for o in outcomes:
        res = o.result or {}
        bpb = " ".join(f"{k} {v['bpb']:.3f}" for k, v in (res.get("eval") or {}).items())
        loss = f"{res['train_loss']:.3f}" if res.get("train_loss") is not None else ""
        tok_s = f"{res['tokens_per_s']:,.0f}" if res.get("tokens_per_s") else ""
        print(f"{o.status:<10}{o.run.name[:42]:<44}{o.run.tokens:>12,}{loss:>12}  {bpb:<22}{tok_s:>9}"
              + (f"  {o.error}" if o.error else ""))


def cmd_search(args) -> None:
    from windtunnel.graph import find_sweep
    from windtunnel.search import load_search, run_search

    args.spec = find_sweep(args.spec)  # a file, or a packaged search by name (`mup_search`)
    spec = load_search(args.spec, scale=args.scale)  # a bad search space fails here, before anything runs
    result = run_search(spec, file=args.spec, scale=args.scale, trials=args.trials, num_cpus=args.num_cpus)
    print(f"{result.n_trials} trials: {result.n_complete} complete, {result.n_pruned} pruned, {result.n_failed} failed")
    if result.best_params is None:
        raise WindtunnelError("no trial completed; see the reasons above and results/search/"
                              f"{result.name}-{result.scale}/trials.csv")
    values = ", ".join(f"{k}={v:.4g}" for k, v in result.best_params.items())
    print(f"best {result.objective} {result.best_value:.4f} (trial {result.best_trial}): {values}")
    print(f"written: {result.best_yaml}  plots: {', '.join(str(p) for p in result.plots)}")
    print(f"use it: windtunnel sweep SPEC --set-file {result.best_yaml}")


CSV_COLUMNS = {  # a fit's column: (its --FLAG-col option, what it holds)
    "N": ("n", "N (non-embedding parameters)"), "D": ("d", "D (training tokens)"),
    "C": ("c", "compute C in FLOPs (D = C / 6N)"), "loss": ("loss", "final loss"), "model": ("model", "model name"),
    "batch_tokens": ("batch", "batch size in tokens"), "tokens": ("tokens", "tokens seen at each evaluation"),
    "lr": ("lr", "learning rate"),
    "group": ("group", "a group label: rows sharing it (the branches of one stable run) are resampled together")}


def cmd_fit(args) -> int:
    """A study on its stored runs (fit.json and figures), every study (--all), or one law printed (--sweep, --csv)."""
    from windtunnel import studies

    if args.all or args.kind is None:
        if args.kind or args.sweep is not None or args.csv or not args.all:
            raise WindtunnelError("fit: give one STUDY or LAW, or --all (every study; no --sweep or --csv)")
        return _fit_studies(list(studies.STUDIES), args)
    if args.sweep is None and not args.csv:
        if args.group_col:
            raise WindtunnelError("--group-col applies to a law fitted with --sweep or --csv, not to a study")
        if args.kind.replace("_", "-") in studies.LAWS and args.kind.replace("-", "_") not in studies.STUDIES:
            raise WindtunnelError(f"fit {args.kind}: a law, fitted with --sweep [NAME] or --csv PATH; studies (fitted "
                                  f"on their own sweep): {', '.join(studies.STUDIES)}")
        return _fit_studies([studies.get(args.kind).name], args)
    kind = args.kind.replace("_", "-")
    if kind not in studies.LAWS:
        raise WindtunnelError(f"fit {args.kind} --sweep/--csv: not a law; laws: {', '.join(studies.LAWS)} "
                              f"(a study is fitted without --sweep or --csv)")
    _fit_law(kind, args)
    return 0


def _options(args):
    from windtunnel.studies import Options
    from windtunnel.studies.study import BUDGETS

    if args.csv and args.flops == "full":
        raise WindtunnelError("--flops full counts attention from each run's layers, width and context, which a CSV "
                              "does not give; use --flops 6nd (the default for a CSV)")
    flops = args.flops or ("6nd" if args.csv else DEFAULT_FLOPS)
    return Options(scale=args.scale, bootstrap=args.bootstrap, current=not args.all_runs, form=args.form,
                   n_kind=args.n_kind, budgets=tuple(args.budget or BUDGETS), flops=flops)


def _fit_studies(names: list[str], args) -> int:
    """Each study on its stored runs; a study whose sweep has not run at this scale is skipped (alone: exit 3)."""
    from windtunnel import studies
    from windtunnel.tracking import log_outputs

    skipped = unlogged = 0
    for name in names:
        try:
            result, written = studies.run(name, _options(args), figures=not args.no_plots)
        except studies.NoRuns as err:
            print(f"windtunnel: skipped {name}: {err}", file=sys.stderr)
            skipped += 1
            continue
        print(f"== {name} ({studies.STUDIES[name].title})")
        for line in studies.STUDIES[name].describe(result):
            print(line)
        if result["excluded"]:
            print("left out: " + ", ".join(f"{n} {why}" for why, n in result["excluded"].items()))
        print("written: " + ", ".join(str(p) for p in written))
        try:  # on the sweep's MLflow run; the files are written whatever MLflow says
            log_outputs(written, output=name, sweep=studies.STUDIES[name].sweep, scale=args.scale)
        except WindtunnelError as err:
            print(f"windtunnel: {name}: not logged to MLflow: {one_line(err)}", file=sys.stderr)
            unlogged += 1
    if skipped == len(names) > 1:
        raise WindtunnelError(f"fit --all --scale {args.scale}: no study's sweep has runs at that scale; "
                              + _scales_with_runs({studies.STUDIES[n].sweep for n in names}, args.scale))
    if unlogged:
        return 2
    return 3 if skipped == len(names) == 1 else 0


def _scales_with_runs(sweeps: set[str], asked: str) -> str:
    """Which scales the stored runs of `sweeps` ran at, with the one closest to `asked`: the end of an error."""
    from windtunnel.errors import did_you_mean
    from windtunnel.tracking import runs_dataframe

    found = set()
    for sweep in sweeps:
        raw = runs_dataframe(experiment=sweep)
        found |= set(raw["tags.scale"].dropna()) if "tags.scale" in raw else set()
    if not found:
        return "no sweep has run yet (make demo, or windtunnel sweep NAME --scale SCALE)"
    return did_you_mean(asked, sorted(found)) + "scales with runs: " + ", ".join(sorted(found))


def _fit_law(kind: str, args) -> None:
    """One law fitted to a stored sweep (rows as its study reads them) or to a CSV, printed as JSON."""
    from windtunnel import studies

    if args.group_col and kind != "scaling-law":
        raise WindtunnelError(f"--group-col applies to scaling-law fits only (its bootstrap), not to {kind}")
    options = _options(args)
    if args.csv:
        frame, excluded = _csv_frame(args, kind), {}
        if kind == "scaling-law" and args.n_kind == "total":  # --n-kind says what the CSV's N column counts
            frame = frame.rename(columns={"N": "N_total"})
    else:
        frame, excluded = studies.law_points(kind, args.sweep or None, options)
        if args.group_col:  # the stable run by default; e.g. `model` resamples whole sizes
            if args.group_col not in frame:
                raise WindtunnelError(f"--group-col {args.group_col!r} is not a column of the sweep's table; "
                                      f"columns: {', '.join(frame.columns)}")
            frame = frame.assign(group=frame[args.group_col])
    if (args.predict or args.out) and kind != "scaling-law":
        raise WindtunnelError(f"--predict and --out apply to scaling-law fits, not to {kind}")
    result = studies.LAWS[kind].fit(frame, options)
    if args.out:  # with its bootstrap samples, as a study's fit.json: `windtunnel plan TARGET --fit PATH` reads it
        from windtunnel.paths import write_atomic

        write_atomic(Path(args.out), studies.dumps({**result, "source": args.csv or f"sweep {args.sweep or 'scaling_law'}"}))
    if args.predict:
        from windtunnel.predict import LadderFit

        n, d = zip(*args.predict)
        result = {**result, "predictions": LadderFit.from_dict(result["ladder"]).predict(list(n), list(d))}
    result = {**_without_samples(result), "excluded": excluded}  # bootstrap samples: a study's fit.json only
    if excluded:
        print("left out: " + ", ".join(f"{n} {why}" for why, n in excluded.items()), file=sys.stderr)
    for name, why in result.get("not_identified", {}).items():
        print(f"{name} is not identified (its value is a bound, not a measurement): {why}", file=sys.stderr)
    print(studies.dumps(result, indent=None if args.json else 1))


def _without_samples(result: dict) -> dict:
    return {k: _without_samples(v) if isinstance(v, dict) else v for k, v in result.items() if k != "samples"}


def _csv_frame(args, kind: str):
    """The CSV's columns renamed to what the fit takes, each number checked (a bad cell is one line naming the file,
    column and line); C (compute) gives D = C / 6N for the scaling law."""
    from windtunnel.checks import read_csv
    from windtunnel.fit import FitError
    from windtunnel.studies import LAWS

    raw = read_csv(args.csv)
    names = {col: getattr(args, f"{flag}_col") for col, (flag, _) in CSV_COLUMNS.items()}
    need = list(LAWS[kind].columns)
    if kind == "scaling-law" and args.c_col and not args.d_col:
        need = ["N", "C", "loss"]
    for col in need + [c for c in ("N", "parametrization", "group") if c not in need]:
        source = names.get(col) or col
        if source not in raw:
            if col in need:
                raise FitError(f"{args.csv}: missing column {source!r} (set it with --{CSV_COLUMNS[col][0]}-col); "
                               f"columns are: {', '.join(raw.columns)}")
            continue
        raw[col] = _csv_numbers(raw[source], args, kind, col, source) if col in CSV_NUMBERS else raw[source]
    if args.group_col and args.group_col not in raw:
        raise FitError(f"{args.csv}: missing column {args.group_col!r} (--group-col); columns are: {', '.join(raw.columns)}")
    if "C" in need and kind == "scaling-law":
        raw["D"] = raw["C"] / (6 * raw["N"])
    if kind == "envelope":
        raw = raw.assign(model=raw.get("model", "csv"))
    return raw.reset_index(drop=True)


CSV_NUMBERS = {"N", "D", "C", "loss", "batch_tokens", "tokens", "lr"}  # the fit columns that hold numbers


def _csv_numbers(column, args, kind: str, col: str, source: str):
    """`column` as floats, all finite and > 0 (an LR sweep's loss may be inf: a diverged run); else one line
    naming the file, the column and the first bad cell's line."""
    import numpy as np

    from windtunnel.checks import csv_cells

    diverged = kind == "lr" and col == "loss"
    allowed = "a number > 0, or inf for a diverged run" if diverged else "a finite number > 0"
    return csv_cells(column, lambda v: (v > 0) & (np.isfinite(v) | diverged), path=args.csv, name=source,
                     allowed=f"{allowed} ({CSV_COLUMNS[col][1]})")


def cmd_plan(args) -> None:
    from windtunnel.plan import PlanLimits, plan_from_fits
    from windtunnel.tracking import log_outputs

    limits = PlanLimits(mfu=args.mfu, gpu_flops=args.gpu_flops, max_loss_rel_interval=args.max_loss_interval)
    plan, path = plan_from_fits(args.target, tokens=args.tokens, compute=args.compute, limits=limits, fit=args.fit)
    _print_plan(plan, path)
    log_outputs([path], output="plans")  # MLflow: experiment windtunnel-outputs, run "plans"


def _print_plan(plan: dict, path) -> None:
    train, loss, cost = plan["train"], plan["predicted_loss"], plan["cost"]
    print(f"plan for {plan['target']} (N = {plan['n_params']:,}, {plan['n_kind']}): {plan['status']}")
    if "tokens" in train:
        print(f"  tokens        {train['tokens']:.4g}  ({plan['tokens_basis']})")
    if loss:
        print(f"  final loss    {loss['value']:.4f} bits/byte, 95% prediction interval [{loss['interval95'][0]:.4f}, "
              f"{loss['interval95'][1]:.4f}] (" + ", ".join(f"{k.upper()} {v:.3g}×" for k, v in loss["extrapolation"].items())
              + " the ladder's largest)"
              + ("" if loss["usable"] else "  (too uncertain to plan with)"))
    if "batch_tokens" in train:
        stages = train.get("batch_warmup") or [[0, train["batch_tokens"]]]
        warm = f"{stages[0][1]:,}" + "".join(f" → {b:,} from {t:.3g} tokens" for t, b in stages[1:])
        print(f"  batch tokens  {warm}  (sequences of {train['seq_len']} tokens)")
        _print_interval(plan["hyperparameters"]["batch"], "{:,.0f}")
    if "lr" in train:
        print(f"  max LR        {train['lr']:.4g}: the ladder's µP base LR, exact in its base: "
              + ", ".join(f"{k} {v}" for k, v in train.get("model", {}).items()))
        _print_interval(plan["hyperparameters"]["lr"], "{:.3g}")
    if "schedule" in train:
        sched = train["schedule"]
        print(f"  schedule      WSD, warmup {sched['warmup_tokens']:.3g} tokens, {sched.get('decay_shape', 'exp')} decay from "
              f"{sched['decay_start_tokens']:.4g} tokens to the end")
    curve, decay = plan.get("predicted_curve"), plan.get("decay_choice")
    if curve:
        print(f"  loss curve    {len(curve['tokens'])} points, {curve['law']} law: final {curve['loss'][-1]:.4f}, 95% band "
              f"[{curve['low'][-1]:.4f}, {curve['high'][-1]:.4f}] (windtunnel monitor compares a run with it)")
    if decay:
        print(f"  best decay    {decay['fraction']:g} of the stable stage, {decay['shape']}: predicted final "
              f"{decay['final']:.4f}, {decay['gain']:.2%} below the ladder's decay ({decay['plan']:.4f}); "
              + ("adopted" if decay["adopted"] else "not adopted")
              + f" (needs > {decay['decay_error']:.2%}, the law's error on decays it did not fit; "
              f"{decay['refits_agreeing']:.0%} of {decay['refits']} refits of the law agree)")
    if cost:
        steps = f"{cost['steps']:,} steps, " if cost["steps"] else ""
        print(f"  cost          {steps}{cost['flops']:.4g} FLOPs ({cost['convention']}); {cost['trained_flops']:.4g} "
              f"trained, {cost['gpu_hours']:,.3g} GPU-hours at {cost['mfu']:.0%} MFU of {cost['gpu_flops']:.3g} FLOP/s")
        if cost.get("ladder"):
            lad = cost["ladder"]
            print(f"  ladder cost   {lad['flops']:.4g} FLOPs ({lad['stable_runs']} stable runs, {lad['branches']} decay "
                  f"branches), {lad['gpu_hours']:,.3g} GPU-hours: {lad['fraction_of_target']:.3%} of this run")
    for gap in plan["gaps"]:
        print(f"  not planned:  {gap}")
    for note in plan["notes"]:
        print(f"  note:         {note}")
    print(f"written: {path}")


def _print_interval(hp: dict | None, fmt: str) -> None:
    """A hyper-parameter's 95% interval and the relative loss it would cost (plan.hyperparameters): a batch's
    expected cost there and at the interval's ends, an LR's cost if the optimum lies at either end."""
    if not hp:
        return
    low, high = (fmt.format(x) for x in hp["interval95"])
    ends = hp["cost_at_ends"]
    pct = "+{:.2g}%".format
    if ends is None:
        cost = "loss cost not priced (see the plan's basis)"
    elif "expected_cost" in hp:
        cost = (f"expected loss {pct(100 * hp['expected_cost'])} at this batch, {pct(100 * ends[0])} / "
                f"{pct(100 * ends[1])} at the interval's ends")
    else:
        cost = f"loss {pct(100 * ends[0])} / {pct(100 * ends[1])} if the optimum lies at either end"
    print(f"{'':16}95% [{low}, {high}]; {cost}")


def cmd_validate(args) -> None:
    from windtunnel.monitor import alarm_text
    from windtunnel.validate import validate

    out = validate(args.target, tokens=args.tokens, compute=args.compute, given=args.set, workers=args.workers)
    verdict = "inside" if out["inside"] else "OUTSIDE"
    print(f"{out['target']} (N = {out['n_params']:,}, {out['n_extrapolation']:.2g}× the ladder's largest) on "
          f"{out['tokens']:,} tokens: predicted {out['predicted']:.4f} bits/byte, 95% [{out['low']:.4f}, {out['high']:.4f}]; "
          f"actual {out['actual']:.4f} ({out['rel_error']:+.2%}, {verdict} the interval)")
    for alarm in out["alarms"]:
        print(f"  the live check: {alarm_text(alarm)}")
    print(f"written: {out['written']}  (MLflow experiment 'validate', run {out['mlflow_run']})")


def cmd_monitor(args) -> int:
    from windtunnel import monitor

    plan = monitor.plan_curve(args.plan)
    run = monitor.read_csv(args.csv) if args.csv else monitor.run_curve(args.run)
    verdict = monitor.compare(plan, run, k=args.k)
    if args.json:
        print(json.dumps(dataclasses.asdict(verdict)))
        return 1 if verdict.left else 0
    source = args.csv or f"MLflow run {args.run}"
    print(f"{source} against {args.plan}: {verdict.compared} evaluations compared, {verdict.outside} outside the 95% "
          f"band" + (f", {verdict.not_compared} beyond the plan's tokens (not compared)" if verdict.not_compared else ""))
    if verdict.lr_departs:
        lr = verdict.lr_departs
        print(f"  its LR departs from the plan's at {lr['tokens']:,.0f} tokens: {lr['lr']:.4g} against {lr['planned']:.4g}")
    left = verdict.left
    if left is None:
        print(f"  inside the band (never {verdict.k} evaluations in a row outside it)")
        return 0
    print(f"  LEFT THE BAND at {left['tokens']:,.0f} tokens ({verdict.k} evaluations in a row outside from there): "
          f"{left['loss']:.4f} {left['side']} [{left['low']:.4f}, {left['high']:.4f}], predicted {left['predicted']:.4f}")
    return 1


def cmd_launch(args) -> None:
    from windtunnel.launch import launch
    from windtunnel.monitor import alarm_text

    options = dict(workers=args.workers, gpus_per_worker=args.gpus_per_worker, given=args.set,
                   device_memory=args.device_memory * 1e9 if args.device_memory else None,
                   no_prediction=args.no_prediction, k=args.k, stop_off_prediction=args.stop_off_prediction)
    out = launch(args.plan, dry_run=True, **options)  # the layout first: it is checked before anything starts
    resolved = out.pop("spec")
    if args.dry_run and args.json:
        print(json.dumps({**out, "spec": dataclasses.asdict(resolved)}))
        return
    mem = out["memory"]
    print(f"{out['target']}: {out['strategy']} on {out['workers']} worker(s)"
          + (f" × {out['gpus_per_worker']:g} GPU" if out["gpus_per_worker"] else " (CPU)")
          + f", {out['dtype']}" + (", activation checkpointing" if out["activation_checkpointing"] else "")
          + f"; micro-batch {out['micro_batch_tokens']:,} tokens × {out['grad_accum']} accumulation "
          f"× {out['workers']} = {out['batch_tokens']:,} tokens a step"
          + "".join(f" (from {t:.3g} tokens: {a} accumulation)" for t, a in out["grad_accum_stages"][:-1]))
    print(f"  memory/worker {mem['total'] / 1e9:.2f} GB of {out['device_memory_bytes'] / 1e9:.0f}: parameters "
          f"{mem['parameters'] / 1e9:.2f}, gradients {mem['gradients'] / 1e9:.2f}, AdamW {mem['optimizer'] / 1e9:.2f}, "
          f"activations {mem['activations'] / 1e9:.2f}" + (f", gathered {mem['gathered'] / 1e9:.2f}" if mem["gathered"] else ""))
    recompute = f" + {out['recompute_flops']:.3g} recomputed" if out["recompute_flops"] else ""
    print(f"  {out['steps']:,} steps, {out['tokens']:.4g} tokens, {out['flops']:.3g} FLOPs{recompute}: "
          f"{out['expected_hours']:,.3g} h "
          f"at {out['mfu']:.0%} MFU of {out['peak_flops_per_worker']:.3g} FLOP/s per worker", flush=True)
    if args.dry_run:
        print(resolved_yaml(resolved, name=out["target"]), end="")
        return
    out = launch(args.plan, max_failures=args.max_failures, **options)
    for alarm in out["alarms"]:
        print(f"  {alarm_text(alarm)}")
    if out["status"] == "stopped":
        print(f"  stopped off prediction at a checkpoint of step {out['result']['step']:,}; the same command without "
              f"--stop-off-prediction resumes it; run {out['run_dir']}")
        return
    c = out.get("comparison") or {}
    if c.get("predicted") is not None:
        print(f"  {out['status']}: actual {c['actual']:.4f} bits/byte, predicted {c['predicted']:.4f} "
              f"[{c['low']:.4f}, {c['high']:.4f}] ({c['rel_error']:+.2%}, {'inside' if c['inside'] else 'OUTSIDE'} "
              f"the interval); {c['tokens_per_s']:,.0f} tok/s; written: {out['written']}")
    elif c:
        print(f"  {out['status']}: actual {c['actual']:.4f} bits/byte (the plan predicts no loss); written: {out['written']}")
    print(f"  {out['status']}; run {out['run_dir']}")


def cmd_report(args) -> None:
    from windtunnel.findings import findings, table
    from windtunnel.report import write_report
    from windtunnel.tracking import log_outputs

    print(table(findings()))
    path = write_report()
    print(f"written: {path}")
    log_outputs([path], output="report")  # MLflow: experiment windtunnel-outputs, run "report"


def cmd_check_mup(args) -> None:
    import time

    from windtunnel.config import get_model
    from windtunnel.mupcheck import base_of, check_cached, coord_check

    start = time.perf_counter()
    base = base_of(get_model(args.model_base))  # the default widths' result is kept: sweeps over this base reuse it
    result = coord_check(base, widths=args.widths) if args.widths else check_cached(base)[0]
    seconds = time.perf_counter() - start
    if args.json:
        print(json.dumps({**{k: v for k, v in result.to_dict().items() if k != "sizes"}, "seconds": round(seconds, 2)}))
    else:
        _print_coord_check(result, seconds)
    if not result.passed:
        raise WindtunnelError(f"µP coordinate check failed: {result.reason}")


def _print_coord_check(result, seconds: float) -> None:
    from windtunnel import plots
    from windtunnel.mupcheck import MUP_TOL
    from windtunnel.paths import results_dir

    print(f"update size |h_t - h_0| against width {result.widths}, log-log slope (µP: |slope| < {MUP_TOL})")
    print(f"{'layer':<16}{'µP':>8}{'SP':>8}")
    for layer in result.mup:
        print(f"{layer:<16}{result.mup[layer]:>+8.2f}{result.sp[layer]:>+8.2f}")
    print(f"{'passed' if result.passed else 'FAILED: ' + result.reason} ({seconds:.1f} s)")
    print(f"written: {plots.coord_check(result.to_dict(), results_dir() / 'plots' / 'coord_check.png')}")


def cmd_ui(args) -> None:
    from windtunnel.tracking import serve_ui

    serve_ui(port=args.port)


class _HelpFormatter(argparse.HelpFormatter):
    """Each option's help ends with its default, where it has one that says something (not None, False or [])."""

    def _get_help_string(self, action):
        text = action.help or ""
        if action.default in (None, False, [], argparse.SUPPRESS) or "default" in text or not action.option_strings:
            return text
        return f"{text} (default: {shown(action.default).replace('%', '%%')})"  # help is %-formatted


def shown(value) -> str:
    """A default as help prints it: a float in its shortest form (9.89e+14, 0.4)."""
    return f"{value:g}" if isinstance(value, float) else str(value)


class _Parser(argparse.ArgumentParser):
    """argparse, but a bad command line is one line on stderr (exit 2) like every other refused input; no option
    is matched by a prefix of its name (`--set` is never read as `--set-file`); every help shows the defaults."""

    def __init__(self, *args, **kwargs):
        kwargs.setdefault("allow_abbrev", False)
        kwargs.setdefault("formatter_class", _HelpFormatter)
        super().__init__(*args, **kwargs)

    def error(self, message: str):
        self.exit(2, f"{self.prog}: error: {message} (see {self.prog} --help)\n")


def _global_options(parser: argparse.ArgumentParser, *, top: bool) -> None:
    """--models and --results, accepted before the command and after it: the top level's copy sets the defaults,
    a command's copy leaves an option it was not given alone (`windtunnel --results R sweep lr` keeps R)."""
    parser.add_argument("--models", metavar="DIR", default=None if top else argparse.SUPPRESS,
                        help="a folder of model ladder files (*.yaml) added to the packaged ones; its shape of a name "
                             "the packaged ladders define too replaces theirs ($WINDTUNNEL_MODELS sets it too)")
    parser.add_argument("--results", metavar="DIR", default=None if top else argparse.SUPPRESS,
                        help="where runs, the MLflow store, fits and plans go ($WINDTUNNEL_RESULTS sets it too; "
                             "default: ./results)")


class _Commands:
    """sub.add_parser with what every command shares: its help as its description, the global options."""

    def __init__(self, sub):
        self.sub = sub

    def add_parser(self, name: str, *, help: str, **kwargs) -> argparse.ArgumentParser:
        description = kwargs.pop("description", help[0].upper() + help[1:] + ".")
        command = self.sub.add_parser(name, help=help, description=description, **kwargs)
        _global_options(command, top=False)
        return command


def parser() -> argparse.ArgumentParser:
    from windtunnel import __version__

    p = _Parser(prog="windtunnel", description=__doc__.splitlines()[0])
    p.add_argument("--version", action="version", version=f"windtunnel {__version__}")
    _global_options(p, top=True)
    sub = _Commands(p.add_subparsers(dest="command", required=True, metavar="COMMAND", parser_class=_Parser))
    models = sub.add_parser("models", help="every shape of the ladders (the packaged models/*.yaml and --models DIR) "
                            "with its exact non-embedding N")
    models.add_argument("--json", action="store_true", help="one JSON list of objects")
    models.set_defaults(func=cmd_models)
    pk = sub.add_parser("peak", help="this machine's measured fp32 matmul peak (state it with any wall time)")
    pk.set_defaults(func=cmd_peak)
    sc = sub.add_parser("schema", help="write the JSON Schemas of sweep, search, ladder and plan files, for editors")
    sc.add_argument("--out", default="results/schema", help="folder of the schema files (KIND.schema.json)")
    sc.set_defaults(func=cmd_schema)
    tr = sub.add_parser("train", help="train one model (resumes if interrupted)")
    tr.add_argument("model", help="a model name from `windtunnel models`")
    tr.add_argument("--set-file", metavar="FILE", help="a YAML mapping of overrides (a plan, best.yaml), before --set")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a TrainSpec field (dotted for nested: schedule.kind=wsd, model.d_base=64)")
    tr.add_argument("--dry-run", action="store_true", help="print the resolved spec as YAML with its run id; train nothing")
    tr.set_defaults(func=cmd_train)
    sw = sub.add_parser("sweep", help="run sweeps' graphs on Ray (skips finished runs, resumes the rest)")
    sw.add_argument("spec", nargs="+", metavar="sweep",
                    help="sweep files, or packaged sweeps by name: lr, sweeps/lr.yaml; several run one after another "
                         "in one Ray session")
    sw.add_argument("--scale", default="micro", help="which scale section of the sweep (micro, demo, paper)")
    sw.add_argument("--set-file", metavar="FILE", help="a YAML mapping of overrides merged into the sweep's base")
    sw.add_argument("--dry-run", action="store_true", help="print the run graph, tokens and FLOPs; train nothing")
    sw.add_argument("--json", action="store_true", help="with --dry-run: one JSON object (a line per sweep)")
    sw.add_argument("--flops", choices=["6nd", "full"], default=DEFAULT_FLOPS,
                    help="with --dry-run: the FLOP count (full: the trainer's, attention included; 6nd: 6·N_total·D)")
    sw.add_argument("--retries", type=option(NON_NEGATIVE_INT), default=2, help="retries of a run that raises before it is marked failed")
    sw.add_argument("--num-cpus", type=option(POSITIVE_INT), default=None, help="CPUs of the embedded local Ray (default: all)")
    sw.add_argument("--no-mup-check", action="store_true", help="skip the µP coordinate check of the µP models' base")
    sw.add_argument("--allow-repeat", action="store_true",
                    help="train runs that read their corpus more than once (refused by default)")
    sw.set_defaults(func=cmd_sweep)
    se = sub.add_parser("search", help="Bayesian µP hyper-parameter search (Optuna TPE through Ray Tune, ASHA)")
    se.add_argument("spec", help="a search file, or a packaged one by name: mup_search, sweeps/mup_search.yaml")
    se.add_argument("--scale", default="micro", help="which scale section (micro, demo, paper)")
    se.add_argument("--trials", type=option(POSITIVE_INT), default=None, help="trials in all; more than before continues the study")
    se.add_argument("--num-cpus", type=option(POSITIVE_INT), default=None, help="CPUs of the embedded local Ray (default: all)")
    se.set_defaults(func=cmd_search)
    _fit_parser(sub)
    pl = sub.add_parser("plan", help="the full run's tokens, batch, LR, schedule, loss and cost from the fits")
    pl.add_argument("target", help="a model name, e.g. minicpm-1.2b")
    pl.add_argument("--tokens", type=float, help="a token budget (default: compute-optimal for the model's N)")
    pl.add_argument("--compute", type=float, help="a FLOPs budget in the scaling fit's FLOP count (full: the trainer's; "
                    "6nd: 6·N·D): D = C / the target's FLOPs a token")
    pl.add_argument("--mfu", type=option(FRACTION), default=0.4, help="MFU the GPU-hours are costed at")
    pl.add_argument("--gpu-flops", type=option(POSITIVE), default=H100_FLOPS["bf16"],
                    help="peak FLOP/s of one GPU (H100 bf16 dense)")
    pl.add_argument("--max-loss-interval", type=option(POSITIVE), default=0.15,
                    help="largest relative half-width of the predicted loss's 95%% interval the plan accepts")
    pl.add_argument("--fit", metavar="FIT.json", help="plan from this scaling-law fit (written by `fit scaling-law "
                                                      "--csv ... --out` or another ladder's results/scaling_law/fit.json)")
    pl.set_defaults(func=cmd_plan)
    va = sub.add_parser("validate", help="plan a target beyond the ladder, train it as planned, compare with the prediction")
    va.add_argument("target", help="a model name, e.g. micro-1.3m")
    va.add_argument("--tokens", type=float, help="a token budget (default: compute-optimal for the model's N)")
    va.add_argument("--compute", type=float, help="a FLOPs budget in the scaling fit's FLOP count (as plan --compute)")
    va.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a value the plan left out (batch_tokens, lr), stated in the comparison; nothing else")
    va.add_argument("--workers", type=option(POSITIVE_INT), default=1, help="data-parallel Ray Train workers (make validate: 2)")
    va.set_defaults(func=cmd_validate)
    la = sub.add_parser("launch", help="train a plan's target on Ray Train (data-parallel; resumes a stopped launch)")
    la.add_argument("plan", help="a plan file, e.g. results/plans/minicpm-1.2b.yaml")
    la.add_argument("--workers", type=option(POSITIVE_INT), default=1, help="data-parallel workers (processes)")
    la.add_argument("--gpus-per-worker", type=option(NON_NEGATIVE), default=0, help="GPUs per worker: 0 (CPU workers, gloo) or 1 (one GPU each, NCCL)")
    la.add_argument("--device-memory", type=option(POSITIVE), default=None,
                    help="GB of one worker's device (default: 80 per GPU, or this machine's RAM / workers)")
    la.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="a value the plan left out (tokens, batch_tokens, lr), or how it runs (micro_batch_tokens, "
                         "device, ...)")
    la.add_argument("--no-prediction", action="store_true",
                    help="launch a plan that predicts no loss (then there is no predicted-vs-actual)")
    la.add_argument("--max-failures", type=option(NON_NEGATIVE_INT), default=3, help="worker-group restarts from the newest checkpoint")
    la.add_argument("--k", type=option(POSITIVE_INT), default=3,
                    help="the live check: evaluations in a row outside the plan's predicted band that raise an alarm")
    la.add_argument("--stop-off-prediction", action="store_true",
                    help="stop at a checkpoint when the live check raises its alarm (the same command resumes)")
    la.add_argument("--dry-run", action="store_true", help="print the layout, memory, hours and the resolved spec (YAML, with its run id); train nothing")
    la.add_argument("--json", action="store_true", help="with --dry-run: one JSON object")
    la.set_defaults(func=cmd_launch)
    mo = sub.add_parser("monitor", help="compare a run with a plan's predicted loss curve and say where it left "
                        "the curve's band, if it did (exit 1 when it did)")
    mo.add_argument("plan", help="a plan file with a predicted_curve, e.g. results/plans/micro-1.3m.yaml")
    given = mo.add_mutually_exclusive_group(required=True)
    given.add_argument("--run", metavar="MLFLOW_RUN_ID", help="an MLflow run of this store (its held-out evaluations)")
    given.add_argument("--csv", metavar="CURVE.csv", help="a run trained elsewhere: one row per evaluation, columns "
                       "tokens, lr, loss (tokens rising)")
    mo.add_argument("--k", type=option(POSITIVE_INT), default=3,
                    help="evaluations in a row outside the band that count as leaving it")
    mo.add_argument("--json", action="store_true", help="one JSON object")
    mo.set_defaults(func=cmd_monitor)
    rp = sub.add_parser("report", help="one HTML page of every fit, figure and plan: results/report.html")
    rp.set_defaults(func=cmd_report)
    cm = sub.add_parser("check-mup", help="µP coordinate check: each layer's update size against width, µP and SP")
    cm.add_argument("--model-base", default="micro-24k", metavar="NAME", help="check this model's µP base")
    cm.add_argument("--widths", type=option(POSITIVE_INT), nargs="+", help="widths spanning ≥16x, multiples of d_head (default: from about d_base/2, x1..16)")
    cm.add_argument("--json", action="store_true", help="one JSON object: widths, mup and sp slopes, passed")
    cm.set_defaults(func=cmd_check_mup)
    ui = sub.add_parser("ui", help="serve the MLflow UI on 127.0.0.1")
    ui.add_argument("--port", type=option(PORT), default=5000, help="a TCP port, 1 to 65535")
    ui.set_defaults(func=cmd_ui)
    return p


def _n_colon_d(text: str) -> tuple[float, float]:
    """--predict N:D → (N, D), both finite and > 0."""
    import math

    try:
        n, d = (float(x) for x in text.split(":"))
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not N:D; give two numbers, e.g. 1.2e9:1.1e12") from None
    if not all(math.isfinite(x) and x > 0 for x in (n, d)):
        raise argparse.ArgumentTypeError(f"{text!r}: N and D must be finite numbers > 0")
    return n, d


def _fit_parser(sub) -> None:
    fit = sub.add_parser("fit", help="fit a study on its stored runs (fit.json and figures), or print one law "
                                     "fitted to a sweep or a CSV")
    fit.add_argument("kind", nargs="?", metavar="STUDY|LAW",
                     help="a study of windtunnel.studies (an unknown name lists them): writes results/STUDY/fit.json "
                          "and its figures; or, with --sweep or --csv, a law (scaling-law, batch-size, lr, envelope): "
                          "prints it, writes nothing")
    fit.add_argument("--all", action="store_true", help="every study whose sweep ran at --scale (others are skipped; none: an error)")
    source = fit.add_mutually_exclusive_group()
    source.add_argument("--sweep", nargs="?", const="", metavar="NAME",
                        help="fit the law to a stored sweep (default: the sweep its study reads)")
    source.add_argument("--csv", metavar="PATH", help="a CSV with one row per point (per evaluation for batch-size)")
    fit.add_argument("--scale", default="micro", help="the scale the sweep ran at (micro, demo, paper)")
    fit.add_argument("--all-runs", action="store_true",
                     help="also stored runs that sweeps/NAME.yaml no longer produces")
    fit.add_argument("--no-plots", action="store_true", help="a study: write fit.json only, no figures")
    for flag, what in CSV_COLUMNS.values():
        fit.add_argument(f"--{flag}-col", help=f"CSV column of {what}")
    fit.add_argument("--budget", type=option(POSITIVE), action="append", metavar="FLOPS",
                     help="scaling-law: compute budgets for the compute-optimal N, D and D/N (default 1e18…1e24)")
    fit.add_argument("--bootstrap", type=option(NON_NEGATIVE_INT), default=1000, help="bootstrap resamples for the 95%% intervals (0: none)")
    fit.add_argument("--form", choices=["chinchilla", "kaplan"], default=None,
                     help="scaling-law: the form that predicts (plan, allocation); default: the one whose rolling "
                          "backtests err less. Every form is fitted and reported; the top level is the paper's")
    fit.add_argument("--n-kind", choices=["total", "non_embedding"], default="total",
                     help="scaling-law from runs: N with the tied embedding (default: it backtests better on the "
                          "micro ladder) or without it (the paper's); both are fitted and reported")
    fit.add_argument("--flops", choices=["6nd", "full"], default=None,
                     help="the FLOP count of the compute-optimal allocation, the envelope and the budgets: full "
                          "counts attention as the trainer does, 6nd is the paper's 6·N·D (default: full for stored "
                          "runs, chosen by the micro ladder's frontier backtests; 6nd for a CSV)")
    fit.add_argument("--predict", type=_n_colon_d, action="append", metavar="N:D",
                     help="scaling-law: add the 95%% prediction interval of a new run of N parameters (in --n-kind's "
                          "convention) and D tokens, with its extrapolation beyond the ladder (repeatable)")
    fit.add_argument("--out", metavar="PATH", help="scaling-law: also write the fit as a fit.json that "
                                                   "`windtunnel plan TARGET --fit PATH` reads")
    fit.add_argument("--json", action="store_true", help="a law: one line of JSON")
    fit.set_defaults(func=cmd_fit)


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    from windtunnel.config import MODELS_ENV

    # through the environment, so Ray workers and child processes find the same ladders and results
    for value, variable in ((args.models, MODELS_ENV), (args.results, "WINDTUNNEL_RESULTS")):
        if value:
            os.environ[variable] = os.path.abspath(os.path.expanduser(value))
    try:
        return args.func(args) or 0  # a command returns nothing (0) or its exit code (fit: 3 = skipped)
    except WindtunnelError as err:
        print(f"windtunnel: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("windtunnel: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    except BrokenPipeError:  # `windtunnel ... | head`: the reader left; say nothing more (Python's recipe)
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 141


if __name__ == "__main__":
    sys.exit(main())
