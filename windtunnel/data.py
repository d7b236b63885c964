"""Corpora, the sentencepiece tokenizer, token shards and training/evaluation windows (docs/method.md §7).

`prepare(spec, vocab_size=...)` turns a `DataSpec` into a `Corpus`: it reads the documents, holds
out `valid_percent` of them by a hash of each document's id, trains a BPE tokenizer on a sample of
the training documents and tokenizes every set once into a memmap shard. Local files and Hugging Face
datasets are read in passes that never hold the whole corpus in memory; the embedded corpus is loaded
whole. Tokenizers and shards are cached under `results/cache/` by content hash, and an index by the
files' names, sizes and times reopens a prepared corpus without reading its text.

Corpora (`DataSpec.corpus`):
- "python" (the default): the .py files of the running interpreter's standard library (~1800 files,
  ~31 MB) and of the installed torch package (~2300 files, ~46 MB; the Makefile pins torch==2.13.0, so
  every machine that runs `make setup` has the same text), ~30M training tokens at vocab 1024: no run of
  the micro ladder sees a token twice (runs report `data/epochs`). No download. Held-out sets: "code"
  (the held-out standard-library files), "docstrings" (their docstrings and comments) and "torch" (the
  held-out torch files). A document's id is "stdlib/PATH" or "torch/PATH", PATH relative to its package.
- a .txt file (one document), a .jsonl file (one JSON object per line, text under `text_key`; also
  .jsonl.gz, and .jsonl.zst with the `zstandard` package), a .parquet file (column `text_key`), or a
  folder searched recursively for these kinds (other files are ignored), read in sorted order. Ids
  are "relative/path" or "relative/path#row".
- "hf:NAME" or "hf:NAME:CONFIG": the "train" split of a Hugging Face dataset. NAME is a folder
  written by `save_to_disk` (read with `load_from_disk`), or else whatever `datasets.load_dataset`
  takes: a local folder of data files, or a hub name resolved through the local cache (set
  HF_DATASETS_OFFLINE=1 to forbid downloads). Ids are row numbers.
User corpora have one held-out set, "valid". Empty documents are dropped.

Every set is stored as its documents' tokens, each document followed by the end-of-document token
`tokenizer.eos_id`, so training windows may cross documents. `sample_windows` and `eval_windows`
cut such arrays into int64 windows of seq_len+1 tokens: inputs x = w[:, :-1], targets y = w[:, 1:].
"""

from __future__ import annotations

import ast
import dataclasses
import functools
import hashlib
import heapq
import importlib.util
import io
import json
import os
import platform
import shutil
import sys
import sysconfig
import tempfile
import tokenize
import warnings
from collections.abc import Callable, Iterable, Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import sentencepiece as spm

from windtunnel.config import DataSpec
from windtunnel.errors import SpecError, WindtunnelError
from windtunnel.paths import results_dir

__all__ = ["Corpus", "Tokenizer", "prepare", "source_fingerprint", "sample_windows", "eval_windows", "embedded_source",
           "source_note", "versions_text"]

FORMAT = 1  # bump when document extraction or the shard layout changes: old caches are then ignored
EXTENSIONS = (".txt", ".jsonl", ".jsonl.gz", ".jsonl.zst", ".parquet")
_CORPUS_HELP = ("use 'python', 'hf:NAME[:CONFIG]', or a .txt/.jsonl/.jsonl.gz/.jsonl.zst/.parquet file or a folder "
                "of them")
_META = "\u2581"  # sentencepiece's space symbol "▁": a literal one in the text is encoded as its 3 bytes
_SENTENCE_CHARS = 2_000  # tokenizer training sentences: whole lines, at most this many characters
_BATCH_CHARS = 4_000_000  # characters per sentencepiece encode call: bounds the memory of id lists
_PARQUET_ROWS = 1024  # rows per record batch read from a .parquet file: bounds the text held at once
_SPM_OPTIONS = dict(
    model_type="bpe",
    normalization_rule_name="identity",  # no NFKC: the text is kept character for character
    remove_extra_whitespaces=False,  # indentation, blank lines and trailing spaces are content in code
    add_dummy_prefix=False,  # no invented leading space, so decode(encode(text)) == text
    allow_whitespace_only_pieces=True,  # a run of indentation spaces can be one piece
    split_digits=True,  # numbers as digit sequences, as in Llama's tokenizer
    byte_fallback=True,  # characters outside the vocabulary are spelled as UTF-8 byte pieces
    character_coverage=0.9995,  # the rarest 0.05% of characters go to byte pieces instead of ids
    max_sentence_length=4 * _SENTENCE_CHARS,  # bytes; a UTF-8 character takes at most 4
    input_sentence_size=0,  # train on the whole (already deterministic) sample, in order
    shuffle_input_sentence=False,
    num_threads=2,  # fixed: the count is stored in the model file, which the fingerprint hashes
    unk_id=0, bos_id=1, eos_id=2, pad_id=-1,
)


# 1) Documents ------------------------------------------------------------------------------------

@dataclass(frozen=True)
class _Document:
    id: str  # what the train/held-out split hashes: a relative path, "path#row" or a row number
    text: str


def _load_documents(spec: DataSpec) -> list[_Document]:
    """The corpus's non-empty documents, in a deterministic order, all in memory."""
    return list(_documents(spec))


def _documents(spec: DataSpec) -> Iterable[_Document]:
    """The corpus's non-empty documents, in a deterministic order, read one at a time where the corpus allows
    (local files, Hugging Face rows), so that a pass over a corpus larger than memory holds one document."""
    if spec.corpus == "python":
        return [doc for doc in _python_documents() if doc.text]
    if spec.corpus.startswith("hf:"):
        return (doc for doc in _hf_documents(spec) if doc.text)
    return _local_documents(spec)


EMBEDDED_PACKAGES = ("torch",)  # installed packages whose source joins the stdlib's; pinned by the Makefile
FIGURES_SOURCE = {"Python": "3.11.7", "torch": "2.13.0"}  # what the embedded corpus held for LOG.md's figures


def embedded_source() -> dict[str, str]:
    """The versions the embedded corpus is read from: {"Python": "3.11.7", "torch": "2.13.0"} (a local version
    label such as +cpu dropped: the wheels' sources are the same). Logged with every run (MLflow param
    data.source) beside the content fingerprint its id hashes."""
    from importlib.metadata import PackageNotFoundError, version

    found = {"Python": platform.python_version()}
    for name in EMBEDDED_PACKAGES:
        try:
            found[name] = version(name).split("+")[0]
        except PackageNotFoundError:
            found[name] = "not installed"
    return found


def versions_text(versions: dict[str, str]) -> str:
    """{"Python": "3.11.7", "torch": "2.13.0"} as "Python 3.11.7 + torch 2.13.0"."""
    return " + ".join(f"{k} {v}" for k, v in versions.items())


def source_note() -> str:
    """One line naming what the embedded corpus is built from, and saying so when that is not what LOG.md's
    figures were measured on (another torch or Python: other text, so other run ids and other losses)."""
    found = embedded_source()
    if found == FIGURES_SOURCE:
        return f"corpus 'python': the sources of {versions_text(found)}, as in LOG.md's figures"
    return (f"corpus 'python': the sources of {versions_text(found)}, not {versions_text(FIGURES_SOURCE)} as in "
            f"LOG.md's figures: other text, so other "
            f"run ids and losses than LOG.md's (make setup installs torch=={FIGURES_SOURCE['torch']})")


