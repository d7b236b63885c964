"""The `windtunnel` command: parse, call one function, print. Bad input is one line on stderr, exit 2.

    windtunnel models [--json]
    windtunnel train MODEL [--set key=value ...]
    windtunnel sweep SPEC.yaml [--scale micro|paper] [--dry-run] [--json]
    windtunnel ui [--port 5000]
"""

from __future__ import annotations

import argparse
import json
import sys

from windtunnel.errors import WindtunnelError

__all__ = ["main"]


def cmd_models(args) -> None:
    from windtunnel.config import load_models
    from windtunnel.model import count_params

    rows = [{"name": name, "n_params": count_params(spec), "n_params_with_embedding": count_params(spec, embedding=True),
             "d_model": spec.d_model, "d_ff": spec.d_ff, "d_head": spec.d_head, "n_heads": spec.n_heads,
             "n_kv_heads": spec.n_kv_heads, "n_layers": spec.n_layers, "vocab_size": spec.vocab_size,
             "paper_n": spec.paper_n} for name, spec in load_models().items()]
    if args.json:
        print(json.dumps(rows, indent=1))
        return
    print(f"{'name':<14}{'N (non-emb.)':>16}{'paper N':>10}{'d_model':>9}{'d_ff':>7}{'heads':>7}{'kv':>5}{'layers':>8}{'vocab':>8}")
    for r in rows:
        paper = f"{r['paper_n']:.3f}B" if r["paper_n"] else ""
        print(f"{r['name']:<14}{r['n_params']:>16,}{paper:>10}{r['d_model']:>9}{r['d_ff']:>7}{r['n_heads']:>7}"
              f"{r['n_kv_heads']:>5}{r['n_layers']:>8}{r['vocab_size']:>8}")


def cmd_train(args) -> None:
    from windtunnel.config import TrainSpec, apply_overrides, get_model, spec_hash
    from windtunnel.data import prepare
    from windtunnel.graph import Run
    from windtunnel.model import count_params
    from windtunnel.orchestrate import run_dir, train_one

    spec = apply_overrides(TrainSpec(model=get_model(args.model)), args.set)
    corpus = prepare(spec.data, vocab_size=spec.model.vocab_size)  # bad data fails here, before any run exists
    run = Run(id=spec_hash(spec, corpus.fingerprint), name=spec.model.name, spec=spec, coords={"model": spec.model.name})
    result = train_one(run, init_from=None, experiment="train", parent_mlflow_id=None,
                       tags={"parametrization": spec.model.parametrization}, progress=True)
    evals = "  ".join(f"{k} {v['loss']:.3f} nats/tok {v['bpb']:.3f} bpb" for k, v in result["eval"].items())
    mfu = f", MFU {result['mfu']:.1%}" if result["mfu"] else ""
    mlflow_id = (run_dir(run) / "mlflow_run_id").read_text()
    print(f"{spec.model.name} N={count_params(spec.model):,} {result['status']}: {result['step']} steps, "
          f"{result['tokens']:,} tokens, train loss {result['train_loss']:.3f}; eval {evals}; "
          f"{result['tokens_per_s']:,.0f} tok/s{mfu}; run {run_dir(run)}, MLflow run {mlflow_id} (windtunnel ui)")


def cmd_sweep(args) -> None:
    from windtunnel.graph import expand, load_sweep, summarize

    sweep, scale = load_sweep(args.spec, scale=args.scale)
    runs = expand(sweep, scale, file=args.spec, scale_name=args.scale)
    summary = {"sweep": sweep.name, "scale": args.scale, **summarize(runs)}
    if args.dry_run:
        if args.json:
            print(json.dumps(summary))
            return
        _print_graph(runs, summary)
        return
    from windtunnel.orchestrate import run_graph

    outcomes = run_graph(runs, sweep=sweep.name, scale=args.scale, description=sweep.description,
                         retries=args.retries, num_cpus=args.num_cpus)
    _print_outcomes(outcomes)
    if any(o.status == "failed" for o in outcomes):
        raise WindtunnelError(f"{sum(o.status == 'failed' for o in outcomes)} run(s) failed; run the same command "
                              "again to retry them (finished runs are kept)")


def _print_graph(runs, summary) -> None:
    print(f"{'run id':<14}{'name':<44}{'tokens':>14}{'own tokens':>14}  forks from")
    for r in runs:
        fork = f"{r.parent} step {r.fork_step}" if r.parent else ""
        print(f"{r.id:<14}{r.name[:42]:<44}{r.tokens:>14,}{r.own_tokens:>14,}  {fork}")
    print(f"{summary['n_runs']} runs; {summary['tokens']:,} tokens ({summary['flops']:.3g} FLOPs) against "
          f"{summary['tokens_from_scratch']:,} from scratch ({summary['tokens_from_scratch'] / summary['tokens']:.2f}x)")


def _print_outcomes(outcomes) -> None:
    print(f"{'status':<10}{'name':<44}{'tokens':>12}{'train loss':>12}  {'eval bits/byte':<22}{'tok/s':>9}")
    for o in outcomes:
        res = o.result or {}
        bpb = " ".join(f"{k} {v['bpb']:.3f}" for k, v in (res.get("eval") or {}).items())
        loss = f"{res['train_loss']:.3f}" if res.get("train_loss") is not None else ""
        tok_s = f"{res['tokens_per_s']:,.0f}" if res.get("tokens_per_s") else ""
        print(f"{o.status:<10}{o.run.name[:42]:<44}{o.run.tokens:>12,}{loss:>12}  {bpb:<22}{tok_s:>9}"
              + (f"  {o.error}" if o.error else ""))


def cmd_ui(args) -> None:
    from windtunnel.tracking import serve_ui

    serve_ui(port=args.port)


def parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="windtunnel", description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="command", required=True)
    models = sub.add_parser("models", help="every shape in models/*.yaml with its exact non-embedding N")
    models.add_argument("--json", action="store_true", help="one JSON list of objects")
    models.set_defaults(func=cmd_models)
    tr = sub.add_parser("train", help="train one model (resumes if interrupted)")
    tr.add_argument("model", help="a model name from `windtunnel models`")
    tr.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                    help="override a TrainSpec field (dotted for nested: schedule.kind=wsd, model.d_base=64)")
    tr.set_defaults(func=cmd_train)
    sw = sub.add_parser("sweep", help="run a sweep's graph on Ray (skips finished runs, resumes the rest)")
    sw.add_argument("spec", help="a sweep file, e.g. sweeps/lr.yaml")
    sw.add_argument("--scale", default="micro", help="which scale section of the sweep (micro | paper)")
    sw.add_argument("--dry-run", action="store_true", help="print the run graph, tokens and FLOPs; train nothing")
    sw.add_argument("--json", action="store_true", help="with --dry-run: one JSON object")
    sw.add_argument("--retries", type=int, default=2, help="retries of a run that raises before it is marked failed")
    sw.add_argument("--num-cpus", type=int, default=None, help="CPUs of the embedded local Ray (default: all)")
    sw.set_defaults(func=cmd_sweep)
    ui = sub.add_parser("ui", help="serve the MLflow UI on 127.0.0.1")
    ui.add_argument("--port", type=int, default=5000)
    ui.set_defaults(func=cmd_ui)
    return p


def main(argv: list[str] | None = None) -> int:
    args = parser().parse_args(argv)
    try:
        args.func(args)
    except WindtunnelError as err:
        print(f"windtunnel: error: {err}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("windtunnel: interrupted; run the same command again to resume", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
