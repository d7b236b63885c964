"""Specs: ladders load and validate, overrides, run identity, and one-line errors naming file and key."""

import dataclasses
import re

import pytest

from windtunnel.config import TrainSpec, apply_overrides, check_run, get_model, load_ladder, load_models, spec_hash
from windtunnel.errors import SpecError, WindtunnelError


def write(tmp_path, text, name="ladder.yaml"):
    path = tmp_path / name
    path.write_text(text)
    return path


GOOD = "defaults: {d_head: 16, vocab_size: 256}\nmodels:\n  a: {d_model: 32, n_heads: 2, n_layers: 2}\n"


def test_ladder_defaults_and_shape_rules(tmp_path):
    spec = load_ladder(write(tmp_path, GOOD))["a"]
    assert (spec.d_ff, spec.n_kv_heads, spec.vocab_size, spec.parametrization) == (80, 2, 256, "mup")
    assert spec.width_mult == 32 / 256


@pytest.mark.parametrize("fields, key, allowed", [
    ("{d_model: 32, n_heads: 2, n_layers: 2, widht: 3}", "models.a.widht", "known keys"),
    ("{d_model: 32.5, n_heads: 2, n_layers: 2}", "models.a.d_model", "int"),
    ("{d_model: '32', n_heads: x, n_layers: 2}", "models.a.n_heads", "int"),
    ("{d_model: 40, n_heads: 2, n_layers: 2}", "models.a.d_model", "multiple of d_head=16"),
    ("{d_model: 48, n_heads: 3, n_kv_heads: 2, n_layers: 2}", "models.a.n_kv_heads", "divisor of n_heads=3"),
    ("{d_model: 32, n_heads: 4, n_layers: 2}", "models.a.n_heads", "d_model / d_head = 2"),
    ("{d_model: 32, n_heads: 2, n_layers: 0}", "models.a.n_layers", "an integer ≥ 1"),
    ("{d_model: 32, n_heads: 2, n_layers: 2, parametrization: xp}", "models.a.parametrization", "'mup', 'sp'"),
    ("{n_heads: 2, n_layers: 2}", "models.a.d_model", "required"),
])
def test_bad_ladders_name_file_key_value_and_allowed(tmp_path, fields, key, allowed):
    path = write(tmp_path, f"defaults: {{d_head: 16, vocab_size: 256}}\nmodels:\n  a: {fields}\n")
    with pytest.raises(SpecError) as err:
        load_ladder(path)
    message = str(err.value)
    assert str(path) in message and key in message and allowed in message
    assert "\n" not in message


def test_missing_and_invalid_files(tmp_path):
    with pytest.raises(WindtunnelError, match="not found"):
        load_ladder(tmp_path / "nope.yaml")
    with pytest.raises(WindtunnelError, match="not valid YAML"):
        load_ladder(write(tmp_path, "models: {a: [}"))
    with pytest.raises(WindtunnelError, match="no model ladders"):
        load_models(tmp_path / "empty")


def test_a_name_means_one_shape_across_files(tmp_path):
    write(tmp_path, GOOD, "one.yaml")
    write(tmp_path, GOOD, "two.yaml")  # a copy of the same shape is the same model
    assert list(load_models(tmp_path)) == ["a"]
    write(tmp_path, GOOD.replace("d_model: 32", "d_model: 48").replace("n_heads: 2", "n_heads: 3"), "two.yaml")
    with pytest.raises(SpecError, match=f"two.yaml:3: models.a='a' is not allowed; a name {tmp_path}/one.yaml does "
                                        "not define otherwise"):
        load_models(tmp_path)


def test_unknown_model_lists_known_names():
    with pytest.raises(SpecError, match="known models: .*micro-24k"):
        get_model("micro-9000")


def test_overrides_reach_nested_specs_and_parse_numbers():
    base = TrainSpec(model=get_model("micro-24k"))
    spec = apply_overrides(base, ["lr=0.02", "tokens=1e6", "schedule.kind=cosine", "model.parametrization=sp",
                                  "data.eval_tokens=2048", "checkpoint_steps=[10, 20]"])
    assert (spec.lr, spec.tokens, spec.schedule.kind) == (0.02, 1_000_000, "cosine")
    assert spec.model.parametrization == "sp" and spec.data.eval_tokens == 2048
    assert spec.checkpoint_steps == (10, 20)
    assert base.lr == 0.01  # frozen: the base spec is untouched


@pytest.mark.parametrize("override, key", [
    ("lrr=1", "lrr"), ("lr=abc", "lr"), ("seq_len", "seq_len"), ("model.d_model=50", "model.d_model"),
    ("schedule.kind=foo", "schedule.kind"), ("lr.x=1", "lr.x"), ("device=tpu", "device"),
])
def test_bad_overrides(override, key):
    with pytest.raises(SpecError) as err:
        apply_overrides(TrainSpec(model=get_model("micro-24k")), [override])
    assert err.value.key == key and "--set" in str(err.value)


