"""The paper's figures, drawn from the studies' tables and fits (matplotlib, Agg backend, PNG files).

Each function takes the DataFrames of `windtunnel.studies` and the fit dicts it wrote to fit.json, saves one
figure and returns its path. Figure numbers are those of the MiniCPM paper (arXiv 2404.06395).
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

if TYPE_CHECKING:
    import pandas as pd

__all__ = ["batch_size_curves", "batch_size_law", "lr_transfer", "wsd_curves", "decay_fractions", "envelope",
           "iso_loss", "loss_vs_tokens", "backtests", "copy_gap", "validation", "decay_dynamics", "coord_check",
           "curve_bands"]


def _figure(ncols: int = 1, *, width: float = 5.2, height: float = 4.0):
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(1, ncols, figsize=(width * ncols, height), squeeze=False)
    return fig, axes[0]


def _save(fig, path: Path) -> Path:
    import matplotlib.pyplot as plt

    from windtunnel.paths import atomic_path

    _readable_log_axes(fig)
    fig.tight_layout()
    try:
        with atomic_path(path) as tmp:  # a temporary file, renamed when complete
            fig.savefig(tmp, dpi=120, format=Path(path).suffix.lstrip(".") or "png")
    finally:
        plt.close(fig)
    return path


def _readable_log_axes(fig) -> None:
    """Every log axis labelled on major ticks only, in short numbers (30K, 2M, 0.01, 1e18): 1-2-5 within about two
    decades, whole decades beyond (at most ~8 labels). Matplotlib's default labels the minor ticks of an axis that
    spans about a decade, and their labels collide ("3×10⁴ 4×10⁴")."""
    from matplotlib.ticker import FuncFormatter, LogLocator, NullFormatter

    for ax in fig.axes:
        for axis, scale in ((ax.xaxis, ax.get_xscale()), (ax.yaxis, ax.get_yscale())):
            if scale != "log":
                continue
            low, high = sorted(axis.get_view_interval())
            decades = np.log10(high / low) if low > 0 else np.inf
            axis.set_major_locator(LogLocator(base=10, subs=(1.0, 2.0, 5.0) if decades <= 2 else (1.0,), numticks=8))
            axis.set_major_formatter(FuncFormatter(short_number))
            axis.set_minor_formatter(NullFormatter())


def short_number(x: float, _pos=None) -> str:
    """A tick label: 30K, 2M, 1.5G, 0.01; below 0.001 or from 1e12 on, 1e-4 and 2e18."""
    if not np.isfinite(x) or x <= 0:
        return ""
    if x >= 1e12 or x < 1e-3:
        mantissa, exponent = f"{x:.0e}".split("e")
        return f"{mantissa}e{int(exponent)}"
    for unit, size in (("G", 1e9), ("M", 1e6), ("K", 1e3)):
        if x >= size:
            return f"{x / size:g}{unit}"
    return f"{x:g}"


def _colors(n: int):
    import matplotlib

    return matplotlib.colormaps["viridis"](np.linspace(0.05, 0.9, max(n, 1)))


def batch_size_curves(reach: pd.DataFrame, optima: pd.DataFrame, path: Path) -> Path:
    """Fig. 1: tokens to reach each loss against batch size, one panel per model, coloured by loss; optima joined."""
    models = list(dict.fromkeys(reach["model"]))
    fig, axes = _figure(len(models))
    levels = sorted(reach["level"].unique())
    colors = dict(zip(levels, _colors(len(levels))))
    for ax, model in zip(axes, models):
        for level, group in reach[reach["model"] == model].groupby("level"):
            ax.plot(group["batch_tokens"], group["tokens"], "o-", ms=3, lw=1, color=colors[level], label=f"{level:.3f}")
        best = optima[optima["model"] == model].sort_values("level")
        ax.plot(best["bs_opt"], best["tokens_at_opt"], "k*--", ms=8, lw=1, label="optimum")
        ax.set(xscale="log", yscale="log", xlabel="batch size (tokens)", ylabel="tokens to reach the loss", title=model)
    axes[0].legend(title="loss (bits/byte)", fontsize=7)
    return _save(fig, path)


def batch_size_law(optima: pd.DataFrame, fit: dict, path: Path) -> Path:
    """Fig. 2: the optimal batch size of every model and loss level, and the line bs_opt = k / L^γ."""
    fig, (ax,) = _figure()
    for (model, group), color in zip(optima.groupby("model", sort=False), _colors(optima["model"].nunique())):
        ax.plot(group["level"], group["bs_opt"], "o", color=color, label=model)
    loss = np.geomspace(optima["level"].min() * 0.95, optima["level"].max() * 1.05, 50)
    ax.plot(loss, fit["k"] / loss ** fit["gamma"], "k-", lw=1,
            label=f"bs = {fit['k']:.3g} / L^{fit['gamma']:.2f}")
    ax.set(xscale="log", yscale="log", xlabel="loss (bits/byte)", ylabel="optimal batch size (tokens)")
    ax.legend(fontsize=8)
    return _save(fig, path)


def lr_transfer(points: pd.DataFrame, optima: list[dict], path: Path) -> Path:
    """Fig. 3: final loss against base LR per width, µP beside SP, with each width's optimum and interval (an open
    side drawn to the grid's last LR); a diverged run is a ▲ at the top: censored, the optimum lies below it."""
    kinds = [k for k in ("mup", "sp") if (points["parametrization"] == k).any()]
    fig, axes = _figure(len(kinds))
    for ax, kind in zip(axes, kinds):
        part = points[points["parametrization"] == kind]
        models = list(dict.fromkeys(part.sort_values("N")["model"]))
        for model, color in zip(models, _colors(len(models))):
            group = part[part["model"] == model].sort_values("lr")
            finite = group[np.isfinite(group["loss"])]
            ax.plot(finite["lr"], finite["loss"], "o-", color=color, ms=4, label=model)
            diverged = group.loc[~np.isfinite(group["loss"]), "lr"]
            ax.plot(diverged, [0.97] * len(diverged), "^", color=color, ms=7, transform=ax.get_xaxis_transform())
            for best in (o for o in optima if o["parametrization"] == kind and o["model"] == model):
                low, high = (best["low"] or group["lr"].min()), (best["high"] or group["lr"].max())
                xerr = [[best["lr_opt"] - low], [high - best["lr_opt"]]] if best["at_edge"] or best["low"] else None
                ax.errorbar([best["lr_opt"]], [best["loss_opt"]], xerr=xerr, fmt="*", color=color, ms=10, capsize=3)
        if not np.isfinite(part["loss"]).all():
            ax.plot([], [], "^", color="gray", label="diverged (optimum below)")
        ax.set(xscale="log", xlabel="base learning rate", ylabel="final loss (bits/byte)",
               title="µP" if kind == "mup" else "standard parametrization")
        ax.legend(fontsize=8)
    return _save(fig, path)


