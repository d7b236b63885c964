"""Tests of windtunnel.data: loaders, split, tokenizer, shards and cache, windows (all local, no download)."""

import os

os.environ.setdefault("HF_DATASETS_OFFLINE", "1")  # the Hugging Face loader is tested on local data only
os.environ.setdefault("HF_HUB_OFFLINE", "1")

import json
import pickle
import random
import sys
from pathlib import Path

import numpy as np
import pytest

from windtunnel import data
from windtunnel.config import DataSpec
from windtunnel.errors import SpecError, WindtunnelError

from conftest import word_tokenizer

TRICKY = [
    "",
    "def f(x):\n\treturn x  \n\n\n    # trailing spaces   \n",
    "\t\tmixed \t tabs\tand  spaces\r\nwindows line\r\n",
    "  leading spaces, unicode: café, 日本語, 🐍, ∑ᵢ, \u2028, \x00\x01",
    "literal ▁ meta ▁▁ symbols ▁",
    '"""doc"""\nclass A:\n    pass\n' * 3,
]


def _words(n_docs: int, seed: int = 0) -> list[str]:
    """Synthetic documents of pseudo-words: enough distinct merges for a 300-token BPE."""
    rng = random.Random(seed)
    syllables = ["ka", "to", "ri", "mu", "sen", "pla", "dor", "ex", "qui", "zu", "ba", "lo"]
    def line():
        return " ".join("".join(rng.choices(syllables, k=rng.randint(1, 4))) for _ in range(rng.randint(3, 12)))
    return ["\n".join(line() for _ in range(rng.randint(5, 15))) + "\n" for _ in range(n_docs)]


@pytest.fixture(scope="session")
def python(tmp_path_factory):
    """The real embedded corpus (stdlib + torch source) at a small vocabulary (~15 s on 2 cores), and its cache."""
    cache = tmp_path_factory.mktemp("cache")
    spec = DataSpec(tokenizer_sample_bytes=1_000_000)
    return data.prepare(spec, vocab_size=512, cache_dir=cache, progress=False), spec, cache


@pytest.fixture(scope="session")
def docs() -> list[str]:
    return _words(200)


@pytest.fixture(scope="session")
def jsonl(tmp_path_factory, docs):
    path = tmp_path_factory.mktemp("jsonl") / "corpus.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": t}) + "\n" for i, t in enumerate(docs)))
    return path


# Loaders -----------------------------------------------------------------------------------------

def _texts(corpus, **kw) -> list[str]:
    return [d.text for d in data._load_documents(DataSpec(corpus=str(corpus), **kw))]


def test_loaders_read_the_same_documents(tmp_path, docs, jsonl, monkeypatch):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")  # keep ~/.cache clean
    (tmp_path / "txt").mkdir()
    for i, t in enumerate(docs):
        (tmp_path / "txt" / f"doc{i:03d}.txt").write_text(t)
    pq.write_table(pa.table({"body": docs}), tmp_path / "corpus.parquet")
    datasets.Dataset.from_dict({"text": docs}).save_to_disk(str(tmp_path / "saved"))
    (tmp_path / "files").mkdir()
    pq.write_table(pa.table({"text": docs}), tmp_path / "files" / "train.parquet")

    assert _texts(jsonl) == docs
    assert _texts(tmp_path / "txt") == docs
    assert _texts(tmp_path / "corpus.parquet", text_key="body") == docs
    assert _texts(f"hf:{tmp_path / 'saved'}") == docs  # a save_to_disk folder
    assert _texts(f"hf:{tmp_path / 'files'}") == docs  # a data folder, through load_dataset