def test_run_identity_ignores_runtime_settings_only():
    plain = dataclasses.replace(get_model("micro-24k"), smear_keys=False)  # micro-24k as stored before smeared keys
    base = TrainSpec(model=plain)
    assert spec_hash(base) == spec_hash(TrainSpec(model=plain))
    runtime = ["device=cpu", "compile=true", "peak_flops=1e12", "parallel=fsdp", "activation_checkpointing=true",
               "keep_checkpoints=3"]
    assert spec_hash(base) == spec_hash(apply_overrides(base, runtime))
    assert spec_hash(base) == "42fe630596bb"   # a new TrainSpec field must leave the stored runs' ids as they were
    assert spec_hash(base) != spec_hash(apply_overrides(base, ["lr=0.02"]))
    assert spec_hash(base) != spec_hash(apply_overrides(base, ["model.scale_emb=10"]))
    assert spec_hash(base) != spec_hash(apply_overrides(base, ["model.smear_keys=true"]))
    assert len(spec_hash(base)) == 12


def test_override_files_merge_nested_specs_and_replace_schedules(tmp_path):
    from windtunnel.config import load_overrides, merge_overrides

    base = {"lr": 0.01, "model": {"scale_emb": 12, "init_std": 0.1}, "schedule": {"kind": "wsd", "decay_fraction": 0.2}}
    best = tmp_path / "best.yaml"
    best.write_text("# comments are fine\nlr: 0.02\nmodel: {scale_emb: 8.5}\nschedule: {kind: constant}\n")
    merged = merge_overrides(base, load_overrides(best))
    assert merged == {"lr": 0.02, "model": {"scale_emb": 8.5, "init_std": 0.1}, "schedule": {"kind": "constant"}}
    plan = tmp_path / "plan.yaml"
    plan.write_text("target: x\ntrain: {tokens: 1000, lr: 0.03}\n")
    assert load_overrides(plan) == {"tokens": 1000, "lr": 0.03}  # a plan's train: section


@pytest.mark.parametrize("override, key, allowed", [
    ("seq_len=0", "seq_len", "an integer ≥ 1 (tokens)"),
    ("tokens=-5", "tokens", "an integer ≥ 1 (tokens)"),
    ("batch_tokens=0", "batch_tokens", "an integer ≥ 1"),
    ("lr=0", "lr", "a finite number > 0"),
    ("lr=nan", "lr", "a finite number > 0"),
    ("lr=.inf", "lr", "a finite number > 0"),
    ("eval_every=0", "eval_every", "an integer ≥ 1 (steps)"),
    ("beta2=1", "beta2", "[0, 1)"),
    ("grad_clip=-1", "grad_clip", "≥ 0"),
    ("diverge_ratio=1", "diverge_ratio", "> 1"),
    ("seed=-1", "seed", "an integer ≥ 0"),
    ("checkpoint_steps=[10, 0]", "checkpoint_steps", "a list, each an integer ≥ 1"),
    ("schedule.warmup_tokens=-1", "schedule.warmup_tokens", "≥ 0"),
    ("schedule.decay_fraction=0", "schedule.decay_fraction", "(0, 1]"),
    ("data.valid_percent=100", "data.valid_percent", "[1, 99]"),
    ("data.eval_tokens=0", "data.eval_tokens", "an integer ≥ 1"),
    ("model.vocab_size=0", "model.vocab_size", "an integer ≥ 1"),
    ("model.n_layers=-2", "model.n_layers", "an integer ≥ 1"),
    ("model.init_std=nan", "model.init_std", "a finite number > 0"),
    ("decay_data={python: -1}", "decay_data", "weights > 0"),
])
def test_every_number_is_checked_where_it_enters(override, key, allowed):
    with pytest.raises(SpecError) as err:
        apply_overrides(TrainSpec(model=get_model("micro-24k")), [override])
    message = str(err.value)
    assert err.value.key == key and message.startswith("--set: ") and allowed in message and "\n" not in message


def test_a_spec_made_in_python_is_checked_too():
    with pytest.raises(SpecError, match="seq_len=0 is not allowed"):
        TrainSpec(model=get_model("micro-24k"), seq_len=0)


@pytest.mark.parametrize("overrides, key, allowed", [
    (["micro_batch_tokens=100"], "micro_batch_tokens", "a multiple of seq_len=128"),
    (["batch_tokens=200"], "batch_tokens", "a multiple of seq_len=128"),
    (["micro_batch_tokens=1024", "batch_tokens=1536"], "batch_tokens", "a multiple of micro_batch_tokens=1024"),
    (["batch_warmup=[[0, 1024], [4096, 2048]]"], "batch_warmup", "last batch is batch_tokens=4096"),
    (["decay_data={python: 1}", "schedule={kind: cosine}"], "decay_data", "only with schedule.kind 'wsd'"),
    (["tokens=8192", "schedule.warmup_tokens=16384"], "schedule.warmup_tokens", "at most the run's tokens"),
    (["tokens=8192", "schedule={kind: wsd, decay_start_tokens: 8192}"], "schedule.decay_start_tokens",
     "less than the run's tokens"),
])
def test_a_runs_fields_are_checked_together_before_it_trains(overrides, key, allowed):
    from windtunnel.config import check_run

    spec = apply_overrides(TrainSpec(model=get_model("micro-24k")), overrides)  # each field alone is allowed
    with pytest.raises(SpecError) as err:
        check_run(spec, file="--set")
    assert err.value.key == key and allowed in str(err.value) and str(err.value).startswith("--set: ")
    assert check_run(apply_overrides(spec, {"tokens": 40960}) if "tokens=8192" in overrides else
                     TrainSpec(model=get_model("micro-24k")), file="--set")


