"""Do the scaling law's predictions and 95% intervals hold on real ladders that nobody here trained? (issue 20, point 4)

    python bench/public_ladders.py [--bootstrap K] [--out bench/results/public_ladders.json] [--workers 2]

The ladders are the published tables in `bench/data/public_ladders/` (README there: provenance, licences). Each design
fits part of a ladder and predicts the rest; the split is fixed by rule, before looking at any result:
- OLMo (Bhagia et al. 2024): fit the 190M–1B runs (every token budget), predict every 3B run and the 7B and 13B
  targets (the 7B's last stage anneals on other data: kept, and flagged in its `note`). The same rule as Porian's
  "largest sizes" below would hold out the 3B runs alone (cut at 1.6B).
- Porian et al. 2024, each of the four files, two designs:
  "largest_budgets": fit the rows at budgets ≤ 1.6e18 FLOPs, predict every row above (2–16× more compute);
  "largest_sizes": hold out the top quarter of the file's log-N range (N > N_min·(N_max/N_min)^0.75), fit the rest.
Rows that share noise share a `group` (resampled together by the bootstrap): every OLMo row is its own training run
(the `rerun` rows too); in Porian's files every row of one N is a point on that size's one loss curve — their
`fetch_flop` (analysis.py) reads each run's logged loss at every budget, and these settings (constant LR or one long
cosine) train one run per size — so a group is a size.

Each method gives, per held-out run, a prediction and a 95% interval; scored here: covered or not, relative error,
relative half-width, the interval score (Gneiting & Raftery 2007: width + 2/0.05 × the miss, over the actual loss),
and the extrapolation ratios over the largest N, D and C = 6ND of the fitted rows. Summary: coverage over all
held-out runs, the median relative half-width of those within 4× in every direction, the mean interval score per
distance bin (max of the three ratios: ≤2, 2–4, 4–16, >16). A run a method refuses (`"loss": None`, beyond its
guardrails) is counted apart (`refused`), not in the coverage.
Method: windtunnel.predict.fit_ladder, whose misspecification floor and guardrail limits are the calibration rule
(`rule`) applied to the OTHER ladders (leave one ladder out: a ladder is never scored with numbers learned from
itself); `--calibrate` prints each ladder's own s and reach and the rule over all five, the values in
windtunnel/predict.py. Beside it, "baseline": today's method before windtunnel.predict (the form with the lower
rolling-backtest error, fit_scaling_law with the group bootstrap, predict_interval of a new run), measured by this
script at commit 53338e7 and stored in bench/results/public_ladders_baseline.json. The new method's summary is the
top level of the JSON; today's is under "baseline"; the published figures under "published".
"""

from __future__ import annotations

import argparse
import json
import math
import os
import platform
import time
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass
from datetime import datetime, timezone
from pathlib import Path

import numpy as np
import pandas as pd

DATA = Path(__file__).resolve().parent / "data" / "public_ladders"
OLMO = "olmo_ladder_c4"
PORIAN = ("porian_1_rw_base_long_kaplan_standard_val", "porian_4_rw_tuned_short_const_standard_val",
          "porian_att_3_rw_tuned_short_const_attention_train", "porian_owt2_4_owt2_tuned_short_const_standard_val")
BUDGET_CUT = 1.6e18          # FLOPs: Porian's "largest budgets" design fits the budgets up to this one
SIZE_SHARE = 0.75            # "largest sizes": the top 1 − SIZE_SHARE of the log-N range is held out
ALPHA = 0.05                 # a 95% interval
BINS = {"<=2": (0.0, 2.0), "2-4": (2.0, 4.0), "4-16": (4.0, 16.0), ">16": (16.0, math.inf)}  # max(n, d, c)
OLMO_13B = {"loss": 2.3443873053175697, "source": "allenai/OLMo-ladder @ 67a3f44, "
            "src/scripts/paper/figures/step1_c4_main.csv (step 1: the paper-form law of C4 loss)"}
# Porian et al.'s compute-optimal exponent a (N_opt ∝ C^a) of each file's setting: fit_results["basic" | "weighted"]
# ["n_exponent"] in data/summary_df*.pickle.xz of formll/resolving-scaling-law-discrepancies @ 0dc60d9
PORIAN_A = {PORIAN[0]: (0.701, 0.706), PORIAN[1]: (0.497, 0.497), PORIAN[2]: (0.504, 0.505), PORIAN[3]: (0.518, 0.518)}
A_BUDGETS = (1.25e16, 2.56e19)  # FLOPs: the ends of Porian's budget grid, where our a is measured