def wsd_curves(curves: pd.DataFrame, labels: dict[str, str], path: Path) -> Path:
    """Fig. 4: held-out loss against tokens of the Cosine(T) runs (dashed), the stable run and its WSD decay
    branches (solid, a dot at each evaluation: a short branch has few)."""
    fig, (ax,) = _figure(width=8, height=5)
    import matplotlib

    ids = sorted(labels, key=labels.get)
    palette = matplotlib.colormaps["tab20"](np.linspace(0, 1, 20))
    for i, run_id in enumerate(ids):
        group = curves[curves["run_id"] == run_id]
        style = "--" if "osine" in labels[run_id] else ".-"
        ax.plot(group["tokens"], group["loss"], style, color=palette[i % 20], lw=1.2, ms=5, label=labels[run_id])
    ax.set(xlabel="tokens", ylabel="held-out loss (bits/byte)")
    late = curves.loc[curves["tokens"] >= 0.2 * curves["tokens"].max(), "loss"]  # past warm-up: where schedules differ
    low, high = late.min(), late.max()
    ax.set_ylim(low - 0.03 * (high - low), high)
    ax.legend(fontsize=6, ncol=2, loc="upper right")
    return _save(fig, path)


def decay_fractions(points: pd.DataFrame, path: Path) -> Path:
    """Fig. 5: final loss against the decay's share of the tokens, per branch point and decay shape."""
    fig, (ax,) = _figure()
    groups = list(points.groupby(["branch_tokens_per_param", "decay_shape"]))
    for ((at, shape), group), color in zip(groups, _colors(len(groups))):
        group = group.sort_values("decay_fraction")
        ax.plot(group["decay_fraction"], group["loss"], "o-", color=color, ms=4, label=f"{at:g}N {shape}")
    ax.set(xscale="log", xlabel="decay length / branch-point tokens", ylabel="final loss (bits/byte)")
    ax.legend(fontsize=7, ncol=2)
    return _save(fig, path)