@pytest.mark.parametrize("given_tokenizer", [False, True])
def test_an_hf_corpus_is_prepared_on_disk_as_the_in_memory_path_would(tmp_path, docs, monkeypatch, given_tokenizer):
    """The out-of-core path (datasets.map on all cores, shards written batch by batch) gives the documents, split,
    tokenizer and tokens of the in-memory one: each training document's ids and an end-of-document token, in order."""
    import datasets

    monkeypatch.setattr(datasets.config, "HF_DATASETS_CACHE", tmp_path / "hf-cache")
    rows = docs * 3 + ["", None]   # empty rows are no documents; their row numbers stay the others' ids
    datasets.Dataset.from_dict({"text": rows}).save_to_disk(str(tmp_path / "saved"))
    if given_tokenizer:
        _hf_tokenizer_json(tmp_path / "tokenizer.json", docs)
    spec = DataSpec(corpus=f"hf:{tmp_path / 'saved'}", tokenizer_sample_bytes=3000,
                    tokenizer=str(tmp_path / "tokenizer.json") if given_tokenizer else None)
    corpus = data.prepare(spec, vocab_size=300, cache_dir=tmp_path / "cache", progress=False)
    train, held = data._split(spec, data._load_documents(spec))
    if not given_tokenizer:   # the same sample, so the same tokenizer file
        expected = data._tokenizer(data._hash_order(train), vocab_size=300, sample_bytes=3000,
                                   cache_dir=tmp_path / "cache", progress=False)
        assert corpus.tokenizer.blob == expected.blob
    tk = corpus.tokenizer
    for part, array in ((train, corpus.train), (held, corpus.evals["valid"])):
        want = [i for doc in part for i in tk.encode(doc.text) + [tk.eos_id]]
        assert np.asarray(array).tolist() == want
    assert corpus.bytes_per_token["train"] == pytest.approx(
        sum(len(d.text.encode()) for d in train) / len(corpus.train))
    assert not list((tmp_path / "cache" / "shards").rglob("*.arrow"))   # the tokenized Arrow files are removed
    again = data.prepare(spec, vocab_size=300, cache_dir=tmp_path / "cache", progress=False)   # opened, not redone
    assert again.fingerprint == corpus.fingerprint


def _every_kind(folder: Path) -> list[tuple[str, str]]:
    """A folder with a .txt, an empty .txt, a .jsonl, a .jsonl.gz and a .parquet file of several row groups: ~400 short
    documents, some empty (or null), some not ASCII. Returns the (id, text) of its documents, in corpus order."""
    import gzip

    import pyarrow as pa
    import pyarrow.parquet as pq

    texts = _words(450, seed=3)
    for i in range(0, len(texts), 9):
        texts[i] = ""   # no document, but its row number stays out of the others' ids
    for i in range(4, len(texts), 7):
        texts[i] = TRICKY[1 + i % 5] + texts[i]   # tabs, CRLF, accents, CJK, emoji, NUL, a literal ▁
    (folder / "b").mkdir(parents=True)
    first = "naïve café, 日本語 ▁\r\n" + texts[1]
    (folder / "a.txt").write_bytes(first.encode())
    (folder / "b" / "empty.txt").write_bytes(b"")
    lines = [json.dumps({"text": t}) + "\n" for t in texts[:300]]
    (folder / "c.jsonl").write_text("".join(lines[:150]))
    (folder / "d.jsonl.gz").write_bytes(gzip.compress("".join(lines[150:]).encode()))
    rows = [None if i % 13 == 0 else t for i, t in enumerate(texts[300:])]
    pq.write_table(pa.table({"text": rows}), folder / "e.parquet", row_group_size=40)
    return [("a.txt", first),
            *((f"c.jsonl#{i + 1}", t) for i, t in enumerate(texts[:150]) if t),
            *((f"d.jsonl.gz#{i + 1}", t) for i, t in enumerate(texts[150:300]) if t),
            *((f"e.parquet#{i}", t) for i, t in enumerate(rows) if t)]