def _python_documents() -> list[_Document]:
    """The standard library's .py files (without site-packages), then each embedded package's, each sorted
    by relative path; ids "stdlib/PATH", "torch/PATH". Packages are located without importing them."""
    return [_Document(doc_id, _read_source(path)) for doc_id, path in _python_paths()]


@functools.cache
def _python_paths() -> tuple[tuple[str, Path], ...]:
    """(id, path) of every file of the embedded corpus, in its order. Walked once a process (0.3 s, and every run's
    `prepare` asks twice: a fifth of a short decay branch's wall time); the listing key still stats each file."""
    roots = [("stdlib", Path(sysconfig.get_paths()["stdlib"]))]
    for name in EMBEDDED_PACKAGES:
        spec = importlib.util.find_spec(name)
        if spec is None or not spec.submodule_search_locations:
            raise WindtunnelError(f"the 'python' corpus needs the {name} package's source; install it (make setup)")
        roots.append((name, Path(list(spec.submodule_search_locations)[0])))
    return tuple((f"{prefix}/{rel}", path) for prefix, root in roots for rel, path in _source_files(root))


def _source_files(root: Path) -> list[tuple[str, Path]]:
    paths = []
    for folder, subfolders, files in os.walk(root):
        subfolders[:] = [s for s in subfolders if s not in ("site-packages", "dist-packages")]
        paths += [Path(folder, f) for f in files if f.endswith(".py")]
    return sorted((p.relative_to(root).as_posix(), p) for p in paths)


def _read_source(path: Path) -> str:
    """A .py file's text: UTF-8 (PEP 3120), else its coding cookie, else UTF-8 with U+FFFD for bad bytes."""
    raw = path.read_bytes()  # bytes, not read_text: "\r\n" must survive
    try:
        return raw.decode("utf-8")
    except UnicodeDecodeError:
        pass
    try:
        encoding, _ = tokenize.detect_encoding(io.BytesIO(raw).readline)
        return raw.decode(encoding)
    except (SyntaxError, LookupError, UnicodeDecodeError):
        return raw.decode("utf-8", errors="replace")


def _local_documents(spec: DataSpec) -> Iterator[_Document]:
    """Non-empty documents of a .txt/.jsonl/.parquet file, or of every such file under a folder, one at a time."""
    files, base = _local_files(spec)
    for path in files:
        yield from _file_documents(path, path.relative_to(base).as_posix(), spec.text_key)


def _local_files(spec: DataSpec) -> tuple[list[Path], Path]:
    """The corpus's files, in order, and the folder their ids are relative to."""
    root = Path(spec.corpus).expanduser()
    if root.is_file():
        if _extension(root) is None:
            raise SpecError("DataSpec", "corpus", spec.corpus, f"file types read: {', '.join(EXTENSIONS)}")
        files, base = [root], root.parent
    elif root.is_dir():
        files = [p for p in root.rglob("*") if p.is_file() and _extension(p) is not None]
        files.sort(key=lambda p: p.relative_to(root).as_posix())
        if not files:
            raise SpecError("DataSpec", "corpus", spec.corpus, f"the folder holds no {'/'.join(EXTENSIONS)} file")
        base = root
    else:
        raise SpecError("DataSpec", "corpus", spec.corpus, f"no such file or folder; {_CORPUS_HELP}")
    return files, base


def _extension(path: Path) -> str | None:
    """The corpus file type of `path` (one of EXTENSIONS, the longest that matches), or None."""
    name = path.name.lower()
    return next((e for e in sorted(EXTENSIONS, key=len, reverse=True) if name.endswith(e)), None)


def _file_documents(path: Path, rel: str, text_key: str) -> Iterator[_Document]:
    """A file's non-empty documents: a .txt file is one, a .jsonl line or a .parquet row another."""
    kind = _extension(path)
    if kind == ".txt":
        text = path.read_bytes().decode("utf-8", errors="replace")
        if text:
            yield _Document(rel, text)
        return
    rows = _parquet_rows(path, text_key) if kind == ".parquet" else _jsonl_rows(path, text_key)
    yield from (_Document(f"{rel}#{row}", text) for row, text in rows if text)


def _binary(path: Path):
    """`path` opened for reading bytes, decompressed on the fly when it ends in .gz or .zst."""
    import io

    name = path.name.lower()
    if name.endswith(".gz"):
        import gzip

        return gzip.open(path, "rb")
    if name.endswith(".zst"):
        try:
            import zstandard
        except ImportError:
            raise WindtunnelError(f"{path}: a .zst corpus needs the 'zstandard' package: "
                                  "pip install 'windtunnel[zst]'") from None
        return io.BufferedReader(zstandard.ZstdDecompressor().stream_reader(path.open("rb")))
    return path.open("rb")


def _jsonl_rows(path: Path, text_key: str) -> Iterator[tuple[int, str]]:
    """(line number, text) of each non-blank line of a .jsonl file (.jsonl.gz and .jsonl.zst decompressed)."""
    with _binary(path) as lines:
        for number, line in enumerate(lines, 1):
            if not line.strip():
                continue
            try:
                row = json.loads(line)
            except json.JSONDecodeError as exc:
                raise WindtunnelError(
                    f"{path}:{number}: not JSON ({exc.msg}); a .jsonl corpus has one JSON object per line"
                ) from exc
            if not isinstance(row, dict) or not isinstance(row.get(text_key), str):
                found = sorted(row) if isinstance(row, dict) else type(row).__name__
                allowed = f"each line needs a string under text_key; this line has {found}"
                raise SpecError(f"{path}:{number}", "text_key", text_key, allowed)
            yield number, row[text_key]


def _parquet_rows(path: Path, text_key: str) -> Iterator[tuple[int, str | None]]:
    """(row index, text) of a .parquet file's `text_key` column, read _PARQUET_ROWS rows at a time (a file of many
    GB never whole in memory); nulls come back as None."""
    import pyarrow as pa
    import pyarrow.parquet as pq

    try:
        file = pq.ParquetFile(path)
    except pa.ArrowException as exc:
        raise WindtunnelError(f"{path}: not a readable parquet file ({exc})") from exc
    with file:
        columns = file.schema_arrow
        if text_key not in columns.names:
            raise SpecError(str(path), "text_key", text_key, f"columns here: {columns.names}")
        kind = columns.field(text_key).type
        if not (pa.types.is_string(kind) or pa.types.is_large_string(kind)):
            raise SpecError(str(path), "text_key", text_key, f"the column must hold strings, not {kind}")
        row = 0
        for batch in file.iter_batches(batch_size=_PARQUET_ROWS, columns=[text_key]):
            for text in batch.column(0).to_pylist():
                yield row, text
                row += 1


def _hf_documents(spec: DataSpec) -> Iterator[_Document]:
    """Rows of a Hugging Face dataset's "train" split, one at a time; the id is the row number."""
    dataset = _hf_dataset(spec.corpus)
    key = spec.text_key
    if key not in dataset.column_names:
        raise SpecError(spec.corpus, "text_key", key, f"columns here: {dataset.column_names}")
    texts = (text for batch in dataset.select_columns([key]).iter(batch_size=1024) for text in batch[key])
    for row, text in enumerate(texts):
        if text is not None and not isinstance(text, str):
            raise SpecError(spec.corpus, "text_key", key, f"the column must hold strings, not {type(text).__name__}")
        yield _Document(str(row), text or "")


