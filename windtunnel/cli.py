"""The `windtunnel` command: parse, call one function, print. Bad input is one line on stderr, exit 2.

    windtunnel models [--json]
    windtunnel train MODEL [--set key=value ...]
    windtunnel ui [--port 5000]
"""

from __future__ import annotations

import argparse
import dataclasses
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


def _flat(prefix: str, obj) -> dict:
    out = {}
    for key, value in obj.items():
        if isinstance(value, dict):
            out.update(_flat(f"{prefix}{key}.", value))
        else:
            out[prefix + key] = value
    return out


def cmd_train(args) -> None:
    from windtunnel.config import TrainSpec, apply_overrides, get_model, spec_hash
    from windtunnel.data import prepare
    from windtunnel.model import count_params
    from windtunnel.paths import results_dir
    from windtunnel.tracking import RunLogger
    from windtunnel.train import total_tokens, train

    spec = apply_overrides(TrainSpec(model=get_model(args.model)), args.set)
    corpus = prepare(spec.data, vocab_size=spec.model.vocab_size)  # bad data fails here, before any run exists
    run_id = spec_hash(spec, corpus.fingerprint)
    run_dir = results_dir() / "runs" / run_id
    run_dir.mkdir(parents=True, exist_ok=True)
    id_file = run_dir / "mlflow_run_id"
    n, d = count_params(spec.model), total_tokens(spec)
    params = {**_flat("", dataclasses.asdict(spec)), "N": n, "D": d}
    logger = RunLogger(experiment="train", run_name=f"{spec.model.name}-{run_id}", params=params,
                       tags={"windtunnel.run": run_id, "model": spec.model.name, "parametrization": spec.model.parametrization},
                       run_id=id_file.read_text().strip() if id_file.exists() else None)
    id_file.write_text(logger.run_id)
    try:
        result = train(spec, run_dir, log=logger.log, flush=logger.flush, progress=True)
    except BaseException:
        logger.finish("KILLED", tag_status="interrupted")
        raise
    logger.finish("FINISHED" if result.status == "finished" else "FAILED", tag_status=result.status)
    evals = "  ".join(f"{k} {v['loss']:.3f} nats/tok {v['bpb']:.3f} bpb" for k, v in result.eval.items())
    mfu = f", MFU {result.mfu:.1%}" if result.mfu else ""
    print(f"{spec.model.name} N={n:,} {result.status}: {result.step} steps, {result.tokens:,} tokens, "
          f"train loss {result.train_loss:.3f}; eval {evals}; {result.tokens_per_s:,.0f} tok/s{mfu}; "
          f"run {run_dir}, MLflow run {logger.run_id} (windtunnel ui)")


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
