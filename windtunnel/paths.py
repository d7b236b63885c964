"""Where windtunnel writes: everything under one results directory (default ./results)."""

import os
from pathlib import Path

__all__ = ["results_dir"]


def results_dir() -> Path:
    """The results root: $WINDTUNNEL_RESULTS, else ./results of the working directory."""
    return Path(os.environ.get("WINDTUNNEL_RESULTS", "results")).resolve()