def _hf_dataset(corpus: str):
    """`hf:NAME[:CONFIG]` → a `datasets.Dataset`: a save_to_disk folder, else `load_dataset(NAME, CONFIG)`."""
    try:
        import datasets
    except ImportError:
        raise WindtunnelError(f"{corpus}: an hf: corpus needs the Hugging Face 'datasets' package: "
                              "pip install 'windtunnel[hf]'") from None

    name, _, config = corpus.removeprefix("hf:").partition(":")
    folder = Path(name).expanduser()
    saved = (folder / "state.json").is_file() or (folder / "dataset_dict.json").is_file()
    try:
        if saved:
            loaded = datasets.load_from_disk(str(folder))
        else:
            loaded = datasets.load_dataset(name, config or None, split="train")
    except Exception as exc:  # datasets raises many kinds: FileNotFoundError, ConnectionError, ValueError...
        raise WindtunnelError(
            f"{corpus}: could not load the dataset ({type(exc).__name__}: {exc}); NAME must be a save_to_disk "
            "folder, a local data folder, or a dataset already in the Hugging Face cache"
        ) from exc
    if isinstance(loaded, datasets.DatasetDict):
        if "train" not in loaded:
            raise SpecError("DataSpec", "corpus", corpus, f"the dataset needs a 'train' split; it has {list(loaded)}")
        loaded = loaded["train"]
    return loaded


# 2) Train / held-out split and evaluation sets ---------------------------------------------------

def _held_out(doc_id: str, valid_percent: int) -> bool:
    """Whether a document is held out: a stable hash of its id (not Python's salted hash) mod 100."""
    digest = hashlib.sha256(doc_id.encode("utf-8", "surrogatepass")).digest()
    return int.from_bytes(digest[:8], "little") % 100 < valid_percent


def _split(spec: DataSpec, docs: list[_Document]) -> tuple[list[_Document], list[_Document]]:
    """The training documents and the held-out documents; neither may be empty."""
    held = [_held_out(doc.id, spec.valid_percent) for doc in docs]
    train = [doc for doc, h in zip(docs, held) if not h]
    valid = [doc for doc, h in zip(docs, held) if h]
    _check_split(spec, n_train=len(train), n_held=len(valid))
    return train, valid


def _check_split(spec: DataSpec, *, n_train: int, n_held: int) -> None:
    """Refuse a split with no training or no held-out document (counted in memory or in a pass over the files)."""
    for name, n in (("train", n_train), ("held-out", n_held)):
        if not n:
            raise WindtunnelError(
                f"{spec.corpus}: the {name} set is empty ({n_train + n_held} documents, "
                f"valid_percent={spec.valid_percent}); use more documents (e.g. a .jsonl with one per line) or a "
                "valid_percent within 1..99"
            )


def _eval_sets(held: list[_Document]) -> dict[str, Callable[[], list[str]]]:
    """The embedded corpus's evaluation sets by name, each a function giving its texts (called only when not
    cached)."""
    code = [doc.text for doc in held if doc.id.startswith("stdlib/")]
    sets = {"code": lambda: code, "docstrings": lambda: _docstrings(code)}
    for name in EMBEDDED_PACKAGES:
        sets[name] = lambda name=name: [doc.text for doc in held if doc.id.startswith(f"{name}/")]
    return sets


def _docstrings(sources: list[str]) -> list[str]:
    """The prose of each source that parses (~1 s for the stdlib's held-out 2 MB: hence only on a cache miss)."""
    prose = [p for p in map(_docstrings_and_comments, sources) if p]
    if not prose:
        raise WindtunnelError(
            f"none of the {len(sources)} held-out files parses, so there is no 'docstrings' set; raise valid_percent"
        )
    return prose


_DOCSTRING_OWNERS = (ast.Module, ast.ClassDef, ast.FunctionDef, ast.AsyncFunctionDef)


def _docstrings_and_comments(source: str) -> str:
    """The prose of a .py file: docstrings and comments in source order; "" if it does not parse."""
    try:
        with warnings.catch_warnings():  # invalid escape sequences in test files warn while parsing
            warnings.simplefilter("ignore")
            tree = ast.parse(source)
        tokens = list(tokenize.generate_tokens(io.StringIO(source).readline))
    except (SyntaxError, ValueError, RecursionError, tokenize.TokenError):  # ValueError: null bytes
        return ""
    comments = [(t.start[0], t.string.lstrip("#").strip()) for t in tokens if t.type == tokenize.COMMENT]
    docstrings = [
        (node.body[0].lineno, ast.get_docstring(node))
        for node in ast.walk(tree)
        if isinstance(node, _DOCSTRING_OWNERS) and ast.get_docstring(node)
    ]
    return "\n".join(text for _, text in sorted(docstrings + comments) if text)


# 3) Tokenizer ------------------------------------------------------------------------------------

class Tokenizer:
    """A sentencepiece BPE model for which decode(encode(text)) == text, whitespace and all."""

    def __init__(self, path: Path):
        self.path = Path(path)
        self._load(self.path.read_bytes())

    def _load(self, proto: bytes) -> None:
        self.blob = proto  # the model file's bytes: part of the corpus's fingerprint
        self._sp = spm.SentencePieceProcessor(model_proto=proto)
        # a literal "▁" would decode as a space; its UTF-8 bytes as byte pieces decode as "▁"
        self._meta_ids = [self._sp.piece_to_id(f"<0x{b:02X}>") for b in _META.encode()]

    @property
    def vocab_size(self) -> int:
        return self._sp.get_piece_size()

    @property
    def eos_id(self) -> int:
        """The end-of-document token written after every document in the shards."""
        return self._sp.eos_id()

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str], *, num_threads: int = 1) -> list[list[int]]:
        """Token ids of each text, encoded by `num_threads` sentencepiece threads."""
        parts = [text.split(_META) for text in texts]
        flat = self._sp.encode([p for ps in parts for p in ps], num_threads=num_threads)
        out, i = [], 0
        for ps in parts:
            ids = flat[i]
            for j in range(1, len(ps)):
                ids += self._meta_ids + flat[i + j]
            out.append(ids)
            i += len(ps)
        return out

    def decode(self, ids) -> str:
        return self._sp.decode(np.asarray(ids, dtype=np.int64).tolist())

    def __getstate__(self) -> dict:  # pickles carry the model itself: workers need not share the cache
        return {"path": str(self.path), "proto": self.blob}

    def __setstate__(self, state: dict) -> None:
        self.path = Path(state["path"])
        self._load(state["proto"])


class HFTokenizer:
    """A pretrained Hugging Face tokenizer (a tokenizer.json, read by the `tokenizers` package): texts are encoded
    without special tokens; the end-of-document token is the first of EOS_TOKENS its vocabulary holds."""

    EOS_TOKENS = ("</s>", "<|endoftext|>", "<|end_of_text|>", "<eos>", "<|eos|>", "[SEP]")

    def __init__(self, path: Path):
        self.path = Path(path)
        self._load(self.path.read_bytes())

    def _load(self, blob: bytes) -> None:
        from tokenizers import Tokenizer as Loaded

        self.blob = blob
        try:
            self._tk = Loaded.from_str(blob.decode("utf-8"))
        except Exception as exc:  # tokenizers raises plain Exceptions for bad JSON
            raise SpecError("DataSpec", "tokenizer", str(self.path), f"a readable tokenizer.json ({exc})") from exc
        found = [t for t in self.EOS_TOKENS if self._tk.token_to_id(t) is not None]
        if not found:
            raise SpecError("DataSpec", "tokenizer", str(self.path),
                            f"a tokenizer whose vocabulary has an end-of-document token: one of {', '.join(self.EOS_TOKENS)}")
        self._eos = self._tk.token_to_id(found[0])

    @property
    def vocab_size(self) -> int:
        return self._tk.get_vocab_size()

    @property
    def eos_id(self) -> int:
        return self._eos

    def encode(self, text: str) -> list[int]:
        return self.encode_batch([text])[0]

    def encode_batch(self, texts: list[str], *, num_threads: int = 1) -> list[list[int]]:
        return [e.ids for e in self._tk.encode_batch(texts, add_special_tokens=False)]

    def decode(self, ids) -> str:
        return self._tk.decode(np.asarray(ids, dtype=np.int64).tolist(), skip_special_tokens=False)

    def __getstate__(self) -> dict:
        return {"path": str(self.path), "blob": self.blob}

    def __setstate__(self, state: dict) -> None:
        self.path = Path(state["path"])
        self._load(state["blob"])