@pytest.mark.parametrize("tokenizer", ["sample", "whole corpus", "given"])
def test_a_local_corpus_is_streamed_to_the_in_memory_paths_fingerprint_and_shards(tmp_path, tokenizer):
    """Local files are prepared in passes that never hold the corpus, with the documents, tokenizer (trained on a
    sample cut inside the corpus, on all of it, or given), fingerprint and shard bytes of the in-memory pieces."""
    expected = _every_kind(tmp_path / "corpus")
    given = tmp_path / "tokenizer.json"
    if tokenizer == "given":
        _hf_tokenizer_json(given, [t for _, t in expected])
    spec = DataSpec(corpus=str(tmp_path / "corpus"), tokenizer_sample_bytes=20_000 if tokenizer == "sample" else 10**9,
                    tokenizer=str(given) if tokenizer == "given" else None)
    corpus = data.prepare(spec, vocab_size=300, cache_dir=tmp_path / "cache", progress=False)

    docs = data._load_documents(spec)
    assert [(d.id, d.text) for d in docs] == expected
    train, held = data._split(spec, docs)
    if tokenizer == "given":
        tk = data._pretrained(str(given), 300)
    else:   # the same sample's sentences name the same file
        tk = data._tokenizer(data._hash_order(train), vocab_size=300, sample_bytes=spec.tokenizer_sample_bytes,
                             cache_dir=tmp_path / "cache", progress=False)
        assert corpus.tokenizer.path == tk.path
    assert corpus.tokenizer.blob == tk.blob
    parts = (part for d in docs for part in (d.id, d.text))
    assert corpus.fingerprint == data._hash(f"format={data.FORMAT}", "user", "valid_percent=5", tk.blob, *parts)
    shards = tmp_path / "cache" / "shards"
    assert [p.name for p in shards.iterdir()] == [corpus.fingerprint]   # no scratch folder left
    for name, part in (("train", train), ("valid", held)):
        meta = data._write_shard(tmp_path / f"{name}.bin", [d.text for d in part], tk, desc="", progress=False)
        assert (shards / corpus.fingerprint / f"{name}.bin").read_bytes() == (tmp_path / f"{name}.bin").read_bytes()
        assert (shards / corpus.fingerprint / f"{name}.json").read_text() == json.dumps(meta, indent=1)
        assert meta["n_documents"] == len(part) and meta["dtype"] == "uint16"
    assert np.asarray(corpus.train).tolist() == [i for d in train for i in tk.encode(d.text) + [tk.eos_id]]
    settings, given_bytes = data._settings(spec, 300), given.read_bytes() if tokenizer == "given" else b""
    assert data.source_fingerprint(spec, vocab_size=300, cache_dir=tmp_path / "cache") == data._hash(
        settings, given_bytes, *(part for d in docs for part in (d.id, d.text)))


def test_a_local_corpus_is_prepared_in_a_fraction_of_its_size_in_memory(tmp_path, monkeypatch):
    """~10 MB of .jsonl text: Python's peak allocation while preparing it, and while finding the tokenizer's sample,
    stays below a quarter of the text (the in-memory path held all of it, and more). Memory holds the sample and a
    batch of text, whatever the corpus's size. The tokenizer is given (a word-level one, fast to encode under
    tracemalloc); the sample pass that a trained one needs is measured on its own."""
    import tracemalloc

    import tqdm  # noqa: F401  (imported before tracing: a module's code is not the corpus)

    texts = _words(200, seed=4)
    copies = 10_000_000 // sum(map(len, texts)) + 1
    n_chars = copies * sum(map(len, texts))
    (tmp_path / "big.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in texts) * copies)
    monkeypatch.setattr(data, "_BATCH_CHARS", 100_000)   # the batch, not the corpus, sets the memory: small here
    spec = DataSpec(corpus=str(tmp_path / "big.jsonl"), tokenizer=str(word_tokenizer(tmp_path / "words.json", 300)))

    def peak(work) -> int:
        tracemalloc.start()
        try:
            work()
            return tracemalloc.get_traced_memory()[1]
        finally:
            tracemalloc.stop()

    prepared = peak(lambda: data.prepare(spec, vocab_size=300, cache_dir=tmp_path / "cache", progress=False))
    assert prepared < n_chars / 4, f"prepare: peak {prepared / 1e6:.1f} MB for {n_chars / 1e6:.1f} MB of text"
    sampled = peak(lambda: data._sample_documents(data._local_documents(spec), valid_percent=5, sample_bytes=200_000))
    assert sampled < n_chars / 4, f"sample: peak {sampled / 1e6:.1f} MB for {n_chars / 1e6:.1f} MB of text"


def test_compressed_jsonl_reads_as_the_plain_file(tmp_path, docs, jsonl, monkeypatch):
    import gzip

    import zstandard

    (tmp_path / "c").mkdir()
    (tmp_path / "c" / "a.jsonl.gz").write_bytes(gzip.compress(Path(jsonl).read_bytes()))
    (tmp_path / "c" / "b.jsonl.zst").write_bytes(zstandard.ZstdCompressor().compress(Path(jsonl).read_bytes()))
    assert _texts(tmp_path / "c" / "a.jsonl.gz") == _texts(tmp_path / "c" / "b.jsonl.zst") == _texts(jsonl) == docs
    assert _texts(tmp_path / "c") == docs + docs   # a folder finds both, in sorted order
    monkeypatch.setitem(sys.modules, "zstandard", None)
    with pytest.raises(WindtunnelError, match=r"b.jsonl.zst: a .zst corpus needs .* pip install 'windtunnel\[zst\]'$"):
        _texts(tmp_path / "c" / "b.jsonl.zst")


def test_an_hf_corpus_without_datasets_names_the_extra(monkeypatch):
    monkeypatch.setitem(sys.modules, "datasets", None)   # as if not installed: `import datasets` raises ImportError
    with pytest.raises(WindtunnelError, match=r"^hf:some/set: an hf: corpus needs .* pip install 'windtunnel\[hf\]'$"):
        _texts("hf:some/set")


def test_folder_mixes_kinds_in_sorted_order_and_keeps_bytes(tmp_path):
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "b.jsonl").write_text('{"text": "two"}\n\n{"text": ""}\n{"text": "three"}\n')
    (tmp_path / "a.txt").write_bytes(b"one\r\n\ttab  \n")
    (tmp_path / "sub").mkdir()
    pq.write_table(pa.table({"text": ["four", None]}), tmp_path / "sub" / "c.parquet")
    (tmp_path / "README.md").write_text("ignored")
    loaded = data._load_documents(DataSpec(corpus=str(tmp_path)))
    assert [(d.id, d.text) for d in loaded] == [
        ("a.txt", "one\r\n\ttab  \n"), ("b.jsonl#1", "two"), ("b.jsonl#4", "three"), ("sub/c.parquet#0", "four"),
    ]


