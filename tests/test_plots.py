"""The figures' axes: log axes that a person can read (no colliding labels on minor ticks)."""

import numpy as np
import pytest

from windtunnel import plots


@pytest.mark.parametrize("low, high", [(3e4, 1.5e5), (2e5, 9e6), (1e16, 1e22), (0.0025, 0.08)])
def test_log_axes_label_major_ticks_only_and_no_label_overlaps(low, high):
    fig, (ax,) = plots._figure()
    x = np.geomspace(low, high, 20)
    ax.plot(x, 2 + 1 / np.log(x + 2))
    ax.set(xscale="log", yscale="log")
    plots._readable_log_axes(fig)
    fig.canvas.draw()
    renderer = fig.canvas.get_renderer()
    labels = [t for t in ax.get_xticklabels() if t.get_text() and t.get_visible()
              and low <= t.get_position()[0] <= high]
    assert 2 <= len(labels) <= 9, [t.get_text() for t in labels]
    boxes = sorted((t.get_window_extent(renderer) for t in labels), key=lambda b: b.x0)
    assert all(a.x1 < b.x0 for a, b in zip(boxes, boxes[1:])), [t.get_text() for t in labels]  # none collide
    assert all(t.get_text() == "" for t in ax.get_xminorticklabels())
    assert all("×" not in t.get_text() and "$" not in t.get_text() for t in labels)  # short numbers: 50K, 2M, 1e18


@pytest.mark.parametrize("value, text", [(3e4, "30K"), (2e6, "2M"), (1.5e9, "1.5G"), (0.01, "0.01"), (5, "5"),
                                         (2e18, "2e18"), (1e-4, "1e-4")])
def test_short_numbers(value, text):
    assert plots.short_number(value) == text
