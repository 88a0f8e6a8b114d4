"""python -m data.prep.tokenize: byte-identical speedrun shards, sharding rule, sources, safe output."""
from __future__ import annotations

import gzip
import hashlib
import json
import warnings
from pathlib import Path

import numpy as np
import pytest

from common.tokens import EOT_TOKEN
from data.prep.sources import SourceError, iter_documents
from data.prep.tokenize import TokenizeError, main, tokenize_corpus
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
    assert sorted(p.name for p in out.iterdir()) == ["fineweb_train_000001.bin", "fineweb_val_000000.bin",
                                                     "tokenizer.json"]


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


BOOK = "Chapter one.\nIt was a dark night,\nand cold.\n\n\nChapter two.\n  \nThe end.\n\n"


def test_txt_split_paragraph_makes_one_document_per_blank_line_block(tmp_path):
    path = tmp_path / "book.txt"
    path.write_text(BOOK, encoding="utf-8")
    assert list(iter_documents(str(path), txt_split="paragraph")) == [
        "Chapter one.\nIt was a dark night,\nand cold.", "Chapter two.", "The end."]
    assert len(list(iter_documents(str(path), txt_split="line"))) == 5
    (tmp_path / "empty.txt").write_text("\n  \n", encoding="utf-8")
    assert list(iter_documents(str(tmp_path / "empty.txt"))) == []  # blank text is no document


def test_one_file_corpus_with_val_frac_and_recorded_tokenizer(bpe, tmp_path):
    path = tmp_path / "shakespeare.txt"
    path.write_text("\n\n".join(f"Paragraph {i}: to be or not to be." for i in range(40)), encoding="utf-8")
    out = tmp_path / "shakes"
    summary = tokenize_corpus(str(path), out, None, 10**6, val_frac=0.1, bpe=bpe, txt_split="paragraph",
                              progress=False)
    assert summary["docs"] == 40
    val = open_shard(out / "fineweb_val_000000.bin")
    assert int((np.asarray(val) == EOT_TOKEN).sum()) == 4  # round(0.1 x 40) documents validate
    record = json.loads((out / "tokenizer.json").read_text())
    assert record["bpe_file"] == str(Path(bpe).resolve()) and record["val_docs"] == 4
    assert record["txt_split"] == "paragraph" and record["eot_token"] == EOT_TOKEN
    from data.tokenizer import recorded_bpe
    assert recorded_bpe(out) == str(Path(bpe).resolve())


def test_one_document_names_the_split_and_leaves_no_folder(bpe, tmp_path):
    path = tmp_path / "shakespeare.txt"
    path.write_text(BOOK, encoding="utf-8")
    out = tmp_path / "new" / "shakes"
    with pytest.raises(TokenizeError, match=r"only 1 document \(--txt-split file.*paragraph or line\)"):
        tokenize_corpus(str(path), out, 100, 1000, bpe=bpe, progress=False)
    assert not (tmp_path / "new").exists()  # nothing this run created is left behind
    with pytest.raises(TokenizeError, match="has 1 document .*--txt-split paragraph"):
        tokenize_corpus(str(path), out, None, 1000, val_frac=0.1, bpe=bpe, progress=False)
    assert not (tmp_path / "new").exists()


def test_empty_corpus_and_no_validation_are_errors(bpe, tmp_path, capsys):
    empty = tmp_path / "empty.txt"
    empty.write_text("", encoding="utf-8")
    assert main([str(empty), "--out", str(tmp_path / "a"), "--val-docs", "1", "--bpe", bpe, "--no-progress"]) == 2
    assert "holds no text" in capsys.readouterr().err and not (tmp_path / "a").exists()
    one = tmp_path / "one.txt"
    one.write_text("some text", encoding="utf-8")
    assert main([str(one), "--out", str(tmp_path / "b"), "--val-docs", "0", "--bpe", bpe, "--no-progress"]) == 2
    err = capsys.readouterr().err
    assert err.count("\n") == 1 and "--val-docs must be >= 1 (the trainer needs a validation shard)" in err
    assert not (tmp_path / "b").exists()


def test_default_out_is_outside_the_data_package_and_ignored_by_git():
    from common.paths import REPO
    from data.prep.tokenize import default_out

    out = default_out("/somewhere/shakespeare.txt")
    assert out == REPO / "outputs" / "data" / "shakespeare"
    assert default_out("hf:HuggingFaceFW/fineweb:sample-10BT").name == "HuggingFaceFW_fineweb_sample-10BT"
    assert "outputs/" in (REPO / ".gitignore").read_text().split()