def test_python_documents_are_sorted_source_files_of_stdlib_then_torch():
    docs = data._load_documents(DataSpec())
    ids = [d.id for d in docs]
    stdlib = [i for i in ids if i.startswith("stdlib/")]
    torch = [i for i in ids if i.startswith("torch/")]
    assert ids == stdlib + torch and stdlib == sorted(stdlib) and torch == sorted(torch)
    assert len(stdlib) > 500 and len(torch) > 500
    assert "stdlib/os.py" in ids and "torch/nn/modules/linear.py" in ids
    assert not any("site-packages" in i for i in stdlib)


def test_read_source_honours_coding_cookie(tmp_path):
    path = tmp_path / "latin.py"
    path.write_bytes(b"# -*- coding: latin-1 -*-\r\ns = 'caf\xe9'\n")
    assert data._read_source(path) == "# -*- coding: latin-1 -*-\r\ns = 'café'\n"


def test_docstrings_and_comments_in_source_order():
    source = '"""Module doc."""\n# a comment\ndef f():\n    """F doc.\n\n    More."""\n    return 1  # trailing\n'
    assert data._docstrings_and_comments(source) == "Module doc.\na comment\nF doc.\n\nMore.\ntrailing"
    assert data._docstrings_and_comments("def broken(:\n") == ""


@pytest.mark.parametrize("corpus, text_key, match", [
    ("{tmp}/missing.jsonl", "text", r"corpus='.*missing.jsonl' is not allowed; no such file or folder"),
    ("{tmp}/data.csv", "text", r"data.csv' is not allowed; file types read: .txt, .jsonl, .jsonl.gz, .jsonl.zst, .parquet"),
    ("{tmp}/empty", "text", r"the folder holds no .txt/.jsonl/.jsonl.gz/.jsonl.zst/.parquet file"),
    ("{tmp}/rows.jsonl", "body", r"rows.jsonl:1: text_key='body' is not allowed; each line needs .*\['text'\]"),
    ("{tmp}/bad.jsonl", "text", r"bad.jsonl:2: not JSON"),
    ("{tmp}/rows.parquet", "body", r"rows.parquet: text_key='body' is not allowed; columns here: \['text'\]"),
    ("hf:{tmp}/saved", "body", r"text_key='body' is not allowed; columns here: \['text'\]"),
    ("hf:{tmp}/nothing", "text", r"hf:.*nothing: could not load the dataset"),
])
def test_bad_corpus_errors_name_the_file_and_key(tmp_path, corpus, text_key, match):
    import datasets
    import pyarrow as pa
    import pyarrow.parquet as pq

    (tmp_path / "data.csv").write_text("text\nx\n")
    (tmp_path / "empty").mkdir()
    (tmp_path / "rows.jsonl").write_text('{"text": "x"}\n')
    (tmp_path / "bad.jsonl").write_text('{"text": "x"}\n{"text": \n')
    pq.write_table(pa.table({"text": ["x"]}), tmp_path / "rows.parquet")
    datasets.Dataset.from_dict({"text": ["x"]}).save_to_disk(str(tmp_path / "saved"))
    with pytest.raises(WindtunnelError, match=match):
        data._load_documents(DataSpec(corpus=corpus.format(tmp=tmp_path), text_key=text_key))


