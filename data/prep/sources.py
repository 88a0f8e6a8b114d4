"""Documents (plain strings) from a local corpus or a Hugging Face dataset, in a fixed order.

A SOURCE is one of
- a `.jsonl` file (one JSON object per line, text in `text_field`), `.txt`, or
  `.parquet` (column `text_field`); `.jsonl.gz` / `.txt.gz` are read compressed;
- a folder: every such file below it, sorted by relative path (so the document
  order, hence the shards, never depends on the file system's listing order);
- `hf:NAME[:CONFIG]`: a Hugging Face dataset streamed with `datasets`
  (e.g. `hf:HuggingFaceFW/fineweb:sample-10BT`), split `split`.

A `.txt` file is one document (`txt_split="file"`), one per paragraph (`"paragraph"`: text between
blank lines, a book or a one-file corpus) or one per non-empty line (`"line"`). Blank text is no
document: an empty file yields none.
"""
from __future__ import annotations

import gzip
import io
import json
from collections.abc import Iterator
from pathlib import Path

SUFFIXES = (".jsonl", ".jsonl.gz", ".txt", ".txt.gz", ".parquet")


class SourceError(ValueError):
    """The corpus cannot be read: missing, unsupported, or malformed."""


def _suffix(path: Path) -> str | None:
    name = path.name.lower()
    return next((s for s in SUFFIXES if name.endswith(s)), None)


def _open_text(path: Path) -> io.TextIOBase:
    if path.name.lower().endswith(".gz"):
        return io.TextIOWrapper(gzip.open(path, "rb"), encoding="utf-8")
    return open(path, encoding="utf-8")


def _jsonl_docs(path: Path, text_field: str) -> Iterator[str]:
    with _open_text(path) as f:
        for n, line in enumerate(f, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except ValueError as e:
                raise SourceError(f"{path}:{n} is not valid JSON ({e}); fix or remove that line") from None
            text = record.get(text_field) if isinstance(record, dict) else None
            if not isinstance(text, str):
                raise SourceError(f"{path}:{n} has no string field {text_field!r}; pass --text-field NAME")
            yield text


TXT_SPLITS = ("file", "paragraph", "line")


def _txt_docs(path: Path, txt_split: str) -> Iterator[str]:
    with _open_text(path) as f:
        if txt_split == "file":
            text = f.read()
            if text.strip():
                yield text
        elif txt_split == "paragraph":
            lines: list[str] = []
            for line in f:
                if line.strip():
                    lines.append(line)
                elif lines:
                    yield "".join(lines).rstrip("\n")
                    lines = []
            if lines:
                yield "".join(lines).rstrip("\n")
        else:
            for line in f:
                if line.strip():
                    yield line.rstrip("\n")


def _parquet_docs(path: Path, text_field: str) -> Iterator[str]:
    import pyarrow.parquet as pq

    try:
        pf = pq.ParquetFile(path)
    except Exception as e:  # noqa: BLE001 - pyarrow raises several types for a bad file
        raise SourceError(f"{path} is not a readable parquet file ({e})") from None
    if text_field not in pf.schema_arrow.names:
        raise SourceError(f"{path} has no column {text_field!r} (columns: {pf.schema_arrow.names}); "
                          "pass --text-field NAME")
    for batch in pf.iter_batches(batch_size=1024, columns=[text_field]):
        yield from (t for t in batch.column(0).to_pylist() if t is not None)


def _file_docs(path: Path, text_field: str, txt_split: str) -> Iterator[str]:
    kind = _suffix(path)
    try:
        if kind in (".jsonl", ".jsonl.gz"):
            yield from _jsonl_docs(path, text_field)
        elif kind in (".txt", ".txt.gz"):
            yield from _txt_docs(path, txt_split)
        elif kind == ".parquet":
            yield from _parquet_docs(path, text_field)
        else:
            raise SourceError(f"{path}: unsupported file type; use one of {', '.join(SUFFIXES)}")
    except UnicodeDecodeError as e:
        raise SourceError(f"{path} is not UTF-8 text ({e.reason} at byte {e.start})") from None
    except OSError as e:
        raise SourceError(f"cannot read {path}: {e.strerror or e}") from None


def _hf_docs(spec: str, text_field: str, split: str) -> Iterator[str]:
    """Open the dataset now (errors surface at the call), stream its texts lazily."""
    name, _, config = spec.partition(":")
    if not name:
        raise SourceError("hf: source needs a dataset name, e.g. hf:HuggingFaceFW/fineweb:sample-10BT")
    import datasets

    try:
        ds = datasets.load_dataset(name, config or None, split=split, streaming=True)
    except Exception as e:  # noqa: BLE001 - network, auth and missing-dataset errors all end here
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise SourceError(f"cannot open Hugging Face dataset {name!r} (config {config or None!r}, split {split!r}): "
                          f"{first[:200]}; check the name, your network / HF_ENDPOINT / HF_TOKEN, "
                          "or download the files and pass a local folder") from None

    def texts() -> Iterator[str]:
        for n, example in enumerate(ds):
            text = example.get(text_field)
            if not isinstance(text, str):
                raise SourceError(f"hf:{spec} example {n} has no string field {text_field!r}; pass --text-field NAME")
            yield text

    return texts()


def list_files(path: Path) -> list[Path]:
    """Corpus files under a folder (recursive), sorted by relative path."""
    files = sorted((p for p in path.rglob("*") if p.is_file() and _suffix(p)), key=lambda p: p.relative_to(path).as_posix())
    if not files:
        raise SourceError(f"folder {path} holds no {', '.join(SUFFIXES)} files")
    return files


def iter_documents(source: str, text_field: str = "text", txt_split: str = "file",
                   split: str = "train") -> Iterator[str]:
    """Every document of `source` as a string, in a deterministic order.

    A missing source, an empty folder or an unknown dataset raises SourceError here,
    at the call; problems inside a file (bad JSON line) when the iterator reaches them.
    """
    if txt_split not in TXT_SPLITS:
        raise SourceError(f"txt_split must be one of {', '.join(TXT_SPLITS)}, got {txt_split!r}")
    if source.startswith("hf:"):
        return _hf_docs(source[3:], text_field, split)
    path = Path(source).expanduser()
    if path.is_dir():
        files = list_files(path)
    elif path.is_file():
        if not _suffix(path):
            raise SourceError(f"{path}: unsupported file type; use one of {', '.join(SUFFIXES)}")
        files = [path]
    else:
        raise SourceError(f"source {source} does not exist (give a .jsonl/.txt/.parquet file, a folder, "
                          "or hf:NAME[:CONFIG])")
    return (doc for f in files for doc in _file_docs(f, text_field, txt_split))