# ---------------------------------------------------------------- the ladders


def load_olmo(path: Path) -> pd.DataFrame:
    """OLMo ladder: one row per training run; the two targets keep their note (the 7B anneals on other data)."""
    raw = pd.read_csv(path)
    role = raw["role"].str.extract(r"^(\w+)\s*(?:\((.*)\))?$")
    return pd.DataFrame({"N": raw["n_params"].astype(float), "D": raw["tokens"].astype(float),
                         "loss": raw["loss_c4"].astype(float), "group": raw["run"], "name": raw["run"],
                         "role": role[0], "note": role[1].fillna(""), "model": raw["model"]})


def load_porian(path: Path) -> pd.DataFrame:
    """A Porian et al. setting: one row per (size, budget); the rows of one size are one run's loss curve."""
    raw = pd.read_csv(path)
    return pd.DataFrame({"N": raw["N"].astype(float), "D": raw["D"].astype(float), "loss": raw["loss"].astype(float),
                         "group": [f"N{n:.0f}" for n in raw["N"]],
                         "name": [f"{n / 1e6:.0f}M@{c:.3g}" for n, c in zip(raw["N"], raw["flops"])],
                         "role": "ladder", "note": "", "flops": raw["flops"].astype(float)})


def load_ladders(folder: Path = DATA) -> dict[str, pd.DataFrame]:
    """Every public ladder by name: columns N, D, loss, group, name, role (ladder | target), note."""
    out = {OLMO: load_olmo(folder / f"{OLMO}.csv")}
    out.update({name: load_porian(folder / f"{name}.csv") for name in PORIAN})
    return out


# ---------------------------------------------------------------- the held-out designs


@dataclass(frozen=True)
class Design:
    ladder: str
    design: str
    fitted: pd.DataFrame
    targets: pd.DataFrame


def designs(ladders: dict[str, pd.DataFrame]) -> list[Design]:
    """The fixed splits of the module docstring."""
    olmo = ladders[OLMO]
    rung = olmo["role"] == "ladder"
    small = rung & (olmo["N"] < olmo.loc[rung, "N"].max())
    out = [Design(OLMO, "largest_sizes", olmo[small], olmo[~small])]
    for name in PORIAN:
        rows = ladders[name]
        cheap = rows["flops"] <= BUDGET_CUT
        log_n = np.log(rows["N"])
        kept = log_n <= log_n.min() + SIZE_SHARE * (log_n.max() - log_n.min())
        out += [Design(name, "largest_budgets", rows[cheap], rows[~cheap]),
                Design(name, "largest_sizes", rows[kept], rows[~kept])]
    return out


def extrapolation(fitted: pd.DataFrame, n, d) -> dict:
    """Ratios of a run's N, D and C = 6ND over the largest of the fitted rows."""
    c_max = (fitted["N"] * fitted["D"]).max()
    return {"n": float(n / fitted["N"].max()), "d": float(d / fitted["D"].max()), "c": float(n * d / c_max)}


# ---------------------------------------------------------------- the methods


def _columns(rows: pd.DataFrame):
    return rows["N"].to_numpy(float), rows["D"].to_numpy(float), rows["loss"].to_numpy(float), rows["group"].to_numpy()


def calibrate(rows: pd.DataFrame) -> dict:
    """One ladder's own calibration, every run fitted (windtunnel.predict): the largest misspecification sd s per
    e-fold its kept candidates' directional backtests measured, and how far beyond the fitted part their held-out
    points reached in N, D and C (the furthest over the candidates' backtests)."""
    from windtunnel.predict import DIRECTIONS, fit_ladder

    rows = rows[rows["role"] == "ladder"]   # OLMo's 7B and 13B targets are not part of its ladder
    fitted = fit_ladder(*_columns(rows)[:3], groups=rows["group"].to_numpy(), bootstrap=0)
    reach = {k: max(t["reach"][k] for c in fitted.candidates for t in c.backtests) for k in DIRECTIONS}
    return {"own_sd": fitted.own_sd, "reach": reach, "kept": [c.name for c in fitted.kept]}


def rule(calibrations: dict) -> dict:
    """The calibration rule (predict.MISSPEC_FLOOR and predict.LIMITS): the median over the ladders of their own s,
    and per direction the median over the ladders of their backtests' reach."""
    cal = list(calibrations.values())
    return {"floor": float(np.median([c["own_sd"] for c in cal])),
            "limits": {k: float(np.median([c["reach"][k] for c in cal])) for k in ("n", "d", "c")}}


