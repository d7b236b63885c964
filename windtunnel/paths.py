"""Where windtunnel writes: everything under one results directory (default ./results)."""

import os
from pathlib import Path

__all__ = ["results_dir", "write_atomic"]


def results_dir() -> Path:
    """The results root: $WINDTUNNEL_RESULTS, else ./results of the working directory."""
    return Path(os.environ.get("WINDTUNNEL_RESULTS", "results")).resolve()


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, then rename it: a reader sees the old file or the new one."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)
    return path