def envelope(points: pd.DataFrame, fits: dict, path: Path) -> Path:
    """Fig. 6: the series WSD(D, 0.1D) per model, fit by β·C^−α + L0 and by α·e^(−β·C) + L0."""
    from windtunnel.fit import EnvelopeFit

    models = [m for m in fits if "skipped" not in fits[m]]
    fig, axes = _figure(max(len(models), 1))
    for ax, model in zip(axes, models):
        group = points[points["model"] == model]
        compute = group["C"]
        ax.plot(compute, group["loss"], "ko", ms=4, label="WSD(D, 0.1D)")
        grid = np.geomspace(compute.min(), compute.max() * 3, 80)
        result = EnvelopeFit.from_dict(fits[model])
        for kind, style in (("power", "-"), ("exponential", "--")):
            ax.plot(grid, result.predict(kind, grid), style, lw=1,
                    label=f"{kind} (AIC {fits[model]['aic'][kind]:.1f})")
        ax.set(xscale="log", xlabel="compute C (FLOPs)", ylabel="loss (bits/byte)", title=model)
        ax.legend(fontsize=7)
    return _save(fig, path)


def iso_loss(fit: dict, points: pd.DataFrame, flops: dict, path: Path) -> Path:
    """Fig. 10: contours of L(N, C/f(N)) over compute and model size, with the compute-optimal N line; f is the
    fit's FLOP count per token (`flops`, fit.json's; `points` has each run's C in it)."""
    from windtunnel.fit import PerToken, ScalingLawFit

    law, per_token = ScalingLawFit.from_dict(fit), PerToken.from_dict(flops)
    compute = points["C"]
    c = np.geomspace(compute.min() / 10, compute.max() * 1e3, 120)
    n = np.geomspace(points["N"].min() / 10, points["N"].max() * 100, 120)
    cc, nn = np.meshgrid(c, n)
    fig, (ax,) = _figure(width=6)
    levels = np.geomspace(points["loss"].min() * 0.85, points["loss"].max() * 1.15, 12)  # around the data, not the corners
    contour = ax.contour(cc, nn, law.predict(nn, cc / per_token(nn)), levels=levels, cmap="viridis", linewidths=0.8)
    ax.clabel(contour, fontsize=6, fmt="%.2f")
    ax.plot(c, [law.optimal_n(x, per_token) for x in c], "r-", lw=1.5, label="N_opt(C)")
    ax.plot(compute, points["N"], "k.", ms=4, label="fitted runs")
    n_name = {"total": "parameters N (with the tied embedding)", "non_embedding": "non-embedding parameters N"}
    ax.set(xscale="log", yscale="log", xlabel=f"compute C (FLOPs, {per_token.count})",
           ylabel=n_name.get(fit.get("n_kind"), "N"))
    ax.legend(fontsize=8)
    return _save(fig, path)


def loss_vs_tokens(fits: list[dict], points: pd.DataFrame, path: Path) -> Path:
    """Fig. 17: final loss against training tokens per model size, with each fitted form's L(N, D) curves (a panel
    per form: the paper's separable one keeps the gap between sizes fixed in D, Kaplan et al.'s lets it widen)."""
    from windtunnel.fit import ScalingLawFit

    fits = list({fit.get("form", "chinchilla"): fit for fit in fits}.values())
    fig, axes = _figure(len(fits), width=6)
    groups = list(points.groupby("N"))
    for ax, fit in zip(axes, fits):
        law = ScalingLawFit.from_dict(fit)
        for (n, group), color in zip(groups, _colors(len(groups))):
            d = np.geomspace(group["D"].min() / 1.5, group["D"].max() * 3, 60)
            ax.plot(group["D"], group["loss"], "o", color=color, ms=4, label=f"{group['model'].iloc[0]} (N={n:,.0f})")
            ax.plot(d, law.predict(n, d), "-", color=color, lw=1)
        ax.set(xscale="log", xlabel="training tokens D", ylabel="final loss (bits/byte)", title=_law_title(fit))
        ax.title.set_fontsize(8)
    axes[0].legend(fontsize=7)
    return _save(fig, path)


