"""JSON Schemas of the files users write — sweeps, searches, model ladders, plans — from the specs that check them.

`windtunnel schema DIR` writes one file per kind; point an editor's YAML language server at them (a
`# yaml-language-server: $schema=...` first line, or its settings) and it completes keys, shows each field's
docstring and marks values out of range as you type. Overrides (a sweep's `base`, `set`, `runs` and
`per_model`, a plan's `train`) are TrainSpec fields, every one optional.
"""

from __future__ import annotations

import copy

from windtunnel.checks import json_schema

__all__ = ["KINDS", "schemas"]

KINDS = ("sweep", "search", "ladder", "plan")
_DRAFT = "https://json-schema.org/draft/2020-12/schema"


def _optional(node):
    """Every key optional (overrides give any subset), throughout a schema."""
    if isinstance(node, dict):
        node.pop("required", None)
        for value in node.values():
            _optional(value)
    elif isinstance(node, list):
        for value in node:
            _optional(value)
    return node


def _overrides() -> tuple[dict, dict]:
    """(the schema of TrainSpec overrides as a $ref, the $defs it needs)."""
    from windtunnel.config import TrainSpec

    train = _optional(json_schema(TrainSpec))
    defs = train.pop("$defs")
    defs["TrainOverrides"] = {**train, "title": "TrainSpec overrides"}
    return {"$ref": "#/$defs/TrainOverrides"}, defs


def _file(kind_schema: dict, title: str, defs: dict) -> dict:
    out = copy.deepcopy(kind_schema)
    out["$defs"] = {**defs, **out.pop("$defs", {})}
    return {"$schema": _DRAFT, **out, "title": title}


def schemas() -> dict[str, dict]:
    """Kind (KINDS) → its JSON Schema."""
    from windtunnel.config import ModelSpec
    from windtunnel.graph import SweepSpec
    from windtunnel.plan import PlanFile
    from windtunnel.search.spec import ParamRange, SearchFile

    train, defs = _overrides()
    sweep = _file(json_schema(SweepSpec), "windtunnel sweep (sweeps/*.yaml)", defs)
    scale = sweep["$defs"]["ScaleSpec"]
    scale["properties"].pop("target")  # given on the command line (--scale NAME@TARGET), never in the file
    scale["properties"]["set"] = scale["properties"]["runs"]["items"] = train
    own = copy.deepcopy(defs["TrainOverrides"])  # a model's own overrides may also give its branch points
    own["properties"]["branches"] = {"$ref": "#/$defs/BranchSpec", "description": "this model's branch points (the "
                                     "scale's branches with these fields replaced)"}
    sweep["$defs"]["ModelOverrides"] = {**own, "title": "TrainSpec overrides of one model"}
    scale["properties"]["per_model"]["additionalProperties"] = {"$ref": "#/$defs/ModelOverrides"}
    sweep["properties"]["base"]["anyOf"][0] = train

    search = _file(json_schema(SearchFile), "windtunnel search (sweeps/mup_search.yaml)", defs)
    search["properties"]["base"] = search["$defs"]["SearchScale"]["properties"]["set"] = train
    param = json_schema(ParamRange)
    param["properties"].pop("name")  # the key it sits under
    param["required"].remove("name")
    search["properties"]["space"]["additionalProperties"] = param

    model = _optional(json_schema(ModelSpec))
    model["properties"].pop("name")  # the key it sits under
    model_defs = model.pop("$defs", {})
    ladder = {"$schema": _DRAFT, "title": "windtunnel model ladder (models/*.yaml)", "type": "object",
              "additionalProperties": False, "required": ["models"], "$defs": {**model_defs, "Shape": model},
              "properties": {"defaults": {"$ref": "#/$defs/Shape", "description": "fields every model of the file "
                                          "shares unless it sets its own"},
                             "models": {"type": "object", "additionalProperties": {"$ref": "#/$defs/Shape"},
                                        "description": "model name → its shape"}}}

    plan = _file(json_schema(PlanFile), "windtunnel plan (results/plans/*.yaml)", defs)
    plan["properties"]["train"] = train
    return {"sweep": sweep, "search": search, "ladder": ladder, "plan": plan}

