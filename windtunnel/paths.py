"""Where windtunnel reads and writes: the packaged ladders and sweeps, and one results directory (default ./results).

The ladders (`models/*.yaml`) and default sweeps (`sweeps/*.yaml`) of the repository are packaged with windtunnel
as `windtunnel/ladders` and `windtunnel/sweeps` (pyproject.toml's package-dir), so the CLI finds them from any
working directory; in a source checkout (an editable install, or PYTHONPATH) they are the repository's folders.
"""

import os
import tempfile
from contextlib import contextmanager
from importlib import resources
from pathlib import Path

__all__ = ["results_dir", "write_atomic", "atomic_path", "packaged"]

SOURCE_FOLDERS = {"ladders": "models", "sweeps": "sweeps"}  # packaged name → the repository folder it is built from


def results_dir() -> Path:
    """The results root: $WINDTUNNEL_RESULTS, else ./results of the working directory."""
    return Path(os.environ.get("WINDTUNNEL_RESULTS", "results")).resolve()


def packaged(name: str) -> Path:
    """The folder of packaged YAML files `name` ("ladders" or "sweeps"): windtunnel/<name> of an installed wheel,
    else <name>'s source folder at the root of the checkout windtunnel is imported from."""
    installed = Path(str(resources.files("windtunnel"))) / name
    if installed.is_dir():
        return installed
    return Path(__file__).resolve().parents[1] / SOURCE_FOLDERS[name]


@contextmanager
def atomic_path(path: Path):
    """A temporary path beside `path` to write to (a figure: give savefig the format, the name ends in .tmp); renamed
    to `path` when the block ends without an error, removed when it raises: a reader, or a killed command, never
    leaves half a file at `path`."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")  # no glob of *.json sees it
    os.close(fd)
    try:
        yield Path(tmp)
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide shared results from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def write_atomic(path: Path, text: str) -> Path:
    """Write `text` to a temporary file beside `path`, then rename it: a reader sees the old file or the new one."""
    with atomic_path(path) as tmp:
        tmp.write_text(text)
    return Path(path)
