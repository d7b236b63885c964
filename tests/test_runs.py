"""One run identity: the spec, the content of the data it reads and (a branch) its parent and fork step."""

import dataclasses
import json

import pytest

from windtunnel.cli import main
from windtunnel.config import apply_overrides
from windtunnel.errors import SpecError
from windtunnel.graph import expand, load_sweep
from windtunnel.runs import data_fingerprint, make_run
from windtunnel.search.trial import trial_run

from conftest import tiny_spec


def _corpus(folder, text: str):
    folder.mkdir(exist_ok=True)
    (folder / "a.txt").write_text(text)
    (folder / "b.txt").write_text("def g():\n    return 2\n" * 50)
    return folder


def _sweep(path, corpus) -> None:
    path.write_text(f"""name: tiny
base: {{data: {{corpus: {corpus}}}, seq_len: 64, batch_tokens: 2048}}
scales:
  micro:
    models: [micro-24k]
    tokens: 81920
    grid: {{lr: [0.01, 0.02]}}
    branches: {{at_tokens: [40960], decay_fractions: [0.1]}}
""")


def test_editing_a_corpus_file_gives_new_ids_to_train_sweep_and_search(tmp_path):
    corpus = _corpus(tmp_path / "corpus", "def f(x):\n    return x + 1\n" * 100)
    spec = tiny_spec(f"data.corpus={corpus}")
    _sweep(tmp_path / "tiny.yaml", corpus)

    def ids():
        sweep, scale = load_sweep(tmp_path / "tiny.yaml", scale="micro")
        runs = expand(sweep, scale, file="tiny.yaml")
        return ([make_run(spec, name="t", coords={}).id, trial_run(spec, {"lr": 0.03}).id]
                + [r.id for r in runs], runs)

    before, runs = ids()
    assert len(runs) == 4 and len(set(before)) == 6
    assert ids()[0] == before  # same content, same ids
    (corpus / "a.txt").write_text("def f(x):\n    return x - 1  # edited\n" * 100)
    after, runs_after = ids()
    assert not set(before) & set(after)  # every run, root or branch, is a new run
    branches = [r for r in runs_after if r.parent]
    assert branches and all(r.parent in {s.id for s in runs_after if not s.parent} for r in branches)


def test_the_id_ignores_where_a_run_runs_and_names_every_decay_corpus(tmp_path):
    spec = tiny_spec()
    run = make_run(spec, name="x", coords={})
    assert trial_run(spec, {"lr": spec.lr}).id == run.id  # a search trial of the same spec is the same run
    moved = dataclasses.replace(spec, device="cuda", compile=True)
    assert make_run(moved, name="other name", coords={"a": 1}).id == run.id  # runtime settings and labels excluded
    other = _corpus(tmp_path / "prose", "Some prose to mix into the decay. " * 200)
    mixed = apply_overrides(spec, {"decay_data": {"python": 0.7, str(other): 0.3}})
    assert len(data_fingerprint(mixed).split("-")) == 2  # the run's corpus and the decay's
    first = make_run(mixed, name="x", coords={}).id
    (other / "a.txt").write_text("Other prose, edited. " * 300)
    assert make_run(mixed, name="x", coords={}).id != first


def test_a_branch_id_names_its_parent_and_fork_step():
    spec = tiny_spec()
    parent = make_run(spec, name="p", coords={})
    other_parent = make_run(apply_overrides(spec, ["seed=1"]), name="p", coords={})
    branch = make_run(spec, name="b", coords={}, parent=parent, fork_step=10)
    assert branch.parent == parent.id and branch.fork_step == 10
    assert branch.id != make_run(spec, name="b", coords={}, parent=parent, fork_step=11).id
    assert branch.id != make_run(spec, name="b", coords={}, parent=other_parent, fork_step=10).id


def test_a_missing_corpus_is_refused_before_any_run(tmp_path):
    spec = tiny_spec(f"data.corpus={tmp_path / 'nowhere'}")
    with pytest.raises(SpecError, match="corpus"):
        make_run(spec, name="x", coords={})


def test_dry_run_json_lists_every_run_with_its_id(tmp_path, capsys):
    _sweep(tmp_path / "tiny.yaml", _corpus(tmp_path / "corpus", "x = 1\n" * 300))
    assert main(["sweep", str(tmp_path / "tiny.yaml"), "--dry-run", "--json"]) == 0
    out = json.loads(capsys.readouterr().out)
    sweep, scale = load_sweep(tmp_path / "tiny.yaml", scale="micro")
    assert [(r["id"], r["name"]) for r in out["runs"]] == [(r.id, r.name) for r in expand(sweep, scale, file="x")]
    assert out["n_runs"] == len(out["runs"]) == 4  # 2 stable runs, a branch each
