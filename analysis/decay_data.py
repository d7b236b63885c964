"""Two-stage pre-training (paper §6): a decay that mixes in other data against a plain decay, per held-out set.

    python analysis/decay_data.py [--scale micro]

Pairs each mixture branch of the decay_data sweep with the plain branch forked from the same stable run at the
same point, and reports per held-out set the change of its final loss (bits per byte; negative = the mixture
helped), by size and on average over pairs. Writes results/decay_data/fit.json.
"""

import sys

from windtunnel import studies, tracking

KEYS = ["parent", "branch_tokens", "decay_fraction", "decay_shape"]


def main(args) -> None:
    frame, excluded = studies.final_points("decay_data", scale=args.scale, current=not args.all_runs)
    branches = studies.decay_points(frame)
    sets = sorted(c for c in branches if c.startswith("bpb_"))
    plain = branches[branches["decay_data"] == ""].set_index(KEYS)
    pairs = []
    for row in branches[branches["decay_data"] != ""].itertuples():
        key = tuple(getattr(row, k) for k in KEYS)
        if key not in plain.index:
            continue
        base = plain.loc[key]
        pairs.append({"model": row.model, "seed": row.seed, "D": row.D, "mixture": row.decay_data,
                      **{s[4:]: getattr(row, s) - base[s] for s in sets},
                      **{f"{s[4:]}_relative": getattr(row, s) / base[s] - 1 for s in sets}})
    if not pairs:
        raise studies.NoRuns("no pair of a plain and a mixture decay from one stable run and point; "
                             "run `windtunnel sweep sweeps/decay_data.yaml` first")
    import pandas as pd

    table = pd.DataFrame(pairs)
    names = [s[4:] for s in sets]
    by_model = table.groupby(["model", "mixture"])[[f"{n}_relative" for n in names]].mean()
    overall = table[[f"{n}_relative" for n in names]].agg(["mean", "std", "count"])
    out = studies.study_dir("decay_data")
    studies.write_json(out / "fit.json", {"scale": args.scale, "excluded": excluded, "pairs": pairs,
                                          "mean_relative_change": overall.loc["mean"].to_dict(),
                                          "sd_relative_change": overall.loc["std"].to_dict()})
    print(f"{'model':<12}{'mixture':<26}" + "".join(f"{n:>12}" for n in names))
    for (model, mixture), row in by_model.iterrows():
        print(f"{model:<12}{mixture:<26}" + "".join(f"{row[f'{n}_relative']:>+12.2%}" for n in names))
    n = int(overall.loc["count"].iloc[0])
    print(f"{'all':<12}{f'mean of {n} pairs':<26}" + "".join(f"{overall.loc['mean', f'{c}_relative']:>+12.2%}"
                                                             for c in names))
    print("(final loss of the mixture decay / the plain decay − 1, per held-out set: negative = the mixture helped)")
    print(f"written: {out}/fit.json")
    tracking.log_outputs([out], output="decay_data", sweep="decay_data", scale=args.scale)  # on the sweep's MLflow run


if __name__ == "__main__":
    sys.exit(studies.run_script(main, __doc__))
