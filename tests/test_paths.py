"""Where windtunnel reads and writes: the packaged YAML folders and atomic writes."""

import pytest

from windtunnel.paths import atomic_path, packaged, write_atomic


def test_the_packaged_folders_hold_the_ladders_and_sweeps():
    assert {"micro.yaml", "paper.yaml", "minicpm.yaml"} <= {p.name for p in packaged("ladders").glob("*.yaml")}
    assert {"lr.yaml", "scaling_law.yaml", "mup_search.yaml"} <= {p.name for p in packaged("sweeps").glob("*.yaml")}


def test_a_write_that_fails_leaves_the_old_file_and_no_temporary_one(tmp_path):
    path = write_atomic(tmp_path / "fit.json", '{"old": 1}')
    with pytest.raises(RuntimeError):
        with atomic_path(path) as tmp:
            tmp.write_text('{"new": ')  # half written, then the command fails
            raise RuntimeError("killed")
    assert path.read_text() == '{"old": 1}' and [p.name for p in tmp_path.iterdir()] == ["fit.json"]
    with atomic_path(tmp_path / "figs" / "a.png") as tmp:
        assert tmp.parent == tmp_path / "figs" and not list(tmp.parent.glob("*.png"))  # a glob of figures skips it
        tmp.write_bytes(b"png")
    assert (tmp_path / "figs" / "a.png").read_bytes() == b"png" and len(list((tmp_path / "figs").iterdir())) == 1