def test_the_ladders_come_with_the_package_or_from_a_folder_given(tmp_path, monkeypatch):
    from windtunnel.config import ladder_folders
    from windtunnel.paths import packaged

    monkeypatch.delenv("WINDTUNNEL_MODELS", raising=False)
    monkeypatch.chdir(tmp_path)  # not the repository: the packaged ladders are found all the same
    assert ladder_folders() == [packaged("ladders")] and (packaged("ladders") / "micro.yaml").is_file()
    assert get_model("micro-24k").d_model == 32
    write(tmp_path, GOOD, "mine.yaml")
    monkeypatch.setenv("WINDTUNNEL_MODELS", str(tmp_path))
    assert list(load_models())[-1] == "a" and get_model("micro-24k").d_model == 32  # added to the packaged ladders
    write(tmp_path, GOOD.replace("  a:", "  micro-24k:").replace("d_model: 32", "d_model: 48").replace(
        "n_heads: 2", "n_heads: 3"), "over.yaml")
    assert get_model("micro-24k").d_model == 48  # the user's shape of a packaged name replaces it
    (tmp_path / "over.yaml").unlink()
    with pytest.raises(SpecError, match=f"and {tmp_path}/\\*.yaml: model='micro-24K' is not allowed; did you mean "
                                        "'micro-24k'\\? known models: "):
        get_model("micro-24K")
    monkeypatch.setenv("WINDTUNNEL_MODELS", str(tmp_path / "nope"))
    with pytest.raises(WindtunnelError, match="nope: no such folder \\(--models or \\$WINDTUNNEL_MODELS\\)"):
        load_models()


def test_one_number_syntax_wherever_an_integer_is_due():
    base = TrainSpec(model=get_model("micro-24k"))
    spec = apply_overrides(base, ["tokens=2.5e6", "schedule.warmup_tokens=1e5", "seq_len=2.56e2", "seed=1_000"])
    assert (spec.tokens, spec.schedule.warmup_tokens, spec.seq_len, spec.seed) == (2_500_000, 100_000, 256, 1000)
    assert all(type(v) is int for v in (spec.tokens, spec.schedule.warmup_tokens, spec.seq_len, spec.seed))
    for inexact in ("tokens=2.5", "schedule.warmup_tokens=1.5e0", "seq_len=true"):
        with pytest.raises(SpecError, match="an integer"):
            apply_overrides(base, [inexact])


@pytest.mark.parametrize("override, words", [
    ("learning_rate=0.01", "did you mean 'lr'?"),           # another tool's name for it
    ("batch_size=8", "did you mean 'batch_tokens'?"),
    ("schedul.kind=wsd", "did you mean 'schedule'?"),
    ("model.d_modl=64", "did you mean 'd_model'?"),         # the full dotted key, the nested spec's keys
    ("schedule.kind=cosin", "did you mean 'cosine'? one of 'constant', 'cosine', 'cosine_loop', 'wsd'"),
    ("seq_len=1e2", "seq_len=100 is not allowed; a divisor of batch_tokens=4096 (the default"),  # not batch_tokens
])
def test_messages_name_the_key_given_and_the_closest_one(override, words):
    with pytest.raises(SpecError) as err:
        check_run(apply_overrides(TrainSpec(model=get_model("micro-24k")), [override]), file="--set")
    assert words in str(err.value), str(err.value)


@pytest.mark.parametrize("override", ["compile=1", "lr=[1]", "data=3", "checkpoint_steps=x", "model.tokenizer=5",
                                      "model.paper_run={tokens: 1}", "decay_data=7", "batch_warmup=[[0, x]]",
                                      "model.n_kv_heads=[2]", "device=[cpu]"])
def test_no_python_type_names_in_messages(override):
    with pytest.raises(SpecError) as err:
        apply_overrides(TrainSpec(model=get_model("micro-24k")), [override])
    message = str(err.value)
    assert not re.search(r"\b(type|int|float|str|dict|tuple|None ?\||NoneType|Input should)\b", message), message


def test_errors_in_yaml_files_give_the_line(tmp_path):
    path = write(tmp_path, "defaults: {d_head: 16, vocab_size: 256}\nmodels:\n  micro-1.3m:\n    d_model: 32\n"
                           "    n_heads: 2\n    n_layers: 0\n")
    with pytest.raises(SpecError, match=rf"^{path}:6: models.micro-1.3m.n_layers=0 is not allowed; an integer ≥ 1$"):
        load_ladder(path)   # a name with a dot is still one key
    broken = write(tmp_path, "models:\n  a: {d_model: 32,\n  b: [\n", "broken.yaml")
    with pytest.raises(WindtunnelError, match=rf"^{broken}:\d+:\d+: not valid YAML \("):
        load_ladder(broken)
