"""Plot every learning-rate schedule of windtunnel.schedules on one figure (MiniCPM §4, Fig. 3 style).

Run from the repository root:  python analysis/schedules_plot.py
Writes results/plots/schedules.png (under $WINDTUNNEL_RESULTS if set) and prints its path.
"""

from pathlib import Path

from windtunnel.paths import atomic_path, results_dir
from windtunnel.schedules import DECAY_SHAPES, ScheduleSpec, make_schedule

STEPS, BATCH, LR = 1000, 1, 0.01  # run length S in steps, tokens per step (1: tokens = steps), max LR η
WARMUP = 50  # tokens (= steps here)


def curves() -> dict[str, list[tuple[str, ScheduleSpec]]]:
    """Panel title → (legend label, spec) of each schedule drawn in it."""
    cosines = [("constant", ScheduleSpec(kind="constant", warmup_tokens=WARMUP)),
               ("cosine T = S", ScheduleSpec(kind="cosine", warmup_tokens=WARMUP)),
               ("cosine T = 0.6 S", ScheduleSpec(kind="cosine", warmup_tokens=WARMUP, period_tokens=600)),
               ("cosine loop T = 0.4 S", ScheduleSpec(kind="cosine_loop", warmup_tokens=WARMUP, period_tokens=400))]
    wsds = [(f"WSD, {shape} decay (last 10%)", ScheduleSpec(kind="wsd", warmup_tokens=WARMUP, decay_shape=shape))
            for shape in DECAY_SHAPES]
    wsds.append(("WSD, exp decay from 0.6 S", ScheduleSpec(kind="wsd", warmup_tokens=WARMUP, decay_start_tokens=600)))
    return {"constant and cosine schedules": cosines, "WSD schedules": wsds}


def main() -> Path:
    import matplotlib
    matplotlib.use("Agg")  # files only, no display
    import matplotlib.pyplot as plt

    panels = curves()
    fig, axes = plt.subplots(1, len(panels), figsize=(13, 4.5), sharey=True)
    for ax, (title, specs) in zip(axes, panels.items()):
        for label, spec in specs:
            lr = make_schedule(spec, lr=LR, total_steps=STEPS, batch_tokens=BATCH)
            ax.plot(range(STEPS + 1), [lr(s) for s in range(STEPS + 1)], label=label)
        ax.set(title=title, xlabel="step", xlim=(0, STEPS))
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8, loc="best")
    axes[0].set_ylabel("learning rate")
    fig.suptitle(f"Learning-rate schedules (η = {LR}, warmup {WARMUP} steps, S = {STEPS} steps)")
    fig.tight_layout()
    path = results_dir() / "plots" / "schedules.png"
    with atomic_path(path) as tmp:
        fig.savefig(tmp, dpi=120, format="png")
    plt.close(fig)
    return path


if __name__ == "__main__":
    print(main())