def _load_tokenizer(path: Path) -> Tokenizer | HFTokenizer:
    """A tokenizer file by its kind: a Hugging Face tokenizer.json, else a sentencepiece model."""
    return HFTokenizer(path) if path.suffix == ".json" else Tokenizer(path)


def _pretrained(path: str, vocab_size: int) -> Tokenizer | HFTokenizer:
    """DataSpec.tokenizer: a sentencepiece .model or a Hugging Face tokenizer.json, at most vocab_size tokens."""
    file = Path(path).expanduser()
    if not file.is_file() or file.suffix not in (".model", ".json"):
        raise SpecError("DataSpec", "tokenizer", path, "a sentencepiece .model file or a Hugging Face tokenizer.json")
    tokenizer = _load_tokenizer(file)
    if tokenizer.eos_id < 0:
        raise SpecError("DataSpec", "tokenizer", path, "a sentencepiece model with an end-of-document (eos) piece")
    if tokenizer.vocab_size > vocab_size:
        raise SpecError("DataSpec", "tokenizer", path, f"a tokenizer of at most model.vocab_size={vocab_size} tokens "
                        f"(it has {tokenizer.vocab_size}; set model.vocab_size={tokenizer.vocab_size})")
    return tokenizer


def _tokenizer(
    ordered: Iterable[_Document], *, vocab_size: int, sample_bytes: int, cache_dir: Path, progress: bool
) -> Tokenizer:
    """The tokenizer trained on a sample of the training documents `ordered` (in _hash_order), from
    cache_dir/tokenizers/<hash of sample + settings>/."""
    sentences = _tokenizer_sample(ordered, sample_bytes)
    options = {**_SPM_OPTIONS, "vocab_size": vocab_size}
    key = _hash(json.dumps(options, sort_keys=True), spm.__version__, *sentences)
    path = cache_dir / "tokenizers" / key / "tokenizer.model"
    if not path.is_file():
        if progress:
            chars = sum(map(len, sentences))
            print(f"training a {vocab_size}-token tokenizer on {chars:,} characters", file=sys.stderr)
        model = _train_sentencepiece(sentences, options)
        with _atomic_file(path) as f:
            f.write(model)
    return Tokenizer(path)


def _hash_order(docs: list[_Document]) -> list[_Document]:
    """Documents in a stable pseudo-random order: by the hash of their ids."""
    return sorted(docs, key=lambda doc: _order_key(doc.id))


def _order_key(doc_id: str) -> bytes:
    """A document's place in _hash_order."""
    return hashlib.sha256(doc_id.encode("utf-8", "surrogatepass")).digest()


def _tokenizer_sample(ordered: Iterable[_Document], sample_bytes: int) -> list[str]:
    """Sentences to train on: the documents in their given order (_hash_order) up to `sample_bytes`."""
    sentences, size = [], 0
    for doc in ordered:
        for sentence in _sentences(doc.text):
            if size >= sample_bytes:
                return sentences
            sentences.append(sentence)
            size += len(sentence.encode("utf-8", "surrogatepass"))
    return sentences


def _sample_documents(
    docs: Iterable[_Document], *, valid_percent: int, sample_bytes: int
) -> tuple[list[_Document], int, int]:
    """The training documents that `_tokenizer_sample(_hash_order(train), sample_bytes)` reads, in that order, and
    the numbers of training and held-out documents, from one pass over `docs` that holds only those documents. The
    sample takes the documents' sentences (which add up to their texts) in key order and stops inside the document
    that brings it to sample_bytes, so it reads the fewest smallest-keyed documents whose UTF-8 bytes reach
    sample_bytes: a heap keeps them, dropping its largest key whenever the others reach sample_bytes without it."""
    heap, size, n_train, n_held = [], 0, 0, 0  # heap entries (-key, -arrival, bytes, doc): the largest key on top
    for doc in docs:
        if _held_out(doc.id, valid_percent):
            n_held += 1
            continue
        n_bytes = len(doc.text.encode("utf-8", "surrogatepass"))
        heapq.heappush(heap, (-int.from_bytes(_order_key(doc.id), "big"), -n_train, n_bytes, doc))
        size += n_bytes
        n_train += 1
        while heap and size - heap[0][2] >= sample_bytes:
            size -= heapq.heappop(heap)[2]
    ordered = sorted(heap, reverse=True)  # by key, equal keys by arrival: _hash_order's stable sort
    return [doc for *_, doc in ordered], n_train, n_held


def _sentences(text: str) -> Iterator[str]:
    """`text` cut at line ends into pieces of <= _SENTENCE_CHARS characters (longer lines are cut anywhere)."""
    pieces, size = [], 0
    for line in text.splitlines(keepends=True):
        for i in range(0, len(line), _SENTENCE_CHARS):
            chunk = line[i:i + _SENTENCE_CHARS]
            if size + len(chunk) > _SENTENCE_CHARS:
                yield "".join(pieces)
                pieces, size = [], 0
            pieces.append(chunk)
            size += len(chunk)
    if pieces:
        yield "".join(pieces)


def _train_sentencepiece(sentences: list[str], options: dict) -> bytes:
    """The serialized model that sentencepiece trains on `sentences` (quietly)."""
    model = io.BytesIO()
    try:
        spm.SentencePieceTrainer.train(
            sentence_iterator=iter(sentences), model_writer=model, minloglevel=2, **options
        )
    except RuntimeError as exc:
        raise WindtunnelError(
            f"sentencepiece cannot train vocab_size={options['vocab_size']} on {sum(map(len, sentences)):,} characters "
            f"({str(exc).strip()}); lower vocab_size or raise tokenizer_sample_bytes"
        ) from exc
    return model.getvalue()


# 4) Shards ---------------------------------------------------------------------------------------

@dataclass(frozen=True)
class Corpus:
    """A prepared corpus: token arrays to train and evaluate on, and the tokenizer that made them."""

    train: np.ndarray
    """1-D memmap of token ids (uint16 if vocab_size <= 65535, else uint32); each document ends with eos"""
    evals: dict[str, np.ndarray]
    """held-out token arrays by name: "code" and "docstrings" for stdlib, "valid" for other corpora"""
    bytes_per_token: dict[str, float]
    """UTF-8 bytes of the documents / tokens (end-of-document tokens included), for "train" and each eval set"""
    tokenizer: Tokenizer | HFTokenizer
    fingerprint: str
    """content hash of the documents, the split and the tokenizer model: part of a run's id"""