def _law_title(fit: dict) -> str:
    """The fitted law as a figure title; a parameter that is not identified is named, not printed as a value."""
    missing = fit.get("not_identified", {})
    l0 = "L0 (n.i.)" if "L0" in missing else f"{fit['L0']:.3f}"
    if fit.get("form", "chinchilla") == "chinchilla":
        return f"L = {fit['C_N']:.3g}·N^-{fit['alpha']:.3f} + {fit['C_D']:.3g}·D^-{fit['beta']:.3f} + {l0}"
    return (f"L = (({fit['N_c']:.3g}/N)^({fit['alpha_N']:.3f}/{fit['alpha_D']:.3f}) + {fit['D_c']:.3g}/D)"
            f"^{fit['alpha_D']:.3f} + {l0}")


def backtests(fit: dict, points: pd.DataFrame, path: Path) -> Path | None:
    """The rolling backtests (§5): each panel fits the k smallest sizes and predicts the next one's points,
    with their 95% prediction intervals; the title gives the mean error and how many points the interval held."""
    from windtunnel.fit import ScalingLawFit

    tests = fit["backtests"]
    if not tests:
        return None  # fewer than four sizes: nothing to hold out
    fig, axes = _figure(len(tests), width=4.2)
    for ax, test in zip(axes, tests):
        held = points[points["N"] == test["held_out_N"]]
        law = ScalingLawFit.from_dict(test["fit"])
        d = np.geomspace(held["D"].min() / 1.3, held["D"].max() * 1.3, 50)
        ax.plot(d, law.predict(test["held_out_N"], d), "r-", lw=1, label="predicted")
        if test["low"]:
            ax.vlines(held["D"], test["low"], test["high"], color="r", alpha=0.3, lw=4, label="95% prediction interval")
        ax.plot(held["D"], held["loss"], "ko", ms=4, label="actual")
        cover = "" if test["coverage"] is None else f", {sum(test['covered'])}/{test['n_test']} covered"
        ax.set(xscale="log", xlabel="training tokens D", ylabel="final loss (bits/byte)",
               title=f"sizes 1–{test['n_sizes']} → N={test['held_out_N']:,.0f}\nmean error {test['mean_rel_err']:+.2%}{cover}")
        ax.title.set_fontsize(8)
    axes[0].legend(fontsize=6)
    return _save(fig, path)