def test_missing_path_is_a_spec_error(tmp_path):
    with pytest.raises(SpecError) as err:
        data._load_documents(DataSpec(corpus=str(tmp_path / "nope.txt")))
    assert (err.value.file, err.value.key) == ("DataSpec", "corpus")


# Split -------------------------------------------------------------------------------------------

def test_held_out_is_a_stable_hash_of_the_id():
    # sha256-based, so these exact numbers hold in every process and on every machine
    assert sum(data._held_out(str(i), 5) for i in range(1000)) == 60
    held = [i for i in range(200) if data._held_out(str(i), 5)]
    assert held == [1, 11, 21, 24, 57, 72, 92, 116, 120, 139, 152, 190, 193]


def test_split_is_deterministic_and_disjoint():
    spec = DataSpec()
    docs = data._load_documents(spec)
    train, held = data._split(spec, docs)
    again, _ = data._split(spec, docs)
    assert [d.id for d in train] == [d.id for d in again]
    assert not {d.id for d in train} & {d.id for d in held}
    assert len(train) + len(held) == len(docs) and 0.02 < len(held) / len(docs) < 0.09
    assert held == [d for d in docs if data._held_out(d.id, 5)]


def test_an_empty_held_out_set_is_refused(tmp_path):
    (tmp_path / "one.txt").write_text("a single document\n")
    with pytest.raises(WindtunnelError, match=r"the held-out set is empty \(1 documents, valid_percent=5\)"):
        data.prepare(DataSpec(corpus=str(tmp_path)), vocab_size=300, cache_dir=tmp_path, progress=False)


# Tokenizer, shards, cache ------------------------------------------------------------------------

def test_python_corpus(python):
    corpus, spec, _ = python
    _, held = data._split(spec, data._load_documents(spec))
    evals = {name: make_texts() for name, make_texts in data._eval_sets(held).items()}
    assert 0 < len(evals["docstrings"]) <= len(held)
    assert set(corpus.evals) == {"code", "docstrings", "torch"}
    assert corpus.tokenizer.decode(corpus.evals["torch"]) == "".join(evals["torch"])
    assert len(corpus.train) > 25_000_000  # no micro run needs a second epoch
    assert corpus.tokenizer.vocab_size == 512 and corpus.train.dtype == np.uint16
    assert isinstance(corpus.train, np.memmap) and len(corpus.fingerprint) == 16
    # one end-of-document token per document, and tokens decode back to the exact source
    assert int((corpus.evals["code"] == corpus.tokenizer.eos_id).sum()) == len(evals["code"])
    assert corpus.tokenizer.decode(corpus.evals["code"]) == "".join(evals["code"])
    n_bytes = sum(len(t.encode()) for t in evals["docstrings"])
    assert corpus.bytes_per_token["docstrings"] == n_bytes / len(corpus.evals["docstrings"])
    assert set(corpus.bytes_per_token) == {"train", "code", "docstrings", "torch"}
    assert all(1.5 < b < 4 for b in corpus.bytes_per_token.values())


@pytest.mark.parametrize("text", TRICKY)
def test_tokenizer_round_trip_is_exact(python, text):
    tokenizer = python[0].tokenizer
    ids = tokenizer.encode(text)
    assert all(0 <= i < tokenizer.vocab_size for i in ids)
    assert tokenizer.decode(ids) == text
    assert tokenizer.encode_batch([text, text], num_threads=2) == [ids, ids]