def prepare(spec: DataSpec, *, vocab_size: int, cache_dir: Path | None = None, progress: bool = True) -> Corpus:
    """Load, split, tokenize and cache `spec`'s corpus (cache_dir defaults to results/cache).

    Once prepared, a corpus is opened from its shards without reading or hashing its text again: an index
    (cache_dir/opened/KEY.json) maps the corpus's settings and its files' paths, sizes and modification times
    (a Hugging Face dataset's own fingerprint) to the content fingerprint and shards. Editing a file changes
    its size or time, so the text is read and fingerprinted anew."""
    cache_dir = Path(cache_dir) if cache_dir is not None else results_dir() / "cache"
    index = cache_dir / "opened" / f"{_listing_key(spec, vocab_size)}.json"
    opened = _open(index, cache_dir)
    if opened is not None:
        return opened
    if spec.corpus.startswith("hf:"):
        prepare_kind = _prepare_hf
    elif spec.corpus == "python":
        prepare_kind = _prepare_python
    else:
        prepare_kind = _prepare_local
    return prepare_kind(spec, vocab_size=vocab_size, cache_dir=cache_dir, index=index, progress=progress)


def _prepare_python(spec: DataSpec, *, vocab_size: int, cache_dir: Path, index: Path, progress: bool) -> Corpus:
    """`prepare` for the embedded corpus, in memory (~80 MB of source): its held-out sets are cut from the held-out
    files' texts ("code", "docstrings", "torch")."""
    docs = _load_documents(spec)
    train, held = _split(spec, docs)
    tokenizer = _pretrained(spec.tokenizer, vocab_size) if spec.tokenizer else _tokenizer(
        _hash_order(train), vocab_size=vocab_size, sample_bytes=spec.tokenizer_sample_bytes, cache_dir=cache_dir, progress=progress
    )
    fingerprint = _hash(f"format={FORMAT}", "python", f"valid_percent={spec.valid_percent}", tokenizer.blob,
                        *(part for doc in docs for part in (doc.id, doc.text)))
    shards = cache_dir / "shards" / fingerprint
    sets = {"train": lambda: [doc.text for doc in train], **_eval_sets(held)}
    made = {name: _shard(shards, name, make_texts, tokenizer, progress=progress) for name, make_texts in sets.items()}
    _write_index(index, fingerprint, tokenizer, made)
    return _corpus(made, tokenizer, fingerprint)


def _prepare_local(spec: DataSpec, *, vocab_size: int, cache_dir: Path, index: Path, progress: bool) -> Corpus:
    """`prepare` for local files without holding their text in memory, in two passes over them: 1) unless a
    tokenizer is given, one that keeps only the documents of the tokenizer's sample (_sample_documents); 2) one that
    hashes every document into the fingerprint and tokenizes both sets a batch at a time (_stream_shards). The same
    documents, split, tokenizer, fingerprint and shard bytes as an in-memory pass (_load_documents, _split,
    _hash_order, _write_shard), so caches and run ids made by one serve the other."""
    total = None  # documents, known after pass 1: the end of pass 2's progress bar
    if spec.tokenizer:
        tokenizer = _pretrained(spec.tokenizer, vocab_size)
    else:
        docs = _bar(_local_documents(spec), desc="sampling for the tokenizer", progress=progress)
        sample, n_train, n_held = _sample_documents(docs, valid_percent=spec.valid_percent,
                                                    sample_bytes=spec.tokenizer_sample_bytes)
        _check_split(spec, n_train=n_train, n_held=n_held)
        total = n_train + n_held
        tokenizer = _tokenizer(sample, vocab_size=vocab_size, sample_bytes=spec.tokenizer_sample_bytes,
                               cache_dir=cache_dir, progress=progress)
    head = (f"format={FORMAT}", "user", f"valid_percent={spec.valid_percent}", tokenizer.blob)
    docs = _bar(_local_documents(spec), desc="tokenizing", progress=progress, total=total)
    fingerprint, made = _stream_shards(spec, docs, ("train", "valid"), head=head, tokenizer=tokenizer,
                                       cache_dir=cache_dir)
    _write_index(index, fingerprint, tokenizer, made)
    return _corpus(made, tokenizer, fingerprint)


def _bar(docs: Iterable[_Document], *, desc: str, progress: bool, total: int | None = None) -> Iterable[_Document]:
    """`docs`, counted on stderr as they are read (a pass over a large corpus takes minutes to hours)."""
    from tqdm import tqdm

    return tqdm(docs, desc=desc, total=total, unit="doc", unit_scale=True, disable=not progress, file=sys.stderr)


def _stream_shards(spec: DataSpec, docs: Iterable[_Document], sets: tuple[str, ...], *, head: tuple, tokenizer,
                   cache_dir: Path) -> tuple[str, dict[str, tuple[np.ndarray, dict]]]:
    """One pass over `docs`, split by spec.valid_percent into "train" and "valid" (held out): the documents of
    `sets` are hashed after `head`, id and text in corpus order (what _hash(*head, id, text, ...) would give: the
    shards' fingerprint), and tokenized into a scratch folder. Once the split is checked, the shards move to
    cache_dir/shards/<fingerprint>/ (those already there are kept). Returns the fingerprint and each set's
    (memmap, metadata)."""
    digest, counts = _Hash(*head), {"train": 0, "valid": 0}
    with _scratch(cache_dir / "shards") as scratch:
        with ExitStack() as files:
            writers = {name: _ShardWriter(files.enter_context(open(scratch / f"{name}.bin", "wb")), tokenizer)
                       for name in sets}
            for doc in docs:
                name = "valid" if _held_out(doc.id, spec.valid_percent) else "train"
                counts[name] += 1
                if name in writers:
                    digest.update(doc.id, doc.text)
                    writers[name].add(doc.text)
            for writer in writers.values():
                writer.flush()
        _check_split(spec, n_train=counts["train"], n_held=counts["valid"])
        folder = cache_dir / "shards" / digest.hex()
        made = {name: _cached_shard(folder, name, lambda path, name=name: _move(scratch / path.name, path,
                                                                                writers[name].meta))
                for name in sets}
    return digest.hex(), made


@contextmanager
def _scratch(parent: Path) -> Iterator[Path]:
    """A fresh folder in `parent`, removed afterwards: on the cache's filesystem, so its files move in atomically."""
    parent.mkdir(parents=True, exist_ok=True)
    folder = Path(tempfile.mkdtemp(dir=parent, prefix=".scratch-"))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)


def _move(source: Path, path: Path, meta: dict) -> dict:
    """A shard written elsewhere, moved to `path` (os.replace: atomic); returns its metadata, for _cached_shard."""
    path.parent.mkdir(parents=True, exist_ok=True)
    os.replace(source, path)
    return meta