def copy_gap(curves: pd.DataFrame, points: pd.DataFrame, threshold: float, path: Path) -> Path | None:
    """Issue 22: each stable run's mean copy gap (nats) against tokens, a colour per size and a line style per seed,
    with its branch points (○) and, in red, those mid-transition (the gap rising faster than `threshold` nats per
    e-fold before the fork: left out of the fits). `curves` and `points` are studies.points.copy_gap_ladder's.
    None when no run logged the copy gap."""
    if curves.empty:
        return None
    from matplotlib.lines import Line2D

    fig, (ax,) = _figure(width=8.5, height=4.5)
    curves = curves.assign(seed=curves["seed"].fillna(0))
    sizes = sorted(curves["N"].unique())
    colors = dict(zip(sizes, _colors(len(sizes))))
    seeds = sorted(curves["seed"].unique())
    styles = dict(zip(seeds, ["-", "--", ":", "-."] * len(seeds)))
    for _, curve in curves.groupby("group"):
        ax.plot(curve["tokens"], curve["gap"], styles[curve["seed"].iloc[0]], color=colors[curve["N"].iloc[0]], lw=1.2)
    for (n, mid), part in points.groupby(["N", "mid_transition"]):
        ax.plot(part["fork_tokens"], part["gap"], "o", ms=9 if mid else 6, mfc="none", mew=2 if mid else 1,
                color="red" if mid else colors.get(n, "k"))
    handles = [Line2D([], [], color=colors[n], lw=2, label=model)
               for n, model in curves.drop_duplicates("N").sort_values("N")[["N", "model"]].itertuples(index=False)]
    handles += [Line2D([], [], color="k", ls=styles[s], label=f"seed {s:g}") for s in seeds]
    handles += [Line2D([], [], color="k", marker="o", mfc="none", ls="", label="branch point"),
                Line2D([], [], color="red", marker="o", mfc="none", mew=2, ms=9, ls="",
                       label=f"mid-transition (> {threshold:g} nats/e-fold): left out")]
    ax.set(xscale="log", xlabel="tokens (stable run)", ylabel="copy gap (nats): loss on new − on repeated pairs",
           title="in-context copying: the copy gap of every stable run")
    ax.title.set_fontsize(9)
    ax.xaxis.set_major_formatter(_token_labels())
    ax.legend(handles=handles, fontsize=7, loc="upper left", bbox_to_anchor=(1.01, 1))   # beside: curves overlap
    return _save(fig, path)


def _token_labels():
    """Tick labels of a token axis as the sweeps name branch points: 256K, 1M, 1.5G."""
    from matplotlib.ticker import FuncFormatter

    def label(x, _):
        scale, unit = next(((s, u) for s, u in ((1e9, "G"), (1e6, "M"), (1e3, "K")) if x >= s), (1, ""))
        return f"{x / scale:g}{unit}"

    return FuncFormatter(label)


def validation(curve: pd.DataFrame, result: dict, path: Path) -> Path:
    """Predicted against actual: the target's held-out loss over its run, and the law's prediction with its 95%
    prediction interval at the tokens the plan trained it to."""
    fig, (ax,) = _figure(width=6)
    ax.plot(curve["tokens"], curve["loss"], "k-", lw=1, label=f"{result['target']}: actual (mean held-out bits/byte)")
    ax.errorbar([result["tokens"]], [result["predicted"]], fmt="o", color="r", capsize=4,
                yerr=[[result["predicted"] - result["low"]], [result["high"] - result["predicted"]]],
                label=f"predicted {result['predicted']:.4f}, 95% [{result['low']:.4f}, {result['high']:.4f}]")
    ax.plot([result["tokens"]], [result["actual"]], "k*", ms=10, label=f"final {result['actual']:.4f} "
            f"({result['rel_error']:+.2%} predicted/actual − 1)")
    ax.set(xscale="log", xlabel="training tokens", ylabel="held-out loss (bits/byte)",
           ylim=(result["low"] * 0.97, min(curve["loss"].max(), result["high"] * 1.5)),
           title=f"{result['target']}: {result['n_extrapolation']:.2g}× the ladder's largest N, planned from the fits")
    ax.title.set_fontsize(9)
    ax.legend(fontsize=7)
    return _save(fig, path)