def _baseline_stored() -> dict:
    """Today's method (before windtunnel.predict): the study's form, picked by the lower rolling-backtest error,
    fitted with the group bootstrap, and predict_interval of a new run — measured by this script at commit 53338e7
    (the code it needs is gone) and stored in bench/results/public_ladders_baseline.json."""
    return json.loads((Path(__file__).resolve().parent / "results" / "public_ladders_baseline.json").read_text())["baseline"]


def _windtunnel(fitted: pd.DataFrame, targets: pd.DataFrame, *, bootstrap: int, seed: int, floor: float,
                limits: dict) -> tuple[list, dict]:
    """windtunnel.predict.fit_ladder, its floor and limits calibrated on the other ladders (leave one ladder out)."""
    from windtunnel.predict import fit_ladder

    N, D, loss, groups = _columns(fitted)
    law = fit_ladder(N, D, loss, groups=groups, bootstrap=bootstrap, seed=seed, floor=floor, limits=limits)
    preds = law.predict(targets["N"].to_numpy(float), targets["D"].to_numpy(float))
    return preds, {"form": "+".join(c.form for c in law.kept), "own_sd": law.own_sd, "floor": floor,
                   "limits": limits, "n_dropped": law.n_dropped}


# ---------------------------------------------------------------- scores and summaries


def score(pred: dict, actual: float) -> dict:
    """Covered, relative error and half-width, and the interval score (width + 2/α × the miss) over the actual."""
    if pred.get("loss") is None:
        return {"covered": None, "rel_error": None, "rel_half_width": None, "interval_score": None}
    low, high = pred["low"], pred["high"]
    miss = max(low - actual, 0.0) + max(actual - high, 0.0)
    return {"covered": bool(low <= actual <= high), "rel_error": pred["loss"] / actual - 1,
            "rel_half_width": (high - low) / 2 / actual, "interval_score": ((high - low) + 2 / ALPHA * miss) / actual}


def target_records(design: Design, preds: list[dict]) -> list[dict]:
    """One record per held-out run: the prediction, its interval, the scores, the distance, any published figure."""
    out = []
    for (_, row), pred in zip(design.targets.iterrows(), preds):
        ext = extrapolation(design.fitted, row["N"], row["D"])
        record = {"ladder": design.ladder, "design": design.design, "name": row["name"], "n": row["N"],
                  "d": row["D"], "actual": row["loss"], "loss": pred.get("loss"), "low": pred.get("low"),
                  "high": pred.get("high"), **score(pred, row["loss"]), "extrapolation": ext,
                  "error_per_efold": _per_efold(pred.get("loss"), row["loss"], ext)}
        record.update({k: v for k, v in (("reason", pred.get("reason")), ("note", row["note"])) if v})
        if design.ladder == OLMO and row["name"] == "peteish13":
            record["published"] = {**OLMO_13B, "rel_error": OLMO_13B["loss"] / row["loss"] - 1}
        out.append(record)
    return out


def _per_efold(pred, actual: float, ext: dict):
    """log(pred/actual) per e-fold of the farthest extrapolation: the misspecification per unit log-distance."""
    reach = max(math.log(v) for v in ext.values())
    return None if pred is None or reach <= 0 else math.log(pred / actual) / reach


def _distance(record: dict) -> float:
    """max(n, d, c), a hair lowered so an exact multiple (C 16× the fitted, up to rounding) falls in the bin it ends."""
    return max(record["extrapolation"].values()) * (1 - 1e-9)


def summarise(records: list[dict]) -> dict:
    """Coverage over every predicted run, median half-width within 4×, mean interval score per distance bin."""
    done = [r for r in records if r["loss"] is not None]
    near = [r["rel_half_width"] for r in done if _distance(r) <= 4]
    by_bin = {label: [r["interval_score"] for r in done if lo < _distance(r) <= hi] for label, (lo, hi) in BINS.items()}
    return {"coverage": float(np.mean([r["covered"] for r in done])) if done else None,
            "median_half_width_within_4x": float(np.median(near)) if near else None,
            "interval_score": {k: float(np.mean(v)) if v else None for k, v in by_bin.items()},
            "n_targets": len(records), "refused": len(records) - len(done)}


def design_row(design: Design, records: list[dict], info: dict) -> dict:
    """The per-design line of the table: the summary plus median |error| and half-width, and the fit's facts."""
    done = [r for r in records if r["loss"] is not None]
    return {"ladder": design.ladder, "design": design.design, "n_fitted": len(design.fitted), **summarise(records),
            "median_abs_error": float(np.median([abs(r["rel_error"]) for r in done])) if done else None,
            "median_half_width": float(np.median([r["rel_half_width"] for r in done])) if done else None,
            **info}


