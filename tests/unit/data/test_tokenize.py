"""python -m data.prep.tokenize: byte-identical speedrun shards, sharding rule, sources, safe output."""
from __future__ import annotations

import gzip
import hashlib
import json
import warnings

import numpy as np
import pytest

from data.prep.sources import SourceError, iter_documents
from data.prep.tokenize import TokenizeError, tokenize_corpus
from data.shards import open_shard
from tests.support.data_helpers import SHARED_BPE, fake_gpt2_ranks_file


def sha256(path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


@pytest.fixture
def bpe(tmp_path):
    """GPT-2 ranks from ../shared, or a GPT-2-shaped stand-in (the pipeline does not care)."""
    if SHARED_BPE.is_file():
        return str(SHARED_BPE)
    warnings.filterwarnings("ignore", message=".*not GPT-2's")
    return str(fake_gpt2_ranks_file(tmp_path / "fake.tiktoken"))


@pytest.fixture
def corpus(tmp_path):
    rng = np.random.default_rng(0)
    words = ["the", "speedrun", " data", "token", "ünïcode", "東京", "\n", "  ", "<|endoftext|>", "42", "it's"]
    docs = ["".join(rng.choice(words, size=int(rng.integers(1, 120)))) for _ in range(300)]
    path = tmp_path / "docs.jsonl"
    path.write_text("".join(json.dumps({"id": i, "text": d}) + "\n" for i, d in enumerate(docs)), encoding="utf-8")
    return path, docs


def test_sources(tmp_path):
    (tmp_path / "c" / "sub").mkdir(parents=True)
    (tmp_path / "c" / "b.txt").write_text("second file\n\nstill second", encoding="utf-8")
    (tmp_path / "c" / "a.jsonl").write_text('{"text": "first"}\n\n{"text": "also first"}\n', encoding="utf-8")
    with gzip.open(tmp_path / "c" / "sub" / "z.jsonl.gz", "wt", encoding="utf-8") as f:
        f.write('{"body": "x"}\n')
    import pyarrow as pa
    import pyarrow.parquet as pq

    pq.write_table(pa.table({"text": ["p1", "p2"]}), tmp_path / "c" / "c.parquet")
    with pytest.raises(SourceError, match=r"z.jsonl.gz:1 has no string field 'text'"):
        list(iter_documents(str(tmp_path / "c")))
    (tmp_path / "c" / "sub" / "z.jsonl.gz").unlink()
    assert list(iter_documents(str(tmp_path / "c"))) == ["first", "also first", "second file\n\nstill second",
                                                         "p1", "p2"]  # sorted by path: a, b, c
    assert list(iter_documents(str(tmp_path / "c" / "b.txt"), txt_split="line")) == ["second file", "still second"]
    with pytest.raises(SourceError, match="does not exist"):
        list(iter_documents(str(tmp_path / "nope.jsonl")))
    (tmp_path / "empty").mkdir()
    with pytest.raises(SourceError, match="holds no"):
        list(iter_documents(str(tmp_path / "empty")))


def test_existing_shards_are_never_written_over(corpus, bpe, tmp_path):
    path, _ = corpus
    out = tmp_path / "out"
    tokenize_corpus(str(path), out, 10, 3000, bpe=bpe, progress=False)
    before = {p.name: p.read_bytes() for p in out.iterdir()}
    assert len(before) > 3
    with pytest.raises(TokenizeError, match="already holds shards .* --overwrite"):
        tokenize_corpus(str(path), out, 10, 3000, bpe=bpe, progress=False)
    assert {p.name: p.read_bytes() for p in out.iterdir()} == before
    tokenize_corpus(str(path), out, 10, 10**6, bpe=bpe, progress=False, overwrite=True)  # fewer, bigger shards
    assert sorted(p.name for p in out.iterdir()) == ["fineweb_train_000001.bin", "fineweb_val_000000.bin"]


def test_too_few_documents(corpus, bpe, tmp_path):
    path, _ = corpus
    with pytest.raises(TokenizeError, match="only 300 documents, fewer than --val-docs 400"):
        tokenize_corpus(str(path), tmp_path / "a", 400, 1000, bpe=bpe, progress=False)
    with pytest.raises(TokenizeError, match="no training tokens"):
        tokenize_corpus(str(path), tmp_path / "b", 300, 1000, bpe=bpe, progress=False)


def test_hf_source_streams_the_named_dataset(bpe, tmp_path, monkeypatch):
    import datasets

    calls = []

    def fake_load_dataset(name, config, split, streaming):
        calls.append((name, config, split, streaming))
        return iter([{"text": f"document {i}", "id": i} for i in range(40)])

    monkeypatch.setattr(datasets, "load_dataset", fake_load_dataset)
    summary = tokenize_corpus("hf:HuggingFaceFW/fineweb:sample-10BT", tmp_path / "o", 4, 50, bpe=bpe,
                              max_docs=30, progress=False)
    assert calls == [("HuggingFaceFW/fineweb", "sample-10BT", "train", True)]
    assert summary["docs"] == 30 and len(open_shard(tmp_path / "o" / "fineweb_val_000000.bin")) > 4
    with pytest.raises(SourceError, match="has no string field 'body'"):
        list(iter_documents("hf:a/b", text_field="body"))