def _prepare_hf(spec: DataSpec, *, vocab_size: int, cache_dir: Path, index: Path, progress: bool) -> Corpus:
    """`prepare` for a Hugging Face dataset without holding its text in memory: the dataset stays in Arrow files on
    disk, the split and the tokenization run as `datasets.map` over all cores (num_proc), and the shards are written
    batch by batch. The same documents, split, tokenizer and shards as the in-memory path (`_load_documents`);
    the shards' fingerprint is the dataset's own (its content hash, not a pass over the text)."""
    dataset = _hf_text(spec)
    procs = _threads() if _threads() > 1 else None   # datasets.map: None runs in this process
    flags = dataset.map(_flags, fn_kwargs={"key": spec.text_key, "valid_percent": spec.valid_percent},
                        with_indices=True, batched=True, num_proc=procs, keep_in_memory=True,
                        remove_columns=[spec.text_key], desc="splitting").with_format("numpy")
    held, empty = np.asarray(flags["held"], dtype=bool), np.asarray(flags["empty"], dtype=bool)  # one byte a row
    parts = {"train": np.flatnonzero(~held & ~empty), "valid": np.flatnonzero(held & ~empty)}
    for name, rows in parts.items():
        if not rows.size:
            raise WindtunnelError(f"{spec.corpus}: the {'held-out' if name == 'valid' else name} set is empty "
                                  f"({int((~empty).sum())} documents, valid_percent={spec.valid_percent}); use more "
                                  "documents or a valid_percent within 1..99")
    if spec.tokenizer:
        tokenizer = _pretrained(spec.tokenizer, vocab_size)
    else:  # the in-memory path's sample: training documents in the order of their ids' hashes (_hash_order)
        order = sorted(parts["train"], key=lambda row: _order_key(str(row)))
        tokenizer = _tokenizer(_LazyDocuments(dataset, spec.text_key, order), vocab_size=vocab_size,
                               sample_bytes=spec.tokenizer_sample_bytes,
                               cache_dir=cache_dir, progress=progress)
    fingerprint = _hash(f"format={FORMAT}", "user", f"valid_percent={spec.valid_percent}", tokenizer.blob,
                        "hf", dataset._fingerprint)
    shards = cache_dir / "shards" / fingerprint

    def write(rows: np.ndarray, name: str) -> Callable[[Path], dict]:
        return lambda path: _write_hf_shard(path, dataset.select(rows), spec.text_key, tokenizer, name=name,
                                            procs=procs, progress=progress)

    made = {name: _cached_shard(shards, name, write(rows, name)) for name, rows in parts.items()}
    _write_index(index, fingerprint, tokenizer, made)
    return _corpus(made, tokenizer, fingerprint)


def _hf_text(spec: DataSpec):
    """The dataset of an hf: corpus with only its text column, checked to hold strings."""
    dataset = _hf_dataset(spec.corpus)
    key = spec.text_key
    if key not in dataset.column_names:
        raise SpecError(spec.corpus, "text_key", key, f"columns here: {dataset.column_names}")
    kind = dataset.features[key]
    if getattr(kind, "dtype", None) not in ("string", "large_string"):
        raise SpecError(spec.corpus, "text_key", key, f"the column must hold strings, not {kind}")
    return dataset.select_columns([key])


def _flags(batch: dict, rows: list[int], *, key: str, valid_percent: int) -> dict:
    """Per row: held out (by its id, the row number, as the in-memory path) and empty (no document)."""
    return {"held": [_held_out(str(row), valid_percent) for row in rows], "empty": [not text for text in batch[key]]}


class _LazyDocuments:
    """Rows of a dataset as _Documents in a given order, read one at a time (the tokenizer's sample stops early)."""

    def __init__(self, dataset, key: str, rows):
        self.dataset, self.key, self.rows = dataset, key, rows

    def __iter__(self) -> Iterator[_Document]:
        for row in self.rows:
            yield _Document(str(row), self.dataset[int(row)][self.key])


def _encode_rows(batch: dict, *, key: str, tokenizer) -> dict:
    """A datasets.map batch → each document's ids followed by the end-of-document token, and its UTF-8 bytes."""
    texts = batch[key]
    return {"ids": [ids + [tokenizer.eos_id] for ids in tokenizer.encode_batch(texts)],
            "n_bytes": [len(text.encode("utf-8", "surrogatepass")) for text in texts]}


def _write_hf_shard(path: Path, part, key: str, tokenizer, *, name: str, procs: int | None, progress: bool) -> dict:
    """Tokenize a dataset's rows on all cores (datasets.map, to Arrow files beside the shard) and write the shard in
    their order, a batch at a time; the Arrow files are removed afterwards."""
    import datasets

    dtype = _token_dtype(tokenizer)
    scratch = path.parent / f".{name}-tokens"
    scratch.mkdir(parents=True, exist_ok=True)
    if not progress:
        datasets.disable_progress_bars()
    try:
        mapped = part.map(_encode_rows, fn_kwargs={"key": key, "tokenizer": tokenizer}, batched=True,
                          batch_size=256, num_proc=procs, remove_columns=[key], desc=f"tokenizing {name}",
                          cache_file_name=str(scratch / "tokens.arrow"))
        n_tokens = n_bytes = 0
        with _atomic_file(path) as f:
            for batch in mapped.iter(batch_size=4096):
                ids = np.fromiter((i for doc in batch["ids"] for i in doc), dtype=dtype)
                f.write(ids.tobytes())
                n_tokens += ids.size
                n_bytes += sum(batch["n_bytes"])
        del mapped
    finally:
        if not progress:
            datasets.enable_progress_bars()
        shutil.rmtree(scratch, ignore_errors=True)
    return {"n_tokens": n_tokens, "n_bytes": n_bytes, "n_documents": len(part), "dtype": dtype.name,
            "eos_id": tokenizer.eos_id}


def prepared_train_tokens(spec: DataSpec, *, vocab_size: int, cache_dir: Path | None = None) -> int | None:
    """Tokens in the training split of `spec`'s corpus if it is prepared (tokenized and cached), else None: what a
    dry run can tell without tokenizing."""
    cache_dir = Path(cache_dir) if cache_dir is not None else results_dir() / "cache"
    try:
        key = _listing_key(spec, vocab_size)
    except WindtunnelError:  # a dataset that is not here (not downloaded) is not prepared
        return None
    opened = _open(cache_dir / "opened" / f"{key}.json", cache_dir)
    return None if opened is None else len(opened.train)


def _settings(spec: DataSpec, vocab_size: int) -> str:
    """A corpus's settings as one canonical string, a part of its listing key and of its fingerprint. A tokenizer
    file counts by its content (hashed beside), not its path: a clone elsewhere keeps its run ids."""
    settings = {**dataclasses.asdict(spec), "vocab_size": vocab_size, "format": FORMAT}
    if spec.tokenizer:
        settings["tokenizer"] = "file"
    return json.dumps(settings, sort_keys=True)


def _listing_key(spec: DataSpec, vocab_size: int) -> str:
    """What names a corpus without reading it: its settings and each file's path, size and modification time."""
    settings = _settings(spec, vocab_size)
    if spec.corpus.startswith("hf:"):
        return _hash(settings, _hf_dataset(spec.corpus)._fingerprint)
    files = [path for _, path in _python_paths()] if spec.corpus == "python" else _local_files(spec)[0]
    if spec.tokenizer:
        files.append(Path(spec.tokenizer).expanduser())
    stats = [f"{path}\0{st.st_size}\0{st.st_mtime_ns}" for path in files if path.exists() for st in [path.stat()]]
    return _hash(settings, *stats)


def source_fingerprint(spec: DataSpec, *, vocab_size: int, cache_dir: Path | None = None) -> str:
    """Content hash of what `spec`'s corpus is made from, without preparing it: the documents (ids and text), the
    settings and a given tokenizer file (the tokenizer windtunnel trains is a deterministic function of these: fixed
    sample and threads). Part of every run's id (windtunnel.runs). Cached under cache_dir/sources by the files'
    names, sizes and times, like `prepare`: an edited file is read and hashed anew."""
    cache_dir = Path(cache_dir) if cache_dir is not None else results_dir() / "cache"
    listing = _listing_key(spec, vocab_size)
    stored = cache_dir / "sources" / f"{listing}.json"
    if stored.is_file():
        return json.loads(stored.read_text())["fingerprint"]
    settings = _settings(spec, vocab_size)
    tokenizer = _pretrained_bytes(spec.tokenizer) if spec.tokenizer else b""
    if spec.corpus.startswith("hf:"):  # the dataset's own content fingerprint
        fingerprint = _hash(settings, tokenizer, _hf_dataset(spec.corpus)._fingerprint)
    else:  # a pass over the documents, one at a time
        digest = _Hash(settings, tokenizer)
        for doc in _documents(spec):
            digest.update(doc.id, doc.text)
        fingerprint = digest.hex()
    with _atomic_file(stored) as f:
        f.write(json.dumps({"fingerprint": fingerprint}).encode())
    return fingerprint