def test_tokenizer_pickles_with_its_model(python):
    tokenizer = python[0].tokenizer
    copy = pickle.loads(pickle.dumps(tokenizer))
    assert copy.path == tokenizer.path and copy.encode(TRICKY[1]) == tokenizer.encode(TRICKY[1])


def test_second_prepare_reads_the_cache(python, monkeypatch):
    corpus, spec, cache = python
    def fail(*args, **kwargs):
        raise AssertionError("cache miss")
    monkeypatch.setattr(data, "_train_sentencepiece", fail)
    monkeypatch.setattr(data, "_write_shard", fail)
    again = data.prepare(spec, vocab_size=512, cache_dir=cache, progress=False)
    assert again.fingerprint == corpus.fingerprint and again.bytes_per_token == corpus.bytes_per_token
    assert np.array_equal(again.train, corpus.train)


def test_a_prepared_corpus_opens_without_reading_its_text_until_a_file_changes(tmp_path, docs, monkeypatch):
    folder = tmp_path / "corpus"
    folder.mkdir()
    for i in range(4):
        (folder / f"part{i}.jsonl").write_text("".join(json.dumps({"text": t}) + "\n" for t in docs[i::4]))
    spec = DataSpec(corpus=str(folder))
    first = data.prepare(spec, vocab_size=300, cache_dir=tmp_path / "cache", progress=False)
    def unread(*args, **kwargs):
        raise AssertionError("the text was read again")
    with monkeypatch.context() as m:
        m.setattr(data, "_local_documents", unread)
        again = data.prepare(spec, vocab_size=300, cache_dir=tmp_path / "cache", progress=False)
    assert again.fingerprint == first.fingerprint and np.array_equal(again.train, first.train)
    assert again.tokenizer.blob == first.tokenizer.blob and again.bytes_per_token == first.bytes_per_token
    with open(folder / "part0.jsonl", "a") as f:
        f.write(json.dumps({"text": "an edited corpus is read again"}) + "\n")
    edited = data.prepare(spec, vocab_size=300, cache_dir=tmp_path / "cache", progress=False)
    assert edited.fingerprint != first.fingerprint


def _hf_tokenizer_json(path, texts) -> None:
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers

    tk = Tokenizer(models.BPE(unk_token="<unk>"))
    tk.pre_tokenizer = pre_tokenizers.ByteLevel(add_prefix_space=False)
    tk.decoder = decoders.ByteLevel()
    tk.train_from_iterator(texts, trainers.BpeTrainer(vocab_size=280, special_tokens=["<unk>", "</s>"]))
    tk.save(str(path))


def test_a_pretrained_tokenizer_is_used_instead_of_training_one(tmp_path, jsonl, docs):
    """A Hugging Face tokenizer.json and a sentencepiece .model made here, used as DataSpec.tokenizer."""
    hf = tmp_path / "tokenizer.json"
    _hf_tokenizer_json(hf, docs)
    corpus = data.prepare(DataSpec(corpus=str(jsonl), tokenizer=str(hf)), vocab_size=300, cache_dir=tmp_path,
                          progress=False)
    assert isinstance(corpus.tokenizer, data.HFTokenizer) and corpus.tokenizer.vocab_size <= 300
    eos = corpus.tokenizer.eos_id
    assert (np.asarray(corpus.evals["valid"]) == eos).sum() >= 1 and corpus.bytes_per_token["valid"] > 1
    first_doc = np.asarray(corpus.train)[: list(np.asarray(corpus.train)).index(eos)]
    assert corpus.tokenizer.decode(first_doc) in docs
    ordered = data._hash_order([data._Document(str(i), t) for i, t in enumerate(docs)])
    sp_model = data._tokenizer(ordered, vocab_size=290, sample_bytes=10**6, cache_dir=tmp_path / "sp", progress=False).path
    with_sp = data.prepare(DataSpec(corpus=str(jsonl), tokenizer=str(sp_model)), vocab_size=300,
                           cache_dir=tmp_path, progress=False)
    assert with_sp.tokenizer.vocab_size == 290 and with_sp.fingerprint != corpus.fingerprint
    with pytest.raises(SpecError, match="at most model.vocab_size=100"):
        data.prepare(DataSpec(corpus=str(jsonl), tokenizer=str(hf)), vocab_size=100, cache_dir=tmp_path)
    with pytest.raises(SpecError, match="tokenizer"):
        data.prepare(DataSpec(corpus=str(jsonl), tokenizer=str(jsonl)), vocab_size=300, cache_dir=tmp_path)