def per_efold(records: list[dict]) -> dict:
    """Per ladder: the signed log error per e-fold of extrapolation, its median and RMS over the held-out runs."""
    out = {}
    for ladder in dict.fromkeys(r["ladder"] for r in records):
        v = np.array([r["error_per_efold"] for r in records if r["ladder"] == ladder and r["error_per_efold"] is not None])
        out[ladder] = {"median": float(np.median(v)), "rms": float(np.sqrt(np.mean(v ** 2))), "n": int(v.size)}
    return out


# ---------------------------------------------------------------- the published figures


def porian_exponents(ladders: dict[str, pd.DataFrame]) -> dict:
    """Porian et al.'s a beside ours: each form fitted to every row of the file (bootstrap 0), a = the log-log slope
    of the numeric compute-optimal N between the two ends of their budget grid (C = 6ND with the file's N)."""
    from windtunnel import fit

    out, c = {}, np.array(A_BUDGETS)
    for name in PORIAN:
        N, D, loss, _ = _columns(ladders[name])
        ours = {}
        for form in fit.FORMS:
            n_opt = fit.compute_optimal(fit.fit_scaling_law(N, D, loss, form=form), c)["N_opt_numeric"].to_numpy()
            ours[form] = float(np.log(n_opt[1] / n_opt[0]) / np.log(c[1] / c[0]))
        out[name] = {"a_published": dict(zip(("basic", "weighted"), PORIAN_A[name])), "a_fitted_all_rows": ours,
                     "budgets": list(A_BUDGETS), "source": "formll/resolving-scaling-law-discrepancies @ 0dc60d9, "
                     "data/summary_df*.pickle.xz, fit_results[...]['n_exponent']"}
    return out


# ---------------------------------------------------------------- the run


def _job(args: tuple) -> tuple[list, dict, float]:
    design, bootstrap, seed, cal = args
    start = time.perf_counter()
    preds, info = _windtunnel(design.fitted, design.targets, bootstrap=bootstrap, seed=seed, **cal)
    return preds, info, time.perf_counter() - start


def evaluate(all_designs: list[Design], calibrations: dict, *, bootstrap: int, seed: int, workers: int) -> dict:
    """Every design with windtunnel's calibrated method, each ladder's floor and limits from the other ladders:
    the summary over all held-out runs, the per-design table, the records."""
    held_out = {d.ladder: rule({k: v for k, v in calibrations.items() if k != d.ladder}) for d in all_designs}
    with ProcessPoolExecutor(workers) as pool:
        results = list(pool.map(_job, [(d, bootstrap, seed, held_out[d.ladder]) for d in all_designs]))
    records, rows = [], []
    for design, (preds, info, seconds) in zip(all_designs, results):
        mine = target_records(design, preds)
        records += mine
        rows.append({**design_row(design, mine, info), "seconds": seconds})
    return {**summarise(records), "by_design": rows, "error_per_efold": per_efold(records), "targets": records}


def matmul_peak(n: int = 1024, reps: int = 8) -> float:
    """fp32 matmul FLOP/s of numpy on this machine (printed with any timing: the machines here differ 3×)."""
    a = np.random.default_rng(0).standard_normal((n, n), dtype=np.float32)
    a @ a
    start = time.perf_counter()
    for _ in range(reps):
        a @ a
    return reps * 2 * n ** 3 / (time.perf_counter() - start)


def _pct(x) -> str:
    return "   -  " if x is None else f"{100 * x:5.1f}%"


