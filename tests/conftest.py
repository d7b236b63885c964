"""Shared fixtures: every test session writes into its own results folder, never the repository's."""

import os

import pytest

from windtunnel.config import TrainSpec, apply_overrides, get_model


@pytest.fixture(scope="session", autouse=True)
def session_results(tmp_path_factory):
    """Caches (tokenizer, shards) are shared by the whole session; runs go to per-test folders."""
    root = tmp_path_factory.mktemp("results")
    old = os.environ.get("WINDTUNNEL_RESULTS")
    os.environ["WINDTUNNEL_RESULTS"] = str(root)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
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
