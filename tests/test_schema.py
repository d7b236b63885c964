"""`windtunnel schema`: JSON Schemas of the files users write, strict where the specs are, true to the packaged files."""

import json

import jsonschema
import pytest
import yaml

from windtunnel import cli
from windtunnel.checks import build
from windtunnel.errors import SpecError
from windtunnel.paths import packaged
from windtunnel.schema import KINDS, schemas

SCHEMAS = schemas()


def files():
    for path in sorted(packaged("sweeps").glob("*.yaml")):
        yield ("search" if path.stem == "mup_search" else "sweep"), path
    for path in sorted(packaged("ladders").glob("*.yaml")):
        yield "ladder", path


@pytest.mark.parametrize("kind, path", list(files()), ids=lambda x: getattr(x, "name", x))
def test_every_packaged_file_is_valid_under_its_schema(kind, path):
    jsonschema.validate(yaml.safe_load(path.read_text()), SCHEMAS[kind])


@pytest.mark.parametrize("kind, text, where", [
    ("sweep", "name: x\nscales: {micro: {models: [a], tokens: 10, brnaches: {}}}", "brnaches"),
    ("sweep", "name: x\nbase: {lr: -1}", "-1"),
    ("sweep", "name: x\nscales: {micro: {models: [a], tokens: 10, set: {schedule: {kind: cosin}}}}", "cosin"),
    ("search", "name: x\nspace: {lr: {low: 0.1}}", "high"),
    ("ladder", "models: {a: {d_model: 0}}", "0"),
    ("ladder", "defaults: {vocab: 5}\nmodels: {}", "vocab"),
    ("plan", "target: x\ntrain: {tokens: 1e6, lrr: 0.1}", "lrr"),
])
def test_the_schemas_refuse_what_the_specs_refuse(kind, text, where):
    with pytest.raises(jsonschema.ValidationError) as err:
        jsonschema.validate(yaml.safe_load(text), SCHEMAS[kind])
    assert where in str(err.value)


def test_a_written_plan_is_valid_and_launch_refuses_a_misspelt_one(tmp_path):
    from windtunnel.launch import load_plan
    from windtunnel.plan import PlanFile, make_plan, render_yaml
    from windtunnel.config import get_model

    text = render_yaml(make_plan(get_model("micro-425k"), scaling=None, batch=None, lr=None, tokens=1e6))
    jsonschema.validate(yaml.safe_load(text), SCHEMAS["plan"])
    build(PlanFile, yaml.safe_load(text), file="plan.yaml")
    path = tmp_path / "plan.yaml"
    path.write_text(text.replace("\ntrain:", "\ntrian:"))
    with pytest.raises(SpecError, match=rf"{path}:\d+: trian=.* did you mean 'train'\?"):
        load_plan(path)


def test_the_command_writes_one_schema_per_kind(tmp_path, capsys):
    assert cli.main(["schema", "--out", str(tmp_path)]) == 0
    assert sorted(p.name for p in tmp_path.iterdir()) == sorted(f"{k}.schema.json" for k in KINDS)
    sweep = json.loads((tmp_path / "sweep.schema.json").read_text())
    assert sweep["$defs"]["TrainOverrides"]["properties"]["lr"]["exclusiveMinimum"] == 0
    assert str(tmp_path / "plan.schema.json") in capsys.readouterr().out