def _pretrained_bytes(path: str) -> bytes:
    file = Path(path).expanduser()
    if not file.is_file():
        raise SpecError("DataSpec", "tokenizer", path, "a sentencepiece .model file or a Hugging Face tokenizer.json")
    return file.read_bytes()


def _open(index: Path, cache_dir: Path) -> Corpus | None:
    """The corpus an index names, opened from its shards; None when the index or any shard is missing."""
    if not index.is_file():
        return None
    known = json.loads(index.read_text())
    shards = {name: _read_shard(cache_dir / "shards" / known["fingerprint"], name) for name in known["sets"]}
    if None in shards.values() or not Path(known["tokenizer"]).is_file():
        return None
    return _corpus(shards, _load_tokenizer(Path(known["tokenizer"])), known["fingerprint"])


def _write_index(index: Path, fingerprint: str, tokenizer, sets: Iterable[str]) -> None:
    """Record a prepared corpus's fingerprint, tokenizer file and sets, for `_open`."""
    with _atomic_file(index) as f:
        f.write(json.dumps({"fingerprint": fingerprint, "tokenizer": str(tokenizer.path), "sets": list(sets)}).encode())


def _corpus(shards: dict[str, tuple[np.ndarray, dict]], tokenizer, fingerprint: str) -> Corpus:
    """A Corpus from its sets' (memmap, metadata): "train" and the held-out ones."""
    tokens = {name: array for name, (array, _) in shards.items()}
    return Corpus(train=tokens.pop("train"), evals=tokens,
                  bytes_per_token={name: m["n_bytes"] / m["n_tokens"] for name, (_, m) in shards.items()},
                  tokenizer=tokenizer, fingerprint=fingerprint)


MIXTURE_SETS = {"python-docstrings": "the docstrings and comments of the embedded corpus's training files"}


def mixture_tokens(name: str, spec: DataSpec, corpus: Corpus, *, cache_dir: Path | None = None,
                   progress: bool = False) -> np.ndarray:
    """The training tokens of a decay-stage mixture's corpus `name`, in `corpus`'s tokenizer (see
    TrainSpec.decay_data): the run's own (spec.corpus), "python-docstrings", or another corpus's training split
    (held out by the same rule, so no held-out document of any set is trained on). Cached like every shard."""
    if name == spec.corpus:
        return corpus.train
    cache_dir = Path(cache_dir) if cache_dir is not None else results_dir() / "cache"
    source = dataclasses.replace(spec, corpus="python" if name == "python-docstrings" else name)
    head = (f"format={FORMAT}", "mixture", name, f"valid_percent={spec.valid_percent}", corpus.tokenizer.blob)
    try:  # as prepare(): an index by the files' names, sizes and times spares reading the text again
        listing = _listing_key(source, corpus.tokenizer.vocab_size)
        index = cache_dir / "opened" / f"{_hash('mixture', name, listing, corpus.fingerprint)}.json"
        if index.is_file():
            found = _read_shard(cache_dir / "shards" / json.loads(index.read_text())["shard"], "train")
            if found is not None:
                return found[0]
        if name == "python-docstrings":
            key, tokens = _docstring_tokens(source, head, corpus.tokenizer, cache_dir=cache_dir, progress=progress)
        else:  # streamed, as _prepare_local: one pass hashes and tokenizes the training documents
            docs = _bar(_documents(source), desc=f"tokenizing {name}", progress=progress)
            key, made = _stream_shards(source, docs, ("train",), head=head, tokenizer=corpus.tokenizer,
                                       cache_dir=cache_dir)
            tokens = made["train"][0]
    except WindtunnelError as err:
        raise WindtunnelError(f"decay_data: corpus {name!r}: {err} (known sets: {spec.corpus!r}, "
                              f"{', '.join(map(repr, MIXTURE_SETS))}, or a corpus: {_CORPUS_HELP})") from err
    with _atomic_file(index) as f:
        f.write(json.dumps({"shard": key}).encode())
    return tokens


def _docstring_tokens(source: DataSpec, head: tuple, tokenizer, *, cache_dir: Path,
                      progress: bool) -> tuple[str, np.ndarray]:
    """The "python-docstrings" set's shard key and tokens: the prose of the embedded corpus's training files, cut in
    memory (the corpus is small, and `_docstrings` needs every file's text)."""
    train, _ = _split(source, _load_documents(source))
    key = _hash(*head, *(part for doc in train for part in (doc.id, doc.text)))
    texts = [doc.text for doc in train]
    tokens, _ = _shard(cache_dir / "shards" / key, "train", lambda: _docstrings(texts), tokenizer, progress=progress)
    return key, tokens


def _shard(folder: Path, name: str, make_texts: Callable[[], list[str]], tokenizer: Tokenizer, *,
           progress: bool) -> tuple[np.ndarray, dict]:
    """The memmap of `name`'s tokens and its metadata, tokenizing make_texts() unless folder/name.bin exists."""
    return _cached_shard(folder, name, lambda path: _write_shard(path, make_texts(), tokenizer,
                                                                 desc=f"tokenizing {name}", progress=progress))


def _cached_shard(folder: Path, name: str, write: Callable[[Path], dict]) -> tuple[np.ndarray, dict]:
    """folder/name.bin as a memmap and its metadata, made by write(path) (which returns the metadata) unless there."""
    found = _read_shard(folder, name)
    if found is not None:
        return found
    meta = write(folder / f"{name}.bin")
    with _atomic_file(folder / f"{name}.json") as f:  # written last: its presence means the .bin is complete
        f.write(json.dumps(meta, indent=1).encode())
    return _read_shard(folder, name)


def _read_shard(folder: Path, name: str) -> tuple[np.ndarray, dict] | None:
    """folder/name.bin as a memmap and its metadata, or None unless both are there and the .bin is whole."""
    meta_path, bin_path = folder / f"{name}.json", folder / f"{name}.bin"
    if not (meta_path.is_file() and bin_path.is_file()):
        return None
    meta = json.loads(meta_path.read_text())
    if bin_path.stat().st_size != meta["n_tokens"] * np.dtype(meta["dtype"]).itemsize:
        return None
    return np.memmap(bin_path, dtype=meta["dtype"], mode="r", shape=(meta["n_tokens"],)), meta


def _write_shard(path: Path, texts: list[str], tokenizer: Tokenizer, *, desc: str, progress: bool) -> dict:
    """Tokenize `texts` into `path` (each followed by eos), in batches; returns the shard's metadata."""
    from tqdm import tqdm

    with _atomic_file(path) as f, tqdm(total=sum(map(len, texts)), unit="char", unit_scale=True,
                                       desc=desc, disable=not progress, file=sys.stderr) as bar:
        writer = _ShardWriter(f, tokenizer)
        for text in texts:
            bar.update(writer.add(text))
        bar.update(writer.flush())
    return writer.meta


