"""Tokenization speed, every core against one, side by side in one run: the shard writer (windtunnel.data._write_shard,
what `prepare` runs on files) with both tokenizer kinds — sentencepiece (the tokenizer windtunnel trains) and a
Hugging Face tokenizer.json (a target's own, e.g. MiniCPM's; here a BPE trained on the same sample) — and `prepare`
of the same text as a saved Hugging Face dataset (the out-of-core path: split and tokenization as datasets.map over
num_proc processes, shards written batch by batch).

    python bench/tokenize_speed.py [--mb 24] [--out bench/results]

Each measurement runs in a fresh process pinned (sched_setaffinity) to 1 core or to all of them: sentencepiece takes
its thread count from the affinity (data._threads), the tokenizers package's Rust pool from the cores it may use.
Interleaved 1, all, 1, all...; the figure is the median tokens/s. Writes <out>/tokenize_speed.json.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

REPS = 3


def texts(mb: float) -> list[str]:
    """The first `mb` MB of the embedded corpus's training documents (Python source: what the micro ladder reads)."""
    from windtunnel.config import DataSpec
    from windtunnel.data import _load_documents, _split

    out, size = [], 0
    for doc in _split(DataSpec(), _load_documents(DataSpec()))[0]:
        out.append(doc.text)
        size += len(doc.text)
        if size >= mb * 1e6:
            break
    return out


def one(kind: str, path: str, sample: str, cores: int) -> dict:
    """In this process, pinned to `cores` cores: tokenize the sample into a shard (kind spm, hf), or prepare the
    saved dataset `sample` with the tokenizer.json `path` (kind dataset: split, datasets.map, shards); tokens/s."""
    os.sched_setaffinity(0, set(sorted(os.sched_getaffinity(0))[:cores]))
    from windtunnel.config import DataSpec
    from windtunnel.data import HFTokenizer, Tokenizer, _write_shard, prepare

    with tempfile.TemporaryDirectory() as tmp:
        start = time.perf_counter()
        if kind == "dataset":
            corpus = prepare(DataSpec(corpus=f"hf:{sample}", tokenizer=path), vocab_size=32768, cache_dir=Path(tmp),
                             progress=False)
            n_tokens = len(corpus.train) + sum(len(v) for v in corpus.evals.values())
        else:
            tokenizer = HFTokenizer(Path(path)) if kind == "hf" else Tokenizer(Path(path))
            n_tokens = _write_shard(Path(tmp) / "s.bin", json.loads(Path(sample).read_text()), tokenizer, desc="",
                                    progress=False)["n_tokens"]
        seconds = time.perf_counter() - start
    return {"tokens": n_tokens, "seconds": seconds, "tokens_per_s": n_tokens / seconds}


def hf_bpe(sample: list[str], folder: Path, vocab: int) -> Path:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE())
    tk.pre_tokenizer, tk.decoder = pre_tokenizers.ByteLevel(add_prefix_space=False), decoders.ByteLevel()
    tk.train_from_iterator(sample, trainers.BpeTrainer(vocab_size=vocab, special_tokens=["</s>"]))
    path = folder / "tokenizer.json"
    tk.save(str(path))
    return path


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--mb", type=float, default=24.0, help="MB of text to tokenize per measurement")
    parser.add_argument("--out", type=Path, default=Path("bench/results"))
    parser.add_argument("--one", nargs=4, metavar=("KIND", "TOKENIZER", "SAMPLE", "CORES"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.one:
        kind, path, sample, cores = args.one
        print(json.dumps(one(kind, path, sample, int(cores))))
        return
    from windtunnel.config import DataSpec
    from windtunnel.data import _hash_order, _load_documents, _split, _tokenizer
    from windtunnel.paths import results_dir

    sys.path.insert(0, str(Path(__file__).parent))
    from peak import matmul_peak

    cores = len(os.sched_getaffinity(0))
    peak = matmul_peak()
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        docs = texts(args.mb)
        (folder / "sample.json").write_text(json.dumps(docs))
        train = _split(DataSpec(), _load_documents(DataSpec()))[0]   # the tokenizer a 32768-token run trains
        spm = _tokenizer(_hash_order(train), vocab_size=32768, sample_bytes=DataSpec().tokenizer_sample_bytes,
                         cache_dir=results_dir() / "cache", progress=True).path
        hf = str(hf_bpe(docs[:2000], folder, 32768))
        import datasets

        datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(folder / "saved"))
        tokenizers = {"sentencepiece": ("spm", str(spm), "sample.json"), "hf tokenizer": ("hf", hf, "sample.json"),
                      "hf dataset (prepare)": ("dataset", hf, "saved")}
        runs = {(name, c): [] for name in tokenizers for c in (1, cores)}
        for _ in range(REPS):
            for (name, c), found in runs.items():
                kind, path, sample = tokenizers[name]
                out = subprocess.run([sys.executable, __file__, "--one", kind, path, str(folder / sample), str(c)],
                                     capture_output=True, text=True, check=True)
                found.append(json.loads(out.stdout.strip().splitlines()[-1]))
                print(f"  {name:14s} {c} core(s): {found[-1]['tokens_per_s']:12,.0f} tokens/s", flush=True)
    report = {"cores": cores, "matmul_peak_flops": peak, "mb": args.mb, "reps": REPS, "results": {}}
    for name in tokenizers:
        one_core = statistics.median(r["tokens_per_s"] for r in runs[name, 1])
        every = statistics.median(r["tokens_per_s"] for r in runs[name, cores])
        report["results"][name] = {"tokens_per_s_1_core": one_core, f"tokens_per_s_{cores}_cores": every,
                                   "speedup": every / one_core, "tokens": runs[name, 1][0]["tokens"]}
        print(f"{name:14s} 1 core {one_core:12,.0f} tokens/s · {cores} cores {every:12,.0f} tokens/s · "
              f"{every / one_core:.2f}×")
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "tokenize_speed.json").write_text(json.dumps(report, indent=1) + "\n")
    print(f"fp32 matmul peak {peak / 1e9:.0f} GFLOP/s; wrote {args.out}/tokenize_speed.json")


if __name__ == "__main__":
    main()