def test_user_corpus(tmp_path, jsonl, docs):
    corpus = data.prepare(DataSpec(corpus=str(jsonl)), vocab_size=300, cache_dir=tmp_path, progress=False)
    held = [t for i, t in enumerate(docs) if data._held_out(f"corpus.jsonl#{i + 1}", 5)]
    assert set(corpus.evals) == {"valid"} and corpus.tokenizer.vocab_size == 300
    assert corpus.tokenizer.decode(corpus.evals["valid"]) == "".join(held)
    assert corpus.tokenizer.decode(corpus.train) == "".join(t for t in docs if t not in held)
    assert corpus.bytes_per_token["valid"] > 1.5
    assert sorted(p.name for p in (tmp_path / "shards" / corpus.fingerprint).iterdir()) == [
        "train.bin", "train.json", "valid.bin", "valid.json",
    ]


def test_fingerprint_is_content_identity(tmp_path, jsonl):
    def fingerprint(corpus, **kw):
        spec = DataSpec(corpus=str(corpus), **kw)
        return data.prepare(spec, vocab_size=300, cache_dir=tmp_path, progress=False).fingerprint
    moved = tmp_path / "elsewhere" / "corpus.jsonl"
    moved.parent.mkdir()
    moved.write_bytes(jsonl.read_bytes())
    assert fingerprint(jsonl) == fingerprint(moved)  # same content, another folder
    assert fingerprint(jsonl) != fingerprint(jsonl, valid_percent=10)


def test_too_large_vocabulary_names_the_fix(tmp_path):
    (tmp_path / "c.jsonl").write_text("".join(json.dumps({"text": f"ab {i}"}) + "\n" for i in range(100)))
    with pytest.raises(WindtunnelError, match=r"cannot train vocab_size=1000 .*; lower vocab_size or raise tokenizer_"):
        data.prepare(DataSpec(corpus=str(tmp_path / "c.jsonl")), vocab_size=1000, cache_dir=tmp_path, progress=False)


# Windows -----------------------------------------------------------------------------------------

TOKENS = np.arange(101, dtype=np.uint16)  # seq_len 10 → 10 windows starting at 0, 10, ..., 90


def test_sample_windows_shape_and_targets():
    w = data.sample_windows(TOKENS, start=0, count=4, seq_len=10, seed=0)
    assert w.shape == (4, 11) and w.dtype == np.int64
    assert np.array_equal(w[:, 1:], w[:, :-1] + 1) and set(w[:, 0] % 10) == {0}


def test_sample_windows_is_deterministic_and_resumable():
    full = data.sample_windows(TOKENS, start=0, count=50, seq_len=10, seed=3)
    assert np.array_equal(full, data.sample_windows(TOKENS, start=0, count=50, seq_len=10, seed=3))
    assert not np.array_equal(full, data.sample_windows(TOKENS, start=0, count=50, seq_len=10, seed=4))
    for start in (0, 7, 23, 45):
        part = data.sample_windows(TOKENS, start=start, count=5, seq_len=10, seed=3)
        assert np.array_equal(part, full[start:start + 5])


def test_each_epoch_is_a_new_permutation_of_all_windows():
    starts = data.sample_windows(TOKENS, start=0, count=30, seq_len=10, seed=0)[:, 0].reshape(3, 10)
    for epoch in starts:
        assert sorted(epoch) == list(range(0, 100, 10))
    assert len({tuple(epoch) for epoch in starts}) == 3


def test_eval_windows_are_spread_and_capped():
    w = data.eval_windows(TOKENS, seq_len=10, max_tokens=40)
    assert w[:, 0].tolist() == [0, 20, 50, 70] and w.dtype == np.int64
    assert np.array_equal(w, data.eval_windows(TOKENS, seq_len=10, max_tokens=40))
    assert len(data.eval_windows(TOKENS, seq_len=10, max_tokens=10_000)) == 10
    assert len(data.eval_windows(TOKENS, seq_len=10, max_tokens=3)) == 1