class _ShardWriter:
    """A shard written document by document into `file`: each document's tokens, then eos. Texts are queued and
    encoded on all cores ~_BATCH_CHARS characters at a time, so memory holds one batch, never the set."""

    def __init__(self, file, tokenizer):
        self.file, self.tokenizer, self.dtype = file, tokenizer, _token_dtype(tokenizer)
        self.batch, self.chars = [], 0
        self.meta = {"n_tokens": 0, "n_bytes": 0, "n_documents": 0, "dtype": self.dtype.name,
                     "eos_id": tokenizer.eos_id}  # the shard's .json, in this key order

    def add(self, text: str) -> int:
        """Queue a document; returns the characters written (0 until a batch is full)."""
        self.batch.append(text)
        self.chars += len(text)
        return self.flush() if self.chars >= _BATCH_CHARS else 0

    def flush(self) -> int:
        """Write the queued documents; returns their characters."""
        if not self.batch:
            return 0
        ids = []
        for doc in self.tokenizer.encode_batch(self.batch, num_threads=_threads()):
            ids += doc
            ids.append(self.tokenizer.eos_id)
        self.file.write(np.asarray(ids, dtype=self.dtype).tobytes())
        self.meta["n_tokens"] += len(ids)
        self.meta["n_bytes"] += sum(len(text.encode("utf-8", "surrogatepass")) for text in self.batch)
        self.meta["n_documents"] += len(self.batch)
        chars, self.batch, self.chars = self.chars, [], 0
        return chars


def _token_dtype(tokenizer) -> np.dtype:
    """A shard's token type: uint16 while the vocabulary fits (half the disk and page cache of uint32)."""
    return np.dtype(np.uint16 if tokenizer.vocab_size <= 65535 else np.uint32)


@contextmanager
def _atomic_file(path: Path):
    """A binary file that appears at `path` only once fully written (temp file, then os.replace)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        with os.fdopen(fd, "wb") as f:
            yield f
        os.chmod(tmp, 0o644)  # mkstemp's 0600 would hide a shared cache from other users
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise


def _hash(*parts: str | bytes) -> str:
    """16 hex digits of SHA-256 over length-prefixed parts (so ("ab", "c") and ("a", "bc") differ)."""
    return _Hash(*parts).hex()


class _Hash:
    """_hash fed a part at a time, so that a corpus larger than memory can be fingerprinted as it is read."""

    def __init__(self, *parts: str | bytes):
        self._sha = hashlib.sha256()
        self.update(*parts)

    def update(self, *parts: str | bytes) -> None:
        for part in parts:
            data = part if isinstance(part, bytes) else part.encode("utf-8", "surrogatepass")
            self._sha.update(len(data).to_bytes(8, "little"))
            self._sha.update(data)

    def hex(self) -> str:
        return self._sha.hexdigest()[:16]


def _threads() -> int:
    """CPU cores this process may use (affinity-aware where the OS tells), at most 8."""
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count() or 1
    return min(8, cores)


# 5) Windows --------------------------------------------------------------------------------------

def sample_windows(tokens: np.ndarray, *, start: int, count: int, seq_len: int, seed: int) -> np.ndarray:
    """Training windows number start..start+count-1, int64 [count, seq_len+1].

    `tokens` is cut into (len-1) // seq_len windows at stride seq_len (each token is a target once per
    epoch); epoch e visits them in the order of a permutation seeded by (seed, e). Window k is
    position k mod n of epoch k // n, so `start` (windows consumed so far) is the whole data position.
    """
    if start < 0 or count < 0 or seed < 0:
        raise ValueError(f"start, count and seed must be >= 0, got start={start} count={count} seed={seed}")
    return _windows_at(tokens, np.arange(start, start + count, dtype=np.int64), seq_len=seq_len, seed=seed)


def mixture_windows(sets: list[np.ndarray], weights: list[float], *, start: int, count: int, seq_len: int,
                    seed: int) -> np.ndarray:
    """Windows start..start+count-1 of a mixture: window k comes from set i with probability weights[i] / sum,
    drawn by a hash of (seed, k), and is set i's window number k (in `sample_windows`' order). Any split of the
    windows over workers and micro-batches draws the same ones, and no set repeats a window within its epoch."""
    if start < 0 or count < 0 or seed < 0:
        raise ValueError(f"start, count and seed must be >= 0, got start={start} count={count} seed={seed}")
    index = np.arange(start, start + count, dtype=np.int64)
    bounds = np.cumsum(weights) / np.sum(weights)
    which = np.minimum(np.searchsorted(bounds, _unit_hash(index, seed), side="right"), len(sets) - 1)
    out = np.empty((count, seq_len + 1), dtype=np.int64)
    for i, tokens in enumerate(sets):
        here = which == i
        if here.any():
            out[here] = _windows_at(tokens, index[here], seq_len=seq_len, seed=seed)
    return out


def _windows_at(tokens: np.ndarray, index: np.ndarray, *, seq_len: int, seed: int) -> np.ndarray:
    """Training windows number `index` (see sample_windows)."""
    n_windows = _n_windows(tokens, seq_len)
    epochs, positions = np.divmod(index, n_windows)
    picks = np.empty(len(index), dtype=np.int64)
    for epoch in np.unique(epochs):
        here = epochs == epoch
        picks[here] = _permutation(n_windows, seed, int(epoch))[positions[here]]
    return _gather(tokens, picks * seq_len, seq_len)


def _unit_hash(index: np.ndarray, seed: int) -> np.ndarray:
    """A uniform number in [0, 1) per (seed, index): splitmix64's finalizer, vectorized."""
    with np.errstate(over="ignore"):
        z = index.astype(np.uint64) * np.uint64(0x9E3779B97F4A7C15) + np.uint64(seed + 1) * np.uint64(0xD1B54A32D192ED03)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        z ^= z >> np.uint64(31)
    return (z >> np.uint64(11)).astype(np.float64) / float(1 << 53)


def eval_windows(tokens: np.ndarray, *, seq_len: int, max_tokens: int) -> np.ndarray:
    """Fixed evaluation windows, int64 [n, seq_len+1]: n = max_tokens // seq_len (at least 1, at most
    all) windows at stride-seq_len positions spread evenly over `tokens`, so n·seq_len tokens are scored."""
    n_windows = _n_windows(tokens, seq_len)
    n = min(n_windows, max(1, max_tokens // seq_len))
    picks = np.arange(n, dtype=np.int64) * n_windows // n  # distinct because n <= n_windows
    return _gather(tokens, picks * seq_len, seq_len)


def _n_windows(tokens: np.ndarray, seq_len: int) -> int:
    if seq_len < 1:
        raise ValueError(f"seq_len must be >= 1, got {seq_len}")
    n = (len(tokens) - 1) // seq_len
    if n < 1:
        raise WindtunnelError(
            f"a token set of {len(tokens)} tokens is too short for seq_len={seq_len} (one window needs "
            f"{seq_len + 1}); use a bigger corpus or a shorter seq_len"
        )
    return n


@lru_cache(maxsize=4)
def _permutation(n_windows: int, seed: int, epoch: int) -> np.ndarray:
    """Epoch `epoch`'s order of the windows: a fresh seeded shuffle each pass over the data."""
    order = np.random.default_rng([seed, epoch]).permutation(n_windows)
    order.flags.writeable = False  # shared by the cache
    return order


def _gather(tokens: np.ndarray, starts: np.ndarray, seq_len: int) -> np.ndarray:
    """Rows tokens[s : s+seq_len+1] for each start s, as int64 (what torch embeddings index with)."""
    return np.asarray(tokens)[starts[:, None] + np.arange(seq_len + 1)].astype(np.int64)