def print_table(name: str, result: dict) -> None:
    print(f"\n{name}: coverage {_pct(result['coverage'])} over {result['n_targets'] - result['refused']} runs "
          f"({result['refused']} refused), median half-width within 4x {_pct(result['median_half_width_within_4x'])}")
    print(f"{'ladder':<52} {'design':<16} {'form':<10} {'runs':>4} {'cover':>6} {'|err|':>6} {'half-w':>6}  "
          + "  ".join(f"IS{k:>5}" for k in BINS))
    for r in result["by_design"]:
        print(f"{r['ladder']:<52} {r['design']:<16} {r.get('form', ''):<10} {r['n_targets']:>4} {_pct(r['coverage'])} "
              f"{_pct(r['median_abs_error'])} {_pct(r['median_half_width'])}  "
              + "  ".join(_pct(v) for v in r["interval_score"].values()))
    for r in result["targets"]:
        if r["ladder"] == OLMO and r["loss"] is None:
            print(f"  {r['name']:<16} actual {r['actual']:.4f}  refused: {r.get('reason', '')}")
        elif r["ladder"] == OLMO:
            published = f"  published {r['published']['loss']:.4f}" if "published" in r else ""
            print(f"  {r['name']:<16} actual {r['actual']:.4f}  pred {r['loss']:.4f} [{r['low']:.4f}, {r['high']:.4f}] "
                  f"err {_pct(r['rel_error'])} {'covered' if r['covered'] else 'MISSED '}{published}"
                  + (f"  ({r['note']})" if r.get("note") else ""))
    for ladder, v in result["error_per_efold"].items():
        print(f"  error per e-fold, {ladder:<52} median {v['median']:+.4f}  rms {v['rms']:.4f}  ({v['n']} runs)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bootstrap", type=int, default=1000, help="bootstrap resamples of each method's fit")
    parser.add_argument("--out", type=Path, default=Path("bench/results/public_ladders.json"))
    parser.add_argument("--workers", type=int, default=2, help="processes, one design each at a time")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--calibrate", action="store_true", help="print the calibration rule's values and stop")
    args = parser.parse_args()
    ladders, start = load_ladders(), time.perf_counter()
    all_designs = designs(ladders)
    out = {"settings": {"bootstrap": args.bootstrap, "seed": args.seed, "workers": args.workers,
                        "machine": platform.node(), "cpus": os.cpu_count(), "numpy": np.__version__,
                        "matmul_peak_fp32": matmul_peak(), "load_average_before": os.getloadavg(),
                        "date": datetime.now(timezone.utc).isoformat(timespec="seconds")},
           "designs": {"olmo": "fit 190M-1B, predict the 3B runs and the 7B, 13B targets",
                       "largest_budgets": f"Porian: fit budgets <= {BUDGET_CUT:.2g} FLOPs, predict every row above",
                       "largest_sizes": f"Porian: hold out N > N_min*(N_max/N_min)^{SIZE_SHARE}"}}
    with ProcessPoolExecutor(args.workers) as pool:
        calibrations = dict(zip(ladders, pool.map(calibrate, ladders.values())))
    out["calibration"] = {"ladders": calibrations, "rule": rule(calibrations),
                          "how": "each ladder fitted on all its runs; floor = median of their own s, limits = "
                                 "median of their backtests' reach per direction (predict.MISSPEC_FLOOR, LIMITS); "
                                 "each design below uses the rule over the other ladders (leave one ladder out)"}
    for name, c in calibrations.items():
        print(f"calibration {name:<52} s {c['own_sd']:.4f}/e-fold, reach N {c['reach']['n']:.3g}x D "
              f"{c['reach']['d']:.3g}x C {c['reach']['c']:.3g}x, kept {', '.join(c['kept'])}")
    r = out["calibration"]["rule"]
    print(f"rule over all ladders: floor {r['floor']:.4f}, limits N {r['limits']['n']:.4g}x D {r['limits']['d']:.4g}x "
          f"C {r['limits']['c']:.4g}x")
    if args.calibrate:
        return
    result = evaluate(all_designs, calibrations, bootstrap=args.bootstrap, seed=args.seed, workers=args.workers)
    print_table("windtunnel", result)
    out.update(result)
    out["baseline"] = _baseline_stored()
    print_table("baseline (stored, commit 53338e7)", out["baseline"])
    out["versus_baseline"] = {k: {"windtunnel": out["interval_score"][k], "baseline": out["baseline"]["interval_score"][k]}
                              for k in BINS}
    out["published"] = {"olmo_13b": OLMO_13B, "porian": porian_exponents(ladders)}
    for name, v in out["published"]["porian"].items():
        fitted = ", ".join(f"{k} {a:.3f}" for k, a in v["a_fitted_all_rows"].items())
        print(f"a (N_opt ~ C^a), {name}: published {v['a_published']['basic']:.3f}; ours on every row: {fitted}")
    out["settings"].update(seconds=time.perf_counter() - start, load_average_after=os.getloadavg())
    print(f"{out['settings']['seconds']:.0f} s, {args.workers} workers, matmul peak "
          f"{out['settings']['matmul_peak_fp32'] / 1e9:.0f} GFLOP/s, load {out['settings']['load_average_before']}")
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(out, indent=1, default=float) + "\n")
    print(f"wrote {args.out}")


if __name__ == "__main__":
    main()
