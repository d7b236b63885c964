"""Shared fixtures: every test session writes into its own results folder, never the repository's."""

import os
import shutil
from pathlib import Path

import pytest

from windtunnel.config import TrainSpec, apply_overrides, get_model


@pytest.fixture(scope="session", autouse=True)
def session_results(tmp_path_factory):
    """Caches (tokenizer, shards) are shared by the whole session; runs go to per-test folders."""
    root = tmp_path_factory.mktemp("results")
    old = os.environ.get("WINDTUNNEL_RESULTS")
    os.environ["WINDTUNNEL_RESULTS"] = str(root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    os.environ["HF_HUB_OFFLINE"] = os.environ["HF_DATASETS_OFFLINE"] = "1"  # tests never reach a hub
    yield root
    if old is None:
        os.environ.pop("WINDTUNNEL_RESULTS", None)
    else:
        os.environ["WINDTUNNEL_RESULTS"] = old


def tiny_spec(*overrides: str) -> TrainSpec:
    """micro-24k on the embedded corpus, 2048-token batches of 64-token rows, short evaluations."""
    base = ["tokens=40960", "batch_tokens=2048", "seq_len=64", "eval_every=10", "checkpoint_every=10",
            "data.eval_tokens=4096", "schedule.warmup_tokens=4096"]
    return apply_overrides(TrainSpec(model=get_model("micro-24k")), base + list(overrides))


ROOT = Path(__file__).resolve().parents[1]


def word_tokenizer(path: Path, vocab_size: int, prefix: str = "w") -> Path:
    """A Hugging Face tokenizer.json of exactly `vocab_size` tokens (whitespace words w0, w1, …; </s> ends a
    document): a stand-in for a target's own tokenizer, which no test downloads."""
    from tokenizers import Tokenizer, models, pre_tokenizers

    vocab = {"<unk>": 0, "</s>": 1, **{f"{prefix}{i}": i + 2 for i in range(vocab_size - 2)}}
    tokenizer = Tokenizer(models.WordLevel(vocab, unk_token="<unk>"))
    tokenizer.pre_tokenizer = pre_tokenizers.Whitespace()
    tokenizer.save(str(path))
    return path


@pytest.fixture(scope="session")
def target_models(tmp_path_factory):
    """The repository's ladders with stand-in tokenizer files for the MiniCPM targets (their vocabularies), as a
    user's models/ with the real files copied into models/tokenizers/ would be: use with WINDTUNNEL_MODELS."""
    folder = tmp_path_factory.mktemp("models")
    for ladder in (ROOT / "models").glob("*.yaml"):
        shutil.copy(ladder, folder)
    (folder / "tokenizers").mkdir()
    text = (folder / "minicpm.yaml").read_text()
    for name, vocab in (("minicpm-1.2b", 73440), ("minicpm-2.4b", 122753)):
        word_tokenizer(folder / "tokenizers" / f"{name}.json", vocab)
        text = text.replace(f"tokenizers/{name}.model", f"tokenizers/{name}.json")
    (folder / "minicpm.yaml").write_text(text)
    return folder


@pytest.fixture
def in_target_family(target_models, monkeypatch):
    monkeypatch.setenv("WINDTUNNEL_MODELS", str(target_models))
    return target_models