def decay_dynamics(curves: dict[str, tuple[pd.DataFrame, int]], path: Path) -> Path:
    """§4.4 (Fig. 7–8): the trainer's per-step statistics around each decay, against steps from the fork.

    `curves` maps a branch's name to (its logged steps led by the parent's, the fork step). Loss, D1 and K are
    rolling medians over ~5% of the steps (one step is minibatch noise); the last panel is Fig. 7: the max
    |Δw| of each weight matrix of the longest branch."""
    panels = [("loss", "train loss (nats/token, median)", False), ("grad/norm", "gradient norm", False),
              ("grad/cos_prev", "cos(g_t, g_t-1)", False), ("grad/D1", "D1 = g(t+1)·v/‖v‖ (median)", False),
              ("grad/curvature", "curvature K = |D2|/(1+D1²)^1.5 (median)", True)]
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(2, 3, figsize=(14, 7))
    for (label, (curve, fork)), color in zip(curves.items(), _colors(len(curves))):
        x = (curve["step"] - fork) / max(curve["step"].max() - fork, 1)  # 0 at the fork, 1 at the decay's end
        window = max(3, len(curve) // 20)
        for ax, (key, title, log) in zip(axes.flat, panels):
            if key not in curve or curve[key].isna().all():
                continue
            smooth = key in ("loss", "grad/D1", "grad/curvature")
            y = curve[key].rolling(window, center=True, min_periods=1).median() if smooth else curve[key]
            ax.plot(x, y, lw=0.8, color=color, label=label)
            ax.set(title=title, xlabel="steps from the fork / decay length", yscale="log" if log else "linear")
    longest, (curve, fork) = max(curves.items(), key=lambda kv: len(kv[1][0]))
    matrices = [k for k in curve if k.startswith("update/max_abs/")]
    ax = axes.flat[5]
    for key, color in zip(matrices, _colors(len(matrices))):  # logged at evaluations only: NaN between them
        points = curve[["step", key]].dropna()
        ax.plot(points["step"] - fork, points[key], lw=0.6, color=color, label=key.removeprefix("update/max_abs/"))
    ax.set(title=f"max |Δw| per matrix: {longest}", xlabel="steps from the fork", yscale="log")
    if matrices:
        ax.legend(fontsize=5, ncol=2)
    for ax in axes.flat:
        ax.axvline(0, color="0.7", lw=0.6)
        ax.title.set_fontsize(9)
    axes.flat[0].legend(fontsize=6)
    return _save(fig, path)


def coord_check(check: dict, path: Path) -> Path:
    """The coord check (docs/method.md §3): each layer's update size |h_t − h_0| (geometric mean over the steps)
    against width, µP beside SP, log-log; the legend gives each layer's slope (µP: ≈ 0)."""
    fig, axes = _figure(2, width=5.6)
    layers = list(check["mup"])
    for ax, kind in zip(axes, ("mup", "sp")):
        for layer, color in zip(layers, _colors(len(layers))):
            sizes = [np.exp(np.mean(np.log(np.maximum(row, 1e-30)))) for row in check["sizes"][kind][layer]]
            ax.plot(check["widths"], sizes, "o-", ms=3, color=color, label=f"{layer} ({check[kind][layer]:+.2f})")
        ax.set(xscale="log", yscale="log", xlabel="width d_model", ylabel="|h_t − h_0| (RMS per coordinate)",
               title="µP" if kind == "mup" else "standard parametrization")
        ax.set_xticks(check["widths"], [str(w) for w in check["widths"]])
        ax.set_xticks([], minor=True)
        ax.legend(title="layer (log-log slope)", fontsize=6, title_fontsize=7, framealpha=0.7)
    fig.suptitle("coordinate check: " + ("passed" if check["passed"] else "FAILED: " + check["reason"]), fontsize=9)
    return _save(fig, path)


def curve_bands(panels: list[dict], path: Path, *, most: int = 16) -> Path:
    """Held-out loss curves against the curve law's prediction: per curve (at most `most`), its evaluations after
    warm-up (dots) and the predicted loss with its 95% band. Each panel: title, tokens, actual, loss, low, high."""
    shown, cols = panels[:most], 4
    rows = -(-len(shown) // cols)
    fig, _ = _figure(cols, width=4.2, height=3.2 * rows)
    fig.clear()
    for i, p in enumerate(shown):
        ax = fig.add_subplot(rows, cols, i + 1)
        ax.fill_between(p["tokens"], p["low"], p["high"], color="tab:blue", alpha=0.25, lw=0, label="predicted, 95% band")
        ax.plot(p["tokens"], p["loss"], "-", color="tab:blue", lw=1)
        ax.plot(p["tokens"], p["actual"], "k.", ms=3, label="actual")
        both = np.r_[p["actual"], p["loss"]]
        ax.set_ylim(both.min() * 0.98, np.percentile(both, 75) * 1.02)  # the annealed end, not the steep start
        ax.set_title(p["title"], fontsize=8)
        ax.tick_params(labelsize=7)
        ax.xaxis.set_major_formatter(_token_labels())
    fig.axes[0].legend(fontsize=7)
    fig.supxlabel("tokens")
    fig.supylabel("held-out loss (bits/byte)")
    return _save(fig, path)