def test_windows_on_a_memmap(python):
    corpus = python[0]
    w = data.sample_windows(corpus.train, start=10**6, count=8, seq_len=128, seed=1)
    assert w.shape == (8, 129) and w.max() < 512
    assert data.eval_windows(corpus.evals["code"], seq_len=128, max_tokens=32_768).shape == (256, 129)


def test_too_short_token_set_is_refused():
    with pytest.raises(WindtunnelError, match=r"of 10 tokens is too short for seq_len=10 \(one window needs 11\)"):
        data.sample_windows(np.arange(10), start=0, count=1, seq_len=10, seed=0)


def test_mixture_windows_follow_the_weights_and_any_split_of_them():
    other = np.arange(10_000, 12_001)  # a second set whose windows start at 10_000 or later
    full = data.mixture_windows([TOKENS, other], [0.7, 0.3], start=0, count=2000, seq_len=10, seed=5)
    from_other = full[:, 0] >= 10_000
    assert 0.27 < from_other.mean() < 0.33
    assert np.array_equal(full[:, 1:], full[:, :-1] + 1)  # whole windows of one set each
    parts = [data.mixture_windows([TOKENS, other], [0.7, 0.3], start=s, count=250, seq_len=10, seed=5)
             for s in range(0, 2000, 250)]
    assert np.array_equal(np.concatenate(parts), full)
    first = full[:200][from_other[:200], 0]  # windows 0..199: one epoch of the second set, no window twice
    assert len(set(first)) == len(first)
    assert not np.array_equal(full, data.mixture_windows([TOKENS, other], [0.7, 0.3], start=0, count=2000,
                                                         seq_len=10, seed=6))


def test_mixture_tokens_of_another_corpus_use_the_runs_tokenizer(python, jsonl, monkeypatch):
    corpus, spec, cache = python
    assert data.mixture_tokens("python", spec, corpus, cache_dir=cache) is corpus.train
    tokens = data.mixture_tokens(str(jsonl), spec, corpus, cache_dir=cache)
    source = DataSpec(corpus=str(jsonl))
    train, _ = data._split(source, data._load_documents(source))   # the in-memory pieces: same key, same tokens
    tk = corpus.tokenizer
    key = data._hash(f"format={data.FORMAT}", "mixture", str(jsonl), "valid_percent=5", tk.blob,
                     *(part for d in train for part in (d.id, d.text)))
    assert np.array_equal(data._read_shard(cache / "shards" / key, "train")[0], tokens)
    assert np.asarray(tokens).tolist() == [i for d in train for i in tk.encode(d.text) + [tk.eos_id]]
    def unread(*args, **kwargs):
        raise AssertionError("the text was read again")
    with monkeypatch.context() as m:
        m.setattr(data, "_local_documents", unread)
        assert np.array_equal(data.mixture_tokens(str(jsonl), spec, corpus, cache_dir=cache), tokens)
    with pytest.raises(WindtunnelError, match="decay_data: corpus 'nowhere.jsonl'"):
        data.mixture_tokens("nowhere.jsonl", spec, corpus, cache_dir=cache)


def test_the_embedded_corpus_names_the_versions_its_text_came_from(monkeypatch):
    """Another torch or Python is other text: other run ids and losses than LOG.md's, said in one line."""
    from windtunnel import data
    from windtunnel.config import TrainSpec, get_model
    from windtunnel.runs import make_run, run_params

    found = data.embedded_source()
    assert set(found) == {"Python", "torch"} and "+" not in found["torch"]
    monkeypatch.setattr(data, "FIGURES_SOURCE", dict(found))
    assert data.source_note().endswith("as in LOG.md's figures") and found["torch"] in data.source_note()
    monkeypatch.setattr(data, "FIGURES_SOURCE", {**found, "torch": "2.0.0"})
    note = data.source_note()
    assert "\n" not in note and f"torch {found['torch']}, not Python {found['Python']} + torch 2.0.0" in note
    assert "other run ids and losses" in note
    params = run_params(make_run(TrainSpec(model=get_model("micro-24k")), name="m", coords={}))
    assert params["data.source"] == f"Python {found['Python']} + torch {found['torch']}"
