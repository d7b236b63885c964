"""Specs: model shapes, data and training as frozen pydantic dataclasses (windtunnel.checks), loaded from YAML.

A model ladder is a YAML file in `models/` with a `defaults:` mapping and a `models:` mapping of
name → shape fields. Every bad key, type or shape is rejected with a `SpecError` that names the file (and line),
the full dotted key, the value and what is allowed, before anything is computed.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import os
from pathlib import Path
from typing import Annotated, Literal

import yaml
from pydantic import BeforeValidator
from pydantic_core import PydanticCustomError

from windtunnel.checks import (NON_NEGATIVE, NON_NEGATIVE_INT, POSITIVE, POSITIVE_INT, Flag, build, number, read,
                               refuse, spec)
from windtunnel.errors import SpecError, WindtunnelError, did_you_mean
from windtunnel.paths import packaged
from windtunnel.schedules import ScheduleSpec, batch_steps, make_schedule

__all__ = [
    "ModelSpec", "DataSpec", "TrainSpec", "PaperRun",
    "load_ladder", "load_models", "get_model", "build", "apply_overrides", "check_run", "spec_hash", "models_dir",
    "ladder_folders", "ladders", "load_overrides", "merge_overrides", "read_yaml", "MODELS_ENV",
]
MODELS_ENV = "WINDTUNNEL_MODELS"  # a folder of ladder files added to the packaged ones (`--models DIR` sets it)


_TOKENS = number(low=1, integer=True, unit="tokens")
_STEPS = number(low=1, integer=True, unit="steps")
_SHAPE = number(low=1, integer=True)
_UNIT = number(low=0, high=1, high_open=True)  # [0, 1)


@spec
class PaperRun:
    """What the paper reports about how a full model was trained (docs/method.md §3); used by `plan` to compare."""

    tokens: number(low=0, low_open=True, unit="tokens")
    """training tokens of the published run"""
    batch_tokens: tuple[_TOKENS, ...]
    """batch size in tokens; several values = the batch-size warmup (1.2B: 2M → 4M)"""
    lr: POSITIVE
    """maximum learning rate"""


@spec
class ModelSpec:
    """One MiniCPM-style decoder shape and its parametrization (docs/method.md §3, Table 7 and Table 8)."""

    name: str
    """the ladder name, e.g. "9M" or "minicpm-1.2b" """
    d_model: _SHAPE
    """residual-stream width"""
    n_layers: _SHAPE
    """number of transformer blocks"""
    n_heads: _SHAPE
    """query heads"""
    n_kv_heads: _SHAPE | None = None
    """key/value heads for grouped-query attention; None = n_heads (plain multi-head attention)"""
    d_head: _SHAPE = 64
    """width of one attention head; d_model must equal n_heads · d_head"""
    d_ff: _SHAPE | None = None
    """SwiGLU hidden width; None = 2.5 · d_model (the paper's shape rule)"""
    vocab_size: _SHAPE = 32_768
    """tokenizer vocabulary; the LM head is the tied embedding"""
    parametrization: Literal["mup", "sp"] = "mup"
    """"mup" applies every operation of Table 7; "sp" (standard parametrization, for comparison) is the same model
    at the base width and drops only the width rules: logits × 1/m and hidden LR / m"""
    d_base: _SHAPE = 256
    """µP base width: width multiplier m = d_model / d_base"""
    scale_emb: POSITIVE = 12.0
    """µP: embedding output multiplier (best on the 9M model: 12)"""
    scale_depth: POSITIVE = 1.4
    """µP: each residual branch × scale_depth / sqrt(n_layers)"""
    init_std: POSITIVE = 0.1
    """µP: init std of every 2-D weight is init_std / sqrt(m)"""
    rope_theta: POSITIVE = 10_000.0
    """RoPE base frequency"""
    norm_eps: POSITIVE = 1e-5
    """RMSNorm epsilon"""
    paper_n: POSITIVE | None = None
    """the paper's non-embedding N in billions (Table 8's N(B) column), for checking the counts"""
    paper_run: PaperRun | None = None
    """the published training facts of a full-size model"""
    smear_keys: Flag = False
    """each attention key a learned per-head mix of its own and the previous position's key (Olsson et al. 2022,
    "smeared keys"): copying from context is learned at once instead of at a random step. A deviation from MiniCPM
    for the CPU ladders (the micro family), where that random step would fall inside the measured window"""
    tokenizer: str | None = None
    """a target's own tokenizer file (sentencepiece .model or tokenizer.json; relative to its ladder file): a
    ladder in its family (`--scale paper@TARGET`) and its planned run train with it. Not part of a run's id (the
    file's content is, through the data fingerprint)"""

    def __post_init__(self):
        if self.n_kv_heads is None:
            object.__setattr__(self, "n_kv_heads", self.n_heads)
        if self.d_ff is None:
            object.__setattr__(self, "d_ff", int(2.5 * self.d_model))
        if self.d_model % self.d_head:
            raise refuse("d_model", self.d_model, f"a multiple of d_head={self.d_head}")
        if self.n_heads * self.d_head != self.d_model:
            raise refuse("n_heads", self.n_heads, f"d_model / d_head = {self.d_model // self.d_head}")
        if self.n_heads % self.n_kv_heads:
            raise refuse("n_kv_heads", self.n_kv_heads, f"a divisor of n_heads={self.n_heads}")
        if self.d_head % 2:
            raise refuse("d_head", self.d_head, "an even number (RoPE rotates pairs)")

    @property
    def width_mult(self) -> float:
        """µP width multiplier m = d_model / d_base (1 under SP, where nothing scales with width)."""
        return self.d_model / self.d_base if self.parametrization == "mup" else 1.0


@spec
class DataSpec:
    """Which text a run trains and evaluates on (docs/method.md §7)."""

    corpus: str = "python"
    """"python" (the standard library's and torch's own source, no download), a .txt/.jsonl/.parquet file or
    folder, or "hf:NAME" """
    text_key: str = "text"
    """field holding the text in .jsonl, .parquet and Hugging Face rows"""
    valid_percent: number(low=1, high=99, integer=True, unit="percent") = 5
    """percent of documents held out for evaluation, chosen by a hash of the document id"""
    tokenizer_sample_bytes: number(low=1, integer=True, unit="bytes") = 4_000_000
    """bytes of training text sampled to train the tokenizer"""
    eval_tokens: _TOKENS = 32_768
    """tokens of each held-out set scored at every evaluation"""
    tokenizer: str | None = None
    """a pretrained tokenizer instead of training one: a sentencepiece .model file or a Hugging Face tokenizer.json
    (read by the `tokenizers` package); model.vocab_size must hold its vocabulary"""


def _batch_stages(value):
    """[[from_tokens, batch_tokens], ...] (or a plan's [{from_tokens, batch_tokens}]): whole numbers, the first
    stage from 0, from_tokens rising, batches > 0."""
    pairs = []
    for pair in value if isinstance(value, (list, tuple)) else [None]:
        if isinstance(pair, dict) and set(pair) == {"from_tokens", "batch_tokens"}:
            pair = (pair["from_tokens"], pair["batch_tokens"])
        pairs.append(tuple(read(NON_NEGATIVE_INT, v) for v in pair) if isinstance(pair, (list, tuple)) and len(pair) == 2
                     else (None,))
    if (any(None in p for p in pairs) or (pairs and pairs[0][0] != 0) or any(b <= 0 for _, b in pairs)
            or any(a[0] >= b[0] for a, b in zip(pairs, pairs[1:]))):
        raise PydanticCustomError("number", "{allowed}", {"allowed": "a list of [from_tokens, batch_tokens] pairs, "
                                  "the first from 0, from_tokens rising, batch_tokens > 0"})
    return tuple(pairs)


def _mixture(value):
    """{corpus: weight} (or [[corpus, weight], ...]) as sorted pairs: names unique, weights finite and > 0."""
    pairs = list(value.items()) if isinstance(value, dict) else value
    out = {}
    for pair in pairs if isinstance(pairs, (list, tuple)) else [None]:
        weight = read(POSITIVE, pair[1]) if isinstance(pair, (list, tuple)) and len(pair) == 2 else None
        if weight is None or not isinstance(pair[0], str) or pair[0] in out:
            raise PydanticCustomError("number", "{allowed}", {"allowed": "a mapping of corpus names to weights > 0, "
                                      "e.g. {python: 0.7, python-docstrings: 0.3}"})
        out[pair[0]] = weight
    return tuple(sorted(out.items()))


@spec
class TrainSpec:
    """One training segment. Fields above `device` change the run's numbers and so its id (`spec_hash`)."""

    model: ModelSpec
    """the shape being trained"""
    tokens: _TOKENS | None = None
    """training tokens; None = 20 tokens per non-embedding parameter (Chinchilla's ratio)"""
    batch_tokens: _TOKENS = 4096
    """tokens per optimizer step (batch size in tokens, as in the paper's §3.2)"""
    micro_batch_tokens: _TOKENS | None = None
    """tokens per forward/backward pass of one worker; None = batch_tokens / workers (no gradient accumulation)"""
    batch_warmup: Annotated[tuple[tuple[int, int], ...], BeforeValidator(_batch_stages)] = ()
    """batch-size warm-up as [from_tokens, batch_tokens] stages, e.g. [[0, 2097152], [4e10, 4194304]] (the paper's
    1.2B run: 2M → 4M tokens); the last stage's batch must be batch_tokens. Only the gradient accumulation changes
    (nothing recompiles), and the LR schedule then follows the tokens seen rather than the steps"""
    seq_len: _TOKENS = 128
    """context length in tokens"""
    lr: POSITIVE = 0.01
    """base (maximum) learning rate; under µP hidden 2-D weights use lr / m"""
    schedule: ScheduleSpec = dataclasses.field(default_factory=ScheduleSpec)
    """learning-rate schedule (kind, warmup and decay in tokens)"""
    weight_decay: NON_NEGATIVE = 0.1
    """AdamW weight decay on 2-D weights"""
    independent_wd: Flag = False
    """decay multiplied by the schedule but not by the max LR (weight_decay is then per step at peak)"""
    beta1: _UNIT = 0.9
    """AdamW β1"""
    beta2: _UNIT = 0.95
    """AdamW β2"""
    eps: POSITIVE = 1e-8
    """AdamW ε"""
    grad_clip: NON_NEGATIVE = 1.0
    """clip the global gradient norm to this; 0 disables"""
    seed: NON_NEGATIVE_INT = 0
    """seed of the initialisation and of the data order"""
    eval_every: _STEPS = 100
    """steps between evaluations on every held-out set (the last step is always evaluated)"""
    diverge_ratio: number(low=1, low_open=True) = 2.5
    """a smoothed train loss above this × its minimum so far ends the run as diverged"""
    data: DataSpec = dataclasses.field(default_factory=DataSpec)
    """corpus and tokenizer"""
    decay_data: Annotated[tuple[tuple[str, float], ...], BeforeValidator(_mixture)] = ()
    """the WSD decay stage's data mixture as {corpus: weight} (paper §6: high-quality data in the decay): from the
    decay start each training window comes from a corpus drawn by weight. Corpora: the run's own (data.corpus),
    "python-docstrings" (the docstrings and comments of the embedded corpus's training files), or any other
    data.corpus value (its training split), all in the run's tokenizer. Empty: the run's data throughout"""
    checkpoint_every: _STEPS = 250
    """steps between resumable checkpoints (only the newest periodic one is kept)"""
    checkpoint_steps: tuple[_STEPS, ...] = ()
    """steps whose checkpoints are always kept (decay branches fork from them)"""
    device: Literal["auto", "cpu", "cuda"] = "auto"
    """where to train; not part of the run's identity"""
    parallel: Literal["ddp", "fsdp"] = "ddp"
    """with several workers (`windtunnel launch`): replicate the model (DistributedDataParallel) or shard its
    parameters, gradients and optimizer state (FSDP2, per block); not part of the run's identity"""
    keep_checkpoints: POSITIVE_INT = 1
    """how many of the newest periodic checkpoints to keep (kept steps and the decay start stay besides); not part of
    the run's identity"""
    activation_checkpointing: Flag = False
    """keep only each block's input for the backward pass and recompute the block's activations there (~1/3 more
    compute, the same numbers); not part of the run's identity"""
    dtype: Literal["auto", "fp32", "bf16"] = "auto"
    """"auto" = bf16 autocast on CUDA, fp32 on CPU"""
    compile: Flag | None = None
    """torch.compile model + loss; None = auto: on CUDA, and on CPU for runs with ≥ 5M tokens left to train
    (compiled micro shapes train 1.2–1.5× faster, but a cold compile costs 9–18 s: bench/train_throughput.py)"""
    peak_flops: number(low=0, low_open=True, unit="FLOP/s") | None = None
    """declared peak FLOP/s for MFU; None = a table for known GPUs, a measured fp32 matmul peak on CPU"""


def check_run(spec: TrainSpec, *, file) -> TrainSpec:
    """The checks between a run's fields, on its final spec (overrides applied in layers may pass through other
    combinations): batches of whole sequences (and micro-batches), a batch warm-up ending at batch_tokens, a decay
    mixture only with WSD, and the schedule's boundaries inside the run's tokens. Returns the spec."""
    micro, seq = spec.micro_batch_tokens, spec.seq_len
    if micro is not None and micro % seq:
        raise SpecError(file, "micro_batch_tokens", micro, f"a multiple of seq_len={seq}")
    unit, name = (micro, "micro_batch_tokens") if micro else (seq, "seq_len")
    default = TrainSpec.__dataclass_fields__["batch_tokens"].default
    if spec.batch_tokens % unit and spec.batch_tokens == default and name == "seq_len":  # the user's seq_len is to blame
        raise SpecError(file, "seq_len", seq, f"a divisor of batch_tokens={default} (the default; or set batch_tokens "
                        "to a multiple of seq_len)")
    for key, batch in [("batch_tokens", spec.batch_tokens)] + [("batch_warmup", b) for _, b in spec.batch_warmup]:
        if batch % unit:
            raise SpecError(file, key, batch, f"a multiple of {name}={unit}")
    if spec.batch_warmup and spec.batch_warmup[-1][1] != spec.batch_tokens:
        raise SpecError(file, "batch_warmup", [list(x) for x in spec.batch_warmup],
                        f"stages whose last batch is batch_tokens={spec.batch_tokens}")
    if spec.decay_data and spec.schedule.kind != "wsd":
        raise SpecError(file, "decay_data", dict(spec.decay_data),
                        f"a mixture only with schedule.kind 'wsd' (a decay stage to switch at), not {spec.schedule.kind!r}")
    if spec.tokens is not None:  # as train() makes it: in tokens seen when the batch warms up, else in steps
        steps, batch = ((spec.tokens, 1) if spec.batch_warmup
                        else (batch_steps(spec.tokens, spec.batch_tokens, ()), spec.batch_tokens))
        try:
            make_schedule(spec.schedule, lr=spec.lr, total_steps=steps, batch_tokens=batch)
        except SpecError as err:
            raise SpecError(file, err.key, err.value, err.allowed) from None
    return spec


def models_dir() -> Path | None:
    """The user's ladder folder, $WINDTUNNEL_MODELS (`--models DIR`), added to the ladders packaged with windtunnel
    (the repository's models/ in a source checkout or an editable install); None when not given."""
    given = os.environ.get(MODELS_ENV)
    if not given:
        return None
    folder = Path(given).expanduser().resolve()
    if not folder.is_dir():
        raise WindtunnelError(f"{folder}: no such folder (--models or ${MODELS_ENV}); give a folder of ladder "
                              "files (*.yaml)")
    return folder


def ladder_folders() -> list[Path]:
    """Where the shapes come from: the packaged ladders, then the user's folder (models_dir) if given."""
    return [packaged("ladders"), *filter(None, [models_dir()])]


# ---------------------------------------------------------------- ladders


def read_yaml(path, *, what: str = "file"):
    """A YAML file's content ({} when empty); a missing file or bad YAML is one line naming the file."""
    path = Path(path)
    if not path.is_file():
        raise WindtunnelError(f"{path}: {what} not found")
    try:
        return yaml.safe_load(path.read_text()) or {}
    except yaml.YAMLError as err:
        mark = getattr(err, "problem_mark", None)
        where = f":{mark.line + 1}:{mark.column + 1}" if mark else ""
        raise WindtunnelError(f"{path}{where}: not valid YAML ({getattr(err, 'problem', None) or err})") from None


def load_ladder(path: Path) -> dict[str, ModelSpec]:
    """Every shape of one ladder file, validated, by name."""
    path = Path(path)
    raw = read_yaml(path)
    if not isinstance(raw, dict) or set(raw) - {"defaults", "models"} or "models" not in raw:
        raise SpecError(path, "<top>", sorted(raw) if isinstance(raw, dict) else raw, "keys: defaults, models")
    defaults = raw.get("defaults") or {}
    ladder = {}
    for name, fields in (raw["models"] or {}).items():
        if not isinstance(fields, dict):
            raise SpecError(path, f"models.{name}", fields, "a mapping of shape fields")
        fields = {**defaults, **fields, "name": str(name)}
        if isinstance(fields.get("tokenizer"), str):  # relative to the ladder file, wherever the command runs
            fields["tokenizer"] = str((path.parent / Path(fields["tokenizer"]).expanduser()).resolve())
        ladder[str(name)] = build(ModelSpec, fields, file=path, prefix=f"models.{name}.")
    return ladder


def load_models(folder: Path | None = None) -> dict[str, ModelSpec]:
    """Every shape in every ladder file (*.yaml) of `folder` (default: ladder_folders()), by name. The user's folder
    (--models) adds shapes and may replace a packaged one of the same name (a target with the user's tokenizer file,
    say): its definition wins, and `windtunnel models` says so. Within one folder a name means one shape: defined
    twice, it must be the same shape, else the error names both files."""
    return ladders(folder)[0]


def ladders(folder: Path | None = None) -> tuple[dict[str, ModelSpec], dict[str, Path]]:
    """load_models's shapes, and the ladder file each comes from."""
    folders = [Path(folder)] if folder else ladder_folders()
    models: dict[str, ModelSpec] = {}
    where: dict[str, Path] = {}
    for place in folders:
        files = sorted(place.glob("*.yaml"))
        if not files:
            raise WindtunnelError(f"{place}: no model ladders (*.yaml) found; give a folder of ladder files with "
                                  f"--models DIR or ${MODELS_ENV}")
        here: dict[str, Path] = {}
        for path in files:
            for name, spec in load_ladder(path).items():
                if name in here and models[name] != spec:
                    raise SpecError(path, f"models.{name}", name, f"a name {here[name]} does not define otherwise "
                                    "(rename the shape: within one folder a name means one shape)")
                models[name], where[name] = spec, here.setdefault(name, path)
    return models, where


def get_model(name: str, folder: Path | None = None) -> ModelSpec:
    """One shape by name; an unknown name names the closest known one and lists them all."""
    models, files = ladders(folder)
    if name not in models:
        places = " and ".join(f"{place}/*.yaml" for place in dict.fromkeys(f.parent for f in files.values()))
        raise SpecError(places, "model", name, did_you_mean(name, models) + "known models: " + ", ".join(models))
    return models[name]


# ---------------------------------------------------------------- overrides and identity


def apply_overrides(spec, overrides: list[str] | dict, *, source: str = "--set"):
    """Apply overrides: `key=value` strings (dotted keys reach nested specs: `schedule.kind=wsd`,
    `model.d_model=64`), or a YAML mapping, whose nested mappings merge key by key except `schedule`,
    which is replaced whole (a schedule's fields only make sense together), and `decay_data`, a mixture."""
    raw = dataclasses.asdict(spec)
    pairs = _pairs(overrides) if isinstance(overrides, dict) else [_parse(item, source) for item in overrides]
    for key, value in pairs:
        node = raw
        *parents, leaf = key.split(".")
        for part in parents:
            if not isinstance(node.get(part), dict):
                nested = [k for k, v in node.items() if isinstance(v, dict)]
                raise SpecError(source, key, value, f"{did_you_mean(part, nested)}{part!r} is not a nested spec; "
                                f"nested specs: {', '.join(nested)}")
            node = node[part]
        node[leaf] = value
    return build(type(spec), raw, file=source)


def _parse(item: str, source) -> tuple[str, object]:
    key, sep, text = item.partition("=")
    if not sep:
        raise SpecError(source, item, item, "key=value")
    return key.strip(), yaml.safe_load(text)


def _pairs(mapping: dict, prefix: str = "") -> list[tuple[str, object]]:
    """A nested override mapping as (dotted key, value) pairs; `schedule` and `decay_data` stay one value."""
    pairs = []
    for key, value in mapping.items():
        if isinstance(value, dict) and f"{prefix}{key}" not in ("schedule", "decay_data"):
            pairs += _pairs(value, f"{prefix}{key}.")
        else:
            pairs.append((f"{prefix}{key}", value))
    return pairs


def load_overrides(path) -> dict:
    """A YAML file of TrainSpec overrides (`--set-file`, a sweep's `base: FILE`): the mapping itself, or its
    `train:` section when it has one (the plans of `windtunnel plan` and the search's best.yaml)."""
    raw = read_yaml(path, what="override file")
    raw = raw.get("train", raw) if isinstance(raw, dict) else raw
    if not isinstance(raw, dict):
        raise SpecError(path, "train", raw, "a mapping of TrainSpec overrides, e.g. {lr: 0.01, model: {scale_emb: 12}}")
    return raw


def merge_overrides(first: dict, then: dict) -> dict:
    """One override mapping equal to applying `first`, then `then` (nested specs merge; `schedule` is replaced)."""
    out = dict(first)
    for key, value in then.items():
        nested = isinstance(value, dict) and isinstance(out.get(key), dict) and key != "schedule"
        out[key] = merge_overrides(out[key], value) if nested else value
    return out


LATER_FIELDS = ("batch_warmup", "decay_data", "model.smear_keys")  # fields added after runs were stored


def spec_hash(spec: TrainSpec, *extra: str) -> str:
    """Content hash of everything that changes a run's numbers (runtime settings excluded), 12 hex chars."""
    raw = dataclasses.asdict(spec)
    for key in ("device", "parallel", "compile", "peak_flops", "keep_checkpoints", "activation_checkpointing"):
        raw.pop(key)
    raw["model"].pop("paper_n"), raw["model"].pop("paper_run"), raw["model"].pop("tokenizer")
    raw["data"].pop("tokenizer")  # a path: the file's content is in the data fingerprint every id hashes beside
    for key in LATER_FIELDS:  # unset, they leave the ids of runs stored before them as they were
        node, _, leaf = key.rpartition(".")
        parent = raw[node] if node else raw
        if not parent[leaf]:
            parent.pop(leaf)
    if raw["model"]["parametrization"] == "sp":  # SP keeps scale_emb and scale_depth since 2026-11-30: new ids
        raw["model"]["sp_multipliers"] = True
    blob = json.dumps([raw, *extra], sort_keys=True, default=str)
    return hashlib.sha256(blob.encode()).hexdigest()[:12]
