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


def test_the_built_wheel_works_in_a_fresh_venv_from_an_empty_directory(tmp_path, session_results):
    """Without the Makefile or the checkout: build the wheel, install it into a new venv, run `windtunnel --version`,
    `models` and a sweep dry run from an empty folder. The venv sees this environment's dependencies through a
    .pth line (nothing is downloaded); windtunnel itself comes from the wheel."""
    import email
    import json
    import os
    import shutil
    import site
    import subprocess
    import sys
    import zipfile
    from pathlib import Path

    from windtunnel import __version__

    root = Path(__file__).resolve().parents[1]
    source = tmp_path / "source"  # a copy: building writes build/ and *.egg-info beside the sources
    for name in ("pyproject.toml", "README.md", "LICENSE"):
        source.mkdir(exist_ok=True)
        shutil.copy(root / name, source / name)
    for name in ("windtunnel", "models", "sweeps"):
        shutil.copytree(root / name, source / name, ignore=shutil.ignore_patterns("__pycache__"))
    run = lambda *args, **kw: subprocess.run(args, capture_output=True, text=True, timeout=300, **kw)  # noqa: E731
    built = run(sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-w", str(tmp_path / "dist"),
                str(source))
    assert built.returncode == 0, built.stderr[-2000:]
    wheel = next((tmp_path / "dist").glob("windtunnel-*.whl"))
    with zipfile.ZipFile(wheel) as z:
        names = z.namelist()
        meta = email.message_from_bytes(z.read(next(n for n in names if n.endswith(".dist-info/METADATA"))))
    assert meta["Version"] == __version__ and meta["License-Expression"] == "MIT"
    assert {"hf", "dashboard", "zst", "test"} <= set(meta.get_all("Provides-Extra"))
    assert any(c.startswith("Topic :: Scientific") for c in meta.get_all("Classifier"))
    assert "windtunnel/ladders/micro.yaml" in names and "windtunnel/sweeps/lr.yaml" in names
    venv = tmp_path / "venv"
    assert run(sys.executable, "-m", "venv", "--without-pip", str(venv)).returncode == 0
    purelib = next(venv.glob("lib/python*/site-packages"))
    installed = run(sys.executable, "-m", "pip", "--python", str(venv / "bin" / "python"), "install", "--no-deps",
                    "--ignore-installed", "--no-index", str(wheel))  # ignore: this environment's editable install
    assert installed.returncode == 0 and (purelib / "windtunnel").is_dir(), installed.stderr[-2000:]
    (purelib / "deps.pth").write_text("\n".join(site.getsitepackages()) + "\n")  # after the venv's own
    empty = tmp_path / "empty"
    empty.mkdir()
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "WINDTUNNEL_MODELS")}
    env["WINDTUNNEL_RESULTS"] = str(session_results)  # the session's corpus caches: the dry run fingerprints it
    cli = str(venv / "bin" / "windtunnel")
    where = run(str(venv / "bin" / "python"), "-c", "import windtunnel; print(windtunnel.__file__)", cwd=empty, env=env)
    assert where.stdout.startswith(str(purelib)), where  # the wheel's copy, not the checkout
    version = run(cli, "--version", cwd=empty, env=env)
    assert version.stdout == f"windtunnel {__version__}\n", version.stderr
    models = run(cli, "models", "--json", cwd=empty, env=env)
    assert models.returncode == 0 and "minicpm-1.2b" in {r["name"] for r in json.loads(models.stdout)}, models.stderr
    dry = run(cli, "sweep", "lr", "--scale", "micro", "--dry-run", "--json", cwd=empty, env=env)
    assert dry.returncode == 0 and json.loads(dry.stdout)["n_runs"] == 90, dry.stderr[-2000:]
    assert list(empty.iterdir()) == []


def test_every_method_citation_points_at_a_section_of_docs_method():
    """The code cites the method as `docs/method.md §N`: each N is a section of that page, and nothing cites a
    design file the repository does not hold."""
    import re
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    sections = set(re.findall(r"^## (\d+)\. ", (root / "docs" / "method.md").read_text(), flags=re.M))
    files = [p for folder in ("windtunnel", "tests", "models", "sweeps", "bench", "analysis")
             for p in (root / folder).rglob("*") if p.suffix in (".py", ".yaml", ".md")]
    files += [root / name for name in ("README.md", "LOG.md", "Makefile", "pyproject.toml")]
    cited, stale = set(), []
    for path in files:
        text = path.read_text()
        cited |= {(path.name, n) for n in re.findall(r"docs/method\.md §(\d+)", text)}
        stale += [path.name for _ in re.findall(r"DESIGN " + "§", text)]  # split: this line is not one
    assert len(cited) > 10 and {n for _, n in cited} <= sections, sorted(cited)
    assert stale == [], stale
